//! The `JobQueue` conformance suite, run against both backends: memory, and Redis at
//! `TENANTRY_TEST_REDIS` (default redis://127.0.0.1:6379), each test on its own key prefix.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tenantry::TenantId;
use tenantry::queue::{
    Band, FailOutcome, JobQueue, JobSpec, Lease, MemoryQueue, QueueError, QueueState, RedisQueue,
    TenantPolicy,
};

type Queue = Arc<dyn JobQueue>;

const LEASE_MS: u64 = 10_000;
/// Far enough ahead for any backoff to have elapsed.
const AFTER_BACKOFF_MS: u64 = 400_000;

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

fn job(tenant_id: &str, id: &str) -> JobSpec {
    JobSpec {
        job_id: id.to_string(),
        tenant: tenant(tenant_id),
        kind: "validate".to_string(),
        group: "run-1".to_string(),
        band: Band::Standard,
        cost_estimate: 1.0,
        max_attempts: 3,
        idempotency_key_opt: None,
        run_at_ms_opt: None,
        payload: serde_json::json!({"dataset": "clauses", "n": id}),
    }
}

fn jobs(tenant_id: &str, count: usize) -> Vec<JobSpec> {
    (0..count)
        .map(|n| job(tenant_id, &format!("{tenant_id}-{n}")))
        .collect()
}

fn policy(weight: f64, floor: u32, cap: u32, rate: f64, burst: u32) -> TenantPolicy {
    TenantPolicy {
        weight,
        cap_floor: floor,
        cap_max: cap,
        rate_per_sec: rate,
        rate_burst: burst,
    }
}

pub fn memory_queue(burst_pool: u32) -> Queue {
    Arc::new(MemoryQueue::new(burst_pool))
}

