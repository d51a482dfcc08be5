//! `TenantStore`: a tenant's view of object storage.
//!
//! Every key is `tenants/<id>/<validated relative path>`; every object is sealed with the
//! tenant's DEK with the tenant id and relative path as associated data. Writes are atomic: the
//! backends publish whole objects (local files are written to a temporary file and renamed; S3
//! and memory puts are atomic), so readers never observe a partial object.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::Dek;
use crate::storage::{RelativePath, StorageError, StorageResult};
use crate::tenant::TenantId;

/// The object-store prefix owning every byte of `tenant`.
pub fn tenant_root(tenant: &TenantId) -> Path {
    Path::from_iter(["tenants", tenant.as_str()])
}

/// One stored object, with its path relative to the tenant root.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectEntry {
    pub path: String,
    /// Stored (encrypted) size in bytes.
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// A tenant-scoped, encrypting handle on object storage. Cheap to clone.
#[derive(Clone)]
pub struct TenantStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    tenant: TenantId,
    root: Path,
    dek: Dek,
}

impl std::fmt::Debug for TenantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenantStore({})", self.inner.tenant)
    }
}

impl TenantStore {
    /// Built only by the platform, which holds the KEK that unwraps `dek`.
    pub(crate) fn new(store: Arc<dyn ObjectStore>, tenant: TenantId, dek: Dek) -> Self {
        let root = tenant_root(&tenant);
        Self {
            inner: Arc::new(Inner {
                store,
                tenant,
                root,
                dek,
            }),
        }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.inner.tenant
    }

    /// Both parts are validated (`TenantId`, `RelativePath`), so nothing here needs escaping.
    fn location(&self, path: &RelativePath) -> Path {
        Path::from(format!("{}/{}", self.inner.root, path.as_str()))
    }

    /// Encrypts and stores `bytes` at `path`, replacing any previous object.
    pub async fn put(&self, path: &RelativePath, bytes: impl AsRef<[u8]>) -> StorageResult<()> {
        self.put_with_mode(path, bytes.as_ref(), PutMode::Overwrite)
            .await
    }

    /// Stores `bytes` only if nothing exists at `path` (`AlreadyExists` otherwise).
    pub async fn put_if_absent(
        &self,
        path: &RelativePath,
        bytes: impl AsRef<[u8]>,
    ) -> StorageResult<()> {
        self.put_with_mode(path, bytes.as_ref(), PutMode::Create)
            .await
    }

    async fn put_with_mode(
        &self,
        path: &RelativePath,
        bytes: &[u8],
        mode: PutMode,
    ) -> StorageResult<()> {
        let location = self.location(path);
        let sealed = self
            .inner
            .dek
            .seal_object(self.inner.tenant.as_str(), path.as_str(), bytes);
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.inner
            .store
            .put_opts(&location, PutPayload::from(sealed), options)
            .await
            .map_err(|error| StorageError::from_backend(path.as_str(), error))?;
        Ok(())
    }

    /// Reads and decrypts the object at `path`.
    pub async fn get(&self, path: &RelativePath) -> StorageResult<Bytes> {
        let location = self.location(path);
        let sealed = self
            .inner
            .store
            .get(&location)
            .await
            .map_err(|error| StorageError::from_backend(path.as_str(), error))?
            .bytes()
            .await
            .map_err(|error| StorageError::from_backend(path.as_str(), error))?;
        let plain = self
            .inner
            .dek
            .open_object(self.inner.tenant.as_str(), path.as_str(), &sealed)
            .map_err(|source| StorageError::Crypto {
                path: path.to_string(),
                source,
            })?;
        Ok(Bytes::from(plain))
    }

