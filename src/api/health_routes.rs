//! Liveness, readiness and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::api::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: object storage answers.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "ready", body = String),
    (status = 503, description = "storage unavailable", body = String)
))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.platform.storage_ready().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
    }
}

pub async fn openapi_document(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(state.openapi.as_ref().clone())
}

/// Prometheus metrics: queue depth, parked tenants, dispatch share, queue wait (platform-admin).
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "Prometheus text format", body = String),
    (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody)
))]
pub async fn metrics(
    State(state): State<AppState>,
    caller: crate::api::Caller,
) -> Result<([(axum::http::header::HeaderName, &'static str); 1], String), crate::api::AppError> {
    caller.require(crate::tenant::Action::ManageTenants)?;
    let mut text = state.jobs.render_metrics().await?;
    text.push_str(&state.serving.render_metrics());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    ))
}
