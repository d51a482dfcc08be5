//! Usage series: a tenant's own (`GET /v1/usage`) and, for operators, every tenant's
//! (`GET /v1/admin/usage`). Quantities are exact decimals; days are UTC.

use axum::Json;
use axum::extract::State;
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::api::extract::ApiQuery;
use crate::api::{AppError, AppState, Caller, ErrorBody};
use crate::tenant::{Action, TenantState};
use crate::usage::{Granularity, Meter, UsagePoint, read_events_between, series};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UsageQuery {
    /// One meter (`api_calls`, `rows_scored`, `tokens_in`, ...); every meter when omitted.
    pub meter: Option<String>,
    /// First day, `YYYY-MM-DD` (default: the first of this month).
    pub from: Option<String>,
    /// Last day, inclusive (default: today).
    pub to: Option<String>,
    /// `day` (default), `week` or `month`.
    pub granularity: Option<Granularity>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView {
    pub tenant: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub points: Vec<UsagePoint>,
}

struct Range {
    meter: Option<Meter>,
    from: NaiveDate,
    to: NaiveDate,
    granularity: Granularity,
}

fn range(query: &UsageQuery, now_ms: u64) -> Result<Range, AppError> {
    let today = chrono::DateTime::from_timestamp_millis(now_ms as i64)
        .unwrap_or_default()
        .date_naive();
    let day = |text: &Option<String>, name: &str, default: NaiveDate| match text {
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| AppError::bad_request(format!("{name} must be YYYY-MM-DD, got {text:?}"))),
        None => Ok(default),
    };
    let from = day(&query.from, "from", today.with_day(1).unwrap_or(today))?;
    let to = day(&query.to, "to", today)?;
    if to < from {
        return Err(AppError::bad_request("to is before from"));
    }
    if (to - from).num_days() > 3 * 366 {
        return Err(AppError::bad_request(
            "ask for at most three years at a time",
        ));
    }
    let meter = match &query.meter {
        Some(name) => Some(Meter::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Meter::ALL.iter().map(|m| m.as_str()).collect();
            AppError::bad_request(format!(
                "unknown meter {name:?} (known: {})",
                known.join(", ")
            ))
        })?),
        None => None,
    };
    Ok(Range {
        meter,
        from,
        to,
        granularity: query.granularity.unwrap_or(Granularity::Day),
    })
}

/// The caller's tenant's usage, bucketed.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery), responses(
    (status = 200, body = UsageView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)
))]
pub async fn tenant_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageView>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    let range = range(&query, state.jobs.clock().now_ms())?;
    let events = read_events_between(&ctx.store, range.from, range.to).await?;
    Ok(Json(UsageView {
        tenant: ctx.tenant.to_string(),
        from: range.from,
        to: range.to,
        granularity: range.granularity,
        points: series(&events, range.meter, range.granularity),
    }))
}

/// Every active tenant's usage, bucketed (platform-admin).
#[utoipa::path(get, path = "/v1/admin/usage", tag = "usage", params(UsageQuery), responses(
    (status = 200, body = Vec<UsageView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)
))]
pub async fn admin_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<Vec<UsageView>>, AppError> {
    caller.require(Action::ManageTenants)?;
    let range = range(&query, state.jobs.clock().now_ms())?;
    let mut views = Vec::new();
    for record in state.platform.list_tenants().await? {
        if record.state != TenantState::Active {
            continue;
        }
        let store = state.platform.tenant_store(&record.id).await?;
        let events = read_events_between(&store, range.from, range.to).await?;
        views.push(UsageView {
            tenant: record.id.to_string(),
            from: range.from,
            to: range.to,
            granularity: range.granularity,
            points: series(&events, range.meter, range.granularity),
        });
    }
    Ok(Json(views))
}
