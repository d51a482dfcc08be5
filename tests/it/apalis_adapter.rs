//! The fair queue driven by apalis 1.0's worker runtime through the `Persistence` adapter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use apalis::prelude::*;
use tenantry::TenantId;
use tenantry::clock::SystemClock;
use tenantry::queue::{Band, JobQueue, JobSpec, Lease, MemoryQueue, QueueState};
use tenantry::worker::ApalisQueueBackend;

const JOBS: u64 = 20;

fn spec(tenant: &str, n: u64, fail: bool) -> JobSpec {
    JobSpec {
        job_id: format!("{tenant}-{n}"),
        tenant: TenantId::parse(tenant).unwrap(),
        kind: "noop".to_string(),
        group: "g".to_string(),
        band: Band::Standard,
        cost_estimate: 1.0,
        max_attempts: 3,
        idempotency_key_opt: None,
        run_at_ms_opt: None,
        payload: serde_json::json!({ "fail": fail }),
    }
}

async fn handle(
    lease: Lease,
    done: Data<Arc<AtomicU64>>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
    if finished >= JOBS {
        worker.stop()?;
    }
    if lease.payload["fail"] == true {
        return Err("the payload asked to fail".into());
    }
    Ok(())
}

#[tokio::test]
async fn an_apalis_worker_runs_the_fair_queue_and_reports_outcomes() {
    let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new(4));
    let now = tenantry::clock::Clock::now_ms(&SystemClock);
    let mut specs: Vec<JobSpec> = (0..JOBS / 2).map(|n| spec("acme", n, false)).collect();
    specs.extend((0..JOBS / 2 - 1).map(|n| spec("globex", n, false)));
    specs.push(spec("globex", 99, true));
    queue.enqueue(specs, now).await.unwrap();

    let done = Arc::new(AtomicU64::new(0));
    let backend = ApalisQueueBackend::new(queue.clone(), Arc::new(SystemClock), 5_000, 4, None);
    let worker = WorkerBuilder::new("apalis-adapter-test")
        .backend(backend)
        .data(done.clone())
        .parallelize(|future| tokio::spawn(future))
        .build(handle);
    tokio::time::timeout(std::time::Duration::from_secs(30), worker.run())
        .await
        .expect("the worker finished its jobs")
        .expect("the worker ran without error");

    assert_eq!(done.load(Ordering::SeqCst), JOBS);
    let acme = TenantId::parse("acme").unwrap();
    let globex = TenantId::parse("globex").unwrap();
    for n in 0..JOBS / 2 {
        assert_eq!(
            queue.state(&acme, &format!("acme-{n}")).await.unwrap(),
            Some(QueueState::Succeeded)
        );
    }
    // The failed attempt went back through the queue's retry path.
    assert_eq!(
        queue.state(&globex, "globex-99").await.unwrap(),
        Some(QueueState::Delayed)
    );
}
