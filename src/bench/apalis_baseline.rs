//! The baseline `tenantry bench queue` compares against: a plain apalis-redis 1.0 worker with
//! default settings (as a user gets it) running the same no-op jobs on the same Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use serde::{Deserialize, Serialize};

use crate::bench::drop_namespace;
use crate::queue::QueueError;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoopJob {
    n: u64,
}

/// One baseline run: jobs per second, or why it did not finish.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineRun {
    pub backlog: u64,
    pub jobs: u64,
    pub seconds: f64,
    pub jobs_per_sec: f64,
    pub error_opt: Option<String>,
}

async fn noop(_job: NoopJob, done: Data<Arc<AtomicU64>>) -> Result<(), BoxDynError> {
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn queue_error(error: impl std::fmt::Display) -> QueueError {
    QueueError::Redis(format!("apalis baseline: {error}"))
}

/// How far the producer may run ahead of the worker: below the ~8,000 due jobs at which
/// apalis-redis 1.0's fetch fails (see shared/notes/apalis.md).
const AHEAD: u64 = 4_000;
/// A run that completes nothing for this long is reported as wedged. Longer than apalis's
/// default 30 s heartbeat, the longest an idle worker may take to look for work again.
const NO_PROGRESS: Duration = Duration::from_secs(40);

/// Pushes `backlog` jobs plus the first `AHEAD` (1,000 per push) before the worker starts, so
/// it finds work at its first fetch, then measures `backlog + jobs` consumed with the producer
/// kept at most `AHEAD` jobs ahead. A run that stops making progress for `NO_PROGRESS` is
/// reported with its error instead of a rate.
pub async fn run_apalis_baseline(
    redis_url: &str,
    backlog: u64,
    jobs: u64,
) -> Result<BaselineRun, QueueError> {
    let queue_name = format!("tenantry-bench-apalis-{}", uuid::Uuid::now_v7());
    let started = Instant::now();
    let result = measure(redis_url, &queue_name, backlog, jobs).await;
    drop_namespace(redis_url, &queue_name).await?;
    Ok(result.unwrap_or_else(|error| BaselineRun {
        backlog,
        jobs: 0,
        seconds: started.elapsed().as_secs_f64(),
        jobs_per_sec: 0.0,
        error_opt: Some(error.to_string()),
    }))
}

async fn measure(
    redis_url: &str,
    queue_name: &str,
    backlog: u64,
    jobs: u64,
) -> Result<BaselineRun, QueueError> {
    let conn = apalis_redis::connect(redis_url)
        .await
        .map_err(queue_error)?;
    let config = apalis_redis::Config::default().queue(queue_name);
    let mut producer = RedisStorage::<NoopJob>::new(conn.clone()).with_config(config.clone());
    let target = backlog + jobs;
    let mut pushed = 0u64;
    while pushed < (backlog + AHEAD).min(target) {
        let chunk = ((backlog + AHEAD).min(target) - pushed).min(1_000);
        producer
            .push_bulk((pushed..pushed + chunk).map(|n| NoopJob { n }).collect())
            .await
            .map_err(queue_error)?;
        pushed += chunk;
    }
    let done = Arc::new(AtomicU64::new(0));
    let storage = RedisStorage::<NoopJob>::new(conn).with_config(config);
    let worker = WorkerBuilder::new(format!("bench-{}", uuid::Uuid::now_v7()))
        .backend(storage)
        .data(done.clone())
        .build(noop);
    let running = tokio::spawn(async move { worker.run().await });
    let started = Instant::now();
    let mut last_progress = (Instant::now(), 0u64);
    let mut error_opt = None;
    loop {
        let completed = done.load(Ordering::Relaxed);
        if completed >= target {
            break;
        }
        if running.is_finished() {
            error_opt = Some("the apalis worker stopped".to_string());
            break;
        }
        if completed > last_progress.1 {
            last_progress = (Instant::now(), completed);
        } else if last_progress.0.elapsed() > NO_PROGRESS {
            error_opt = Some(format!(
                "no progress for {} s after {completed} of {target} jobs (queue wedged)",
                NO_PROGRESS.as_secs()
            ));
            break;
        }
        if pushed < target && pushed < completed + backlog + AHEAD {
            let chunk = (target - pushed).min(1_000);
            producer
                .push_bulk((pushed..pushed + chunk).map(|n| NoopJob { n }).collect())
                .await
                .map_err(queue_error)?;
            pushed += chunk;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    running.abort();
    let processed = done.load(Ordering::Relaxed);
    Ok(BaselineRun {
        backlog,
        jobs: processed,
        seconds,
        jobs_per_sec: if error_opt.is_none() {
            processed as f64 / seconds
        } else {
            0.0
        },
        error_opt,
    })
}
