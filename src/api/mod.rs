//! The control-plane HTTP API (axum). Routes are registered through utoipa-axum so the OpenAPI
//! document at `/openapi.json` is generated from the handlers themselves.

mod audit_routes;
pub(crate) mod auth;
mod dataset_routes;
mod error;
mod extract;
mod health_routes;
mod invoice_routes;
mod job_routes;
mod key_routes;
mod model_routes;
mod pipeline_routes;
mod tenant_routes;
mod usage_routes;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Caller, TenantCtx};
pub use error::{AppError, ErrorBody};

use crate::jobs::JobService;
use crate::platform::Platform;

/// Shared handler state.
#[derive(Clone)]
pub struct AppState {
    pub platform: Platform,
    pub jobs: JobService,
    pub pipelines: crate::pipeline::PipelineService,
    pub serving: crate::serving::Serving,
    pub openapi: Arc<utoipa::openapi::OpenApi>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenantry control plane",
        description = "Multi-tenant ML data platform API. Authenticate with `Authorization: Bearer tnt_<key id>_<secret>`; the tenant always comes from the key."
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The serving settings of the predict route the control-plane API carries: its own replica
/// name (`<replica>-api`), so its usage journal never collides with a `tenantry serve`
/// process on the same host.
fn embedded_serving(platform: &Platform) -> crate::serving::ServingSettings {
    let mut settings = platform.settings().serving.clone();
    settings.replica = format!("{}-api", settings.replica);
    settings
}

/// Builds the router and the OpenAPI document describing it, with a serving service of the
/// platform's serving settings started on the current runtime.
pub fn router(
    jobs: JobService,
) -> Result<(Router, utoipa::openapi::OpenApi), crate::usage::JournalError> {
    let serving = crate::serving::Serving::start(
        jobs.platform().clone(),
        embedded_serving(jobs.platform()),
        jobs.clock().clone(),
    )?;
    Ok(router_with(jobs, serving))
}

/// Builds the router around an existing serving service.
pub fn router_with(
    jobs: JobService,
    serving: crate::serving::Serving,
) -> (Router, utoipa::openapi::OpenApi) {
    let platform = jobs.platform().clone();
    let max_body = platform.settings().max_upload_bytes;
    let (routes, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            tenant_routes::create_tenant,
            tenant_routes::list_tenants
        ))
        .routes(routes!(
            tenant_routes::show_tenant,
            tenant_routes::delete_tenant
        ))
        .routes(routes!(tenant_routes::change_plan))
        .routes(routes!(key_routes::create_key, key_routes::list_keys))
        .routes(routes!(key_routes::revoke_key))
        .routes(routes!(dataset_routes::list_datasets))
        .routes(routes!(
            dataset_routes::put_dataset,
            dataset_routes::get_dataset,
            dataset_routes::delete_dataset
        ))
        .routes(routes!(job_routes::submit_job, job_routes::list_jobs))
        .routes(routes!(job_routes::show_job))
        .routes(routes!(job_routes::cancel_job))
        .routes(routes!(job_routes::list_dead_letters))
        .routes(routes!(job_routes::redrive_job))
        .routes(routes!(
            pipeline_routes::submit_pipeline,
            pipeline_routes::list_runs
        ))
        .routes(routes!(pipeline_routes::check_manifest))
        .routes(routes!(pipeline_routes::show_run))
        .routes(routes!(pipeline_routes::cancel_run))
        .routes(routes!(pipeline_routes::list_outputs))
        .routes(routes!(pipeline_routes::get_output))
        .routes(routes!(pipeline_routes::list_schedule_views))
        .routes(routes!(pipeline_routes::remove_schedule))
        .routes(routes!(
            pipeline_routes::get_config,
            pipeline_routes::put_config
        ))
        .routes(routes!(model_routes::list_models))
        .routes(routes!(model_routes::show_model))
        .routes(routes!(model_routes::promote_model))
        .routes(routes!(model_routes::rollback_model))
        .routes(routes!(model_routes::list_bases))
        .routes(routes!(model_routes::rollout_base))
        .routes(routes!(crate::serving::routes::predict))
        .routes(routes!(invoice_routes::list))
        .routes(routes!(invoice_routes::show))
        .routes(routes!(usage_routes::tenant_usage))
        .routes(routes!(usage_routes::admin_usage))
        .routes(routes!(audit_routes::list_audit))
        .routes(routes!(audit_routes::verify_audit))
        .routes(routes!(health_routes::healthz))
        .routes(routes!(health_routes::readyz))
        .routes(routes!(health_routes::metrics))
        .split_for_parts();
    let state = AppState {
        platform,
        pipelines: crate::pipeline::PipelineService::new(jobs.clone()),
        jobs,
        serving,
        openapi: Arc::new(openapi.clone()),
    };
    let app = routes
        .route(
            "/openapi.json",
            axum::routing::get(health_routes::openapi_document),
        )
        .fallback(|| async { AppError::not_found("route") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    tenant = tracing::field::Empty,
                    key_id = tracing::field::Empty,
                )
            }),
        )
        .with_state(state);
    (app, openapi)
}

/// Serves the API on `listener` until `shutdown` resolves, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    jobs: JobService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let serving = crate::serving::Serving::start(
        jobs.platform().clone(),
        embedded_serving(jobs.platform()),
        jobs.clock().clone(),
    )
    .map_err(std::io::Error::other)?;
    let (app, _) = router_with(jobs, serving.clone());
    tracing::info!(addr = %listener.local_addr()?, "control-plane api listening");
    // answers go out at once: without TCP_NODELAY a response written in two parts waits for
    // the client's delayed ACK (tens of milliseconds)
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    match serving.flush_usage().await {
        Ok(report) => tracing::info!(events = report.events, "serving usage flushed"),
        Err(error) => {
            tracing::error!(%error, "serving usage left in the journal for the next start")
        }
    }
    served
}
