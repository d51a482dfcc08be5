//! Each validation rule and each transform op on small frames.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;

use crate::manifest::{ColumnRule, ColumnType, TransformOp, parse_ops};
use crate::stages::{apply_ops, take_sample, validate_frame};

fn frame() -> DataFrame {
    df![
        "id" => ["a-1", "a-2", "a-2", "B 4", "a-5"],
        "text" => [Some("  Hello   World "), Some("ｆｕｌｌ width"), None, Some("short"), Some("fine text here")],
        "label" => [Some("x"), Some("y"), Some("z"), None, Some("x")],
        "amount" => [Some(1.5), Some(10.0), Some(-3.0), Some(2.0), None],
        "count" => ["1", "2", "three", "4", "5"],
    ]
    .unwrap()
}

fn rule(column: &str) -> ColumnRule {
    ColumnRule {
        column: column.to_string(),
        ..ColumnRule::default()
    }
}

/// (row, rule) pairs of the error report.
fn violations(rules: &[ColumnRule]) -> Vec<(u64, String, String)> {
    let outcome = validate_frame(frame(), rules, 1.0).unwrap();
    let errors = outcome.errors;
    let rows = errors.column("row").unwrap().u64().unwrap().clone();
    let columns = errors.column("column").unwrap().str().unwrap().clone();
    let names = errors.column("rule").unwrap().str().unwrap().clone();
    (0..errors.height())
        .map(|i| {
            (
                rows.get(i).unwrap(),
                columns.get(i).unwrap().to_string(),
                names.get(i).unwrap().to_string(),
            )
        })
        .collect()
}

fn rows_violating(rules: &[ColumnRule]) -> Vec<u64> {
    violations(rules).into_iter().map(|(row, ..)| row).collect()
}

#[test]
fn not_null_and_type() {
    assert_eq!(
        rows_violating(&[ColumnRule {
            not_null: true,
            ..rule("text")
        }]),
        [2]
    );
    let typed = ColumnRule {
        column_type: Some(ColumnType::Integer),
        ..rule("count")
    };
    assert_eq!(
        violations(&[typed]),
        [(2, "count".to_string(), "type".to_string())]
    );
    let integral = ColumnRule {
        column_type: Some(ColumnType::Integer),
        ..rule("amount")
    };
    assert_eq!(rows_violating(&[integral]), [0], "1.5 is not an integer");
}

#[test]
fn ranges_regex_allowed_unique_and_lengths() {
    assert_eq!(
        rows_violating(&[ColumnRule {
            min: Some(0.0),
            ..rule("amount")
        }]),
        [2]
    );
    assert_eq!(
        rows_violating(&[ColumnRule {
            max: Some(5.0),
            ..rule("amount")
        }]),
        [1]
    );
    assert_eq!(
        rows_violating(&[ColumnRule {
            regex: Some("[a-z]-[0-9]".into()),
            ..rule("id")
        }]),
        [3],
        "anchored: the whole value must match"
    );
    let allowed = ColumnRule {
        allowed: Some(vec!["x".into(), "y".into()]),
        ..rule("label")
    };
    assert_eq!(
        rows_violating(&[allowed]),
        [2],
        "null is not checked by allowed"
    );
    assert_eq!(
        rows_violating(&[ColumnRule {
            unique: true,
            ..rule("id")
        }]),
        [1, 2]
    );
    assert_eq!(
        rows_violating(&[ColumnRule {
            max_length: Some(12),
            ..rule("text")
        }]),
        [0, 4]
    );
    assert_eq!(
        rows_violating(&[ColumnRule {
            min_length: Some(6),
            ..rule("text")
        }]),
        [3]
    );
}

#[test]
fn missing_columns_fail_every_row_without_panicking() {
    let outcome = validate_frame(frame(), &[rule("nope")], 0.5).unwrap();
    assert!(!outcome.summary.passed);
    assert_eq!(outcome.summary.error_rows, 5);
    assert_eq!(outcome.summary.errors_per_rule["missing_column"], 1);
    assert_eq!(outcome.valid.height(), 0);
    let optional = ColumnRule {
        required: Some(false),
        not_null: true,
        ..rule("nope")
    };
    assert!(
        validate_frame(frame(), &[optional], 0.0)
            .unwrap()
            .summary
            .passed
    );
}

#[test]
fn the_summary_and_the_passing_rows() {
    let rules = [
        ColumnRule {
            not_null: true,
            ..rule("text")
        },
        ColumnRule {
            unique: true,
            ..rule("id")
        },
    ];
    let outcome = validate_frame(frame(), &rules, 0.5).unwrap();
    assert_eq!(outcome.summary.rows, 5);
    assert_eq!(
        outcome.summary.error_rows, 2,
        "row 2 has two errors but counts once"
    );
    assert!((outcome.summary.error_rate - 0.4).abs() < 1e-9);
    assert!(outcome.summary.passed);
    assert_eq!(
        outcome.summary.errors_per_rule,
        BTreeMap::from([("not_null".into(), 1), ("unique".into(), 2)])
    );
    assert_eq!(outcome.valid.height(), 3);
    assert_eq!(
        outcome.valid.get_column_names().len(),
        5,
        "no helper columns leak"
    );
    assert!(
        !validate_frame(frame(), &rules, 0.39)
            .unwrap()
            .summary
            .passed
    );
}

fn run(ops: serde_json::Value) -> DataFrame {
    let ops: Vec<TransformOp> = parse_ops(&ops).unwrap();
    apply_ops(frame().lazy(), &ops, &HashMap::new())
        .unwrap()
        .collect()
        .unwrap()
}

