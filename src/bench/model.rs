//! `tenantry bench model`: the `ngram` base and a tenant variant against the natural
//! alternative, scikit-learn `HashingVectorizer` + `SGDClassifier`
//! (`scripts/bench_model_sklearn.py`), on the same generated data in the same run:
//! fine-tune time on 10k rows, macro-F1 on a held-out set, and batch scoring rows/s over a
//! 1M-row Parquet file (read, score, write), one worker process.

use std::path::Path;
use std::time::Instant;

use polars::prelude::*;
use serde::Serialize;

use crate::dataset::{frame_to_parquet, parquet_to_frame};
use crate::manifest::ScoreStage;
use crate::model::base::general_corpus;
use crate::model::registry::{LoadedVariant, VersionMeta};
use crate::model::train::{evaluate, finetune, train_base};
use crate::model::{BaseWeights, EncoderConfig, Metrics, TrainConfig};
use crate::pipeline::score::score_frame;
use crate::tenant::TenantConfig;

#[derive(Debug, Clone, Serialize)]
pub struct ModelSide {
    pub finetune_seconds: f64,
    pub train_rows: usize,
    pub macro_f1: f64,
    pub accuracy: f64,
    pub test_rows: usize,
    pub score_seconds: f64,
    pub score_rows: usize,
    pub score_rows_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelBenchReport {
    pub base_rows: usize,
    pub base_training_seconds: f64,
    pub epochs_run: usize,
    pub tenantry: ModelSide,
    pub sklearn: Option<ModelSide>,
    pub sklearn_version: Option<String>,
    pub sklearn_error: Option<String>,
    /// sklearn fine-tune seconds over ours (> 1: ours is faster).
    pub finetune_speedup: Option<f64>,
    /// Our scoring rows/s over sklearn's.
    pub scoring_ratio: Option<f64>,
    /// Our macro-F1 minus sklearn's (target: >= -0.02).
    pub macro_f1_delta: Option<f64>,
    pub threads: usize,
    /// Where training ran: `cpu` (Flex) or `gpu` (wgpu on Vulkan, `--features gpu`).
    pub device: String,
}

fn texts_labels(rows: &[crate::fixtures::Clause]) -> (Vec<String>, Vec<String>) {
    rows.iter()
        .filter_map(|c| Some((c.text.clone()?, c.label.clone()?)))
        .filter(|(_, label)| crate::fixtures::LABELS.contains(&label.as_str()))
        .unzip()
}

fn write_labelled(path: &Path, texts: &[String], labels: &[String]) -> Result<(), String> {
    let mut frame = DataFrame::new(
        texts.len(),
        vec![
            Column::new("text".into(), texts),
            Column::new("label".into(), labels),
        ],
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(path, frame_to_parquet(&mut frame)?).map_err(|e| e.to_string())
}

fn run_sklearn(python: &str, dir: &Path) -> Result<(ModelSide, String), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_model_sklearn.py");
    let output = std::process::Command::new(python)
        .arg(&script)
        .arg(dir.join("train.parquet"))
        .arg(dir.join("test.parquet"))
        .arg(dir.join("score.parquet"))
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "scikit-learn baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("sklearn output {line:?}: {e}"))?;
    let number = |key: &str| value[key].as_f64().unwrap_or(f64::NAN);
    let count = |key: &str| value[key].as_u64().unwrap_or(0) as usize;
    Ok((
        ModelSide {
            finetune_seconds: number("finetune_seconds"),
            train_rows: count("train_rows"),
            macro_f1: number("macro_f1"),
            accuracy: number("accuracy"),
            test_rows: count("test_rows"),
            score_seconds: number("score_seconds"),
            score_rows: count("score_rows"),
            score_rows_per_second: number("score_rows_per_second"),
        },
        value["sklearn"].as_str().unwrap_or("?").to_string(),
    ))
}

/// Generates the data, trains a base, fine-tunes and scores with tenantry, then runs the
/// scikit-learn baseline on the same files.
pub fn run_model_bench(
    train_rows: usize,
    score_rows: usize,
    python_opt: Option<&str>,
    gpu: bool,
) -> Result<ModelBenchReport, String> {
    let dir = std::env::temp_dir().join(format!("tenantry-bench-model-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let report = run_in(&dir, train_rows, score_rows, python_opt, gpu);
    let _ = std::fs::remove_dir_all(&dir);
    report
}

fn run_in(
    dir: &Path,
    train_rows: usize,
    score_rows: usize,
    python_opt: Option<&str>,
    gpu: bool,
) -> Result<ModelBenchReport, String> {
    let acme = crate::fixtures::profile("acme").expect("acme profile");
    // The tenant's labelled data: the first `train_rows` train, the next quarter as much test.
    let test_rows = (train_rows / 4).max(100);
    let (texts, labels) = texts_labels(&crate::fixtures::clauses(
        acme,
        (train_rows + test_rows) * 51 / 50 + 10,
        101,
    ));
    if texts.len() < train_rows + test_rows {
        return Err("not enough generated rows".into());
    }
    let (train_texts, train_labels) = (&texts[..train_rows], &labels[..train_rows]);
    let (test_texts, test_labels) = (
        &texts[train_rows..train_rows + test_rows],
        &labels[train_rows..train_rows + test_rows],
    );
    write_labelled(&dir.join("train.parquet"), train_texts, train_labels)?;
    write_labelled(&dir.join("test.parquet"), test_texts, test_labels)?;
    let inbox = crate::fixtures::clauses(acme, score_rows, 202);
    let mut score_frame_in = DataFrame::new(
        inbox.len(),
        vec![
            Column::new(
                "clause_id".into(),
                inbox
                    .iter()
                    .map(|c| c.clause_id.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "text".into(),
                inbox.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(|e| e.to_string())?;
    drop(inbox);
    let score_path = dir.join("score.parquet");
    std::fs::write(&score_path, frame_to_parquet(&mut score_frame_in)?)
        .map_err(|e| e.to_string())?;
    drop(score_frame_in);

    // The platform's base, on the pooled general corpus (platform data, other seed).
    let device = crate::model::training_device(gpu).map_err(|e| e.to_string())?;
    let (base_texts, base_labels) = general_corpus(4_000, 7);
    let config = EncoderConfig::default();
    let started = Instant::now();
    let network = train_base(
        &config,
        &base_texts,
        &base_labels,
        &TrainConfig {
            epochs: 3,
            ..TrainConfig::default()
        },
        &device,
        |_| true,
    )
    .map_err(|e| e.to_string())?;
    let base_training_seconds = started.elapsed().as_secs_f64();
    let base = BaseWeights::of(&network.encoder, &config).map_err(|e| e.to_string())?;

    // Fine-tune: what a `finetune` job does once its rows are read.
    let started = Instant::now();
    let train_frame =
        parquet_to_frame(&std::fs::read(dir.join("train.parquet")).map_err(|e| e.to_string())?)?;
    let (texts, labels) = crate::pipeline::finetune::labelled_rows(&train_frame, "text", "label")?;
    let train = TrainConfig {
        epochs: 30,
        ..TrainConfig::default()
    };
    let variant = finetune(&base, &texts, &labels, &train, None, &device, |_| true)
        .map_err(|e| e.to_string())?;
    let finetune_seconds = started.elapsed().as_secs_f64();
    let epochs_run = variant.epochs.len();
    let weights = variant.weights().map_err(|e| e.to_string())?;
    let metrics: Metrics = evaluate(&base, &weights, test_texts, test_labels);

    // Scoring: read the 1M-row Parquet, score, write the scored Parquet.
    let variant = LoadedVariant {
        meta: bench_meta(&config, &variant.labels, &metrics),
        base: std::sync::Arc::new(base),
        weights: std::sync::Arc::new(weights),
    };
    let stage = ScoreStage {
        input: "inbox".into(),
        model: "bench".into(),
        version: None,
        text_column: None,
        key_column: Some("clause_id".into()),
        label: None,
        partition_rows: None,
    };
    let started = Instant::now();
    let frame = parquet_to_frame(&std::fs::read(&score_path).map_err(|e| e.to_string())?)?;
    let mut scored = score_frame(&frame, &variant, &TenantConfig::default(), &stage, 0)?;
    std::fs::write(
        dir.join("tenantry_scores.parquet"),
        frame_to_parquet(&mut scored)?,
    )
    .map_err(|e| e.to_string())?;
    let score_seconds = started.elapsed().as_secs_f64();
    let ours = ModelSide {
        finetune_seconds,
        train_rows,
        macro_f1: metrics.macro_f1,
        accuracy: metrics.accuracy,
        test_rows,
        score_seconds,
        score_rows: frame.height(),
        score_rows_per_second: frame.height() as f64 / score_seconds,
    };
    drop((frame, scored));

    let (sklearn, sklearn_version, sklearn_error) = match python_opt {
        Some(python) => match run_sklearn(python, dir) {
            Ok((side, version)) => (Some(side), Some(version), None),
            Err(error) => (None, None, Some(error)),
        },
        None => (None, None, None),
    };
    Ok(ModelBenchReport {
        base_rows: base_texts.len(),
        base_training_seconds,
        epochs_run,
        finetune_speedup: sklearn
            .as_ref()
            .map(|s| s.finetune_seconds / ours.finetune_seconds),
        scoring_ratio: sklearn
            .as_ref()
            .map(|s| ours.score_rows_per_second / s.score_rows_per_second),
        macro_f1_delta: sklearn.as_ref().map(|s| ours.macro_f1 - s.macro_f1),
        tenantry: ours,
        sklearn,
        sklearn_version,
        sklearn_error,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        device: if gpu { "gpu" } else { "cpu" }.to_string(),
    })
}

fn bench_meta(config: &EncoderConfig, labels: &[String], metrics: &Metrics) -> VersionMeta {
    VersionMeta {
        model: "bench".into(),
        version: "v1".into(),
        created_at: chrono::Utc::now(),
        labels: labels.to_vec(),
        encoder: *config,
        base: None,
        lora: None,
        metrics: metrics.clone(),
        epochs: Vec::new(),
        training_seconds: 0.0,
        lineage: crate::model::registry::Lineage {
            dataset: "bench".into(),
            rows: 0,
            text_column: "text".into(),
            label_column: "label".into(),
            train: TrainConfig::default(),
            job_id: "bench".into(),
            run_id: None,
            code_version: crate::model::base::CODE_VERSION.into(),
        },
        promotion: None,
    }
}
