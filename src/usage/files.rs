//! Usage events as Parquet files under a tenant's `usage/date=YYYY-MM-DD/`: one file holds
//! events of one day; readers drop duplicate ids, so a file written twice (a flush repeated
//! after a crash) counts once.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate};
use polars::prelude::*;

use crate::dataset::{frame_to_parquet, parquet_to_frame};
use crate::storage::{RelativePath, StorageError, TenantStore};
use crate::usage::{Meter, UsageEvent};

/// Ranges up to this many days are read by listing each day's directory.
const MAX_LISTED_DAYS: i64 = 93;

/// The directory of a day's event files.
pub fn day_dir(day: NaiveDate) -> String {
    format!("usage/date={}", day.format("%Y-%m-%d"))
}

/// Writes `events` to `usage/date=<day of the first event>/<file>` of the tenant (callers
/// split by day). Returns how many events the file holds.
pub async fn write_events(
    store: &TenantStore,
    file: &str,
    events: &[UsageEvent],
) -> Result<usize, StorageError> {
    let Some(first) = events.first() else {
        return Ok(0);
    };
    let path = RelativePath::parse(&format!("{}/{file}", day_dir(first.at.date_naive())))?;
    let bytes = events_to_parquet(events).map_err(|message| StorageError::Corrupt {
        path: path.to_string(),
        message,
    })?;
    store.put(&path, bytes).await?;
    Ok(events.len())
}

/// The Parquet bytes of `events`.
pub fn events_to_parquet(events: &[UsageEvent]) -> Result<Vec<u8>, String> {
    let strings = |name: &str, value: fn(&UsageEvent) -> &str| {
        Column::new(name.into(), events.iter().map(value).collect::<Vec<&str>>())
    };
    let integers = |name: &str, value: fn(&UsageEvent) -> i64| {
        Column::new(name.into(), events.iter().map(value).collect::<Vec<i64>>())
    };
    let mut frame = DataFrame::new(
        events.len(),
        vec![
            strings("id", |e| &e.id),
            strings("meter", |e| e.meter.as_str()),
            integers("quantity_micros", |e| e.quantity_micros),
            integers("at_ms", |e| e.at.timestamp_millis()),
            strings("source", |e| &e.source),
            integers("recorded_ms", |e| e.recorded_at.timestamp_millis()),
        ],
    )
    .map_err(|e| e.to_string())?;
    frame_to_parquet(&mut frame)
}

/// The events of Parquet bytes written by `events_to_parquet` (files without `recorded_ms`
/// count as recorded when they happened).
pub fn events_from_parquet(bytes: &[u8]) -> Result<Vec<UsageEvent>, String> {
    let frame = parquet_to_frame(bytes)?;
    let (strings, integers) = (|name| strings(&frame, name), |name| integers(&frame, name));
    let (ids, meters, sources) = (strings("id")?, strings("meter")?, strings("source")?);
    let (quantities, times) = (integers("quantity_micros")?, integers("at_ms")?);
    let recorded = match frame.column("recorded_ms") {
        Ok(_) => integers("recorded_ms")?,
        Err(_) => times.clone(),
    };
    let mut events = Vec::with_capacity(ids.len());
    for (index, id) in ids.into_iter().enumerate() {
        let meter = Meter::parse(&meters[index])
            .ok_or_else(|| format!("unknown meter {:?}", meters[index]))?;
        events.push(UsageEvent {
            id,
            meter,
            quantity_micros: quantities[index],
            at: DateTime::from_timestamp_millis(times[index]).unwrap_or_default(),
            source: sources[index].clone(),
            recorded_at: DateTime::from_timestamp_millis(recorded[index]).unwrap_or_default(),
        });
    }
    Ok(events)
}

/// A text column's values (the frames here are written without nulls).
pub(crate) fn strings(frame: &DataFrame, name: &str) -> Result<Vec<String>, String> {
    Ok(frame
        .column(name)
        .and_then(|c| c.str().cloned())
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect())
}

fn numbers<T: PolarsNumericType>(
    frame: &DataFrame,
    name: &str,
    typed: fn(&Column) -> PolarsResult<&ChunkedArray<T>>,
) -> Result<Vec<T::Native>, String> {
    let column = frame.column(name).map_err(|e| e.to_string())?;
    Ok(typed(column)
        .map_err(|e| e.to_string())?
        .iter()
        .map(Option::unwrap_or_default)
        .collect())
}

/// An `i64` column's values.
pub(crate) fn integers(frame: &DataFrame, name: &str) -> Result<Vec<i64>, String> {
    numbers(frame, name, Column::i64)
}

/// A `u64` column's values.
pub(crate) fn counts(frame: &DataFrame, name: &str) -> Result<Vec<u64>, String> {
    numbers(frame, name, Column::u64)
}

/// Every usage event of the tenant, duplicates (same id) removed.
pub async fn read_events(store: &TenantStore) -> Result<Vec<UsageEvent>, StorageError> {
    read_events_between(store, NaiveDate::MIN, NaiveDate::MAX).await
}

/// The tenant's events dated `from..=to` (by the day directory they were written under, then
/// by their own time), duplicates removed: the first copy of an id read is kept, and files
/// are read in path order, so the result does not depend on listing order.
pub async fn read_events_between(
    store: &TenantStore,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<UsageEvent>, StorageError> {
    // a bounded range lists its day directories only, not the tenant's whole history
    let mut entries = Vec::new();
    if from <= to && (to - from).num_days() < MAX_LISTED_DAYS {
        let mut day = from;
        while day <= to {
            entries.extend(
                store
                    .list(Some(&RelativePath::parse(&day_dir(day))?))
                    .await?,
            );
            day += chrono::Duration::days(1);
        }
    } else {
        entries = store.list(Some(&RelativePath::parse("usage")?)).await?;
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for entry in entries {
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