fn strings(frame: &DataFrame, column: &str) -> Vec<Option<String>> {
    frame
        .column(column)
        .unwrap()
        .cast(&DataType::String)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

#[test]
fn select_rename_cast_and_fill() {
    let out = run(serde_json::json!([{"select": ["id", "count"]}, {"rename": {"count": "n"}}]));
    assert_eq!(out.get_column_names(), ["id", "n"]);
    let out =
        run(serde_json::json!([{"filter": "count != 'three'"}, {"cast": {"count": "integer"}}]));
    assert_eq!(out.column("count").unwrap().dtype(), &DataType::Int64);
    let failing: Vec<TransformOp> =
        parse_ops(&serde_json::json!([{"cast": {"count": "integer"}}])).unwrap();
    assert!(
        apply_ops(frame().lazy(), &failing, &HashMap::new())
            .unwrap()
            .collect()
            .is_err(),
        "a value that does not convert fails"
    );
    let out = run(serde_json::json!([{"fillNull": {"label": "unknown", "amount": 0}}]));
    assert_eq!(strings(&out, "label")[3].as_deref(), Some("unknown"));
    assert_eq!(
        out.column("amount").unwrap().f64().unwrap().get(4),
        Some(0.0)
    );
}

#[test]
fn filter_and_derive_expressions() {
    let out = run(serde_json::json!([{"filter": "amount > 0 and label in ['x', 'y']"}]));
    assert_eq!(
        strings(&out, "id"),
        [Some("a-1".into()), Some("a-2".into())]
    );
    let out = run(
        serde_json::json!([{"derive": {"column": "shout", "expr": "upper(trim(label)) + '!'"}}, {"derive": {"column": "double", "expr": "amount * 2"}}]),
    );
    assert_eq!(strings(&out, "shout")[0].as_deref(), Some("X!"));
    assert_eq!(
        out.column("double").unwrap().f64().unwrap().get(1),
        Some(20.0)
    );
    let out =
        run(serde_json::json!([{"filter": "text is not null and not contains(text, 'short')"}]));
    assert_eq!(out.height(), 3);
}

#[test]
fn dedupe_keeps_the_first_or_last_in_order() {
    let out = run(serde_json::json!([{"dedupe": {"columns": ["id"]}}]));
    assert_eq!(
        strings(&out, "label"),
        [Some("x".into()), Some("y".into()), None, Some("x".into())]
    );
    let out = run(serde_json::json!([{"dedupe": {"columns": ["id"], "keep": "last"}}]));
    assert_eq!(strings(&out, "label")[1].as_deref(), Some("z"));
    assert_eq!(
        run(serde_json::json!([{"dedupe": {}}])).height(),
        5,
        "whole rows differ"
    );
}

#[test]
fn text_normalisation() {
    let out = run(
        serde_json::json!([{"normalizeText": {"columns": ["text"], "lowercase": true, "collapseWhitespace": true}}]),
    );
    let texts = strings(&out, "text");
    assert_eq!(texts[0].as_deref(), Some("hello world"));
    assert_eq!(
        texts[1].as_deref(),
        Some("full width"),
        "NFKC folds full-width letters"
    );
    assert_eq!(texts[2], None);
}

#[test]
fn map_values_with_and_without_default() {
    let out = run(serde_json::json!([{"mapValues": {"column": "label", "mapping": {"x": "ex"}}}]));
    assert_eq!(
        strings(&out, "label"),
        [
            Some("ex".into()),
            Some("y".into()),
            Some("z".into()),
            None,
            Some("ex".into())
        ]
    );
    let out = run(
        serde_json::json!([{"mapValues": {"column": "label", "mapping": {"x": "ex"}, "default": "other"}}]),
    );
    assert_eq!(strings(&out, "label")[1].as_deref(), Some("other"));
}

#[test]
fn join_a_reference_dataset() {
    let reference =
        df!["label" => ["x", "y"], "meaning" => ["ecks", "why"], "unused" => [1, 2]].unwrap();
    let ops: Vec<TransformOp> = serde_json::from_value(
        serde_json::json!([{"join": {"input": "ref", "on": ["label"], "columns": ["meaning"]}}]),
    )
    .unwrap();
    let references = HashMap::from([("ref".to_string(), reference)]);
    let out = apply_ops(frame().lazy(), &ops, &references)
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(out.height(), 5, "a left join keeps every row");
    assert_eq!(
        strings(&out, "meaning"),
        [
            Some("ecks".into()),
            Some("why".into()),
            None,
            None,
            Some("ecks".into())
        ]
    );
    assert!(out.column("unused").is_err());
    let inner: Vec<TransformOp> = serde_json::from_value(
        serde_json::json!([{"join": {"input": "ref", "on": ["label"], "how": "inner"}}]),
    )
    .unwrap();
    assert_eq!(
        apply_ops(frame().lazy(), &inner, &references)
            .unwrap()
            .collect()
            .unwrap()
            .height(),
        3
    );
}

#[test]
fn samples_take_the_head_or_spread_rows() {
    let rows = take_sample(
        &frame(),
        &crate::manifest::Sample {
            rows: Some(2),
            fraction: None,
        },
    )
    .unwrap();
    assert_eq!(
        strings(&rows, "id"),
        [Some("a-1".into()), Some("a-2".into())]
    );
    let spread = take_sample(
        &frame(),
        &crate::manifest::Sample {
            rows: None,
            fraction: Some(0.5),
        },
    )
    .unwrap();
    assert_eq!(
        strings(&spread, "id"),
        [Some("a-1".into()), Some("a-2".into()), Some("a-5".into())]
    );
}
