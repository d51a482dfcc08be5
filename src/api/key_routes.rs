//! API keys of the caller's tenant (tenant-admin only).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::extract::{ApiJson, ApiPath};
use crate::api::tenant_routes::NewKeyView;
use crate::api::{AppError, AppState, Caller, ErrorBody};
use crate::tenant::{Action, Role};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// `tenant-admin`, `developer`, `viewer` or `client`.
    pub role: Role,
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub key_id: String,
    pub role: Role,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Issues a key for the caller's tenant; the token is shown once.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKeyRequest, responses(
    (status = 201, body = NewKeyView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)
))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<NewKeyView>), AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ManageKeys).await?;
    if request.role == Role::PlatformAdmin {
        return Err(AppError::forbidden(
            "tenant keys cannot have the platform-admin role",
        ));
    }
    if request.label.len() > 100 {
        return Err(AppError::bad_request(
            "label must be at most 100 characters",
        ));
    }
    let issued = state
        .platform
        .keys()
        .issue(Some(&ctx.tenant), request.role, &request.label)
        .await?;
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "key.create",
            format!("key/{}", issued.key_id),
            "ok",
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewKeyView {
            key_id: issued.key_id,
            token: issued.token.expose().to_string(),
            role: issued.role,
            tenant: Some(ctx.tenant.to_string()),
        }),
    ))
}

/// Lists the tenant's keys (never their secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", responses(
    (status = 200, body = Vec<KeyView>), (status = 403, body = ErrorBody)
))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<KeyView>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ManageKeys).await?;
    let keys = state.platform.keys().list(&ctx.tenant).await?;
    Ok(Json(
        keys.into_iter()
            .map(|key| KeyView {
                key_id: key.key_id,
                role: key.role,
                label: key.label,
                created_at: key.created_at,
                revoked_at: key.revoked_at,
            })
            .collect(),
    ))
}

/// Revokes one of the tenant's keys; another tenant's key id is 404.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys", params(("key_id" = String, Path, description = "key id")), responses(
    (status = 204), (status = 404, body = ErrorBody)
))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key_id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ManageKeys).await?;
    if !state.platform.keys().revoke(&ctx.tenant, &key_id).await? {
        return Err(AppError::not_found("key"));
    }
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "key.revoke",
            format!("key/{key_id}"),
            "ok",
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