pub fn redis_url() -> String {
    std::env::var("TENANTRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A Redis queue on a fresh namespace; the caller drops the namespace when done.
pub async fn redis_queue(burst_pool: u32) -> (Queue, String) {
    let url = redis_url();
    let namespace = format!("tenantry-test-{}", uuid::Uuid::now_v7());
    let queue = RedisQueue::connect(&url, &namespace, "cpu", burst_pool)
        .await
        .unwrap_or_else(|error| panic!("redis at {url} is required for the queue tests: {error}"));
    (Arc::new(queue), namespace)
}

/// A plain connection to the Redis behind `redis_queue`'s namespace, and its shard's key
/// prefix, for the tests that look under the queue's own keys.
async fn shard_connection(namespace: &str) -> (::redis::aio::MultiplexedConnection, String) {
    let client = ::redis::Client::open(redis_url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    (conn, format!("{namespace}:{{cpu}}"))
}

/// A heartbeat and a completion on `lease` are both refused as stale.
async fn assert_lease_is_stale(q: &Queue, lease: &Lease, now_ms: u64) {
    assert!(matches!(
        q.heartbeat(lease, LEASE_MS, now_ms).await,
        Err(QueueError::StaleLease { .. })
    ));
    assert!(matches!(
        q.complete(lease, 1.0, now_ms).await,
        Err(QueueError::StaleLease { .. })
    ));
}

/// Leases and completes one job at a time, `steps` times; returns dispatches per tenant.
async fn dispatch_one_at_a_time(q: &Queue, steps: u64) -> HashMap<String, usize> {
    let mut served = HashMap::new();
    for step in 0..steps {
        let lease = q
            .lease("w", 1, LEASE_MS, step)
            .await
            .unwrap()
            .pop()
            .expect("work left");
        *served.entry(lease.tenant.to_string()).or_default() += 1;
        q.complete(&lease, 1.0, step).await.unwrap();
    }
    served
}

async fn round_trip(q: Queue) {
    let enqueued = q.enqueue(vec![job("acme", "j1")], 0).await.unwrap();
    assert!(!enqueued[0].existing);
    assert_eq!(
        q.state(&tenant("acme"), "j1").await.unwrap(),
        Some(QueueState::Queued)
    );
    let lease = q
        .lease("w1", 10, LEASE_MS, 0)
        .await
        .unwrap()
        .pop()
        .expect("one lease");
    assert_eq!(
        (lease.job_id.as_str(), lease.kind.as_str(), lease.attempt),
        ("j1", "validate", 1)
    );
    assert_eq!(lease.payload["dataset"], "clauses");
    assert_eq!(lease.expires_at_ms, LEASE_MS);
    assert_eq!(
        q.state(&tenant("acme"), "j1").await.unwrap(),
        Some(QueueState::Running)
    );
    q.heartbeat(&lease, LEASE_MS, 5_000).await.unwrap();
    q.complete(&lease, 1.0, 6_000).await.unwrap();
    assert_eq!(
        q.state(&tenant("acme"), "j1").await.unwrap(),
        Some(QueueState::Succeeded)
    );
    assert!(q.lease("w1", 10, LEASE_MS, 7_000).await.unwrap().is_empty());
    let stats = q.tenant_stats(&tenant("acme")).await.unwrap();
    assert_eq!((stats.queued, stats.running), (0, 0));
}

async fn idempotency_keys_return_the_existing_job(q: Queue) {
    let mut first = job("acme", "a");
    first.idempotency_key_opt = Some("upload-42".to_string());
    let mut second = job("acme", "b");
    second.idempotency_key_opt = Some("upload-42".to_string());
    q.enqueue(vec![first], 0).await.unwrap();
    let again = q.enqueue(vec![second], 0).await.unwrap();
    assert_eq!((again[0].job_id.as_str(), again[0].existing), ("a", true));
    // The same key in another tenant is another job.
    let mut other = job("globex", "c");
    other.idempotency_key_opt = Some("upload-42".to_string());
    assert!(!q.enqueue(vec![other], 0).await.unwrap()[0].existing);
    assert_eq!(q.lease("w", 10, LEASE_MS, 0).await.unwrap().len(), 2);
}

async fn a_stale_completion_is_rejected_after_the_lease_expired(q: Queue) {
    q.enqueue(vec![job("acme", "j1")], 0).await.unwrap();
    let zombie = q.lease("w1", 1, 1_000, 0).await.unwrap().pop().unwrap();
    let reaped = q.reap(2_000).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert!(matches!(
        reaped[0].2,
        FailOutcome::RetryAt { attempt: 1, .. }
    ));
    assert!(matches!(
        q.complete(&zombie, 1.0, 2_001).await,
        Err(QueueError::StaleLease { .. })
    ));
    assert!(matches!(
        q.heartbeat(&zombie, 1_000, 2_001).await,
        Err(QueueError::StaleLease { .. })
    ));
    let fresh = q
        .lease("w2", 1, LEASE_MS, AFTER_BACKOFF_MS)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(fresh.attempt, 2);
    assert!(fresh.token > zombie.token);
    q.complete(&fresh, 1.0, AFTER_BACKOFF_MS).await.unwrap();
    assert!(matches!(
        q.complete(&zombie, 1.0, AFTER_BACKOFF_MS).await,
        Err(QueueError::StaleLease { .. })
    ));
}

async fn a_poison_job_ends_in_the_dead_letter_list_and_can_be_redriven(q: Queue) {
    q.enqueue(vec![job("acme", "poison")], 0).await.unwrap();
    let mut now = 0;
    let mut last = None;
    for attempt in 1..=3 {
        let lease = q
            .lease("w", 1, 1_000, now)
            .await
            .unwrap()
            .pop()
            .expect("leased again");
        assert_eq!(lease.attempt, attempt);
        now += 2_000;
        last = q
            .reap(now)
            .await
            .unwrap()
            .pop()
            .map(|(_, _, outcome)| outcome);
        now += AFTER_BACKOFF_MS;
    }
    assert_eq!(last, Some(FailOutcome::DeadLettered { attempts: 3 }));
    assert_eq!(
        q.state(&tenant("acme"), "poison").await.unwrap(),
        Some(QueueState::DeadLettered)
    );
    assert!(q.lease("w", 1, 1_000, now).await.unwrap().is_empty());
    let dead = q.dead_letters(&tenant("acme")).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts.len(), 3);
    assert!(
        dead[0]
            .attempts
            .iter()
            .all(|a| a.error.contains("worker lost"))
    );
    assert!(q.dead_letters(&tenant("globex")).await.unwrap().is_empty());
    assert!(q.redrive(&tenant("acme"), "poison", now).await.unwrap());
    let redriven = q.lease("w", 1, 1_000, now).await.unwrap().pop().unwrap();
    assert_eq!(redriven.attempt, 1);
    assert!(q.dead_letters(&tenant("acme")).await.unwrap().is_empty());
}

async fn retryable_failures_back_off_and_non_retryable_ones_dead_letter(q: Queue) {
    q.enqueue(vec![job("acme", "flaky"), job("acme", "broken")], 0)
        .await
        .unwrap();
    let leases = q.lease("w", 2, LEASE_MS, 0).await.unwrap();
    let by_id: HashMap<_, _> = leases.into_iter().map(|l| (l.job_id.clone(), l)).collect();
    let outcome = q
        .fail(&by_id["flaky"], "timeout talking to storage", true, 100)
        .await
        .unwrap();
    let FailOutcome::RetryAt {
        run_at_ms,
        attempt: 1,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(
        (100..=1_100).contains(&run_at_ms),
        "first backoff is at most 1 s: {run_at_ms}"
    );
    assert_eq!(
        q.state(&tenant("acme"), "flaky").await.unwrap(),
        Some(QueueState::Delayed)
    );
    let explained = q
        .explain(&tenant("acme"), "flaky", 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(explained.blocked_by, "delayed");
    let outcome = q
        .fail(&by_id["broken"], "schema mismatch", false, 100)
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::DeadLettered { attempts: 1 });
    let retried = q.lease("w", 2, LEASE_MS, run_at_ms).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].job_id.as_str(), retried[0].attempt),
        ("flaky", 2)
    );
}

