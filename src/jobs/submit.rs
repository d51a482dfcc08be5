//! A job submission and its checks.

use serde::Deserialize;

use crate::jobs::JobError;
use crate::queue::Band;

/// Largest job payload (payloads point at data; they do not carry it).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A job submission (`POST /v1/jobs`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub kind: String,
    /// Fair-share group inside the tenant (defaults to the kind).
    pub group: Option<String>,
    pub band: Option<Band>,
    #[serde(default)]
    pub payload: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub max_attempts: Option<u32>,
    /// Estimated cost in worker-seconds (defaults to 1).
    pub cost_estimate: Option<f64>,
}

/// A submission's derived values, once checked.
pub(crate) struct CheckedSubmission {
    pub group: String,
    pub max_attempts: u32,
    pub cost_estimate: f64,
}

fn valid_token(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl SubmitJob {
    /// Checks names, limits and sizes.
    pub(crate) fn check(&self) -> Result<CheckedSubmission, JobError> {
        if !valid_token(&self.kind, 40) {
            return Err(JobError::Invalid(
                "kind must be 1-40 letters, digits, '_', '-' or '.'".into(),
            ));
        }
        let group = self.group.clone().unwrap_or_else(|| self.kind.clone());
        if !valid_token(&group, 120) {
            return Err(JobError::Invalid(
                "group must be 1-120 letters, digits, '_', '-' or '.'".into(),
            ));
        }
        if let Some(key) = &self.idempotency_key
            && !valid_token(key, 200)
        {
            return Err(JobError::Invalid(
                "idempotency_key must be 1-200 letters, digits, '_', '-' or '.'".into(),
            ));
        }
        let max_attempts = self.max_attempts.unwrap_or(3);
        if !(1..=20).contains(&max_attempts) {
            return Err(JobError::Invalid(
                "max_attempts must be between 1 and 20".into(),
            ));
        }
        let cost_estimate = self.cost_estimate.unwrap_or(1.0);
        if !cost_estimate.is_finite() || !(0.0..=1e6).contains(&cost_estimate) {
            return Err(JobError::Invalid(
                "cost_estimate must be between 0 and 1e6".into(),
            ));
        }
        if self.payload.to_string().len() > MAX_PAYLOAD_BYTES {
            return Err(JobError::Invalid(format!(
                "payload is larger than {MAX_PAYLOAD_BYTES} bytes"
            )));
        }
        Ok(CheckedSubmission {
            group,
            max_attempts,
            cost_estimate,
        })
    }
}
