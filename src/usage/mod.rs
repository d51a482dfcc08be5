//! Usage events: what a tenant consumed (rows scored, CPU seconds, training time, ...), each
//! with an idempotency id, written as Parquet under the tenant's own `usage/date=YYYY-MM-DD/`
//! (`files`).
//!
//! A job attempt's recorder buffers its events and is flushed before the attempt's completion
//! is acknowledged: one file per attempt, rewritten whole, so a flush repeated after a crash
//! writes the same events again, never twice. Event ids are `<job>:<attempt>:<seq>`; readers
//! drop duplicate ids. Online requests are acknowledged only once their events are in the
//! replica's `journal`, which becomes Parquet every few seconds and after a crash.
//! Quantities are integer millionths, so totals are exact.

pub mod files;
pub mod journal;

pub use files::{read_events, read_events_between, write_events};
pub use journal::{JournalError, SyncPolicy, UsageJournal};

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::storage::{RelativePath, StorageError, TenantStore};

/// What is metered.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    ApiCalls,
    RowsScored,
    TokensIn,
    TokensOut,
    CpuSeconds,
    GpuSeconds,
    StorageBytes,
    TrainingSeconds,
}

impl Meter {
    pub const ALL: [Meter; 8] = [
        Meter::ApiCalls,
        Meter::RowsScored,
        Meter::TokensIn,
        Meter::TokensOut,
        Meter::CpuSeconds,
        Meter::GpuSeconds,
        Meter::StorageBytes,
        Meter::TrainingSeconds,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Meter::ApiCalls => "api_calls",
            Meter::RowsScored => "rows_scored",
            Meter::TokensIn => "tokens_in",
            Meter::TokensOut => "tokens_out",
            Meter::CpuSeconds => "cpu_seconds",
            Meter::GpuSeconds => "gpu_seconds",
            Meter::StorageBytes => "storage_bytes",
            Meter::TrainingSeconds => "training_seconds",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|meter| meter.as_str() == text)
    }
}

/// Quantities are stored in millionths of the meter's unit.
pub const MICROS: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub id: String,
    pub meter: Meter,
    pub quantity_micros: i64,
    pub at: DateTime<Utc>,
    pub source: String,
    /// When the event became durable (written, or journaled by a serving replica): what
    /// decides whether it arrived within its day's grace period.
    pub recorded_at: DateTime<Utc>,
}

impl UsageEvent {
    /// Whether the event was recorded no later than `grace` after the end of its day (UTC):
    /// only such events count in rollups and invoices; later ones are reported as late.
    pub fn on_time(&self, grace: chrono::Duration) -> bool {
        self.recorded_at <= grace_deadline(self.at.date_naive(), grace)
    }
}

