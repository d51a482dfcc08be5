//! `tenantry bench metering`: usage events ingested per second through a serving replica's
//! journal (group-committed appends with `fdatasync`, duplicates re-sent, sealed segments
//! written as Parquet under each tenant by a flusher running alongside), checked for exact
//! totals after dedup; side by side with the write-through alternative (one Parquet file per
//! request, durable before the answer). Then the time to roll up a month of events for one
//! tenant, and whether its daily rollups add up to the month exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::audit::Actor;
use crate::billing::rollup::roll_up;
use crate::platform::Platform;
use crate::tenant::TenantId;
use crate::usage::{
    Granularity, MICROS, Meter, SyncPolicy, UsageEvent, UsageJournal, read_events, totals,
    write_events,
};
use crate::{Settings, storage::TenantStore};

#[derive(Debug, Clone)]
pub struct MeteringBenchOptions {
    /// Requests metered through the journal (3 events each, before duplicates).
    pub requests: u64,
    pub tenants: usize,
    /// Share of requests whose events are sent a second time (a retried request).
    pub duplicate_ratio: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests written through one Parquet file each, for the baseline.
    pub baseline_requests: u64,
    /// Events in the month rolled up (0 to skip).
    pub rollup_events: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestRun {
    pub method: String,
    pub requests: u64,
    /// Events sent, duplicates included.
    pub events_sent: u64,
    pub unique_events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Totals read back from Parquet equal the unique events' totals, per tenant and meter.
    pub exact: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollupRun {
    pub events: u64,
    pub files: usize,
    pub generate_seconds: f64,
    pub month_seconds: f64,
    pub month_events_per_second: f64,
    pub days_seconds: f64,
    /// The days' totals add up to the month's exactly, and to what was generated.
    pub days_sum_to_month: bool,
    pub exact: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MeteringBenchReport {
    pub journal: IngestRun,
    pub write_through: IngestRun,
    /// Journal events/s over write-through events/s.
    pub ratio: f64,
    pub sync: String,
    pub rollup: Option<RollupRun>,
}

fn bench_error(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// The events of request `n` of `tenant`.
fn request_events(n: u64, at: DateTime<Utc>) -> Vec<UsageEvent> {
    let rows = 1 + (n % 16) as i64;
    let event = |seq: u32, meter: Meter, quantity: i64| UsageEvent {
        id: format!("req-{n}:{seq}"),
        meter,
        quantity_micros: quantity * MICROS,
        at,
        source: "serve:bench".to_string(),
        recorded_at: at,
    };
    vec![
        event(0, Meter::ApiCalls, 1),
        event(1, Meter::RowsScored, rows),
        event(2, Meter::TokensIn, rows * 12),
    ]
}

/// Whether each tenant's usage read back from Parquet equals the totals of requests
/// `0..requests` (request `n` belongs to tenant `n % tenants`).
async fn exact(stores: &[TenantStore], requests: u64, at: DateTime<Utc>) -> Result<bool, String> {
    let mut expected: BTreeMap<(usize, Meter), i64> = BTreeMap::new();
    for n in 0..requests {
        let index = (n % stores.len() as u64) as usize;
        for event in request_events(n, at) {
            *expected.entry((index, event.meter)).or_default() += event.quantity_micros;
        }
    }
    for (index, store) in stores.iter().enumerate() {
        let read = totals(&read_events(store).await.map_err(bench_error)?);
        for meter in [Meter::ApiCalls, Meter::RowsScored, Meter::TokensIn] {
            let want = expected.get(&(index, meter)).copied().unwrap_or(0);
            if read.get(&meter).copied().unwrap_or(0) != want {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

async fn journal_run(
    platform: &Platform,
    stores: &[TenantStore],
    dir: &std::path::Path,
    options: &MeteringBenchOptions,
    at: DateTime<Utc>,
) -> Result<IngestRun, String> {
    let journal = Arc::new(
        UsageJournal::open(
            platform.clone(),
            Arc::new(crate::clock::SystemClock),
            "bench",
            Some(dir.join("journal")),
            SyncPolicy::Always,
        )
        .map_err(bench_error)?,
    );
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let tenants: Arc<Vec<TenantId>> = Arc::new(stores.iter().map(|s| s.tenant().clone()).collect());
    let done = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let flusher = {
        let (journal, done) = (journal.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    () = done.cancelled() => return Ok::<(), String>(()),
                }
                journal.flush().await.map_err(bench_error)?;
            }
        })
    };
    let mut producers = tokio::task::JoinSet::new();
    for worker in 0..options.concurrency {
        let (journal, next, sent, tenants) =
            (journal.clone(), next.clone(), sent.clone(), tenants.clone());
        let (requests, ratio) = (options.requests, options.duplicate_ratio);
        producers.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(worker as u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return Ok::<(), String>(());
                }
                let tenant = &tenants[(n % tenants.len() as u64) as usize];
                let events = request_events(n, at);
                let copies = if rng.r#gen::<f64>() < ratio { 2 } else { 1 };
                for _ in 0..copies {
                    sent.fetch_add(events.len() as u64, Ordering::Relaxed);
                    journal
                        .append(tenant, events.clone())
                        .await
                        .map_err(bench_error)?;
                }
            }
        });
    }
    while let Some(result) = producers.join_next().await {
        result.map_err(bench_error)??;
    }
    done.cancel();
    flusher.await.map_err(bench_error)??;
    journal.flush().await.map_err(bench_error)?;
    let seconds = started.elapsed().as_secs_f64();
    let events_sent = sent.load(Ordering::Relaxed);
    Ok(IngestRun {
        method: "journal (group commit, fdatasync) + Parquet flush".to_string(),
        requests: options.requests,
        events_sent,
        unique_events: options.requests * 3,
        seconds,
        events_per_second: events_sent as f64 / seconds.max(1e-9),
        exact: exact(stores, options.requests, at).await?,
    })
}

async fn write_through_run(
    stores: &[TenantStore],
    options: &MeteringBenchOptions,
    at: DateTime<Utc>,
) -> Result<IngestRun, String> {
    let stores = Arc::new(stores.to_vec());
    let next = Arc::new(AtomicU64::new(options.requests));
    let last = options.requests + options.baseline_requests;
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency {
        let (stores, next) = (stores.clone(), next.clone());
        producers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= last {
                    return Ok::<(), String>(());
                }
                let store = &stores[(n % stores.len() as u64) as usize];
                write_events(store, &format!("req-{n}.parquet"), &request_events(n, at))
                    .await
                    .map_err(bench_error)?;
            }
        });
    }
    while let Some(result) = producers.join_next().await {
        result.map_err(bench_error)??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let events = options.baseline_requests * 3;
    Ok(IngestRun {
        method: "write-through: one Parquet file per request".to_string(),
        requests: options.baseline_requests,
        events_sent: events,
        unique_events: events,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
        exact: exact(&stores, last, at).await?,
    })
}

