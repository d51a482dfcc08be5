//! Invoices of a tenant for a month: its usage rated under the billing plan of its tenancy plan,
//! stored as JSON and HTML under the tenant's `reports/invoices/`.
//!
//! Numbers are gapless and never duplicated by construction: the invoices of a closed month
//! are numbered `INV-YYYY-MM-NNNN` by the position of the tenant's id among every tenant
//! billable that month (created before it ended, not offboarded before it began), a set that
//! cannot change once the month is over. Regenerating an invoice gives the same number and the
//! same bytes. A month still running gets a `DRAFT-` number.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::billing::invoice::{BillingError, BillingPlan, Component, Invoice, Segment, rate};
use crate::billing::pricing::{Tier, TierMode};
use crate::platform::{Platform, PlatformError};
use crate::storage::{RelativePath, StorageError, TenantStore};
use crate::tenant::{TenantId, TenantRecord, TenantState};
use crate::usage::{Meter, read_events_between};

#[derive(Debug, thiserror::Error)]
pub enum InvoiceError {
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("tenant {tenant} was not a tenant during {period}")]
    NotBillable { tenant: TenantId, period: String },
    #[error("no billing plan for tenancy plan {0:?}")]
    NoPlan(String),
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).expect("a literal decimal")
}

fn tiers(list: &[(Option<&str>, &str)]) -> Vec<Tier> {
    list.iter()
        .map(|(up_to, price)| Tier {
            up_to: up_to.map(dec),
            unit_price: dec(price),
            flat_fee: Decimal::ZERO,
        })
        .collect()
}

/// The billing plan of a built-in tenancy plan, at its version.
pub fn billing_plan(plan: &str, version: u32) -> Option<BillingPlan> {
    let components = match plan {
        // pay per use: the first 10k calls and 100k rows each month are free
        "free" => vec![
            Component::Metered {
                meter: Meter::ApiCalls,
                mode: TierMode::Graduated,
                tiers: tiers(&[(Some("10000"), "0"), (None, "0.0005")]),
            },
            Component::Metered {
                meter: Meter::RowsScored,
                mode: TierMode::Graduated,
                tiers: tiers(&[(Some("100000"), "0"), (None, "0.0001")]),
            },
        ],
        // a subscription with 5M rows included, graduated overage; calls per request; tokens
        "pro" => vec![
            Component::Subscription {
                fee: dec("499"),
                meter: Meter::RowsScored,
                included: dec("5000000"),
                overage: tiers(&[(Some("20000000"), "0.00008"), (None, "0.00005")]),
            },
            Component::Metered {
                meter: Meter::ApiCalls,
                mode: TierMode::Graduated,
                tiers: tiers(&[(Some("1000000"), "0"), (None, "0.0002")]),
            },
            Component::Tokens {
                input_per_million: dec("0.50"),
                output_per_million: dec("1.50"),
            },
        ],
        // usage with a monthly minimum
        "enterprise" | "enterprise-isolated" => vec![
            Component::Metered {
                meter: Meter::RowsScored,
                mode: TierMode::Graduated,
                tiers: tiers(&[(Some("100000000"), "0.00004"), (None, "0.00002")]),
            },
            Component::Metered {
                meter: Meter::ApiCalls,
                mode: TierMode::Graduated,
                tiers: tiers(&[(None, "0.0001")]),
            },
            Component::Metered {
                meter: Meter::GpuSeconds,
                mode: TierMode::Graduated,
                tiers: tiers(&[(None, "0.0006")]),
            },
            Component::Metered {
                meter: Meter::TrainingSeconds,
                mode: TierMode::Graduated,
                tiers: tiers(&[(None, "0.0002")]),
            },
        ],
        _ => return None,
    };
    Some(BillingPlan {
        name: plan.to_string(),
        version,
        currency: "USD".to_string(),
        minor_units: 2,
        components,
        monthly_minimum: matches!(plan, "enterprise" | "enterprise-isolated").then(|| dec("5000")),
    })
}

