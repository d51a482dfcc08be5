//! The caller's tenant's invoices: listed, and one month's as JSON or HTML.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::extract::{ApiPath, ApiQuery};
use crate::api::{AppError, AppState, Caller, ErrorBody};
use crate::billing::service::{InvoiceError, InvoiceSummary, list_invoices, stored_invoice};
use crate::tenant::Action;

impl From<InvoiceError> for AppError {
    fn from(error: InvoiceError) -> Self {
        match error {
            InvoiceError::Billing(error) => AppError::bad_request(error.to_string()),
            InvoiceError::Storage(error) => error.into(),
            InvoiceError::Platform(error) => error.into(),
            InvoiceError::NotBillable { .. } => AppError::not_found("invoice"),
            other => AppError::internal(other),
        }
    }
}

/// The tenant's invoices (tenant-admin).
#[utoipa::path(get, path = "/v1/invoices", tag = "billing", responses(
    (status = 200, body = Vec<InvoiceSummary>), (status = 403, body = ErrorBody)
))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<InvoiceSummary>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadAudit).await?;
    Ok(Json(list_invoices(&ctx.store).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct InvoiceFormat {
    /// `json` (default) or `html`.
    pub format: Option<String>,
}

/// One month's invoice, `YYYY-MM` (tenant-admin).
#[utoipa::path(get, path = "/v1/invoices/{period}", tag = "billing", params(InvoiceFormat), responses(
    (status = 200, description = "the invoice (JSON or HTML)"), (status = 404, body = ErrorBody)
))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(period): ApiPath<String>,
    ApiQuery(query): ApiQuery<InvoiceFormat>,
) -> Result<Response, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadAudit).await?;
    let (extension, content_type) = match query.format.as_deref() {
        None | Some("json") => ("json", "application/json"),
        Some("html") => ("html", "text/html; charset=utf-8"),
        Some(other) => {
            return Err(AppError::bad_request(format!(
                "format must be json or html, got {other:?}"
            )));
        }
    };
    let bytes = stored_invoice(&ctx.store, &period, extension)
        .await?
        .ok_or_else(|| AppError::not_found(format!("invoice for {period}")))?;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}
