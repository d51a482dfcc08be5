//! Pipelines that bring data in and run on their own: tenant transform presets, the
//! sample-gated migration, and cron schedules firing once per period across replicas.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry::clock::ManualClock;
use tenantry::manifest::parse_manifest;
use tenantry::pipeline::{CronLock, CronScheduler, PipelineService};
use tenantry::storage::RelativePath;
use tenantry::tenant::TenantId;
use tokio_util::sync::CancellationToken;

use crate::pipelines::{clause_csv, finished, manifest, start, step};
use crate::support::TestServer;

#[tokio::test]
async fn a_tenant_preset_maps_its_source_format_and_migration_is_gated_by_its_sample() {
    let server = TestServer::start().await;
    let admin = server.onboard("globex", "pro").await;
    let mut config = server.get("/v1/config", &admin).await.json();
    config["transforms"]["legacy"] = json!([{"rename": {"id": "clause_id", "body": "text"}}, {"mapValues": {"column": "kind", "mapping": {"Term": "termination"}, "default": "payment_terms"}}, {"rename": {"kind": "label"}}]);
    let reply = server.put_json("/v1/config", &admin, config.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut bad = config.clone();
    bad["transforms"]["broken"] = json!([{"filter": "len(text) >"}]);
    let reply = server.put_json("/v1/config", &admin, bad.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // The first 10 rows are clean, the rest have texts too short to pass.
    let mut legacy = String::from("id,contract_id,body,kind\n");
    for index in 1..=40 {
        let body = if index <= 10 {
            "This clause is long enough to pass."
        } else {
            "short"
        };
        legacy.push_str(&format!(
            "l-{index:03},k-1,{body},{}\n",
            if index % 2 == 0 { "Term" } else { "Pay" }
        ));
    }
    server.upload_csv(&admin, "legacy", &legacy).await;
    let migration = |sample: &str| {
        format!(
            "apiVersion: tenantry/v1
kind: Pipeline
metadata: {{name: bring-in}}
inputs: {{legacy: {{dataset: legacy}}}}
steps:
  - id: migrate
    migrate:
      input: legacy
      sample: {sample}
      preset: legacy
      validate: {{schema: contract-clause, maxErrorRate: 0.0}}
      intoDataset: clauses
"
        )
    };
    let shutdown = CancellationToken::new();
    let pool = server.start_pool("cpu", shutdown.clone());
    // A sample spread over the file (every 4th row) catches the bad rows: nothing is migrated.
    let run_id = start(&server, &admin, &migration("{fraction: 0.25}")).await;
    let view = finished(&server, &admin, &run_id).await;
    assert_eq!(step(&view, "migrate")["state"], "failed");
    assert!(
        step(&view, "migrate")["reason"]
            .as_str()
            .unwrap()
            .contains("sample failed"),
        "{view}"
    );
    assert_eq!(
        server.get("/v1/datasets/clauses", &admin).await.status,
        StatusCode::NOT_FOUND
    );
    let store = server
        .platform
        .tenant_store(&TenantId::parse("globex").unwrap())
        .await
        .unwrap();
    let report: Value = store
        .get_json(
            &RelativePath::parse(&format!("reports/migrations/{run_id}-migrate.json")).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(report["decision"], "stopped after the sample");
    assert!(report["full"].is_null());
    // The first 10 rows pass as a sample; the full run then fails and stores nothing either.
    let run_id = start(&server, &admin, &migration("{rows: 10}")).await;
    let view = finished(&server, &admin, &run_id).await;
    assert!(
        step(&view, "migrate")["reason"]
            .as_str()
            .unwrap()
            .contains("full migration failed"),
        "{view}"
    );
    assert_eq!(
        server.get("/v1/datasets/clauses", &admin).await.status,
        StatusCode::NOT_FOUND
    );

    // Clean data migrates in full, mapped by the preset, into the canonical dataset.
    let clean: String = legacy.lines().take(11).collect::<Vec<_>>().join("\n") + "\n";
    server.upload_csv(&admin, "legacy", &clean).await;
    let run_id = start(&server, &admin, &migration("{rows: 5}")).await;
    assert_eq!(
        finished(&server, &admin, &run_id).await["state"],
        "succeeded"
    );
    let migrated = server
        .get("/v1/datasets/clauses?format=csv", &admin)
        .await
        .text();
    assert_eq!(
        migrated.lines().next(),
        Some("clause_id,contract_id,text,label")
    );
    assert_eq!(migrated.lines().count(), 11);
    assert!(
        migrated.contains("l-002,k-1,This clause is long enough to pass.,termination"),
        "{migrated}"
    );
    assert!(
        migrated.contains("l-001,k-1,This clause is long enough to pass.,payment_terms"),
        "{migrated}"
    );
    shutdown.cancel();
    pool.await.unwrap();
}

#[tokio::test]
async fn a_schedule_fires_once_per_period_across_replicas_and_restarts() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    server.upload_csv(&admin, "clauses", &clause_csv(5)).await;
    let scheduled = manifest("clauses", 0.0).replace(
        "metadata: {name: clauses}",
        "metadata: {name: nightly}\nschedule: \"0 2 * * *\"",
    );
    let store = server
        .platform
        .tenant_store(&TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    let parsed = parse_manifest(&scheduled).unwrap();
    let registered_at = "2026-03-01T12:00:00Z".parse().unwrap();
    tenantry::pipeline::cron::register_schedule(
        server.platform.system(),
        &store,
        &parsed,
        registered_at,
    )
    .await
    .unwrap();

    let redis = crate::queue_conformance::redis_url();
    let namespace = format!("tenantry-test-cron-{}", uuid::Uuid::now_v7());
    let clock = ManualClock::new(registered_at.timestamp_millis() as u64);
    let replica = |lock: CronLock| {
        CronScheduler::new(
            PipelineService::new(server.jobs.clone()),
            lock,
            clock.clone(),
        )
    };
    let first = replica(CronLock::redis(&redis, &namespace).await.unwrap());
    let second = replica(CronLock::redis(&redis, &namespace).await.unwrap());
    assert!(
        first.tick().await.unwrap().fired.is_empty(),
        "nothing is due before 02:00"
    );

    clock.set(
        "2026-03-02T02:00:05Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            .timestamp_millis() as u64,
    );
    let (a, b) = tokio::join!(first.tick(), second.tick());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.fired.len() + b.fired.len(), 1, "{a:?} {b:?}");
    let runs = server.get("/v1/pipelines", &admin).await.json();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["run_id"], "s-nightly-20260302T020000");
    assert_eq!(runs[0]["trigger"]["period"], "2026-03-02T02:00:00Z");

    // A restarted scheduler whose Redis lost the lock still does not fire the period again.
    let restarted = replica(
        CronLock::redis(&redis, &format!("{namespace}-after-wipe"))
            .await
            .unwrap(),
    );
    assert!(restarted.tick().await.unwrap().fired.is_empty());
    // Down for five days: one catch-up run, for the latest period only.
    clock.set(
        "2026-03-07T03:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            .timestamp_millis() as u64,
    );
    let caught_up = restarted.tick().await.unwrap();
    assert_eq!(
        caught_up.fired,
        vec!["acme/s-nightly-20260307T020000".to_string()]
    );
    assert!(first.tick().await.unwrap().fired.is_empty());
    assert_eq!(
        server
            .get("/v1/pipelines", &admin)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    tenantry::bench::drop_namespace(&redis, &namespace)
        .await
        .unwrap();
    tenantry::bench::drop_namespace(&redis, &format!("{namespace}-after-wipe"))
        .await
        .unwrap();
}
