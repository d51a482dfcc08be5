//! `JobService`: the one place job records and queue entries are kept consistent.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;

use crate::clock::SharedClock;
use crate::config::{PoolConfig, Settings};
use crate::jobs::{Continuation, JobRecord, SubmitJob};
use crate::platform::{Platform, PlatformError};
use crate::queue::{
    AttemptRecord, Band, DeadLetter, Explanation, FailOutcome, JobQueue, MemoryQueue, QueueError,
    QueueState, RedisQueue, TenantPolicy,
};
use crate::storage::{RelativePath, StorageError, TenantStore};
use crate::tenant::{TenantId, TenantState};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("no pool runs jobs of kind {0:?}")]
    NoPool(String),
    #[error("job {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ReconcileReport {
    pub tenants: usize,
    pub records_checked: usize,
    pub requeued: usize,
    pub already_queued: usize,
}

/// Opens one queue per configured pool on the configured backend.
pub async fn open_queues(
    settings: &Settings,
) -> Result<HashMap<String, Arc<dyn JobQueue>>, QueueError> {
    let mut queues: HashMap<String, Arc<dyn JobQueue>> = HashMap::new();
    for pool in &settings.pools {
        let queue: Arc<dyn JobQueue> = if settings.queue_url.starts_with("redis://") {
            Arc::new(
                RedisQueue::connect(
                    &settings.queue_url,
                    &settings.queue_namespace,
                    &pool.name,
                    pool.concurrency,
                )
                .await?,
            )
        } else {
            Arc::new(MemoryQueue::new(pool.concurrency))
        };
        queues.insert(pool.name.clone(), queue);
    }
    Ok(queues)
}

#[derive(Clone)]
pub struct JobService {
    inner: Arc<Inner>,
}

struct Inner {
    platform: Platform,
    queues: HashMap<String, Arc<dyn JobQueue>>,
    pools: Vec<PoolConfig>,
    clock: SharedClock,
    waits: crate::metrics::WaitTimes,
    alerts: crate::metrics::QuotaAlerts,
    listener: std::sync::OnceLock<Arc<dyn JobListener>>,
}

/// Told when a job succeeds (after its record says so).
#[async_trait::async_trait]
pub trait JobListener: Send + Sync {
    async fn job_succeeded(&self, jobs: &JobService, store: &TenantStore, record: &JobRecord);
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobService")
    }
}

