//! Tenant onboarding and offboarding (platform-admin only).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::auth::actor_of;
use crate::api::extract::{ApiJson, ApiPath};
use crate::api::{AppError, AppState, Caller, ErrorBody};
use crate::tenant::{
    Action, OffboardReport, Plan, PlanPeriod, TenantId, TenantRecord, TenantState,
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// Lowercase slug, 3-40 characters.
    pub id: String,
    pub name: String,
    /// `free`, `pro`, `enterprise` or `enterprise-isolated`.
    pub plan: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub plan: Plan,
    pub state: TenantState,
    pub created_at: DateTime<Utc>,
    pub pool_placement: String,
    /// When `plan` took effect.
    pub plan_since: DateTime<Utc>,
    /// Earlier plans, oldest first (invoices bill each for its days).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan_history: Vec<PlanPeriod>,
}

impl From<TenantRecord> for TenantView {
    fn from(record: TenantRecord) -> Self {
        Self {
            id: record.id.to_string(),
            name: record.name,
            plan: record.plan,
            state: record.state,
            plan_since: record.plan_since.unwrap_or(record.created_at),
            created_at: record.created_at,
            pool_placement: record.pool_placement,
            plan_history: record.plan_history,
        }
    }
}

/// A key's secret, returned exactly once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewKeyView {
    pub key_id: String,
    pub token: String,
    pub role: crate::tenant::Role,
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreateTenantResponse {
    pub tenant: TenantView,
    pub admin_key: NewKeyView,
    pub onboarding_ms: f64,
    pub smoke_check_ms: f64,
}

/// Onboards a tenant in one call and returns its first tenant-admin key (shown once).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenantRequest, responses(
    (status = 201, body = CreateTenantResponse),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)
))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateTenantRequest>,
) -> Result<(StatusCode, Json<CreateTenantResponse>), AppError> {
    caller.require(Action::ManageTenants)?;
    let id = TenantId::parse(&request.id).map_err(|e| AppError::bad_request(e.to_string()))?;
    if request.name.trim().is_empty() || request.name.len() > 200 {
        return Err(AppError::bad_request("name must be 1-200 characters"));
    }
    let report = state
        .platform
        .onboard(&id, request.name.trim(), &request.plan, actor_of(&caller.0))
        .await?;
    let key = report.admin_key;
    Ok((
        StatusCode::CREATED,
        Json(CreateTenantResponse {
            tenant: report.tenant.into(),
            admin_key: NewKeyView {
                key_id: key.key_id,
                token: key.token.expose().to_string(),
                role: key.role,
                tenant: key.tenant.map(|t| t.to_string()),
            },
            onboarding_ms: report.elapsed_ms,
            smoke_check_ms: report.smoke_check_ms,
        }),
    ))
}

/// Lists every tenant.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", responses(
    (status = 200, body = Vec<TenantView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TenantView>>, AppError> {
    caller.require(Action::ManageTenants)?;
    let tenants = state.platform.list_tenants().await?;
    Ok(Json(tenants.into_iter().map(TenantView::from).collect()))
}

fn parse_id(id: &str) -> Result<TenantId, AppError> {
    // An id that cannot exist is answered exactly like a missing one.
    TenantId::parse(id).map_err(|_| AppError::not_found("tenant"))
}

/// Shows one tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "tenant id")), responses(
    (status = 200, body = TenantView), (status = 404, body = ErrorBody)
))]
pub async fn show_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantView>, AppError> {
    caller.require(Action::ManageTenants)?;
    let record = state.platform.tenant(&parse_id(&id)?).await?;
    Ok(Json(record.into()))
}

/// Offboards a tenant: deletes all its data, shreds its key, revokes its keys, verifies.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "tenant id")), responses(
    (status = 200, body = OffboardReport), (status = 404, body = ErrorBody)
))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OffboardReport>, AppError> {
    caller.require(Action::ManageTenants)?;
    let id = parse_id(&id)?;
    // Refuse and cancel work first, then delete data and shred the key.
    state.platform.tenant(&id).await?;
    let cancelled = state.jobs.forget_tenant(&id).await?;
    tracing::info!(tenant = %id, cancelled, "queue state of the tenant dropped");
    let report = state.platform.offboard(&id, actor_of(&caller.0)).await?;
    Ok(Json(report))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlanRequest {
    /// `free`, `pro`, `enterprise` or `enterprise-isolated`.
    pub plan: String,
}

/// Moves a tenant to another plan from now on. The month's invoice bills each plan for its
/// days, with subscription fees, quotas and minimums prorated.
#[utoipa::path(put, path = "/v1/tenants/{id}/plan", tag = "tenants", request_body = ChangePlanRequest,
    params(("id" = String, Path, description = "tenant id")), responses(
    (status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)
))]
pub async fn change_plan(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ChangePlanRequest>,
) -> Result<Json<TenantView>, AppError> {
    caller.require(Action::ManageTenants)?;
    let id = parse_id(&id)?;
    let now = state.jobs.clock().now();
    let record = state
        .platform
        .change_plan(&id, &request.plan, now, actor_of(&caller.0))
        .await?;
    Ok(Json(record.into()))
}