/// The instant the grace period of `day` (UTC) ends.
pub fn grace_deadline(day: NaiveDate, grace: chrono::Duration) -> DateTime<Utc> {
    // checked: an event file may carry any date chrono can hold, and input never panics
    let end = day
        .succ_opt()
        .and_then(|next| next.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |midnight| midnight.and_utc());
    end.checked_add_signed(grace)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Buffers one job attempt's events; flushed by the worker when the attempt ends, before its
/// completion is acknowledged.
///
/// What an attempt consumed (CPU, GPU, training time) is metered for every attempt. What a job
/// delivers (rows scored, tokens, calls) is billed once per job: a failed attempt delivered
/// nothing, and an attempt whose earlier try had already delivered (its handler succeeded and
/// its usage was written, then its worker died before the acknowledgement) does not bill it
/// again.
#[derive(Clone, Debug)]
pub struct UsageRecorder {
    job_id: String,
    attempt: u32,
    file: String,
    source: String,
    clock: SharedClock,
    events: Arc<Mutex<Vec<UsageEvent>>>,
}

impl Meter {
    /// Whether the meter counts what a job delivers (billed once per job), rather than what
    /// an attempt consumed.
    pub fn is_delivery(self) -> bool {
        matches!(
            self,
            Meter::ApiCalls | Meter::RowsScored | Meter::TokensIn | Meter::TokensOut
        )
    }
}

fn attempt_file(job_id: &str, attempt: u32) -> String {
    format!("job-{job_id}-{attempt}.parquet")
}

impl UsageRecorder {
    pub fn for_job(job_id: &str, attempt: u32, kind: &str, clock: SharedClock) -> Self {
        Self {
            job_id: job_id.to_string(),
            attempt,
            file: attempt_file(job_id, attempt),
            source: format!("job:{kind}"),
            clock,
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Records `quantity` units of `meter` (fractions kept to a millionth).
    pub fn record(&self, meter: Meter, quantity: f64) {
        if !quantity.is_finite() || quantity <= 0.0 {
            return;
        }
        let at = self.clock.now();
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let seq = events.len();
        events.push(UsageEvent {
            id: format!("{}:{}:{seq}", self.job_id, self.attempt),
            meter,
            quantity_micros: (quantity * MICROS as f64).round() as i64,
            at,
            source: self.source.clone(),
            recorded_at: at,
        });
    }

    pub fn events(&self) -> Vec<UsageEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether an earlier attempt of the job wrote delivery events (it succeeded, then was
    /// not acknowledged).
    async fn delivered_before(&self, store: &TenantStore) -> Result<bool, StorageError> {
        if self.attempt <= 1 {
            return Ok(false);
        }
        let earlier: HashSet<String> = (1..self.attempt)
            .map(|attempt| attempt_file(&self.job_id, attempt))
            .collect();
        let prefix = RelativePath::parse("usage")?;
        for entry in store.list(Some(&prefix)).await? {
            let name = entry.path.rsplit('/').next().unwrap_or_default();
            if !earlier.contains(name) {
                continue;
            }
            let path = RelativePath::parse(&entry.path)?;
            let events =
                files::events_from_parquet(&store.get(&path).await?).map_err(|message| {
                    StorageError::Corrupt {
                        path: entry.path.clone(),
                        message,
                    }
                })?;
            if events.iter().any(|event| event.meter.is_delivery()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Writes the attempt's events to its file of each day they fall on, stamped as recorded
    /// now: all of them when the attempt succeeded and no earlier attempt delivered, only
    /// what it consumed otherwise. Returns how many events were written.
    pub async fn flush(&self, store: &TenantStore, succeeded: bool) -> Result<usize, StorageError> {
        let bill_delivery = succeeded && !self.delivered_before(store).await?;
        let now = self.clock.now();
        let mut by_day: BTreeMap<NaiveDate, Vec<UsageEvent>> = BTreeMap::new();
        for mut event in self.events() {
            if event.meter.is_delivery() && !bill_delivery {
                continue;
            }
            event.recorded_at = now;
            by_day.entry(event.at.date_naive()).or_default().push(event);
        }
        let mut written = 0;
        for events in by_day.values() {
            written += write_events(store, &self.file, events).await?;
        }
        Ok(written)
    }
}

/// Buckets of a usage series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Day,
    /// ISO weeks, starting on Monday.
    Week,
    Month,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::Day, Granularity::Week, Granularity::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }

    /// The first day of the bucket holding `day`.
    pub fn bucket(self, day: NaiveDate) -> NaiveDate {
        match self {
            Granularity::Day => day,
            Granularity::Week => {
                day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()))
            }
            Granularity::Month => day.with_day(1).unwrap_or(day),
        }
    }
}

/// One bucket of one meter: the exact quantity as a decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsagePoint {
    pub start: NaiveDate,
    pub meter: Meter,
    pub quantity: String,
    pub events: u64,
}

/// `micros` millionths as an exact decimal string ("1.5", "12").
pub fn decimal_string(micros: i64) -> String {
    rust_decimal::Decimal::new(micros, 6)
        .normalize()
        .to_string()
}

/// Sums events into buckets per meter (only `meter` when given), ordered by start then meter.
pub fn series(
    events: &[UsageEvent],
    meter_opt: Option<Meter>,
    granularity: Granularity,
) -> Vec<UsagePoint> {
    let mut buckets: BTreeMap<(NaiveDate, Meter), (i64, u64)> = BTreeMap::new();
    for event in events {
        if meter_opt.is_some_and(|meter| meter != event.meter) {
            continue;
        }
        let bucket = buckets
            .entry((granularity.bucket(event.at.date_naive()), event.meter))
            .or_default();
        bucket.0 = bucket.0.saturating_add(event.quantity_micros);
        bucket.1 += 1;
    }
    buckets
        .into_iter()
        .map(|((start, meter), (micros, events))| UsagePoint {
            start,
            meter,
            quantity: decimal_string(micros),
            events,
        })
        .collect()
}

/// Exact totals per meter, in millionths.
pub fn totals(events: &[UsageEvent]) -> BTreeMap<Meter, i64> {
    let mut totals = BTreeMap::new();
    for event in events {
        let total = totals.entry(event.meter).or_insert(0i64);
        *total = total.saturating_add(event.quantity_micros);
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grace_deadline_of_any_date_is_defined() {
        let grace = chrono::Duration::hours(6);
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        assert_eq!(
            grace_deadline(day, grace).to_rfc3339(),
            "2026-12-01T06:00:00+00:00"
        );
        // the last date chrono holds has no next day: the deadline saturates, no panic
        assert_eq!(
            grace_deadline(NaiveDate::MAX, grace),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
