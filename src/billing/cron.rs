//! The billing cron: per tenant, a storage sample every day, usage rollups per day, ISO week
//! and month once each period's grace period is over, and the month's invoice on the 1st.
//!
//! - Spread: a tenant's firing is offset from the period's start by a hash of the tenant and
//!   the task within a window (`[billing] daily_spread_minutes`, and
//!   `month_end_spread_minutes` for month rollups and invoices): no month-end storm.
//! - Exactly once across replicas and restarts: a firing is the job `billing-<task>-<period>`
//!   created put-if-absent in the tenant's store; a replica that loses the race, or a
//!   restarted scheduler, finds the job there and skips. A firing that fails (storage or
//!   queue down) is tried again at the next tick.
//! - A scheduler that was down fires the latest due period once; the job itself catches up
//!   earlier periods left without a rollup or an invoice.
//! - The jobs go into the `batch` band, behind interactive and standard work.
//! - All time comes from the injected clock; no tenant is read unless it has a period due
//!   (the tenant list is re-read every few minutes), so idle tenants cost nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::billing::jobs::BillingTask;
use crate::billing::rollup::period_end;
use crate::billing::settings::BillingSettings;
use crate::clock::SharedClock;
use crate::jobs::{JobError, JobService, SubmitJob};
use crate::queue::Band;
use crate::tenant::{TenantRecord, TenantState};
use crate::usage::{Granularity, grace_deadline};

/// How long the cron trusts its copy of the tenant list.
pub const TENANTS_REFRESH_MS: u64 = 300_000;

/// The per-tenant tasks, in the order they fire within one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schedule {
    StorageSample,
    RollupDay,
    RollupWeek,
    RollupMonth,
    Invoice,
}

pub const SCHEDULES: [Schedule; 5] = [
    Schedule::StorageSample,
    Schedule::RollupDay,
    Schedule::RollupWeek,
    Schedule::RollupMonth,
    Schedule::Invoice,
];

impl Schedule {
    pub fn name(self) -> &'static str {
        match self {
            Schedule::StorageSample => "storage_sample",
            Schedule::RollupDay => "rollup_day",
            Schedule::RollupWeek => "rollup_week",
            Schedule::RollupMonth => "rollup_month",
            Schedule::Invoice => "invoice",
        }
    }

    fn granularity(self) -> Granularity {
        match self {
            Schedule::StorageSample | Schedule::RollupDay => Granularity::Day,
            Schedule::RollupWeek => Granularity::Week,
            Schedule::RollupMonth | Schedule::Invoice => Granularity::Month,
        }
    }

    /// The window a tenant's firing is spread over.
    pub fn window(self, settings: &BillingSettings) -> Duration {
        match self {
            Schedule::RollupMonth | Schedule::Invoice => settings.month_end_spread,
            _ => settings.daily_spread,
        }
    }

    /// When the period starting at `start` becomes due (before the tenant's offset): a day's
    /// storage sample at its midnight, rollups and invoices when its grace period ends.
    pub fn base(self, start: NaiveDate, grace: Duration) -> DateTime<Utc> {
        match self {
            Schedule::StorageSample => start.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
            _ => grace_deadline(period_end(self.granularity(), start), grace),
        }
    }

    /// The latest period start whose firing for a tenant with `offset` is at or before `now`.
    pub fn latest_due(self, now: DateTime<Utc>, grace: Duration, offset: Duration) -> NaiveDate {
        let granularity = self.granularity();
        // the last day whose own base could have passed
        let mut last = match self {
            Schedule::StorageSample => now.date_naive(),
            _ => (now - grace).date_naive() - Duration::days(1),
        };
        loop {
            let mut start = granularity.bucket(last);
            if self != Schedule::StorageSample && period_end(granularity, start) > last {
                start = granularity.bucket(start - Duration::days(1));
            }
            if self.base(start, grace) + offset <= now {
                return start;
            }
            last = start - Duration::days(1);
        }
    }

    /// The task of the period starting at `start`.
    pub fn task(self, start: NaiveDate) -> BillingTask {
        match self {
            Schedule::StorageSample => BillingTask::StorageSample { day: start },
            Schedule::Invoice => BillingTask::Invoice {
                period: start.format("%Y-%m").to_string(),
            },
            _ => BillingTask::Rollup {
                granularity: self.granularity(),
                start,
            },
        }
    }
}

