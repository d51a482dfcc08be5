//! The queue contract's data types: job specs, leases, policies and outcomes.

use serde::{Deserialize, Serialize};

use crate::tenant::TenantId;

/// Priority bands, served in order; each lower band keeps a reserved minimum share.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Interactive,
    Standard,
    Batch,
}

impl Band {
    pub const ALL: [Band; 3] = [Band::Interactive, Band::Standard, Band::Batch];

    pub fn index(self) -> usize {
        match self {
            Band::Interactive => 0,
            Band::Standard => 1,
            Band::Batch => 2,
        }
    }

    pub fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Band::Interactive => "interactive",
            Band::Standard => "standard",
            Band::Batch => "batch",
        }
    }

    /// Fraction of dispatches reserved for this band whenever it has runnable work.
    pub fn reserved_share(self) -> f64 {
        match self {
            Band::Interactive => 0.0,
            Band::Standard => 0.10,
            Band::Batch => 0.05,
        }
    }
}

/// Scheduling policy of one tenant, derived from its plan.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TenantPolicy {
    /// Fair-share weight.
    pub weight: f64,
    /// Concurrent leases always available to the tenant.
    pub cap_floor: u32,
    /// Most concurrent leases; slots above the floor come from the shared burst pool.
    pub cap_max: u32,
    /// GCRA: dispatches per second (0 disables the limit) and burst size.
    pub rate_per_sec: f64,
    pub rate_burst: u32,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            weight: 1.0,
            cap_floor: 1,
            cap_max: 1_000_000,
            rate_per_sec: 0.0,
            rate_burst: 1,
        }
    }
}

impl From<&crate::tenant::Plan> for TenantPolicy {
    fn from(plan: &crate::tenant::Plan) -> Self {
        Self {
            weight: f64::from(plan.weight.max(1)),
            cap_floor: plan.concurrency_floor,
            cap_max: plan.concurrency_cap.max(plan.concurrency_floor),
            rate_per_sec: f64::from(plan.rate_limit_per_sec),
            rate_burst: plan.rate_limit_burst.max(1),
        }
    }
}

/// A job to enqueue. Payloads stay small (pointers into the tenant's store, not data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Set by the caller so the durable record and the queue share one id.
    pub job_id: String,
    pub tenant: TenantId,
    /// Job kind (`validate`, `transform`, `finetune`, `score`, `rollup`, ...).
    pub kind: String,
    /// Second scheduling level inside the tenant (pipeline run or job class): many keys of one
    /// tenant still share one tenant's share.
    pub group: String,
    pub band: Band,
    /// Estimated cost (worker-seconds x resource weight), charged at dispatch.
    pub cost_estimate: f64,
    pub max_attempts: u32,
    /// Returns the existing job instead of enqueueing twice.
    pub idempotency_key_opt: Option<String>,
    /// Not before this time (milliseconds since the epoch).
    pub run_at_ms_opt: Option<u64>,
    pub payload: serde_json::Value,
}

/// Where a job stands in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    Queued,
    Delayed,
    Running,
    Succeeded,
    Failed,
    DeadLettered,
    Cancelled,
}

impl QueueState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            QueueState::Succeeded
                | QueueState::Failed
                | QueueState::DeadLettered
                | QueueState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Queued => "queued",
            QueueState::Delayed => "delayed",
            QueueState::Running => "running",
            QueueState::Succeeded => "succeeded",
            QueueState::Failed => "failed",
            QueueState::DeadLettered => "dead_lettered",
            QueueState::Cancelled => "cancelled",
        }
    }

    pub fn parse(input: &str) -> Option<Self> {
        [
            QueueState::Queued,
            QueueState::Delayed,
            QueueState::Running,
            QueueState::Succeeded,
            QueueState::Failed,
            QueueState::DeadLettered,
            QueueState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == input)
    }
}

/// A leased job. `token` fences every later call: a stale token is rejected. A job's later lease
/// always carries a larger token than its earlier ones (memory counts per job, Redis per shard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub job_id: String,
    pub tenant: TenantId,
    pub kind: String,
    pub token: u64,
    /// 1 for the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    pub payload: serde_json::Value,
    pub expires_at_ms: u64,
}

/// Result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub job_id: String,
    /// True when an idempotency key matched an existing job (nothing new was queued).
    pub existing: bool,
}

/// What happened to a failed or lost attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum FailOutcome {
    RetryAt { run_at_ms: u64, attempt: u32 },
    DeadLettered { attempts: u32 },
}

/// One past attempt, kept with a dead-lettered job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub at_ms: u64,
    pub error: String,
}

/// A dead-lettered job and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub job_id: String,
    pub kind: String,
    pub attempts: Vec<AttemptRecord>,
}

/// Why a queued job is not running yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Explanation {
    pub job_id: String,
    pub state: QueueState,
    /// Jobs ahead of it in its tenant's queue.
    pub position_opt: Option<u64>,
    pub tenant_tag_opt: Option<f64>,
    pub virtual_time: f64,
    /// `cap`, `rate_limit`, `band`, `delayed`, `no_worker` or `none`.
    pub blocked_by: String,
    pub detail: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    #[error("stale lease for job {job_id}: token {token} is no longer current")]
    StaleLease { job_id: String, token: u64 },
    #[error("job {0} not found")]
    NotFound(String),
    #[error("redis error: {0}")]
    Redis(String),
    #[error("corrupt queue state: {0}")]
    Corrupt(String),
}

pub type QueueResult<T> = Result<T, QueueError>;

/// What keeps a queued job waiting; every backend reports it through this one type.
#[derive(Debug, Clone, PartialEq)]
pub enum Blocker {
    Cap { inflight: u64, cap: u64, floor: u64 },
    RateLimit { until_ms: u64 },
    NoWorker,
    Band { band: Band },
    Delayed { run_at_ms: u64 },
    FairTurn { tenant_tag: f64, virtual_time: f64 },
}

impl Blocker {
    pub fn kind(&self) -> &'static str {
        match self {
            Blocker::Cap { .. } => "cap",
            Blocker::RateLimit { .. } => "rate_limit",
            Blocker::NoWorker => "no_worker",
            Blocker::Band { .. } => "band",
            Blocker::Delayed { .. } => "delayed",
            Blocker::FairTurn { .. } => "none",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Blocker::Cap {
                inflight,
                cap,
                floor,
            } => {
                format!("{inflight} running, cap {cap} (floor {floor})")
            }
            Blocker::RateLimit { until_ms } => format!("rate limited until {until_ms} ms"),
            Blocker::NoWorker => "no worker has asked for work recently".to_string(),
            Blocker::Band { band } => format!(
                "higher-priority bands have work; {} keeps a reserved share",
                band.as_str()
            ),
            Blocker::Delayed { run_at_ms } => format!("not before {run_at_ms} ms"),
            Blocker::FairTurn {
                tenant_tag,
                virtual_time,
            } => format!(
                "waiting for its fair turn: tenant tag {tenant_tag:.3} vs virtual time {virtual_time:.3}"
            ),
        }
    }
}
