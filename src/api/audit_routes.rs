//! The tenant's audit log (tenant-admin only).

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::api::{AppError, AppState, Caller, ErrorBody};
use crate::audit::AuditRecord;
use crate::tenant::Action;

/// Lists the tenant's audit records in order.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", responses(
    (status = 200, body = Vec<AuditRecord>), (status = 403, body = ErrorBody)
))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<AuditRecord>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadAudit).await?;
    let records = state
        .platform
        .audit()
        .read(&ctx.store)
        .await
        .map_err(AppError::internal)?;
    Ok(Json(records))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditVerifyView {
    pub intact: bool,
    pub records: usize,
    pub head_seq: u64,
    pub problems: Vec<String>,
}

/// Verifies the tenant's hash chain.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", responses(
    (status = 200, body = AuditVerifyView), (status = 403, body = ErrorBody)
))]
pub async fn verify_audit(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AuditVerifyView>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadAudit).await?;
    let report = state
        .platform
        .audit()
        .verify(&ctx.store)
        .await
        .map_err(AppError::internal)?;
    Ok(Json(AuditVerifyView {
        intact: report.is_intact(),
        records: report.records,
        head_seq: report.head_seq,
        problems: report
            .problems
            .iter()
            .map(|p| format!("#{}: {}", p.seq, p.problem))
            .collect(),
    }))
}
