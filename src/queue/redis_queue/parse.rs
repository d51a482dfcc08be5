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

/// A job's static record as the script stores it and hands it back with a lease:
/// `<max attempts>\n<payload JSON>\n<kind>`. Compact JSON has no raw newline, so the kind,
/// last, may hold anything.
pub fn job_record(max_attempts: u32, payload: &serde_json::Value, kind: &str) -> String {
    format!("{max_attempts}\n{payload}\n{kind}")
}

struct JobRecord {
    max_attempts: u32,
    payload: serde_json::Value,
    kind: String,
}

fn job_record_fields(text: &str) -> QueueResult<JobRecord> {
    let mut parts = text.splitn(3, '\n');
    let (Some(max_attempts), Some(payload), Some(kind)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt(format_args!(
            "job record {text:?} has fewer than 3 parts"
        )));
    };
    Ok(JobRecord {
        max_attempts: number(max_attempts, "max attempts")?,
        payload: serde_json::from_str(payload).map_err(corrupt)?,
        kind: kind.to_string(),
    })
}

/// A job reference `<tenant>/<id>` split into its halves.
fn reference(text: &str) -> QueueResult<(TenantId, String)> {
    let (tenant, job_id) = text
        .split_once('/')
        .ok_or_else(|| corrupt(format_args!("job reference {text:?} has no '/'")))?;
    Ok((
        TenantId::parse(tenant).map_err(corrupt)?,
        job_id.to_string(),
    ))
}

/// The lease reply: the lease expiry, then (reference, token, attempt, record) per lease.
pub fn leases(flat: &[String]) -> QueueResult<Vec<Lease>> {
    let Some((expiry, rows)) = flat.split_first() else {
        return Err(corrupt("empty lease reply"));
    };
    let expires_at_ms = number(expiry, "lease expiry")?;
    rows.chunks(4)
        .map(|row| {
            let [reference_text, token, attempt, record] = row else {
                return Err(corrupt("short lease row"));
            };
            let (tenant, job_id) = reference(reference_text)?;
            let record = job_record_fields(record)?;
            Ok(Lease {
                job_id,
                tenant,
                kind: record.kind,
                token: number(token, "token")?,
                attempt: number(attempt, "attempt")?,
                max_attempts: record.max_attempts,
                payload: record.payload,
                expires_at_ms,
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

/// Dead letters: (id, record, history) each.
pub fn dead_letters(flat: &[String]) -> QueueResult<Vec<DeadLetter>> {
    flat.chunks(3)
        .map(|row| {
            let [job_id, record, attempts] = row else {
                return Err(corrupt("short dead-letter row"));
            };
            Ok(DeadLetter {
                job_id: job_id.clone(),
                kind: job_record_fields(record)?.kind,
                attempts: history(attempts)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_reply_gives_back_the_job_as_enqueued() {
        let payload = serde_json::json!({"text": "two\nlines", "n": 3});
        let record = job_record(4, &payload, "odd\nkind");
        let flat: Vec<String> = ["1700", "acme/job-1", "17", "2", &record]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let leases = leases(&flat).unwrap();
        assert_eq!(leases.len(), 1);
        let lease = &leases[0];
        assert_eq!(lease.tenant.as_str(), "acme");
        assert_eq!(lease.job_id, "job-1");
        assert_eq!(lease.kind, "odd\nkind");
        assert_eq!((lease.token, lease.attempt, lease.max_attempts), (17, 2, 4));
        assert_eq!(lease.payload, payload);
        assert_eq!(lease.expires_at_ms, 1700);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let rows = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(leases(&rows(&[])).is_err());
        assert!(leases(&rows(&["1700"])).unwrap().is_empty());
        assert!(leases(&rows(&["1700", "acme/j", "1"])).is_err());
        assert!(leases(&rows(&["1700", "no-slash", "1", "1", "1\nnull\nk"])).is_err());
        assert!(leases(&rows(&["1700", "acme/j", "1", "1", "1\nnull"])).is_err());
        assert!(dead_letters(&rows(&["j", "1\nnull\nk"])).is_err());
        let dead = dead_letters(&rows(&["j", "3\nnull\nresize", "{}"])).unwrap();
        assert_eq!(
            (dead[0].kind.as_str(), dead[0].attempts.len()),
            ("resize", 0)
        );
    }
}
