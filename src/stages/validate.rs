//! The `validate` stage on a DataFrame: every rule becomes a violation flag computed in one
//! lazy pass; the output is the passing rows, a row-level error report (row, column, rule,
//! value) and a summary. Missing columns are reported, not panicked on.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::stages::dtype_of;
use serde::{Deserialize, Serialize};

use crate::manifest::{ColumnRule, ColumnType};

/// Most error rows kept in the report; the counts in the summary stay exact.
pub const MAX_REPORTED_ERRORS: usize = 100_000;

const ROW: &str = "__tenantry_row";

/// What a validation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValidationSummary {
    pub rows: u64,
    /// Rows with at least one error.
    pub error_rows: u64,
    pub error_rate: f64,
    pub max_error_rate: f64,
    pub passed: bool,
    /// Errors by rule name (`not_null`, `type`, `min`, `max`, `regex`, `allowed`, `unique`,
    /// `max_length`, `min_length`, `missing_column`).
    pub errors_per_rule: BTreeMap<String, u64>,
    pub errors_per_column: BTreeMap<String, u64>,
    /// Whether the error report holds every error (false past `MAX_REPORTED_ERRORS`).
    pub report_complete: bool,
}

pub struct ValidationOutcome {
    /// Rows without any error (columns as read, typed columns cast to their rule type).
    pub valid: DataFrame,
    /// row (0-based, in the input), column, rule, value (as text).
    pub errors: DataFrame,
    pub summary: ValidationSummary,
}

/// The helper column holding the `unique` rule's result for `column`.
fn duplicate_flag(column: &str) -> String {
    format!("__tenantry_duplicated_{column}")
}

/// One check: its rule name, the column, and the expression that is true on violating rows.
struct Check {
    column: String,
    rule: &'static str,
    violated: Expr,
}

/// The checks of one rule on an existing column.
fn checks_of(rule: &ColumnRule, dtype: &DataType) -> Vec<Check> {
    let raw = col(rule.column.as_str());
    let mut checks = Vec::new();
    let mut push = |rule_name: &'static str, violated: Expr| {
        checks.push(Check {
            column: rule.column.clone(),
            rule: rule_name,
            violated,
        })
    };
    // The typed view of the column: a value that does not convert is a `type` error, and the
    // value rules below only look at values that did convert.
    let typed = match rule.column_type {
        Some(column_type) => {
            let target = dtype_of(column_type);
            let integral_floats = column_type == ColumnType::Integer && dtype.is_float();
            let converted = raw.clone().cast(target.clone());
            let mut type_error = raw.clone().is_not_null().and(converted.clone().is_null());
            if integral_floats {
                type_error = type_error.or(raw.clone().is_not_null().and(
                    raw.clone()
                        .neq(raw.clone().cast(DataType::Int64).cast(DataType::Float64)),
                ));
            }
            push("type", type_error);
            converted
        }
        None => raw.clone(),
    };
    if rule.not_null {
        push("not_null", raw.clone().is_null());
    }
    let numeric = typed.clone().cast(DataType::Float64);
    if let Some(min) = rule.min {
        push("min", numeric.clone().lt(lit(min)).fill_null(lit(false)));
    }
    if let Some(max) = rule.max {
        push("max", numeric.clone().gt(lit(max)).fill_null(lit(false)));
    }
    let text = raw.clone().cast(DataType::String);
    if let Some(pattern) = &rule.regex {
        let anchored = format!("^(?:{pattern})$");
        push(
            "regex",
            text.clone()
                .str()
                .contains(lit(anchored), true)
                .not()
                .fill_null(lit(false)),
        );
    }
    if let Some(allowed) = &rule.allowed {
        let values = Series::new("allowed".into(), allowed.clone());
        push(
            "allowed",
            raw.clone().is_not_null().and(
                text.clone()
                    .is_in(lit(values).implode(false), false)
                    .not()
                    .fill_null(lit(true)),
            ),
        );
    }
    if rule.unique {
        // Precomputed by `validate_frame` (see `stages::keys`).
        push("unique", col(duplicate_flag(&rule.column)));
    }
    if let Some(max_length) = rule.max_length {
        push(
            "max_length",
            text.clone()
                .str()
                .len_chars()
                .gt(lit(max_length))
                .fill_null(lit(false)),
        );
    }
    if let Some(min_length) = rule.min_length {
        push(
            "min_length",
            text.clone()
                .str()
                .len_chars()
                .lt(lit(min_length))
                .fill_null(lit(false)),
        );
    }
    checks
}

fn error_frame(
    rows: Vec<Option<u64>>,
    columns: Vec<String>,
    rules: Vec<String>,
    values: Vec<Option<String>>,
) -> PolarsResult<DataFrame> {
    DataFrame::new_infer_height(vec![
        Column::new("row".into(), rows),
        Column::new("column".into(), columns),
        Column::new("rule".into(), rules),
        Column::new("value".into(), values),
    ])
}

