//! Usage rollups: a tenant's exact totals per meter for a day, an ISO week or a month, written
//! as Parquet under its `usage/rollups/<granularity>/<start>.parquet`.
//!
//! An event counts when it was recorded within the grace period after its own day ended
//! (`UsageEvent::on_time`); one recorded later is reported in the rollup's late columns, never
//! dropped silently and never added. Rolling a period again folds in what arrived since; once
//! the grace period of its last day is over the totals can no longer change. Because the rule
//! is per event and totals are integer millionths, the days of a month add up to the month
//! exactly.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use polars::prelude::*;
use serde::Serialize;

use crate::dataset::{frame_to_parquet, parquet_to_frame};
use crate::storage::{RelativePath, StorageError, TenantStore};
use crate::usage::files::{counts, integers, strings};
use crate::usage::{Granularity, Meter, grace_deadline, read_events_between};

/// One meter's total in a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Total {
    pub quantity_micros: i64,
    pub events: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollup {
    pub granularity: Granularity,
    pub start: NaiveDate,
    pub last: NaiveDate,
    pub totals: BTreeMap<Meter, Total>,
    /// Whether the grace period of the period's last day is over: the totals are final.
    pub is_final: bool,
    /// Whether this run changed the stored rollup.
    pub written: bool,
    /// Per meter, what was recorded after its day's grace period (not in the totals).
    pub late_outside_grace: BTreeMap<Meter, Total>,
}

/// The last day of the period starting at `start`.
pub fn period_end(granularity: Granularity, start: NaiveDate) -> NaiveDate {
    match granularity {
        Granularity::Day => start,
        Granularity::Week => start + Duration::days(6),
        Granularity::Month => {
            let (year, month) = if start.month() == 12 {
                (start.year() + 1, 1)
            } else {
                (start.year(), start.month() + 1)
            };
            NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(start) - Duration::days(1)
        }
    }
}

fn rollups_dir(granularity: Granularity) -> Result<RelativePath, StorageError> {
    Ok(RelativePath::parse(&format!(
        "usage/rollups/{}",
        granularity.as_str()
    ))?)
}

/// The starts of the periods that have a stored rollup.
pub async fn stored_starts(
    store: &TenantStore,
    granularity: Granularity,
) -> Result<std::collections::BTreeSet<NaiveDate>, StorageError> {
    Ok(store
        .list(Some(&rollups_dir(granularity)?))
        .await?
        .iter()
        .filter_map(|entry| {
            let name = entry.path.rsplit('/').next()?.strip_suffix(".parquet")?;
            NaiveDate::parse_from_str(name, "%Y-%m-%d").ok()
        })
        .collect())
}

fn rollup_path(granularity: Granularity, start: NaiveDate) -> Result<RelativePath, StorageError> {
    Ok(rollups_dir(granularity)?.join(&format!("{start}.parquet"))?)
}

/// A meter's row: its on-time total and what arrived late.
type Row = (Total, Total);

const ZERO: Total = Total {
    quantity_micros: 0,
    events: 0,
};

fn to_parquet(rows: &BTreeMap<Meter, Row>) -> Result<Vec<u8>, String> {
    let integers = |name: &str, value: fn(&Row) -> i64| {
        Column::new(name.into(), rows.values().map(value).collect::<Vec<i64>>())
    };
    let counts = |name: &str, value: fn(&Row) -> u64| {
        Column::new(name.into(), rows.values().map(value).collect::<Vec<u64>>())
    };
    let mut frame = DataFrame::new(
        rows.len(),
        vec![
            Column::new(
                "meter".into(),
                rows.keys().map(|m| m.as_str()).collect::<Vec<_>>(),
            ),
            integers("quantity_micros", |row| row.0.quantity_micros),
            counts("events", |row| row.0.events),
            integers("late_quantity_micros", |row| row.1.quantity_micros),
            counts("late_events", |row| row.1.events),
        ],
    )
    .map_err(|e| e.to_string())?;
    frame_to_parquet(&mut frame)
}