async fn a_capped_tenant_is_parked_and_woken_on_completion(q: Queue) {
    q.set_policy(&tenant("acme"), policy(1.0, 1, 1, 0.0, 1))
        .await
        .unwrap();
    q.enqueue(jobs("acme", 2), 0).await.unwrap();
    let first = q.lease("w", 10, LEASE_MS, 0).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        q.tenant_stats(&tenant("acme")).await.unwrap().parked,
        "capped"
    );
    let why = q
        .explain(&tenant("acme"), "acme-1", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(why.blocked_by, "cap", "{why:?}");
    assert_eq!(why.position_opt, Some(0));
    assert!(q.lease("w", 10, LEASE_MS, 1).await.unwrap().is_empty());
    q.complete(&first[0], 1.0, 2).await.unwrap();
    let second = q.lease("w", 10, LEASE_MS, 3).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].job_id, "acme-1");
}

async fn slots_above_the_floor_come_from_the_shared_burst_pool(q: Queue) {
    for t in ["acme", "globex"] {
        q.set_policy(&tenant(t), policy(1.0, 1, 3, 0.0, 1))
            .await
            .unwrap();
        q.enqueue(jobs(t, 5), 0).await.unwrap();
    }
    let leases = q.lease("w", 10, LEASE_MS, 0).await.unwrap();
    let mut per_tenant: HashMap<String, usize> = HashMap::new();
    for lease in &leases {
        *per_tenant.entry(lease.tenant.to_string()).or_default() += 1;
    }
    assert_eq!(
        leases.len(),
        3,
        "two floors plus one burst slot: {per_tenant:?}"
    );
    assert!(
        per_tenant["acme"] >= 1 && per_tenant["globex"] >= 1,
        "floors are guaranteed"
    );
    // Freeing the burst slot lets another tenant borrow it.
    let burst_holder = leases
        .iter()
        .find(|l| per_tenant[l.tenant.as_str()] == 2)
        .unwrap();
    q.complete(burst_holder, 1.0, 1).await.unwrap();
    assert_eq!(q.lease("w", 10, LEASE_MS, 2).await.unwrap().len(), 1);
}

