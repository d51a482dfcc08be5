//! The `score` job: applies a tenant's variant (the label's pin, or the version the step
//! names) to a dataset and writes Parquet with the input key, the label (after the tenant's
//! confidence threshold and label renames), the confidence, each class's probability and the
//! model version.
//!
//! A large input fans out: the step's job plans row ranges aligned to the file's row groups,
//! creates one partition job per range (`<job>.p0000`, ...) and hands its work on; each
//! partition scores its range into `parts/`; once all have succeeded the pipeline releases
//! `<job>.merge`, which concatenates the parts in order. N workers score N partitions at once.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::dataset::{
    DatasetFormat, frame_to_parquet, from_parquet, parquet_row_groups, parquet_slice_to_frame,
    parquet_to_frame,
};
use crate::jobs::{Continuation, SubmitJob};
use crate::manifest::{ScoreStage, StageRef};
use crate::model::best_class;
use crate::model::registry::{DEFAULT_LABEL, LoadedVariant};
use crate::pipeline::finetune::model_error;
use crate::pipeline::handlers::{StepContext, blocking, permanent, storage_error};
use crate::storage::StorageError;
use crate::tenant::TenantConfig;
use crate::usage::Meter;
use crate::worker::{HandlerError, HandlerRegistry, JobContext, JobHandler, JobOutput};

pub fn register(registry: &mut HandlerRegistry) {
    registry.register("score", Arc::new(Score));
}

/// Rows per partition unless the step says otherwise.
pub const DEFAULT_PARTITION_ROWS: u64 = 250_000;

/// The label given to rows the model is not confident about (or that have no text).
pub const NEEDS_REVIEW: &str = "needs_review";

/// One partition: a row range of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub offset: usize,
    pub rows: usize,
}

/// Row ranges of about `target` rows that start and end on row-group boundaries; a row
/// group larger than twice the target is split by rows.
pub fn plan_partitions(row_groups: &[usize], target: usize) -> Vec<Partition> {
    let target = target.max(1);
    let mut parts = Vec::new();
    let (mut start, mut pending) = (0usize, 0usize);
    for &group in row_groups {
        if group > target.saturating_mul(2) {
            if pending > 0 {
                parts.push(Partition {
                    offset: start,
                    rows: pending,
                });
                start += pending;
                pending = 0;
            }
            let pieces = group.div_ceil(target);
            let mut left = group;
            for piece in 0..pieces {
                let rows = left / (pieces - piece);
                parts.push(Partition {
                    offset: start,
                    rows,
                });
                start += rows;
                left -= rows;
            }
            continue;
        }
        pending += group;
        if pending >= target {
            parts.push(Partition {
                offset: start,
                rows: pending,
            });
            start += pending;
            pending = 0;
        }
    }
    if pending > 0 {
        parts.push(Partition {
            offset: start,
            rows: pending,
        });
    }
    parts
}

/// What every partition of a fanned-out step scores with.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    model: String,
    version: String,
    rows: usize,
    parts: Vec<Partition>,
    /// The tenant's scoring configuration when the step started: every partition and the
    /// merge apply the same threshold, renames and output format.
    config: TenantConfig,
}

