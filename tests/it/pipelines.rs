//! Pipeline runs end to end over HTTP with an in-process worker pool: DAG release, failure
//! propagation, cancel, outputs in three formats, corrupt input, located manifest errors and
//! isolation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry::storage::RelativePath;
use tenantry::tenant::TenantId;
use tokio_util::sync::CancellationToken;

use crate::support::{Reply, TestServer, eventually};

/// A clean canonical clause CSV with `rows` rows (ids `c-0001`...).
pub fn clause_csv(rows: usize) -> String {
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

pub fn manifest(dataset: &str, max_error_rate: f64) -> String {
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

pub async fn submit(server: &TestServer, token: &str, text: &str) -> Reply {
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

/// Submits a manifest that must start a run; returns the run id.
pub async fn start(server: &TestServer, token: &str, text: &str) -> String {
    let reply = submit(server, token, text).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()["run_id"].as_str().unwrap().to_string()
}

/// Waits until the run leaves `running`, then returns its view.
pub async fn finished(server: &TestServer, token: &str, run_id: &str) -> Value {
    let path = format!("/v1/pipelines/{run_id}");
    let done =
        eventually(|| async { server.get(&path, token).await.json()["state"] != "running" }).await;
    let view = server.get(&path, token).await.json();
    assert!(done, "run never finished: {view}");
    view
}

pub fn step<'a>(view: &'a Value, id: &str) -> &'a Value {
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
    let run_id = start(&server, &admin, &manifest("broken", 0.0)).await;
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
    let again = start(&server, &admin, &manifest("clauses", 0.0)).await;
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
    let run_id = start(&server, &acme, &manifest("secret-clauses", 0.0)).await;
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
