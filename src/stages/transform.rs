//! The `transform` stage: declarative ops applied to a LazyFrame in order, executed by polars
//! in one optimised plan. Reference datasets for `join` come in by input alias, already
//! resolved inside the tenant.

use std::collections::HashMap;

use polars::prelude::*;

use crate::stages::dtype_of;

use crate::manifest::expr::{BinaryOp, Expr as Ast, Function, Literal, parse_expr};
use crate::manifest::{JoinHow, Keep, TransformOp};
use crate::stages::keys::first_occurrences;
use crate::stages::text::{TextOptions, normalize_expr};

fn literal(value: &Literal) -> Expr {
    match value {
        Literal::Null => lit(NULL),
        Literal::Bool(flag) => lit(*flag),
        Literal::Int(int) => lit(*int),
        Literal::Float(float) => lit(*float),
        Literal::Str(text) => lit(text.clone()),
    }
}

/// Translates the manifest expression language into a polars expression.
pub fn to_polars(ast: &Ast) -> Expr {
    match ast {
        Ast::Column(name) => col(name.as_str()),
        Ast::Literal(value) => literal(value),
        Ast::Not(inner) => to_polars(inner).not(),
        Ast::Negate(inner) => lit(0) - to_polars(inner),
        Ast::Binary(op, left, right) => {
            let (left, right) = (to_polars(left), to_polars(right));
            match op {
                BinaryOp::Or => left.or(right),
                BinaryOp::And => left.and(right),
                BinaryOp::Eq => left.eq(right),
                BinaryOp::NotEq => left.neq(right),
                BinaryOp::Lt => left.lt(right),
                BinaryOp::LtEq => left.lt_eq(right),
                BinaryOp::Gt => left.gt(right),
                BinaryOp::GtEq => left.gt_eq(right),
                BinaryOp::Add => left + right,
                BinaryOp::Sub => left - right,
                BinaryOp::Mul => left * right,
                BinaryOp::Div => left / right,
                BinaryOp::Rem => left % right,
            }
        }
        Ast::Call(function, args) => {
            let mut args = args.iter().map(to_polars);
            let first = args.next().expect("arity is checked by the parser");
            match function {
                Function::Len => first.str().len_chars().cast(DataType::Int64),
                Function::Lower => first.str().to_lowercase(),
                Function::Upper => first.str().to_uppercase(),
                Function::Trim => first.str().strip_chars(lit(NULL)),
                Function::Contains => first.str().contains_literal(args.next().expect("arity")),
                Function::StartsWith => first.str().starts_with(args.next().expect("arity")),
                Function::EndsWith => first.str().ends_with(args.next().expect("arity")),
                Function::Coalesce => {
                    let mut all = vec![first];
                    all.extend(args);
                    coalesce(&all)
                }
                Function::Abs => first.abs(),
            }
        }
        Ast::InList {
            value,
            list,
            negated,
        } => {
            let value = to_polars(value);
            let series = list_series(list);
            let found = value.is_in(lit(series).implode(false), false);
            if *negated { found.not() } else { found }
        }
        Ast::IsNull { value, negated } => {
            let value = to_polars(value);
            if *negated {
                value.is_not_null()
            } else {
                value.is_null()
            }
        }
    }
}

fn list_series(list: &[Literal]) -> Series {
    let all_ints = list.iter().all(|item| matches!(item, Literal::Int(_)));
    let all_numbers = list
        .iter()
        .all(|item| matches!(item, Literal::Int(_) | Literal::Float(_)));
    if all_ints {
        let values: Vec<i64> = list
            .iter()
            .filter_map(|item| match item {
                Literal::Int(int) => Some(*int),
                _ => None,
            })
            .collect();
        return Series::new("list".into(), values);
    }
    if all_numbers {
        let values: Vec<f64> = list
            .iter()
            .filter_map(|item| match item {
                Literal::Int(int) => Some(*int as f64),
                Literal::Float(float) => Some(*float),
                _ => None,
            })
            .collect();
        return Series::new("list".into(), values);
    }
    let values: Vec<Option<String>> = list
        .iter()
        .map(|item| match item {
            Literal::Null => None,
            Literal::Bool(flag) => Some(flag.to_string()),
            Literal::Int(int) => Some(int.to_string()),
            Literal::Float(float) => Some(float.to_string()),
            Literal::Str(text) => Some(text.clone()),
        })
        .collect();
    Series::new("list".into(), values)
}

