//! Job handlers of the data stages. Each reads its step from the run record in the tenant's
//! own store, resolves its input inside the tenant (an input alias names one of the tenant's
//! datasets, a step id names that step's output), runs polars off the async threads, and writes
//! under `outputs/<run>/<step>/`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use polars::prelude::*;
use serde_json::json;

use crate::dataset::{DatasetFormat, frame_to_parquet, guarded, parquet_to_frame, put_dataset};
use crate::manifest::{
    ColumnRule, ManifestV1, Step, TransformOp, ValidationChecks, dataset_schema, parse_ops,
};
use crate::pipeline::run::{RunRecord, step_output_dir};
use crate::stages::{ValidationSummary, apply_ops, take_sample, validate_frame};
use crate::storage::{RelativePath, StorageError, TenantStore};
use crate::worker::{HandlerError, HandlerRegistry, JobContext, JobHandler, JobOutput};

/// Registers the data-stage handlers.
pub fn register(registry: &mut HandlerRegistry) {
    registry.register("validate", Arc::new(Validate));
    registry.register("transform", Arc::new(Transform));
    registry.register("migrate", Arc::new(Migrate));
}

pub(crate) fn permanent(message: impl Into<String>) -> HandlerError {
    HandlerError::permanent(message)
}

pub(crate) fn storage_error(error: StorageError) -> HandlerError {
    match error {
        StorageError::NotFound(_) | StorageError::InvalidPath(_) => permanent(error.to_string()),
        other => HandlerError::retryable(other.to_string()),
    }
}

/// The step a job runs, from its run record.
pub(crate) struct StepContext {
    pub(crate) run: RunRecord,
    pub(crate) step: Step,
    pub(crate) output_dir: RelativePath,
}

impl StepContext {
    pub(crate) async fn load(ctx: &JobContext) -> Result<Self, HandlerError> {
        let run_id = ctx.lease.payload["run"]
            .as_str()
            .ok_or_else(|| permanent("the job payload names no pipeline run"))?;
        let step_id = ctx.lease.payload["step"]
            .as_str()
            .ok_or_else(|| permanent("the job payload names no step"))?;
        let path = RunRecord::path(run_id).ok_or_else(|| permanent("invalid run id"))?;
        let run: RunRecord = ctx.store.get_json(&path).await.map_err(storage_error)?;
        let step = run
            .manifest
            .steps
            .iter()
            .find(|step| step.id == step_id)
            .cloned()
            .ok_or_else(|| permanent(format!("run {run_id} has no step {step_id:?}")))?;
        let output_dir =
            step_output_dir(run_id, step_id).ok_or_else(|| permanent("invalid step id"))?;
        Ok(Self {
            run,
            step,
            output_dir,
        })
    }

    pub(crate) fn manifest(&self) -> &ManifestV1 {
        &self.run.manifest
    }

    pub(crate) fn output(&self, name: &str) -> Result<RelativePath, HandlerError> {
        self.output_dir
            .join(name)
            .map_err(|e| permanent(e.to_string()))
    }

    /// The Parquet object an input name stands for, inside this tenant only.
    pub(crate) fn input_path(&self, input: &str) -> Result<RelativePath, HandlerError> {
        if self.step.needs.iter().any(|need| need == input) {
            return step_output_dir(&self.run.run_id, input)
                .ok_or_else(|| permanent("invalid step id"))?
                .join("data.parquet")
                .map_err(|e| permanent(e.to_string()));
        }
        let spec =
            self.manifest().inputs.get(input).ok_or_else(|| {
                permanent(format!("{input:?} is neither an input nor a needed step"))
            })?;
        dataset_path(&spec.dataset)
    }

