//! Pipeline runs end to end over HTTP with an in-process worker pool: DAG release, failure
//! propagation, cancel, outputs in three formats, corrupt input, migration gate, tenant
//! presets, isolation, and cron firing once across scheduler replicas.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry::clock::ManualClock;
use tenantry::manifest::parse_manifest;
use tenantry::pipeline::{CronLock, CronScheduler, PipelineService};
use tenantry::storage::RelativePath;
use tenantry::tenant::TenantId;
use tokio_util::sync::CancellationToken;

use crate::support::{Reply, TestServer, eventually};

/// A clean canonical clause CSV with `rows` rows (ids `c-0001`...).
fn clause_csv(rows: usize) -> String {
    let mut csv = String::from("clause_id,contract_id,text,label,page\n");
    for index in 1..=rows {
        let label = ["termination", "payment_terms", "confidentiality"][index % 3];
        csv.push_str(&format!(
            "c-{index:04},k-{},\"Clause number {index} of the agreement between the parties.\",{label},{}\n",
            index / 10,
            1 + index % 50
        ));
    }
    csv
}

fn manifest(dataset: &str, max_error_rate: f64) -> String {
    format!(
        "apiVersion: tenantry/v1
kind: Pipeline
metadata: {{name: clauses}}
inputs:
  raw: {{dataset: {dataset}}}
steps:
  - id: check
    validate: {{input: raw, schema: contract-clause, maxErrorRate: {max_error_rate}}}
  - id: clean
    needs: [check]
    transform:
      input: check
      ops:
        - derive: {{column: text_length, expr: \"len(text)\"}}
        - filter: \"label != 'confidentiality'\"
        - select: [clause_id, label, text_length]
"
    )
}

async fn submit(server: &TestServer, token: &str, text: &str) -> Reply {
    server
        .send(
            Method::POST,
            "/v1/pipelines",
            Some(token),
            Some("application/yaml"),
            text.as_bytes().to_vec(),
        )
        .await
}

/// Waits until the run leaves `running`, then returns its view.
async fn finished(server: &TestServer, token: &str, run_id: &str) -> Value {
    let path = format!("/v1/pipelines/{run_id}");
    let done =
        eventually(|| async { server.get(&path, token).await.json()["state"] != "running" }).await;
    let view = server.get(&path, token).await.json();
    assert!(done, "run never finished: {view}");
    view
}

fn step<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
}

#[tokio::test]
async fn steps_run_in_order_and_outputs_download_in_three_formats() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    assert_eq!(
        server
            .upload_csv(&admin, "clauses", &clause_csv(30))
            .await
            .status,
        StatusCode::CREATED
    );
    let shutdown = CancellationToken::new();
    let pool = server.start_pool("cpu", shutdown.clone());
    let reply = submit(&server, &admin, &manifest("clauses", 0.0)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let run_id = reply.json()["run_id"].as_str().unwrap().to_string();
    let view = finished(&server, &admin, &run_id).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    let (check, clean) = (step(&view, "check"), step(&view, "clean"));
    assert_eq!(check["attempts"], 1);
    assert!(
        check["finished_at"].as_str().unwrap() <= clean["started_at"].as_str().unwrap(),
        "clean started before check finished: {view}"
    );
    assert!(
        clean["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == &json!(format!("outputs/{run_id}/clean/data.parquet")))
    );

    let listing = server
        .get(&format!("/v1/pipelines/{run_id}/outputs"), &admin)
        .await
        .json();
    let files: Vec<String> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["step"].as_str().unwrap(),
                e["file"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "check/data.parquet",
        "check/errors.parquet",
        "check/summary.json",
        "clean/data.parquet",
        "clean/summary.json",
    ] {
        assert!(
            files.contains(&expected.to_string()),
            "{expected} missing from {files:?}"
        );
    }
    let base = format!("/v1/pipelines/{run_id}/outputs/clean/data.parquet");
    let csv = server
        .get(&format!("{base}?format=csv"), &admin)
        .await
        .text();
    assert_eq!(csv.lines().next(), Some("clause_id,label,text_length"));
    assert_eq!(
        csv.lines().count(),
        1 + 20,
        "10 of 30 rows are confidentiality: {csv}"
    );
    let jsonl = server
        .get(&format!("{base}?format=jsonl"), &admin)
        .await
        .text();
    assert_eq!(jsonl.lines().count(), 20);
    assert!(jsonl.lines().all(|line| {
        serde_json::from_str::<Value>(line).unwrap()["text_length"]
            .as_i64()
            .unwrap()
            > 10
    }));
    let parquet = server.get(&base, &admin).await;
    assert_eq!(&parquet.body[..4], b"PAR1");
    let summary = server
        .get(
            &format!("/v1/pipelines/{run_id}/outputs/check/summary.json"),
            &admin,
        )
        .await
        .json();
    assert_eq!(
        (
            summary["rows"].as_u64(),
            summary["error_rows"].as_u64(),
            summary["passed"].as_bool()
        ),
        (Some(30), Some(0), Some(true))
    );
    shutdown.cancel();
    pool.await.unwrap();
}

#[tokio::test]
async fn a_failed_step_skips_its_dependants_with_the_reason_and_keeps_its_report() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    let mut csv = clause_csv(20);
    csv.push_str("c-0001,k-9,\"A duplicate id with an unknown label here.\",miscellaneous,0\n");
    csv.push_str("bad id!,k-9,short,termination,3\n");
    server.upload_csv(&admin, "clauses", &csv).await;
    let shutdown = CancellationToken::new();
    let pool = server.start_pool("cpu", shutdown.clone());
    let reply = submit(&server, &admin, &manifest("clauses", 0.05)).await;
    let run_id = reply.json()["run_id"].as_str().unwrap().to_string();
    let view = finished(&server, &admin, &run_id).await;
    assert_eq!(view["state"], "failed", "{view}");
    let check = step(&view, "check");
    assert_eq!(check["state"], "failed");
    assert!(
        check["reason"]
            .as_str()
            .unwrap()
            .contains("exceeds maxErrorRate"),
        "{check}"
    );
    assert_eq!(check["attempts"], 1, "a failed validation is not retried");
    let clean = step(&view, "clean");
    assert_eq!(clean["state"], "skipped");
    assert_eq!(clean["reason"], "not run: needed step \"check\" failed");
    assert!(
        clean["job_id"].is_null(),
        "a skipped step never becomes a job"
    );

    let summary = server
        .get(
            &format!("/v1/pipelines/{run_id}/outputs/check/summary.json"),
            &admin,
        )
        .await
        .json();
    assert_eq!(
        summary["error_rows"], 3,
        "both copies of c-0001 and the bad row: {summary}"
    );
    for rule in ["unique", "allowed", "min", "regex", "min_length"] {
        assert!(
            summary["errors_per_rule"][rule].as_u64().unwrap_or(0) >= 1,
            "{rule} not counted: {summary}"
        );
    }
    let errors = server
        .get(
            &format!("/v1/pipelines/{run_id}/outputs/check/errors.parquet?format=jsonl"),
            &admin,
        )
        .await
        .text();
    let rows: Vec<Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.contains(
            &json!({"row": 20, "column": "label", "rule": "allowed", "value": "miscellaneous"})
        ),
        "{errors}"
    );
    assert!(
        rows.contains(
            &json!({"row": 21, "column": "clause_id", "rule": "regex", "value": "bad id!"})
        ),
        "{errors}"
    );
    shutdown.cancel();
    pool.await.unwrap();
}

