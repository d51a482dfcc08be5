//! Tenant datasets: upload (Parquet, CSV, JSONL), list, download in any format, delete.
//! The tenant is always the caller's; another tenant's dataset is a plain 404.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::extract::{ApiPath, ApiQuery};
use crate::api::{AppError, AppState, Caller, ErrorBody};
use crate::dataset::{self, DatasetFormat, DatasetMeta};
use crate::storage::RelativePath;
use crate::tenant::Action;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    /// `parquet`, `csv` or `jsonl`.
    pub format: Option<String>,
}

fn parse_format(format_opt: Option<&str>) -> Result<Option<DatasetFormat>, AppError> {
    format_opt
        .map(|text| {
            DatasetFormat::parse(text).ok_or_else(|| {
                AppError::bad_request(format!(
                    "unknown format {text:?} (expected parquet, csv or jsonl)"
                ))
            })
        })
        .transpose()
}

/// Stores a dataset (replacing one of the same name). The body is Parquet, CSV or JSON Lines,
/// chosen by `Content-Type` or `?format=`; it is validated before anything is written.
#[utoipa::path(put, path = "/v1/datasets/{name}", tag = "datasets",
    params(("name" = String, Path, description = "dataset name"), FormatQuery),
    request_body(content = Vec<u8>, content_type = "application/vnd.apache.parquet", description = "Parquet, CSV (text/csv) or JSON Lines (application/x-ndjson)"),
    responses(
        (status = 201, body = DatasetMeta), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)
    ))]
pub async fn put_dataset(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<FormatQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<DatasetMeta>), AppError> {
    let ctx = caller.tenant_ctx(&state, Action::WriteData).await?;
    let name = RelativePath::parse_name(&name)?;
    let format = match parse_format(query.format.as_deref())? {
        Some(format) => format,
        None => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("");
            DatasetFormat::from_content_type(content_type).ok_or_else(|| {
                AppError::unsupported_media_type(format!(
                    "content type {content_type:?} is not a dataset format (use application/vnd.apache.parquet, text/csv or application/x-ndjson)"
                ))
            })?
        }
    };
    let body = body?;
    let meta = dataset::put_dataset(&ctx.store, &name, body, format).await?;
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "dataset.write",
            format!("dataset/{name}"),
            "ok",
        )
        .await?;
    Ok((StatusCode::CREATED, Json(meta)))
}

/// Lists the caller's datasets.
#[utoipa::path(get, path = "/v1/datasets", tag = "datasets", responses(
    (status = 200, body = Vec<DatasetMeta>), (status = 403, body = ErrorBody)
))]
pub async fn list_datasets(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DatasetMeta>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    let metas = dataset::list_datasets(&ctx.store).await?;
    state
        .platform
        .record_audit(&ctx.store, ctx.actor(), "dataset.list", "datasets", "ok")
        .await?;
    Ok(Json(metas))
}

/// Downloads a dataset as Parquet (default), CSV or JSON Lines.
#[utoipa::path(get, path = "/v1/datasets/{name}", tag = "datasets",
    params(("name" = String, Path, description = "dataset name"), FormatQuery),
    responses((status = 200, content_type = "application/vnd.apache.parquet", body = Vec<u8>), (status = 404, body = ErrorBody)))]
pub async fn get_dataset(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<FormatQuery>,
) -> Result<Response, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    let name = RelativePath::parse_name(&name)?;
    let format = parse_format(query.format.as_deref())?.unwrap_or(DatasetFormat::Parquet);
    let (bytes, _meta) = dataset::get_dataset(&ctx.store, &name, format).await?;
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "dataset.read",
            format!("dataset/{name}"),
            "ok",
        )
        .await?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], bytes).into_response())
}

/// Deletes a dataset.
#[utoipa::path(delete, path = "/v1/datasets/{name}", tag = "datasets",
    params(("name" = String, Path, description = "dataset name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_dataset(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::WriteData).await?;
    let name = RelativePath::parse_name(&name)?;
    dataset::delete_dataset(&ctx.store, &name).await?;
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "dataset.delete",
            format!("dataset/{name}"),
            "ok",
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