async fn rollup_run(store: &TenantStore, events: u64) -> Result<RollupRun, String> {
    let month: NaiveDate = "2026-10-01".parse().map_err(bench_error)?;
    let days = 31u64;
    let per_file = 100_000u64;
    let generated = Instant::now();
    let mut expected: BTreeMap<Meter, i64> = BTreeMap::new();
    let mut files = 0;
    let meters = [
        Meter::ApiCalls,
        Meter::RowsScored,
        Meter::TokensIn,
        Meter::CpuSeconds,
    ];
    let mut n = 0u64;
    for day in 0..days {
        let date = month + Duration::days(day as i64);
        let day_events = events / days + u64::from(day < events % days);
        let mut written = 0;
        while written < day_events {
            let count = per_file.min(day_events - written);
            let batch: Vec<UsageEvent> = (0..count)
                .map(|i| {
                    let id = n + i;
                    let at = date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
                        + Duration::milliseconds((id % 86_400_000) as i64);
                    let meter = meters[(id % 4) as usize];
                    let quantity = 1 + (id % 1000) as i64 * 1_000;
                    *expected.entry(meter).or_default() += quantity;
                    UsageEvent {
                        id: format!("e{id}"),
                        meter,
                        quantity_micros: quantity,
                        at,
                        source: "job:bench".to_string(),
                        recorded_at: at,
                    }
                })
                .collect();
            write_events(store, &format!("bench-{files}.parquet"), &batch)
                .await
                .map_err(bench_error)?;
            files += 1;
            written += count;
            n += count;
        }
    }
    let generate_seconds = generated.elapsed().as_secs_f64();
    let grace = Duration::hours(6);
    let now = Utc::now();
    let timed = Instant::now();
    let whole = roll_up(store, Granularity::Month, month, now, grace)
        .await
        .map_err(bench_error)?;
    let month_seconds = timed.elapsed().as_secs_f64();
    let timed = Instant::now();
    let mut summed: BTreeMap<Meter, (i64, u64)> = BTreeMap::new();
    for day in 0..days {
        let rollup = roll_up(
            store,
            Granularity::Day,
            month + Duration::days(day as i64),
            now,
            grace,
        )
        .await
        .map_err(bench_error)?;
        for (meter, total) in rollup.totals {
            let sum = summed.entry(meter).or_default();
            sum.0 += total.quantity_micros;
            sum.1 += total.events;
        }
    }
    let days_seconds = timed.elapsed().as_secs_f64();
    let month_totals: BTreeMap<Meter, (i64, u64)> = whole
        .totals
        .iter()
        .map(|(meter, total)| (*meter, (total.quantity_micros, total.events)))
        .collect();
    let exact = whole.totals.len() == expected.len()
        && expected
            .iter()
            .all(|(meter, want)| whole.totals.get(meter).map(|t| t.quantity_micros) == Some(*want))
        && whole.totals.values().map(|t| t.events).sum::<u64>() == events;
    Ok(RollupRun {
        events,
        files,
        generate_seconds,
        month_seconds,
        month_events_per_second: events as f64 / month_seconds.max(1e-9),
        days_seconds,
        days_sum_to_month: summed == month_totals,
        exact,
    })
}

