//! The platform's registry of shared base models, under `_system/models/base/<name>/`:
//! `<version>/encoder.bpk` (burnpack weights), `<version>/meta.json`, and `current.json`, the
//! version new fine-tunes start from. A base is trained by the platform itself on a general
//! corpus (the pooled, generated fixture corpus: platform data, never tenant data).
//!
//! Loaded bases are kept in process memory, one copy per version, shared by every tenant's
//! variants; concurrent first loads of one version read it once.

use std::collections::HashMap;
use std::sync::Arc;

use burn::prelude::Device;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OnceCell};

use crate::model::infer::BaseWeights;
use crate::model::network::{EncoderConfig, from_bytes, to_bytes};
use crate::model::train::{EpochReport, TrainConfig, train_base};
use crate::model::{ModelError, blocking};
use crate::storage::{StorageError, SystemStore};

/// The built-in base.
pub const BASE_NAME: &str = "ngram";

/// The version of the code that trained a model (lineage).
pub const CODE_VERSION: &str = concat!("tenantry ", env!("CARGO_PKG_VERSION"));

/// What the base was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Corpus {
    pub description: String,
    pub rows: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BaseMeta {
    pub name: String,
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub encoder: EncoderConfig,
    pub corpus: Corpus,
    pub train: TrainConfig,
    pub epochs: Vec<EpochReport>,
    pub training_seconds: f64,
    pub code_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    version: String,
}

type Slot = Arc<OnceCell<Arc<BaseWeights>>>;

/// The base models of the platform; cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct BaseModels {
    system: SystemStore,
    loaded: Arc<Mutex<HashMap<String, Slot>>>,
}

impl std::fmt::Debug for BaseModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BaseModels")
    }
}

fn dir(version: &str) -> String {
    format!("models/base/{BASE_NAME}/{version}")
}

/// `v<n>`, the only version names the registries create.
pub fn is_version(version: &str) -> bool {
    version
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()))
}

pub fn version_number(version: &str) -> Option<u64> {
    is_version(version)
        .then(|| version[1..].parse().ok())
        .flatten()
}

