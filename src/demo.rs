//! `tenantry demo`: trains the shared base model once (if the platform has none), onboards
//! three demo tenants, uploads each one's generated clause dataset (in its own source format)
//! and an unlabelled inbox through the real API handlers, configures each tenant's transform
//! preset, runs each tenant's pipeline from `pipelines/` (validate, transform, migrate,
//! fine-tune its variant, score its inbox) on in-process worker pools, shows each tenant's
//! model accuracy and scored output, that each sees only its own data, offboards one and
//! shows that nothing of it remains.

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
    /// Its unlabelled clauses, scored by its variant.
    inbox: &'static str,
    /// The transform preset mapping its source format (empty for the canonical format).
    preset: &'static str,
    pipeline: &'static str,
}

/// Rows generated per demo tenant.
const DEMO_ROWS: usize = 2_000;
/// Unlabelled rows per demo tenant's inbox.
const INBOX_ROWS: usize = 500;
const DEMO_SEED: u64 = 42;
/// Clauses per generated profile in the demo's base corpus.
const BASE_ROWS: usize = 1_500;

const DEMO_TENANTS: [DemoTenant; 3] = [
    DemoTenant {
        id: "acme",
        name: "Acme Corp",
        plan: "enterprise",
        dataset: "acme-clauses",
        inbox: "acme-inbox",
        preset: "",
        pipeline: include_str!("../pipelines/acme.yaml"),
    },
    DemoTenant {
        id: "globex",
        name: "Globex GmbH",
        plan: "pro",
        dataset: "globex-clauses",
        inbox: "globex-inbox",
        preset: "globex-source",
        pipeline: include_str!("../pipelines/globex.yaml"),
    },
    DemoTenant {
        id: "initech",
        name: "Initech Ltd",
        plan: "free",
        dataset: "initech-clauses",
        inbox: "initech-inbox",
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
    /// The variant its pipeline fine-tuned and what it scored.
    pub model: DemoModel,
    /// Online predictions through `POST /v1/predict` with a `client` key.
    pub online: DemoOnline,
    /// This month's usage per meter (exact decimals), read back through `GET /v1/usage`.
    pub usage: Vec<(String, String)>,
    /// This month's invoice so far under the tenant's plan (a draft while the month runs).
    pub invoice: DemoInvoice,
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

/// A demo tenant's variant: its version, holdout metrics and scored inbox.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoModel {
    pub name: String,
    pub version: String,
    pub base: String,
    pub holdout_rows: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub scored_rows: u64,
    pub needs_review: u64,
    /// The scored Parquet in the tenant's store.
    pub scored_output: String,
}

/// A demo tenant's invoice for the running month.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoInvoice {
    pub number: String,
    pub plans: Vec<String>,
    /// (description, amount) per line.
    pub lines: Vec<(String, String)>,
    pub total: String,
    pub currency: String,
}

/// A demo tenant's call of the online endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoOnline {
    pub status: u16,
    pub version: String,
    pub latency_ms: f64,
    /// (text, predicted label, its probability) per input.
    pub predictions: Vec<(String, String, f32)>,
    /// Status when this tenant's client key named a version no model of it has (404 expected).
    pub foreign_version_status: u16,
}

