//! A tenant's model registry, inside its own store (so another tenant cannot even name it):
//!
//! - `models/<name>/<version>/meta.json`: labels, metrics (accuracy, macro-F1, per-class F1,
//!   confusion matrix), lineage (dataset, base version, parameters, code version), epochs;
//!   written last, so a version without it is incomplete and invisible;
//! - `.../head.bpk`, `.../lora.bpk` (LoRA adapters, when trained), `.../encoder.bpk` (an
//!   independent model's own encoder): burnpack weights;
//! - `.../holdout.parquet`: the frozen held-out rows (text, label) the version was measured
//!   on, reused by SLA accuracy checks and by base rollouts;
//! - `models/<name>/pins.json`: which version each deployment label (`production` by
//!   default) serves, with the history of every promotion and rollback.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::prelude::Device;
use chrono::{DateTime, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{frame_to_parquet, parquet_to_frame};
use crate::model::base::{BASE_NAME, BaseModels, is_version, version_number};
use crate::model::infer::{BaseWeights, VariantWeights};
use crate::model::metrics::Metrics;
use crate::model::network::{Encoder, EncoderConfig, Lora, from_bytes, to_bytes};
use crate::model::params::PromotePolicy;
use crate::model::train::{EpochReport, LoraConfig, TrainConfig, Variant};
use crate::model::{ModelError, blocking};
use crate::storage::{RelativePath, StorageError, TenantStore};

/// The label a tenant's traffic and scoring use unless told otherwise.
pub const DEFAULT_LABEL: &str = "production";

/// The shared base a variant was trained over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BaseRef {
    pub name: String,
    pub version: String,
}

/// Where a version came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lineage {
    /// The tenant object the training rows were read from.
    pub dataset: String,
    pub rows: usize,
    pub text_column: String,
    pub label_column: String,
    pub train: TrainConfig,
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub code_version: String,
}