#[tokio::test]
async fn cancel_stops_the_whole_run() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    server.upload_csv(&admin, "clauses", &clause_csv(5)).await;
    let reply = submit(&server, &admin, &manifest("clauses", 0.0)).await;
    let run_id = reply.json()["run_id"].as_str().unwrap().to_string();
    assert_eq!(step(&reply.json(), "check")["state"], "queued");
    assert_eq!(step(&reply.json(), "clean")["state"], "pending");
    let cancelled = server
        .send(
            Method::POST,
            &format!("/v1/pipelines/{run_id}/cancel"),
            Some(&admin),
            None,
            Vec::new(),
        )
        .await
        .json();
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(step(&cancelled, "check")["state"], "cancelled");
    assert_eq!(step(&cancelled, "clean")["state"], "cancelled");
    // Workers that start afterwards run nothing of it.
    let shutdown = CancellationToken::new();
    let pool = server.start_pool("cpu", shutdown.clone());
    let reply2 = submit(&server, &admin, &manifest("clauses", 0.0)).await;
    let other = reply2.json()["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        finished(&server, &admin, &other).await["state"],
        "succeeded"
    );
    let view = server
        .get(&format!("/v1/pipelines/{run_id}"), &admin)
        .await
        .json();
    assert_eq!(view["state"], "cancelled");
    assert!(step(&view, "clean")["job_id"].is_null());
    assert!(
        server
            .get(&format!("/v1/pipelines/{run_id}/outputs"), &admin)
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    shutdown.cancel();
    pool.await.unwrap();
}

