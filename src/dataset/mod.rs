//! Tenant datasets: uploads in Parquet, CSV or JSON Lines, stored as Parquet under
//! `datasets/<name>/` in the tenant's prefix, downloadable in any of the three formats.

mod convert;
mod service;

pub use convert::{
    ColumnInfo, DatasetFormat, DatasetSummary, frame_to_parquet, from_parquet, guarded,
    parquet_row_groups, parquet_slice_to_frame, parquet_to_frame, to_parquet,
};
pub use service::{
    DatasetError, DatasetMeta, data_path, dataset_exists, delete_dataset, get_dataset,
    list_datasets, put_dataset,
};
