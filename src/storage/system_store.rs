//! `SystemStore`: platform records under `_system/` (tenant registry, key hashes, wrapped DEKs,
//! tombstones). Nothing here is tenant data; secrets are only ever stored wrapped or as MACs.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::storage::{StorageError, StorageResult};

const SYSTEM_ROOT: &str = "_system";

#[derive(Clone)]
pub struct SystemStore {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for SystemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemStore")
    }
}

impl SystemStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// `key` is built by the platform from validated ids, never taken from a request.
    fn location(key: &str) -> Path {
        Path::from(format!("{SYSTEM_ROOT}/{key}"))
    }

    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> StorageResult<()> {
        self.put_with_mode(key, value, PutMode::Overwrite).await
    }

    /// Creates the record only if absent (`AlreadyExists` otherwise).
    pub async fn create_json<T: Serialize>(&self, key: &str, value: &T) -> StorageResult<()> {
        self.put_with_mode(key, value, PutMode::Create).await
    }

    async fn put_with_mode<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        mode: PutMode,
    ) -> StorageResult<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|error| StorageError::Corrupt {
            path: key.to_string(),
            message: error.to_string(),
        })?;
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&Self::location(key), PutPayload::from(bytes), options)
            .await
            .map_err(|error| StorageError::from_backend(key, error))?;
        Ok(())
    }

    /// Writes a platform blob (the shared base model's weights), replacing it.
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> StorageResult<()> {
        self.store
            .put(&Self::location(key), PutPayload::from(bytes))
            .await
            .map_err(|error| StorageError::from_backend(key, error))?;
        Ok(())
    }

    pub async fn get_bytes(&self, key: &str) -> StorageResult<bytes::Bytes> {
        self.store
            .get(&Self::location(key))
            .await
            .map_err(|error| StorageError::from_backend(key, error))?
            .bytes()
            .await
            .map_err(|error| StorageError::from_backend(key, error))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> StorageResult<T> {
        let bytes = self.get_bytes(key).await?;
        serde_json::from_slice(&bytes).map_err(|error| StorageError::Corrupt {
            path: key.to_string(),
            message: error.to_string(),
        })
    }

    pub async fn get_json_opt<T: DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        match self.get_json(key).await {
            Ok(value) => Ok(Some(value)),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Deletes a record; deleting a missing record is not an error.
    pub async fn delete(&self, key: &str) -> StorageResult<()> {
        match self.store.delete(&Self::location(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(StorageError::from_backend(key, error)),
        }
    }

    pub async fn exists(&self, key: &str) -> StorageResult<bool> {
        match self.store.head(&Self::location(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(StorageError::from_backend(key, error)),
        }
    }

    /// Lists record keys (relative to `_system/`) under `prefix`, sorted.
    pub async fn list_keys(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let root = format!("{SYSTEM_ROOT}/");
        let mut keys: Vec<String> = self
            .store
            .list(Some(&Self::location(prefix)))
            .map_ok(|meta| {
                meta.location
                    .as_ref()
                    .strip_prefix(&root)
                    .unwrap_or(meta.location.as_ref())
                    .to_string()
            })
            .try_collect()
            .await
            .map_err(|error| StorageError::from_backend(prefix, error))?;
        keys.sort();
        Ok(keys)
    }
}