#[derive(Debug, Serialize)]
pub struct DemoSummary {
    pub storage_url: String,
    /// The shared base the variants were fine-tuned over, and whether this run trained it.
    pub base_version: String,
    pub base_trained_now: bool,
    pub base_training_ms: f64,
    pub tenants: Vec<DemoTenantSummary>,
    pub offboarded: String,
    pub offboard_objects_deleted: usize,
    pub offboard_remaining_objects: usize,
    pub offboard_old_key_status: u16,
    /// The operators' cost view of the running month: (tenant, direct, shared, revenue, margin).
    pub costs: Vec<(String, String, String, String, String)>,
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

/// Sends a request that must answer 201 Created; returns its JSON body, or an error naming
/// `what` with the status and body.
async fn create(
    app: &axum::Router,
    request: Request<Body>,
    what: &str,
) -> PlatformResult<serde_json::Value> {
    let (status, body) = call(app, request).await;
    if status != StatusCode::CREATED {
        return Err(demo_error(format!(
            "{what} failed with {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(serde_json::from_slice(&body).unwrap_or_default())
}

/// Runs the demo and returns its summary.
pub async fn run_demo(jobs: &JobService) -> PlatformResult<DemoSummary> {
    let started = Instant::now();
    let platform = jobs.platform();
    let serving = crate::serving::Serving::start(
        platform.clone(),
        platform.settings().serving.clone(),
        jobs.clock().clone(),
    )?;
    let (app, _) = api::router_with(jobs.clone(), serving.clone());
    let (base_version, base_trained_now, base_training_ms) = ensure_base(jobs).await?;
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
        let meta = create(
            &app,
            request(
                "PUT",
                &uri,
                &token,
                format.content_type(),
                Body::from(bytes),
            ),
            &format!("upload for {id}"),
        )
        .await?;
        let rows = meta["rows"].as_u64().unwrap_or(0) as usize;
        upload_inbox(&app, &token, demo, profile).await?;
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
        let model = demo_model(&app, token, &pipelines[index]).await;
        let online = demo_online(&app, token, demo).await?;
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
            model,
            online,
            usage: Vec::new(),
            invoice: DemoInvoice::default(),
            audit_records: verification.records,
            audit_intact: verification.is_intact(),
            state: "active".to_string(),
        });
    }

    // the online calls' usage lands in each tenant's usage/ before one of them is offboarded
    serving.flush_usage().await?;
    let month = jobs.clock().now();
    let period = month.format("%Y-%m").to_string();
    for (entry, (_, id, token, ..)) in tenants.iter_mut().zip(&onboarded) {
        let usage = call(
            &app,
            request(
                "GET",
                "/v1/usage?granularity=month",
                token,
                "application/json",
                Body::empty(),
            ),
        )
        .await
        .1;
        let usage: serde_json::Value = serde_json::from_slice(&usage).unwrap_or_default();
        entry.usage = usage["points"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|point| {
                (
                    point["meter"].as_str().unwrap_or_default().to_string(),
                    point["quantity"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let invoice = crate::billing::service::generate_invoice(platform, id, &period, month)
            .await
            .map_err(|error| demo_error(format!("invoice for {id}: {error}")))?;
        entry.invoice = DemoInvoice {
            number: invoice.number,
            plans: invoice.plans,
            lines: invoice
                .lines
                .iter()
                .map(|line| (line.description.clone(), line.amount.to_string()))
                .chain((!invoice.minimum_true_up.is_zero()).then(|| {
                    (
                        "monthly minimum true-up".to_string(),
                        invoice.minimum_true_up.to_string(),
                    )
                }))
                .collect(),
            total: invoice.total.to_string(),
            currency: invoice.currency,
        };
    }
    let costs = crate::billing::service::cost_report(
        platform,
        &period,
        &platform.settings().billing.unit_prices,
    )
    .await
    .map_err(|error| demo_error(format!("cost report: {error}")))?
    .tenants
    .into_iter()
    .filter(|row| DEMO_TENANTS.iter().any(|demo| demo.id == row.tenant))
    .map(|row| {
        (
            row.tenant,
            row.direct.to_string(),
            row.shared.to_string(),
            row.revenue.to_string(),
            row.margin.to_string(),
        )
    })
    .collect();
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
        base_version,
        base_trained_now,
        base_training_ms,
        tenants,
        offboarded: OFFBOARDED.to_string(),
        offboard_objects_deleted: report.objects_deleted,
        offboard_remaining_objects: report.remaining_objects,
        offboard_old_key_status: old_key_status.as_u16(),
        costs,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

type Onboarded<'a> = (&'a DemoTenant, TenantId, String, f64, usize);

/// The platform's current shared base, trained on the pooled general corpus when there is
/// none yet (an operator's `tenantry model train-base`).
async fn ensure_base(jobs: &JobService) -> PlatformResult<(String, bool, f64)> {
    let bases = jobs.platform().base_models();
    let model_error = |error: crate::model::ModelError| demo_error(error.to_string());
    if let Some(version) = bases.current().await.map_err(model_error)? {
        return Ok((version, false, 0.0));
    }
    let started = Instant::now();
    let train = crate::model::TrainConfig {
        epochs: 3,
        ..crate::model::TrainConfig::default()
    };
    let meta = bases
        .train(
            BASE_ROWS,
            DEMO_SEED,
            crate::model::EncoderConfig::default(),
            train,
            true,
        )
        .await
        .map_err(model_error)?;
    Ok((meta.version, true, started.elapsed().as_secs_f64() * 1000.0))
}

/// Uploads the tenant's unlabelled clauses (canonical shape, no label) as Parquet.
async fn upload_inbox(
    app: &axum::Router,
    token: &str,
    demo: &DemoTenant,
    profile: &crate::fixtures::TenantProfile,
) -> PlatformResult<()> {
    let clauses = crate::fixtures::clauses(profile, INBOX_ROWS, DEMO_SEED + 1);
    let frame = polars::prelude::DataFrame::new_infer_height(vec![
        polars::prelude::Column::new(
            "clause_id".into(),
            clauses
                .iter()
                .map(|c| c.clause_id.clone())
                .collect::<Vec<_>>(),
        ),
        polars::prelude::Column::new(
            "text".into(),
            clauses.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
        ),
    ])
    .map_err(|e| demo_error(e.to_string()))?;
    let bytes = crate::dataset::frame_to_parquet(&mut frame.clone()).map_err(demo_error)?;
    create(
        app,
        request(
            "PUT",
            &format!("/v1/datasets/{}", demo.inbox),
            token,
            "application/vnd.apache.parquet",
            Body::from(bytes),
        ),
        &format!("inbox upload for {}", demo.id),
    )
    .await?;
    Ok(())
}

/// The tenant's `clauses` model and its scored inbox, read back through the API.
async fn demo_model(app: &axum::Router, token: &str, run: &DemoPipeline) -> DemoModel {
    let get = |uri: String| async move {
        let (_, body) = call(
            app,
            request("GET", &uri, token, "application/json", Body::empty()),
        )
        .await;
        serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default()
    };
    let model = get("/v1/models/clauses".to_string()).await;
    let production = model["pins"]["labels"]["production"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let versions = model["versions"].as_array().cloned().unwrap_or_default();
    let meta = versions
        .iter()
        .find(|v| v["version"] == production.as_str())
        .cloned()
        .unwrap_or_default();
    let summary = get(format!(
        "/v1/pipelines/{}/outputs/score/summary.json",
        run.run_id
    ))
    .await;
    DemoModel {
        name: "clauses".to_string(),
        version: production,
        base: meta["base"]["version"]
            .as_str()
            .unwrap_or("independent")
            .to_string(),
        holdout_rows: meta["metrics"]["rows"].as_u64().unwrap_or(0),
        accuracy: meta["metrics"]["accuracy"].as_f64().unwrap_or(0.0),
        macro_f1: meta["metrics"]["macro_f1"].as_f64().unwrap_or(0.0),
        scored_rows: summary["rows"].as_u64().unwrap_or(0),
        needs_review: summary["needs_review"].as_u64().unwrap_or(0),
        scored_output: format!("{}score/data.parquet", run.outputs),
    }
}

/// Issues the tenant a `client` key and calls the online endpoint with three fresh clauses,
/// then asks for a version its model does not have.
async fn demo_online(
    app: &axum::Router,
    admin_token: &str,
    demo: &DemoTenant,
) -> PlatformResult<DemoOnline> {
    let issued = create(
        app,
        request(
            "POST",
            "/v1/keys",
            admin_token,
            "application/json",
            Body::from(r#"{"role": "client", "label": "demo client"}"#),
        ),
        &format!("client key for {}", demo.id),
    )
    .await?;
    let client = issued["token"].as_str().unwrap_or_default().to_string();
    let profile = crate::fixtures::profile(demo.id)
        .ok_or_else(|| demo_error(format!("no fixture profile for {}", demo.id)))?;
    let texts: Vec<String> = crate::fixtures::clauses(profile, 3, DEMO_SEED + 7)
        .into_iter()
        .filter_map(|clause| clause.text)
        .collect();
    let inputs: Vec<serde_json::Value> = texts
        .iter()
        .enumerate()
        .map(|(id, text)| serde_json::json!({"id": id, "text": text}))
        .collect();
    let predict = |body: serde_json::Value| {
        call(
            app,
            request(
                "POST",
                "/v1/predict",
                &client,
                "application/json",
                Body::from(body.to_string()),
            ),
        )
    };
    let started = Instant::now();
    let (status, body) = predict(serde_json::json!({ "inputs": inputs })).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let predictions = answer["predictions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .zip(&texts)
        .map(|(prediction, text)| {
            let label = prediction["label"].as_str().unwrap_or_default().to_string();
            let probability = prediction["probabilities"][&label].as_f64().unwrap_or(0.0) as f32;
            (text.clone(), label, probability)
        })
        .collect();
    let (foreign_version_status, _) =
        predict(serde_json::json!({"inputs": [{"id": 1, "text": "x"}], "version": "v999"})).await;
    Ok(DemoOnline {
        status: status.as_u16(),
        version: answer["version"].as_str().unwrap_or_default().to_string(),
        latency_ms,
        predictions,
        foreign_version_status: foreign_version_status.as_u16(),
    })
}

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
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut running = Vec::new();
    for pool in jobs.pools().iter().cloned() {
        let mut runner = PoolRunner::new(
            jobs.clone(),
            pool.clone(),
            crate::pipeline::handler_registry(false),
            format!("demo-{}", pool.name),
        );
        runner.job_timeout = std::time::Duration::from_secs(120);
        runner.drain_timeout = std::time::Duration::from_secs(5);
        running.push(tokio::spawn(runner.run_configured(shutdown.clone())));
    }
    let mut submitted = Vec::new();
    for (_, _, token, ..) in onboarded {
        let body = Body::from(r#"{"kind":"smoke","group":"demo"}"#);
        let record = create(
            app,
            request("POST", "/v1/jobs", token, "application/json", body),
            "job submit",
        )
        .await?;
        submitted.push((
            token.clone(),
            record["job_id"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let mut runs = Vec::new();
    for (demo, _, token, ..) in onboarded {
        let view = create(
            app,
            request(
                "POST",
                "/v1/pipelines",
                token,
                "application/yaml",
                Body::from(demo.pipeline),
            ),
            &format!("pipeline submit for {}", demo.id),
        )
        .await?;
        runs.push(view["run_id"].as_str().unwrap_or_default().to_string());
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(300);
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
    for pool in running {
        let _ = pool.await;
    }
    Ok((states, pipelines))
}
