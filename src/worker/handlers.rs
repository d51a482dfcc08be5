//! Job handlers: what a job of each kind does. A handler gets a context scoped to the job's
//! tenant (its store, config, cancellation, progress); it has no way to name another tenant.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::jobs::JobService;
use crate::model::registry::ModelRegistry;
use crate::queue::Lease;
use crate::storage::{RelativePath, TenantStore};
use crate::usage::UsageRecorder;

/// Everything a running job may touch.
#[derive(Clone)]
pub struct JobContext {
    pub store: TenantStore,
    pub lease: Lease,
    pub cancel: CancellationToken,
    /// The tenant's model registry (over the platform's shared bases).
    pub models: ModelRegistry,
    /// What this attempt consumed; flushed by the worker when the attempt ends.
    pub usage: UsageRecorder,
    /// The pool's device: `cpu` or `gpu`.
    pub device: String,
    progress: ProgressReporter,
}

impl JobContext {
    pub fn new(
        store: TenantStore,
        lease: Lease,
        cancel: CancellationToken,
        jobs: JobService,
    ) -> Self {
        let progress = ProgressReporter {
            jobs: jobs.clone(),
            store: store.clone(),
            job_id: lease.job_id.clone(),
        };
        let usage = UsageRecorder::for_job(
            &lease.job_id,
            lease.attempt,
            &lease.kind,
            jobs.clock().clone(),
        );
        let models = ModelRegistry::new(store.clone(), jobs.platform().base_models().clone());
        Self {
            store,
            lease,
            cancel,
            models,
            usage,
            device: "cpu".to_string(),
            progress,
        }
    }

    pub fn progress(&self) -> &ProgressReporter {
        &self.progress
    }

    /// The tenant's own plan (isolation, quotas), from its registry record.
    pub async fn plan(&self) -> Result<crate::tenant::Plan, HandlerError> {
        self.progress
            .jobs
            .platform()
            .tenant(self.store.tenant())
            .await
            .map(|record| record.plan)
            .map_err(|error| HandlerError::retryable(format!("cannot read the tenant: {error}")))
    }

    /// The tenant's configuration (thresholds, renames, output format, presets).
    pub async fn config(&self) -> Result<crate::tenant::TenantConfig, HandlerError> {
        let path = RelativePath::parse(crate::tenant::CONFIG_PATH)
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        match self.store.get_json(&path).await {
            Ok(config) => Ok(config),
            Err(crate::storage::StorageError::NotFound(_)) => Ok(Default::default()),
            Err(error) => Err(HandlerError::retryable(format!(
                "cannot read the tenant configuration: {error}"
            ))),
        }
    }

    /// Creates a job of this tenant with a fixed id (put-if-absent: a retried attempt
    /// creates nothing twice). Returns whether it was created now.
    pub async fn submit_child(
        &self,
        request: crate::jobs::SubmitJob,
        job_id: String,
    ) -> Result<bool, HandlerError> {
        self.progress
            .jobs
            .submit_once(&self.store, request, job_id)
            .await
            .map(|created| created.is_some())
            .map_err(|error| HandlerError::retryable(format!("cannot create job: {error}")))
    }

    /// This job's record as it stands.
    pub async fn record(&self) -> Result<crate::jobs::JobRecord, HandlerError> {
        self.progress
            .jobs
            .get(&self.store, &self.lease.job_id)
            .await
            .map_err(|error| HandlerError::retryable(error.to_string()))
    }

    /// Billing work (rollups, invoices, storage samples) on this job's tenant.
    pub fn billing(&self) -> crate::billing::jobs::TenantBilling {
        crate::billing::jobs::TenantBilling::new(self.progress.jobs.clone(), self.store.clone())
    }

    /// Where this attempt writes its outputs: `outputs/<job_id>/`.
    pub fn output_dir(&self) -> RelativePath {
        RelativePath::parse(&format!("outputs/{}", self.lease.job_id))
            .expect("job ids are valid path segments")
    }
}