/// Scores a frame. `offset` numbers rows when the input has no key column.
pub fn score_frame(
    frame: &DataFrame,
    variant: &LoadedVariant,
    config: &TenantConfig,
    stage: &ScoreStage,
    offset: usize,
) -> Result<DataFrame, String> {
    let text_column = stage.text_column.as_deref().unwrap_or("text");
    let texts = frame
        .column(text_column)
        .map_err(|_| format!("the input has no column {text_column:?}"))?
        .cast(&DataType::String)
        .map_err(|e| format!("column {text_column:?}: {e}"))?;
    let texts = texts.str().map_err(|e| e.to_string())?;
    let present: Vec<&str> = texts.iter().map(|t| t.unwrap_or("")).collect();
    let probabilities = variant.probabilities(&present);
    let classes = variant.weights.labels.len().max(1);
    let renamed: Vec<String> = variant
        .weights
        .labels
        .iter()
        .map(|label| config.label_renames.get(label).unwrap_or(label).clone())
        .collect();
    let mut distinct: Vec<&String> = renamed.iter().collect();
    distinct.sort();
    distinct.dedup();
    if distinct.len() < renamed.len() || renamed.iter().any(|name| name == NEEDS_REVIEW) {
        return Err(format!(
            "the tenant's label_renames map the model's labels {:?} onto {renamed:?}: every label needs its own name, and {NEEDS_REVIEW:?} is reserved",
            variant.weights.labels
        ));
    }
    let mut labels = Vec::with_capacity(present.len());
    let mut predicted = Vec::with_capacity(present.len());
    let mut confidence = Vec::with_capacity(present.len());
    for (text, row) in present.iter().zip(probabilities.chunks_exact(classes)) {
        let (class, p) = best_class(row);
        let name = renamed[class].as_str();
        let confident = !text.trim().is_empty() && f64::from(p) >= config.confidence_threshold;
        labels.push(if confident { name } else { NEEDS_REVIEW });
        predicted.push(name);
        confidence.push(if text.trim().is_empty() { 0.0 } else { p });
    }
    let key_column = stage.key_column.clone().or_else(|| {
        ["id", "clause_id", "key"]
            .into_iter()
            .find(|name| frame.column(name).is_ok())
            .map(str::to_string)
    });
    let mut columns = Vec::with_capacity(5 + classes);
    match &key_column {
        Some(name) => columns.push(
            frame
                .column(name)
                .map_err(|_| format!("the input has no key column {name:?}"))?
                .clone(),
        ),
        None => columns.push(Column::new(
            "row".into(),
            (offset as u64..(offset + present.len()) as u64).collect::<Vec<u64>>(),
        )),
    }
    columns.push(Column::new("label".into(), labels));
    columns.push(Column::new("predicted_label".into(), predicted));
    columns.push(Column::new("confidence".into(), confidence));
    columns.push(Column::new(
        "model_version".into(),
        vec![variant.meta.version.as_str(); present.len()],
    ));
    for (class, name) in renamed.iter().enumerate() {
        let values: Vec<f32> = probabilities
            .iter()
            .skip(class)
            .step_by(classes)
            .copied()
            .collect();
        columns.push(Column::new(format!("p_{name}").into(), values));
    }
    DataFrame::new(present.len(), columns).map_err(|e| format!("cannot build the output: {e}"))
}

struct Score;

#[async_trait]
impl JobHandler for Score {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError> {
        let step = StepContext::load(&ctx).await?;
        let StageRef::Score(stage) = step.step.stage() else {
            return Err(permanent("this step is not a score step"));
        };
        let stage = stage.clone();
        if ctx.lease.payload["merge"].as_bool() == Some(true) {
            return merge(&ctx, &step).await;
        }
        if let Some(part) = ctx.lease.payload["part"].as_u64() {
            return score_part(&ctx, &step, &stage, part as usize).await;
        }
        coordinate(&ctx, &step, &stage).await
    }
}

/// Scores rows `part` of the input and meters them.
async fn score_rows(
    ctx: &JobContext,
    stage: &ScoreStage,
    bytes: bytes::Bytes,
    version: &str,
    part: Partition,
    whole: bool,
    config: &TenantConfig,
) -> Result<DataFrame, HandlerError> {
    let variant = ctx
        .models
        .load(&stage.model, version)
        .await
        .map_err(model_error)?;
    let (config, stage) = (config.clone(), stage.clone());
    let started = Instant::now();
    let frame = blocking(move || {
        let frame = if whole {
            parquet_to_frame(&bytes)?
        } else {
            parquet_slice_to_frame(&bytes, part.offset, part.rows)?
        };
        score_frame(&frame, &variant, &config, &stage, part.offset)
    })
    .await?;
    ctx.usage.record(Meter::RowsScored, frame.height() as f64);
    ctx.usage
        .record(Meter::CpuSeconds, started.elapsed().as_secs_f64());
    Ok(frame)
}