#[tokio::test]
async fn corrupt_parquet_fails_the_step_with_a_typed_report_and_the_worker_keeps_serving() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    server.upload_csv(&admin, "clauses", &clause_csv(40)).await;
    server.upload_csv(&admin, "broken", &clause_csv(40)).await;
    let store = server
        .platform
        .tenant_store(&TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    let path = RelativePath::parse("datasets/broken/data.parquet").unwrap();
    let good = store.get(&path).await.unwrap();
    store.put(&path, &good[..good.len() / 2]).await.unwrap();
    let shutdown = CancellationToken::new();
    let pool = server.start_pool("cpu", shutdown.clone());
    let run_id = submit(&server, &admin, &manifest("broken", 0.0))
        .await
        .json()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let view = finished(&server, &admin, &run_id).await;
    assert_eq!(step(&view, "check")["state"], "failed");
    assert!(
        step(&view, "check")["reason"]
            .as_str()
            .unwrap()
            .contains("input \"raw\""),
        "{view}"
    );
    let summary = server
        .get(
            &format!("/v1/pipelines/{run_id}/outputs/check/summary.json"),
            &admin,
        )
        .await
        .json();
    assert_eq!(
        summary["input_error"]["kind"], "unreadable_input",
        "{summary}"
    );
    let again = submit(&server, &admin, &manifest("clauses", 0.0))
        .await
        .json()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        finished(&server, &admin, &again).await["state"],
        "succeeded",
        "the worker survived"
    );
    shutdown.cancel();
    pool.await.unwrap();
}

#[tokio::test]
async fn a_manifest_resolves_names_inside_its_tenant_only() {
    let server = TestServer::start().await;
    let acme = server.onboard("acme", "pro").await;
    let globex = server.onboard("globex", "pro").await;
    server
        .upload_csv(&acme, "secret-clauses", &clause_csv(5))
        .await;
    let theirs = submit(&server, &globex, &manifest("secret-clauses", 0.0)).await;
    let missing = submit(&server, &globex, &manifest("no-such-dataset", 0.0)).await;
    assert_eq!(theirs.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        theirs.json()["error"]["message"]
            .as_str()
            .unwrap()
            .replace("secret-clauses", "X"),
        missing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .replace("no-such-dataset", "X"),
        "another tenant's dataset must look exactly like a missing one"
    );
    let escape = submit(
        &server,
        &globex,
        &manifest("../acme/datasets/secret-clauses", 0.0),
    )
    .await;
    assert_eq!(escape.status, StatusCode::BAD_REQUEST);
    let run_id = submit(&server, &acme, &manifest("secret-clauses", 0.0))
        .await
        .json()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        format!("/v1/pipelines/{run_id}"),
        format!("/v1/pipelines/{run_id}/outputs"),
        format!("/v1/pipelines/{run_id}/outputs/check/summary.json"),
    ] {
        let reply = server.get(&path, &globex).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.text()
        );
    }
    assert!(
        server
            .get("/v1/pipelines", &globex)
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_every_issue_located() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    let bad = manifest("clauses", 2.0).replace("needs: [check]", "needs: [nope]");
    let reply = submit(&server, &admin, &bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_manifest");
    let issues = reply.json()["error"]["issues"].as_array().unwrap().clone();
    let located: Vec<(String, u64)> = issues
        .iter()
        .map(|i| {
            (
                i["pointer"].as_str().unwrap().to_string(),
                i["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        located.contains(&("/steps/0/validate/maxErrorRate".into(), 8)),
        "{located:?}"
    );
    assert!(
        located.contains(&("/steps/1/needs/0".into(), 10)),
        "{located:?}"
    );
    let not_utf8 = server
        .send(
            Method::POST,
            "/v1/pipelines",
            Some(&admin),
            Some("application/yaml"),
            vec![0xff, 0xfe, 0x00],
        )
        .await;
    assert_eq!(not_utf8.status, StatusCode::BAD_REQUEST);
    let lint = server
        .send(
            Method::POST,
            "/v1/manifests/check",
            Some(&admin),
            None,
            manifest("clauses", 0.0).into_bytes(),
        )
        .await
        .json();
    assert_eq!(lint["valid"], true);
    assert_eq!(lint["order"], json!(["check", "clean"]));
}

#[tokio::test]
async fn a_tenant_preset_maps_its_source_format_and_migration_is_gated_by_its_sample() {
    let server = TestServer::start().await;
    let admin = server.onboard("globex", "pro").await;
    let mut config = server.get("/v1/config", &admin).await.json();
    config["transforms"]["legacy"] = json!([{"rename": {"id": "clause_id", "body": "text"}}, {"mapValues": {"column": "kind", "mapping": {"Term": "termination"}, "default": "payment_terms"}}, {"rename": {"kind": "label"}}]);
    let reply = server
        .send(
            Method::PUT,
            "/v1/config",
            Some(&admin),
            Some("application/json"),
            config.to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut bad = config.clone();
    bad["transforms"]["broken"] = json!([{"filter": "len(text) >"}]);
    let reply = server
        .send(
            Method::PUT,
            "/v1/config",
            Some(&admin),
            Some("application/json"),
            bad.to_string().into_bytes(),
        )
        .await;
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
    let run_id = submit(&server, &admin, &migration("{fraction: 0.25}"))
        .await
        .json()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
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
    let run_id = submit(&server, &admin, &migration("{rows: 10}"))
        .await
        .json()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
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
    let run_id = submit(&server, &admin, &migration("{rows: 5}"))
        .await
        .json()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
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
    tenantry::pipeline::cron::register_schedule(&store, &parsed, registered_at)
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
