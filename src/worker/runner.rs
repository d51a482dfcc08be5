//! The pool runner: leases jobs fairly, runs each on its own task with heartbeats, a timeout
//! and panic isolation, records outcomes, and drains on shutdown with a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::PoolConfig;
use crate::jobs::JobService;
use crate::queue::{JobQueue, Lease, QueueError, QueueState};
use crate::worker::handlers::{HandlerError, HandlerRegistry, JobContext, JobOutput};

/// How often the reaper looks for expired leases.
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of one running pool.
#[derive(Clone)]
pub struct PoolRunner {
    pub jobs: JobService,
    pub pool: PoolConfig,
    pub handlers: HandlerRegistry,
    pub worker_id: String,
    pub lease_ms: u64,
    pub job_timeout: Duration,
    pub drain_timeout: Duration,
}

impl PoolRunner {
    /// A runner for `pool` with the process's lease length, an hour per job unless the pool
    /// sets a per-kind timeout, and a 30 s drain.
    pub fn new(
        jobs: JobService,
        pool: PoolConfig,
        handlers: HandlerRegistry,
        worker_id: String,
    ) -> Self {
        let lease_ms = jobs.platform().settings().lease_ms;
        Self {
            jobs,
            pool,
            handlers,
            worker_id,
            lease_ms,
            job_timeout: Duration::from_secs(3_600),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// Runs on the pool's configured runtime (`apalis` or `native`) until `shutdown`.
    pub async fn run_configured(self, shutdown: CancellationToken) -> Result<(), QueueError> {
        match self.pool.runtime {
            crate::config::PoolRuntime::Native => self.run(shutdown).await,
            crate::config::PoolRuntime::Apalis => self.run_on_apalis(shutdown).await,
        }
    }

    /// Runs until `shutdown`, then lets running jobs finish for up to `drain_timeout`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), QueueError> {
        let queue = self
            .jobs
            .queue(&self.pool.name)
            .cloned()
            .ok_or_else(|| QueueError::NotFound(format!("pool {}", self.pool.name)))?;
        let slots = Arc::new(Semaphore::new(self.pool.concurrency as usize));
        let tracker = TaskTracker::new();
        let jobs_cancel = CancellationToken::new();
        tracing::info!(pool = %self.pool.name, worker = %self.worker_id, concurrency = self.pool.concurrency, "worker pool started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = slots.clone().acquire_owned() => drop(permit),
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let now = self.jobs.clock().now_ms();
            let leases = match queue.lease(&self.worker_id, free, self.lease_ms, now).await {
                Ok(leases) => leases,
                Err(error) => {
                    tracing::warn!(pool = %self.pool.name, %error, "lease failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            if leases.is_empty() {
                tokio::select! {
                    _ = queue.wait_for_work(1_000) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            for lease in leases {
                let permit = slots
                    .clone()
                    .try_acquire_owned()
                    .expect("leased no more than free slots");
                let runner = self.clone();
                let queue = queue.clone();
                let cancel = jobs_cancel.child_token();
                tracker.spawn(async move {
                    runner.run_job(queue, lease, cancel).await;
                    drop(permit);
                });
            }
        }
        tracker.close();
        tracing::info!(pool = %self.pool.name, running = tracker.len(), "draining");
        if tokio::time::timeout(self.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(pool = %self.pool.name, "drain deadline passed: cancelling running jobs");
            jobs_cancel.cancel();
            tracker.wait().await;
        }
        tracing::info!(pool = %self.pool.name, "worker pool stopped");
        Ok(())
    }

    async fn run_job(&self, queue: Arc<dyn JobQueue>, lease: Lease, cancel: CancellationToken) {
        let span = tracing::info_span!("job", tenant = %lease.tenant, job_id = %lease.job_id, kind = %lease.kind, attempt = lease.attempt);
        async move {
            let store = match self.jobs.platform().active_tenant_store(&lease.tenant).await {
                Ok(store) => store,
                Err(error) => {
                    tracing::warn!(%error, "tenant is not active: dead-lettering its job");
                    let _ = queue.fail(&lease, &format!("tenant unavailable: {error}"), false, self.jobs.clock().now_ms()).await;
                    return;
                }
            };
            self.mark_running(&store, &lease).await;
            let done = CancellationToken::new();
            let heartbeat = tokio::spawn(heartbeat_loop(
                queue.clone(),
                lease.clone(),
                self.lease_ms,
                self.jobs.clone(),
                cancel.clone(),
                done.clone(),
            ));
            let started = Instant::now();
            let result = self.invoke(&store, &lease, cancel.clone()).await;
            done.cancel();
            let _ = heartbeat.await;
            let now = self.jobs.clock().now_ms();
            match result {
                Ok(output) => {
                    let cost = output.measured_cost_opt.unwrap_or(started.elapsed().as_secs_f64());
                    match queue.complete(&lease, cost, now).await {
                        Ok(()) => {
                            let location = output.output_location_opt.clone();
                            let continuation = output.continuation_opt.clone();
                            if let Err(error) = self.jobs.record_success(&store, &lease.job_id, location, continuation).await {
                                tracing::warn!(%error, "cannot record the success");
                            }
                            tracing::info!(cost, "job succeeded");
                        }
                        Err(error) => tracing::warn!(%error, "completion rejected: another attempt owns the job"),
                    }
                }
                Err(error) => match queue.fail(&lease, &error.message, error.retryable, now).await {
                    Ok(outcome) => {
                        tracing::warn!(error = %error.message, ?outcome, "job failed");
                        let _ = self.jobs.record_failure(&store, &lease.job_id, &error.message, &outcome).await;
                    }
                    Err(stale) => tracing::warn!(error = %stale, "failure not recorded: the lease is no longer ours"),
                },
            }
        }
        .instrument(span)
        .await
    }

    /// Runs the pool on apalis 1.0's worker runtime (supervision, tower layers) through
    /// `ApalisQueueBackend`, until `shutdown`.
    pub async fn run_on_apalis(self, shutdown: CancellationToken) -> Result<(), QueueError> {
        use apalis::prelude::*;
        let queue = self
            .jobs
            .queue(&self.pool.name)
            .cloned()
            .ok_or_else(|| QueueError::NotFound(format!("pool {}", self.pool.name)))?;
        let backend = crate::worker::ApalisQueueBackend::new(
            queue,
            self.jobs.clock().clone(),
            self.lease_ms,
            self.pool.concurrency as usize,
            Some(self.jobs.clone()),
        );
        tracing::info!(pool = %self.pool.name, worker = %self.worker_id, "worker pool started on apalis");
        let worker = WorkerBuilder::new(self.worker_id.clone())
            .backend(backend)
            .data(self.clone())
            .concurrency(self.pool.concurrency as usize)
            // No `.parallelize`: `invoke` already runs every handler on its own tokio task, so
            // heartbeats on the worker task never wait behind job work.
            .build(run_apalis_job);
        worker
            .run_until(async move {
                shutdown.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
            .await
            .map_err(|error| QueueError::Redis(format!("apalis worker: {error}")))
    }

    /// Marks the job running and records its queue wait (first attempt).
    async fn mark_running(&self, store: &crate::storage::TenantStore, lease: &Lease) {
        let attempt = lease.attempt;
        match self
            .jobs
            .update(store, &lease.job_id, |record| {
                record.state = QueueState::Running;
                record.attempts = attempt;
                record.started_at = Some(Utc::now());
            })
            .await
        {
            Ok(record) if attempt == 1 => {
                let waited = (Utc::now() - record.created_at).num_milliseconds() as f64 / 1000.0;
                self.jobs
                    .wait_times()
                    .observe(&self.pool.name, lease.tenant.as_str(), waited);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot mark the job running"),
        }
    }

    /// Runs the handler on its own task (a panic becomes a failed job) under the kind timeout.
    async fn invoke(
        &self,
        store: &crate::storage::TenantStore,
        lease: &Lease,
        cancel: CancellationToken,
    ) -> Result<JobOutput, HandlerError> {
        let Some(handler) = self.handlers.get(&lease.kind) else {
            return Err(HandlerError::permanent(format!(
                "no handler for job kind {:?} on this worker",
                lease.kind
            )));
        };
        let mut ctx = JobContext::new(store.clone(), lease.clone(), cancel, self.jobs.clone());
        ctx.device = self.pool.device.clone();
        let usage = ctx.usage.clone();
        // A pipeline step's own `timeoutSeconds` wins over the pool's limit for the kind.
        let timeout = lease
            .payload
            .get("timeout_ms")
            .and_then(serde_json::Value::as_u64)
            .or_else(|| self.pool.job_timeouts_ms.get(&lease.kind).copied())
            .map(Duration::from_millis)
            .unwrap_or(self.job_timeout);
        let task = tokio::spawn(async move { handler.run(ctx).await });
        let abort = task.abort_handle();
        let outcome = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(HandlerError::retryable(format!(
                "job panicked: {join_error}"
            ))),
            Err(_) => {
                abort.abort();
                Err(HandlerError::retryable(format!(
                    "timed out after {} ms",
                    timeout.as_millis()
                )))
            }
        };
        // What the attempt consumed is recorded whatever its outcome, and before its success
        // is acknowledged: an attempt whose usage cannot be written is retried, not completed.
        if let Err(error) = usage.flush(store, outcome.is_ok()).await {
            tracing::warn!(job_id = %lease.job_id, %error, "cannot write the job's usage");
            if outcome.is_ok() {
                return Err(HandlerError::retryable(format!(
                    "the attempt's usage could not be recorded: {error}"
                )));
            }
        }
        outcome
    }
}

/// Extends the lease every third of its length; a stale lease cancels the job.
async fn heartbeat_loop(
    queue: Arc<dyn JobQueue>,
    lease: Lease,
    lease_ms: u64,
    jobs: JobService,
    cancel: CancellationToken,
    done: CancellationToken,
) {
    let period = Duration::from_millis((lease_ms / 3).max(100));
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        match queue
            .heartbeat(&lease, lease_ms, jobs.clock().now_ms())
            .await
        {
            Ok(()) => {}
            Err(QueueError::StaleLease { .. }) | Err(QueueError::NotFound(_)) => {
                tracing::warn!(job_id = %lease.job_id, "lease lost (cancelled or expired): stopping the job");
                cancel.cancel();
                return;
            }
            Err(error) => tracing::warn!(job_id = %lease.job_id, %error, "heartbeat failed"),
        }
    }
}

/// Requeues jobs of dead workers and records the lost attempt on each job's record.
pub async fn run_reaper(jobs: JobService, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(REAP_INTERVAL) => {}
        }
        for pool in jobs.pools().to_vec() {
            let Some(queue) = jobs.queue(&pool.name).cloned() else {
                continue;
            };
            let reaped = match queue.reap(jobs.clock().now_ms()).await {
                Ok(reaped) => reaped,
                Err(error) => {
                    tracing::warn!(pool = %pool.name, %error, "reaper failed");
                    continue;
                }
            };
            for (tenant, job_id, outcome) in reaped {
                tracing::warn!(%tenant, %job_id, ?outcome, "lease expired: worker lost");
                if let Ok(store) = jobs.platform().tenant_store(&tenant).await {
                    let _ = jobs
                        .record_failure(&store, &job_id, "lease expired: worker lost", &outcome)
                        .await;
                }
            }
        }
    }
}

/// The apalis job function: the same tenant context, records, timeout and panic isolation as
/// the native runner; the adapter acknowledges the outcome and records it.
async fn run_apalis_job(
    lease: Lease,
    runner: apalis::prelude::Data<PoolRunner>,
) -> Result<serde_json::Value, apalis::prelude::BoxDynError> {
    use crate::worker::apalis_adapter::PERMANENT_ERROR_PREFIX;
    let store = match runner
        .jobs
        .platform()
        .active_tenant_store(&lease.tenant)
        .await
    {
        Ok(store) => store,
        Err(error) => {
            return Err(format!("{PERMANENT_ERROR_PREFIX}tenant unavailable: {error}").into());
        }
    };
    runner.mark_running(&store, &lease).await;
    // The same per-job heartbeat as the native runner: a lease that turns stale (the job was
    // cancelled or reaped) cancels the handler.
    let cancel = CancellationToken::new();
    let done = CancellationToken::new();
    let heartbeat = runner.jobs.queue(&runner.pool.name).cloned().map(|queue| {
        tokio::spawn(heartbeat_loop(
            queue,
            lease.clone(),
            runner.lease_ms,
            runner.jobs.clone(),
            cancel.clone(),
            done.clone(),
        ))
    });
    let result = runner.invoke(&store, &lease, cancel).await;
    done.cancel();
    if let Some(heartbeat) = heartbeat {
        let _ = heartbeat.await;
    }
    match result {
        Ok(output) => Ok(serde_json::json!({
            "output_location": output.output_location_opt,
            "continuation": output.continuation_opt,
        })),
        Err(error) if error.retryable => Err(error.message.into()),
        Err(error) => Err(format!("{PERMANENT_ERROR_PREFIX}{}", error.message).into()),
    }
}
