//! Cron-scheduled manifests. Submitting a manifest with `schedule` stores it as
//! `pipelines/schedules/<name>.json` in the tenant's store, and a small index entry (tenant,
//! name, cron; no manifest content) under `_system/schedules/`, so the scheduler finds every
//! schedule with one listing instead of visiting every tenant (no per-tenant idle cost). The
//! scheduler fires each due period once across replicas and restarts:
//! - a lock per (tenant, schedule, period) taken with `SET NX` in Redis (in-process for the
//!   embedded queue) keeps replicas from racing;
//! - the run id is fixed by the schedule and the period, and a run record is created with
//!   put-if-absent, so a period fires at most once even after a restart or a Redis wipe;
//! - a scheduler that was down fires the latest missed period once, not every missed one.
//!
//! All time comes from the injected clock.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::manifest::{Manifest, ManifestV1, parse_schedule};
use crate::pipeline::run::Trigger;
use crate::pipeline::service::{PipelineError, PipelineResult, PipelineService};
use crate::storage::{RelativePath, StorageError, SystemStore, TenantStore};
use crate::tenant::{TenantId, TenantState};

/// What the scheduler needs to know of a schedule without reading tenant data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleIndexEntry {
    pub tenant: String,
    pub name: String,
    pub cron: String,
    pub not_before: DateTime<Utc>,
}

fn index_key(tenant: &TenantId, name: &str) -> String {
    format!("schedules/{tenant}/{name}.json")
}

/// How long the scheduler trusts its copy of the schedule index.
pub const INDEX_REFRESH_MS: u64 = 30_000;

/// A registered schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleRecord {
    pub name: String,
    pub cron: String,
    #[schema(value_type = Object)]
    pub manifest: ManifestV1,
    pub created_at: DateTime<Utc>,
    /// The first period this schedule may fire (none before it was registered).
    pub not_before: DateTime<Utc>,
}

impl ScheduleRecord {
    pub fn path(name: &str) -> Option<RelativePath> {
        RelativePath::parse(&format!("pipelines/schedules/{name}.json")).ok()
    }

    /// The next firing strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        parse_schedule(&self.cron).ok()?.after(&after).next()
    }

    /// The latest period start in `[not_before, now]`, if any.
    pub fn latest_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        latest_due(&self.cron, self.not_before, now)
    }
}

/// The latest period start of `cron` in `[not_before, now]`, if any.
pub fn latest_due(
    cron: &str,
    not_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let schedule = parse_schedule(cron).ok()?;
    let start = not_before - chrono::Duration::milliseconds(1);
    let first = schedule.after(&start).next()?;
    if first > now {
        return None;
    }
    // Walk forward from the last known point; after a long outage, jump close to `now`
    // first so an every-minute schedule does not iterate over months.
    let mut latest = first;
    let mut from = first;
    let jump = now - chrono::Duration::days(2);
    if jump > first
        && let Some(candidate) = schedule.after(&jump).next()
        && candidate <= now
    {
        latest = candidate;
        from = candidate;
    }
    for time in schedule.after(&from) {
        if time > now {
            break;
        }
        latest = time;
    }
    Some(latest)
}

/// The run id of a schedule's period: `s-<name>-<yyyymmddThhmmss>`.
pub fn scheduled_run_id(name: &str, period: DateTime<Utc>) -> String {
    format!("s-{name}-{}", period.format("%Y%m%dT%H%M%S"))
}

/// Stores (or replaces) the schedule of a manifest, and its index entry.
pub async fn register_schedule(
    system: &SystemStore,
    store: &TenantStore,
    manifest: &Manifest,
    now: DateTime<Utc>,
) -> PipelineResult<(ScheduleRecord, Option<DateTime<Utc>>)> {
    let cron = manifest
        .spec
        .schedule
        .clone()
        .ok_or_else(|| PipelineError::Invalid("the manifest has no schedule".into()))?;
    let name = manifest.spec.metadata.name.clone();
    let record = ScheduleRecord {
        name: name.clone(),
        cron,
        manifest: manifest.spec.clone(),
        created_at: now,
        not_before: now,
    };
    let path =
        ScheduleRecord::path(&name).ok_or_else(|| PipelineError::Invalid("invalid name".into()))?;
    store.put_json(&path, &record).await?;
    let entry = ScheduleIndexEntry {
        tenant: store.tenant().to_string(),
        name: name.clone(),
        cron: record.cron.clone(),
        not_before: record.not_before,
    };
    system
        .put_json(&index_key(store.tenant(), &name), &entry)
        .await?;
    let next = record.next_after(now);
    Ok((record, next))
}