/// Runs the metering benchmark in a scratch folder (removed afterwards).
pub async fn run_metering_bench(
    options: &MeteringBenchOptions,
) -> Result<MeteringBenchReport, String> {
    let dir =
        std::env::temp_dir().join(format!("tenantry-bench-metering-{}", uuid::Uuid::now_v7()));
    let result = run_in(&dir, options).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    dir: &std::path::Path,
    options: &MeteringBenchOptions,
) -> Result<MeteringBenchReport, String> {
    let settings = Settings {
        storage_url: format!("file://{}", dir.join("data").display()),
        ..Settings::default()
    };
    let platform = Platform::open(settings).await.map_err(bench_error)?;
    let mut stores = Vec::new();
    for n in 0..options.tenants.max(1) {
        let id = TenantId::parse(&format!("meter-{n:04}")).map_err(bench_error)?;
        platform
            .onboard(&id, &format!("Metering {n}"), "pro", Actor::system())
            .await
            .map_err(bench_error)?;
        stores.push(platform.tenant_store(&id).await.map_err(bench_error)?);
    }
    let at = Utc::now();
    let journal = journal_run(&platform, &stores, dir, options, at).await?;
    let write_through = write_through_run(&stores, options, at).await?;
    let rollup = if options.rollup_events > 0 {
        let id = TenantId::parse("meter-rollup").map_err(bench_error)?;
        platform
            .onboard(&id, "Metering rollup", "pro", Actor::system())
            .await
            .map_err(bench_error)?;
        let store = platform.tenant_store(&id).await.map_err(bench_error)?;
        Some(rollup_run(&store, options.rollup_events).await?)
    } else {
        None
    };
    Ok(MeteringBenchReport {
        ratio: journal.events_per_second / write_through.events_per_second.max(1e-9),
        journal,
        write_through,
        sync: "fdatasync per group commit".to_string(),
        rollup,
    })
}
