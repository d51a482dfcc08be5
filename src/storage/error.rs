//! Storage errors, with the categories callers branch on.

use crate::crypto::CryptoError;
use crate::storage::PathError;

pub type StorageResult<T, E = StorageError> = Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    #[error("cannot decrypt {path}: {source}")]
    Crypto { path: String, source: CryptoError },
    #[error("corrupt record {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error(
        "unsupported storage url {0:?} (expected file://PATH, memory:// or s3://bucket/prefix)"
    )]
    UnsupportedUrl(String),
    #[error("object store error: {0}")]
    Backend(object_store::Error),
}

impl StorageError {
    /// Maps an object-store error for `path`, keeping not-found and already-exists apart.
    pub(crate) fn from_backend(path: &str, error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => Self::NotFound(path.to_string()),
            object_store::Error::AlreadyExists { .. } => Self::AlreadyExists(path.to_string()),
            other => Self::Backend(other),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}
