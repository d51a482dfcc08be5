//! Models: the `ngram` featuriser, the shared base encoder and per-tenant heads (burn 0.22 on
//! the Flex CPU backend), training with sparse embedding updates, fine-tuning over a frozen base
//! with early stopping, metrics, and weights as bytes for the object store.

pub mod base;
pub mod features;
pub mod infer;
pub mod metrics;
pub mod network;
pub mod params;
pub mod registry;
pub mod train;

#[cfg(test)]
mod tests;

pub use features::FeatureConfig;
pub use infer::{BaseWeights, VariantWeights, best_class};
pub use metrics::Metrics;
pub use network::{Encoder, EncoderConfig, Head, Lora, from_bytes, to_bytes};
pub use registry::{LoadedVariant, ModelRegistry, VersionMeta};
pub use train::{
    EpochReport, LoraConfig, TrainConfig, Variant, finetune, holdout_split, predict, train_base,
    training_device,
};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid training input: {0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// The work was stopped before it finished (runtime shutting down); retrying may succeed.
    #[error("interrupted: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("model weights: {0}")]
    Record(String),
    #[error("tensor: {0}")]
    Tensor(String),
}

/// Runs model work (training, loading weights) on the blocking pool; a panic becomes an error.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ModelError> + Send + 'static,
) -> Result<T, ModelError> {
    match tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
    })
    .await
    {
        Ok(Ok(result)) => result,
        Ok(Err(payload)) => Err(ModelError::Tensor(format!(
            "model computation panicked: {}",
            panic_message(payload.as_ref())
        ))),
        Err(error) => Err(ModelError::Interrupted(format!("model task: {error}"))),
    }
}

/// The text of a panic payload (`panic!` with a message), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}
