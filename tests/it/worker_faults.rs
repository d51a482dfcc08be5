//! Fault tests against a real Redis and real worker processes: a worker killed with SIGKILL
//! mid-job, a poison job that kills every worker it lands on, and Redis losing every key.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use tenantry::audit::Actor;
use tenantry::clock::SystemClock;
use tenantry::jobs::{JobService, SubmitJob, open_queues};
use tenantry::queue::QueueState;
use tenantry::storage::{RelativePath, TenantStore};
use tenantry::{Platform, Settings, TenantId};
use tokio_util::sync::CancellationToken;

use crate::support::{eventually, start_pool};

const LEASE_MS: u64 = 1_500;

fn redis_url() -> String {
    std::env::var("TENANTRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

struct Cluster {
    dir: tempfile::TempDir,
    namespace: String,
    jobs: JobService,
    store: TenantStore,
}

impl Drop for Cluster {
    /// Leaves no keys behind in the shared test Redis.
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(redis_url())
            && let Ok(mut conn) = client.get_connection()
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.namespace))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(&keys).query(&mut conn);
            }
        }
    }
}

impl Cluster {
    async fn start(diagnostics: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let namespace = format!("tenantry-fault-{}", uuid::Uuid::now_v7());
        let settings = Settings {
            storage_url: format!("file://{}", dir.path().display()),
            queue_url: redis_url(),
            queue_namespace: namespace.clone(),
            lease_ms: LEASE_MS,
            diagnostic_jobs: diagnostics,
            ..Settings::default()
        };
        let platform = Platform::open(settings.clone()).await.unwrap();
        let queues = open_queues(&settings)
            .await
            .unwrap_or_else(|e| panic!("redis at {} is required: {e}", redis_url()));
        let jobs = JobService::new(
            platform.clone(),
            queues,
            settings.pools.clone(),
            Arc::new(SystemClock),
        );
        let tenant = TenantId::parse("acme").unwrap();
        platform
            .onboard(&tenant, "Acme", "pro", Actor::system())
            .await
            .unwrap();
        let store = platform.tenant_store(&tenant).await.unwrap();
        Self {
            dir,
            namespace,
            jobs,
            store,
        }
    }

    fn worker(&self, diagnostics: bool) -> Child {
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["worker", "--pool", "cpu"])
            .env(
                "TENANTRY_STORAGE_URL",
                format!("file://{}", self.dir.path().display()),
            )
            .env("TENANTRY_QUEUE_URL", redis_url())
            .env("TENANTRY_QUEUE_NAMESPACE", &self.namespace)
            .env("TENANTRY_LEASE_MS", LEASE_MS.to_string())
            .env(
                "TENANTRY_DIAGNOSTIC_JOBS",
                if diagnostics { "1" } else { "0" },
            )
            .env_remove("TENANTRY_MASTER_KEY_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker starts")
    }

    async fn submit(&self, kind: &str, payload: serde_json::Value, max_attempts: u32) -> String {
        let request = SubmitJob {
            kind: kind.to_string(),
            group: None,
            band: None,
            payload,
            idempotency_key: None,
            max_attempts: Some(max_attempts),
            cost_estimate: None,
        };
        self.jobs
            .submit(&self.store, request)
            .await
            .unwrap()
            .0
            .job_id
    }

    async fn state_is(&self, job_id: &str, state: QueueState) -> bool {
        self.jobs
            .get(&self.store, job_id)
            .await
            .map(|r| r.state == state)
            .unwrap_or(false)
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_job_whose_worker_is_killed_completes_exactly_once_on_another_worker() {
    let cluster = Cluster::start(false).await;
    let job_id = cluster
        .submit("sleep", serde_json::json!({"ms": 2_000}), 3)
        .await;
    let mut first = cluster.worker(false);
    assert!(
        eventually(|| cluster.state_is(&job_id, QueueState::Running)).await,
        "never started"
    );
    kill(&mut first); // SIGKILL mid-job
    let mut second = cluster.worker(false);
    let finished = eventually(|| cluster.state_is(&job_id, QueueState::Succeeded)).await;
    kill(&mut second);
    assert!(
        finished,
        "{:?}",
        cluster.jobs.get(&cluster.store, &job_id).await
    );
    let record = cluster.jobs.get(&cluster.store, &job_id).await.unwrap();
    assert_eq!(record.attempts, 2, "the killed run counts as an attempt");
    assert!(
        record
            .history
            .iter()
            .any(|a| a.error.contains("worker lost")),
        "{record:?}"
    );
    let outputs = cluster
        .store
        .list(Some(
            &RelativePath::parse(&format!("outputs/{job_id}")).unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(outputs.len(), 1, "exactly one committed output");
    let committed: serde_json::Value = cluster
        .store
        .get_json(&RelativePath::parse(&format!("outputs/{job_id}/result.json")).unwrap())
        .await
        .unwrap();
    assert_eq!(committed["attempt"], 2);
}

#[tokio::test]
async fn a_poison_job_that_kills_every_worker_ends_in_the_dead_letter_list() {
    let cluster = Cluster::start(true).await;
    let job_id = cluster.submit("crash", serde_json::Value::Null, 2).await;
    for _ in 0..2 {
        let mut worker = cluster.worker(true);
        let status = tokio::task::spawn_blocking(move || worker.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(
            !status.success(),
            "the poison job should have killed the worker"
        );
    }
    // A healthy worker's reaper finds the second lost lease and dead-letters the job.
    let mut survivor = cluster.worker(false);
    let dead = eventually(|| cluster.state_is(&job_id, QueueState::DeadLettered)).await;
    kill(&mut survivor);
    assert!(
        dead,
        "{:?}",
        cluster.jobs.get(&cluster.store, &job_id).await
    );
    let letters = cluster.jobs.dead_letters(&cluster.store).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts.len(), 2);
}

#[tokio::test]
async fn wiping_redis_loses_no_accepted_job() {
    let cluster = Cluster::start(false).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            cluster
                .submit("sleep", serde_json::json!({"ms": 1}), 3)
                .await,
        );
    }
    // Every key of this queue namespace disappears, as after FLUSHALL.
    let deleted = tenantry::bench::drop_namespace(&redis_url(), &cluster.namespace)
        .await
        .unwrap();
    assert!(deleted > 20, "only {deleted} keys deleted");
    let queue = cluster.jobs.queue("cpu").unwrap();
    assert_eq!(
        queue.state(cluster.store.tenant(), &ids[0]).await.unwrap(),
        None
    );

    let report = cluster.jobs.reconcile().await.unwrap();
    assert_eq!(report.requeued, 20);
    assert_eq!(
        cluster.jobs.reconcile().await.unwrap().requeued,
        0,
        "reconciling twice adds nothing"
    );
    let shutdown = CancellationToken::new();
    let pool = start_pool(&cluster.jobs, "cpu", shutdown.clone());
    for id in &ids {
        assert!(
            eventually(|| cluster.state_is(id, QueueState::Succeeded)).await,
            "job {id} lost"
        );
    }
    shutdown.cancel();
    pool.await.unwrap();
}
