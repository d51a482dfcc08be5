//! Decoding of the Lua script's flat string replies.

use crate::queue::contract::TenantQueueStats;
use crate::queue::types::{
    AttemptRecord, Band, Blocker, DeadLetter, Explanation, FailOutcome, Lease, QueueError,
    QueueResult, QueueState,
};
use crate::tenant::TenantId;

fn corrupt(what: impl std::fmt::Display) -> QueueError {
    QueueError::Corrupt(what.to_string())
}

fn number<T: std::str::FromStr>(field: &str, what: &str) -> QueueResult<T> {
    field
        .parse()
        .map_err(|_| corrupt(format_args!("{what}: {field:?} is not a number")))
}

pub fn state_opt(text: &str) -> QueueResult<Option<QueueState>> {
    Ok(match text {
        "" => None,
        "queued" => Some(QueueState::Queued),
        "delayed" => Some(QueueState::Delayed),
        "running" => Some(QueueState::Running),
        "succeeded" => Some(QueueState::Succeeded),
        "failed" => Some(QueueState::Failed),
        "dead" => Some(QueueState::DeadLettered),
        "cancelled" => Some(QueueState::Cancelled),
        other => return Err(corrupt(format_args!("unknown job state {other:?}"))),
    })
}

pub fn leases(flat: &[String]) -> QueueResult<Vec<Lease>> {
    flat.chunks(8)
        .map(|row| {
            if row.len() != 8 {
                return Err(corrupt("short lease row"));
            }
            Ok(Lease {
                job_id: row[0].clone(),
                tenant: TenantId::parse(&row[1]).map_err(corrupt)?,
                kind: row[2].clone(),
                token: number(&row[3], "token")?,
                attempt: number(&row[4], "attempt")?,
                max_attempts: number(&row[5], "max attempts")?,
                payload: serde_json::from_str(&row[6]).map_err(corrupt)?,
                expires_at_ms: number(&row[7], "lease expiry")?,
            })
        })
        .collect()
}

pub fn fail_outcome(fields: &[String]) -> QueueResult<FailOutcome> {
    let field = |index: usize| {
        fields
            .get(index)
            .map(String::as_str)
            .ok_or_else(|| corrupt(format_args!("short failure reply {fields:?}")))
    };
    match fields.first().map(String::as_str) {
        Some("retry") => Ok(FailOutcome::RetryAt {
            run_at_ms: number(field(1)?, "run at")?,
            attempt: number(field(2)?, "attempt")?,
        }),
        Some("dead") => Ok(FailOutcome::DeadLettered {
            attempts: number(field(1)?, "attempts")?,
        }),
        other => Err(corrupt(format_args!("unexpected outcome {other:?}"))),
    }
}

/// History is a JSON array; Lua's cjson writes an empty one as `{}`.
fn history(text: &str) -> QueueResult<Vec<AttemptRecord>> {
    match serde_json::from_str::<serde_json::Value>(text).map_err(corrupt)? {
        serde_json::Value::Array(_) => serde_json::from_str(text).map_err(corrupt),
        _ => Ok(Vec::new()),
    }
}

pub fn dead_letters(flat: &[String]) -> QueueResult<Vec<DeadLetter>> {
    flat.chunks(3)
        .map(|row| {
            Ok(DeadLetter {
                job_id: row[0].clone(),
                kind: row.get(1).cloned().unwrap_or_default(),
                attempts: history(row.get(2).map(String::as_str).unwrap_or("[]"))?,
            })
        })
        .collect()
}

pub fn explanation(job_id: &str, fields: &[String]) -> QueueResult<Option<Explanation>> {
    if fields.is_empty() {
        return Ok(None);
    }
    if fields.len() != 9 {
        return Err(corrupt("short explain reply"));
    }
    let state = state_opt(&fields[0])?.ok_or_else(|| corrupt("explain without state"))?;
    let tenant_tag_opt = if fields[3].is_empty() {
        None
    } else {
        Some(number::<f64>(&fields[3], "tag")?)
    };
    let virtual_time: f64 = number(&fields[4], "virtual time")?;
    let mut explanation = Explanation {
        job_id: job_id.to_string(),
        state,
        position_opt: None,
        tenant_tag_opt,
        virtual_time,
        blocked_by: "none".to_string(),
        detail: String::new(),
    };
    let blocker = match state {
        QueueState::Queued => {
            explanation.position_opt = Some(number(&fields[2], "position")?);
            match fields[5].as_str() {
                "cap" => Blocker::Cap {
                    inflight: number(&fields[6], "inflight")?,
                    cap: number(&fields[7], "cap")?,
                    floor: number(&fields[8], "floor")?,
                },
                "rate_limit" => Blocker::RateLimit {
                    until_ms: number(&fields[6], "until")?,
                },
                "no_worker" => Blocker::NoWorker,
                "band" => Blocker::Band {
                    band: Band::from_index(number(&fields[6], "band")?).unwrap_or(Band::Batch),
                },
                _ => Blocker::FairTurn {
                    tenant_tag: tenant_tag_opt.unwrap_or(virtual_time),
                    virtual_time,
                },
            }
        }
        QueueState::Delayed => Blocker::Delayed {
            run_at_ms: number(&fields[1], "run at")?,
        },
        other => {
            explanation.detail = format!("job is {}", other.as_str());
            return Ok(Some(explanation));
        }
    };
    explanation.blocked_by = blocker.kind().to_string();
    explanation.detail = blocker.detail();
    Ok(Some(explanation))
}

pub fn stats(fields: &[String]) -> QueueResult<TenantQueueStats> {
    if fields.len() != 6 {
        return Err(corrupt("short stats reply"));
    }
    Ok(TenantQueueStats {
        queued: number(&fields[0], "queued")?,
        running: number(&fields[1], "running")?,
        delayed: number(&fields[2], "delayed")?,
        dead_lettered: number(&fields[3], "dead")?,
        parked: fields[4].clone(),
        served_cost: number(&fields[5], "served")?,
    })
}
