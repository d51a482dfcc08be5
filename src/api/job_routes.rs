//! Jobs and dead letters of the caller's tenant.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::{AppError, AppState, Caller, ErrorBody};
use crate::jobs::{JobError, JobRecord, SubmitJob};
use crate::queue::{DeadLetter, Explanation, QueueState};
use crate::tenant::Action;

impl From<JobError> for AppError {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Invalid(message) => AppError::bad_request(message),
            JobError::NoPool(kind) => {
                AppError::bad_request(format!("no worker pool runs jobs of kind {kind:?}"))
            }
            JobError::NotFound(_) => AppError::not_found("job"),
            JobError::Storage(error) => error.into(),
            JobError::Platform(error) => error.into(),
            JobError::Queue(error) => AppError::internal(error),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    pub record: JobRecord,
    /// Why a queued job is not running yet (position, tags, blocking constraint).
    pub explain: Option<Explanation>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// queued, delayed, running, succeeded, failed, dead_lettered or cancelled.
    pub state: Option<String>,
}

/// Submits a single job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = SubmitJob, responses(
    (status = 201, body = JobRecord), (status = 200, description = "idempotency key matched an existing job", body = JobRecord),
    (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)
))]
pub async fn submit_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<SubmitJob>,
) -> Result<(StatusCode, Json<JobRecord>), AppError> {
    let ctx = caller.tenant_ctx(&state, Action::WriteData).await?;
    let (record, existing) = state.jobs.submit(&ctx.store, request).await?;
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "job.submit",
            format!("job/{}", record.job_id),
            "ok",
        )
        .await?;
    let status = if existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(record)))
}

/// Lists the tenant's jobs, optionally by state.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(StateQuery), responses(
    (status = 200, body = Vec<JobRecord>), (status = 400, body = ErrorBody)
))]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<StateQuery>,
) -> Result<Json<Vec<JobRecord>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    let state_opt = match query.state.as_deref() {
        Some(text) => Some(
            QueueState::parse(text)
                .ok_or_else(|| AppError::bad_request(format!("unknown job state {text:?}")))?,
        ),
        None => None,
    };
    Ok(Json(state.jobs.list(&ctx.store, state_opt).await?))
}

/// Shows a job with its explanation.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "job id")), responses(
    (status = 200, body = JobView), (status = 404, body = ErrorBody)
))]
pub async fn show_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    let record = state.jobs.get(&ctx.store, &id).await?;
    let explain = state.jobs.explain(&ctx.store, &id).await?;
    Ok(Json(JobView { record, explain }))
}

/// Cancels a queued or running job.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "job id")), responses(
    (status = 200, body = JobRecord), (status = 404, body = ErrorBody)
))]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobRecord>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::WriteData).await?;
    let record = state.jobs.cancel(&ctx.store, &id).await?;
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "job.cancel",
            format!("job/{id}"),
            "ok",
        )
        .await?;
    Ok(Json(record))
}

/// Lists the tenant's dead-lettered jobs with their attempt history.
#[utoipa::path(get, path = "/v1/dlq", tag = "jobs", responses((status = 200, body = Vec<DeadLetter>)))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DeadLetter>>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::ReadData).await?;
    Ok(Json(state.jobs.dead_letters(&ctx.store).await?))
}

/// Puts a dead-lettered job back in its queue.
#[utoipa::path(post, path = "/v1/dlq/{id}/redrive", tag = "jobs", params(("id" = String, Path, description = "job id")), responses(
    (status = 200, body = JobRecord), (status = 404, body = ErrorBody)
))]
pub async fn redrive_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobRecord>, AppError> {
    let ctx = caller.tenant_ctx(&state, Action::WriteData).await?;
    if !state.jobs.redrive(&ctx.store, &id).await? {
        return Err(AppError::not_found("dead-lettered job"));
    }
    state
        .platform
        .record_audit(
            &ctx.store,
            ctx.actor(),
            "job.redrive",
            format!("job/{id}"),
            "ok",
        )
        .await?;
    Ok(Json(state.jobs.get(&ctx.store, &id).await?))
}
