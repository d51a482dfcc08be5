//! `tenantry bench fairness`: 1,000 tenants of mixed weights sharing one pool in simulated
//! time, Jain's index of served cost per weight per 60 s window, the largest normalised lag,
//! the share of a tenant spraying 10k keys, and a quiet tenant's first-job wait behind a
//! 1M-job flood (wall clock, through the real wake-up path).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::bench::{drop_namespace, scratch_queue};
use crate::queue::{Band, JobQueue, JobSpec, Lease, MemoryQueue, QueueError, TenantPolicy};
use crate::tenant::TenantId;

const WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone)]
pub struct FairnessOptions {
    /// Run on this Redis instead of the in-process backend.
    pub redis_url_opt: Option<String>,
    pub tenants: usize,
    pub slots: usize,
    pub windows: u64,
    pub flood_jobs: u64,
    pub quiet_samples: usize,
    pub seed: u64,
    /// Largest job cost in the Pareto(1.5) trace, milliseconds (the smallest is 5).
    pub max_cost_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FairnessReport {
    pub backend: String,
    pub tenants: usize,
    pub slots: usize,
    pub dispatches: u64,
    pub jain_per_window: Vec<f64>,
    pub jain_min: f64,
    /// Largest |W_i/w_i - mean| over windows, in cost-seconds per unit weight.
    pub max_normalised_lag: f64,
    /// The key-spraying tenant's served share divided by its fair share.
    pub sprayer_share_ratio: f64,
    pub quiet_wait_ms_p50: f64,
    pub quiet_wait_ms_p99: f64,
    pub flood_jobs: u64,
    pub max_cost_ms: f64,
}

fn tenant(name: String) -> TenantId {
    TenantId::parse(&name).expect("benchmark tenant ids are valid")
}

fn job(tenant: &TenantId, n: u64, group: String, cost_ms: f64) -> JobSpec {
    JobSpec {
        job_id: format!("j{n}"),
        tenant: tenant.clone(),
        kind: "noop".to_string(),
        group,
        band: Band::Standard,
        cost_estimate: cost_ms / 1000.0,
        max_attempts: 1,
        idempotency_key_opt: None,
        run_at_ms_opt: None,
        payload: serde_json::json!(cost_ms),
    }
}

fn jain(values: &[f64]) -> f64 {
    let sum: f64 = values.iter().sum();
    let squares: f64 = values.iter().map(|v| v * v).sum();
    if squares == 0.0 {
        1.0
    } else {
        sum * sum / (values.len() as f64 * squares)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn open(
    options: &FairnessOptions,
    label: &str,
) -> Result<(Arc<dyn JobQueue>, Option<String>), QueueError> {
    match &options.redis_url_opt {
        Some(url) => {
            let (queue, namespace) = scratch_queue(url, label, options.slots as u32).await?;
            Ok((Arc::new(queue), Some(namespace)))
        }
        None => Ok((Arc::new(MemoryQueue::new(options.slots as u32)), None)),
    }
}

async fn close(options: &FairnessOptions, namespace_opt: Option<String>) -> Result<(), QueueError> {
    if let (Some(url), Some(namespace)) = (&options.redis_url_opt, namespace_opt) {
        drop_namespace(url, &namespace).await?;
    }
    Ok(())
}

pub async fn run_fairness(options: &FairnessOptions) -> Result<FairnessReport, QueueError> {
    let (queue, namespace_opt) = open(options, "fair").await?;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut weights: HashMap<TenantId, f64> = HashMap::new();
    let mut seq = 0u64;
    let sprayer = tenant("sprayer".to_string());
    let max_cost_ms = options.max_cost_ms;
    let cost = |rng: &mut StdRng| -> f64 {
        (5.0 / (1.0 - rng.r#gen::<f64>()).powf(1.0 / 1.5)).min(max_cost_ms)
    };
    let mut all = Vec::new();
    for n in 0..options.tenants {
        all.push((
            tenant(format!("tenant-{n:04}")),
            [1.0, 2.0, 4.0, 8.0, 16.0][n % 5],
        ));
    }
    all.push((sprayer.clone(), 1.0));
    for (t, w) in &all {
        let policy = TenantPolicy {
            weight: *w,
            cap_floor: 1_000,
            cap_max: 1_000,
            rate_per_sec: 0.0,
            rate_burst: 1,
        };
        queue.set_policy(t, policy).await?;
        weights.insert(t.clone(), *w);
        let specs = (0..20)
            .map(|_| {
                seq += 1;
                let group = if *t == sprayer {
                    format!("key-{seq}")
                } else {
                    "main".to_string()
                };
                job(t, seq, group, cost(&mut rng))
            })
            .collect();
        queue.enqueue(specs, 0).await?;
    }
    // Event simulation: `slots` workers; a job occupies one for its cost in simulated time.
    let mut running: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut leases: HashMap<u64, Lease> = HashMap::new();
    let mut served: Vec<HashMap<TenantId, f64>> = vec![HashMap::new(); options.windows as usize];
    let mut now = 0u64;
    let end = options.windows * WINDOW_MS;
    let mut dispatches = 0u64;
    let mut lease_id = 0u64;
    while now < end {
        let free = options.slots - running.len();
        if free > 0 {
            for lease in queue.lease("sim", free, 3_600_000, now).await? {
                let cost_ms = lease.payload.as_f64().unwrap_or(1.0);
                let window = (now / WINDOW_MS) as usize;
                *served[window].entry(lease.tenant.clone()).or_default() += cost_ms / 1000.0;
                lease_id += 1;
                running.push(Reverse((now + cost_ms.ceil() as u64, lease_id)));
                leases.insert(lease_id, lease);
                dispatches += 1;
            }
        }
        let Some(Reverse((finish, id))) = running.pop() else {
            break;
        };
        now = finish;
        let lease = leases.remove(&id).expect("running lease");
        let cost_ms = lease.payload.as_f64().unwrap_or(1.0);
        queue.complete(&lease, cost_ms / 1000.0, now).await?;
        // Closed loop: every finished job is replaced, so every tenant stays backlogged.
        seq += 1;
        let group = if lease.tenant == sprayer {
            format!("key-{}", seq % 10_000)
        } else {
            "main".to_string()
        };
        queue
            .enqueue(vec![job(&lease.tenant, seq, group, cost(&mut rng))], now)
            .await?;
    }
    let mut jain_per_window = Vec::new();
    let mut max_lag: f64 = 0.0;
    let total_weight: f64 = weights.values().sum();
    let (mut sprayer_served, mut total_served) = (0.0, 0.0);
    for window in &served {
        let normalised: Vec<f64> = all
            .iter()
            .map(|(t, w)| window.get(t).copied().unwrap_or(0.0) / w)
            .collect();
        let mean = normalised.iter().sum::<f64>() / normalised.len() as f64;
        max_lag = normalised
            .iter()
            .fold(max_lag, |lag, x| lag.max((x - mean).abs()));
        jain_per_window.push(jain(&normalised));
        sprayer_served += window.get(&sprayer).copied().unwrap_or(0.0);
        total_served += window.values().sum::<f64>();
    }
    let sprayer_share_ratio = (sprayer_served / total_served) / (1.0 / total_weight);
    drop(queue);
    close(options, namespace_opt).await?;
    let (p50, p99) = quiet_tenant_wait(options).await?;
    let jain_min = jain_per_window.iter().copied().fold(1.0, f64::min);
    Ok(FairnessReport {
        backend: if options.redis_url_opt.is_some() {
            "redis".into()
        } else {
            "memory".into()
        },
        tenants: all.len(),
        slots: options.slots,
        dispatches,
        jain_per_window,
        jain_min,
        max_normalised_lag: max_lag,
        sprayer_share_ratio,
        quiet_wait_ms_p50: p50,
        quiet_wait_ms_p99: p99,
        flood_jobs: options.flood_jobs,
        max_cost_ms: options.max_cost_ms,
    })
}

/// A flood tenant queues `flood_jobs`; a worker blocks waiting for work with a slot free; the
/// quiet tenant submits one job. Measures submit-to-lease wall time over many samples.
async fn quiet_tenant_wait(options: &FairnessOptions) -> Result<(f64, f64), QueueError> {
    let (queue, namespace_opt) = open(options, "quiet").await?;
    let flood = tenant("flood".to_string());
    let quiet = tenant("quiet".to_string());
    for t in [&flood, &quiet] {
        queue
            .set_policy(
                t,
                TenantPolicy {
                    cap_floor: 1,
                    cap_max: 1_000_000,
                    ..TenantPolicy::default()
                },
            )
            .await?;
    }
    let mut next = 0u64;
    while next < options.flood_jobs {
        let chunk = (options.flood_jobs - next).min(10_000);
        queue
            .enqueue(
                (next..next + chunk)
                    .map(|n| job(&flood, n, "main".into(), 1.0))
                    .collect(),
                0,
            )
            .await?;
        next += chunk;
    }
    let mut waits = Vec::with_capacity(options.quiet_samples);
    let mut now = 1u64;
    for sample in 0..options.quiet_samples {
        // The flood keeps the pool busy between samples.
        for lease in queue.lease("flood-worker", 4, 3_600_000, now).await? {
            queue.complete(&lease, 0.001, now).await?;
        }
        now += 1;
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.wait_for_work(5_000).await })
        };
        tokio::task::yield_now().await;
        let started = Instant::now();
        queue
            .enqueue(
                vec![job(
                    &quiet,
                    10_000_000_000 + sample as u64,
                    "main".into(),
                    1.0,
                )],
                now,
            )
            .await?;
        waiter
            .await
            .map_err(|e| QueueError::Redis(e.to_string()))??;
        let lease = loop {
            let leases = queue.lease("quiet-worker", 1, 3_600_000, now).await?;
            let Some(lease) = leases.into_iter().next() else {
                continue;
            };
            if lease.tenant == quiet {
                break lease;
            }
            queue.complete(&lease, 0.001, now).await?;
        };
        waits.push(started.elapsed().as_secs_f64() * 1000.0);
        queue.complete(&lease, 0.001, now).await?;
    }
    drop(queue);
    close(options, namespace_opt).await?;
    waits.sort_by(f64::total_cmp);
    Ok((percentile(&waits, 0.50), percentile(&waits, 0.99)))
}