/// A tenant's offset into a schedule's window, from a hash of the tenant and the task.
pub fn spread_offset(tenant: &str, schedule: Schedule, window: Duration) -> Duration {
    let window_ms = window.num_milliseconds().max(0) as u64;
    if window_ms == 0 {
        return Duration::zero();
    }
    let hash =
        crate::serving::ring::stable_hash(&[tenant.as_bytes(), &[0], schedule.name().as_bytes()]);
    Duration::milliseconds((hash % window_ms) as i64)
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct CronTick {
    /// `<tenant>/<job id>` of every job created now.
    pub fired: Vec<String>,
    /// Periods another replica (or an earlier run of this one) fired already.
    pub skipped: usize,
    /// Firings that failed now and are tried again at the next tick.
    pub failed: usize,
}

pub struct BillingCron {
    jobs: JobService,
    clock: SharedClock,
    tenants: tokio::sync::Mutex<Option<(u64, Vec<TenantRecord>)>>,
    /// The latest period this replica fired or saw fired, per tenant and schedule.
    seen: Mutex<HashMap<(String, Schedule), NaiveDate>>,
}

impl BillingCron {
    pub fn new(jobs: JobService, clock: SharedClock) -> Self {
        Self {
            jobs,
            clock,
            tenants: tokio::sync::Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
        }
    }

    async fn tenants(&self, now_ms: u64) -> Result<Vec<TenantRecord>, JobError> {
        let mut cached = self.tenants.lock().await;
        if let Some((read_at, tenants)) = cached.as_ref()
            && now_ms.saturating_sub(*read_at) < TENANTS_REFRESH_MS
        {
            return Ok(tenants.clone());
        }
        let tenants: Vec<TenantRecord> = self
            .jobs
            .platform()
            .list_tenants()
            .await?
            .into_iter()
            .filter(|record| record.state == TenantState::Active)
            .collect();
        *cached = Some((now_ms, tenants.clone()));
        Ok(tenants)
    }

    /// Creates the job of every period due now that no replica created yet.
    pub async fn tick(&self) -> Result<CronTick, JobError> {
        let now_ms = self.clock.now_ms();
        let now = DateTime::from_timestamp_millis(now_ms as i64).unwrap_or_default();
        let settings = self.jobs.platform().settings().billing.clone();
        let mut report = CronTick::default();
        for record in self.tenants(now_ms).await? {
            let tenant = record.id.to_string();
            let created = record.created_at.date_naive();
            for schedule in SCHEDULES {
                let offset = spread_offset(&tenant, schedule, schedule.window(&settings));
                let start = schedule.latest_due(now, settings.grace, offset);
                let seen_key = (tenant.clone(), schedule);
                if self.seen.lock().expect("seen map").get(&seen_key) == Some(&start) {
                    continue;
                }
                let end = match schedule {
                    Schedule::StorageSample => start,
                    _ => period_end(schedule.granularity(), start),
                };
                if end < created {
                    // the tenant did not exist yet in that period
                    self.seen.lock().expect("seen map").insert(seen_key, start);
                    continue;
                }
                let task = schedule.task(start);
                match self.fire(&record, &task).await {
                    Ok(true) => report.fired.push(format!("{tenant}/{}", task.job_id())),
                    Ok(false) => report.skipped += 1,
                    // no pool runs the kind: nothing changes that before a restart with
                    // another configuration, so say it once per period, not every tick
                    Err(error @ JobError::NoPool(_)) => {
                        tracing::error!(%tenant, job_id = task.job_id(), %error, "billing job not created: add its kind to a pool");
                        report.failed += 1;
                    }
                    Err(error) => {
                        // not marked seen: the next tick tries again
                        tracing::warn!(%tenant, job_id = task.job_id(), %error, "billing job not created");
                        report.failed += 1;
                        continue;
                    }
                }
                self.seen.lock().expect("seen map").insert(seen_key, start);
            }
        }
        Ok(report)
    }

    /// Creates the task's job unless it exists; whether it was created now.
    async fn fire(&self, record: &TenantRecord, task: &BillingTask) -> Result<bool, JobError> {
        let store = self.jobs.platform().tenant_store(&record.id).await?;
        let request = SubmitJob {
            kind: task.kind().to_string(),
            group: Some("billing".to_string()),
            band: Some(Band::Batch),
            payload: serde_json::to_value(task).map_err(|e| JobError::Invalid(e.to_string()))?,
            idempotency_key: None,
            max_attempts: None,
            cost_estimate: None,
        };
        let created = self
            .jobs
            .submit_once(&store, request, task.job_id())
            .await?
            .is_some();
        if created {
            tracing::info!(tenant = %record.id, job_id = task.job_id(), "billing job fired");
        }
        Ok(created)
    }

    /// Ticks every `interval` until `shutdown`.
    pub async fn run(self, interval: std::time::Duration, shutdown: CancellationToken) {
        crate::pipeline::cron::every(interval, shutdown, "billing cron", || self.tick()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn periods_fall_due_after_their_grace_and_the_tenants_offset() {
        let grace = Duration::hours(6);
        let none = Duration::zero();
        // the day rollup of the 27th is due at 28th 06:00
        assert_eq!(
            Schedule::RollupDay.latest_due(at("2026-11-28T05:59:59Z"), grace, none),
            day("2026-11-26")
        );
        assert_eq!(
            Schedule::RollupDay.latest_due(at("2026-11-28T06:00:00Z"), grace, none),
            day("2026-11-27")
        );
        // with a 40 minute offset, at 06:30 it is still the 26th
        assert_eq!(
            Schedule::RollupDay.latest_due(
                at("2026-11-28T06:30:00Z"),
                grace,
                Duration::minutes(40)
            ),
            day("2026-11-26")
        );
        // November's invoice: on December 1st after the grace period (and the offset)
        assert_eq!(
            Schedule::Invoice.latest_due(at("2026-12-01T05:00:00Z"), grace, none),
            day("2026-10-01")
        );
        assert_eq!(
            Schedule::Invoice.latest_due(at("2026-12-01T08:00:00Z"), grace, Duration::hours(2)),
            day("2026-11-01")
        );
        // ISO week 48 of 2026 runs Monday 23rd to Sunday 29th
        assert_eq!(
            Schedule::RollupWeek.latest_due(at("2026-11-30T07:00:00Z"), grace, none),
            day("2026-11-23")
        );
        assert_eq!(
            Schedule::RollupWeek.latest_due(at("2026-11-30T05:00:00Z"), grace, none),
            day("2026-11-16")
        );
        // the storage sample of a day at its midnight plus the offset
        assert_eq!(
            Schedule::StorageSample.latest_due(
                at("2026-11-28T00:10:00Z"),
                grace,
                Duration::minutes(20)
            ),
            day("2026-11-27")
        );
    }

    #[test]
    fn month_end_work_is_spread_over_the_window_by_tenant() {
        let window = Duration::hours(6);
        let offsets: Vec<Duration> = (0..200)
            .map(|n| spread_offset(&format!("tenant-{n}"), Schedule::Invoice, window))
            .collect();
        assert!(
            offsets
                .iter()
                .all(|o| *o >= Duration::zero() && *o < window)
        );
        // every hour of the window gets some tenants, none gets most of them
        let mut per_hour = [0usize; 6];
        for offset in &offsets {
            per_hour[offset.num_hours() as usize] += 1;
        }
        assert!(per_hour.iter().all(|n| *n > 10 && *n < 70), "{per_hour:?}");
        // the same tenant always gets the same offset
        assert_eq!(
            spread_offset("acme", Schedule::Invoice, window),
            spread_offset("acme", Schedule::Invoice, window)
        );
    }
}