async fn a_rate_limited_tenant_is_throttled_until_its_next_slot(q: Queue) {
    q.set_policy(&tenant("acme"), policy(1.0, 100, 100, 1.0, 1))
        .await
        .unwrap();
    q.enqueue(jobs("acme", 3), 1_000).await.unwrap();
    assert_eq!(q.lease("w", 10, LEASE_MS, 1_000).await.unwrap().len(), 1);
    assert_eq!(
        q.tenant_stats(&tenant("acme")).await.unwrap().parked,
        "throttled"
    );
    let why = q
        .explain(&tenant("acme"), "acme-1", 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(why.blocked_by, "rate_limit", "{why:?}");
    assert!(q.lease("w", 10, LEASE_MS, 1_500).await.unwrap().is_empty());
    assert_eq!(q.lease("w", 10, LEASE_MS, 2_000).await.unwrap().len(), 1);
}

async fn bands_are_served_in_order_with_a_reserved_share_for_batch(q: Queue) {
    let mut specs = Vec::new();
    for n in 0..200 {
        let mut spec = job("acme", &format!("i{n}"));
        spec.band = Band::Interactive;
        specs.push(spec);
    }
    for n in 0..50 {
        let mut spec = job("globex", &format!("b{n}"));
        spec.band = Band::Batch;
        specs.push(spec);
    }
    q.enqueue(specs, 0).await.unwrap();
    let first = q.lease("w", 1, LEASE_MS, 0).await.unwrap().pop().unwrap();
    assert_eq!(first.tenant.as_str(), "acme");
    q.complete(&first, 1.0, 0).await.unwrap();
    let batch = dispatch_one_at_a_time(&q, 199)
        .await
        .get("globex")
        .copied()
        .unwrap_or(0);
    assert!(
        (8..=12).contains(&batch),
        "batch got {batch} of 200 dispatches (reserved 5%)"
    );
}

async fn cancellation_stops_queued_delayed_and_running_jobs(q: Queue) {
    let mut delayed = job("acme", "later");
    delayed.run_at_ms_opt = Some(50_000);
    q.enqueue(
        vec![job("acme", "running"), job("acme", "queued"), delayed],
        0,
    )
    .await
    .unwrap();
    q.set_policy(&tenant("acme"), policy(1.0, 1, 1, 0.0, 1))
        .await
        .unwrap();
    let running = q.lease("w", 1, LEASE_MS, 0).await.unwrap().pop().unwrap();
    assert_eq!(running.job_id, "running");
    let acme = tenant("acme");
    assert_eq!(
        q.cancel(&acme, "queued").await.unwrap(),
        Some(QueueState::Queued)
    );
    assert_eq!(
        q.cancel(&acme, "later").await.unwrap(),
        Some(QueueState::Delayed)
    );
    assert_eq!(
        q.cancel(&acme, "running").await.unwrap(),
        Some(QueueState::Running)
    );
    assert_lease_is_stale(&q, &running, 1).await;
    for id in ["queued", "later", "running"] {
        assert_eq!(
            q.state(&acme, id).await.unwrap(),
            Some(QueueState::Cancelled)
        );
    }
    assert!(q.lease("w", 10, LEASE_MS, 60_000).await.unwrap().is_empty());
    assert_eq!(q.cancel(&acme, "nope").await.unwrap(), None);
}

async fn another_tenant_cannot_see_or_touch_a_job(q: Queue) {
    q.enqueue(vec![job("acme", "secret-job")], 0).await.unwrap();
    let globex = tenant("globex");
    assert_eq!(q.state(&globex, "secret-job").await.unwrap(), None);
    assert_eq!(q.cancel(&globex, "secret-job").await.unwrap(), None);
    assert!(q.explain(&globex, "secret-job", 0).await.unwrap().is_none());
    assert!(!q.redrive(&globex, "secret-job", 0).await.unwrap());
    assert_eq!(
        q.state(&tenant("acme"), "secret-job").await.unwrap(),
        Some(QueueState::Queued)
    );
}

async fn explain_gives_the_position_in_the_tenants_queue(q: Queue) {
    q.enqueue(jobs("acme", 5), 0).await.unwrap();
    let _ = q.lease("w", 0, LEASE_MS, 0).await.unwrap();
    let why = q
        .explain(&tenant("acme"), "acme-3", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(why.state, QueueState::Queued);
    assert_eq!(why.position_opt, Some(3));
    assert_eq!(why.blocked_by, "none", "{why:?}");
    let idle = q
        .explain(&tenant("acme"), "acme-3", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(idle.blocked_by, "no_worker");
}

async fn a_ten_thousand_job_burst_in_one_call_is_dispatched_without_error(q: Queue) {
    let enqueued = q.enqueue(jobs("acme", 10_000), 0).await.unwrap();
    assert_eq!(enqueued.iter().filter(|e| !e.existing).count(), 10_000);
    let mut seen = HashSet::new();
    loop {
        let batch = q.lease("w", 500, LEASE_MS, 0).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for lease in batch {
            assert!(seen.insert(lease.job_id.clone()), "dispatched twice");
            q.complete(&lease, 1.0, 0).await.unwrap();
        }
    }
    assert_eq!(seen.len(), 10_000);
}

async fn many_completions_in_one_call_reject_stale_leases(q: Queue) {
    q.set_policy(&tenant("acme"), policy(1.0, 3, 3, 0.0, 1))
        .await
        .unwrap();
    q.enqueue(jobs("acme", 3), 0).await.unwrap();
    let leases = q.lease("w", 3, 1_000, 0).await.unwrap();
    q.cancel(&tenant("acme"), &leases[1].job_id).await.unwrap();
    let done: Vec<_> = leases.iter().map(|l| (l.clone(), 1.0)).collect();
    let results = q.complete_many(&done, 10).await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(results[1], Err(QueueError::StaleLease { .. })));
    assert_eq!(
        q.state(&tenant("acme"), &leases[0].job_id).await.unwrap(),
        Some(QueueState::Succeeded)
    );
}

/// Measured costs settle in the batch that reports them: each completion is charged once (a
/// lease repeated in the batch is stale), served cost grows by what was measured, and the
/// tenant's finish tag moves so a tenant that under-estimated waits behind one that did not.
async fn measured_costs_are_charged_once_per_completion_in_a_batch(q: Queue) {
    for name in ["acme", "globex"] {
        q.set_policy(&tenant(name), policy(1.0, 4, 4, 0.0, 1))
            .await
            .unwrap();
    }
    q.enqueue(jobs("acme", 2), 0).await.unwrap();
    let leases = q.lease("w", 2, LEASE_MS, 0).await.unwrap();
    assert_eq!(leases.len(), 2);
    let mut done: Vec<_> = leases.iter().map(|l| (l.clone(), 10.0)).collect();
    done.push((leases[0].clone(), 10.0));
    let results = q.complete_many(&done, 5).await.unwrap();
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(matches!(results[2], Err(QueueError::StaleLease { .. })));
    let stats = q.tenant_stats(&tenant("acme")).await.unwrap();
    assert_eq!(stats.served_cost, 20.0);
    assert_eq!(stats.running, 0);
    // acme was charged 20 for work it estimated at 2: globex, arriving now, goes first
    let mut next = jobs("acme", 5).split_off(2);
    next.extend(jobs("globex", 3));
    q.enqueue(next, 10).await.unwrap();
    let order: Vec<String> = q
        .lease("w", 3, LEASE_MS, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.tenant.to_string())
        .collect();
    assert_eq!(order, ["globex", "globex", "globex"]);
}

async fn a_succeeded_job_is_remembered(q: Queue) {
    q.enqueue(vec![job("acme", "done-1")], 0).await.unwrap();
    let lease = q.lease("w", 1, LEASE_MS, 0).await.unwrap().remove(0);
    q.complete(&lease, 1.0, 10).await.unwrap();
    // Submitting the same job again returns it instead of running it twice.
    let again = q.enqueue(vec![job("acme", "done-1")], 20).await.unwrap();
    assert!(again[0].existing, "a finished job was accepted again");
    assert!(q.lease("w", 1, LEASE_MS, 30).await.unwrap().is_empty());
    assert_eq!(
        q.state(&tenant("acme"), "done-1").await.unwrap(),
        Some(QueueState::Succeeded)
    );
    // The finished lease is stale, not unknown, for a late heartbeat or a second completion.
    assert_lease_is_stale(&q, &lease, 40).await;
    let explained = q.explain(&tenant("acme"), "done-1", 60).await.unwrap();
    assert_eq!(explained.map(|e| e.state), Some(QueueState::Succeeded));
    // Another tenant naming the same id has no such job.
    assert_eq!(q.state(&tenant("globex"), "done-1").await.unwrap(), None);
}

async fn forgetting_a_tenant_cancels_its_jobs_and_spares_the_others(q: Queue) {
    let mut later = job("acme", "later");
    later.run_at_ms_opt = Some(60_000);
    let mut keyed = job("acme", "keyed");
    keyed.idempotency_key_opt = Some("k1".to_string());
    q.enqueue(
        vec![
            job("acme", "a1"),
            job("acme", "a2"),
            later,
            keyed,
            job("globex", "g1"),
        ],
        0,
    )
    .await
    .unwrap();
    let running = q.lease("w", 1, LEASE_MS, 0).await.unwrap().pop().unwrap();
    assert_eq!(running.tenant.as_str(), "acme");
    let acme = tenant("acme");
    assert_eq!(q.forget_tenant(&acme).await.unwrap(), 4);
    for id in ["a1", "a2", "later", "keyed"] {
        assert_eq!(q.state(&acme, id).await.unwrap(), None, "{id}");
    }
    assert!(matches!(
        q.complete(&running, 1.0, 1).await,
        Err(QueueError::StaleLease { .. }) | Err(QueueError::NotFound(_))
    ));
    assert_eq!(q.tenant_stats(&acme).await.unwrap(), Default::default());
    let left = q.lease("w", 10, LEASE_MS, 100_000).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].job_id, "g1");
    // The id can be used again from scratch, idempotency key included.
    let mut again = job("acme", "fresh");
    again.idempotency_key_opt = Some("k1".to_string());
    assert!(!q.enqueue(vec![again], 100_000).await.unwrap()[0].existing);
}

