//! `tenantry bench pipeline`: validate + transform over a generated Parquet dataset, rows per
//! second end to end (read, validate, transform, write), side by side with the same work in
//! pandas on the same file (`scripts/bench_pipeline_pandas.py`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::dataset::{frame_to_parquet, parquet_to_frame};
use crate::manifest::{Manifest, dataset_schema, parse_manifest};
use crate::stages::{apply_ops, validate_frame};

/// The benchmark pipeline; the pandas script implements the same steps.
pub const BENCH_MANIFEST: &str = r#"
apiVersion: tenantry/v1
kind: Pipeline
metadata:
  name: bench-clauses
inputs:
  clauses: {dataset: bench-clauses}
steps:
  - id: check
    validate:
      input: clauses
      schema: contract-clause
      maxErrorRate: 0.1
  - id: clean
    needs: [check]
    transform:
      input: check
      ops:
        - normalizeText: {columns: [text], unicode: nfkc, collapseWhitespace: true}
        - derive: {column: text_length, expr: "len(text)"}
        - filter: "text_length >= 20 and label is not null"
        - mapValues: {column: label, mapping: {limitation_of_liability: liability, indemnification: liability}}
        - dedupe: {columns: [contract_id, text], keep: first}
        - select: [clause_id, contract_id, text, label, text_length]
"#;

#[derive(Debug, Clone, Serialize)]
pub struct PipelineRun {
    pub seconds: f64,
    /// Seconds in read (file + Parquet decode), validate, transform and write (encode +
    /// file); empty for the pandas run.
    pub phases: Vec<(String, f64)>,
    pub rows: u64,
    pub error_rows: u64,
    pub rows_out: u64,
    pub rows_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineBenchReport {
    pub rows: usize,
    pub input_bytes: u64,
    pub tenantry: Vec<PipelineRun>,
    pub pandas: Option<PipelineRun>,
    pub pandas_version: Option<String>,
    pub pandas_error: Option<String>,
    /// Best tenantry rows/s over pandas rows/s.
    pub ratio: Option<f64>,
    /// Whether both produced the same error-row and output-row counts.
    pub same_results: Option<bool>,
}

fn stage_checks(
    manifest: &Manifest,
) -> (
    Vec<crate::manifest::ColumnRule>,
    f64,
    Vec<crate::manifest::TransformOp>,
) {
    let validate = manifest
        .step("check")
        .and_then(|s| s.validate.clone())
        .expect("bench manifest has check");
    let mut rules = dataset_schema::rules_of(validate.schema.as_deref().unwrap_or_default())
        .expect("built-in schema");
    rules.extend(validate.rules.clone());
    let ops = manifest
        .step("clean")
        .and_then(|s| s.transform.clone())
        .expect("bench manifest has clean")
        .ops;
    (rules, validate.max_error_rate.unwrap_or(0.0), ops)
}

/// One end-to-end run of the Rust stages over `source`, writing into `out_dir`.
fn run_once(source: &Path, out_dir: &Path, manifest: &Manifest) -> Result<PipelineRun, String> {
    let (rules, max_error_rate, ops) = stage_checks(manifest);
    let started = Instant::now();
    let mut phases = Vec::new();
    let mut lap = Instant::now();
    let mut phase = |name: &str| {
        phases.push((name.to_string(), lap.elapsed().as_secs_f64()));
        lap = Instant::now();
    };
    let bytes = std::fs::read(source).map_err(|e| e.to_string())?;
    let frame = parquet_to_frame(&bytes)?;
    let rows = frame.height() as u64;
    phase("read");
    let outcome = validate_frame(frame, &rules, max_error_rate).map_err(|e| e.to_string())?;
    let mut errors = outcome.errors;
    phase("validate");
    let mut output = apply_ops(
        polars::prelude::IntoLazy::lazy(outcome.valid),
        &ops,
        &HashMap::new(),
    )
    .and_then(|lazy| lazy.collect())
    .map_err(|e| e.to_string())?;
    phase("transform");
    std::fs::write(out_dir.join("data.parquet"), frame_to_parquet(&mut output)?)
        .map_err(|e| e.to_string())?;
    std::fs::write(
        out_dir.join("errors.parquet"),
        frame_to_parquet(&mut errors)?,
    )
    .map_err(|e| e.to_string())?;
    phase("write");
    let seconds = started.elapsed().as_secs_f64();
    Ok(PipelineRun {
        seconds,
        phases,
        rows,
        error_rows: outcome.summary.error_rows,
        rows_out: output.height() as u64,
        rows_per_second: rows as f64 / seconds,
    })
}

fn run_pandas(
    python: &str,
    source: &Path,
    out_dir: &Path,
) -> Result<(PipelineRun, String), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_pipeline_pandas.py");
    let output = std::process::Command::new(python)
        .arg(&script)
        .arg(source)
        .arg(out_dir)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "pandas baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("pandas output {line:?}: {e}"))?;
    let seconds = value["seconds"].as_f64().unwrap_or(f64::NAN);
    let rows = value["rows"].as_u64().unwrap_or(0);
    Ok((
        PipelineRun {
            seconds,
            phases: Vec::new(),
            rows,
            error_rows: value["error_rows"].as_u64().unwrap_or(0),
            rows_out: value["rows_out"].as_u64().unwrap_or(0),
            rows_per_second: rows as f64 / seconds,
        },
        value["pandas"].as_str().unwrap_or("?").to_string(),
    ))
}

/// Generates the dataset, runs the Rust stages three times and pandas once.
pub fn run_pipeline_bench(
    rows: usize,
    python_opt: Option<&str>,
) -> Result<PipelineBenchReport, String> {
    let manifest = parse_manifest(BENCH_MANIFEST).map_err(|e| e.to_string())?;
    let dir =
        std::env::temp_dir().join(format!("tenantry-bench-pipeline-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let source = dir.join("clauses.parquet");
    let profile = crate::fixtures::profile("acme").expect("acme profile");
    let mut frame = crate::fixtures::source_frame(profile, rows, 7).map_err(|e| e.to_string())?;
    std::fs::write(&source, frame_to_parquet(&mut frame)?).map_err(|e| e.to_string())?;
    drop(frame);
    let input_bytes = std::fs::metadata(&source).map_err(|e| e.to_string())?.len();
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(run_once(&source, &dir, &manifest)?);
    }
    let (pandas, pandas_version, pandas_error) = match python_opt {
        Some(python) => match run_pandas(python, &source, &dir) {
            Ok((run, version)) => (Some(run), Some(version), None),
            Err(error) => (None, None, Some(error)),
        },
        None => (None, None, None),
    };
    let best = runs.iter().map(|r| r.rows_per_second).fold(0.0, f64::max);
    let ratio = pandas.as_ref().map(|p| best / p.rows_per_second);
    let same_results = pandas
        .as_ref()
        .map(|p| p.error_rows == runs[0].error_rows && p.rows_out == runs[0].rows_out);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(PipelineBenchReport {
        rows,
        input_bytes,
        tenantry: runs,
        pandas,
        pandas_version,
        pandas_error,
        ratio,
        same_results,
    })
}
