//! Usage rollups: a tenant's exact totals per meter for a day, an ISO week or a month, written
//! as Parquet under its `usage/rollups/<granularity>/<start>.parquet`.
//!
//! A period's rollup may be recomputed until `grace` after the period ends, folding in events
//! that arrived late. After that it is final: rolling it again leaves it as it is and reports
//! what arrived too late (per meter, the quantity and events the final rollup does not hold),
//! so nothing is dropped silently. Totals are integer millionths, so the days of a month add up
//! to the month exactly.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate};
use polars::prelude::*;
use serde::Serialize;

use crate::dataset::{frame_to_parquet, parquet_to_frame};
use crate::storage::{RelativePath, StorageError, TenantStore};
use crate::usage::{Granularity, Meter, read_events_between};

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
    /// Whether this run wrote the rollup (false once it is final).
    pub written: bool,
    /// Per meter, what arrived after the rollup became final (not in it).
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

fn granularity_name(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Day => "day",
        Granularity::Week => "week",
        Granularity::Month => "month",
    }
}

fn rollup_path(granularity: Granularity, start: NaiveDate) -> Result<RelativePath, StorageError> {
    Ok(RelativePath::parse(&format!(
        "usage/rollups/{}/{start}.parquet",
        granularity_name(granularity)
    ))?)
}

fn to_parquet(totals: &BTreeMap<Meter, Total>) -> Result<Vec<u8>, String> {
    let mut frame = DataFrame::new(
        totals.len(),
        vec![
            Column::new(
                "meter".into(),
                totals.keys().map(|m| m.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "quantity_micros".into(),
                totals
                    .values()
                    .map(|t| t.quantity_micros)
                    .collect::<Vec<i64>>(),
            ),
            Column::new(
                "events".into(),
                totals.values().map(|t| t.events).collect::<Vec<u64>>(),
            ),
        ],
    )
    .map_err(|e| e.to_string())?;
    frame_to_parquet(&mut frame)
}

fn from_parquet(bytes: &[u8]) -> Result<BTreeMap<Meter, Total>, String> {
    let frame = parquet_to_frame(bytes)?;
    let meters = frame
        .column("meter")
        .and_then(|c| c.str().cloned())
        .map_err(|e| e.to_string())?;
    let quantities = frame
        .column("quantity_micros")
        .and_then(|c| c.i64().cloned())
        .map_err(|e| e.to_string())?;
    let events = frame
        .column("events")
        .and_then(|c| c.u64().cloned())
        .map_err(|e| e.to_string())?;
    let mut totals = BTreeMap::new();
    for ((meter, quantity), count) in meters.iter().zip(quantities.iter()).zip(events.iter()) {
        let meter = Meter::parse(meter.unwrap_or_default())
            .ok_or_else(|| format!("unknown meter {meter:?}"))?;
        totals.insert(
            meter,
            Total {
                quantity_micros: quantity.unwrap_or_default(),
                events: count.unwrap_or_default(),
            },
        );
    }
    Ok(totals)
}

/// Rolls up the period holding `day` as of `today`, with `grace` days after its end during
/// which it is recomputed.
pub async fn roll_up(
    store: &TenantStore,
    granularity: Granularity,
    day: NaiveDate,
    today: NaiveDate,
    grace_days: i64,
) -> Result<Rollup, StorageError> {
    let start = granularity.bucket(day);
    let last = period_end(granularity, start);
    let mut totals: BTreeMap<Meter, Total> = BTreeMap::new();
    for event in read_events_between(store, start, last).await? {
        let total = totals.entry(event.meter).or_insert(Total {
            quantity_micros: 0,
            events: 0,
        });
        total.quantity_micros += event.quantity_micros;
        total.events += 1;
    }
    let path = rollup_path(granularity, start)?;
    let corrupt = |message: String| StorageError::Corrupt {
        path: path.to_string(),
        message,
    };
    let final_now = today > last + Duration::days(grace_days);
    if final_now && store.exists(&path).await? {
        let stored = from_parquet(&store.get(&path).await?).map_err(corrupt)?;
        let mut late = BTreeMap::new();
        for (meter, fresh) in &totals {
            let kept = stored.get(meter).copied().unwrap_or(Total {
                quantity_micros: 0,
                events: 0,
            });
            if fresh.events > kept.events || fresh.quantity_micros != kept.quantity_micros {
                late.insert(
                    *meter,
                    Total {
                        quantity_micros: fresh.quantity_micros - kept.quantity_micros,
                        events: fresh.events.saturating_sub(kept.events),
                    },
                );
            }
        }
        if !late.is_empty() {
            tracing::warn!(tenant = %store.tenant(), period = %start, granularity = granularity_name(granularity), "usage arrived after its rollup became final: reported, not rolled in");
        }
        return Ok(Rollup {
            granularity,
            start,
            last,
            totals: stored,
            written: false,
            late_outside_grace: late,
        });
    }
    store
        .put(&path, to_parquet(&totals).map_err(corrupt)?)
        .await?;
    Ok(Rollup {
        granularity,
        start,
        last,
        totals,
        written: true,
        late_outside_grace: BTreeMap::new(),
    })
}
