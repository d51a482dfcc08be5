//! Models: the `ngram` featuriser, the shared base encoder and per-tenant heads (burn 0.22 on
//! the Flex CPU backend), training with sparse embedding updates, fine-tuning over a frozen base
//! with early stopping, metrics, and weights as bytes for the object store.

pub mod features;
pub mod metrics;
pub mod network;
pub mod train;

#[cfg(test)]
mod tests;

pub use features::FeatureConfig;
pub use metrics::Metrics;
pub use network::{Encoder, EncoderConfig, Head, from_bytes, to_bytes};
pub use train::{EpochReport, TrainConfig, Variant, finetune_head, predict, train_base};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid training input: {0}")]
    Invalid(String),
    #[error("model weights: {0}")]
    Record(String),
    #[error("tensor: {0}")]
    Tensor(String),
}
