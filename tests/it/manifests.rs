//! Manifest parsing: every error names its line, column and JSON pointer; the checked-in
//! examples and JSON Schema stay true.

use tenantry::manifest::{ManifestIssue, json_schema, parse_manifest};

const VALID: &str = "\
apiVersion: tenantry/v1
kind: Pipeline
metadata:
  name: clauses
inputs:
  raw: {dataset: clauses}
steps:
  - id: check
    validate:
      input: raw
      schema: contract-clause
      maxErrorRate: 0.05
  - id: clean
    needs: [check]
    transform:
      input: check
      ops:
        - filter: \"len(text) > 10\"
";

/// The only issue of an invalid manifest.
fn issue(text: &str) -> ManifestIssue {
    let error = parse_manifest(text).expect_err("the manifest is invalid");
    assert_eq!(error.issues.len(), 1, "{error}");
    error.issues[0].clone()
}

fn replace(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?} not in the manifest");
    VALID.replacen(from, to, 1)
}

#[test]
fn a_valid_manifest_parses_with_steps_in_dependency_order() {
    let manifest = parse_manifest(VALID).unwrap();
    let order: Vec<&str> = manifest
        .order
        .iter()
        .map(|&index| manifest.spec.steps[index].id.as_str())
        .collect();
    assert_eq!(order, ["check", "clean"]);
    // JSON is accepted too, with positions.
    let json = serde_json::to_string_pretty(&manifest.spec).unwrap();
    assert_eq!(parse_manifest(&json).unwrap().spec, manifest.spec);
}

#[test]
fn an_unknown_field_points_at_the_key() {
    let found = issue(&replace(
        "      maxErrorRate: 0.05",
        "      maxErrorRat: 0.05",
    ));
    assert_eq!((found.line, found.column), (12, 7));
    assert_eq!(found.pointer, "/steps/0/validate/maxErrorRat");
    assert!(
        found.message.contains("unknown field `maxErrorRat`"),
        "{}",
        found.message
    );
}

#[test]
fn a_wrong_type_points_at_the_value() {
    let found = issue(&replace("maxErrorRate: 0.05", "maxErrorRate: lots"));
    assert_eq!((found.line, found.column), (12, 21));
    assert_eq!(found.pointer, "/steps/0/validate/maxErrorRate");
    assert!(found.message.contains("invalid type"), "{}", found.message);
}

#[test]
fn a_missing_field_points_at_its_parent() {
    let found = issue(&replace("      input: raw\n", ""));
    assert_eq!(found.pointer, "/steps/0/validate");
    assert_eq!(found.line, 10);
    assert!(
        found.message.contains("missing field `input`"),
        "{}",
        found.message
    );
}

#[test]
fn version_and_kind_are_checked_first() {
    let found = issue(&replace("tenantry/v1", "tenantry/v9"));
    assert_eq!(
        (found.line, found.column, found.pointer.as_str()),
        (1, 13, "/apiVersion")
    );
    assert!(found.message.contains("tenantry/v1"));
    let found = issue(&replace("kind: Pipeline", "kind: Job"));
    assert_eq!((found.line, found.pointer.as_str()), (2, "/kind"));
}

#[test]
fn semantic_errors_name_the_field() {
    let cases = [
        (
            replace(
                "- id: clean\n    needs: [check]\n    transform:\n      input: check",
                "- id: check\n    transform:\n      input: raw",
            ),
            "/steps/1/id",
            13,
            "duplicate step id",
        ),
        (
            replace("needs: [check]", "needs: [check, chek]"),
            "/steps/1/needs/1",
            14,
            "no step has id",
        ),
        (
            replace("      input: check", "      input: raw2"),
            "/steps/1/transform/input",
            16,
            "neither an input alias",
        ),
        (
            replace("needs: [check]", "needs: []"),
            "/steps/1/transform/input",
            16,
            "must be listed in `needs`",
        ),
        (
            replace("maxErrorRate: 0.05", "maxErrorRate: 1.5"),
            "/steps/0/validate/maxErrorRate",
            12,
            "between 0 and 1",
        ),
        (
            replace("schema: contract-clause", "schema: invoices"),
            "/steps/0/validate/schema",
            11,
            "unknown dataset schema",
        ),
        (
            replace("\"len(text) > 10\"", "\"len(text) >\""),
            "/steps/1/transform/ops/0/filter",
            18,
            "invalid expression",
        ),
        (
            replace("  name: clauses", "  name: Clauses!"),
            "/metadata/name",
            4,
            "lowercase",
        ),
        (
            replace(
                "  - id: clean\n",
                "  - id: clean\n    validate: {input: check, rules: [{column: a, regex: \"(\"}]}\n",
            ),
            "/steps/1",
            13,
            "exactly one stage",
        ),
    ];
    for (text, pointer, line, message) in cases {
        let found = issue(&text);
        assert_eq!(found.pointer, pointer, "{found:?}");
        assert_eq!(found.line, line, "{found:?}");
        assert!(found.message.contains(message), "{found:?}");
    }
}