    /// The stored Parquet bytes an input name stands for.
    pub(crate) async fn read_input_bytes(
        &self,
        store: &TenantStore,
        input: &str,
    ) -> Result<bytes::Bytes, HandlerError> {
        let path = self.input_path(input)?;
        store.get(&path).await.map_err(|error| match error {
            StorageError::NotFound(_) => permanent(format!("input {input:?} has no data")),
            other => storage_error(other),
        })
    }

    pub(crate) async fn read_input(
        &self,
        store: &TenantStore,
        input: &str,
    ) -> Result<DataFrame, HandlerError> {
        let bytes = self.read_input_bytes(store, input).await?;
        let input = input.to_string();
        blocking(move || parquet_to_frame(&bytes).map_err(|m| format!("input {input:?}: {m}")))
            .await
    }

    pub(crate) async fn write_frame(
        &self,
        store: &TenantStore,
        name: &str,
        mut frame: DataFrame,
    ) -> Result<(), HandlerError> {
        let bytes = blocking(move || frame_to_parquet(&mut frame)).await?;
        store
            .put(&self.output(name)?, bytes)
            .await
            .map_err(storage_error)
    }

    pub(crate) async fn write_json(
        &self,
        store: &TenantStore,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<(), HandlerError> {
        store
            .put_json(&self.output(name)?, value)
            .await
            .map_err(storage_error)
    }

    pub(crate) fn done(&self) -> JobOutput {
        JobOutput {
            output_location_opt: Some(format!("{}/", self.output_dir)),
            ..JobOutput::default()
        }
    }
}

fn dataset_path(name: &str) -> Result<RelativePath, HandlerError> {
    RelativePath::parse(name)
        .map_err(StorageError::from)
        .and_then(|parsed| crate::dataset::data_path(&parsed))
        .map_err(|e| permanent(format!("invalid dataset name {name:?}: {e}")))
}

/// Runs polars work on the blocking pool; its errors (and panics, through `guarded` in the
/// readers) fail the job permanently: the same input would fail again.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, HandlerError> {
    match tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
    })
    .await
    {
        Ok(Ok(result)) => result.map_err(permanent),
        Ok(Err(_)) => Err(permanent("the data stage panicked on this input")),
        Err(error) => Err(HandlerError::retryable(format!(
            "data task failed: {error}"
        ))),
    }
}

fn polars_message(what: &str) -> impl Fn(PolarsError) -> String + '_ {
    move |error| format!("{what}: {error}")
}

/// Schema rules first, then the manifest's own rules.
fn rules_of(checks: &ValidationChecks) -> Result<Vec<ColumnRule>, HandlerError> {
    let mut rules = match &checks.schema {
        Some(name) => dataset_schema::rules_of(name).map_err(permanent)?,
        None => Vec::new(),
    };
    rules.extend(checks.rules.iter().cloned());
    Ok(rules)
}

async fn tenant_ops(
    ctx: &JobContext,
    preset: Option<&str>,
    ops: &[TransformOp],
) -> Result<Vec<TransformOp>, HandlerError> {
    let mut all = Vec::new();
    if let Some(name) = preset {
        let config = ctx.config().await?;
        let value = config.transforms.get(name).ok_or_else(|| {
            permanent(format!(
                "the tenant configuration has no transform preset {name:?}"
            ))
        })?;
        all.extend(parse_ops(value).map_err(|m| permanent(format!("preset {name:?}: {m}")))?);
    }
    all.extend(ops.iter().cloned());
    Ok(all)
}

/// The reference datasets `join` ops read, by input alias.
async fn references(
    step: &StepContext,
    store: &TenantStore,
    ops: &[TransformOp],
) -> Result<HashMap<String, DataFrame>, HandlerError> {
    let mut frames = HashMap::new();
    for op in ops {
        if let TransformOp::Join(join) = op
            && !frames.contains_key(&join.input)
        {
            let spec = step.manifest().inputs.get(&join.input).ok_or_else(|| {
                permanent(format!("join input {:?} is not an input alias", join.input))
            })?;
            let bytes = store
                .get(&dataset_path(&spec.dataset)?)
                .await
                .map_err(storage_error)?;
            let alias = join.input.clone();
            let frame = blocking(move || {
                parquet_to_frame(&bytes).map_err(|m| format!("reference {alias:?}: {m}"))
            })
            .await?;
            frames.insert(join.input.clone(), frame);
        }
    }
    Ok(frames)
}

