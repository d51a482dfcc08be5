//! Usage events: what a tenant consumed (rows scored, CPU seconds, training time, ...), each
//! with an idempotency id, written as Parquet under the tenant's own `usage/date=YYYY-MM-DD/`.
//!
//! A job attempt's recorder buffers its events and is flushed when the attempt ends: one file
//! per attempt, rewritten whole, so a flush repeated after a crash writes the same events
//! again, never twice. Event ids are `<job>:<attempt>:<seq>`; readers drop duplicate ids.
//! Quantities are integer millionths, so totals are exact.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::dataset::{frame_to_parquet, parquet_to_frame};
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
}

/// Buffers one job attempt's events; flushed by the worker when the attempt ends.
#[derive(Clone, Debug)]
pub struct UsageRecorder {
    id_prefix: String,
    file: String,
    source: String,
    clock: SharedClock,
    events: Arc<Mutex<Vec<UsageEvent>>>,
}

impl UsageRecorder {
    pub fn for_job(job_id: &str, attempt: u32, kind: &str, clock: SharedClock) -> Self {
        Self {
            id_prefix: format!("{job_id}:{attempt}"),
            file: format!("job-{job_id}-{attempt}.parquet"),
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
        let at = DateTime::from_timestamp_millis(self.clock.now_ms() as i64).unwrap_or_default();
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let seq = events.len();
        events.push(UsageEvent {
            id: format!("{}:{seq}", self.id_prefix),
            meter,
            quantity_micros: (quantity * MICROS as f64).round() as i64,
            at,
            source: self.source.clone(),
        });
    }

    pub fn events(&self) -> Vec<UsageEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes every event recorded so far to the attempt's file under the day of its first
    /// event. Returns how many events the file holds.
    pub async fn flush(&self, store: &TenantStore) -> Result<usize, StorageError> {
        write_events(store, &self.file, &self.events()).await
    }
}

/// Writes `events` to `usage/date=<day of the first event>/<file>` of the tenant.
pub async fn write_events(
    store: &TenantStore,
    file: &str,
    events: &[UsageEvent],
) -> Result<usize, StorageError> {
    let Some(first) = events.first() else {
        return Ok(0);
    };
    let path = RelativePath::parse(&format!(
        "usage/date={}/{file}",
        first.at.format("%Y-%m-%d")
    ))?;
    let bytes = events_to_parquet(events).map_err(|message| StorageError::Corrupt {
        path: path.to_string(),
        message,
    })?;
    store.put(&path, bytes).await?;
    Ok(events.len())
}

fn events_to_parquet(events: &[UsageEvent]) -> Result<Vec<u8>, String> {
    let column = |name: &str, values: Vec<String>| Column::new(name.into(), values);
    let mut frame = DataFrame::new(
        events.len(),
        vec![
            column("id", events.iter().map(|e| e.id.clone()).collect()),
            column(
                "meter",
                events
                    .iter()
                    .map(|e| e.meter.as_str().to_string())
                    .collect(),
            ),
            Column::new(
                "quantity_micros".into(),
                events
                    .iter()
                    .map(|e| e.quantity_micros)
                    .collect::<Vec<i64>>(),
            ),
            Column::new(
                "at_ms".into(),
                events
                    .iter()
                    .map(|e| e.at.timestamp_millis())
                    .collect::<Vec<i64>>(),
            ),
            column("source", events.iter().map(|e| e.source.clone()).collect()),
        ],
    )
    .map_err(|e| e.to_string())?;
    frame_to_parquet(&mut frame)
}

fn events_from_parquet(bytes: &[u8]) -> Result<Vec<UsageEvent>, String> {
    let frame = parquet_to_frame(bytes)?;
    let strings = |name: &str| -> Result<Vec<String>, String> {
        Ok(frame
            .column(name)
            .and_then(|c| c.str().cloned())
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let integers = |name: &str| -> Result<Vec<i64>, String> {
        Ok(frame
            .column(name)
            .and_then(|c| c.i64().cloned())
            .map_err(|e| e.to_string())?
            .iter()
            .map(Option::unwrap_or_default)
            .collect())
    };
    let (ids, meters, sources) = (strings("id")?, strings("meter")?, strings("source")?);
    let (quantities, times) = (integers("quantity_micros")?, integers("at_ms")?);
    let mut events = Vec::with_capacity(ids.len());
    for index in 0..ids.len() {
        let meter = Meter::parse(&meters[index])
            .ok_or_else(|| format!("unknown meter {:?}", meters[index]))?;
        events.push(UsageEvent {
            id: ids[index].clone(),
            meter,
            quantity_micros: quantities[index],
            at: DateTime::from_timestamp_millis(times[index]).unwrap_or_default(),
            source: sources[index].clone(),
        });
    }
    Ok(events)
}

/// Every usage event of the tenant, duplicates (same id) removed.
pub async fn read_events(store: &TenantStore) -> Result<Vec<UsageEvent>, StorageError> {
    read_events_between(store, NaiveDate::MIN, NaiveDate::MAX).await
}

/// The tenant's events dated `from..=to` (by the day directory they were written under, then
/// by their own time), duplicates removed.
pub async fn read_events_between(
    store: &TenantStore,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<UsageEvent>, StorageError> {
    let prefix = RelativePath::parse("usage")?;
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for entry in store.list(Some(&prefix)).await? {
        if !entry.path.ends_with(".parquet") {
            continue;
        }
        // a file holds one day's events (a flush splits by day): skip days outside the range
        let day = entry
            .path
            .split('/')
            .find_map(|part| part.strip_prefix("date="))
            .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok());
        // only event files live under a day directory (rollups live beside them)
        match day {
            Some(day) if day >= from && day <= to => {}
            _ => continue,
        }
        let path = RelativePath::parse(&entry.path)?;
        let bytes = store.get(&path).await?;
        let file_events = events_from_parquet(&bytes).map_err(|message| StorageError::Corrupt {
            path: entry.path.clone(),
            message,
        })?;
        events.extend(file_events.into_iter().filter(|event| {
            let day = event.at.date_naive();
            day >= from && day <= to && seen.insert(event.id.clone())
        }));
    }
    Ok(events)
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
        bucket.0 += event.quantity_micros;
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
        *totals.entry(event.meter).or_insert(0) += event.quantity_micros;
    }
    totals
}
