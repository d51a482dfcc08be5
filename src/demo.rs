//! `tenantry demo`: onboards three demo tenants, uploads each one's generated clause dataset
//! (in its own source format) through the real API handlers, configures each tenant's
//! transform preset, runs each tenant's pipeline from `pipelines/` (validate, transform,
//! migrate) on an in-process worker pool, shows that each sees only its own data, offboards one
//! and shows that nothing of it remains.

use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde::Serialize;
use tower::ServiceExt;

use crate::api;
use crate::audit::Actor;
use crate::jobs::JobService;
use crate::platform::{PlatformError, PlatformResult};
use crate::tenant::{TenantId, TenantState};

/// One demo tenant: its generated dataset and its pipeline manifest.
struct DemoTenant {
    id: &'static str,
    name: &'static str,
    plan: &'static str,
    dataset: &'static str,
    /// The transform preset mapping its source format (empty for the canonical format).
    preset: &'static str,
    pipeline: &'static str,
}

/// Rows generated per demo tenant.
const DEMO_ROWS: usize = 2_000;
const DEMO_SEED: u64 = 42;

const DEMO_TENANTS: [DemoTenant; 3] = [
    DemoTenant {
        id: "acme",
        name: "Acme Corp",
        plan: "enterprise",
        dataset: "acme-clauses",
        preset: "",
        pipeline: include_str!("../pipelines/acme.yaml"),
    },
    DemoTenant {
        id: "globex",
        name: "Globex GmbH",
        plan: "pro",
        dataset: "globex-clauses",
        preset: "globex-source",
        pipeline: include_str!("../pipelines/globex.yaml"),
    },
    DemoTenant {
        id: "initech",
        name: "Initech Ltd",
        plan: "free",
        dataset: "initech-clauses",
        preset: "initech-source",
        pipeline: include_str!("../pipelines/initech.yaml"),
    },
];

/// The tenant the demo offboards at the end.
const OFFBOARDED: &str = "initech";

#[derive(Debug, Serialize)]
pub struct DemoTenantSummary {
    pub tenant: String,
    pub plan: String,
    pub onboarding_ms: f64,
    pub rows_uploaded: usize,
    pub datasets_visible: usize,
    /// Status when this tenant asked for the next tenant's dataset by name (404 expected).
    pub cross_tenant_status: u16,
    /// State of the smoke job the tenant submitted through the API.
    pub job_state: String,
    /// The tenant's pipeline run (from `pipelines/<tenant>.yaml`).
    pub pipeline: DemoPipeline,
    pub audit_records: usize,
    pub audit_intact: bool,
    pub state: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoPipeline {
    pub run_id: String,
    pub state: String,
    /// `step: state` in dependency order.
    pub steps: Vec<String>,
    /// Where the outputs are in the tenant's store (encrypted at rest; download with
    /// `tenantry outputs get RUN --tenant ID --out DIR` or the API).
    pub outputs: String,
    pub output_files: usize,
}

#[derive(Debug, Serialize)]
pub struct DemoSummary {
    pub storage_url: String,
    pub tenants: Vec<DemoTenantSummary>,
    pub offboarded: String,
    pub offboard_objects_deleted: usize,
    pub offboard_remaining_objects: usize,
    pub offboard_old_key_status: u16,
    pub elapsed_ms: f64,
}

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map(|bytes| bytes.to_vec())
        .unwrap_or_default();
    (status, body)
}

fn request(method: &str, uri: &str, token: &str, content_type: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(body)
        .expect("demo requests are well formed")
}

fn demo_error(message: String) -> PlatformError {
    PlatformError::SmokeCheck {
        tenant: TenantId::parse("demo").expect("valid id"),
        message,
    }
}