/// Writes progress (epoch, loss, rows, ...) into the job's record.
#[derive(Clone)]
pub struct ProgressReporter {
    jobs: JobService,
    store: TenantStore,
    job_id: String,
}

impl ProgressReporter {
    pub async fn report(&self, progress: serde_json::Value) {
        if let Err(error) = self
            .jobs
            .update(&self.store, &self.job_id, |r| r.progress = Some(progress))
            .await
        {
            tracing::warn!(job_id = %self.job_id, %error, "cannot record progress");
        }
    }
}

/// A successful run.
#[derive(Debug, Clone, Default)]
pub struct JobOutput {
    pub output_location_opt: Option<String>,
    /// Measured cost (worker-seconds x resource weight); wall time when `None`.
    pub measured_cost_opt: Option<f64>,
    /// The jobs that finish this one's work (a fan-out), if it handed work on.
    pub continuation_opt: Option<crate::jobs::Continuation>,
}

/// A failed run; `retryable` decides between backoff and the dead-letter list.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
    pub retryable: bool,
}

impl HandlerError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

#[async_trait]
pub trait JobHandler: Send + Sync {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError>;
}

/// Does nothing: queue benchmarks and smoke tests.
struct Noop;

#[async_trait]
impl JobHandler for Noop {
    async fn run(&self, _ctx: JobContext) -> Result<JobOutput, HandlerError> {
        Ok(JobOutput::default())
    }
}

/// Waits `payload.ms` milliseconds (cancellable), then writes `outputs/<job>/result.json`
/// recording which attempt committed: the fault tests check that exactly one did.
struct Sleep;

#[async_trait]
impl JobHandler for Sleep {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError> {
        let ms = ctx.lease.payload["ms"].as_u64().unwrap_or(0).min(3_600_000);
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(ms)) => {}
            () = ctx.cancel.cancelled() => return Err(HandlerError::permanent("cancelled")),
        }
        let output = ctx
            .output_dir()
            .join("result.json")
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        let result = serde_json::json!({"job_id": ctx.lease.job_id, "attempt": ctx.lease.attempt});
        ctx.store
            .put_if_absent(&output, result.to_string())
            .await
            .map_err(|e| HandlerError::retryable(format!("cannot commit output: {e}")))?;
        Ok(JobOutput {
            output_location_opt: Some(output.to_string()),
            ..JobOutput::default()
        })
    }
}

/// Writes, reads back and deletes an object in the tenant's store.
struct Smoke;

#[async_trait]
impl JobHandler for Smoke {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError> {
        let path = ctx
            .output_dir()
            .join("smoke")
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        let fail = |e: crate::storage::StorageError| HandlerError::retryable(e.to_string());
        ctx.store.put(&path, b"smoke").await.map_err(fail)?;
        let read = ctx.store.get(&path).await.map_err(fail)?;
        ctx.store.delete(&path).await.map_err(fail)?;
        if read.as_ref() != b"smoke" {
            return Err(HandlerError::permanent(
                "smoke object read back different bytes",
            ));
        }
        Ok(JobOutput::default())
    }
}

/// Kills the worker process: the poison job of the fault-injection tests. Registered only
/// when `TENANTRY_DIAGNOSTIC_JOBS=1`.
struct Crash;

#[async_trait]
impl JobHandler for Crash {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError> {
        tracing::error!(job_id = %ctx.lease.job_id, "diagnostic crash job: aborting the worker");
        std::process::abort();
    }
}

/// Handlers by job kind.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl HandlerRegistry {
    /// The built-in kinds; `crash` only with diagnostics enabled.
    pub fn builtin(diagnostics: bool) -> Self {
        let mut registry = Self::default();
        registry.register("noop", Arc::new(Noop));
        registry.register("sleep", Arc::new(Sleep));
        registry.register("smoke", Arc::new(Smoke));
        if diagnostics {
            registry.register("crash", Arc::new(Crash));
        }
        registry
    }

    pub fn register(&mut self, kind: &str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind.to_string(), handler);
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.handlers.get(kind).cloned()
    }
}
