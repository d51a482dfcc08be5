//! Pipelines of the caller's tenant: submit a manifest (a run, or a schedule when the
//! manifest has one), show runs with their DAG, cancel, list and download outputs; schedules;
//! the tenant's configuration (transform presets). Names resolve inside the tenant only: a
//! run, output or dataset of another tenant is a plain 404.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::api::dataset_routes::FormatQuery;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::{AppError, AppState, Caller, ErrorBody};
use crate::dataset::{DatasetFormat, from_parquet};
use crate::manifest::{Manifest, ManifestIssue, parse_manifest, parse_ops};
use crate::pipeline::cron::{ScheduleRecord, delete_schedule, list_schedules, register_schedule};
use crate::pipeline::{PipelineError, RunView};
use crate::storage::{RelativePath, StorageError};
use crate::tenant::{Action, TenantConfig};

impl From<PipelineError> for AppError {
    fn from(error: PipelineError) -> Self {
        match error {
            PipelineError::Manifest(error) => AppError::invalid_manifest(error),
            PipelineError::NotFound(_) => AppError::not_found("pipeline run"),
            PipelineError::Invalid(message) => AppError::bad_request(message),
            PipelineError::Jobs(error) => error.into(),
            PipelineError::Storage(error) => error.into(),
        }
    }
}

fn manifest_of(body: Result<Bytes, BytesRejection>) -> Result<Manifest, AppError> {
    let body = body?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| AppError::bad_request("the manifest is not valid UTF-8"))?;
    parse_manifest(text).map_err(AppError::invalid_manifest)
}

/// A registered schedule.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub created_at: DateTime<Utc>,
    /// When it fires next (UTC).
    pub next_run: Option<DateTime<Utc>>,
}

impl ScheduleView {
    fn of(record: &ScheduleRecord, now: DateTime<Utc>) -> Self {
        Self {
            name: record.name.clone(),
            cron: record.cron.clone(),
            created_at: record.created_at,
            next_run: record.next_after(now.max(record.not_before)),
        }
    }
}

/// The result of a lint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckReport {
    pub valid: bool,
    pub issues: Vec<ManifestIssue>,
    /// Step ids in the order they can run.
    pub order: Vec<String>,
}

/// Submits a manifest (YAML or JSON). Without `schedule` it starts a run (201); with one it
/// registers the schedule (200) and runs fire once per period.
#[utoipa::path(post, path = "/v1/pipelines", tag = "pipelines",
    request_body(content = String, content_type = "application/yaml", description = "a tenantry/v1 Pipeline manifest, YAML or JSON"),
    responses(
        (status = 201, body = RunView), (status = 200, description = "schedule registered", body = ScheduleView),
        (status = 400, description = "invalid manifest: every issue with line, column and JSON pointer", body = ErrorBody),
        (status = 403, body = ErrorBody)
    ))]
pub async fn submit_pipeline(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::WriteData).await?;
    let manifest = manifest_of(body)?;
    let name = manifest.spec.metadata.name.clone();
    if manifest.spec.schedule.is_some() {
        let now = Utc::now();
        let (record, _) =
            register_schedule(state.platform.system(), &ctx.store, &manifest, now).await?;
        state
            .platform
            .record_audit(
                &ctx.store,
                ctx.actor(),
                "schedule.write",
                format!("schedule/{name}"),
                "ok",
            )
            .await?;
        return Ok((StatusCode::OK, Json(ScheduleView::of(&record, now))).into_response());
    }
    let run = state.pipelines.submit(&ctx.store, &manifest).await?;
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "pipeline.submit",
            format!("pipeline/{name}/{}", run.run_id),
            "ok",
        )
        .await?;
    Ok((StatusCode::CREATED, Json(run)).into_response())
}

/// Lints a manifest without submitting it.
#[utoipa::path(post, path = "/v1/manifests/check", tag = "pipelines",
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 200, body = CheckReport), (status = 403, body = ErrorBody)))]
pub async fn check_manifest(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CheckReport>, AppError> {
    caller.tenant_ctx(&state, Action::ReadData).await?;
    let body = body?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| AppError::bad_request("the manifest is not valid UTF-8"))?;
    Ok(Json(match parse_manifest(text) {
        Ok(manifest) => CheckReport {
            valid: true,
            issues: Vec::new(),
            order: manifest
                .order
                .iter()
                .map(|&index| manifest.spec.steps[index].id.clone())
                .collect(),
        },
        Err(error) => CheckReport {
            valid: false,
            issues: error.into_issues(),
            order: Vec::new(),
        },
    }))
}

/// Lists the caller's pipeline runs, newest first.
#[utoipa::path(get, path = "/v1/pipelines", tag = "pipelines", responses(
    (status = 200, body = Vec<RunView>), (status = 403, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<RunView>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    Ok(Json(state.pipelines.list(&ctx.store).await?))
}

/// One run: the DAG with each step's state, timings, attempts and outputs.
#[utoipa::path(get, path = "/v1/pipelines/{run}", tag = "pipelines",
    params(("run" = String, Path, description = "run id")),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)))]
pub async fn show_run(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(run): ApiPath<String>,
) -> Result<Json<RunView>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    Ok(Json(state.pipelines.view(&ctx.store, &run).await?))
}

/// Cancels a run: queued and running steps stop, no further step starts.
#[utoipa::path(post, path = "/v1/pipelines/{run}/cancel", tag = "pipelines",
    params(("run" = String, Path, description = "run id")),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)))]
