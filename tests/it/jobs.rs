//! Jobs through the API with an in-process worker pool: submit, run, inspect, cancel,
//! idempotency and validation.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tenantry::config::PoolRuntime;
use tokio_util::sync::CancellationToken;

use crate::support::{TestServer, eventually, test_runner};

#[tokio::test]
async fn a_submitted_job_runs_and_its_record_tells_the_story() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    let shutdown = CancellationToken::new();
    let pool = server.start_pool("cpu", shutdown.clone());

    let reply = server
        .post_json(
            "/v1/jobs",
            &admin,
            json!({"kind": "sleep", "payload": {"ms": 5}, "group": "nightly"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{job_id}");
    let done =
        eventually(|| async { server.get(&path, &admin).await.json()["state"] == "succeeded" })
            .await;
    assert!(
        done,
        "job never succeeded: {}",
        server.get(&path, &admin).await.text()
    );
    let view = server.get(&path, &admin).await.json();
    assert_eq!(view["attempts"], 1);
    assert_eq!(view["pool"], "cpu");
    assert_eq!(
        view["output_location"],
        format!("outputs/{job_id}/result.json")
    );
    assert!(view["started_at"].is_string() && view["finished_at"].is_string());

    let listed = server.get("/v1/jobs?state=succeeded", &admin).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(
        server.get("/v1/jobs?state=bogus", &admin).await.status,
        StatusCode::BAD_REQUEST
    );
    shutdown.cancel();
    pool.await.unwrap();
}

#[tokio::test]
async fn queued_jobs_explain_themselves_and_can_be_cancelled() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = server
            .post_json("/v1/jobs", &admin, json!({"kind": "noop"}))
            .await;
        ids.push(reply.json()["job_id"].as_str().unwrap().to_string());
    }
    let view = server
        .get(&format!("/v1/jobs/{}", ids[2]), &admin)
        .await
        .json();
    assert_eq!(view["state"], "queued");
    assert_eq!(view["explain"]["position_opt"], 2);
    assert_eq!(view["explain"]["blocked_by"], "no_worker", "{view}");

    let cancelled = server
        .send(
            Method::POST,
            &format!("/v1/jobs/{}/cancel", ids[0]),
            Some(&admin),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.json()["state"], "cancelled");
    let queued = server.get("/v1/jobs?state=queued", &admin).await.json();
    assert_eq!(queued.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn idempotency_keys_and_invalid_submissions() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    let first = server
        .post_json(
            "/v1/jobs",
            &admin,
            json!({"kind": "noop", "idempotency_key": "nightly-2026-11-28"}),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = server
        .post_json(
            "/v1/jobs",
            &admin,
            json!({"kind": "noop", "idempotency_key": "nightly-2026-11-28"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["job_id"], first.json()["job_id"]);
    assert_eq!(
        server
            .get("/v1/jobs", &admin)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let big = "x".repeat(70 * 1024);
    for (body, expected) in [
        (json!({"kind": "no-such-kind"}), StatusCode::BAD_REQUEST),
        (json!({"kind": "../etc"}), StatusCode::BAD_REQUEST),
        (
            json!({"kind": "noop", "max_attempts": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"kind": "noop", "payload": {"blob": big}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"kind": "noop", "tenant": "globex"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"kind": "noop", "band": "urgent"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let reply = server.post_json("/v1/jobs", &admin, body.clone()).await;
        assert_eq!(reply.status, expected, "{body}: {}", reply.text());
    }
    let (_, viewer) = server.key(&admin, "viewer").await;
    let denied = server
        .post_json("/v1/jobs", &viewer, json!({"kind": "noop"}))
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(server.get("/v1/jobs", &viewer).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_job_of_an_unknown_handler_is_dead_lettered_and_can_be_redriven() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    let shutdown = CancellationToken::new();
    // A worker built without the data-stage handlers: `validate` has a pool but no handler on
    // this worker, a permanent failure.
    let runner = tenantry::worker::PoolRunner::new(
        server.jobs.clone(),
        server.pool("cpu"),
        tenantry::worker::HandlerRegistry::builtin(false),
        "no-stages".to_string(),
    );
    let token = shutdown.clone();
    let pool = tokio::spawn(async move { runner.run_configured(token).await.unwrap() });
    let reply = server
        .post_json("/v1/jobs", &admin, json!({"kind": "validate"}))
        .await;
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{job_id}");
    let dead =
        eventually(|| async { server.get(&path, &admin).await.json()["state"] == "dead_lettered" })
            .await;
    assert!(dead, "{}", server.get(&path, &admin).await.text());
    let letters = server.get("/v1/dlq", &admin).await.json();
    assert_eq!(letters[0]["job_id"], job_id.as_str());
    assert!(
        letters[0]["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no handler")
    );
    let redrive = server
        .send(
            Method::POST,
            &format!("/v1/dlq/{job_id}/redrive"),
            Some(&admin),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(redrive.status, StatusCode::OK, "{}", redrive.text());
    let missing = server
        .send(
            Method::POST,
            "/v1/dlq/not-a-job/redrive",
            Some(&admin),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    shutdown.cancel();
    pool.await.unwrap();
}

#[tokio::test]
async fn metrics_show_queue_depth_per_tenant_to_operators_only() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    for _ in 0..3 {
        server
            .post_json("/v1/jobs", &admin, json!({"kind": "noop"}))
            .await;
    }
    let denied = server.get("/metrics", &admin).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let metrics = server.get("/metrics", &server.admin_token).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    assert!(
        text.contains("tenantry_queue_jobs{pool=\"cpu\",tenant=\"acme\",state=\"queued\"} 3"),
        "{text}"
    );
    assert!(text.contains("# TYPE tenantry_job_wait_seconds histogram"));
}

#[tokio::test]
async fn a_dedicated_pool_takes_its_tenants_jobs_and_only_theirs() {
    use tenantry::config::PoolConfig;
    let server = TestServer::start().await;
    let pool = |name: &str, tenants: &[&str]| PoolConfig {
        name: name.to_string(),
        kinds: vec!["noop".to_string()],
        concurrency: 2,
        device: "cpu".to_string(),
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        job_timeouts_ms: Default::default(),
        runtime: Default::default(),
    };
    let pools = vec![pool("shared", &[]), pool("acme-only", &["acme"])];
    let queues = pools
        .iter()
        .map(|p| {
            let queue: std::sync::Arc<dyn tenantry::queue::JobQueue> =
                std::sync::Arc::new(tenantry::queue::MemoryQueue::new(p.concurrency));
            (p.name.clone(), queue)
        })
        .collect();
    let jobs = tenantry::jobs::JobService::new(
        server.platform.clone(),
        queues,
        pools,
        std::sync::Arc::new(tenantry::clock::SystemClock),
    );
    let acme = tenantry::TenantId::parse("acme").unwrap();
    let globex = tenantry::TenantId::parse("globex").unwrap();
    assert_eq!(jobs.pool_for(&acme, "noop").unwrap().name, "acme-only");
    assert_eq!(jobs.pool_for(&globex, "noop").unwrap().name, "shared");
    assert!(jobs.pool_for(&globex, "finetune").is_none());
}

#[tokio::test]
async fn a_job_running_past_its_kind_timeout_is_stopped_and_recorded() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    let mut pool = server.pool("cpu");
    pool.job_timeouts_ms.insert("sleep".to_string(), 50);
    let mut runner = test_runner(&server.jobs, pool);
    runner.lease_ms = 10_000;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));
    let reply = server
        .post_json(
            "/v1/jobs",
            &admin,
            json!({"kind": "sleep", "payload": {"ms": 600000}, "max_attempts": 1}),
        )
        .await;
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{job_id}");
    let dead =
        eventually(|| async { server.get(&path, &admin).await.json()["state"] == "dead_lettered" })
            .await;
    assert!(dead, "{}", server.get(&path, &admin).await.text());
    let view = server.get(&path, &admin).await.json();
    assert_eq!(view["error"], "timed out after 50 ms");
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_pool_on_the_apalis_runtime_runs_jobs_and_records_their_outcomes() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    let mut runner = test_runner(&server.jobs, server.pool("cpu"));
    runner.lease_ms = 10_000;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run_on_apalis(shutdown.clone()));
    let ok = server
        .post_json(
            "/v1/jobs",
            &admin,
            json!({"kind": "sleep", "payload": {"ms": 5}}),
        )
        .await
        .json()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let broken = server
        .post_json(
            "/v1/jobs",
            &admin,
            json!({"kind": "validate", "max_attempts": 3}),
        )
        .await
        .json()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let state = |id: String| {
        let server = &server;
        let admin = admin.clone();
        async move { server.get(&format!("/v1/jobs/{id}"), &admin).await.json() }
    };
    assert!(eventually(|| async { state(ok.clone()).await["state"] == "succeeded" }).await);
    assert_eq!(
        state(ok.clone()).await["output_location"],
        format!("outputs/{ok}/result.json")
    );
    assert!(eventually(|| async { state(broken.clone()).await["state"] == "dead_lettered" }).await);
    let dead = state(broken.clone()).await;
    assert_eq!(
        dead["attempts"], 1,
        "a permanent error is not retried: {dead}"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_idle_apalis_worker_picks_up_a_job_submitted_later() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    let mut runner = test_runner(&server.jobs, server.pool("cpu"));
    runner.lease_ms = 1_500;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run_on_apalis(shutdown.clone()));
    // Let the worker find the queue empty and park (apalis then sleeps until woken); the job
    // must be picked up well before apalis's own ~30 s idle wake-up.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let job = server
        .post_json("/v1/jobs", &admin, json!({"kind": "noop"}))
        .await;
    let job_id = job.json()["job_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut state = serde_json::Value::Null;
    while std::time::Instant::now() < deadline {
        state = server
            .get(&format!("/v1/jobs/{job_id}"), &admin)
            .await
            .json()["state"]
            .clone();
        if state == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(state, "succeeded");
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_handler_on_both_runtimes() {
    for runtime in [PoolRuntime::Apalis, PoolRuntime::Native] {
        cancel_running_job(runtime).await;
    }
}

async fn cancel_running_job(runtime: PoolRuntime) {
    let mut server = TestServer::start().await;
    server.set_runtime(runtime);
    let admin = server.onboard("acme", "pro").await;
    let shutdown = CancellationToken::new();
    let pool = server.start_pool("cpu", shutdown.clone());
    let reply = server
        .post_json(
            "/v1/jobs",
            &admin,
            json!({"kind": "sleep", "payload": {"ms": 600000}}),
        )
        .await;
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{job_id}");
    assert!(
        eventually(|| async { server.get(&path, &admin).await.json()["state"] == "running" }).await
    );
    let cancelled = server
        .send(
            Method::POST,
            &format!("{path}/cancel"),
            Some(&admin),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(cancelled.json()["state"], "cancelled");
    shutdown.cancel();
    // A handler still sleeping its ten minutes would hold the drain for its whole deadline.
    tokio::time::timeout(std::time::Duration::from_secs(4), pool)
        .await
        .expect("the cancelled handler stopped")
        .unwrap();
    assert_eq!(server.get(&path, &admin).await.json()["state"], "cancelled");
}
