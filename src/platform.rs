//! The composition root: storage backend, platform key, key service, audit log and the cache of
//! unwrapped tenant DEKs. The API, the CLI and the demo all go through one `Platform`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use object_store::ObjectStore;

use crate::audit::{Actor, AuditEntry, AuditError, AuditLog};
use crate::config::Settings;
use crate::crypto::{CryptoError, Dek, Kek, WrappedDek};
use crate::model::base::BaseModels;
use crate::storage::{
    RelativePath, StorageBackend, StorageError, SystemStore, TenantStore, open_backend, tenant_root,
};
use crate::tenant::{
    AuthError, KeyService, Principal, Role, TenantId, TenantIdError, TenantRecord, TenantState,
};

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    InvalidTenantId(#[from] TenantIdError),
    #[error("tenant {0} not found")]
    TenantNotFound(TenantId),
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    #[error("tenant {id} is {state:?}, not active")]
    TenantNotActive { id: TenantId, state: TenantState },
    #[error("unknown plan {0:?} (built-in plans: free, pro, enterprise, enterprise-isolated)")]
    UnknownPlan(String),
    #[error("{0}")]
    MasterKey(String),
    #[error("smoke check failed for tenant {tenant}: {message}")]
    SmokeCheck { tenant: TenantId, message: String },
    #[error("invalid admin key in TENANTRY_ADMIN_KEY (expected tnt_<12 chars>_<64 hex>)")]
    InvalidAdminKey,
    #[error(transparent)]
    UsageJournal(#[from] crate::usage::JournalError),
}

pub type PlatformResult<T> = Result<T, PlatformError>;

fn dek_key(tenant: &TenantId) -> String {
    format!("deks/{tenant}.json")
}

/// Shared platform services; cheap to clone.
#[derive(Clone)]
pub struct Platform {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    backend: StorageBackend,
    system: SystemStore,
    kek: Kek,
    keys: KeyService,
    audit: AuditLog,
    bases: BaseModels,
    deks: Mutex<HashMap<TenantId, Dek>>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Platform({})", self.inner.backend.url)
    }
}

impl Platform {
    /// Opens storage, loads (or, in the embedded default, generates) the KEK and registers the
    /// operator's admin key from `TENANTRY_ADMIN_KEY` if one is set.
    pub async fn open(settings: Settings) -> PlatformResult<Self> {
        let backend = open_backend(&settings.storage_url)?;
        let kek = resolve_kek(&settings, &backend)?;
        let platform = Self::with_parts(settings, backend, kek);
        if let Some(token) = platform.inner.settings.admin_key_opt.clone() {
            platform
                .inner
                .keys
                .register(&token, None, Role::PlatformAdmin, "TENANTRY_ADMIN_KEY")
                .await
                .map_err(|error| match error {
                    AuthError::Storage(error) => PlatformError::Storage(error),
                    AuthError::InvalidKey => PlatformError::InvalidAdminKey,
                })?;
        }
        Ok(platform)
    }

