//! Models of the caller's tenant: list, show (versions with metrics and lineage, pins),
//! promote and roll back a label's pin. The registry lives in the tenant's own store, so a
//! model of another tenant is a plain 404. Operators list the shared bases and roll a new
//! base out to every tenant.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::extract::{ApiJson, ApiPath};
use crate::api::{AppError, AppState, Caller, ErrorBody};
use crate::model::base::BaseMeta;
use crate::model::registry::{DEFAULT_LABEL, ModelSummary, PinAction, Pins};
use crate::model::{ModelError, ModelRegistry, VersionMeta};
use crate::pipeline::finetune::{RolloutJob, queue_base_rollout};
use crate::tenant::Action;

impl From<ModelError> for AppError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::NotFound(what) => AppError::not_found(what),
            ModelError::Invalid(message) => AppError::bad_request(message),
            ModelError::Conflict(message) => AppError::conflict(message),
            ModelError::Storage(error) => error.into(),
            ModelError::Unavailable(message) | ModelError::Interrupted(message) => AppError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message,
            ),
            other => AppError::internal(other),
        }
    }
}

/// One model with every version and its pins.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelView {
    pub name: String,
    pub versions: Vec<VersionMeta>,
    pub pins: Pins,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PromoteRequest {
    pub version: String,
    /// Deployment label (`production` when omitted).
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RollbackRequest {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RolloutRequest {
    /// The base version to roll out.
    pub version: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutReport {
    pub version: String,
    pub queued: Vec<RolloutJob>,
}

/// A JSON body, read only after the model was found in the caller's registry: another
/// tenant's request learns nothing from body errors. An empty body is `{}`.
fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, AppError> {
    let body = body?;
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(text).map_err(|error| {
        AppError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("invalid request body: {error}"),
        )
    })
}

/// The tenant's models with their versions and pins.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, body = Vec<ModelSummary>), (status = 403, body = ErrorBody)))]
pub async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ModelSummary>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    let registry = ModelRegistry::new(ctx.store, state.platform.base_models().clone());
    Ok(Json(registry.list().await?))
}

/// One model: every version's metrics, lineage and promotion decision, and the pins.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path)),
    responses((status = 200, body = ModelView), (status = 404, body = ErrorBody)))]
pub async fn show_model(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ModelView>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    let registry = ModelRegistry::new(ctx.store, state.platform.base_models().clone());
    let versions = registry.versions(&name).await?;
    let pins = registry.pins(&name).await?;
    Ok(Json(ModelView {
        name,
        versions,
        pins,
    }))
}

/// Points a label (`production` by default) at a version.
#[utoipa::path(post, path = "/v1/models/{name}/promote", tag = "models",
    params(("name" = String, Path)), request_body = PromoteRequest,
    responses((status = 200, body = Pins), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn promote_model(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Pins>, AppError> {
    change_pin(&state, caller, &name, body, PinAction::Promote).await
}

/// Points a label back at the version it served before its last promotion.
#[utoipa::path(post, path = "/v1/models/{name}/rollback", tag = "models",
    params(("name" = String, Path)), request_body = RollbackRequest,
    responses((status = 200, body = Pins), (status = 404, body = ErrorBody), (status = 409, description = "nothing to roll back to", body = ErrorBody)))]
pub async fn rollback_model(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Pins>, AppError> {
    change_pin(&state, caller, &name, body, PinAction::Rollback).await
}

/// Promote or roll back: the model must exist in the caller's registry before the body is
/// read; the change is audited.
async fn change_pin(
    state: &AppState,
    caller: Caller,
    name: &str,
    body: Result<Bytes, BytesRejection>,
    action: PinAction,
) -> Result<Json<Pins>, AppError> {
    let ctx = caller.tenant_ctx(state, Action::WriteData).await?;
    let registry = ModelRegistry::new(ctx.store.clone(), state.platform.base_models().clone());
    registry.versions(name).await?;
    let (pins, label, target) = match action {
        PinAction::Promote => {
            let request: PromoteRequest = json_body(body)?;
            let label = request.label.unwrap_or_else(|| DEFAULT_LABEL.to_string());
            let reason = request
                .reason
                .as_deref()
                .unwrap_or("promoted through the API");
            let pins = registry
                .promote(name, &request.version, &label, reason)
                .await?;
            (pins, label, request.version)
        }
        PinAction::Rollback => {
            let request: RollbackRequest = json_body(body)?;
            let label = request.label.unwrap_or_else(|| DEFAULT_LABEL.to_string());
            let reason = request
                .reason
                .as_deref()
                .unwrap_or("rolled back through the API");
            let pins = registry.rollback(name, &label, reason).await?;
            let target = pins.labels.get(&label).cloned().unwrap_or_default();
            (pins, label, target)
        }
    };
    // this process serves the new pin from the next request on
    state.serving.invalidate(&ctx.tenant, name);
    let verb = match action {
        PinAction::Promote => "model.promote",
        PinAction::Rollback => "model.rollback",
    };
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            verb,
            format!("model/{name}/{label}={target}"),
            "ok",
        )
        .await?;
    Ok(Json(pins))
}

/// The platform's shared base versions (operators).
#[utoipa::path(get, path = "/v1/admin/bases", tag = "models",
    responses((status = 200, body = Vec<BaseMeta>), (status = 403, body = ErrorBody)))]
pub async fn list_bases(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<BaseMeta>>, AppError> {
    caller.require(Action::ManageTenants)?;
    Ok(Json(state.platform.base_models().list().await?))
}

/// Makes a base version current and queues a re-fine-tune of every tenant's pinned
/// shared-base variant over it; each pin moves only if the new variant is not worse on the
/// pinned version's frozen holdout (operators).
#[utoipa::path(post, path = "/v1/admin/bases/rollout", tag = "models",
    request_body = RolloutRequest,
    responses((status = 200, body = RolloutReport), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn rollout_base(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<RolloutRequest>,
) -> Result<Json<RolloutReport>, AppError> {
    caller.require(Action::ManageTenants)?;
    state
        .platform
        .base_models()
        .set_current(&request.version)
        .await?;
    let queued = queue_base_rollout(&state.jobs, &request.version).await?;
    Ok(Json(RolloutReport {
        version: request.version,
        queued,
    }))
}