/// Writes the scored rows (and a copy in the tenant's output format) plus a summary.
async fn write_scored(
    ctx: &JobContext,
    step: &StepContext,
    mut frame: DataFrame,
    version: &str,
    config: &TenantConfig,
) -> Result<(), HandlerError> {
    let counts = label_counts(&frame);
    let rows = frame.height();
    let bytes = blocking(move || frame_to_parquet(&mut frame)).await?;
    if let Some(format) = DatasetFormat::parse(&config.output_format)
        && format != DatasetFormat::Parquet
    {
        let parquet = bytes.clone();
        let converted = blocking(move || from_parquet(&parquet, format)).await?;
        ctx.store
            .put(
                &step.output(&format!("data.{}", format.as_str()))?,
                converted,
            )
            .await
            .map_err(storage_error)?;
    }
    ctx.store
        .put(&step.output("data.parquet")?, bytes)
        .await
        .map_err(storage_error)?;
    let needs_review = counts.get(NEEDS_REVIEW).copied().unwrap_or(0);
    step.write_json(
        &ctx.store,
        "summary.json",
        &json!({
            "rows": rows,
            "version": version,
            "needs_review": needs_review,
            "labels": counts,
            "confidence_threshold": config.confidence_threshold,
        }),
    )
    .await
}