    /// Assembles a platform from an opened backend and a KEK (tests use `memory://`).
    pub fn with_parts(settings: Settings, backend: StorageBackend, kek: Kek) -> Self {
        let system = SystemStore::new(backend.store.clone());
        let base_system = system.clone();
        let keys = KeyService::new(system.clone(), kek.derive_subkey("api-key-pepper"));
        let audit = AuditLog::new(system.clone());
        Self {
            inner: Arc::new(Inner {
                settings,
                backend,
                system,
                kek,
                keys,
                audit,
                bases: BaseModels::new(base_system),
                deks: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn system(&self) -> &SystemStore {
        &self.inner.system
    }

    pub fn keys(&self) -> &KeyService {
        &self.inner.keys
    }

    /// The shared base models (loaded weights cached for the process).
    pub fn base_models(&self) -> &BaseModels {
        &self.inner.bases
    }

    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    pub fn kek(&self) -> &Kek {
        &self.inner.kek
    }

    /// The tenant's registry record.
    pub async fn tenant(&self, id: &TenantId) -> PlatformResult<TenantRecord> {
        self.inner
            .system
            .get_json_opt::<TenantRecord>(&TenantRecord::registry_key(id))
            .await?
            .ok_or_else(|| PlatformError::TenantNotFound(id.clone()))
    }

    /// Every registered tenant, offboarded ones included.
    pub async fn list_tenants(&self) -> PlatformResult<Vec<TenantRecord>> {
        let mut tenants = Vec::new();
        for key in self.inner.system.list_keys("tenants").await? {
            tenants.push(self.inner.system.get_json::<TenantRecord>(&key).await?);
        }
        Ok(tenants)
    }

    /// Makes objects of `tenant` just written durable: on `file://` storage the files and
    /// their directories are fsynced (the local store does not sync on put); S3 puts are
    /// durable when they return.
    pub async fn sync_objects(
        &self,
        tenant: &TenantId,
        paths: Vec<RelativePath>,
    ) -> PlatformResult<()> {
        let Some(root) = self.inner.backend.local_dir_opt.clone() else {
            return Ok(());
        };
        let tenant_dir = root.join(tenant_root(tenant).as_ref());
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut dirs = std::collections::BTreeSet::new();
            for path in paths {
                let file = tenant_dir.join(path.as_str());
                std::fs::File::open(&file)?.sync_all()?;
                if let Some(parent) = file.parent() {
                    dirs.insert(parent.to_path_buf());
                }
            }
            for dir in dirs {
                std::fs::File::open(&dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|error| std::io::Error::other(error.to_string()))
        .and_then(|result| result);
        result.map_err(|error| {
            PlatformError::Storage(StorageError::Backend(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(error),
            }))
        })
    }

    pub(crate) async fn save_tenant(&self, record: &TenantRecord) -> PlatformResult<()> {
        self.inner
            .system
            .put_json(&TenantRecord::registry_key(&record.id), record)
            .await?;
        Ok(())
    }

    pub(crate) async fn store_new_dek(&self, tenant: &TenantId) -> PlatformResult<Dek> {
        let dek = Dek::generate();
        let wrapped = self.inner.kek.wrap(tenant.as_str(), &dek);
        self.inner
            .system
            .put_json(&dek_key(tenant), &wrapped)
            .await?;
        self.cache().insert(tenant.clone(), dek.clone());
        Ok(dek)
    }

    /// Destroys the tenant's wrapped DEK (crypto-shredding) and forgets the unwrapped copy.
    pub(crate) async fn destroy_dek(&self, tenant: &TenantId) -> PlatformResult<()> {
        self.cache().remove(tenant);
        self.inner.system.delete(&dek_key(tenant)).await?;
        Ok(())
    }

    pub(crate) async fn dek_exists(&self, tenant: &TenantId) -> PlatformResult<bool> {
        Ok(self.inner.system.exists(&dek_key(tenant)).await?)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Dek>> {
        self.inner.deks.lock().expect("dek cache poisoned")
    }

    /// A `TenantStore` for a tenant whose key still exists, whatever its state (operators,
    /// offboarding, audit verification).
    pub async fn tenant_store(&self, tenant: &TenantId) -> PlatformResult<TenantStore> {
        let cached = self.cache().get(tenant).cloned();
        let dek = match cached {
            Some(dek) => dek,
            None => {
                let wrapped = self
                    .inner
                    .system
                    .get_json_opt::<WrappedDek>(&dek_key(tenant))
                    .await?
                    .ok_or_else(|| PlatformError::TenantNotFound(tenant.clone()))?;
                let dek = self.inner.kek.unwrap(tenant.as_str(), &wrapped)?;
                self.cache().insert(tenant.clone(), dek.clone());
                dek
            }
        };
        Ok(TenantStore::new(
            self.inner.backend.store.clone(),
            tenant.clone(),
            dek,
        ))
    }

    /// A `TenantStore` only for an active tenant.
    pub async fn active_tenant_store(&self, tenant: &TenantId) -> PlatformResult<TenantStore> {
        let record = self.tenant(tenant).await?;
        if record.state != TenantState::Active {
            return Err(PlatformError::TenantNotActive {
                id: tenant.clone(),
                state: record.state,
            });
        }
        self.tenant_store(tenant).await
    }

    /// Verifies an API key and, for tenant keys, that the tenant is active.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let principal = self.inner.keys.authenticate(token).await?;
        if let Some(tenant) = &principal.tenant_opt {
            let active = matches!(
                self.tenant(tenant).await,
                Ok(record) if record.state == TenantState::Active
            );
            if !active {
                return Err(AuthError::InvalidKey);
            }
        }
        Ok(principal)
    }

    /// Appends an audit record; a failure is logged and returned.
    pub async fn record_audit(
        &self,
        store: &TenantStore,
        actor: Actor,
        action: &'static str,
        resource: impl Into<String>,
        outcome: &'static str,
    ) -> PlatformResult<()> {
        let entry = AuditEntry {
            actor,
            action,
            resource: resource.into(),
            outcome,
        };
        if let Err(error) = self.inner.audit.append(store, entry).await {
            tracing::error!(tenant = %store.tenant(), %error, action, "audit append failed");
            return Err(error.into());
        }
        Ok(())
    }

    /// Counts raw objects under a tenant's prefix without decrypting (offboarding check).
    pub async fn count_raw_objects(&self, tenant: &TenantId) -> PlatformResult<usize> {
        let root = tenant_root(tenant);
        let objects: Vec<_> = self
            .inner
            .backend
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|error| StorageError::from_backend(root.as_ref(), error))?;
        Ok(objects.len())
    }

    /// True when storage answers a listing (readiness).
    pub async fn storage_ready(&self) -> bool {
        self.inner.system.list_keys("tenants").await.is_ok()
    }
}

fn resolve_kek(settings: &Settings, backend: &StorageBackend) -> PlatformResult<Kek> {
    if let Some(path) = &settings.master_key_file_opt {
        return Ok(Kek::load(path)?);
    }
    if let Some(dir) = &backend.local_dir_opt {
        let path = dir.join(".tenantry").join("master.key");
        let (kek, generated) = Kek::load_or_generate(&path)?;
        if generated {
            tracing::warn!(
                path = %path.display(),
                "no TENANTRY_MASTER_KEY_FILE set: generated a platform master key under the data directory; set one in production"
            );
        }
        return Ok(kek);
    }
    if backend.url.starts_with("memory") {
        tracing::warn!(
            "no TENANTRY_MASTER_KEY_FILE set: using an ephemeral master key for memory:// storage"
        );
        return Ok(Kek::generate());
    }
    Err(PlatformError::MasterKey(format!(
        "TENANTRY_MASTER_KEY_FILE is required with storage {}",
        backend.url
    )))
}
