//! `tenantry demo`: onboards three demo tenants from the embedded fixtures, uploads each one's
//! dataset through the real API handlers, shows that each sees only its own data, offboards
//! one and shows that nothing of it remains.

use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde::Serialize;
use tower::ServiceExt;

use crate::api;
use crate::audit::Actor;
use crate::platform::{Platform, PlatformError, PlatformResult};
use crate::tenant::{TenantId, TenantState};

/// One demo tenant and its embedded fixture.
struct DemoTenant {
    id: &'static str,
    name: &'static str,
    plan: &'static str,
    dataset: &'static str,
    content_type: &'static str,
    fixture: &'static str,
}

const DEMO_TENANTS: [DemoTenant; 3] = [
    DemoTenant {
        id: "acme",
        name: "Acme Corp",
        plan: "enterprise",
        dataset: "acme-clauses",
        content_type: "text/csv",
        fixture: include_str!("../fixtures/acme-clauses.csv"),
    },
    DemoTenant {
        id: "globex",
        name: "Globex GmbH",
        plan: "pro",
        dataset: "globex-clauses",
        content_type: "application/x-ndjson",
        fixture: include_str!("../fixtures/globex-clauses.jsonl"),
    },
    DemoTenant {
        id: "initech",
        name: "Initech Ltd",
        plan: "free",
        dataset: "initech-clauses",
        content_type: "text/csv",
        fixture: include_str!("../fixtures/initech-clauses.csv"),
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
    pub audit_records: usize,
    pub audit_intact: bool,
    pub state: String,
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

/// Runs the demo against `platform` and returns its summary.
pub async fn run_demo(platform: &Platform) -> PlatformResult<DemoSummary> {
    let started = Instant::now();
    let (app, _) = api::router(platform.clone());
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
        let uri = format!("/v1/datasets/{}", demo.dataset);
        let (status, body) = call(
            &app,
            request(
                "PUT",
                &uri,
                &token,
                demo.content_type,
                Body::from(demo.fixture),
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
        onboarded.push((demo, id, token, report.elapsed_ms, rows));
    }

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