#[test]
fn rules_and_schedules_are_checked() {
    let with_rule = replace(
        "      maxErrorRate: 0.05",
        "      rules:\n        - {column: id, regex: \"([a-z\", min: 5, max: 1}",
    );
    let error = parse_manifest(&with_rule).unwrap_err();
    let pointers: Vec<&str> = error.issues.iter().map(|i| i.pointer.as_str()).collect();
    assert!(
        pointers.contains(&"/steps/0/validate/rules/0/regex"),
        "{error}"
    );
    assert!(
        pointers.contains(&"/steps/0/validate/rules/0/min"),
        "{error}"
    );
    assert!(error.issues.iter().all(|i| i.line == 13), "{error}");
    let scheduled = replace("inputs:", "schedule: \"61 2 * * *\"\ninputs:");
    let found = issue(&scheduled);
    assert_eq!((found.pointer.as_str(), found.line), ("/schedule", 5));
    let fine = replace("inputs:", "schedule: \"30 2 * * 1-5\"\ninputs:");
    assert_eq!(
        parse_manifest(&fine).unwrap().spec.schedule.as_deref(),
        Some("30 2 * * 1-5")
    );
}

#[test]
fn a_cycle_is_reported() {
    let text = replace("  - id: check\n", "  - id: check\n    needs: [clean]\n");
    let error = parse_manifest(&text).unwrap_err();
    assert!(error.to_string().contains("cycle"), "{error}");
    assert!(error.issues[0].pointer.ends_with("/needs"), "{error}");
}

#[test]
fn yaml_syntax_errors_aliases_and_size_are_bounded() {
    let found = issue("apiVersion: tenantry/v1\nkind: [Pipeline\nmetadata: {}\n");
    assert!(found.line >= 2, "{found:?}");
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..9 {
        bomb.push_str(&format!(
            "b{level}: &b{level} [{}]\n",
            vec![
                format!(
                    "*{}",
                    if level == 1 {
                        "a".into()
                    } else {
                        format!("b{}", level - 1)
                    }
                );
                10
            ]
            .join(", ")
        ));
    }
    assert!(issue(&bomb).message.contains("nodes"));
    let huge = format!("{VALID}# {}\n", "x".repeat(300 * 1024));
    assert!(issue(&huge).message.contains("limit"));
    assert!(issue("").message.contains("mapping"));
    let duplicated = replace("kind: Pipeline\n", "kind: Pipeline\nkind: Pipeline\n");
    assert_eq!(issue(&duplicated).line, 3);
}

#[test]
fn every_example_pipeline_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(error) = parse_manifest(&text) {
            panic!("{}: {error}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 3, "one example per demo tenant, found {checked}");
}

#[test]
fn the_checked_in_json_schema_is_current() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/manifest.schema.json");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == json_schema(),
        "schemas/manifest.schema.json is stale: run `cargo run -- manifest schema > schemas/manifest.schema.json`"
    );
}

#[test]
fn the_checked_in_fixture_sample_is_what_the_generator_writes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for profile in &tenantry::fixtures::PROFILES {
        let (bytes, format) = tenantry::fixtures::source_bytes(profile, 200, 42).unwrap();
        let path = root.join(format!(
            "fixtures/sample/{}-clauses.{}",
            profile.tenant,
            format.as_str()
        ));
        let checked_in = std::fs::read(&path).unwrap_or_default();
        assert!(
            checked_in == bytes,
            "{} differs from the generator: run `cargo run -- fixtures generate --rows 200 --seed 42 --out fixtures/sample`",
            path.display()
        );
    }
}