fn from_parquet(bytes: &[u8]) -> Result<BTreeMap<Meter, Row>, String> {
    let frame = parquet_to_frame(bytes)?;
    let meters = strings(&frame, "meter")?;
    let integers = |name| integers(&frame, name);
    let counts = |name| counts(&frame, name);
    let (quantities, late_quantities) = (
        integers("quantity_micros")?,
        integers("late_quantity_micros")?,
    );
    let (events, late_events) = (counts("events")?, counts("late_events")?);
    let mut rows = BTreeMap::new();
    for (index, meter) in meters.iter().enumerate() {
        let meter = Meter::parse(meter).ok_or_else(|| format!("unknown meter {meter:?}"))?;
        rows.insert(
            meter,
            (
                Total {
                    quantity_micros: quantities[index],
                    events: events[index],
                },
                Total {
                    quantity_micros: late_quantities[index],
                    events: late_events[index],
                },
            ),
        );
    }
    Ok(rows)
}

/// The stored rollup of a period, if there is one (on-time totals and late totals).
pub async fn stored(
    store: &TenantStore,
    granularity: Granularity,
    start: NaiveDate,
) -> Result<Option<(BTreeMap<Meter, Total>, BTreeMap<Meter, Total>)>, StorageError> {
    let path = rollup_path(granularity, start)?;
    let bytes = match store.get(&path).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound(_)) => return Ok(None),
        Err(error) => return Err(error),
    };
    let rows = from_parquet(&bytes).map_err(|message| StorageError::Corrupt {
        path: path.to_string(),
        message,
    })?;
    Ok(Some(split(&rows)))
}

fn split(rows: &BTreeMap<Meter, Row>) -> (BTreeMap<Meter, Total>, BTreeMap<Meter, Total>) {
    let pick = |late: bool| {
        rows.iter()
            .map(|(meter, row)| (*meter, if late { row.1 } else { row.0 }))
            .filter(|(_, total)| total.events > 0 || total.quantity_micros != 0)
            .collect()
    };
    (pick(false), pick(true))
}

/// Rolls up the period holding `day` as it stands at `now`: the on-time events' totals and
/// the late ones', written when they differ from what is stored.
pub async fn roll_up(
    store: &TenantStore,
    granularity: Granularity,
    day: NaiveDate,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Rollup, StorageError> {
    let start = granularity.bucket(day);
    let last = period_end(granularity, start);
    let mut rows: BTreeMap<Meter, Row> = BTreeMap::new();
    for event in read_events_between(store, start, last).await? {
        let row = rows.entry(event.meter).or_insert((ZERO, ZERO));
        let total = if event.on_time(grace) {
            &mut row.0
        } else {
            &mut row.1
        };
        // saturating: a sum of `storage_bytes` levels beyond i64 millionths (about 9.2e12
        // byte-days) stops growing instead of wrapping
        total.quantity_micros = total.quantity_micros.saturating_add(event.quantity_micros);
        total.events += 1;
    }
    let path = rollup_path(granularity, start)?;
    let fresh = split(&rows);
    let written = match stored(store, granularity, start).await? {
        Some(kept) if kept == fresh => false,
        _ => {
            let bytes = to_parquet(&rows).map_err(|message| StorageError::Corrupt {
                path: path.to_string(),
                message,
            })?;
            store.put(&path, bytes).await?;
            true
        }
    };
    let (totals, late_outside_grace) = fresh;
    if !late_outside_grace.is_empty() {
        tracing::warn!(tenant = %store.tenant(), period = %start, granularity = granularity.as_str(), "usage recorded after its grace period: reported, not counted");
    }
    Ok(Rollup {
        granularity,
        start,
        last,
        totals,
        is_final: now >= grace_deadline(last, grace),
        written,
        late_outside_grace,
    })
}