fn fill_value(value: &serde_json::Value) -> Expr {
    match value {
        serde_json::Value::Bool(flag) => lit(*flag),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(int) => lit(int),
            None => lit(number.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(text) => lit(text.clone()),
        _ => lit(NULL),
    }
}

fn expression(text: &str) -> PolarsResult<Expr> {
    parse_expr(text)
        .map(|ast| to_polars(&ast))
        .map_err(|error| polars_err!(ComputeError: "invalid expression {text:?}: {error}"))
}

/// Applies `ops` in order. `references` holds the reference datasets by input alias.
pub fn apply_ops(
    mut frame: LazyFrame,
    ops: &[TransformOp],
    references: &HashMap<String, DataFrame>,
) -> PolarsResult<LazyFrame> {
    for op in ops {
        frame = match op {
            TransformOp::Select(columns) => frame.select(
                columns
                    .iter()
                    .map(|name| col(name.as_str()))
                    .collect::<Vec<_>>(),
            ),
            TransformOp::Rename(renames) => {
                let (old, new): (Vec<&str>, Vec<&str>) = renames
                    .iter()
                    .map(|(old, new)| (old.as_str(), new.as_str()))
                    .unzip();
                frame.rename(old, new, true)
            }
            TransformOp::Cast(casts) => frame.with_columns(
                casts
                    .iter()
                    .map(|(name, column_type)| {
                        col(name.as_str()).strict_cast(dtype_of(*column_type))
                    })
                    .collect::<Vec<_>>(),
            ),
            TransformOp::Filter(text) => frame.filter(expression(text)?),
            TransformOp::Derive(derive) => {
                frame.with_column(expression(&derive.expr)?.alias(derive.column.as_str()))
            }
            TransformOp::Dedupe(dedupe) => {
                let keep_last = dedupe.keep == Some(Keep::Last);
                if dedupe.columns.is_empty() {
                    let keep = if keep_last {
                        UniqueKeepStrategy::Last
                    } else {
                        UniqueKeepStrategy::First
                    };
                    frame.unique_stable(None, keep)
                } else {
                    // Materialised here: which rows stay depends on every row before them.
                    let collected = frame.collect()?;
                    let keep = first_occurrences(&collected, &dedupe.columns, keep_last)?;
                    collected.filter(&keep)?.lazy()
                }
            }
            TransformOp::FillNull(fills) => frame.with_columns(
                fills
                    .iter()
                    .map(|(name, value)| col(name.as_str()).fill_null(fill_value(value)))
                    .collect::<Vec<_>>(),
            ),
            TransformOp::NormalizeText(normalize) => {
                let options = TextOptions::of(normalize);
                frame.with_columns(
                    normalize
                        .columns
                        .iter()
                        .map(|name| normalize_expr(name, options))
                        .collect::<Vec<_>>(),
                )
            }
            TransformOp::MapValues(map) => {
                let (old, new): (Vec<String>, Vec<String>) = map
                    .mapping
                    .iter()
                    .map(|(old, new)| (old.clone(), new.clone()))
                    .unzip();
                let old = lit(Series::new("old".into(), old));
                let new = lit(Series::new("new".into(), new));
                let source = col(map.column.as_str()).cast(DataType::String);
                let mapped = match &map.default {
                    Some(default) => source.replace_strict(
                        old,
                        new,
                        Some(lit(default.clone())),
                        Some(DataType::String),
                    ),
                    None => source.replace(old, new),
                };
                frame.with_column(mapped.alias(map.column.as_str()))
            }
            TransformOp::Join(join) => {
                let reference = references.get(&join.input).ok_or_else(
                    || polars_err!(ComputeError: "reference input {:?} is not loaded", join.input),
                )?;
                let mut right = reference.clone().lazy();
                if !join.columns.is_empty() {
                    let mut keep: Vec<Expr> =
                        join.on.iter().map(|name| col(name.as_str())).collect();
                    keep.extend(
                        join.columns
                            .iter()
                            .filter(|name| !join.on.contains(name))
                            .map(|name| col(name.as_str())),
                    );
                    right = right.select(keep);
                }
                let keys: Vec<Expr> = join.on.iter().map(|name| col(name.as_str())).collect();
                let how = match join.how.unwrap_or(JoinHow::Left) {
                    JoinHow::Left => JoinType::Left,
                    JoinHow::Inner => JoinType::Inner,
                };
                // Keep the left order: users read outputs next to their inputs.
                let mut args = JoinArgs::new(how);
                args.maintain_order = MaintainOrderJoin::Left;
                frame.join(right, keys.clone(), keys, args)
            }
        };
    }
    Ok(frame)
}
