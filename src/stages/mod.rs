//! Data stages on polars DataFrames: `validate` (rules -> passing rows, row-level error report,
//! summary), `transform` (declarative ops, lazily), and the sampling of `migrate`. Pure
//! computation: bytes come in and go out through the pipeline handlers, never from here.

mod keys;
mod migrate;
pub mod text;
pub mod transform;
pub mod validate;

use polars::prelude::DataType;

use crate::manifest::ColumnType;

pub use migrate::take_sample;
pub use transform::apply_ops;
pub use validate::{MAX_REPORTED_ERRORS, ValidationOutcome, ValidationSummary, validate_frame};

/// The polars type a manifest column type stands for.
pub fn dtype_of(column_type: ColumnType) -> DataType {
    match column_type {
        ColumnType::String => DataType::String,
        ColumnType::Integer => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
    }
}

#[cfg(test)]
mod tests;
