//! `AppError`: every API failure as `{"error": {"code", "message"}}`.
//!
//! Messages never carry another tenant's names or data; internal failures are logged with
//! their cause and answered with a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::dataset::DatasetError;
use crate::platform::PlatformError;
use crate::storage::{PathError, StorageError};
use crate::tenant::AuthError;

#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    issues: Vec<crate::manifest::ManifestIssue>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Every problem of an invalid manifest, with line, column and JSON pointer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<crate::manifest::ManifestIssue>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            issues: Vec::new(),
        }
    }

    /// 400 `invalid_manifest` listing every issue.
    pub fn invalid_manifest(error: crate::manifest::ManifestError) -> Self {
        let mut app = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_manifest",
            error.to_string(),
        );
        app.issues = error.issues;
        app
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing, invalid or revoked api key",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the platform team has been notified",
        )
    }

    /// Maps an axum extractor rejection, keeping its status (400, 413, 415, 422...).
    pub fn from_rejection(status: StatusCode, text: String) -> Self {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            _ => "bad_request",
        };
        Self::new(status, code, text)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                issues: self.issues,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<PathError> for AppError {
    fn from(error: PathError) -> Self {
        Self::bad_request(error.to_string())
    }
}

impl From<AuthError> for AppError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidKey => Self::unauthorized(),
            AuthError::Storage(error) => Self::internal(error),
        }
    }
}

impl From<StorageError> for AppError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::InvalidPath(error) => error.into(),
            StorageError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            other => Self::internal(other),
        }
    }
}

impl From<PlatformError> for AppError {
    fn from(error: PlatformError) -> Self {
        match error {
            PlatformError::TenantNotFound(id) => Self::not_found(format_args!("tenant {id}")),
            PlatformError::TenantExists(id) => {
                Self::conflict(format!("tenant {id} already exists"))
            }
            PlatformError::TenantNotActive { .. } => Self::unauthorized(),
            PlatformError::UnknownPlan(_) | PlatformError::InvalidTenantId(_) => {
                Self::bad_request(error.to_string())
            }
            PlatformError::Storage(error) => error.into(),
            other => Self::internal(other),
        }
    }
}

impl From<DatasetError> for AppError {
    fn from(error: DatasetError) -> Self {
        match error {
            DatasetError::NotFound(name) => Self::not_found(format_args!("dataset {name}")),
            DatasetError::Invalid(message) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_dataset", message)
            }
            DatasetError::Storage(error) => error.into(),
            DatasetError::Task(message) => Self::internal(message),
        }
    }
}