async fn weights_divide_the_pool(q: Queue) {
    q.set_policy(&tenant("big"), policy(4.0, 1000, 1000, 0.0, 1))
        .await
        .unwrap();
    q.set_policy(&tenant("small"), policy(1.0, 1000, 1000, 0.0, 1))
        .await
        .unwrap();
    q.enqueue(jobs("big", 300), 0).await.unwrap();
    q.enqueue(jobs("small", 300), 0).await.unwrap();
    let big = dispatch_one_at_a_time(&q, 100)
        .await
        .get("big")
        .copied()
        .unwrap_or(0);
    assert!((78..=82).contains(&big), "weight 4 of 5 got {big} of 100");
}

async fn delayed_jobs_wait_for_their_time(q: Queue) {
    let mut spec = job("acme", "scheduled");
    spec.run_at_ms_opt = Some(5_000);
    q.enqueue(vec![spec], 0).await.unwrap();
    assert_eq!(
        q.state(&tenant("acme"), "scheduled").await.unwrap(),
        Some(QueueState::Delayed)
    );
    assert!(q.lease("w", 1, LEASE_MS, 4_999).await.unwrap().is_empty());
    assert_eq!(q.lease("w", 1, LEASE_MS, 5_000).await.unwrap().len(), 1);
}

async fn a_waiting_worker_is_woken_by_an_enqueue(q: Queue) {
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move { q.wait_for_work(30_000).await })
    };
    tokio::task::yield_now().await;
    q.enqueue(vec![job("acme", "wake-up")], 0).await.unwrap();
    let woke = tokio::time::timeout(std::time::Duration::from_secs(20), waiter).await;
    assert!(woke.is_ok(), "the waiter was not woken by the enqueue");
}

