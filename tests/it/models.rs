//! Models end to end: a base trained by the platform, a tenant's variant fine-tuned by a
//! pipeline step on the train pool, scoring (single partition and fanned out) on the cpu
//! pool, the registry's pins (promote, rollback), the base rollout rule, tenant isolation of
//! the registry and corrupted weights.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry::model::base::BASE_NAME;
use tenantry::model::{EncoderConfig, FeatureConfig, ModelError, ModelRegistry, TrainConfig};
use tenantry::storage::RelativePath;
use tenantry::tenant::TenantId;
use tenantry::usage::{MICROS, Meter, read_events, totals};
use tokio_util::sync::CancellationToken;

use crate::pipelines::{finished, start, step};
use crate::support::TestServer;

async fn train_base(server: &TestServer, encoder: EncoderConfig, rows: usize) -> String {
    server
        .platform
        .base_models()
        .train(
            rows,
            3,
            encoder,
            TrainConfig {
                epochs: 2,
                ..TrainConfig::default()
            },
            true,
        )
        .await
        .expect("base trains")
        .version
}

/// Uploads `rows` of the tenant's generated clauses (canonical CSV) as `clauses`, and an
/// unlabelled inbox of `inbox_rows` as Parquet.
async fn upload_data(server: &TestServer, token: &str, rows: usize, inbox_rows: usize) {
    let acme = tenantry::fixtures::profile("acme").unwrap();
    let (csv, _) = tenantry::fixtures::source_bytes(acme, rows, 5).unwrap();
    let reply = server
        .send(
            Method::PUT,
            "/v1/datasets/clauses",
            Some(token),
            Some("text/csv"),
            csv,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let inbox = tenantry::fixtures::clauses(acme, inbox_rows, 6);
    let mut frame = polars::prelude::DataFrame::new_infer_height(vec![
        polars::prelude::Column::new(
            "clause_id".into(),
            inbox
                .iter()
                .map(|c| c.clause_id.clone())
                .collect::<Vec<_>>(),
        ),
        polars::prelude::Column::new(
            "text".into(),
            inbox.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
        ),
    ])
    .unwrap();
    let parquet = tenantry::dataset::frame_to_parquet(&mut frame).unwrap();
    let reply = server
        .send(
            Method::PUT,
            "/v1/datasets/inbox",
            Some(token),
            Some("application/vnd.apache.parquet"),
            parquet,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
}

fn tune_manifest(params: &str, extra_steps: &str) -> String {
    format!(
        "apiVersion: tenantry/v1
kind: Pipeline
metadata: {{name: tune}}
inputs:
  raw: {{dataset: clauses}}
  inbox: {{dataset: inbox}}
steps:
  - id: tune
    finetune: {{input: raw, model: clauses, params: {params}}}
{extra_steps}"
    )
}

const SCORE_STEPS: &str = "  - id: whole
    needs: [tune]
    score: {input: inbox, model: clauses, keyColumn: clause_id}
  - id: parts
    needs: [tune]
    score: {input: inbox, model: clauses, keyColumn: clause_id, partitionRows: 100}
";

fn start_pools(server: &TestServer) -> (CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
    let shutdown = CancellationToken::new();
    let pools = vec![
        server.start_pool("cpu", shutdown.clone()),
        server.start_pool("train", shutdown.clone()),
    ];
    (shutdown, pools)
}

async fn stop(shutdown: CancellationToken, pools: Vec<tokio::task::JoinHandle<()>>) {
    shutdown.cancel();
    for pool in pools {
        pool.await.unwrap();
    }
}

async fn download_frame(
    server: &TestServer,
    token: &str,
    path: &str,
) -> polars::prelude::DataFrame {
    let reply = server.get(path, token).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    tenantry::dataset::parquet_to_frame(&reply.body).unwrap()
}

/// Stores a small independent model as version v1 of `name` for `tenant`, pinned as
/// production (trained in-process; no workers needed).
pub async fn save_small_model(server: &TestServer, tenant: &str, name: &str) {
    let (texts, labels) = tenantry::model::base::general_corpus(40, 1);
    let config = EncoderConfig::compact();
    let train = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    let device = tenantry::model::training_device(false).unwrap();
    let (encoder, variant) = tenantry::model::train::train_independent(
        &config,
        &texts,
        &labels,
        &train,
        &device,
        |_| true,
    )
    .unwrap();
    let (holdout_texts, holdout_labels) = (variant.holdout_of(&texts), variant.holdout_of(&labels));
    let lineage = tenantry::model::registry::Lineage {
        dataset: "datasets/corpus/data.parquet".into(),
        rows: texts.len(),
        text_column: "text".into(),
        label_column: "label".into(),
        train,
        job_id: "test".into(),
        run_id: None,
        code_version: "test".into(),
    };
    let registry = registry(server, tenant).await;
    registry
        .save(
            name,
            tenantry::model::registry::NewVersion {
                variant,
                own_encoder: Some(encoder),
                base: None,
                encoder: config,
                lineage,
                holdout_texts,
                holdout_labels,
                training_seconds: 0.0,
            },
        )
        .await
        .unwrap();
    registry
        .promote(name, "v1", "production", "test")
        .await
        .unwrap();
}

async fn registry(server: &TestServer, tenant: &str) -> ModelRegistry {
    let store = server
        .platform
        .tenant_store(&TenantId::parse(tenant).unwrap())
        .await
        .unwrap();
    ModelRegistry::new(store, server.platform.base_models().clone())
}

#[tokio::test]
async fn a_variant_is_fine_tuned_and_fanned_out_scoring_matches_one_partition() {
    let server = TestServer::start().await;
    let base = train_base(&server, EncoderConfig::compact(), 300).await;
    let admin = server.onboard("acme", "pro").await;
    upload_data(&server, &admin, 800, 430).await;
    let (shutdown, pools) = start_pools(&server);
    let run = start(&server, &admin, &tune_manifest("{epochs: 25}", SCORE_STEPS)).await;
    let view = finished(&server, &admin, &run).await;
    stop(shutdown, pools).await;
    assert_eq!(view["state"], "succeeded", "{view}");

    // The variant: over the current base, measured on its holdout, pinned as production.
    let model = server.get("/v1/models/clauses", &admin).await.json();
    assert_eq!(model["pins"]["labels"]["production"], "v1", "{model}");
    let meta = &model["versions"][0];
    assert_eq!(meta["base"], json!({"name": BASE_NAME, "version": base}));
    let accuracy = meta["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.85, "holdout accuracy {accuracy}: {meta}");
    assert!(
        meta["metrics"]["macro_f1"].as_f64().unwrap() >= 0.8,
        "{meta}"
    );
    // The raw upload has a few rows with an unknown label ("miscellaneous"): a class too.
    let classes = meta["labels"].as_array().unwrap().len();
    assert!(classes >= 10, "{meta}");
    assert_eq!(
        meta["metrics"]["confusion"].as_array().unwrap().len(),
        classes
    );
    assert_eq!(meta["lineage"]["dataset"], "datasets/clauses/data.parquet");
    assert_eq!(meta["promotion"]["promoted"], true);
    let epochs = meta["epochs"].as_array().unwrap();
    assert!(
        epochs.last().unwrap()["loss"].as_f64() < epochs[0]["loss"].as_f64(),
        "training reduced the loss: {epochs:?}"
    );
    let tune = server
        .get(
            &format!("/v1/pipelines/{run}/outputs/tune/model.json"),
            &admin,
        )
        .await
        .json();
    assert_eq!(tune["version"], "v1");

    // The stored inbox is one row group of 430 rows: five partitions of 86 rows, and a merge.
    // The merged output equals the single-partition one.
    let parts = step(&view, "parts");
    assert_eq!(parts["state"], "succeeded");
    for index in 0..5 {
        let job = server
            .get(&format!("/v1/jobs/{run}.parts.p{index:04}"), &admin)
            .await
            .json();
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let missing = server
        .get(&format!("/v1/jobs/{run}.parts.p0005"), &admin)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let whole = download_frame(
        &server,
        &admin,
        &format!("/v1/pipelines/{run}/outputs/whole/data.parquet"),
    )
    .await;
    let merged = download_frame(
        &server,
        &admin,
        &format!("/v1/pipelines/{run}/outputs/parts/data.parquet"),
    )
    .await;
    assert_eq!(whole.height(), 430);
    assert!(
        whole.equals_missing(&merged),
        "fan-out changed the rows:\n{whole}\n{merged}"
    );
    let outputs = server
        .get(&format!("/v1/pipelines/{run}/outputs"), &admin)
        .await
        .text();
    assert!(
        !outputs.contains("/parts/parts/"),
        "partition files are removed after the merge: {outputs}"
    );
    let columns: Vec<String> = whole
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        &columns[..5],
        [
            "clause_id",
            "label",
            "predicted_label",
            "confidence",
            "model_version"
        ]
    );
    assert!(columns.contains(&"p_termination".to_string()));
    let versions = whole
        .column("model_version")
        .unwrap()
        .str()
        .unwrap()
        .clone();
    assert!(versions.iter().all(|v| v == Some("v1")));

    // Usage: rows scored by both steps, exactly, and training time.
    let store = server
        .platform
        .tenant_store(&TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    let usage = totals(&read_events(&store).await.unwrap());
    assert_eq!(
        usage.get(&Meter::RowsScored),
        Some(&(860 * MICROS)),
        "{usage:?}"
    );
    assert!(
        usage.get(&Meter::TrainingSeconds).is_some_and(|s| *s > 0),
        "{usage:?}"
    );
    assert!(
        usage.get(&Meter::CpuSeconds).is_some_and(|s| *s > 0),
        "{usage:?}"
    );
}

#[tokio::test]
async fn scoring_applies_the_tenants_threshold_and_label_renames() {
    let server = TestServer::start().await;
    train_base(&server, EncoderConfig::compact(), 300).await;
    let admin = server.onboard("acme", "pro").await;
    upload_data(&server, &admin, 600, 120).await;
    let mut config = server.get("/v1/config", &admin).await.json();
    config["confidence_threshold"] = json!(0.999999);
    config["label_renames"] = json!({"termination": "ending"});
    config["output_format"] = json!("csv");
    let reply = server.put_json("/v1/config", &admin, config).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let (shutdown, pools) = start_pools(&server);
    let steps = "  - id: score\n    needs: [tune]\n    score: {input: inbox, model: clauses}\n";
    let run = start(&server, &admin, &tune_manifest("{epochs: 10}", steps)).await;
    let view = finished(&server, &admin, &run).await;
    stop(shutdown, pools).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    let scored = download_frame(
        &server,
        &admin,
        &format!("/v1/pipelines/{run}/outputs/score/data.parquet"),
    )
    .await;
    let columns: Vec<String> = scored
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert!(columns.contains(&"p_ending".to_string()), "{columns:?}");
    assert!(!columns.contains(&"p_termination".to_string()));
    let summary = server
        .get(
            &format!("/v1/pipelines/{run}/outputs/score/summary.json"),
            &admin,
        )
        .await
        .json();
    assert_eq!(summary["rows"], 120);
    assert!(
        summary["needs_review"].as_u64().unwrap() > 0,
        "a near-certainty threshold sends rows to review: {summary}"
    );
    let csv = server
        .get(
            &format!("/v1/pipelines/{run}/outputs/score/data.csv"),
            &admin,
        )
        .await;
    assert_eq!(
        csv.status,
        StatusCode::OK,
        "the tenant's output format is written too"
    );
    assert!(csv.text().starts_with("clause_id,label,"));
}

#[tokio::test]
async fn pins_promote_and_roll_back_and_another_tenant_sees_none_of_it() {
    let server = TestServer::start().await;
    train_base(&server, EncoderConfig::compact(), 200).await;
    let admin = server.onboard("acme", "pro").await;
    let other = server.onboard("globex", "pro").await;
    upload_data(&server, &admin, 400, 10).await;
    let (shutdown, pools) = start_pools(&server);
    let first = start(&server, &admin, &tune_manifest("{epochs: 5}", "")).await;
    assert_eq!(
        finished(&server, &admin, &first).await["state"],
        "succeeded"
    );
    let second = start(
        &server,
        &admin,
        &tune_manifest("{epochs: 5, promote: never, seed: 9}", ""),
    )
    .await;
    assert_eq!(
        finished(&server, &admin, &second).await["state"],
        "succeeded"
    );
    stop(shutdown, pools).await;

    let list = server.get("/v1/models", &admin).await.json();
    assert_eq!(
        list,
        json!([{"name": "clauses", "versions": ["v1", "v2"], "pins": {"production": "v1"}}])
    );
    let promote = |version: &str, label: &str| json!({"version": version, "label": label});
    let reply = server
        .post_json(
            "/v1/models/clauses/promote",
            &admin,
            promote("v2", "production"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["labels"]["production"], "v2");
    let canary = server
        .post_json(
            "/v1/models/clauses/promote",
            &admin,
            promote("v1", "canary"),
        )
        .await;
    assert_eq!(
        canary.json()["labels"],
        json!({"canary": "v1", "production": "v2"})
    );
    let back = server
        .post_json("/v1/models/clauses/rollback", &admin, json!({}))
        .await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.text());
    assert_eq!(back.json()["labels"]["production"], "v1");
    let again = server
        .post_json("/v1/models/clauses/rollback", &admin, json!({}))
        .await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "nothing earlier to roll back to: {}",
        again.text()
    );
    let missing = server
        .post_json(
            "/v1/models/clauses/promote",
            &admin,
            promote("v9", "production"),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Another tenant cannot see, promote or load the model: its registry is its own prefix.
    assert_eq!(server.get("/v1/models", &other).await.json(), json!([]));
    assert_eq!(
        server.get("/v1/models/clauses", &other).await.status,
        StatusCode::NOT_FOUND
    );
    let theirs = server
        .post_json(
            "/v1/models/clauses/promote",
            &other,
            promote("v1", "production"),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let globex = registry(&server, "globex").await;
    assert!(matches!(
        globex.load("clauses", "v1").await,
        Err(ModelError::NotFound(_))
    ));
    let acme = registry(&server, "acme").await;
    let loaded = acme
        .load("clauses", "v1")
        .await
        .expect("acme loads its own variant");
    let texts = ["Either party may terminate this Agreement upon 30 days written notice."];
    let reloaded = acme.load("clauses", "v1").await.unwrap();
    assert_eq!(loaded.probabilities(&texts), reloaded.probabilities(&texts));
}

/// Waits for a job to finish and asserts it succeeded.
async fn succeeded(server: &TestServer, token: &str, job_id: &str) {
    let path = format!("/v1/jobs/{job_id}");
    crate::support::eventually(|| async {
        let state = server.get(&path, token).await.json()["state"].clone();
        ["succeeded", "failed", "dead_lettered", "cancelled"]
            .contains(&state.as_str().unwrap_or(""))
    })
    .await;
    let record = server.get(&path, token).await.json();
    assert_eq!(record["state"], "succeeded", "{record}");
}

#[tokio::test]
async fn a_base_rollout_moves_a_pin_only_when_the_new_variant_is_not_worse() {
    // A deliberately poor base: two hidden units cannot separate ten classes. Wide margins
    // keep both decisions independent of the floating-point order of threaded training.
    let poor = EncoderConfig {
        features: FeatureConfig {
            buckets: 64,
            max_ids: 16,
        },
        dim: 2,
        hidden: 2,
    };
    let server = TestServer::start().await;
    train_base(&server, poor, 50).await;
    let admin = server.onboard("acme", "pro").await;
    upload_data(&server, &admin, 500, 10).await;
    let (shutdown, pools) = start_pools(&server);
    let run = start(&server, &admin, &tune_manifest("{epochs: 15}", "")).await;
    assert_eq!(finished(&server, &admin, &run).await["state"], "succeeded");

    // A good base: the re-fine-tuned variant is better on v1's holdout, so the pin moves.
    let good = train_base(&server, EncoderConfig::compact(), 300).await;
    let queued = tenantry::pipeline::finetune::queue_base_rollout(&server.jobs, &good)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    succeeded(&server, &admin, &queued[0].job_id).await;
    let model = server.get("/v1/models/clauses", &admin).await.json();
    assert_eq!(model["pins"]["labels"]["production"], "v2", "{model}");
    let promoted = &model["versions"][1];
    assert_eq!(promoted["base"]["version"], good);
    assert_eq!(promoted["promotion"]["promoted"], true, "{promoted}");
    assert_eq!(promoted["promotion"]["compared_with"], "v1");

    // Back to a poor base: the new variant is worse on v2's holdout, so v2 keeps the pin.
    let bad = train_base(&server, poor, 50).await;
    let queued = tenantry::pipeline::finetune::queue_base_rollout(&server.jobs, &bad)
        .await
        .unwrap();
    succeeded(&server, &admin, &queued[0].job_id).await;
    stop(shutdown, pools).await;
    let model = server.get("/v1/models/clauses", &admin).await.json();
    assert_eq!(
        model["pins"]["labels"]["production"], "v2",
        "a worse variant keeps the old pin: {model}"
    );
    let rolled = &model["versions"][2];
    assert_eq!(rolled["base"]["version"], bad);
    assert_eq!(rolled["promotion"]["promoted"], false, "{rolled}");
    assert!(
        rolled["promotion"]["new_accuracy"].as_f64()
            < rolled["promotion"]["previous_accuracy"].as_f64(),
        "{rolled}"
    );
}

#[tokio::test]
async fn corrupted_weights_are_a_clear_error_and_scoring_fails_with_it() {
    let server = TestServer::start().await;
    train_base(&server, EncoderConfig::compact(), 200).await;
    let admin = server.onboard("acme", "pro").await;
    upload_data(&server, &admin, 300, 20).await;
    let (shutdown, pools) = start_pools(&server);
    let run = start(&server, &admin, &tune_manifest("{epochs: 3}", "")).await;
    assert_eq!(finished(&server, &admin, &run).await["state"], "succeeded");
    let acme = registry(&server, "acme").await;
    acme.store()
        .put(
            &RelativePath::parse("models/clauses/v1/head.bpk").unwrap(),
            b"not weights".to_vec(),
        )
        .await
        .unwrap();
    let error = acme.load("clauses", "v1").await.unwrap_err();
    assert!(
        matches!(&error, ModelError::Record(message) if message.contains("version v1 of model \"clauses\"")),
        "{error}"
    );
    let score = "apiVersion: tenantry/v1\nkind: Pipeline\nmetadata: {name: score}\ninputs:\n  inbox: {dataset: inbox}\nsteps:\n  - id: score\n    score: {input: inbox, model: clauses}\n";
    let run = start(&server, &admin, score).await;
    let view = finished(&server, &admin, &run).await;
    stop(shutdown, pools).await;
    assert_eq!(view["state"], "failed", "{view}");
    let reason = step(&view, "score")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("model weights"), "{reason}");
}

#[tokio::test]
async fn finetune_params_are_checked_with_their_line() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "pro").await;
    let text = tune_manifest("{epochs: 0, learning_rate: 0.1}", "");
    let reply = server
        .send(
            Method::POST,
            "/v1/manifests/check",
            Some(&admin),
            Some("application/yaml"),
            text.into_bytes(),
        )
        .await;
    let body: Value = reply.json();
    let issues = body["issues"].as_array().cloned().unwrap_or_default();
    let pointers: Vec<&str> = issues
        .iter()
        .filter_map(|i| i["pointer"].as_str())
        .collect();
    assert!(
        pointers.contains(&"/steps/0/finetune/params/epochs"),
        "{body}"
    );
    assert!(
        pointers.contains(&"/steps/0/finetune/params/learning_rate"),
        "{body}"
    );
    assert!(issues.iter().all(|i| i["line"] == 9), "{body}");
}

/// Runs the handler of job `job_id` once more, as a retried attempt would (same job id and
/// payload, attempt 2), and returns what it answered.
async fn run_again(
    server: &TestServer,
    tenant: &str,
    job_id: &str,
) -> Result<tenantry::worker::JobOutput, tenantry::worker::HandlerError> {
    let store = server
        .platform
        .tenant_store(&TenantId::parse(tenant).unwrap())
        .await
        .unwrap();
    let record = server.jobs.get(&store, job_id).await.unwrap();
    let lease = tenantry::queue::Lease {
        job_id: job_id.to_string(),
        tenant: store.tenant().clone(),
        kind: record.kind.clone(),
        token: 1,
        attempt: 2,
        max_attempts: record.max_attempts,
        payload: record.payload,
        expires_at_ms: u64::MAX,
    };
    let handler = tenantry::pipeline::handler_registry(false)
        .get(&record.kind)
        .unwrap();
    let ctx = tenantry::worker::JobContext::new(
        store,
        lease,
        CancellationToken::new(),
        server.jobs.clone(),
    );
    handler.run(ctx).await
}

#[tokio::test]
async fn a_retried_finetune_reuses_its_version_and_a_retried_merge_keeps_its_output() {
    let server = TestServer::start().await;
    train_base(&server, EncoderConfig::compact(), 200).await;
    let admin = server.onboard("acme", "pro").await;
    upload_data(&server, &admin, 400, 250).await;
    let (shutdown, pools) = start_pools(&server);
    let steps = "  - id: parts\n    needs: [tune]\n    score: {input: inbox, model: clauses, partitionRows: 100}\n";
    let run = start(&server, &admin, &tune_manifest("{epochs: 5}", steps)).await;
    assert_eq!(finished(&server, &admin, &run).await["state"], "succeeded");
    let output = format!("/v1/pipelines/{run}/outputs/parts/data.parquet");
    let before = download_frame(&server, &admin, &output).await;

    stop(shutdown, pools).await;
    run_again(&server, "acme", &format!("{run}.tune"))
        .await
        .expect("a retried fine-tune succeeds");
    run_again(&server, "acme", &format!("{run}.parts.merge"))
        .await
        .expect("a retried merge succeeds with its partitions gone");

    let model = server.get("/v1/models/clauses", &admin).await.json();
    assert_eq!(
        model["versions"].as_array().unwrap().len(),
        1,
        "the retry trained nothing new: {model}"
    );
    assert_eq!(model["pins"]["history"].as_array().unwrap().len(), 1);
    let after = download_frame(&server, &admin, &output).await;
    assert!(before.equals_missing(&after));
}