/// Validates `frame` against `rules`; fails the outcome when the error rate exceeds
/// `max_error_rate`.
pub fn validate_frame(
    frame: DataFrame,
    rules: &[ColumnRule],
    max_error_rate: f64,
) -> PolarsResult<ValidationOutcome> {
    let total = frame.height() as u64;
    let schema = frame.schema().clone();
    let mut errors_per_rule: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors_per_column: BTreeMap<String, u64> = BTreeMap::new();
    let mut structural = Vec::new();
    let mut checks = Vec::new();
    for rule in rules {
        match schema.get(rule.column.as_str()) {
            Some(dtype) => checks.extend(checks_of(rule, dtype)),
            None if rule.required.unwrap_or(true) => structural.push(rule.column.clone()),
            None => {}
        }
    }
    // A missing required column fails every row: the report says so once per column.
    if !structural.is_empty() {
        for column in &structural {
            *errors_per_rule.entry("missing_column".into()).or_default() += 1;
            *errors_per_column.entry(column.clone()).or_default() += 1;
        }
        let count = structural.len();
        let errors = error_frame(
            vec![None; count],
            structural,
            vec!["missing_column".to_string(); count],
            vec![None; count],
        )?;
        let summary = ValidationSummary {
            rows: total,
            error_rows: total,
            error_rate: 1.0,
            max_error_rate,
            passed: false,
            errors_per_rule,
            errors_per_column,
            report_complete: true,
        };
        return Ok(ValidationOutcome {
            valid: frame.clear(),
            errors,
            summary,
        });
    }
    let flag = |index: usize| format!("__tenantry_check_{index}");
    let flags: Vec<Expr> = checks
        .iter()
        .enumerate()
        .map(|(index, check)| check.violated.clone().alias(flag(index)))
        .collect();
    let any_error = if checks.is_empty() {
        lit(false)
    } else {
        any_horizontal(
            (0..checks.len())
                .map(|index| col(flag(index)))
                .collect::<Vec<_>>(),
        )?
    };
    // Typed columns come out cast, so downstream steps see the declared types.
    let casts: Vec<Expr> = rules
        .iter()
        .filter_map(|rule| {
            let column_type = rule.column_type?;
            schema.get(rule.column.as_str())?;
            Some(col(rule.column.as_str()).cast(dtype_of(column_type)))
        })
        .collect();
    let mut frame = frame;
    let mut duplicate_flags = Vec::new();
    for rule in rules.iter().filter(|rule| rule.unique) {
        let name = duplicate_flag(&rule.column);
        if schema.get(rule.column.as_str()).is_some() && !duplicate_flags.contains(&name) {
            let flags = crate::stages::keys::duplicated(&frame, &rule.column)?;
            frame.with_column(flags.with_name(name.as_str().into()).into_column())?;
            duplicate_flags.push(name);
        }
    }
    let flagged = frame
        .lazy()
        .with_row_index(ROW, None)
        .with_columns(flags)
        .with_column(any_error.alias("__tenantry_any"))
        .collect()?;
    let mut rows = Vec::new();
    let mut columns = Vec::new();
    let mut rule_names = Vec::new();
    let mut values = Vec::new();
    let mut reported = 0usize;
    for (index, check) in checks.iter().enumerate() {
        // Most checks find nothing: count first, gather only where something was found.
        if flagged.column(&flag(index))?.bool()?.sum().unwrap_or(0) == 0 {
            continue;
        }
        let violating = flagged
            .clone()
            .lazy()
            .filter(col(flag(index)))
            .select([
                col(ROW).cast(DataType::UInt64),
                col(check.column.as_str())
                    .cast(DataType::String)
                    .alias("value"),
            ])
            .collect()?;
        let count = violating.height() as u64;
        if count == 0 {
            continue;
        }
        *errors_per_rule.entry(check.rule.to_string()).or_default() += count;
        *errors_per_column.entry(check.column.clone()).or_default() += count;
        let keep = (MAX_REPORTED_ERRORS - reported).min(violating.height());
        if keep == 0 {
            continue;
        }
        let row_values = violating.column(ROW)?.u64()?.clone();
        let text_values = violating.column("value")?.str()?.clone();
        for position in 0..keep {
            rows.push(row_values.get(position));
            values.push(text_values.get(position).map(str::to_string));
        }
        columns.extend(std::iter::repeat_n(check.column.clone(), keep));
        rule_names.extend(std::iter::repeat_n(check.rule.to_string(), keep));
        reported += keep;
    }
    let total_errors: u64 = errors_per_rule.values().sum();
    let mut helpers: Vec<String> = (0..checks.len()).map(flag).collect();
    helpers.extend([ROW.to_string(), "__tenantry_any".to_string()]);
    helpers.extend(duplicate_flags);
    let valid = flagged
        .clone()
        .lazy()
        .filter(col("__tenantry_any").not())
        .drop(cols(helpers))
        .collect()?;
    let valid = if casts.is_empty() {
        valid
    } else {
        valid.lazy().with_columns(casts).collect()?
    };
    let error_rows = total - valid.height() as u64;
    let error_rate = if total == 0 {
        0.0
    } else {
        error_rows as f64 / total as f64
    };
    let errors = error_frame(rows, columns, rule_names, values)?;
    Ok(ValidationOutcome {
        valid,
        errors,
        summary: ValidationSummary {
            rows: total,
            error_rows,
            error_rate,
            max_error_rate,
            passed: error_rate <= max_error_rate,
            errors_per_rule,
            errors_per_column,
            report_complete: reported as u64 == total_errors,
        },
    })
}
