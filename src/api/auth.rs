//! The API-key extractor: every request's principal comes from its key, never from its body.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::api::{AppError, AppState};
use crate::audit::Actor;
use crate::storage::TenantStore;
use crate::tenant::{Action, Principal, TenantId};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// A tenant-scoped request context: the caller and its tenant's store.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    pub principal: Principal,
    pub tenant: TenantId,
    pub store: TenantStore,
}

impl TenantCtx {
    pub fn actor(&self) -> Actor {
        actor_of(&self.principal)
    }
}

pub fn actor_of(principal: &Principal) -> Actor {
    Actor {
        key_id: principal.key_id.clone(),
        role: principal.role.as_str().to_string(),
    }
}

/// The API key a request presents: `Authorization: Bearer ...` or `x-api-key`.
pub(crate) fn presented_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let text = value.to_str().ok()?;
        return text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim);
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = presented_key(&parts.headers).ok_or_else(AppError::unauthorized)?;
        let principal = state.platform.authenticate(token).await?;
        let span = tracing::Span::current();
        span.record("key_id", principal.key_id.as_str());
        if let Some(tenant) = &principal.tenant_opt {
            span.record("tenant", tenant.as_str());
        }
        Ok(Caller(principal))
    }
}

impl Caller {
    /// Fails with 403 unless the caller's role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), AppError> {
        if self.0.role.allows(action) {
            Ok(())
        } else {
            Err(AppError::forbidden(format!(
                "role {} may not do this",
                self.0.role.as_str()
            )))
        }
    }

    /// Checks `action` and opens the caller's own tenant store.
    pub async fn tenant_ctx(self, state: &AppState, action: Action) -> Result<TenantCtx, AppError> {
        self.require(action)?;
        let tenant = self
            .0
            .tenant_opt
            .clone()
            .ok_or_else(|| AppError::forbidden("this key is not bound to a tenant"))?;
        let store = state.platform.active_tenant_store(&tenant).await?;
        Ok(TenantCtx {
            principal: self.0,
            tenant,
            store,
        })
    }
}
