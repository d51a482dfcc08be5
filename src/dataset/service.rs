//! Dataset operations on a tenant's store. Conversions run on the blocking pool so the async
//! threads never parse Parquet.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::dataset::{ColumnInfo, DatasetFormat, from_parquet, to_parquet};
use crate::storage::{RelativePath, StorageError, TenantStore};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset {0} not found")]
    NotFound(String),
    #[error("invalid dataset: {0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("conversion task failed: {0}")]
    Task(String),
}

/// What the platform knows about a stored dataset.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetMeta {
    pub name: String,
    pub rows: usize,
    pub columns: Vec<ColumnInfo>,
    /// Size of the stored Parquet file (before encryption).
    pub parquet_bytes: usize,
    pub source_format: DatasetFormat,
    pub updated_at: DateTime<Utc>,
}

fn dataset_dir(name: &RelativePath) -> Result<RelativePath, StorageError> {
    Ok(RelativePath::parse("datasets")
        .map_err(StorageError::from)?
        .join(name.as_str())?)
}

/// Where a dataset's Parquet lives in its tenant's store.
pub fn data_path(name: &RelativePath) -> Result<RelativePath, StorageError> {
    Ok(dataset_dir(name)?.join("data.parquet")?)
}

fn meta_path(name: &RelativePath) -> Result<RelativePath, StorageError> {
    Ok(dataset_dir(name)?.join("meta.json")?)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, DatasetError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| DatasetError::Task(error.to_string()))?
        .map_err(DatasetError::Invalid)
}

/// Validates and stores an upload; nothing is written when the body does not parse.
pub async fn put_dataset(
    store: &TenantStore,
    name: &RelativePath,
    body: Bytes,
    format: DatasetFormat,
) -> Result<DatasetMeta, DatasetError> {
    let (parquet, summary) = blocking(move || to_parquet(&body, format)).await?;
    let meta = DatasetMeta {
        name: name.to_string(),
        rows: summary.rows,
        columns: summary.columns,
        parquet_bytes: parquet.len(),
        source_format: format,
        updated_at: Utc::now(),
    };
    // Data first, then the metadata that makes it visible.
    store.put(&data_path(name)?, parquet).await?;
    store.put_json(&meta_path(name)?, &meta).await?;
    Ok(meta)
}

/// Whether the tenant has a dataset of this name.
pub async fn dataset_exists(
    store: &TenantStore,
    name: &RelativePath,
) -> Result<bool, DatasetError> {
    Ok(store.exists(&meta_path(name)?).await?)
}

/// Every dataset of the tenant, by name.
pub async fn list_datasets(store: &TenantStore) -> Result<Vec<DatasetMeta>, DatasetError> {
    let mut metas = Vec::new();
    for entry in store
        .list(Some(
            &RelativePath::parse("datasets").map_err(StorageError::from)?,
        ))
        .await?
    {
        if entry.path.ends_with("/meta.json") {
            let path = RelativePath::parse(&entry.path).map_err(StorageError::from)?;
            metas.push(store.get_json::<DatasetMeta>(&path).await?);
        }
    }
    Ok(metas)
}

async fn read_meta(store: &TenantStore, name: &RelativePath) -> Result<DatasetMeta, DatasetError> {
    match store.get_json::<DatasetMeta>(&meta_path(name)?).await {
        Ok(meta) => Ok(meta),
        Err(StorageError::NotFound(_)) => Err(DatasetError::NotFound(name.to_string())),
        Err(error) => Err(error.into()),
    }
}

/// Reads a dataset and encodes it as `format`.
pub async fn get_dataset(
    store: &TenantStore,
    name: &RelativePath,
    format: DatasetFormat,
) -> Result<(Vec<u8>, DatasetMeta), DatasetError> {
    let meta = read_meta(store, name).await?;
    let parquet = store.get(&data_path(name)?).await?;
    let encoded = blocking(move || from_parquet(&parquet, format)).await?;
    Ok((encoded, meta))
}

/// Deletes a dataset and everything under its folder.
pub async fn delete_dataset(store: &TenantStore, name: &RelativePath) -> Result<(), DatasetError> {
    read_meta(store, name).await?;
    store.delete_prefix(Some(&dataset_dir(name)?)).await?;
    Ok(())
}
