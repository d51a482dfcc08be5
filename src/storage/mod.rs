//! Object storage: builders for the configured backend, the platform's `_system/` records and
//! `TenantStore`, the only way code reaches tenant bytes.

mod backend;
mod error;
mod path;
mod system_store;
mod tenant_store;

pub use backend::{StorageBackend, open_backend};
pub use error::{StorageError, StorageResult};
pub use path::{MAX_PATH_BYTES, PathError, RelativePath};
pub use system_store::SystemStore;
pub use tenant_store::{ObjectEntry, TenantStore, tenant_root};
