//! HTTP face of serving: `POST /v1/predict` (in the control-plane API under `tenantry up`, and
//! alone under `tenantry serve` with `/healthz`, `/readyz` and `/metrics`).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{AppError, AppState};
use crate::serving::{Outcome, PredictRequest, PredictResponse, ServeError, Serving};
use crate::tenant::Action;

impl FromRef<AppState> for Serving {
    fn from_ref(state: &AppState) -> Self {
        state.serving.clone()
    }
}

fn error_response(error: ServeError, request_id: &str) -> Response {
    let (status, code) = match &error {
        ServeError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        ServeError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ServeError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ServeError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        ServeError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        ServeError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        ServeError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        ServeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ServeError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let message = match &error {
        ServeError::Internal(cause) => {
            tracing::error!(error = %cause, request_id, "prediction failed");
            "internal error; the platform team has been notified".to_string()
        }
        other => other.to_string(),
    };
    let retry_after_secs = match &error {
        ServeError::RateLimited { retry_after_ms } => Some(retry_after_ms.div_ceil(1000).max(1)),
        ServeError::Overloaded(_) | ServeError::Unavailable(_) => Some(1),
        _ => None,
    };
    let mut response = AppError::new(status, code, message).into_response();
    if let Some(seconds) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Parses a predict body, naming the field of the first problem.
fn parse(body: &[u8]) -> Result<PredictRequest, ServeError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path.is_empty() || path == "." {
            ServeError::BadRequest(format!("invalid body: {inner}"))
        } else {
            ServeError::BadRequest(format!("invalid body at {path}: {inner}"))
        }
    })
}

/// Scores texts with the caller's tenant variant (role `client` or above).
#[utoipa::path(post, path = "/v1/predict", tag = "serving", request_body = PredictRequest, responses(
    (status = 200, description = "label, probabilities and model version per input", body = PredictResponse),
    (status = 400, description = "empty or malformed body", body = crate::api::ErrorBody),
    (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
    (status = 404, description = "no such model or version of the caller's tenant", body = crate::api::ErrorBody),
    (status = 413, description = "too many inputs, a text or the body too long", body = crate::api::ErrorBody),
    (status = 429, description = "over the plan's rate limit; see Retry-After", body = crate::api::ErrorBody),
    (status = 503, description = "overloaded: the tenant's in-flight cap or the scoring queue is full", body = crate::api::ErrorBody)
))]
pub async fn predict(
    State(serving): State<Serving>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    let Some(token) = crate::api::auth::presented_key(&headers) else {
        return error_response(ServeError::Unauthorized, &request_id);
    };
    let principal = match serving.authenticate(token).await {
        Ok(principal) => principal,
        Err(error) => return error_response(error, &request_id),
    };
    let parsed = match body {
        Ok(bytes) if bytes.len() > serving.settings().max_body_bytes => {
            Err(ServeError::TooLarge(format!(
                "the body is {} bytes; at most {} are accepted",
                bytes.len(),
                serving.settings().max_body_bytes
            )))
        }
        Ok(bytes) => parse(&bytes),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(
            ServeError::TooLarge(format!("the body is too large: {}", rejection.body_text())),
        ),
        Err(rejection) => Err(ServeError::BadRequest(rejection.body_text())),
    };
    let request = match parsed {
        Ok(request) => request,
        Err(error) => {
            if let Some(tenant) = &principal.tenant_opt {
                serving.stats().record(tenant, Outcome::ClientError, 0, 0.0);
            }
            return error_response(error, &request_id);
        }
    };
    let owner_opt = principal
        .tenant_opt
        .as_ref()
        .filter(|_| serving.settings().replicas.len() > 1)
        .map(|tenant| serving.owner_of(tenant));
    match serving.predict(&principal, request, &request_id).await {
        Ok(response) => {
            let mut response = (StatusCode::OK, Json(response)).into_response();
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-request-id", value);
            }
            // a request that reached a replica other than its tenant's owner says where to go
            if let Some(owner) = owner_opt.filter(|owner| owner != &serving.settings().replica)
                && let Ok(value) = HeaderValue::from_str(&owner)
            {
                response
                    .headers_mut()
                    .insert("x-tenantry-replica-owner", value);
            }
            response
        }
        Err(error) => error_response(error, &request_id),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(serving): State<Serving>, headers: HeaderMap) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    let Some(token) = crate::api::auth::presented_key(&headers) else {
        return error_response(ServeError::Unauthorized, &request_id);
    };
    match serving.authenticate(token).await {
        Ok(principal) if principal.role.allows(Action::ManageTenants) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            serving.render_metrics(),
        )
            .into_response(),
        Ok(_) => error_response(
            ServeError::Forbidden("metrics are for platform admins".to_string()),
            &request_id,
        ),
        Err(error) => error_response(error, &request_id),
    }
}

/// The standalone serving router of `tenantry serve`.
pub fn router(serving: Serving) -> Router {
    let limit = serving.settings().max_body_bytes;
    Router::new()
        .route("/v1/predict", axum::routing::post(predict))
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(healthz))
        .route("/metrics", axum::routing::get(metrics))
        .fallback(|| async { AppError::not_found("route") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(serving)
}
