//! The `JobQueue` contract both backends implement and the conformance suite checks.

use async_trait::async_trait;

use crate::queue::types::{
    DeadLetter, Enqueued, Explanation, FailOutcome, JobSpec, Lease, QueueResult, QueueState,
    TenantPolicy,
};
use crate::tenant::TenantId;

/// Counters for one tenant, for metrics and the operator view.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TenantQueueStats {
    pub queued: u64,
    pub running: u64,
    pub delayed: u64,
    pub dead_lettered: u64,
    /// `capped`, `throttled` or empty when runnable or idle.
    pub parked: String,
    pub served_cost: f64,
}

/// A fair multi-tenant job queue for one worker pool (one scheduling shard).
///
/// Every call is atomic. Time is passed in (`now_ms`) so tests and simulations control it.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Sets a tenant's weight, caps and rate limit; takes effect at the next dispatch.
    async fn set_policy(&self, tenant: &TenantId, policy: TenantPolicy) -> QueueResult<()>;

    /// Enqueues jobs in one atomic call; idempotency keys return existing jobs.
    async fn enqueue(&self, specs: Vec<JobSpec>, now_ms: u64) -> QueueResult<Vec<Enqueued>>;

    /// Leases up to `max` jobs in fair order without waiting.
    async fn lease(
        &self,
        worker: &str,
        max: usize,
        lease_ms: u64,
        now_ms: u64,
    ) -> QueueResult<Vec<Lease>>;

    /// Waits up to `wait_ms` for a wake-up signal (work enqueued or a slot freed). Returns at
    /// once when one is pending; never polls.
    async fn wait_for_work(&self, wait_ms: u64) -> QueueResult<()>;

    /// Extends a lease; fails with `StaleLease` when the token is no longer current.
    async fn heartbeat(&self, lease: &Lease, lease_ms: u64, now_ms: u64) -> QueueResult<()>;

    /// Completes a job and charges its measured cost; a stale token is rejected.
    async fn complete(&self, lease: &Lease, measured_cost: f64, now_ms: u64) -> QueueResult<()>;

    /// Completes many jobs in one call; one `Ok(())` or error per lease, in order.
    async fn complete_many(
        &self,
        done: &[(Lease, f64)],
        now_ms: u64,
    ) -> QueueResult<Vec<QueueResult<()>>> {
        let mut out = Vec::with_capacity(done.len());
        for (lease, cost) in done {
            out.push(self.complete(lease, *cost, now_ms).await);
        }
        Ok(out)
    }

    /// Records a failed attempt: retried with backoff and full jitter while attempts remain
    /// and the error is retryable, dead-lettered otherwise.
    async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        retryable: bool,
        now_ms: u64,
    ) -> QueueResult<FailOutcome>;

    /// Requeues every job whose lease expired (a dead worker): the lost run counts as an
    /// attempt. Returns the affected (tenant, job id, outcome).
    async fn reap(&self, now_ms: u64) -> QueueResult<Vec<(TenantId, String, FailOutcome)>>;

    /// Cancels a queued, delayed or running job of `tenant`. Returns the state it was in, or
    /// `None` when the tenant has no such job. A running job's lease becomes stale.
    async fn cancel(&self, tenant: &TenantId, job_id: &str) -> QueueResult<Option<QueueState>>;

    /// The job's state as the queue knows it (`None`: unknown to the queue).
    async fn state(&self, tenant: &TenantId, job_id: &str) -> QueueResult<Option<QueueState>>;

    async fn dead_letters(&self, tenant: &TenantId) -> QueueResult<Vec<DeadLetter>>;

    /// Moves a dead-lettered job back to the queue with a fresh attempt budget.
    async fn redrive(&self, tenant: &TenantId, job_id: &str, now_ms: u64) -> QueueResult<bool>;

    /// Why a job is (not) running.
    async fn explain(
        &self,
        tenant: &TenantId,
        job_id: &str,
        now_ms: u64,
    ) -> QueueResult<Option<Explanation>>;

    async fn tenant_stats(&self, tenant: &TenantId) -> QueueResult<TenantQueueStats>;

    /// Drops every trace of a tenant (offboarding): its queued, delayed and running jobs are
    /// cancelled and its policy, counters, rate-limit cell, idempotency keys and dead letters
    /// are deleted. Returns how many unfinished jobs were cancelled.
    async fn forget_tenant(&self, tenant: &TenantId) -> QueueResult<u64>;
}