fn label_counts(frame: &DataFrame) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    if let Ok(labels) = frame.column("label").and_then(|c| c.str().cloned()) {
        for label in labels.iter().flatten() {
            *counts.entry(label.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// The step's own job: scores a small input itself, fans a large one out.
async fn coordinate(
    ctx: &JobContext,
    step: &StepContext,
    stage: &ScoreStage,
) -> Result<JobOutput, HandlerError> {
    let label = stage.label.as_deref().unwrap_or(DEFAULT_LABEL);
    let version = ctx
        .models
        .resolve(&stage.model, stage.version.as_deref(), label)
        .await
        .map_err(model_error)?;
    let bytes = step.read_input_bytes(&ctx.store, &stage.input).await?;
    let footer = bytes.clone();
    let groups = blocking(move || parquet_row_groups(&footer)).await?;
    let target = usize::try_from(stage.partition_rows.unwrap_or(DEFAULT_PARTITION_ROWS))
        .unwrap_or(usize::MAX);
    let parts = plan_partitions(&groups, target);
    let mut config = ctx.config().await?;
    config.transforms.clear();
    if parts.len() <= 1 {
        let rows = groups.iter().sum();
        let whole = Partition { offset: 0, rows };
        let frame = score_rows(ctx, stage, bytes, &version, whole, true, &config).await?;
        write_scored(ctx, step, frame, &version, &config).await?;
        return Ok(step.done());
    }
    let plan = Plan {
        model: stage.model.clone(),
        version,
        rows: groups.iter().sum(),
        parts,
        config,
    };
    // The first attempt's plan stands: a retried coordinator (or a pin moved meanwhile) must
    // not hand partitions that already ran a different version or different ranges.
    let plan_path = step.output("plan.json")?;
    let plan = match ctx
        .store
        .put_if_absent(
            &plan_path,
            serde_json::to_vec(&plan).map_err(|e| permanent(e.to_string()))?,
        )
        .await
    {
        Ok(()) => plan,
        Err(StorageError::AlreadyExists(_)) => read_plan(ctx, step).await?,
        Err(error) => return Err(storage_error(error)),
    };
    let record = ctx.record().await?;
    let mut ids = Vec::with_capacity(plan.parts.len());
    for (index, part) in plan.parts.iter().enumerate() {
        let id = format!("{}.p{index:04}", ctx.lease.job_id);
        let mut payload = record.payload.clone();
        payload["part"] = json!(index);
        let request = SubmitJob {
            kind: record.kind.clone(),
            group: Some(record.group.clone()),
            band: Some(record.band),
            payload,
            idempotency_key: None,
            max_attempts: Some(record.max_attempts),
            cost_estimate: Some(
                (record.cost_estimate * part.rows as f64 / plan.rows.max(1) as f64).max(0.01),
            ),
        };
        ctx.submit_child(request, id.clone()).await?;
        ids.push(id);
    }
    ctx.progress()
        .report(json!({"partitions": ids.len(), "rows": plan.rows}))
        .await;
    Ok(JobOutput {
        output_location_opt: Some(step.output("plan.json")?.to_string()),
        measured_cost_opt: None,
        continuation_opt: Some(Continuation {
            parts: ids,
            merge: format!("{}.merge", ctx.lease.job_id),
        }),
    })
}

async fn read_plan(ctx: &JobContext, step: &StepContext) -> Result<Plan, HandlerError> {
    ctx.store
        .get_json(&step.output("plan.json")?)
        .await
        .map_err(storage_error)
}

fn part_name(index: usize) -> String {
    format!("parts/{index:05}.parquet")
}

async fn score_part(
    ctx: &JobContext,
    step: &StepContext,
    stage: &ScoreStage,
    index: usize,
) -> Result<JobOutput, HandlerError> {
    let plan = read_plan(ctx, step).await?;
    let part = *plan
        .parts
        .get(index)
        .ok_or_else(|| permanent(format!("the plan has no partition {index}")))?;
    let bytes = step.read_input_bytes(&ctx.store, &stage.input).await?;
    let mut frame = score_rows(ctx, stage, bytes, &plan.version, part, false, &plan.config).await?;
    let encoded = blocking(move || frame_to_parquet(&mut frame)).await?;
    let path = step.output(&part_name(index))?;
    ctx.store.put(&path, encoded).await.map_err(storage_error)?;
    Ok(JobOutput {
        output_location_opt: Some(path.to_string()),
        ..JobOutput::default()
    })
}

/// Concatenates the partitions in order into the step's output, then removes them. A retry
/// after the output was written (the parts possibly gone) only finishes the clean-up.
async fn merge(ctx: &JobContext, step: &StepContext) -> Result<JobOutput, HandlerError> {
    let plan = read_plan(ctx, step).await?;
    let parts_dir = step.output("parts")?;
    let merged = ctx
        .store
        .exists(&step.output("summary.json")?)
        .await
        .map_err(storage_error)?;
    if !merged {
        let mut parts = Vec::with_capacity(plan.parts.len());
        for index in 0..plan.parts.len() {
            let name = part_name(index);
            let bytes = ctx
                .store
                .get(&step.output(&name)?)
                .await
                .map_err(storage_error)?;
            parts.push((name, bytes));
        }
        let frame = blocking(move || {
            let mut merged: Option<DataFrame> = None;
            for (name, bytes) in parts {
                let frame = parquet_to_frame(&bytes).map_err(|e| format!("{name}: {e}"))?;
                match merged.as_mut() {
                    Some(merged) => {
                        merged
                            .vstack_mut(&frame)
                            .map_err(|e| format!("cannot merge {name}: {e}"))?;
                    }
                    None => merged = Some(frame),
                }
            }
            let mut merged = merged.ok_or("no partitions to merge")?;
            merged.rechunk_mut();
            Ok(merged)
        })
        .await?;
        write_scored(ctx, step, frame, &plan.version, &plan.config).await?;
    }
    ctx.store
        .delete_prefix(Some(&parts_dir))
        .await
        .map_err(storage_error)?;
    Ok(step.done())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_row_groups_and_cover_every_row_once() {
        let covered = |parts: &[Partition]| {
            let mut next = 0;
            for part in parts {
                assert_eq!(part.offset, next, "{parts:?}");
                next += part.rows;
            }
            next
        };
        let parts = plan_partitions(&[100; 10], 250);
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts[0],
            Partition {
                offset: 0,
                rows: 300
            }
        );
        assert_eq!(covered(&parts), 1_000);
        assert_eq!(plan_partitions(&[1_000], 5_000).len(), 1);
        let split = plan_partitions(&[1_000], 100);
        assert_eq!(split.len(), 10);
        assert_eq!(covered(&split), 1_000);
        let mixed = plan_partitions(&[50, 1_000, 30], 200);
        assert_eq!(covered(&mixed), 1_080);
        assert_eq!(
            mixed[0],
            Partition {
                offset: 0,
                rows: 50
            }
        );
        assert!(plan_partitions(&[], 10).is_empty());
    }
}