    pub async fn put_json<T: Serialize>(
        &self,
        path: &RelativePath,
        value: &T,
    ) -> StorageResult<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|error| StorageError::Corrupt {
            path: path.to_string(),
            message: error.to_string(),
        })?;
        self.put(path, bytes).await
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &RelativePath) -> StorageResult<T> {
        let bytes = self.get(path).await?;
        serde_json::from_slice(&bytes).map_err(|error| StorageError::Corrupt {
            path: path.to_string(),
            message: error.to_string(),
        })
    }

    pub async fn exists(&self, path: &RelativePath) -> StorageResult<bool> {
        let location = self.location(path);
        match self.inner.store.head(&location).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(StorageError::from_backend(path.as_str(), error)),
        }
    }

    /// Deletes the object at `path` (`NotFound` when there is none).
    pub async fn delete(&self, path: &RelativePath) -> StorageResult<()> {
        if !self.exists(path).await? {
            return Err(StorageError::NotFound(path.to_string()));
        }
        let location = self.location(path);
        self.inner
            .store
            .delete(&location)
            .await
            .map_err(|error| StorageError::from_backend(path.as_str(), error))
    }

    /// Lists objects under `prefix_opt` (the whole tenant when `None`), sorted by path.
    pub async fn list(&self, prefix_opt: Option<&RelativePath>) -> StorageResult<Vec<ObjectEntry>> {
        let prefix = match prefix_opt {
            Some(prefix) => self.location(prefix),
            None => self.inner.root.clone(),
        };
        let root = format!("{}/", self.inner.root);
        let mut entries: Vec<ObjectEntry> = self
            .inner
            .store
            .list(Some(&prefix))
            .map_ok(|meta| ObjectEntry {
                path: meta
                    .location
                    .as_ref()
                    .strip_prefix(&root)
                    .unwrap_or(meta.location.as_ref())
                    .to_string(),
                size: meta.size,
                last_modified: meta.last_modified,
            })
            .try_collect()
            .await
            .map_err(|error| StorageError::from_backend(prefix.as_ref(), error))?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Deletes every object under `prefix_opt` (the whole tenant when `None`); returns the count.
    pub async fn delete_prefix(&self, prefix_opt: Option<&RelativePath>) -> StorageResult<usize> {
        let entries = self.list(prefix_opt).await?;
        let root = self.inner.root.clone();
        let locations: Vec<object_store::Result<Path>> = entries
            .iter()
            .map(|entry| Ok(Path::from(format!("{root}/{}", entry.path))))
            .collect();
        let deleted: Vec<Path> = self
            .inner
            .store
            .delete_stream(Box::pin(futures::stream::iter(locations)))
            .try_collect()
            .await
            .map_err(|error| StorageError::from_backend(root.as_ref(), error))?;
        Ok(deleted.len())
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn store_for(backend: &Arc<dyn ObjectStore>, tenant: &str, dek: &Dek) -> TenantStore {
        TenantStore::new(
            backend.clone(),
            TenantId::parse(tenant).unwrap(),
            dek.clone(),
        )
    }

    #[tokio::test]
    async fn objects_round_trip_and_stay_under_the_tenant_prefix() {
        let backend: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let acme = store_for(&backend, "acme", &Dek::generate());
        let path = RelativePath::parse("datasets/a/data.parquet").unwrap();
        acme.put(&path, b"rows").await.unwrap();
        assert_eq!(acme.get(&path).await.unwrap().as_ref(), b"rows");
        let raw = backend
            .get(&Path::from("tenants/acme/datasets/a/data.parquet"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(!raw.windows(4).any(|w| w == b"rows"), "stored in clear");
        let listed = acme.list(None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, "datasets/a/data.parquet");
    }

    #[tokio::test]
    async fn another_tenant_sees_nothing_of_ours() {
        let backend: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let acme = store_for(&backend, "acme", &Dek::generate());
        let globex = store_for(&backend, "globex", &Dek::generate());
        let path = RelativePath::parse("datasets/a/data.parquet").unwrap();
        acme.put(&path, b"rows").await.unwrap();
        assert!(globex.get(&path).await.unwrap_err().is_not_found());
        assert!(globex.list(None).await.unwrap().is_empty());
        assert_eq!(globex.delete_prefix(None).await.unwrap(), 0);
        assert_eq!(acme.get(&path).await.unwrap().as_ref(), b"rows");
    }

    #[tokio::test]
    async fn put_if_absent_refuses_to_overwrite() {
        let backend: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let acme = store_for(&backend, "acme", &Dek::generate());
        let path = RelativePath::parse("audit/1.json").unwrap();
        acme.put_if_absent(&path, b"one").await.unwrap();
        let error = acme.put_if_absent(&path, b"two").await.unwrap_err();
        assert!(matches!(error, StorageError::AlreadyExists(_)));
        assert_eq!(acme.get(&path).await.unwrap().as_ref(), b"one");
    }
}
