//! The `finetune` job: trains a tenant's variant over the shared base (or, for
//! `isolation: independent` plans and `base: none`, the tenant's own model from scratch) on
//! its labelled rows, stores it as the next version in the tenant's registry, and moves the
//! label's pin by the step's promotion policy. Also the base rollout: one re-fine-tune per
//! tenant model over a new base, promoted only when not worse on the pinned version's frozen
//! holdout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use polars::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::dataset::parquet_to_frame;
use crate::jobs::{JobService, SubmitJob};
use crate::manifest::StageRef;
use crate::model::base::{BASE_NAME, CODE_VERSION};
use crate::model::params::{FinetuneParams, PromotePolicy, parse_params};
use crate::model::registry::{BaseRef, Lineage, ModelRegistry, NewVersion, PromotionDecision};
use crate::model::train::{EpochReport, evaluate, finetune, train_independent, training_device};
use crate::model::{EncoderConfig, ModelError, VersionMeta};
use crate::pipeline::handlers::{StepContext, permanent, storage_error};
use crate::queue::Band;
use crate::storage::{RelativePath, StorageError};
use crate::tenant::{Isolation, TenantState};
use crate::usage::Meter;
use crate::worker::{HandlerError, HandlerRegistry, JobContext, JobHandler, JobOutput};

pub fn register(registry: &mut HandlerRegistry) {
    registry.register("finetune", Arc::new(Finetune));
}

/// Model errors as job errors: bad data or a missing model will not fix itself; storage may.
pub(crate) fn model_error(error: ModelError) -> HandlerError {
    match error {
        ModelError::Storage(error) => storage_error(error),
        ModelError::Interrupted(message) | ModelError::Unavailable(message) => {
            HandlerError::retryable(message)
        }
        other => permanent(other.to_string()),
    }
}

/// The labelled rows of a frame: text and label as strings, rows missing either dropped.
pub(crate) fn labelled_rows(
    frame: &DataFrame,
    text_column: &str,
    label_column: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let strings = |name: &str| -> Result<Vec<Option<String>>, String> {
        let column = frame.column(name).map_err(|_| {
            let names: Vec<String> = frame
                .get_column_names()
                .iter()
                .map(|n| n.to_string())
                .collect();
            format!(
                "the input has no column {name:?} (columns: {})",
                names.join(", ")
            )
        })?;
        let cast = column
            .cast(&DataType::String)
            .map_err(|e| format!("column {name:?}: {e}"))?;
        Ok(cast
            .str()
            .map_err(|e| format!("column {name:?}: {e}"))?
            .iter()
            .map(|value| value.map(str::to_string))
            .collect())
    };
    let (texts, labels) = (strings(text_column)?, strings(label_column)?);
    Ok(texts
        .into_iter()
        .zip(labels)
        .filter_map(|(text, label)| match (text, label) {
            (Some(text), Some(label)) if !text.trim().is_empty() && !label.is_empty() => {
                Some((text, label))
            }
            _ => None,
        })
        .unzip())
}

/// Sets the flag when dropped: the handler's future ends (cancel, timeout abort, error) and
/// the training thread stops at its next epoch instead of running on unobserved.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs training on the blocking pool, forwarding each epoch to the job's progress; a
/// cancelled job stops training at the next epoch.
async fn train_with_progress<T: Send + 'static>(
    ctx: &JobContext,
    total_epochs: usize,
    work: impl FnOnce(&mut dyn FnMut(&EpochReport) -> bool) -> Result<T, ModelError> + Send + 'static,
) -> Result<T, HandlerError> {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<EpochReport>();
    let training = tokio::spawn(crate::model::blocking(move || {
        let mut report = |epoch: &EpochReport| {
            let _ = sender.send(epoch.clone());
            !stop.load(Ordering::Relaxed)
        };
        work(&mut report)
    }));
    loop {
        tokio::select! {
            epoch = receiver.recv() => match epoch {
                Some(epoch) => {
                    ctx.progress()
                        .report(json!({
                            "epoch": epoch.epoch,
                            "epochs": total_epochs,
                            "loss": epoch.loss,
                            "accuracy": epoch.accuracy,
                        }))
                        .await;
                }
                None => break,
            },
            () = ctx.cancel.cancelled() => return Err(permanent("cancelled")),
        }
    }
    match training.await {
        Ok(result) => result.map_err(model_error),
        Err(error) => Err(HandlerError::retryable(format!(
            "training task failed: {error}"
        ))),
    }
}

/// What a training request needs besides the rows.
struct Training {
    model: String,
    params: FinetuneParams,
    /// The shared base version to train over; `None` trains an independent model.
    base_version: Option<String>,
    lineage: Lineage,
}