/// First and last day of `period`.
pub fn month_bounds(period: &str) -> Result<(NaiveDate, NaiveDate), BillingError> {
    let days = crate::billing::invoice::days_in_month(period)?;
    let first = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .map_err(|_| BillingError::Period(period.to_string()))?;
    Ok((first, first + chrono::Duration::days(i64::from(days) - 1)))
}

/// The days of `period` the tenant was a tenant, if any.
fn billable_days(record: &TenantRecord, first: NaiveDate, last: NaiveDate) -> Option<(u32, u32)> {
    let created = record.created_at.date_naive();
    if created > last {
        return None;
    }
    let end = match record.state {
        TenantState::Offboarded | TenantState::Offboarding => record.updated_at.date_naive(),
        _ => last,
    };
    if end < first {
        return None;
    }
    Some((created.max(first).day(), end.min(last).day()))
}

/// Rates `record`'s usage of `period` as invoice `number` (nothing is stored): each run of
/// days under one plan is a segment billed with that plan's prorated fees and quotas, and only
/// usage recorded within its day's grace period counts (the rest is reported by the rollups).
/// `None` when it was not a tenant that month. Returns the usage totals too.
async fn rate_tenant_month(
    platform: &Platform,
    record: &TenantRecord,
    period: &str,
    number: &str,
) -> Result<Option<(BTreeMap<Meter, Decimal>, Invoice)>, InvoiceError> {
    let (first, last) = month_bounds(period)?;
    let Some((first_day, last_day)) = billable_days(record, first, last) else {
        return Ok(None);
    };
    let grace = platform.settings().billing.grace;
    let store = platform.tenant_store(&record.id).await?;
    let events: Vec<_> = read_events_between(&store, first, last)
        .await?
        .into_iter()
        .filter(|event| event.on_time(grace))
        .collect();
    let mut segments: Vec<Segment> = Vec::new();
    let mut plans = Vec::new();
    for day in first_day..=last_day {
        let date = first.with_day(day).unwrap_or(first);
        let plan = record.plan_on(date);
        match (segments.last_mut(), plans.last()) {
            (Some(segment), Some(previous)) if *previous == plan => segment.last_day = day,
            _ => {
                segments.push(Segment {
                    plan: billing_plan(&plan.name, plan.version)
                        .ok_or_else(|| InvoiceError::NoPlan(plan.name.clone()))?,
                    first_day: day,
                    last_day: day,
                    usage: BTreeMap::new(),
                });
                plans.push(plan);
            }
        }
    }
    let mut usage = BTreeMap::new();
    for event in &events {
        // usage dated outside the tenancy (clock skew at onboarding or offboarding) is billed
        // with the nearest day's plan, never dropped
        let day = event.at.day().clamp(first_day, last_day);
        let quantity = Decimal::new(event.quantity_micros, 6);
        *usage.entry(event.meter).or_insert(Decimal::ZERO) += quantity;
        if let Some(segment) = segments
            .iter_mut()
            .find(|s| s.first_day <= day && day <= s.last_day)
        {
            *segment.usage.entry(event.meter).or_insert(Decimal::ZERO) += quantity;
        }
    }
    let invoice = rate(number, record.id.as_str(), period, &segments)?;
    Ok(Some((usage, invoice)))
}

/// Every billable tenant's cost, shared cost and margin for `period` (operators).
pub async fn cost_report(
    platform: &Platform,
    period: &str,
    prices: &crate::billing::costs::UnitPrices,
) -> Result<crate::billing::costs::CostReport, InvoiceError> {
    let days = Decimal::from(crate::billing::invoice::days_in_month(period)?);
    let mut months = BTreeMap::new();
    for record in platform.list_tenants().await? {
        if record.state == TenantState::Offboarded {
            // its usage went with its data; nothing is left to rate
            continue;
        }
        let Some((usage, invoice)) =
            rate_tenant_month(platform, &record, period, "PREVIEW").await?
        else {
            continue;
        };
        // storage_bytes is a level sampled once a day: the month's average of the samples,
        // days without a sample counting as empty
        let gib = Decimal::from(1u64 << 30);
        let average_gib = usage.get(&Meter::StorageBytes).copied().unwrap_or_default() / days / gib;
        months.insert(
            record.id.to_string(),
            crate::billing::costs::TenantMonth {
                usage,
                average_gib,
                revenue: invoice.total,
            },
        );
    }
    Ok(crate::billing::costs::attribute(period, prices, &months))
}