/// Runs the demo and returns its summary.
pub async fn run_demo(jobs: &JobService) -> PlatformResult<DemoSummary> {
    let started = Instant::now();
    let platform = jobs.platform();
    let (app, _) = api::router(jobs.clone());
    let mut onboarded = Vec::new();
    for demo in &DEMO_TENANTS {
        let id = TenantId::parse(demo.id)?;
        // A previous run left this tenant behind: offboard it so every run starts clean.
        if let Ok(existing) = platform.tenant(&id).await
            && existing.state != TenantState::Offboarded
        {
            platform.offboard(&id, Actor::system()).await?;
        }
        let report = platform
            .onboard(&id, demo.name, demo.plan, Actor::system())
            .await?;
        tracing::info!(tenant = %id, ms = report.elapsed_ms, "demo tenant onboarded");
        let token = report.admin_key.token.expose().to_string();
        let profile = crate::fixtures::profile(demo.id)
            .ok_or_else(|| demo_error(format!("no fixture profile for {id}")))?;
        let (bytes, format) =
            crate::fixtures::source_bytes(profile, DEMO_ROWS, DEMO_SEED).map_err(demo_error)?;
        let uri = format!("/v1/datasets/{}", demo.dataset);
        let (status, body) = call(
            &app,
            request(
                "PUT",
                &uri,
                &token,
                format.content_type(),
                Body::from(bytes),
            ),
        )
        .await;
        if status != StatusCode::CREATED {
            return Err(demo_error(format!(
                "upload for {id} failed with {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let meta: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let rows = meta["rows"].as_u64().unwrap_or(0) as usize;
        if !demo.preset.is_empty() {
            configure_preset(&app, &token, demo).await?;
        }
        onboarded.push((demo, id, token, report.elapsed_ms, rows));
    }

    let (job_states, pipelines) = run_demo_jobs(jobs, &app, &onboarded).await?;

    let mut tenants = Vec::new();
    for (index, (demo, id, token, onboarding_ms, rows)) in onboarded.iter().enumerate() {
        let (_, listing) = call(
            &app,
            request(
                "GET",
                "/v1/datasets",
                token,
                "application/json",
                Body::empty(),
            ),
        )
        .await;
        let visible = serde_json::from_slice::<Vec<serde_json::Value>>(&listing)
            .map(|list| list.len())
            .unwrap_or(0);
        // Ask for the next tenant's real dataset by its name.
        let (other, ..) = &onboarded[(index + 1) % onboarded.len()];
        let probe = format!("/v1/datasets/{}", other.dataset);
        let (cross_status, _) = call(
            &app,
            request("GET", &probe, token, "application/json", Body::empty()),
        )
        .await;
        let store = platform.tenant_store(id).await?;
        let verification = platform.audit().verify(&store).await?;
        tenants.push(DemoTenantSummary {
            tenant: id.to_string(),
            plan: demo.plan.to_string(),
            onboarding_ms: *onboarding_ms,
            rows_uploaded: *rows,
            datasets_visible: visible,
            cross_tenant_status: cross_status.as_u16(),
            job_state: job_states[index].clone(),
            pipeline: pipelines[index].clone(),
            audit_records: verification.records,
            audit_intact: verification.is_intact(),
            state: "active".to_string(),
        });
    }

    let offboard_id = TenantId::parse(OFFBOARDED)?;
    let report = platform.offboard(&offboard_id, Actor::system()).await?;
    let old_token = onboarded
        .iter()
        .find(|(_, id, ..)| *id == offboard_id)
        .map(|(_, _, token, ..)| token.clone())
        .unwrap_or_default();
    let (old_key_status, _) = call(
        &app,
        request(
            "GET",
            "/v1/datasets",
            &old_token,
            "application/json",
            Body::empty(),
        ),
    )
    .await;
    if let Some(entry) = tenants.iter_mut().find(|t| t.tenant == OFFBOARDED) {
        entry.state = "offboarded".to_string();
    }
    Ok(DemoSummary {
        storage_url: platform.settings().storage_url.clone(),
        tenants,
        offboarded: OFFBOARDED.to_string(),
        offboard_objects_deleted: report.objects_deleted,
        offboard_remaining_objects: report.remaining_objects,
        offboard_old_key_status: old_key_status.as_u16(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

type Onboarded<'a> = (&'a DemoTenant, TenantId, String, f64, usize);

/// Puts the tenant's source-format preset into its configuration through the API.
async fn configure_preset(
    app: &axum::Router,
    token: &str,
    demo: &DemoTenant,
) -> PlatformResult<()> {
    let (_, body) = call(
        app,
        request(
            "GET",
            "/v1/config",
            token,
            "application/json",
            Body::empty(),
        ),
    )
    .await;
    let mut config: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    config["transforms"][demo.preset] = crate::fixtures::source_preset(demo.id);
    let (status, reply) = call(
        app,
        request(
            "PUT",
            "/v1/config",
            token,
            "application/json",
            Body::from(config.to_string()),
        ),
    )
    .await;
    if status != StatusCode::OK {
        return Err(demo_error(format!(
            "configuring {} failed with {status}: {}",
            demo.id,
            String::from_utf8_lossy(&reply)
        )));
    }
    Ok(())
}

fn summarise_run(view: &serde_json::Value) -> DemoPipeline {
    let run_id = view["run_id"].as_str().unwrap_or_default().to_string();
    let steps = view["steps"].as_array().cloned().unwrap_or_default();
    DemoPipeline {
        outputs: format!("outputs/{run_id}/"),
        run_id,
        state: view["state"].as_str().unwrap_or("unknown").to_string(),
        output_files: steps
            .iter()
            .map(|step| step["outputs"].as_array().map_or(0, Vec::len))
            .sum(),
        steps: steps
            .iter()
            .map(|step| {
                let mut line = format!(
                    "{}: {}",
                    step["id"].as_str().unwrap_or("?"),
                    step["state"].as_str().unwrap_or("?")
                );
                if let Some(reason) = step["reason"].as_str() {
                    line.push_str(&format!(" ({reason})"));
                }
                line
            })
            .collect(),
    }
}

/// Each tenant submits a smoke job and its pipeline through the API; the pool that runs them
/// is started here, in-process, and stopped once every job and run is finished.
async fn run_demo_jobs(
    jobs: &JobService,
    app: &axum::Router,
    onboarded: &[Onboarded<'_>],
) -> PlatformResult<(Vec<String>, Vec<DemoPipeline>)> {
    use crate::worker::PoolRunner;
    let Some(pool) = jobs
        .pools()
        .iter()
        .find(|p| p.kinds.iter().any(|k| k == "smoke"))
        .cloned()
    else {
        return Ok((
            vec!["no pool".to_string(); onboarded.len()],
            vec![DemoPipeline::default(); onboarded.len()],
        ));
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut runner = PoolRunner::new(
        jobs.clone(),
        pool,
        crate::pipeline::handler_registry(false),
        "demo".to_string(),
    );
    runner.job_timeout = std::time::Duration::from_secs(60);
    runner.drain_timeout = std::time::Duration::from_secs(5);
    let running = tokio::spawn(runner.run_configured(shutdown.clone()));
    let mut submitted = Vec::new();
    for (_, _, token, ..) in onboarded {
        let body = Body::from(r#"{"kind":"smoke","group":"demo"}"#);
        let (status, reply) = call(
            app,
            request("POST", "/v1/jobs", token, "application/json", body),
        )
        .await;
        if status != StatusCode::CREATED {
            return Err(demo_error(format!(
                "job submit failed with {status}: {}",
                String::from_utf8_lossy(&reply)
            )));
        }
        let record: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        submitted.push((
            token.clone(),
            record["job_id"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let mut runs = Vec::new();
    for (demo, _, token, ..) in onboarded {
        let (status, reply) = call(
            app,
            request(
                "POST",
                "/v1/pipelines",
                token,
                "application/yaml",
                Body::from(demo.pipeline),
            ),
        )
        .await;
        if status != StatusCode::CREATED {
            return Err(demo_error(format!(
                "pipeline submit for {} failed with {status}: {}",
                demo.id,
                String::from_utf8_lossy(&reply)
            )));
        }
        let view: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        runs.push(view["run_id"].as_str().unwrap_or_default().to_string());
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let mut states = vec![String::new(); submitted.len()];
    let mut pipelines = vec![DemoPipeline::default(); runs.len()];
    loop {
        for (index, run_id) in runs.iter().enumerate() {
            let token = &onboarded[index].2;
            let (_, reply) = call(
                app,
                request(
                    "GET",
                    &format!("/v1/pipelines/{run_id}"),
                    token,
                    "application/json",
                    Body::empty(),
                ),
            )
            .await;
            let view: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
            pipelines[index] = summarise_run(&view);
        }
        for (index, (token, job_id)) in submitted.iter().enumerate() {
            let (_, reply) = call(
                app,
                request(
                    "GET",
                    &format!("/v1/jobs/{job_id}"),
                    token,
                    "application/json",
                    Body::empty(),
                ),
            )
            .await;
            let view: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
            states[index] = view["state"].as_str().unwrap_or("unknown").to_string();
        }
        let finished = states.iter().all(|s| {
            matches!(
                s.as_str(),
                "succeeded" | "failed" | "dead_lettered" | "cancelled"
            )
        }) && pipelines.iter().all(|run| run.state != "running");
        if finished || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let _ = running.await;
    Ok((states, pipelines))
}
