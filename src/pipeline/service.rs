//! `PipelineService`: creates runs from manifests, releases each step as a job when the steps
//! it needs have succeeded, shows and cancels runs, lists their outputs.
//!
//! Release is idempotent: a step's job id is fixed by the run and step, and its record is
//! created with put-if-absent, so racing releasers (two workers finishing two needs at once,
//! a scheduler replaying after a crash) create each step exactly once.

use std::sync::Arc;

use chrono::Utc;

use crate::jobs::{Continuation, JobError, JobListener, JobRecord, JobService, SubmitJob};
use crate::manifest::{Manifest, ManifestError, Priority, Step};
use crate::pipeline::run::{
    RunRecord, RunState, RunView, StepState, StepView, Trigger, run_state, step_output_dir,
};
use crate::queue::Band;
use crate::storage::{ObjectEntry, RelativePath, StorageError, TenantStore};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("pipeline run {0} not found")]
    NotFound(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Jobs(#[from] JobError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type PipelineResult<T> = Result<T, PipelineError>;

/// The job payload of a step: where to find its definition.
pub fn step_payload(run_id: &str, step: &Step) -> serde_json::Value {
    let mut payload = serde_json::json!({ "run": run_id, "step": step.id });
    if let Some(seconds) = step.timeout_seconds {
        payload["timeout_ms"] = serde_json::json!(seconds * 1000);
    }
    payload
}

fn band_of(priority: Option<Priority>) -> Band {
    match priority {
        Some(Priority::Interactive) => Band::Interactive,
        Some(Priority::Batch) => Band::Batch,
        Some(Priority::Standard) | None => Band::Standard,
    }
}

#[derive(Clone, Debug)]
pub struct PipelineService {
    jobs: JobService,
}

/// Releases dependants when a pipeline step succeeds.
struct ReleaseOnSuccess;

#[async_trait::async_trait]
impl JobListener for ReleaseOnSuccess {
    async fn job_succeeded(&self, jobs: &JobService, store: &TenantStore, record: &JobRecord) {
        let Some(run_id) = record.payload.get("run").and_then(|v| v.as_str()) else {
            return;
        };
        let service = PipelineService { jobs: jobs.clone() };
        if let Err(error) = service.advance(store, run_id).await {
            tracing::warn!(tenant = %store.tenant(), run_id, %error, "cannot release the next steps");
        }
    }
}

impl PipelineService {
    /// The service over `jobs`; installs the listener that releases steps as needs succeed.
    pub fn new(jobs: JobService) -> Self {
        jobs.set_listener(Arc::new(ReleaseOnSuccess));
        Self { jobs }
    }

    pub fn jobs(&self) -> &JobService {
        &self.jobs
    }

    /// Creates a run of `manifest` and releases its first steps.
    pub async fn start_run(
        &self,
        store: &TenantStore,
        manifest: &Manifest,
        run_id: String,
        trigger: Trigger,
    ) -> PipelineResult<Option<RunView>> {
        for (alias, input) in &manifest.spec.inputs {
            let dataset = RelativePath::parse(&input.dataset).map_err(StorageError::from)?;
            let exists = crate::dataset::dataset_exists(store, &dataset)
                .await
                .map_err(|error| match error {
                    crate::dataset::DatasetError::Storage(error) => PipelineError::Storage(error),
                    other => PipelineError::Invalid(other.to_string()),
                })?;
            if !exists {
                return Err(PipelineError::Invalid(format!(
                    "input {alias:?} names dataset {:?}, which this tenant does not have",
                    input.dataset
                )));
            }
        }
        let record = RunRecord {
            run_id: run_id.clone(),
            tenant: store.tenant().to_string(),
            pipeline: manifest.spec.metadata.name.clone(),
            manifest: manifest.spec.clone(),
            trigger,
            created_at: Utc::now(),
            cancelled_at: None,
        };
        let path = RunRecord::path(&run_id)
            .ok_or_else(|| PipelineError::Invalid(format!("invalid run id {run_id:?}")))?;
        let bytes =
            serde_json::to_vec(&record).map_err(|e| PipelineError::Invalid(e.to_string()))?;
        match store.put_if_absent(&path, bytes).await {
            Ok(()) => {}
            // The run exists (a schedule firing replayed): nothing new starts.
            Err(StorageError::AlreadyExists(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        }
        self.advance(store, &run_id).await?;
        Ok(Some(self.view(store, &run_id).await?))
    }

    /// Submits a manifest from the API or CLI: a new run with a fresh id.
    pub async fn submit(
        &self,
        store: &TenantStore,
        manifest: &Manifest,
    ) -> PipelineResult<RunView> {
        let run_id = uuid::Uuid::now_v7().to_string();
        self.start_run(store, manifest, run_id.clone(), Trigger::Api)
            .await?
            .ok_or(PipelineError::NotFound(run_id))
    }

    async fn record(&self, store: &TenantStore, run_id: &str) -> PipelineResult<RunRecord> {
        let path = RunRecord::path(run_id).ok_or_else(|| PipelineError::NotFound(run_id.into()))?;
        match store.get_json(&path).await {
            Ok(record) => Ok(record),
            Err(StorageError::NotFound(_)) => Err(PipelineError::NotFound(run_id.into())),
            Err(error) => Err(error.into()),
        }
    }

    /// The step's job record, if the step was released.
    async fn step_job(
        &self,
        store: &TenantStore,
        job_id: &str,
    ) -> PipelineResult<Option<JobRecord>> {
        match self.jobs.get(store, job_id).await {
            Ok(record) => Ok(Some(record)),
            Err(JobError::NotFound(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// The job that tells a step's state: the step's own job, or, when it fanned out into
    /// partitions, the merge job once it exists; until then a failed partition fails the
    /// step and otherwise the step runs. Returns the job and, while partitions run, their
    /// progress (done of total).
    async fn effective_job(
        &self,
        store: &TenantStore,
        job: JobRecord,
    ) -> PipelineResult<(JobRecord, Option<serde_json::Value>)> {
        let Some(continuation) = job.continuation.clone() else {
            return Ok((job, None));
        };
        if job.state != crate::queue::QueueState::Succeeded {
            return Ok((job, None));
        }
        if let Some(merge) = self.step_job(store, &continuation.merge).await? {
            let mut merged = merge;
            merged.started_at = job.started_at;
            merged.attempts = merged.attempts.max(job.attempts);
            return Ok((merged, None));
        }
        let mut done = 0;
        let mut view = job.clone();
        view.state = crate::queue::QueueState::Running;
        view.finished_at = None;
        for part in &continuation.parts {
            let Some(part_job) = self.step_job(store, part).await? else {
                continue;
            };
            match part_job.state {
                crate::queue::QueueState::Succeeded => done += 1,
                crate::queue::QueueState::Failed
                | crate::queue::QueueState::DeadLettered
                | crate::queue::QueueState::Cancelled => {
                    view.state = part_job.state;
                    view.finished_at = part_job.finished_at;
                    view.error = Some(format!(
                        "partition {part} {}: {}",
                        if part_job.state == crate::queue::QueueState::Cancelled {
                            "was cancelled"
                        } else {
                            "failed"
                        },
                        part_job.error.unwrap_or_default()
                    ));
                    return Ok((view, None));
                }
                _ => {}
            }
        }
        let progress = serde_json::json!({
            "partitions": continuation.parts.len(),
            "partitions_done": done,
        });
        Ok((view, Some(progress)))
    }

    /// Creates the merge job of a fanned-out step once every partition succeeded.
    async fn release_merge(
        &self,
        store: &TenantStore,
        job: &JobRecord,
        continuation: &Continuation,
    ) -> PipelineResult<bool> {
        if self.step_job(store, &continuation.merge).await?.is_some() {
            return Ok(false);
        }
        for part in &continuation.parts {
            match self.step_job(store, part).await? {
                Some(part_job) if part_job.state == crate::queue::QueueState::Succeeded => {}
                _ => return Ok(false),
            }
        }
        let mut payload = job.payload.clone();
        payload["merge"] = serde_json::json!(true);
        let request = SubmitJob {
            kind: job.kind.clone(),
            group: Some(job.group.clone()),
            band: Some(job.band),
            payload,
            idempotency_key: None,
            max_attempts: Some(job.max_attempts),
            cost_estimate: Some(job.cost_estimate),
        };
        Ok(self
            .jobs
            .submit_once(store, request, continuation.merge.clone())
            .await?
            .is_some())
    }

    /// Releases every step whose needs have all succeeded. Safe to call at any time, from
    /// any process, any number of times.
    pub async fn advance(&self, store: &TenantStore, run_id: &str) -> PipelineResult<usize> {
        let record = self.record(store, run_id).await?;
        if record.cancelled_at.is_some() {
            return Ok(0);
        }
        let manifest = Manifest::from_spec(record.manifest.clone())?;
        let mut states = std::collections::HashMap::new();
        let mut released = 0;
        for step in &manifest.spec.steps {
            let state = match self.step_job(store, &record.job_id(&step.id)).await? {
                Some(job) => {
                    if let Some(continuation) = &job.continuation
                        && job.state == crate::queue::QueueState::Succeeded
                        && self.release_merge(store, &job, continuation).await?
                    {
                        tracing::info!(tenant = %store.tenant(), run_id, step = %step.id, "partitions merged");
                        released += 1;
                    }
                    let (effective, _) = self.effective_job(store, job).await?;
                    Some(StepState::from_job(effective.state))
                }
                None => None,
            };
            states.insert(step.id.clone(), state);
        }
        for &index in &manifest.order {
            let step = &manifest.spec.steps[index];
            if states[&step.id].is_some() {
                continue;
            }
            let ready = step
                .needs
                .iter()
                .all(|need| states[need] == Some(StepState::Succeeded));
            if !ready {
                continue;
            }
            let resources = step.resources.clone().unwrap_or_default();
            let cost = resources.expected_seconds.unwrap_or(1.0) * resources.cpu.unwrap_or(1.0);
            let request = SubmitJob {
                kind: step.stage().kind().to_string(),
                group: Some(format!("run-{}", &record.run_id)),
                band: Some(band_of(step.priority.or(manifest.spec.priority))),
                payload: step_payload(&record.run_id, step),
                idempotency_key: None,
                max_attempts: step.max_attempts,
                cost_estimate: Some(cost.clamp(0.01, 1e6)),
            };
            if self
                .jobs
                .submit_once(store, request, record.job_id(&step.id))
                .await?
                .is_some()
            {
                tracing::info!(tenant = %store.tenant(), run_id, step = %step.id, "step released");
                released += 1;
            }
            states.insert(step.id.clone(), Some(StepState::Queued));
        }
        Ok(released)
    }

    /// The run with each step's state, timings, attempts and outputs.
    pub async fn view(&self, store: &TenantStore, run_id: &str) -> PipelineResult<RunView> {
        let record = self.record(store, run_id).await?;
        let manifest = Manifest::from_spec(record.manifest.clone())?;
        let outputs = self.output_entries(store, run_id).await?;
        let mut views: Vec<StepView> = Vec::new();
        for &index in &manifest.order {
            let step = &manifest.spec.steps[index];
            let job_id = record.job_id(&step.id);
            let job = match self.step_job(store, &job_id).await? {
                Some(job) => Some(self.effective_job(store, job).await?),
                None => None,
            };
            let prefix = format!("outputs/{run_id}/{}/", step.id);
            let mut view = StepView {
                id: step.id.clone(),
                stage: step.stage().kind().to_string(),
                needs: step.needs.clone(),
                state: StepState::Pending,
                job_id: None,
                attempts: 0,
                started_at: None,
                finished_at: None,
                reason: None,
                progress: None,
                outputs: outputs
                    .iter()
                    .filter(|entry| entry.path.starts_with(&prefix))
                    .map(|entry| entry.path.clone())
                    .collect(),
            };
            match job {
                Some((job, fanout_progress)) => {
                    view.state = StepState::from_job(job.state);
                    view.job_id = Some(job_id.clone());
                    view.attempts = job.attempts;
                    view.started_at = job.started_at;
                    view.finished_at = job.finished_at;
                    view.reason = job.error;
                    view.progress = fanout_progress.or(job.progress);
                }
                None if record.cancelled_at.is_some() => {
                    view.state = StepState::Cancelled;
                    view.reason = Some("the run was cancelled".into());
                }
                None => {
                    let blocked = step.needs.iter().find_map(|need| {
                        let need_view = views.iter().find(|v| &v.id == need)?;
                        matches!(
                            need_view.state,
                            StepState::Failed | StepState::Skipped | StepState::Cancelled
                        )
                        .then(|| (need.clone(), need_view.state))
                    });
                    if let Some((need, state)) = blocked {
                        view.state = StepState::Skipped;
                        let verb = match state {
                            StepState::Failed => "failed",
                            StepState::Cancelled => "was cancelled",
                            _ => "was skipped",
                        };
                        view.reason = Some(format!("not run: needed step {need:?} {verb}"));
                    }
                }
            }
            views.push(view);
        }
        let state = run_state(&views, record.cancelled_at.is_some());
        let finished_at = match state {
            RunState::Running => None,
            RunState::Cancelled => record.cancelled_at,
            _ => views.iter().filter_map(|step| step.finished_at).max(),
        };
        Ok(RunView {
            run_id: record.run_id,
            pipeline: record.pipeline,
            state,
            trigger: record.trigger,
            created_at: record.created_at,
            finished_at,
            labels: record.manifest.metadata.labels,
            steps: views,
        })
    }

    /// Every run of the tenant, newest first (without step details).
    pub async fn list(&self, store: &TenantStore) -> PipelineResult<Vec<RunView>> {
        let prefix = RelativePath::parse("pipelines/runs").map_err(StorageError::from)?;
        let mut runs = Vec::new();
        for entry in store.list(Some(&prefix)).await? {
            let Some(run_id) = entry
                .path
                .strip_prefix("pipelines/runs/")
                .and_then(|name| name.strip_suffix(".json"))
            else {
                continue;
            };
            runs.push(self.view(store, run_id).await?);
        }
        runs.sort_by_key(|run| std::cmp::Reverse(run.created_at));
        Ok(runs)
    }

    /// Cancels the run: no further step is released and every queued or running step stops.
    pub async fn cancel(&self, store: &TenantStore, run_id: &str) -> PipelineResult<RunView> {
        let mut record = self.record(store, run_id).await?;
        if record.cancelled_at.is_none() {
            record.cancelled_at = Some(Utc::now());
            let path =
                RunRecord::path(run_id).ok_or_else(|| PipelineError::NotFound(run_id.into()))?;
            store.put_json(&path, &record).await?;
        }
        for step in &record.manifest.steps {
            let Some(job) = self.step_job(store, &record.job_id(&step.id)).await? else {
                continue;
            };
            let mut ids = vec![job.job_id.clone()];
            if let Some(continuation) = &job.continuation {
                ids.extend(continuation.parts.iter().cloned());
                ids.push(continuation.merge.clone());
            }
            for id in ids {
                if let Some(job) = self.step_job(store, &id).await?
                    && !job.state.is_terminal()
                {
                    self.jobs.cancel(store, &job.job_id).await?;
                }
            }
        }
        self.view(store, run_id).await
    }

    async fn output_entries(
        &self,
        store: &TenantStore,
        run_id: &str,
    ) -> PipelineResult<Vec<ObjectEntry>> {
        let Some(dir) = RelativePath::parse(&format!("outputs/{run_id}")).ok() else {
            return Err(PipelineError::NotFound(run_id.into()));
        };
        let mut entries = store.list(Some(&dir)).await?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Objects written by the run's steps.
    pub async fn outputs(
        &self,
        store: &TenantStore,
        run_id: &str,
    ) -> PipelineResult<Vec<ObjectEntry>> {
        self.record(store, run_id).await?;
        self.output_entries(store, run_id).await
    }

    /// The output directory of one step of a run.
    pub fn step_dir(run_id: &str, step_id: &str) -> PipelineResult<RelativePath> {
        step_output_dir(run_id, step_id)
            .ok_or_else(|| PipelineError::Invalid(format!("invalid step {step_id:?}")))
    }

    /// Advances every unfinished run of every active tenant (after a crash between a step's
    /// success and the release of the next).
    pub async fn reconcile_runs(&self) -> PipelineResult<usize> {
        let mut released = 0;
        let platform = self.jobs.platform().clone();
        let tenants = platform
            .list_tenants()
            .await
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        for tenant in tenants {
            if tenant.state != crate::tenant::TenantState::Active {
                continue;
            }
            let store = platform
                .tenant_store(&tenant.id)
                .await
                .map_err(|e| PipelineError::Invalid(e.to_string()))?;
            for run in self.list(&store).await? {
                if run.state == RunState::Running {
                    released += self.advance(&store, &run.run_id).await?;
                }
            }
        }
        Ok(released)
    }
}
