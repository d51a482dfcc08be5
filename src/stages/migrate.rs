//! The `migrate` stage's pure part: taking the sample a migration checks first.

use polars::prelude::*;

use crate::manifest::Sample;

/// The sample: the first `rows`, or every k-th row for a `fraction` (spread over the whole
/// input, deterministic).
pub fn take_sample(frame: &DataFrame, sample: &Sample) -> PolarsResult<DataFrame> {
    if let Some(rows) = sample.rows {
        return Ok(frame.head(Some(rows.min(frame.height() as u64) as usize)));
    }
    let fraction = sample.fraction.unwrap_or(1.0).clamp(f64::MIN_POSITIVE, 1.0);
    let step = (1.0 / fraction).round().max(1.0) as u64;
    if step == 1 {
        return Ok(frame.clone());
    }
    frame
        .clone()
        .lazy()
        .with_row_index("__tenantry_sample", None)
        .filter((col("__tenantry_sample").cast(DataType::UInt64) % lit(step)).eq(lit(0u64)))
        .drop(cols(["__tenantry_sample"]))
        .collect()
}