pub async fn list_schedules(store: &TenantStore) -> PipelineResult<Vec<ScheduleRecord>> {
    let prefix = RelativePath::parse("pipelines/schedules").map_err(StorageError::from)?;
    let mut records = Vec::new();
    for entry in store.list(Some(&prefix)).await? {
        let path = RelativePath::parse(&entry.path).map_err(StorageError::from)?;
        records.push(store.get_json(&path).await?);
    }
    Ok(records)
}

pub async fn delete_schedule(
    system: &SystemStore,
    store: &TenantStore,
    name: &str,
) -> PipelineResult<()> {
    let path = ScheduleRecord::path(name).ok_or_else(|| PipelineError::NotFound(name.into()))?;
    if !store.exists(&path).await? {
        return Err(PipelineError::NotFound(name.into()));
    }
    system.delete(&index_key(store.tenant(), name)).await?;
    store.delete(&path).await?;
    Ok(())
}

/// The per-period lock replicas take before firing.
pub enum CronLock {
    /// One process (embedded queue).
    Local(Mutex<HashSet<String>>),
    /// Shared by every replica: `SET key 1 NX PX ttl`.
    Redis {
        connection: redis::aio::ConnectionManager,
        namespace: String,
    },
}

impl CronLock {
    pub fn local() -> Self {
        Self::Local(Mutex::new(HashSet::new()))
    }

    pub async fn redis(url: &str, namespace: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let connection = redis::aio::ConnectionManager::new(client).await?;
        Ok(Self::Redis {
            connection,
            namespace: namespace.to_string(),
        })
    }

    /// Takes the lock of one period; false when another replica has it.
    pub async fn acquire(&self, key: &str, ttl_ms: u64) -> Result<bool, redis::RedisError> {
        match self {
            Self::Local(taken) => Ok(taken.lock().expect("lock set").insert(key.to_string())),
            Self::Redis {
                connection,
                namespace,
            } => {
                let mut connection = connection.clone();
                let reply: Option<String> = redis::cmd("SET")
                    .arg(format!("{namespace}:cron:{key}"))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .query_async(&mut connection)
                    .await?;
                Ok(reply.is_some())
            }
        }
    }
}

/// Fires due schedules.
pub struct CronScheduler {
    pipelines: PipelineService,
    lock: CronLock,
    clock: SharedClock,
    /// The schedule index and when it was read (clock ms).
    index: tokio::sync::Mutex<Option<(u64, Vec<ScheduleIndexEntry>)>>,
    /// The last period this replica fired or saw fired, per (tenant, schedule).
    seen: Mutex<HashMap<(String, String), DateTime<Utc>>>,
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct TickReport {
    pub fired: Vec<String>,
    /// Periods another replica (or an earlier run of this one) fired already.
    pub skipped: usize,
}

fn to_datetime(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms as i64)
        .single()
        .unwrap_or_default()
}