async fn an_idle_wait_longer_than_a_client_timeout_returns_cleanly(q: Queue) {
    // No work arrives: the wait ends by its own timeout, not with a client error.
    q.wait_for_work(800).await.unwrap();
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test] async fn $name() { super::$name(super::memory_queue(1)).await } )*
        }
        mod redis {
            $( #[tokio::test] async fn $name() {
                let (queue, namespace) = super::redis_queue(1).await;
                super::$name(queue).await;
                tenantry::bench::drop_namespace(&super::redis_url(), &namespace).await.unwrap();
            } )*
        }
    };
}

conformance!(
    round_trip,
    idempotency_keys_return_the_existing_job,
    a_stale_completion_is_rejected_after_the_lease_expired,
    a_poison_job_ends_in_the_dead_letter_list_and_can_be_redriven,
    retryable_failures_back_off_and_non_retryable_ones_dead_letter,
    a_capped_tenant_is_parked_and_woken_on_completion,
    slots_above_the_floor_come_from_the_shared_burst_pool,
    a_rate_limited_tenant_is_throttled_until_its_next_slot,
    bands_are_served_in_order_with_a_reserved_share_for_batch,
    cancellation_stops_queued_delayed_and_running_jobs,
    another_tenant_cannot_see_or_touch_a_job,
    explain_gives_the_position_in_the_tenants_queue,
    a_ten_thousand_job_burst_in_one_call_is_dispatched_without_error,
    weights_divide_the_pool,
    forgetting_a_tenant_cancels_its_jobs_and_spares_the_others,
    many_completions_in_one_call_reject_stale_leases,
    measured_costs_are_charged_once_per_completion_in_a_batch,
    a_succeeded_job_is_remembered,
    delayed_jobs_wait_for_their_time,
    a_waiting_worker_is_woken_by_an_enqueue,
    an_idle_wait_longer_than_a_client_timeout_returns_cleanly,
);