/// Trains, stores the version and meters the work; returns the stored meta.
async fn train_and_save(
    ctx: &JobContext,
    texts: Vec<String>,
    labels: Vec<String>,
    training: Training,
) -> Result<VersionMeta, HandlerError> {
    let Training {
        model,
        params,
        base_version,
        lineage,
    } = training;
    if texts.len() < 10 {
        return Err(permanent(format!(
            "fine-tuning needs at least 10 labelled rows; the input has {}",
            texts.len()
        )));
    }
    let gpu = ctx.device == "gpu";
    // A GPU pool on a build without the feature will not heal by retrying.
    let device = training_device(gpu).map_err(|error| permanent(error.to_string()))?;
    let started = Instant::now();
    let (train, lora) = (params.train, params.lora);
    // Shared with the training thread; the holdout rows are picked from them afterwards.
    let (texts, labels) = (Arc::new(texts), Arc::new(labels));
    let (rows, targets) = (Arc::clone(&texts), Arc::clone(&labels));
    let (variant, own_encoder, base, encoder) = match base_version {
        Some(version) => {
            let weights = ctx
                .models
                .bases()
                .load(&version)
                .await
                .map_err(model_error)?;
            let encoder = weights.config;
            let variant = train_with_progress(ctx, train.epochs, move |report| {
                finetune(&weights, &rows, &targets, &train, lora, &device, report)
            })
            .await?;
            let base = BaseRef {
                name: BASE_NAME.to_string(),
                version,
            };
            (variant, None, Some(base), encoder)
        }
        None => {
            let encoder = independent_encoder();
            let (network, variant) = train_with_progress(ctx, train.epochs, move |report| {
                train_independent(&encoder, &rows, &targets, &train, &device, report)
            })
            .await?;
            (variant, Some(network), None, encoder)
        }
    };
    let (holdout_texts, holdout_labels) = (variant.holdout_of(&texts), variant.holdout_of(&labels));
    let seconds = started.elapsed().as_secs_f64();
    ctx.usage.record(Meter::TrainingSeconds, seconds);
    ctx.usage.record(
        if gpu {
            Meter::GpuSeconds
        } else {
            Meter::CpuSeconds
        },
        seconds,
    );
    ctx.models
        .save(
            &model,
            NewVersion {
                variant,
                own_encoder,
                base,
                encoder,
                lineage,
                holdout_texts,
                holdout_labels,
                training_seconds: seconds,
            },
        )
        .await
        .map_err(model_error)
}

/// A tenant's own model is smaller than the shared base: it learns from its data alone.
fn independent_encoder() -> EncoderConfig {
    let mut config = EncoderConfig::default();
    config.features.buckets = 1 << 15;
    config
}

/// Applies the promotion policy to a new version of `model`.
async fn promote_by_policy(
    registry: &ModelRegistry,
    meta: &VersionMeta,
    policy: PromotePolicy,
    label: &str,
    reason: &str,
) -> Result<PromotionDecision, ModelError> {
    let pinned = registry.pinned(&meta.model, label).await?;
    let mut decision = PromotionDecision {
        label: label.to_string(),
        policy,
        compared_with: pinned.clone(),
        previous_accuracy: None,
        new_accuracy: None,
        promoted: false,
    };
    decision.promoted = match (policy, &pinned) {
        (PromotePolicy::Never, _) => false,
        (PromotePolicy::Always, _) | (PromotePolicy::IfNotWorse, None) => true,
        (PromotePolicy::IfNotWorse, Some(pinned)) => {
            let (texts, labels) = registry.holdout(&meta.model, pinned).await?;
            let old = registry.load(&meta.model, pinned).await?;
            let new = registry.load(&meta.model, &meta.version).await?;
            let old_metrics = evaluate(&old.base, &old.weights, &texts, &labels);
            let new_metrics = evaluate(&new.base, &new.weights, &texts, &labels);
            decision.previous_accuracy = Some(old_metrics.accuracy);
            decision.new_accuracy = Some(new_metrics.accuracy);
            new_metrics.accuracy >= old_metrics.accuracy
        }
    };
    if decision.promoted {
        registry
            .promote(&meta.model, &meta.version, label, reason)
            .await?;
    }
    registry
        .record_promotion(&meta.model, &meta.version, decision.clone())
        .await?;
    Ok(decision)
}

/// The promotion decision of a stored version: the one already recorded (a retried attempt),
/// or the policy's now.
async fn decide_once(
    registry: &ModelRegistry,
    meta: &VersionMeta,
    policy: PromotePolicy,
    label: &str,
    reason: &str,
) -> Result<PromotionDecision, HandlerError> {
    match &meta.promotion {
        Some(decision) => Ok(decision.clone()),
        None => promote_by_policy(registry, meta, policy, label, reason)
            .await
            .map_err(model_error),
    }
}