pub async fn cancel_run(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(run): ApiPath<String>,
) -> Result<Json<RunView>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::WriteData).await?;
    let view = state.pipelines.cancel(&ctx.store, &run).await?;
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "pipeline.cancel",
            format!("run/{run}"),
            "ok",
        )
        .await?;
    Ok(Json(view))
}

/// One output object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutputEntry {
    pub step: String,
    pub file: String,
    /// Path in the tenant's store.
    pub path: String,
    pub size: u64,
}

/// The objects a run's steps wrote.
#[utoipa::path(get, path = "/v1/pipelines/{run}/outputs", tag = "pipelines",
    params(("run" = String, Path, description = "run id")),
    responses((status = 200, body = Vec<OutputEntry>), (status = 404, body = ErrorBody)))]
pub async fn list_outputs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(run): ApiPath<String>,
) -> Result<Json<Vec<OutputEntry>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    let prefix = format!("outputs/{run}/");
    let entries = state.pipelines.outputs(&ctx.store, &run).await?;
    Ok(Json(
        entries
            .into_iter()
            .filter_map(|entry| {
                let rest = entry.path.strip_prefix(&prefix)?;
                let (step, file) = rest.split_once('/')?;
                Some(OutputEntry {
                    step: step.to_string(),
                    file: file.to_string(),
                    path: entry.path.clone(),
                    size: entry.size,
                })
            })
            .collect(),
    ))
}

/// Downloads one output. Parquet outputs convert with `?format=csv|jsonl|parquet`.
#[utoipa::path(get, path = "/v1/pipelines/{run}/outputs/{step}/{file}", tag = "pipelines",
    params(("run" = String, Path), ("step" = String, Path), ("file" = String, Path), FormatQuery),
    responses((status = 200, content_type = "application/vnd.apache.parquet", body = Vec<u8>), (status = 404, body = ErrorBody)))]
pub async fn get_output(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((run, step, file)): ApiPath<(String, String, String)>,
    ApiQuery(query): ApiQuery<FormatQuery>,
) -> Result<Response, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    for part in [&run, &step, &file] {
        RelativePath::parse_name(part)?;
    }
    let path = RelativePath::parse(&format!("outputs/{run}/{step}/{file}"))?;
    let bytes = match ctx.store.get(&path).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound(_)) => return Err(AppError::not_found("output")),
        Err(error) => return Err(error.into()),
    };
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "output.read",
            format!("output/{run}/{step}/{file}"),
            "ok",
        )
        .await?;
    if file.ends_with(".json") {
        return Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response());
    }
    let format = match query.format.as_deref() {
        Some(text) => DatasetFormat::parse(text).ok_or_else(|| {
            AppError::bad_request(format!(
                "unknown format {text:?} (expected parquet, csv or jsonl)"
            ))
        })?,
        None => DatasetFormat::Parquet,
    };
    if !file.ends_with(".parquet") {
        return Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response());
    }
    let encoded = tokio::task::spawn_blocking(move || from_parquet(&bytes, format))
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], encoded).into_response())
}

/// The caller's registered schedules.
#[utoipa::path(get, path = "/v1/schedules", tag = "pipelines", responses(
    (status = 200, body = Vec<ScheduleView>), (status = 403, body = ErrorBody)))]
pub async fn list_schedule_views(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ScheduleView>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    let now = Utc::now();
    let records = list_schedules(&ctx.store).await?;
    Ok(Json(
        records.iter().map(|r| ScheduleView::of(r, now)).collect(),
    ))
}

/// Removes a schedule (runs it already started are kept).
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "pipelines",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_schedule(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::WriteData).await?;
    RelativePath::parse_name(&name)?;
    delete_schedule(state.platform.system(), &ctx.store, &name)
        .await
        .map_err(|error| match error {
            PipelineError::NotFound(_) => AppError::not_found("schedule"),
            other => other.into(),
        })?;
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "schedule.delete",
            format!("schedule/{name}"),
            "ok",
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn config_path() -> RelativePath {
    RelativePath::parse(crate::tenant::CONFIG_PATH).expect("a valid path")
}

/// The tenant's configuration (thresholds, label renames, output format, transform presets).
#[utoipa::path(get, path = "/v1/config", tag = "pipelines", responses(
    (status = 200, body = Object), (status = 403, body = ErrorBody)))]
pub async fn get_config(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TenantConfig>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    Ok(Json(ctx.store.get_json(&config_path()).await?))
}

/// Replaces the tenant's configuration; every transform preset is checked first.
#[utoipa::path(put, path = "/v1/config", tag = "pipelines", request_body = Object, responses(
    (status = 200, body = Object), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn put_config(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(config): ApiJson<TenantConfig>,
) -> Result<Json<TenantConfig>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ManageKeys).await?;
    for (name, ops) in &config.transforms {
        parse_ops(ops).map_err(|message| {
            AppError::bad_request(format!("transform preset {name:?}: {message}"))
        })?;
    }
    if !(0.0..=1.0).contains(&config.confidence_threshold) {
        return Err(AppError::bad_request(
            "confidence_threshold must be between 0 and 1",
        ));
    }
    if DatasetFormat::parse(&config.output_format).is_none() {
        return Err(AppError::bad_request(
            "output_format must be parquet, csv or jsonl",
        ));
    }
    ctx.store.put_json(&config_path(), &config).await?;
    state
        .platform
        .record_audit(&ctx.store, ctx.actor(), "config.write", "config", "ok")
        .await?;
    Ok(Json(config))
}
