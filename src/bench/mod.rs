//! Benchmarks behind `tenantry bench`: figures printed side by side, never asserted in tests.
//! Run them from a release build.

mod apalis_baseline;
mod fairness;
pub mod loadgen;
pub mod metering;
mod model;
mod pipeline;
mod queue;
pub mod redis_stats;
pub mod serving;

pub use apalis_baseline::{BaselineRun, run_apalis_baseline};
pub use fairness::{FairnessOptions, FairnessReport, run_fairness};
pub use metering::{MeteringBenchOptions, MeteringBenchReport, run_metering_bench};
pub use model::{ModelBenchReport, ModelSide, run_model_bench};
pub use pipeline::{BENCH_MANIFEST, PipelineBenchReport, PipelineRun, run_pipeline_bench};
pub use queue::{QueueBenchOptions, QueueBenchReport, run_queue_bench};
pub use serving::{ServingBenchOptions, ServingBenchReport, run_serving_bench};

use crate::queue::{QueueError, RedisQueue};

/// A fresh Redis queue under a throw-away namespace.
async fn scratch_queue(
    redis_url: &str,
    label: &str,
    burst_pool: u32,
) -> Result<(RedisQueue, String), QueueError> {
    let namespace = format!("tenantry-bench-{label}-{}", uuid::Uuid::now_v7());
    let queue = RedisQueue::connect(redis_url, &namespace, "bench", burst_pool).await?;
    Ok((queue, namespace))
}

/// Deletes every key of a queue namespace (benchmarks, tests) with SCAN + UNLINK, so it stays
/// cheap however many other keys the server holds.
pub async fn drop_namespace(redis_url: &str, namespace: &str) -> Result<u64, QueueError> {
    let client = redis::Client::open(redis_url).map_err(|e| QueueError::Redis(e.to_string()))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| QueueError::Redis(e.to_string()))?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .map_err(|e| QueueError::Redis(e.to_string()))?;
        if !keys.is_empty() {
            deleted += keys.len() as u64;
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(|e| QueueError::Redis(e.to_string()))?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(deleted);
        }
    }
}
