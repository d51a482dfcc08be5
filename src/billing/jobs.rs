//! The billing cron's jobs, run by workers in the `batch` band:
//! - `storage_sample`: measures the bytes the tenant stores and records the day's
//!   `storage_bytes` level (id `storage:<day>`, so a rerun replaces, never adds);
//! - `rollup`: rolls up a day, an ISO week or a month, first catching up earlier periods that
//!   have no rollup yet (a scheduler that was down fires once; the job covers the gap), and
//!   after a day's rollup checks the tenant's quotas against its forecast;
//! - `invoice`: generates the month's invoice, and any earlier closed month's that is missing.
//!
//! Each writes what it did to `outputs/<job>/report.json`, late usage included.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::billing::rollup::{Rollup, period_end, roll_up, stored_starts};
use crate::billing::service::{InvoiceError, check_quotas, generate_invoice, month_bounds};
use crate::jobs::JobService;
use crate::storage::{RelativePath, StorageError, TenantStore};
use crate::usage::{Granularity, MICROS, Meter, UsageEvent, write_events};
use crate::worker::{HandlerError, HandlerRegistry, JobContext, JobHandler, JobOutput};

/// How far back a job catches up periods never rolled up (days, weeks, months) and invoices.
fn catch_up_days(granularity: Granularity) -> i64 {
    match granularity {
        Granularity::Day => 62,
        Granularity::Week => 26 * 7,
        Granularity::Month => 366,
    }
}
const CATCH_UP_MONTHS: u32 = 12;

/// What a billing job does, as its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum BillingTask {
    StorageSample {
        day: NaiveDate,
    },
    Rollup {
        granularity: Granularity,
        start: NaiveDate,
    },
    Invoice {
        period: String,
    },
}

impl BillingTask {
    pub fn kind(&self) -> &'static str {
        match self {
            BillingTask::StorageSample { .. } => "storage_sample",
            BillingTask::Rollup { .. } => "rollup",
            BillingTask::Invoice { .. } => "invoice",
        }
    }

    /// The job id of this task's one firing: `billing-<what>-<period>`.
    pub fn job_id(&self) -> String {
        match self {
            BillingTask::StorageSample { day } => format!("billing-storage-{day}"),
            BillingTask::Rollup { granularity, start } => {
                format!("billing-rollup-{}-{start}", granularity.as_str())
            }
            BillingTask::Invoice { period } => format!("billing-invoice-{period}"),
        }
    }
}

/// What a billing job did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BillingReport {
    pub rollups: Vec<Rollup>,
    pub invoices: Vec<String>,
    pub storage_bytes: Option<u64>,
    pub alerts: Vec<crate::billing::service::QuotaAlert>,
}

/// Billing work on one tenant: what a billing job's context offers. It acts on its own
/// tenant only.
pub struct TenantBilling {
    jobs: JobService,
    store: TenantStore,
}

fn retryable(error: impl std::fmt::Display) -> HandlerError {
    HandlerError::retryable(error.to_string())
}

fn invoice_failure(error: InvoiceError) -> HandlerError {
    match error {
        InvoiceError::Storage(error) => retryable(error),
        InvoiceError::Platform(error) => retryable(error),
        other => HandlerError::permanent(other.to_string()),
    }
}

impl TenantBilling {
    pub fn new(jobs: JobService, store: TenantStore) -> Self {
        Self { jobs, store }
    }

    fn now(&self) -> DateTime<Utc> {
        self.jobs.clock().now()
    }

    async fn created(&self) -> Result<NaiveDate, HandlerError> {
        Ok(self
            .jobs
            .platform()
            .tenant(self.store.tenant())
            .await
            .map_err(retryable)?
            .created_at
            .date_naive())
    }

    /// Records the bytes stored under the tenant's prefix as the `storage_bytes` level of `day`.
    pub async fn sample_storage(&self, day: NaiveDate) -> Result<u64, StorageError> {
        let bytes: u64 = self
            .store
            .list(None)
            .await?
            .iter()
            .map(|entry| entry.size)
            .sum();
        let now = self.now();
        let at = if now.date_naive() == day {
            now
        } else {
            day.and_hms_opt(12, 0, 0).unwrap_or_default().and_utc()
        };
        let event = UsageEvent {
            id: format!("storage:{day}"),
            meter: Meter::StorageBytes,
            quantity_micros: (bytes as i64).saturating_mul(MICROS),
            at,
            source: "storage_sample".to_string(),
            recorded_at: now,
        };
        write_events(&self.store, &format!("storage-{day}.parquet"), &[event]).await?;
        Ok(bytes)
    }