#[derive(Debug, Serialize)]
struct FinetuneOutcome {
    model: String,
    version: String,
    base: Option<BaseRef>,
    accuracy: f64,
    macro_f1: f64,
    holdout_rows: usize,
    epochs: usize,
    training_seconds: f64,
    promotion: PromotionDecision,
}

impl FinetuneOutcome {
    fn of(meta: &VersionMeta, promotion: PromotionDecision) -> Self {
        Self {
            model: meta.model.clone(),
            version: meta.version.clone(),
            base: meta.base.clone(),
            accuracy: meta.metrics.accuracy,
            macro_f1: meta.metrics.macro_f1,
            holdout_rows: meta.metrics.rows,
            epochs: meta.epochs.len(),
            training_seconds: meta.training_seconds,
            promotion,
        }
    }
}

struct Finetune;

#[async_trait]
impl JobHandler for Finetune {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, HandlerError> {
        if let Some(rollout) = ctx.lease.payload.get("rollout").cloned() {
            return run_rollout(&ctx, &rollout).await;
        }
        let step = StepContext::load(&ctx).await?;
        let StageRef::Finetune(stage) = step.step.stage() else {
            return Err(permanent("this step is not a finetune step"));
        };
        let params = parse_params(&stage.params).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            permanent(format!("invalid params: {}", list.join("; ")))
        })?;
        let (policy, label) = (params.promote, params.label.clone());
        let existing = ctx
            .models
            .version_of_job(&stage.model, &ctx.lease.job_id)
            .await
            .map_err(model_error)?;
        let meta = match existing {
            Some(meta) => meta,
            None => train_step(&ctx, &step, stage, params).await?,
        };
        let reason = format!("fine-tuned by run {}", step.run.run_id);
        let decision = decide_once(&ctx.models, &meta, policy, &label, &reason).await?;
        let outcome = FinetuneOutcome::of(&meta, decision);
        step.write_json(&ctx.store, "model.json", &json!(outcome))
            .await?;
        Ok(step.done())
    }
}

/// Reads the step's labelled rows and trains and stores a new version.
async fn train_step(
    ctx: &JobContext,
    step: &StepContext,
    stage: &crate::manifest::FinetuneStage,
    params: FinetuneParams,
) -> Result<VersionMeta, HandlerError> {
    let frame = step.read_input(&ctx.store, &stage.input).await?;
    let text_column = stage.text_column.as_deref().unwrap_or("text").to_string();
    let label_column = stage.label_column.as_deref().unwrap_or("label").to_string();
    let (texts, labels) = labelled_rows(&frame, &text_column, &label_column).map_err(permanent)?;
    let independent = stage.base.as_deref() == Some("none")
        || ctx.plan().await?.isolation == Isolation::Independent;
    let base_version = if independent {
        None
    } else {
        Some(
            ctx.models
                .bases()
                .require_current()
                .await
                .map_err(model_error)?,
        )
    };
    let lineage = Lineage {
        dataset: step.input_path(&stage.input)?.to_string(),
        rows: texts.len(),
        text_column,
        label_column,
        train: params.train,
        job_id: ctx.lease.job_id.clone(),
        run_id: Some(step.run.run_id.clone()),
        code_version: CODE_VERSION.to_string(),
    };
    train_and_save(
        ctx,
        texts,
        labels,
        Training {
            model: stage.model.clone(),
            params,
            base_version,
            lineage,
        },
    )
    .await
}