impl CronScheduler {
    pub fn new(pipelines: PipelineService, lock: CronLock, clock: SharedClock) -> Self {
        Self {
            pipelines,
            lock,
            clock,
            index: tokio::sync::Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The schedule index, re-read when older than `INDEX_REFRESH_MS`.
    async fn entries(&self, now_ms: u64) -> PipelineResult<Vec<ScheduleIndexEntry>> {
        let mut cached = self.index.lock().await;
        if let Some((read_at, entries)) = cached.as_ref()
            && now_ms.saturating_sub(*read_at) < INDEX_REFRESH_MS
        {
            return Ok(entries.clone());
        }
        let system = self.pipelines.jobs().platform().system().clone();
        let mut entries = Vec::new();
        for key in system.list_keys("schedules/").await? {
            if let Some(entry) = system.get_json_opt::<ScheduleIndexEntry>(&key).await? {
                entries.push(entry);
            }
        }
        *cached = Some((now_ms, entries.clone()));
        Ok(entries)
    }

    /// Fires every due period once (reads tenant data only for schedules that are due).
    pub async fn tick(&self) -> PipelineResult<TickReport> {
        let now_ms = self.clock.now_ms();
        let now = to_datetime(now_ms);
        let platform = self.pipelines.jobs().platform().clone();
        let mut report = TickReport::default();
        for entry in self.entries(now_ms).await? {
            let Ok(tenant) = TenantId::parse(&entry.tenant) else {
                continue;
            };
            let Some(period) = latest_due(&entry.cron, entry.not_before, now) else {
                continue;
            };
            let seen_key = (entry.tenant.clone(), entry.name.clone());
            if self.seen.lock().expect("seen map").get(&seen_key) == Some(&period) {
                continue;
            }
            let active = match platform.tenant(&tenant).await {
                Ok(record) => record.state == TenantState::Active,
                Err(crate::platform::PlatformError::TenantNotFound(_)) => false,
                // A storage hiccup is not a reason to forget a schedule: try next tick.
                Err(error) => return Err(PipelineError::Invalid(error.to_string())),
            };
            match active {
                true => {}
                // An offboarded (or unknown) tenant's schedules go with it.
                false => {
                    platform
                        .system()
                        .delete(&index_key(&tenant, &entry.name))
                        .await?;
                    continue;
                }
            }
            let run_id = scheduled_run_id(&entry.name, period);
            // Held long enough to outlive any replica's clock skew for this period.
            let acquired = self
                .lock
                .acquire(&format!("{tenant}:{run_id}"), 24 * 3600 * 1000)
                .await
                .map_err(|e| PipelineError::Invalid(format!("cron lock: {e}")))?;
            self.seen.lock().expect("seen map").insert(seen_key, period);
            if !acquired {
                report.skipped += 1;
                continue;
            }
            let store = platform
                .tenant_store(&tenant)
                .await
                .map_err(|e| PipelineError::Invalid(e.to_string()))?;
            let Some(path) = ScheduleRecord::path(&entry.name) else {
                continue;
            };
            let schedule: ScheduleRecord = match store.get_json(&path).await {
                Ok(schedule) => schedule,
                Err(StorageError::NotFound(_)) => {
                    platform
                        .system()
                        .delete(&index_key(&tenant, &entry.name))
                        .await?;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let manifest = Manifest::from_spec(schedule.manifest.clone())?;
            let trigger = Trigger::Schedule {
                schedule: schedule.name.clone(),
                period,
            };
            match self
                .pipelines
                .start_run(&store, &manifest, run_id.clone(), trigger)
                .await
            {
                Ok(Some(_)) => {
                    tracing::info!(%tenant, run_id, "scheduled run fired");
                    report.fired.push(format!("{tenant}/{run_id}"));
                }
                Ok(None) => report.skipped += 1,
                Err(error) => {
                    tracing::warn!(%tenant, schedule = %schedule.name, %error, "scheduled run not started");
                }
            }
        }
        Ok(report)
    }

    /// Ticks every `interval` until `shutdown`.
    pub async fn run(self, interval: std::time::Duration, shutdown: CancellationToken) {
        every(interval, shutdown, "cron", || self.tick()).await;
    }
}

/// Runs `tick` every `interval` until `shutdown`; a failed tick is logged as `what`, and the
/// next one tries again.
pub async fn every<T, E, F, Fut>(
    interval: std::time::Duration,
    shutdown: CancellationToken,
    what: &str,
    mut tick: F,
) where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    loop {
        if let Err(error) = tick().await {
            tracing::warn!(%error, what, "tick failed");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cron: &str, not_before: &str) -> ScheduleRecord {
        let spec: ManifestV1 = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenantry/v1", "kind": "Pipeline", "metadata": {"name": "n"}, "steps": []
        }))
        .unwrap();
        ScheduleRecord {
            name: "n".into(),
            cron: cron.into(),
            manifest: spec,
            created_at: not_before.parse().unwrap(),
            not_before: not_before.parse().unwrap(),
        }
    }

    #[test]
    fn latest_due_is_the_last_period_not_every_missed_one() {
        let daily = record("0 2 * * *", "2026-01-01T00:00:00Z");
        assert_eq!(
            daily.latest_due("2026-01-01T01:59:59Z".parse().unwrap()),
            None
        );
        assert_eq!(
            daily.latest_due("2026-01-01T02:00:00Z".parse().unwrap()),
            Some("2026-01-01T02:00:00Z".parse().unwrap())
        );
        // Down for five days: one catch-up, the latest period.
        assert_eq!(
            daily.latest_due("2026-01-06T03:00:00Z".parse().unwrap()),
            Some("2026-01-06T02:00:00Z".parse().unwrap())
        );
        let minutely = record("* * * * *", "2026-01-01T00:00:00Z");
        assert_eq!(
            minutely.latest_due("2026-03-01T12:34:56Z".parse().unwrap()),
            Some("2026-03-01T12:34:00Z".parse().unwrap())
        );
    }

    #[test]
    fn run_ids_are_fixed_by_the_period() {
        let period: DateTime<Utc> = "2026-01-06T02:00:00Z".parse().unwrap();
        assert_eq!(
            scheduled_run_id("nightly", period),
            "s-nightly-20260106T020000"
        );
    }
}