fn input_error_summary(message: &str) -> serde_json::Value {
    json!({ "passed": false, "input_error": { "kind": "unreadable_input", "message": message } })
}

struct Validate;

#[async_trait]
impl JobHandler for Validate {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError> {
        let step = StepContext::load(&ctx).await?;
        let stage = step
            .step
            .validate
            .clone()
            .ok_or_else(|| permanent("not a validate step"))?;
        let checks = stage.checks();
        let rules = rules_of(&checks)?;
        let frame = match step.read_input(&ctx.store, &stage.input).await {
            Ok(frame) => frame,
            Err(error) if !error.retryable => {
                // Corrupt or truncated input: a typed report, then a failed step.
                step.write_json(
                    &ctx.store,
                    "summary.json",
                    &input_error_summary(&error.message),
                )
                .await?;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let max_error_rate = checks.max_error_rate.unwrap_or(0.0);
        let outcome = blocking(move || {
            validate_frame(frame, &rules, max_error_rate)
                .map_err(polars_message("validation failed"))
        })
        .await?;
        let summary = outcome.summary.clone();
        step.write_frame(&ctx.store, "errors.parquet", outcome.errors)
            .await?;
        step.write_frame(&ctx.store, "data.parquet", outcome.valid)
            .await?;
        step.write_json(&ctx.store, "summary.json", &json!(summary))
            .await?;
        ctx.progress()
            .report(json!({"rows": summary.rows, "error_rows": summary.error_rows}))
            .await;
        check_rate(&summary, &step)?;
        Ok(step.done())
    }
}

fn check_rate(summary: &ValidationSummary, step: &StepContext) -> Result<(), HandlerError> {
    if summary.passed {
        return Ok(());
    }
    Err(permanent(format!(
        "error rate {:.2}% ({} of {} rows) exceeds maxErrorRate {:.2}%; see {}/errors.parquet",
        summary.error_rate * 100.0,
        summary.error_rows,
        summary.rows,
        summary.max_error_rate * 100.0,
        step.output_dir
    )))
}

struct Transform;

#[async_trait]
impl JobHandler for Transform {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError> {
        let step = StepContext::load(&ctx).await?;
        let stage = step
            .step
            .transform
            .clone()
            .ok_or_else(|| permanent("not a transform step"))?;
        let ops = tenant_ops(&ctx, stage.preset.as_deref(), &stage.ops).await?;
        let references = references(&step, &ctx.store, &ops).await?;
        let frame = step.read_input(&ctx.store, &stage.input).await?;
        let rows_in = frame.height();
        let output = blocking(move || {
            guarded("transform failed", || {
                apply_ops(frame.lazy(), &ops, &references)?.collect()
            })
        })
        .await?;
        let summary = json!({
            "rows_in": rows_in,
            "rows_out": output.height(),
            "columns": output.get_column_names().iter().map(|name| name.to_string()).collect::<Vec<_>>(),
        });
        step.write_frame(&ctx.store, "data.parquet", output).await?;
        step.write_json(&ctx.store, "summary.json", &summary)
            .await?;
        Ok(step.done())
    }
}

struct Migrate;

/// Transform (the tenant's mapping onto the target shape), then validate against the target
/// schema: (summary, passing rows, error report). Error rows are numbered after the transform.
fn transform_and_validate(
    frame: DataFrame,
    rules: &[ColumnRule],
    max_error_rate: f64,
    ops: &[TransformOp],
) -> Result<(ValidationSummary, DataFrame, DataFrame), String> {
    let transformed = guarded("transform failed", || {
        apply_ops(frame.lazy(), ops, &HashMap::new())?.collect()
    })?;
    let outcome = validate_frame(transformed, rules, max_error_rate)
        .map_err(polars_message("validation failed"))?;
    Ok((outcome.summary, outcome.valid, outcome.errors))
}

#[async_trait]
impl JobHandler for Migrate {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError> {
        let step = StepContext::load(&ctx).await?;
        let stage = step
            .step
            .migrate
            .clone()
            .ok_or_else(|| permanent("not a migrate step"))?;
        if stage
            .ops
            .iter()
            .any(|op| matches!(op, TransformOp::Join(_)))
        {
            return Err(permanent(
                "migrations do not join reference datasets; add a transform step",
            ));
        }
        let rules = rules_of(&stage.validate)?;
        let ops = tenant_ops(&ctx, stage.preset.as_deref(), &stage.ops).await?;
        let frame = step.read_input(&ctx.store, &stage.input).await?;
        let max_error_rate = stage.validate.max_error_rate.unwrap_or(0.0);
        let sample_spec = stage.sample.clone();
        let (sample_rules, sample_ops, sample_frame) = (rules.clone(), ops.clone(), frame.clone());
        let (sample_summary, sample_output, _) = blocking(move || {
            let sample = take_sample(&sample_frame, &sample_spec)
                .map_err(polars_message("sampling failed"))?;
            transform_and_validate(sample, &sample_rules, max_error_rate, &sample_ops)
        })
        .await?;
        let report_path = RelativePath::parse(&format!(
            "reports/migrations/{}-{}.json",
            step.run.run_id, step.step.id
        ))
        .map_err(|e| permanent(e.to_string()))?;
        let mut report = json!({
            "run": step.run.run_id,
            "step": step.step.id,
            "input": stage.input,
            "sample": {
                "spec": stage.sample,
                "validation": sample_summary,
                "rows_out": sample_output.height(),
                "columns": sample_output.get_column_names().iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            },
            "decision": if sample_summary.passed { "full migration" } else { "stopped after the sample" },
            "full": null,
        });
        if !sample_summary.passed {
            ctx.store
                .put_json(&report_path, &report)
                .await
                .map_err(storage_error)?;
            step.write_json(&ctx.store, "report.json", &report).await?;
            return Err(permanent(format!(
                "the sample failed validation (error rate {:.2}% > {:.2}%); nothing was migrated; report at {report_path}",
                sample_summary.error_rate * 100.0,
                max_error_rate * 100.0
            )));
        }
        let (summary, output, errors) =
            blocking(move || transform_and_validate(frame, &rules, max_error_rate, &ops)).await?;
        report["full"] = json!({ "validation": summary, "rows_out": output.height() });
        step.write_frame(&ctx.store, "errors.parquet", errors)
            .await?;
        if summary.passed {
            let mut output_for_dataset = output.clone();
            step.write_frame(&ctx.store, "data.parquet", output).await?;
            if let Some(name) = &stage.into_dataset {
                let dataset = RelativePath::parse(name).map_err(|e| permanent(e.to_string()))?;
                let bytes = blocking(move || frame_to_parquet(&mut output_for_dataset)).await?;
                put_dataset(&ctx.store, &dataset, bytes.into(), DatasetFormat::Parquet)
                    .await
                    .map_err(|e| HandlerError::retryable(e.to_string()))?;
                report["into_dataset"] = json!(name);
            }
        }
        ctx.store
            .put_json(&report_path, &report)
            .await
            .map_err(storage_error)?;
        step.write_json(&ctx.store, "report.json", &report).await?;
        if !summary.passed {
            return Err(permanent(format!(
                "the full migration failed validation (error rate {:.2}%) although the sample passed; nothing was stored; report at {report_path}",
                summary.error_rate * 100.0
            )));
        }
        Ok(step.done())
    }
}