/// Re-fine-tunes the pinned version of one model over a new base, with the same data and
/// parameters, and moves the pin only when the new variant is at least as accurate on the
/// pinned version's frozen holdout.
async fn run_rollout(
    ctx: &JobContext,
    rollout: &serde_json::Value,
) -> Result<JobOutput, HandlerError> {
    let field = |name: &str| {
        rollout[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| permanent(format!("the rollout payload has no {name}")))
    };
    let (model, label, base_version) = (field("model")?, field("label")?, field("base")?);
    let registry = &ctx.models;
    let pinned = registry
        .pinned(&model, &label)
        .await
        .map_err(model_error)?
        .ok_or_else(|| permanent(format!("model {model:?} has nothing pinned as {label:?}")))?;
    let pinned_meta = registry.meta(&model, &pinned).await.map_err(model_error)?;
    let output = ctx
        .output_dir()
        .join("rollout.json")
        .map_err(|e| permanent(e.to_string()))?;
    let skip =
        |reason: &str| json!({"model": model, "label": label, "pinned": pinned, "skipped": reason});
    let reason = format!("base rollout to {BASE_NAME} {base_version}");
    let earlier = registry
        .version_of_job(&model, &ctx.lease.job_id)
        .await
        .map_err(model_error)?;
    let independent = ctx.plan().await?.isolation == Isolation::Independent;
    let outcome = match (&pinned_meta.base, earlier) {
        // A retried attempt: the version is stored; only its decision may be missing.
        (_, Some(meta)) => {
            let decision =
                decide_once(registry, &meta, PromotePolicy::IfNotWorse, &label, &reason).await?;
            json!(FinetuneOutcome::of(&meta, decision))
        }
        _ if independent => skip("the tenant's plan trains independent models"),
        (None, None) => skip("an independent model does not use the shared base"),
        (Some(base), None) if base.version == base_version => skip("already on this base"),
        (Some(_), None) => {
            let lineage = &pinned_meta.lineage;
            let dataset = RelativePath::parse(&lineage.dataset)
                .map_err(|e| permanent(format!("lineage dataset: {e}")))?;
            let bytes = ctx.store.get(&dataset).await.map_err(|error| match error {
                StorageError::NotFound(_) => permanent(format!(
                    "the data version {pinned} was trained on ({}) is gone",
                    lineage.dataset
                )),
                other => storage_error(other),
            })?;
            let (text_column, label_column) =
                (lineage.text_column.clone(), lineage.label_column.clone());
            let (texts, labels) = crate::pipeline::handlers::blocking(move || {
                let frame = parquet_to_frame(&bytes)?;
                labelled_rows(&frame, &text_column, &label_column)
            })
            .await?;
            let params = FinetuneParams {
                train: lineage.train,
                lora: pinned_meta.lora,
                promote: PromotePolicy::IfNotWorse,
                label: label.clone(),
            };
            let meta = train_and_save(
                ctx,
                texts,
                labels,
                Training {
                    model: model.clone(),
                    params,
                    base_version: Some(base_version.clone()),
                    lineage: Lineage {
                        job_id: ctx.lease.job_id.clone(),
                        run_id: None,
                        ..lineage.clone()
                    },
                },
            )
            .await?;
            let decision =
                decide_once(registry, &meta, PromotePolicy::IfNotWorse, &label, &reason).await?;
            json!(FinetuneOutcome::of(&meta, decision))
        }
    };
    ctx.store
        .put_json(&output, &outcome)
        .await
        .map_err(storage_error)?;
    Ok(JobOutput {
        output_location_opt: Some(output.to_string()),
        ..JobOutput::default()
    })
}

/// One queued re-fine-tune of a base rollout.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RolloutJob {
    pub tenant: String,
    pub model: String,
    pub label: String,
    pub pinned: String,
    pub job_id: String,
}

/// Queues a re-fine-tune of every pinned shared-base variant of every active tenant over
/// base `version` (each in the batch band, once per tenant, model, label and base).
pub async fn queue_base_rollout(
    jobs: &JobService,
    version: &str,
) -> Result<Vec<RolloutJob>, ModelError> {
    let platform = jobs.platform();
    platform.base_models().meta(version).await?;
    let unavailable = |e: &dyn std::fmt::Display| ModelError::Unavailable(e.to_string());
    let tenants = platform.list_tenants().await.map_err(|e| unavailable(&e))?;
    let mut queued = Vec::new();
    for tenant in tenants
        .into_iter()
        .filter(|t| t.state == TenantState::Active && t.plan.isolation != Isolation::Independent)
    {
        let store = platform
            .tenant_store(&tenant.id)
            .await
            .map_err(|e| unavailable(&e))?;
        let registry = ModelRegistry::new(store.clone(), platform.base_models().clone());
        for model in registry.list().await? {
            for (label, pinned) in &model.pins {
                let meta = registry.meta(&model.name, pinned).await?;
                if meta
                    .base
                    .as_ref()
                    .is_none_or(|base| base.version == version)
                {
                    continue;
                }
                let request = SubmitJob {
                    kind: "finetune".to_string(),
                    group: Some(format!("rollout-{version}")),
                    band: Some(Band::Batch),
                    payload: json!({"rollout": {"model": model.name, "label": label, "base": version}}),
                    idempotency_key: Some(format!("rollout-{version}-{}-{label}", model.name)),
                    max_attempts: None,
                    cost_estimate: Some(30.0),
                };
                let (record, _) = jobs
                    .submit(&store, request)
                    .await
                    .map_err(|e| unavailable(&e))?;
                queued.push(RolloutJob {
                    tenant: tenant.id.to_string(),
                    model: model.name.clone(),
                    label: label.clone(),
                    pinned: pinned.clone(),
                    job_id: record.job_id,
                });
            }
        }
    }
    Ok(queued)
}
