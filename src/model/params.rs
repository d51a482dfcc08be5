//! The `params` of a `finetune` step: checked when the manifest is, so a typo is reported
//! with its line before anything runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::registry::DEFAULT_LABEL;
use crate::model::train::{LoraConfig, TrainConfig};

/// When a new version takes over the label's pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum PromotePolicy {
    /// When it is at least as accurate as the pinned version on that version's frozen
    /// holdout (always when nothing is pinned yet).
    IfNotWorse,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneParams {
    pub train: TrainConfig,
    pub lora: Option<LoraConfig>,
    pub promote: PromotePolicy,
    pub label: String,
}

impl Default for FinetuneParams {
    fn default() -> Self {
        Self {
            train: TrainConfig {
                epochs: 30,
                ..TrainConfig::default()
            },
            lora: None,
            promote: PromotePolicy::IfNotWorse,
            label: DEFAULT_LABEL.to_string(),
        }
    }
}

/// The parameters a `finetune` step accepts.
pub const PARAMS: [&str; 11] = [
    "epochs",
    "batchSize",
    "learningRate",
    "embeddingLearningRate",
    "holdout",
    "patience",
    "seed",
    "loraRank",
    "loraAlpha",
    "promote",
    "label",
];

fn number(key: &str, value: &serde_json::Value, min: f64, max: f64) -> Result<f64, String> {
    let number = value
        .as_f64()
        .ok_or_else(|| format!("{key} must be a number"))?;
    if !(min..=max).contains(&number) {
        return Err(format!("{key} must be between {min} and {max}"));
    }
    Ok(number)
}

fn integer(key: &str, value: &serde_json::Value, min: u64, max: u64) -> Result<u64, String> {
    let number = value
        .as_u64()
        .ok_or_else(|| format!("{key} must be a whole number"))?;
    if !(min..=max).contains(&number) {
        return Err(format!("{key} must be between {min} and {max}"));
    }
    Ok(number)
}

/// Parses `params`; each error names the parameter (returned as `(key, message)`).
pub fn parse_params(
    params: &BTreeMap<String, serde_json::Value>,
) -> Result<FinetuneParams, Vec<(String, String)>> {
    let mut parsed = FinetuneParams::default();
    let mut errors = Vec::new();
    let (mut rank, mut alpha) = (None, None);
    for (key, value) in params {
        let result: Result<(), String> = (|| {
            match key.as_str() {
                "epochs" => parsed.train.epochs = integer(key, value, 1, 1_000)? as usize,
                "batchSize" => parsed.train.batch = integer(key, value, 1, 65_536)? as usize,
                "learningRate" => parsed.train.learning_rate = number(key, value, 1e-6, 10.0)?,
                "embeddingLearningRate" => {
                    parsed.train.embedding_learning_rate = number(key, value, 1e-6, 100.0)? as f32;
                }
                "holdout" => parsed.train.holdout = number(key, value, 0.01, 0.9)?,
                "patience" => parsed.train.patience = integer(key, value, 1, 1_000)? as usize,
                "seed" => parsed.train.seed = integer(key, value, 0, u64::MAX)?,
                "loraRank" => rank = Some(integer(key, value, 1, 64)? as usize),
                "loraAlpha" => alpha = Some(number(key, value, 1e-3, 1e3)? as f32),
                "promote" => {
                    parsed.promote = serde_json::from_value(value.clone())
                        .map_err(|_| "promote must be ifNotWorse, always or never".to_string())?;
                }
                "label" => {
                    let label = value.as_str().unwrap_or_default();
                    if !crate::manifest::is_name(label) {
                        return Err("label must be a name (letters, digits, '-', '_', '.')".into());
                    }
                    parsed.label = label.to_string();
                }
                _ => {
                    return Err(format!(
                        "unknown parameter {key:?}; expected one of {}",
                        PARAMS.join(", ")
                    ));
                }
            }
            Ok(())
        })();
        if let Err(message) = result {
            errors.push((key.clone(), message));
        }
    }
    match (rank, alpha) {
        (Some(rank), alpha) => {
            parsed.lora = Some(LoraConfig {
                rank,
                alpha: alpha.unwrap_or(2.0 * rank as f32),
            });
        }
        (None, Some(_)) => errors.push(("loraAlpha".into(), "loraAlpha needs loraRank".into())),
        (None, None) => {}
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked_by_name() {
        let ok: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"epochs": 5, "loraRank": 4, "promote": "always", "label": "canary"}"#,
        )
        .unwrap();
        let parsed = parse_params(&ok).unwrap();
        assert_eq!(parsed.train.epochs, 5);
        assert_eq!(
            parsed.lora,
            Some(LoraConfig {
                rank: 4,
                alpha: 8.0
            })
        );
        assert_eq!(parsed.promote, PromotePolicy::Always);
        assert_eq!(parsed.label, "canary");
        let bad: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"epoch": 5, "holdout": 2, "loraAlpha": 3}"#).unwrap();
        let errors = parse_params(&bad).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["epoch", "holdout", "loraAlpha"]);
        assert!(errors[0].1.contains("unknown parameter"));
    }
}
