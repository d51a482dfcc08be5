//! The memory backend: one process, the same semantics as Redis. The embedded default.

mod core;

use std::sync::Mutex;

use async_trait::async_trait;
use rand::Rng;
use tokio::sync::Notify;

pub use self::core::Core;
use crate::queue::contract::{JobQueue, TenantQueueStats};
use crate::queue::types::{
    DeadLetter, Enqueued, Explanation, FailOutcome, JobSpec, Lease, QueueResult, QueueState,
    TenantPolicy,
};
use crate::tenant::TenantId;

/// An in-process fair queue for one pool.
pub struct MemoryQueue {
    core: Mutex<Core>,
    wake: Notify,
}

impl MemoryQueue {
    /// `burst_pool`: slots shared by tenants running above their guaranteed floor.
    pub fn new(burst_pool: u32) -> Self {
        Self {
            core: Mutex::new(Core::new(burst_pool)),
            wake: Notify::new(),
        }
    }

    fn with<T>(&self, operation: impl FnOnce(&mut Core) -> T) -> T {
        operation(&mut self.core.lock().expect("queue state poisoned"))
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn set_policy(&self, tenant: &TenantId, policy: TenantPolicy) -> QueueResult<()> {
        self.with(|core| core.set_policy(tenant, policy));
        self.wake.notify_one();
        Ok(())
    }

    async fn enqueue(&self, specs: Vec<JobSpec>, now_ms: u64) -> QueueResult<Vec<Enqueued>> {
        let out = self.with(|core| core.enqueue(specs, now_ms));
        if out.iter().any(|e| !e.existing) {
            self.wake.notify_waiters();
            self.wake.notify_one();
        }
        Ok(out)
    }

    async fn lease(
        &self,
        _worker: &str,
        max: usize,
        lease_ms: u64,
        now_ms: u64,
    ) -> QueueResult<Vec<Lease>> {
        Ok(self.with(|core| core.lease(max, lease_ms, now_ms)))
    }

    async fn wait_for_work(&self, wait_ms: u64) -> QueueResult<()> {
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(wait_ms),
            self.wake.notified(),
        )
        .await;
        Ok(())
    }

    async fn heartbeat(&self, lease: &Lease, lease_ms: u64, now_ms: u64) -> QueueResult<()> {
        self.with(|core| core.heartbeat(lease, lease_ms, now_ms))
    }

    async fn complete(&self, lease: &Lease, measured_cost: f64, now_ms: u64) -> QueueResult<()> {
        self.with(|core| core.complete(lease, measured_cost, now_ms))?;
        self.wake.notify_one();
        Ok(())
    }

    async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        retryable: bool,
        now_ms: u64,
    ) -> QueueResult<FailOutcome> {
        let jitter = rand::thread_rng().r#gen::<f64>();
        let outcome = self.with(|core| core.fail(lease, error, retryable, now_ms, jitter))?;
        self.wake.notify_one();
        Ok(outcome)
    }

    async fn reap(&self, now_ms: u64) -> QueueResult<Vec<(TenantId, String, FailOutcome)>> {
        let mut rng = rand::thread_rng();
        let out = self.with(|core| core.reap(now_ms, &mut || rng.r#gen::<f64>()));
        if !out.is_empty() {
            self.wake.notify_one();
        }
        Ok(out)
    }

    async fn cancel(&self, tenant: &TenantId, job_id: &str) -> QueueResult<Option<QueueState>> {
        Ok(self.with(|core| core.cancel(tenant, job_id)))
    }

    async fn state(&self, tenant: &TenantId, job_id: &str) -> QueueResult<Option<QueueState>> {
        Ok(self.with(|core| core.state(tenant, job_id)))
    }

    async fn dead_letters(&self, tenant: &TenantId) -> QueueResult<Vec<DeadLetter>> {
        Ok(self.with(|core| core.dead_letters(tenant)))
    }

    async fn redrive(&self, tenant: &TenantId, job_id: &str, _now_ms: u64) -> QueueResult<bool> {
        let redriven = self.with(|core| core.redrive(tenant, job_id));
        if redriven {
            self.wake.notify_one();
        }
        Ok(redriven)
    }

    async fn explain(
        &self,
        tenant: &TenantId,
        job_id: &str,
        now_ms: u64,
    ) -> QueueResult<Option<Explanation>> {
        Ok(self.with(|core| core.explain(tenant, job_id, now_ms)))
    }

    async fn tenant_stats(&self, tenant: &TenantId) -> QueueResult<TenantQueueStats> {
        Ok(self.with(|core| core.stats(tenant)))
    }

    async fn forget_tenant(&self, tenant: &TenantId) -> QueueResult<u64> {
        Ok(self.with(|core| core.forget_tenant(tenant)))
    }
}