    /// Starts of the periods before `start` that have no rollup yet (oldest first), back to
    /// the tenant's creation and at most the catch-up limit.
    async fn missing_before(
        &self,
        granularity: Granularity,
        start: NaiveDate,
    ) -> Result<Vec<NaiveDate>, HandlerError> {
        let created = granularity.bucket(self.created().await?);
        let limit = granularity.bucket(start - Duration::days(catch_up_days(granularity)));
        let stored = stored_starts(&self.store, granularity)
            .await
            .map_err(retryable)?;
        let mut missing = Vec::new();
        let mut cursor = created.max(limit);
        while cursor < start {
            if !stored.contains(&cursor) {
                missing.push(cursor);
            }
            cursor = period_end(granularity, cursor) + Duration::days(1);
        }
        Ok(missing)
    }

    /// Rolls up the period starting at `start` and any earlier one never rolled up.
    pub async fn roll_up(
        &self,
        granularity: Granularity,
        start: NaiveDate,
    ) -> Result<Vec<Rollup>, HandlerError> {
        let grace = self.jobs.platform().settings().billing.grace;
        let now = self.now();
        let mut periods = self.missing_before(granularity, start).await?;
        periods.push(start);
        let mut rollups = Vec::new();
        for period in periods {
            rollups.push(
                roll_up(&self.store, granularity, period, now, grace)
                    .await
                    .map_err(retryable)?,
            );
        }
        Ok(rollups)
    }

    /// Raises the quota alerts the forecast of `day` calls for (once per meter and month).
    pub async fn check_quotas(
        &self,
        day: NaiveDate,
    ) -> Result<Vec<crate::billing::service::QuotaAlert>, HandlerError> {
        let forecasts = check_quotas(self.jobs.platform(), self.store.tenant(), day)
            .await
            .map_err(invoice_failure)?;
        let alerts: Vec<_> = forecasts.into_iter().filter_map(|f| f.new_alert).collect();
        for alert in &alerts {
            self.jobs.quota_alerts().raised(alert.meter.as_str());
        }
        Ok(alerts)
    }

    /// Generates `period`'s invoice, and before it every closed month since the tenant was
    /// created (at most a year back) that has none.
    pub async fn invoice(&self, period: &str) -> Result<Vec<String>, HandlerError> {
        let (first, _) =
            month_bounds(period).map_err(|e| HandlerError::permanent(e.to_string()))?;
        let created = self.created().await?.with_day(1).unwrap_or(first);
        let mut months = Vec::new();
        let mut month = first;
        for _ in 0..CATCH_UP_MONTHS {
            let Some(previous) = month.checked_sub_months(chrono::Months::new(1)) else {
                break;
            };
            if previous < created {
                break;
            }
            month = previous;
            let name = month.format("%Y-%m").to_string();
            let path = RelativePath::parse(&format!("reports/invoices/{name}.json"))
                .map_err(|e| HandlerError::permanent(e.to_string()))?;
            if !self.store.exists(&path).await.map_err(retryable)? {
                months.push(name);
            }
        }
        months.reverse();
        months.push(period.to_string());
        let mut numbers = Vec::new();
        for month in months {
            let invoice = generate_invoice(
                self.jobs.platform(),
                self.store.tenant(),
                &month,
                self.now(),
            )
            .await
            .map_err(invoice_failure)?;
            numbers.push(invoice.number);
        }
        Ok(numbers)
    }
}

/// Runs the payload's billing task.
struct BillingJob;

#[async_trait]
impl JobHandler for BillingJob {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError> {
        let task: BillingTask = serde_json::from_value(ctx.lease.payload.clone())
            .map_err(|e| HandlerError::permanent(format!("invalid billing payload: {e}")))?;
        let billing = ctx.billing();
        let mut report = BillingReport::default();
        match &task {
            BillingTask::StorageSample { day } => {
                report.storage_bytes = Some(billing.sample_storage(*day).await.map_err(retryable)?);
            }
            BillingTask::Rollup { granularity, start } => {
                report.rollups = billing.roll_up(*granularity, *start).await?;
                if *granularity == Granularity::Day {
                    report.alerts = billing.check_quotas(*start).await?;
                }
            }
            BillingTask::Invoice { period } => {
                report.invoices = billing.invoice(period).await?;
            }
        }
        let output = ctx
            .output_dir()
            .join("report.json")
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        let bytes = serde_json::to_vec_pretty(&report).unwrap_or_default();
        ctx.store.put(&output, bytes).await.map_err(retryable)?;
        Ok(JobOutput {
            output_location_opt: Some(output.to_string()),
            ..JobOutput::default()
        })
    }
}

/// The billing kinds: created by the billing cron only.
pub const KINDS: [&str; 3] = ["storage_sample", "rollup", "invoice"];

/// Registers the billing kinds.
pub fn register(registry: &mut HandlerRegistry) {
    let handler: Arc<dyn JobHandler> = Arc::new(BillingJob);
    for kind in KINDS {
        registry.register(kind, handler.clone());
    }
}
