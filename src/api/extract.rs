//! Extractors whose rejections are JSON `AppError`s instead of axum's plain-text bodies.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};

use crate::api::AppError;

/// `axum::Json` with JSON errors (400 malformed, 415 wrong content type, 422 wrong shape).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

macro_rules! rejection_to_app_error {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for AppError {
            fn from(rejection: $rejection) -> Self {
                AppError::from_rejection(rejection.status(), rejection.body_text())
            }
        }
    )*};
}

rejection_to_app_error!(JsonRejection, PathRejection, QueryRejection, BytesRejection);
