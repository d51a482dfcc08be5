//! Data stages on polars DataFrames: `validate` (rules -> passing rows, row-level error report,
//! summary), `transform` (declarative ops, lazily), and the sampling of `migrate`. Pure
//! computation: bytes come in and go out through the pipeline handlers, never from here.

mod migrate;
pub mod transform;
pub mod validate;

pub use migrate::take_sample;
pub use transform::apply_ops;
pub use validate::{MAX_REPORTED_ERRORS, ValidationOutcome, ValidationSummary, validate_frame};

#[cfg(test)]
mod tests;