impl BaseModels {
    pub fn new(system: SystemStore) -> Self {
        Self {
            system,
            loaded: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The version new variants are trained over; `None` before the first base is trained.
    pub async fn current(&self) -> Result<Option<String>, ModelError> {
        Ok(self
            .system
            .get_json_opt::<Current>(&format!("models/base/{BASE_NAME}/current.json"))
            .await?
            .map(|current| current.version))
    }

    /// The current version, or a clear error naming the command that trains one.
    pub async fn require_current(&self) -> Result<String, ModelError> {
        self.current().await?.ok_or_else(|| {
            ModelError::NotFound(format!(
                "base model {BASE_NAME:?} (train one with `tenantry model train-base`)"
            ))
        })
    }

    pub async fn meta(&self, version: &str) -> Result<BaseMeta, ModelError> {
        if !is_version(version) {
            return Err(ModelError::NotFound(format!("base version {version:?}")));
        }
        match self
            .system
            .get_json(&format!("{}/meta.json", dir(version)))
            .await
        {
            Ok(meta) => Ok(meta),
            Err(StorageError::NotFound(_)) => {
                Err(ModelError::NotFound(format!("base version {version:?}")))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Every published version, oldest first.
    pub async fn list(&self) -> Result<Vec<BaseMeta>, ModelError> {
        let mut versions: Vec<(u64, String)> = self
            .system
            .list_keys(&format!("models/base/{BASE_NAME}/"))
            .await?
            .into_iter()
            .filter_map(|key| {
                let version = key
                    .strip_suffix("/meta.json")?
                    .rsplit('/')
                    .next()?
                    .to_string();
                Some((version_number(&version)?, version))
            })
            .collect();
        versions.sort();
        let mut metas = Vec::with_capacity(versions.len());
        for (_, version) in versions {
            metas.push(self.meta(&version).await?);
        }
        Ok(metas)
    }

    /// The weights of a version, loaded once per process.
    pub async fn load(&self, version: &str) -> Result<Arc<BaseWeights>, ModelError> {
        if !is_version(version) {
            return Err(ModelError::NotFound(format!("base version {version:?}")));
        }
        let slot = {
            let mut loaded = self.loaded.lock().await;
            loaded.entry(version.to_string()).or_default().clone()
        };
        slot.get_or_try_init(|| async {
            let meta = self.meta(version).await?;
            let bytes = self
                .system
                .get_bytes(&format!("{}/encoder.bpk", dir(version)))
                .await?
                .to_vec();
            let weights = blocking(move || {
                let config = meta.encoder;
                let encoder = from_bytes(config.init(&Device::flex()), bytes)?;
                BaseWeights::of(&encoder, &config)
            })
            .await?;
            Ok::<_, ModelError>(Arc::new(weights))
        })
        .await
        .cloned()
    }

    /// Trains a new base on the pooled fixture corpus (`rows` clauses from each generated
    /// profile), publishes it as the next version and makes it current when `make_current`.
    pub async fn train(
        &self,
        rows_per_profile: usize,
        seed: u64,
        encoder: EncoderConfig,
        train: TrainConfig,
        make_current: bool,
    ) -> Result<BaseMeta, ModelError> {
        let started = std::time::Instant::now();
        let (network, corpus_rows) = blocking(move || {
            let (texts, labels) = general_corpus(rows_per_profile, seed);
            let network = train_base(
                &encoder,
                &texts,
                &labels,
                &train,
                &Device::flex(),
                |epoch| {
                    tracing::info!(
                        epoch = epoch.epoch,
                        loss = epoch.loss,
                        accuracy = epoch.accuracy,
                        "base training"
                    );
                    true
                },
            )?;
            Ok((network, texts.len()))
        })
        .await?;
        let epochs = network.epochs.clone();
        let bytes = blocking(move || to_bytes(network.encoder)).await?;
        let version = self.claim_version().await?;
        let meta = BaseMeta {
            name: BASE_NAME.to_string(),
            version: version.clone(),
            created_at: Utc::now(),
            encoder,
            corpus: Corpus {
                description: "pooled generated contract-clause corpus (platform data)".into(),
                rows: corpus_rows,
                seed,
            },
            train,
            epochs,
            training_seconds: started.elapsed().as_secs_f64(),
            code_version: CODE_VERSION.to_string(),
        };
        self.system
            .put_bytes(&format!("{}/encoder.bpk", dir(&version)), bytes)
            .await?;
        // The meta is what makes a version visible: written last.
        self.system
            .put_json(&format!("{}/meta.json", dir(&version)), &meta)
            .await?;
        if make_current {
            self.set_current(&version).await?;
        }
        Ok(meta)
    }

    /// Reserves the next version number with a create-once claim, so two trainings that
    /// finish together never write into one version.
    async fn claim_version(&self) -> Result<String, ModelError> {
        let mut next = self
            .system
            .list_keys(&format!("models/base/{BASE_NAME}/"))
            .await?
            .iter()
            .filter_map(|key| version_number(key.split('/').nth(3)?))
            .max()
            .unwrap_or(0)
            + 1;
        loop {
            let version = format!("v{next}");
            let claim = serde_json::json!({ "at": Utc::now() });
            match self
                .system
                .create_json(&format!("{}/claim.json", dir(&version)), &claim)
                .await
            {
                Ok(()) => return Ok(version),
                Err(StorageError::AlreadyExists(_)) => next += 1,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Makes `version` the one new fine-tunes use.
    pub async fn set_current(&self, version: &str) -> Result<(), ModelError> {
        self.meta(version).await?;
        self.system
            .put_json(
                &format!("models/base/{BASE_NAME}/current.json"),
                &Current {
                    version: version.to_string(),
                },
            )
            .await?;
        Ok(())
    }
}

/// The general corpus: clauses of every generated profile, pooled, labelled rows only.
pub fn general_corpus(rows_per_profile: usize, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for profile in &crate::fixtures::PROFILES {
        for clause in crate::fixtures::clauses(profile, rows_per_profile, seed) {
            if let (Some(text), Some(label)) = (clause.text, clause.label)
                && crate::fixtures::LABELS.contains(&label.as_str())
            {
                texts.push(text);
                labels.push(label);
            }
        }
    }
    (texts, labels)
}
