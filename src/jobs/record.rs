//! The durable job record, written through the tenant's store as `jobs/<job_id>.json` at
//! submit and at every state change. Object storage is the system of record; the queue can be
//! rebuilt from these records.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::queue::{AttemptRecord, Band, JobSpec, QueueState};
use crate::storage::RelativePath;
use crate::tenant::TenantId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRecord {
    pub job_id: String,
    pub tenant: String,
    pub kind: String,
    /// The pipeline run or job class the job belongs to (fair-share level below the tenant).
    pub group: String,
    pub band: Band,
    pub pool: String,
    pub state: QueueState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub cost_estimate: f64,
    pub payload: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub output_location: Option<String>,
    /// The latest progress report of the running attempt.
    pub progress: Option<serde_json::Value>,
    pub history: Vec<AttemptRecord>,
    /// Set when the job handed the rest of its work to other jobs (a scoring step fanned out
    /// into partitions): the step is done when `merge` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Continuation>,
}

/// Jobs that finish a job's work: partitions, then the job that merges them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Continuation {
    pub parts: Vec<String>,
    pub merge: String,
}

impl JobRecord {
    pub fn path(job_id: &str) -> Option<RelativePath> {
        RelativePath::parse(&format!("jobs/{job_id}.json")).ok()
    }

    /// The queue entry that re-creates this job (same id, same everything).
    pub fn to_spec(&self, tenant: &TenantId) -> JobSpec {
        JobSpec {
            job_id: self.job_id.clone(),
            tenant: tenant.clone(),
            kind: self.kind.clone(),
            group: self.group.clone(),
            band: self.band,
            cost_estimate: self.cost_estimate,
            max_attempts: self.max_attempts,
            idempotency_key_opt: self.idempotency_key.clone(),
            run_at_ms_opt: None,
            payload: self.payload.clone(),
        }
    }
}