/// Whether a new version took over its label's pin, and on what evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PromotionDecision {
    pub label: String,
    pub policy: PromotePolicy,
    /// The version pinned at the time; both were measured on its frozen holdout.
    pub compared_with: Option<String>,
    pub previous_accuracy: Option<f64>,
    pub new_accuracy: Option<f64>,
    pub promoted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionMeta {
    pub model: String,
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub labels: Vec<String>,
    pub encoder: EncoderConfig,
    /// `None`: an independent model with its own encoder (`isolation: independent`).
    pub base: Option<BaseRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Measured on the frozen holdout.
    pub metrics: Metrics,
    pub epochs: Vec<EpochReport>,
    pub training_seconds: f64,
    pub lineage: Lineage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionDecision>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PinAction {
    Promote,
    Rollback,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PinChange {
    pub label: String,
    pub action: PinAction,
    pub from: Option<String>,
    pub to: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// The pins of one model: label -> version, and how they got there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pins {
    pub labels: BTreeMap<String, String>,
    pub history: Vec<PinChange>,
}

impl Pins {
    /// The version a rollback of `label` returns to: promotions push the version they
    /// replaced, rollbacks pop, so successive rollbacks walk back through the history.
    pub fn rollback_target(&self, label: &str) -> Option<String> {
        let mut stack: Vec<String> = Vec::new();
        for change in self.history.iter().filter(|c| c.label == label) {
            match change.action {
                PinAction::Promote => stack.extend(change.from.clone()),
                PinAction::Rollback => {
                    stack.pop();
                }
            }
        }
        stack.pop()
    }
}

/// One model of a tenant, as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelSummary {
    pub name: String,
    pub versions: Vec<String>,
    pub pins: BTreeMap<String, String>,
}

/// A version ready to score with.
#[derive(Debug, Clone)]
pub struct LoadedVariant {
    pub meta: VersionMeta,
    pub base: Arc<BaseWeights>,
    pub weights: Arc<VariantWeights>,
}

impl LoadedVariant {
    pub fn probabilities<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<f32> {
        self.weights.probabilities(&self.base, texts)
    }
}

/// What a training run hands the registry to store as a new version.
pub struct NewVersion {
    pub variant: Variant,
    /// An independent model's own encoder (`None` over the shared base).
    pub own_encoder: Option<Encoder>,
    pub base: Option<BaseRef>,
    pub encoder: EncoderConfig,
    pub lineage: Lineage,
    pub holdout_texts: Vec<String>,
    pub holdout_labels: Vec<String>,
    pub training_seconds: f64,
}

/// `models/<name>/...` of one tenant.
#[derive(Clone, Debug)]
pub struct ModelRegistry {
    store: TenantStore,
    bases: BaseModels,
}

fn model_name(name: &str) -> Result<(), ModelError> {
    if crate::manifest::is_name(name) {
        Ok(())
    } else {
        Err(ModelError::NotFound(format!("model {name:?}")))
    }
}

fn path(name: &str, rest: &str) -> Result<RelativePath, ModelError> {
    model_name(name)?;
    let path = if rest.is_empty() {
        format!("models/{name}")
    } else {
        format!("models/{name}/{rest}")
    };
    RelativePath::parse(&path).map_err(|_| ModelError::NotFound(format!("model {name:?}")))
}

fn version_path(name: &str, version: &str, file: &str) -> Result<RelativePath, ModelError> {
    if !is_version(version) {
        return Err(ModelError::NotFound(format!(
            "version {version:?} of model {name:?}"
        )));
    }
    path(name, &format!("{version}/{file}"))
}

impl ModelRegistry {
    pub fn new(store: TenantStore, bases: BaseModels) -> Self {
        Self { store, bases }
    }

    pub fn store(&self) -> &TenantStore {
        &self.store
    }

    pub fn bases(&self) -> &BaseModels {
        &self.bases
    }

    /// The tenant's models with their complete versions and pins, by name.
    pub async fn list(&self) -> Result<Vec<ModelSummary>, ModelError> {
        let prefix = RelativePath::parse("models").map_err(StorageError::from)?;
        let mut models: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for entry in self.store.list(Some(&prefix)).await? {
            let mut parts = entry.path.split('/').skip(1);
            let (Some(name), Some(version), Some("meta.json")) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if let Some(number) = version_number(version) {
                models
                    .entry(name.to_string())
                    .or_default()
                    .push((number, version.to_string()));
            }
        }
        let mut summaries = Vec::with_capacity(models.len());
        for (name, mut versions) in models {
            versions.sort();
            let pins = self.pins(&name).await?.labels;
            summaries.push(ModelSummary {
                name,
                versions: versions.into_iter().map(|(_, v)| v).collect(),
                pins,
            });
        }
        Ok(summaries)
    }

    /// Complete versions of a model, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionMeta>, ModelError> {
        // Only this model's objects are listed (not every model's, nor their pins).
        let mut versions: Vec<(u64, String)> = self
            .store
            .list(Some(&path(name, "")?))
            .await?
            .iter()
            .filter_map(|entry| {
                let mut parts = entry.path.split('/').skip(2);
                match (parts.next(), parts.next()) {
                    (Some(version), Some("meta.json")) => {
                        Some((version_number(version)?, version.to_string()))
                    }
                    _ => None,
                }
            })
            .collect();
        if versions.is_empty() {
            return Err(ModelError::NotFound(format!("model {name:?}")));
        }
        versions.sort();
        let mut metas = Vec::with_capacity(versions.len());
        for (_, version) in &versions {
            metas.push(self.meta(name, version).await?);
        }
        Ok(metas)
    }

    /// The version an earlier attempt of `job_id` stored, if any (a retried training job
    /// reuses it instead of training and storing another).
    pub async fn version_of_job(
        &self,
        name: &str,
        job_id: &str,
    ) -> Result<Option<VersionMeta>, ModelError> {
        match self.versions(name).await {
            Ok(versions) => Ok(versions
                .into_iter()
                .find(|meta| meta.lineage.job_id == job_id)),
            Err(ModelError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn meta(&self, name: &str, version: &str) -> Result<VersionMeta, ModelError> {
        match self
            .store
            .get_json(&version_path(name, version, "meta.json")?)
            .await
        {
            Ok(meta) => Ok(meta),
            Err(StorageError::NotFound(_)) => Err(ModelError::NotFound(format!(
                "version {version:?} of model {name:?}"
            ))),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn pins(&self, name: &str) -> Result<Pins, ModelError> {
        match self.store.get_json(&path(name, "pins.json")?).await {
            Ok(pins) => Ok(pins),
            Err(StorageError::NotFound(_)) => Ok(Pins::default()),
            Err(error) => Err(error.into()),
        }
    }

    /// The version `label` serves, if any.
    pub async fn pinned(&self, name: &str, label: &str) -> Result<Option<String>, ModelError> {
        Ok(self.pins(name).await?.labels.get(label).cloned())
    }

    /// The version a request means: the one it names, else the label's pin.
    pub async fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
        label: &str,
    ) -> Result<String, ModelError> {
        match version {
            Some(version) => {
                self.meta(name, version).await?;
                Ok(version.to_string())
            }
            None => self.pinned(name, label).await?.ok_or_else(|| {
                ModelError::NotFound(format!("a version of model {name:?} pinned as {label:?}"))
            }),
        }
    }

    async fn change_pin(
        &self,
        name: &str,
        label: &str,
        to: &str,
        action: PinAction,
        reason: &str,
    ) -> Result<Pins, ModelError> {
        if !crate::manifest::is_name(label) {
            return Err(ModelError::Invalid(format!("invalid label {label:?}")));
        }
        self.meta(name, to).await?;
        let mut pins = self.pins(name).await?;
        let from = pins.labels.insert(label.to_string(), to.to_string());
        pins.history.push(PinChange {
            label: label.to_string(),
            action,
            from,
            to: to.to_string(),
            at: Utc::now(),
            reason: reason.to_string(),
        });
        self.store
            .put_json(&path(name, "pins.json")?, &pins)
            .await?;
        Ok(pins)
    }

    /// Points `label` at `version`.
    pub async fn promote(
        &self,
        name: &str,
        version: &str,
        label: &str,
        reason: &str,
    ) -> Result<Pins, ModelError> {
        self.change_pin(name, label, version, PinAction::Promote, reason)
            .await
    }

    /// Points `label` back at the version it served before its last promotion.
    pub async fn rollback(
        &self,
        name: &str,
        label: &str,
        reason: &str,
    ) -> Result<Pins, ModelError> {
        let pins = self.pins(name).await?;
        let target = pins.rollback_target(label).ok_or_else(|| {
            ModelError::Conflict(format!(
                "model {name:?} has no earlier version pinned as {label:?} to roll back to"
            ))
        })?;
        self.change_pin(name, label, &target, PinAction::Rollback, reason)
            .await
    }

    /// Stores a trained variant as the next version of `name` (weights and holdout first,
    /// the meta last) and returns its meta.
    pub async fn save(&self, name: &str, new: NewVersion) -> Result<VersionMeta, ModelError> {
        let NewVersion {
            variant,
            own_encoder,
            base,
            encoder,
            lineage,
            holdout_texts,
            holdout_labels,
            training_seconds,
        } = new;
        let version = self.claim_version(name, &lineage.job_id).await?;
        let meta = VersionMeta {
            model: name.to_string(),
            version: version.clone(),
            created_at: Utc::now(),
            labels: variant.labels.clone(),
            encoder,
            base,
            lora: variant.lora.as_ref().map(|(_, config)| *config),
            metrics: variant.metrics.clone(),
            epochs: variant.epochs.clone(),
            training_seconds,
            lineage,
            promotion: None,
        };
        let holdout_context = format!("the holdout of version {version} of model {name:?}");
        let (head, lora, own, holdout) = blocking(move || {
            let head = to_bytes(variant.head)?;
            let lora = variant.lora.map(|(lora, _)| to_bytes(lora)).transpose()?;
            let own = own_encoder.map(to_bytes).transpose()?;
            let mut frame = DataFrame::new(
                holdout_texts.len(),
                vec![
                    Column::new("text".into(), holdout_texts),
                    Column::new("label".into(), holdout_labels),
                ],
            )
            .map_err(|e| ModelError::Record(format!("{holdout_context}: {e}")))?;
            let holdout = frame_to_parquet(&mut frame)
                .map_err(|e| ModelError::Record(format!("{holdout_context}: {e}")))?;
            Ok((head, lora, own, holdout))
        })
        .await?;
        self.store
            .put(&version_path(name, &version, "head.bpk")?, head)
            .await?;
        if let Some(lora) = lora {
            self.store
                .put(&version_path(name, &version, "lora.bpk")?, lora)
                .await?;
        }
        if let Some(own) = own {
            self.store
                .put(&version_path(name, &version, "encoder.bpk")?, own)
                .await?;
        }
        self.store
            .put(&version_path(name, &version, "holdout.parquet")?, holdout)
            .await?;
        self.store
            .put_json(&version_path(name, &version, "meta.json")?, &meta)
            .await?;
        Ok(meta)
    }

    /// Records the promotion decision taken on a new version.
    pub async fn record_promotion(
        &self,
        name: &str,
        version: &str,
        decision: PromotionDecision,
    ) -> Result<VersionMeta, ModelError> {
        let mut meta = self.meta(name, version).await?;
        meta.promotion = Some(decision);
        self.store
            .put_json(&version_path(name, version, "meta.json")?, &meta)
            .await?;
        Ok(meta)
    }

    /// Reserves the next version number: `claim.json` is created put-if-absent, so two
    /// trainings finishing at once get different versions.
    async fn claim_version(&self, name: &str, job_id: &str) -> Result<String, ModelError> {
        let prefix = path(name, "")?;
        let mut next = self
            .store
            .list(Some(&prefix))
            .await?
            .iter()
            .filter_map(|entry| version_number(entry.path.split('/').nth(2)?))
            .max()
            .unwrap_or(0)
            + 1;
        loop {
            let version = format!("v{next}");
            let claim = serde_json::json!({ "job_id": job_id, "at": Utc::now() });
            match self
                .store
                .put_if_absent(
                    &version_path(name, &version, "claim.json")?,
                    claim.to_string(),
                )
                .await
            {
                Ok(()) => return Ok(version),
                Err(StorageError::AlreadyExists(_)) => next += 1,
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn weights_bytes(
        &self,
        name: &str,
        version: &str,
        file: &str,
    ) -> Result<Vec<u8>, ModelError> {
        match self.store.get(&version_path(name, version, file)?).await {
            Ok(bytes) => Ok(bytes.to_vec()),
            Err(StorageError::NotFound(_)) => Err(ModelError::Record(format!(
                "version {version} of model {name:?} has no {file}"
            ))),
            Err(error) => Err(error.into()),
        }
    }

    /// Loads a version with the base it runs over (the shared base, cached per process, or
    /// the model's own encoder).
    pub async fn load(&self, name: &str, version: &str) -> Result<LoadedVariant, ModelError> {
        let meta = self.meta(name, version).await?;
        let head = self.weights_bytes(name, version, "head.bpk").await?;
        let lora = match meta.lora {
            Some(_) => Some(self.weights_bytes(name, version, "lora.bpk").await?),
            None => None,
        };
        let base = match &meta.base {
            Some(base) if base.name == BASE_NAME => self.bases.load(&base.version).await?,
            Some(base) => {
                return Err(ModelError::NotFound(format!("base model {:?}", base.name)));
            }
            None => {
                let bytes = self.weights_bytes(name, version, "encoder.bpk").await?;
                let config = meta.encoder;
                Arc::new(
                    blocking(move || {
                        let encoder = from_bytes(config.init(&Device::flex()), bytes)?;
                        BaseWeights::of(&encoder, &config)
                    })
                    .await?,
                )
            }
        };
        let (config, labels, lora_config) = (meta.encoder, meta.labels.clone(), meta.lora);
        let context = format!("version {version} of model {name:?}");
        let weights = blocking(move || {
            let device = Device::flex();
            let head = from_bytes(config.init_head(labels.len(), &device), head)?;
            let lora = match (lora, lora_config) {
                (Some(bytes), Some(lora_config)) => Some((
                    from_bytes(
                        Lora::new(config.dim, config.hidden, lora_config.rank.max(1), &device),
                        bytes,
                    )?,
                    lora_config.scale(),
                )),
                _ => None,
            };
            VariantWeights::of(&head, lora.as_ref().map(|(l, s)| (l, *s)), labels)
        })
        .await
        .map_err(|error| match error {
            ModelError::Record(message) => ModelError::Record(format!("{context}: {message}")),
            other => other,
        })?;
        Ok(LoadedVariant {
            meta,
            base,
            weights: Arc::new(weights),
        })
    }

    /// The frozen holdout of a version: texts and labels.
    pub async fn holdout(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(Vec<String>, Vec<String>), ModelError> {
        let bytes = self.weights_bytes(name, version, "holdout.parquet").await?;
        let context = format!("the holdout of version {version} of model {name:?}");
        blocking(move || {
            let frame = parquet_to_frame(&bytes)
                .map_err(|e| ModelError::Record(format!("{context}: {e}")))?;
            let column = |name: &str| -> Result<Vec<String>, ModelError> {
                Ok(frame
                    .column(name)
                    .and_then(|c| c.str().cloned())
                    .map_err(|e| ModelError::Record(format!("{context}: column {name:?}: {e}")))?
                    .iter()
                    .map(|v| v.unwrap_or_default().to_string())
                    .collect())
            };
            Ok((column("text")?, column("label")?))
        })
        .await
    }
}
