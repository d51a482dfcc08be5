//! `tenantry bench queue`: enqueue + lease + ack throughput on Redis with every control on
//! (weights, caps with floor and burst, rate limits, bands, groups), at several backlogs.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::bench::redis_stats::RedisCounters;
use crate::bench::{drop_namespace, scratch_queue};
use crate::queue::{Band, JobQueue, JobSpec, QueueError, TenantPolicy};
use crate::tenant::TenantId;

#[derive(Debug, Clone)]
pub struct QueueBenchOptions {
    pub redis_url: String,
    pub backlogs: Vec<u64>,
    /// Jobs pushed through enqueue + lease + ack per backlog size.
    pub jobs: u64,
    pub workers: usize,
    pub batch: usize,
    pub tenants: usize,
    /// Also run the apalis-redis baseline at each backlog.
    pub baseline: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BacklogRun {
    pub backlog: u64,
    pub jobs: u64,
    pub seconds: f64,
    pub jobs_per_sec: f64,
    pub preload_seconds: f64,
    /// What Redis spent on the run: script time and calls per job, and its CPU share.
    pub redis: crate::bench::redis_stats::RedisCost,
    /// The same work on a plain apalis-redis 1.0 worker, measured in the same run.
    pub apalis_opt: Option<crate::bench::BaselineRun>,
    /// Our jobs/s over apalis's (absent when apalis did not finish).
    pub ratio_opt: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueBenchReport {
    pub implementation: String,
    pub workers: usize,
    pub batch: usize,
    pub tenants: usize,
    pub runs: Vec<BacklogRun>,
    /// A 10k-job burst enqueued in one call, then fully dispatched.
    pub burst_10k_seconds: f64,
    pub burst_10k_dispatched: u64,
}

fn spec(tenant: &TenantId, n: u64, band: Band) -> JobSpec {
    JobSpec {
        job_id: format!("j{n}"),
        tenant: tenant.clone(),
        kind: "noop".to_string(),
        group: format!("run-{}", n % 7),
        band,
        cost_estimate: 1.0,
        max_attempts: 3,
        idempotency_key_opt: None,
        run_at_ms_opt: None,
        payload: serde_json::Value::Null,
    }
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

async fn setup_tenants(queue: &dyn JobQueue, count: usize) -> Result<Vec<TenantId>, QueueError> {
    let mut tenants = Vec::with_capacity(count);
    for n in 0..count {
        let tenant = TenantId::parse(&format!("bench-{n:04}")).expect("valid id");
        let weight = [1.0, 4.0, 16.0][n % 3];
        let policy = TenantPolicy {
            weight,
            cap_floor: 2,
            // Caps and rate limits are enforced on every dispatch but set not to bind, so the
            // figure measures the machinery, not a throttle.
            cap_max: 10_000,
            rate_per_sec: 1_000_000.0,
            rate_burst: 100_000,
        };
        queue.set_policy(&tenant, policy).await?;
        tenants.push(tenant);
    }
    Ok(tenants)
}

async fn preload(
    queue: &dyn JobQueue,
    tenants: &[TenantId],
    backlog: u64,
) -> Result<(), QueueError> {
    let mut next = 0u64;
    while next < backlog {
        let chunk = (backlog - next).min(10_000);
        let specs = (next..next + chunk)
            .map(|n| {
                spec(
                    &tenants[(n as usize) % tenants.len()],
                    1_000_000_000 + n,
                    Band::Batch,
                )
            })
            .collect();
        queue.enqueue(specs, now_ms()).await?;
        next += chunk;
    }
    Ok(())
}

/// One worker: enqueue a batch, lease a batch, ack every lease, until the shared budget is spent.
async fn worker(
    queue: Arc<dyn JobQueue>,
    tenants: Arc<Vec<TenantId>>,
    id: usize,
    budget: Arc<std::sync::atomic::AtomicI64>,
    batch: usize,
) -> Result<u64, QueueError> {
    use std::sync::atomic::Ordering;
    let mut done = 0u64;
    let mut seq = (id as u64) << 40;
    while budget.fetch_sub(batch as i64, Ordering::SeqCst) > 0 {
        let specs = (0..batch)
            .map(|k| {
                seq += 1;
                spec(
                    &tenants[(seq as usize + k) % tenants.len()],
                    seq,
                    Band::Standard,
                )
            })
            .collect();
        queue.enqueue(specs, now_ms()).await?;
        let leases = queue
            .lease(&format!("w{id}"), batch, 30_000, now_ms())
            .await?;
        let acks = leases
            .iter()
            .map(|lease| queue.complete(lease, 1.0, now_ms()));
        for result in futures::future::join_all(acks).await {
            result?;
        }
        done += leases.len() as u64;
    }
    Ok(done)
}

pub async fn run_queue_bench(options: &QueueBenchOptions) -> Result<QueueBenchReport, QueueError> {
    let mut runs = Vec::new();
    for &backlog in &options.backlogs {
        let (queue, namespace) = scratch_queue(&options.redis_url, "queue", 100_000).await?;
        let queue: Arc<dyn JobQueue> = Arc::new(queue);
        let tenants = Arc::new(setup_tenants(queue.as_ref(), options.tenants).await?);
        let preload_started = Instant::now();
        preload(queue.as_ref(), &tenants, backlog).await?;
        let preload_seconds = preload_started.elapsed().as_secs_f64();
        let budget = Arc::new(std::sync::atomic::AtomicI64::new(options.jobs as i64));
        let counters_before = RedisCounters::read(&options.redis_url).await?;
        let started = Instant::now();
        let mut handles = Vec::new();
        for id in 0..options.workers {
            handles.push(tokio::spawn(worker(
                queue.clone(),
                tenants.clone(),
                id,
                budget.clone(),
                options.batch,
            )));
        }
        let mut jobs = 0;
        for handle in handles {
            jobs += handle
                .await
                .map_err(|e| QueueError::Redis(e.to_string()))??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let redis =
            RedisCounters::read(&options.redis_url)
                .await?
                .since(&counters_before, jobs, seconds);
        tracing::info!(backlog, jobs, seconds, "queue benchmark run finished");
        drop(queue);
        drop_namespace(&options.redis_url, &namespace).await?;
        let jobs_per_sec = jobs as f64 / seconds;
        let apalis_opt = if options.baseline {
            Some(
                crate::bench::run_apalis_baseline(&options.redis_url, backlog, options.jobs)
                    .await?,
            )
        } else {
            None
        };
        let ratio_opt = apalis_opt
            .as_ref()
            .filter(|run| run.error_opt.is_none() && run.jobs_per_sec > 0.0)
            .map(|run| jobs_per_sec / run.jobs_per_sec);
        runs.push(BacklogRun {
            backlog,
            jobs,
            seconds,
            jobs_per_sec,
            preload_seconds,
            redis,
            apalis_opt,
            ratio_opt,
        });
    }

    let (queue, namespace) = scratch_queue(&options.redis_url, "burst", 64).await?;
    let tenant = TenantId::parse("burst-tenant").expect("valid id");
    queue
        .set_policy(
            &tenant,
            TenantPolicy {
                cap_max: 1_000_000,
                cap_floor: 1_000_000,
                ..TenantPolicy::default()
            },
        )
        .await?;
    let started = Instant::now();
    queue
        .enqueue(
            (0..10_000).map(|n| spec(&tenant, n, Band::Batch)).collect(),
            now_ms(),
        )
        .await?;
    let mut dispatched = 0u64;
    loop {
        let leases = queue.lease("burst", 1_000, 30_000, now_ms()).await?;
        if leases.is_empty() {
            break;
        }
        dispatched += leases.len() as u64;
    }
    let burst_10k_seconds = started.elapsed().as_secs_f64();
    drop(queue);
    drop_namespace(&options.redis_url, &namespace).await?;
    Ok(QueueBenchReport {
        implementation: "tenantry fair queue (redis lua)".to_string(),
        workers: options.workers,
        batch: options.batch,
        tenants: options.tenants,
        runs,
        burst_10k_seconds,
        burst_10k_dispatched: dispatched,
    })
}