/// Redis keeps succeeded jobs in two rotating generations so its memory stays bounded: a job
/// completed in one generation is still known through the next, and forgotten after that.
#[tokio::test]
async fn redis_forgets_succeeded_jobs_two_generations_later() {
    const HALF_DAY_MS: u64 = 12 * 3_600_000;
    let (q, namespace) = redis_queue(1).await;
    let complete_one = |id: &'static str, now: u64| {
        let q = q.clone();
        async move {
            q.enqueue(vec![job("acme", id)], now).await.unwrap();
            let lease = q.lease("w", 1, LEASE_MS, now).await.unwrap().remove(0);
            assert_eq!(lease.job_id, id);
            q.complete(&lease, 1.0, now).await.unwrap();
        }
    };
    complete_one("first", 1_000).await;
    // Half a day later the generation holding "first" stops taking new completions ...
    complete_one("second", 1_000 + HALF_DAY_MS).await;
    assert_eq!(
        q.state(&tenant("acme"), "first").await.unwrap(),
        Some(QueueState::Succeeded)
    );
    // ... and the next rotation drops it, while "second" is still known.
    complete_one("third", 1_000 + 2 * HALF_DAY_MS).await;
    assert_eq!(q.state(&tenant("acme"), "first").await.unwrap(), None);
    assert_eq!(
        q.state(&tenant("acme"), "second").await.unwrap(),
        Some(QueueState::Succeeded)
    );
    tenantry::bench::drop_namespace(&redis_url(), &namespace)
        .await
        .unwrap();
}

