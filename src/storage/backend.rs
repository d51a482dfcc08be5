//! Builds the configured object store from a storage URL.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

use crate::storage::StorageError;

/// The opened object store plus, for `file://`, the local data directory (where the embedded
/// default keeps its generated master key).
#[derive(Debug, Clone)]
pub struct StorageBackend {
    pub store: Arc<dyn ObjectStore>,
    pub local_dir_opt: Option<PathBuf>,
    pub url: String,
}

/// Opens `file://PATH` (created if missing), `memory://` or `s3://bucket/prefix`.
pub fn open_backend(url: &str) -> Result<StorageBackend, StorageError> {
    if let Some(path) = url.strip_prefix("file://") {
        let dir = PathBuf::from(if path.is_empty() { "." } else { path });
        std::fs::create_dir_all(&dir).map_err(|error| {
            StorageError::Backend(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(error),
            })
        })?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(StorageError::Backend)?
            .with_automatic_cleanup(true);
        let local_dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        return Ok(StorageBackend {
            store: Arc::new(store),
            local_dir_opt: Some(local_dir),
            url: url.to_string(),
        });
    }
    if url == "memory://" || url == "memory" {
        return Ok(StorageBackend {
            store: Arc::new(InMemory::new()),
            local_dir_opt: None,
            url: url.to_string(),
        });
    }
    if url.starts_with("s3://") {
        return open_s3(url);
    }
    Err(StorageError::UnsupportedUrl(url.to_string()))
}

#[cfg(feature = "s3")]
fn open_s3(url: &str) -> Result<StorageBackend, StorageError> {
    use object_store::aws::AmazonS3Builder;
    use object_store::prefix::PrefixStore;

    let parsed = url::Url::parse(url).map_err(|_| StorageError::UnsupportedUrl(url.to_string()))?;
    let bucket = parsed
        .host_str()
        .filter(|bucket| !bucket.is_empty())
        .ok_or_else(|| StorageError::UnsupportedUrl(url.to_string()))?;
    // Credentials, region and endpoint come from the standard AWS_* variables.
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(StorageError::Backend)?;
    let prefix = parsed.path().trim_matches('/');
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, prefix))
    };
    Ok(StorageBackend {
        store,
        local_dir_opt: None,
        url: url.to_string(),
    })
}

#[cfg(not(feature = "s3"))]
fn open_s3(url: &str) -> Result<StorageBackend, StorageError> {
    Err(StorageError::UnsupportedUrl(format!(
        "{url} (this binary was built without the `s3` feature)"
    )))
}
