//! Pipeline run records (`pipelines/runs/<run>.json` in the tenant's store) and the views the
//! API and CLI show. A run record is written once at submit (and again only to mark it
//! cancelled); step state is read from the steps' job records, so nothing can disagree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::ManifestV1;
use crate::queue::QueueState;
use crate::storage::RelativePath;

/// How a run started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    /// `POST /v1/pipelines` or `tenantry submit`.
    Api,
    /// A cron schedule, for the period starting at `period`.
    Schedule {
        schedule: String,
        period: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub tenant: String,
    pub pipeline: String,
    pub manifest: ManifestV1,
    pub trigger: Trigger,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl RunRecord {
    pub fn path(run_id: &str) -> Option<RelativePath> {
        RelativePath::parse(&format!("pipelines/runs/{run_id}.json")).ok()
    }

    /// The job id of a step: fixed by the run and the step, so a step is created once.
    pub fn job_id(&self, step_id: &str) -> String {
        step_job_id(&self.run_id, step_id)
    }
}

pub fn step_job_id(run_id: &str, step_id: &str) -> String {
    format!("{run_id}.{step_id}")
}

/// Where a step writes: `outputs/<run>/<step>/`.
pub fn step_output_dir(run_id: &str, step_id: &str) -> Option<RelativePath> {
    RelativePath::parse(&format!("outputs/{run_id}/{step_id}")).ok()
}

/// State of a step as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting for the steps it needs.
    Pending,
    Queued,
    /// Waiting out a retry backoff.
    Retrying,
    Running,
    Succeeded,
    Failed,
    /// Not run: a step it needs failed or was cancelled.
    Skipped,
    Cancelled,
}

impl StepState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }

    pub fn from_job(state: QueueState) -> Self {
        match state {
            QueueState::Queued => Self::Queued,
            QueueState::Delayed => Self::Retrying,
            QueueState::Running => Self::Running,
            QueueState::Succeeded => Self::Succeeded,
            QueueState::Failed | QueueState::DeadLettered => Self::Failed,
            QueueState::Cancelled => Self::Cancelled,
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepView {
    pub id: String,
    pub stage: String,
    pub needs: Vec<String>,
    pub state: StepState,
    pub job_id: Option<String>,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The error of a failed step, or why a step was skipped.
    pub reason: Option<String>,
    /// Latest progress report of a running step.
    pub progress: Option<serde_json::Value>,
    /// Objects the step wrote, relative to the tenant (`outputs/<run>/<step>/...`).
    pub outputs: Vec<String>,
}

/// State of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A run with its DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    pub run_id: String,
    pub pipeline: String,
    pub state: RunState,
    pub trigger: Trigger,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub labels: BTreeMap<String, String>,
    /// In dependency order.
    pub steps: Vec<StepView>,
}

/// The run state implied by its steps.
pub fn run_state(steps: &[StepView], cancelled: bool) -> RunState {
    if cancelled {
        return RunState::Cancelled;
    }
    if steps.iter().any(|step| !step.state.is_terminal()) {
        return RunState::Running;
    }
    if steps.iter().all(|step| step.state == StepState::Succeeded) {
        RunState::Succeeded
    } else if steps.iter().any(|step| step.state == StepState::Failed) {
        RunState::Failed
    } else {
        RunState::Cancelled
    }
}