/// The Redis queue keeps per-band queued counts that tell an enqueue when a tenant starts
/// afresh in a band. A count that is off (a tenant hash from an older script, or a bug) must
/// never strand a job nor stop the tenant: the group structure has the last word.
#[tokio::test]
async fn redis_queued_counts_that_are_off_strand_nothing() {
    let (q, namespace) = redis_queue(1).await;
    q.set_policy(&tenant("acme"), policy(1.0, 8, 8, 0.0, 1))
        .await
        .unwrap();
    let (conn, shard) = shard_connection(&namespace).await;
    let tenant_key = format!("{shard}:tn:acme");
    let set_count = |count: &'static str| {
        let mut conn = conn.clone();
        let key = tenant_key.clone();
        async move {
            let _: () = ::redis::cmd("HSET")
                .arg(&key)
                .arg("q1")
                .arg(count)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    let mut specs = jobs("acme", 3);
    specs[2].group = "run-2".to_string();
    q.enqueue(specs, 0).await.unwrap();
    // too low: every queued job is still dispatched
    set_count("0").await;
    let leased = q.lease("w", 8, LEASE_MS, 0).await.unwrap();
    assert_eq!(leased.len(), 3);
    for lease in &leased {
        q.complete(lease, 1.0, 1).await.unwrap();
    }
    // too high with nothing queued: a lease finds nothing, and the next job is served
    set_count("7").await;
    assert!(q.lease("w", 8, LEASE_MS, 2).await.unwrap().is_empty());
    q.enqueue(vec![job("acme", "later")], 3).await.unwrap();
    let leased = q.lease("w", 8, LEASE_MS, 4).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].job_id, "later");
    assert_eq!(q.tenant_stats(&tenant("acme")).await.unwrap().queued, 0);
    tenantry::bench::drop_namespace(&redis_url(), &namespace)
        .await
        .unwrap();
}

/// A job hash written by the previous script version keeps max attempts, kind and payload as
/// separate fields instead of the packed record: a Redis upgraded in place still leases,
/// retries and dead-letters such a job with everything it was submitted with.
#[tokio::test]
async fn redis_reads_job_hashes_written_before_the_packed_record() {
    let (q, namespace) = redis_queue(1).await;
    let mut spec = job("acme", "legacy");
    spec.max_attempts = 1;
    q.enqueue(vec![spec.clone()], 0).await.unwrap();
    let (mut conn, shard) = shard_connection(&namespace).await;
    let job_key = format!("{shard}:j:acme/legacy");
    let _: () = ::redis::pipe()
        .cmd("HDEL")
        .arg(&job_key)
        .arg("d")
        .ignore()
        .cmd("HSET")
        .arg(&job_key)
        .arg("m")
        .arg("1")
        .arg("k")
        .arg(&spec.kind)
        .arg("p")
        .arg(spec.payload.to_string())
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let lease = q.lease("w", 1, LEASE_MS, 0).await.unwrap().remove(0);
    assert_eq!(
        (lease.kind.as_str(), &lease.payload, lease.max_attempts),
        (spec.kind.as_str(), &spec.payload, 1)
    );
    let outcome = q.fail(&lease, "boom", true, 1).await.unwrap();
    assert!(matches!(outcome, FailOutcome::DeadLettered { attempts: 1 }));
    let dead = q.dead_letters(&tenant("acme")).await.unwrap();
    assert_eq!(
        (dead[0].job_id.as_str(), dead[0].kind.as_str()),
        ("legacy", "validate")
    );
    tenantry::bench::drop_namespace(&redis_url(), &namespace)
        .await
        .unwrap();
}