/// A projected quota exhaustion, recorded at most once per tenant, meter, threshold and month.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct QuotaAlert {
    pub tenant: String,
    pub period: String,
    pub meter: Meter,
    /// `included`: the plan's monthly quota of the meter.
    pub threshold: String,
    pub quota: f64,
    pub used: f64,
    pub projected_date: NaiveDate,
    pub days: u32,
    pub trend_per_day: f64,
}

/// What the forecast of one meter concluded, and whether it raised a new alert.
#[derive(Debug, Clone, Serialize)]
pub struct MeterForecast {
    pub meter: Meter,
    pub quota: f64,
    pub used: f64,
    pub projection: crate::billing::forecast::Projection,
    /// The alert raised now (`None` when there is nothing to alert or it was raised before).
    pub new_alert: Option<QuotaAlert>,
}

/// Projects each metered quota of the tenant's plan (the included units of a subscription)
/// from this month's daily usage up to `today`; a projected exhaustion within 30 days and
/// before the month ends writes an alert record (once per meter and month, under
/// `reports/alerts/`) and logs it.
pub async fn check_quotas(
    platform: &Platform,
    tenant: &TenantId,
    today: NaiveDate,
) -> Result<Vec<MeterForecast>, InvoiceError> {
    use crate::billing::forecast::{Projection, project};
    let period = today.format("%Y-%m").to_string();
    let (first, last) = month_bounds(&period)?;
    let record = platform.tenant(tenant).await?;
    let plan = billing_plan(&record.plan.name, record.plan.version)
        .ok_or_else(|| InvoiceError::NoPlan(record.plan.name.clone()))?;
    let store = platform.tenant_store(tenant).await?;
    let events = read_events_between(&store, first, today).await?;
    let mut forecasts = Vec::new();
    for component in &plan.components {
        let Component::Subscription {
            meter, included, ..
        } = component
        else {
            continue;
        };
        let quota = f64::try_from(*included).unwrap_or(f64::MAX);
        let mut daily = vec![0.0; (today - first).num_days() as usize + 1];
        for event in events.iter().filter(|e| e.meter == *meter) {
            let day = (event.at.date_naive() - first).num_days() as usize;
            if let Some(slot) = daily.get_mut(day) {
                *slot += event.quantity_micros as f64 / 1e6;
            }
        }
        let used: f64 = daily.iter().sum();
        let days_left = (last - today).num_days() as u32;
        let projection = project(&daily, quota, days_left);
        let mut new_alert = None;
        if let Projection::Exhaustion { days, trend, .. } = &projection {
            let alert = QuotaAlert {
                tenant: tenant.to_string(),
                period: period.clone(),
                meter: *meter,
                threshold: "included".to_string(),
                quota,
                used,
                projected_date: today + chrono::Duration::days(i64::from(*days)),
                days: *days,
                trend_per_day: *trend,
            };
            let path = RelativePath::parse(&format!(
                "reports/alerts/{period}/{}-included.json",
                meter.as_str()
            ))
            .map_err(StorageError::from)?;
            let bytes = serde_json::to_vec_pretty(&alert).unwrap_or_default();
            match store.put_if_absent(&path, bytes).await {
                Ok(()) => {
                    tracing::warn!(%tenant, meter = meter.as_str(), days, projected = %alert.projected_date, "projected quota exhaustion");
                    new_alert = Some(alert);
                }
                Err(StorageError::AlreadyExists(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        forecasts.push(MeterForecast {
            meter: *meter,
            quota,
            used,
            projection,
            new_alert,
        });
    }
    Ok(forecasts)
}

/// A stored invoice, as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InvoiceSummary {
    pub period: String,
    pub number: String,
    pub currency: String,
    pub total: String,
}

fn invoice_path(period: &str, extension: &str) -> Result<RelativePath, StorageError> {
    Ok(RelativePath::parse(&format!(
        "reports/invoices/{period}.{extension}"
    ))?)
}

/// Generates (or regenerates) `tenant`'s invoice for `period` and stores it.
pub async fn generate_invoice(
    platform: &Platform,
    tenant: &TenantId,
    period: &str,
    now: DateTime<Utc>,
) -> Result<Invoice, InvoiceError> {
    let (_, last) = month_bounds(period)?;
    let record = platform.tenant(tenant).await?;
    let number = invoice_number(platform, tenant, period, last, now).await?;
    let (_, invoice) = rate_tenant_month(platform, &record, period, &number)
        .await?
        .ok_or_else(|| InvoiceError::NotBillable {
            tenant: tenant.clone(),
            period: period.to_string(),
        })?;
    store_invoice(&platform.tenant_store(tenant).await?, &invoice).await?;
    Ok(invoice)
}

async fn invoice_number(
    platform: &Platform,
    tenant: &TenantId,
    period: &str,
    last: NaiveDate,
    now: DateTime<Utc>,
) -> Result<String, InvoiceError> {
    if now.date_naive() <= last {
        return Ok(format!("DRAFT-{period}-{tenant}"));
    }
    let (first, _) = month_bounds(period)?;
    let mut billable: Vec<TenantId> = platform
        .list_tenants()
        .await?
        .into_iter()
        .filter(|record| billable_days(record, first, last).is_some())
        .map(|record| record.id)
        .collect();
    billable.sort();
    let position =
        billable
            .iter()
            .position(|id| id == tenant)
            .ok_or_else(|| InvoiceError::NotBillable {
                tenant: tenant.clone(),
                period: period.to_string(),
            })?;
    Ok(format!("INV-{period}-{:04}", position + 1))
}

async fn store_invoice(store: &TenantStore, invoice: &Invoice) -> Result<(), StorageError> {
    store
        .put(&invoice_path(&invoice.period, "json")?, invoice.to_json())
        .await?;
    store
        .put(&invoice_path(&invoice.period, "html")?, invoice.to_html())
        .await
}

/// The tenant's stored invoices, oldest first.
pub async fn list_invoices(store: &TenantStore) -> Result<Vec<InvoiceSummary>, StorageError> {
    let prefix = RelativePath::parse("reports/invoices")?;
    let mut summaries = Vec::new();
    for entry in store.list(Some(&prefix)).await? {
        if !entry.path.ends_with(".json") {
            continue;
        }
        let value: serde_json::Value = store.get_json(&RelativePath::parse(&entry.path)?).await?;
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
        summaries.push(InvoiceSummary {
            period: text("period"),
            number: text("number"),
            currency: text("currency"),
            total: text("total"),
        });
    }
    summaries.sort_by(|a, b| a.period.cmp(&b.period));
    Ok(summaries)
}

/// A stored invoice's bytes (`json` or `html`), if there is one.
pub async fn stored_invoice(
    store: &TenantStore,
    period: &str,
    extension: &str,
) -> Result<Option<bytes::Bytes>, InvoiceError> {
    month_bounds(period)?;
    match store.get(&invoice_path(period, extension)?).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::builtin_plan_names;

    #[test]
    fn every_tenancy_plan_has_a_valid_billing_plan() {
        for name in builtin_plan_names() {
            let plan = billing_plan(name, 1).unwrap();
            assert!(plan.check().is_ok(), "{name}");
        }
        assert!(billing_plan("platinum", 1).is_none());
    }
}