impl JobService {
    pub fn new(
        platform: Platform,
        queues: HashMap<String, Arc<dyn JobQueue>>,
        pools: Vec<PoolConfig>,
        clock: SharedClock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                platform,
                queues,
                pools,
                clock,
                waits: crate::metrics::WaitTimes::default(),
                alerts: crate::metrics::QuotaAlerts::default(),
                listener: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Queue-wait histograms recorded by this process's workers.
    pub fn wait_times(&self) -> &crate::metrics::WaitTimes {
        &self.inner.waits
    }

    /// Quota alerts raised by this process's billing jobs.
    pub fn quota_alerts(&self) -> &crate::metrics::QuotaAlerts {
        &self.inner.alerts
    }

    /// The Prometheus text for every pool and active tenant.
    pub async fn render_metrics(&self) -> Result<String, JobError> {
        let mut samples = std::collections::BTreeMap::new();
        let tenants = self.inner.platform.list_tenants().await?;
        for pool in &self.inner.pools {
            let queue = self.queue_of(&pool.name)?;
            let mut per_tenant = std::collections::BTreeMap::new();
            for tenant in tenants.iter().filter(|t| t.state == TenantState::Active) {
                per_tenant.insert(tenant.id.to_string(), queue.tenant_stats(&tenant.id).await?);
            }
            samples.insert(pool.name.clone(), per_tenant);
        }
        let mut text = crate::metrics::render(&samples, &self.inner.waits);
        self.inner.alerts.render(&mut text);
        Ok(text)
    }

    pub fn pools(&self) -> &[PoolConfig] {
        &self.inner.pools
    }

    /// The queue of a pool.
    pub fn queue(&self, pool: &str) -> Option<&Arc<dyn JobQueue>> {
        self.inner.queues.get(pool)
    }

    /// Dedicated pools win over shared ones for their tenants.
    pub fn pool_for(&self, tenant: &TenantId, kind: &str) -> Option<&PoolConfig> {
        let runs = |pool: &&PoolConfig| pool.kinds.iter().any(|k| k == kind);
        self.inner
            .pools
            .iter()
            .filter(runs)
            .find(|pool| pool.tenants.iter().any(|t| t == tenant.as_str()))
            .or_else(|| {
                self.inner
                    .pools
                    .iter()
                    .filter(runs)
                    .find(|pool| pool.tenants.is_empty())
            })
    }

    fn queue_of(&self, pool: &str) -> Result<&Arc<dyn JobQueue>, JobError> {
        self.queue(pool)
            .ok_or_else(|| JobError::NoPool(pool.to_string()))
    }

    async fn policy_of(&self, tenant: &TenantId) -> Result<TenantPolicy, JobError> {
        Ok(TenantPolicy::from(
            &self.inner.platform.tenant(tenant).await?.plan,
        ))
    }

    /// Checks a submission and builds the record it creates.
    fn build_record(
        &self,
        tenant: &TenantId,
        request: SubmitJob,
        job_id: String,
    ) -> Result<JobRecord, JobError> {
        let checked = request.check()?;
        let pool = self
            .pool_for(tenant, &request.kind)
            .ok_or_else(|| JobError::NoPool(request.kind.clone()))?
            .name
            .clone();
        let now = Utc::now();
        Ok(JobRecord {
            job_id,
            tenant: tenant.to_string(),
            kind: request.kind,
            group: checked.group,
            band: request.band.unwrap_or(Band::Standard),
            pool,
            state: QueueState::Queued,
            attempts: 0,
            max_attempts: checked.max_attempts,
            cost_estimate: checked.cost_estimate,
            payload: request.payload,
            idempotency_key: request.idempotency_key,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            error: None,
            output_location: None,
            progress: None,
            history: Vec::new(),
            continuation: None,
        })
    }

    async fn enqueue_record(
        &self,
        tenant: &TenantId,
        record: &JobRecord,
    ) -> Result<crate::queue::Enqueued, JobError> {
        let queue = self.queue_of(&record.pool)?;
        queue
            .set_policy(tenant, self.policy_of(tenant).await?)
            .await?;
        Ok(queue
            .enqueue(vec![record.to_spec(tenant)], self.inner.clock.now_ms())
            .await?
            .pop()
            .ok_or_else(|| QueueError::Corrupt("enqueue returned nothing".into()))?)
    }

    /// Writes the record, then enqueues. An idempotency-key hit returns the existing job.
    /// Billing kinds are refused: only the billing cron creates them (a tenant must not
    /// regenerate its own invoice or inject storage samples).
    pub async fn submit(
        &self,
        store: &TenantStore,
        request: SubmitJob,
    ) -> Result<(JobRecord, bool), JobError> {
        if crate::billing::jobs::KINDS.contains(&request.kind.as_str()) {
            return Err(JobError::Invalid(format!(
                "jobs of kind {:?} are run by the platform's billing cron, not submitted",
                request.kind
            )));
        }
        let tenant = store.tenant().clone();
        let record = self.build_record(&tenant, request, uuid::Uuid::now_v7().to_string())?;
        let path = JobRecord::path(&record.job_id).expect("uuid ids are valid paths");
        store.put_json(&path, &record).await?;
        let enqueued = self.enqueue_record(&tenant, &record).await?;
        if enqueued.existing && enqueued.job_id != record.job_id {
            store.delete(&path).await?;
            return Ok((self.get(store, &enqueued.job_id).await?, true));
        }
        Ok((record, false))
    }

    /// Creates the job `job_id` unless its record already exists (a pipeline step released
    /// twice by racing schedulers is created once). Returns `None` when it existed.
    pub async fn submit_once(
        &self,
        store: &TenantStore,
        request: SubmitJob,
        job_id: String,
    ) -> Result<Option<JobRecord>, JobError> {
        let tenant = store.tenant().clone();
        let record = self.build_record(&tenant, request, job_id)?;
        let path = JobRecord::path(&record.job_id)
            .ok_or_else(|| JobError::Invalid(format!("invalid job id {:?}", record.job_id)))?;
        let bytes = serde_json::to_vec(&record).map_err(|e| JobError::Invalid(e.to_string()))?;
        match store.put_if_absent(&path, bytes).await {
            Ok(()) => {}
            Err(StorageError::AlreadyExists(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        }
        self.enqueue_record(&tenant, &record).await?;
        Ok(Some(record))
    }

    /// Installs the observer told about every job that succeeds (the pipeline scheduler). The
    /// first one installed stays.
    pub fn set_listener(&self, listener: Arc<dyn JobListener>) {
        let _ = self.inner.listener.set(listener);
    }

    /// Records a successful attempt and tells the listener.
    pub async fn record_success(
        &self,
        store: &TenantStore,
        job_id: &str,
        location: Option<String>,
        continuation: Option<Continuation>,
    ) -> Result<JobRecord, JobError> {
        let record = self
            .update(store, job_id, |record| {
                record.state = QueueState::Succeeded;
                record.finished_at = Some(Utc::now());
                record.output_location = location;
                record.continuation = continuation;
                record.progress = None;
                record.error = None;
            })
            .await?;
        if let Some(listener) = self.inner.listener.get() {
            listener.job_succeeded(self, store, &record).await;
        }
        Ok(record)
    }

    pub async fn get(&self, store: &TenantStore, job_id: &str) -> Result<JobRecord, JobError> {
        let path = JobRecord::path(job_id).ok_or_else(|| JobError::NotFound(job_id.to_string()))?;
        match store.get_json(&path).await {
            Ok(record) => Ok(record),
            Err(StorageError::NotFound(_)) => Err(JobError::NotFound(job_id.to_string())),
            Err(error) => Err(error.into()),
        }
    }

    /// Applies `change` to a job's record and saves it.
    pub async fn update(
        &self,
        store: &TenantStore,
        job_id: &str,
        change: impl FnOnce(&mut JobRecord),
    ) -> Result<JobRecord, JobError> {
        let mut record = self.get(store, job_id).await?;
        change(&mut record);
        record.updated_at = Utc::now();
        let path = JobRecord::path(job_id).ok_or_else(|| JobError::NotFound(job_id.to_string()))?;
        store.put_json(&path, &record).await?;
        Ok(record)
    }

    pub async fn list(
        &self,
        store: &TenantStore,
        state_opt: Option<QueueState>,
    ) -> Result<Vec<JobRecord>, JobError> {
        let mut records = Vec::new();
        for entry in store
            .list(Some(
                &RelativePath::parse("jobs").map_err(StorageError::from)?,
            ))
            .await?
        {
            let path = RelativePath::parse(&entry.path).map_err(StorageError::from)?;
            let record: JobRecord = store.get_json(&path).await?;
            if state_opt.is_none_or(|state| record.state == state) {
                records.push(record);
            }
        }
        records.sort_by_key(|record| record.created_at);
        Ok(records)
    }

    /// Cancels a queued or running job; a terminal job is returned unchanged.
    pub async fn cancel(&self, store: &TenantStore, job_id: &str) -> Result<JobRecord, JobError> {
        let record = self.get(store, job_id).await?;
        if record.state.is_terminal() {
            return Ok(record);
        }
        self.queue_of(&record.pool)?
            .cancel(store.tenant(), job_id)
            .await?;
        self.update(store, job_id, |record| {
            record.state = QueueState::Cancelled;
            record.finished_at = Some(Utc::now());
        })
        .await
    }

    pub async fn explain(
        &self,
        store: &TenantStore,
        job_id: &str,
    ) -> Result<Option<Explanation>, JobError> {
        let record = self.get(store, job_id).await?;
        Ok(self
            .queue_of(&record.pool)?
            .explain(store.tenant(), job_id, self.inner.clock.now_ms())
            .await?)
    }

    /// Dead-lettered jobs of the tenant across every pool.
    pub async fn dead_letters(&self, store: &TenantStore) -> Result<Vec<DeadLetter>, JobError> {
        let mut letters = Vec::new();
        for pool in &self.inner.pools {
            letters.extend(
                self.queue_of(&pool.name)?
                    .dead_letters(store.tenant())
                    .await?,
            );
        }
        Ok(letters)
    }

    pub async fn redrive(&self, store: &TenantStore, job_id: &str) -> Result<bool, JobError> {
        let record = self.get(store, job_id).await?;
        let redriven = self
            .queue_of(&record.pool)?
            .redrive(store.tenant(), job_id, self.inner.clock.now_ms())
            .await?;
        if redriven {
            self.update(store, job_id, |record| {
                record.state = QueueState::Queued;
                record.attempts = 0;
                record.error = None;
            })
            .await?;
        }
        Ok(redriven)
    }

    /// Records the outcome of a failed or lost attempt on the job's record.
    pub async fn record_failure(
        &self,
        store: &TenantStore,
        job_id: &str,
        error: &str,
        outcome: &FailOutcome,
    ) -> Result<JobRecord, JobError> {
        let at_ms = self.inner.clock.now_ms();
        self.update(store, job_id, |record| {
            record.history.push(AttemptRecord {
                attempt: record.attempts,
                at_ms,
                error: error.to_string(),
            });
            record.error = Some(error.to_string());
            record.progress = None;
            match outcome {
                FailOutcome::RetryAt { .. } => record.state = QueueState::Delayed,
                FailOutcome::DeadLettered { .. } => {
                    record.state = QueueState::DeadLettered;
                    record.finished_at = Some(Utc::now());
                }
            }
        })
        .await
    }

    /// Offboarding: cancels the tenant's unfinished jobs in every pool and drops its queue state.
    pub async fn forget_tenant(&self, tenant: &TenantId) -> Result<u64, JobError> {
        let mut cancelled = 0;
        for pool in &self.inner.pools {
            cancelled += self.queue_of(&pool.name)?.forget_tenant(tenant).await?;
        }
        Ok(cancelled)
    }

    /// Re-enqueues every non-terminal job the queue no longer knows (after Redis lost its
    /// state). Safe to run at any time: jobs the queue knows are left alone.
    pub async fn reconcile(&self) -> Result<ReconcileReport, JobError> {
        let mut report = ReconcileReport::default();
        for tenant in self.inner.platform.list_tenants().await? {
            if tenant.state != TenantState::Active {
                continue;
            }
            report.tenants += 1;
            let store = self.inner.platform.tenant_store(&tenant.id).await?;
            for record in self.list(&store, None).await? {
                report.records_checked += 1;
                if record.state.is_terminal() {
                    continue;
                }
                let queue = self.queue_of(&record.pool)?;
                if queue.state(&tenant.id, &record.job_id).await?.is_some() {
                    report.already_queued += 1;
                    continue;
                }
                queue
                    .set_policy(&tenant.id, TenantPolicy::from(&tenant.plan))
                    .await?;
                queue
                    .enqueue(vec![record.to_spec(&tenant.id)], self.inner.clock.now_ms())
                    .await?;
                self.update(&store, &record.job_id, |record| {
                    record.state = QueueState::Queued;
                    record.progress = None;
                })
                .await?;
                tracing::info!(tenant = %tenant.id, job_id = %record.job_id, "requeued by reconciliation");
                report.requeued += 1;
            }
        }
        Ok(report)
    }
}
