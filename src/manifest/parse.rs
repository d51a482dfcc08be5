//! From text to a validated [`Manifest`]: YAML/JSON with positions, typed deserialisation with
//! the JSON pointer of the failing field, then the semantic checks (ids, DAG, stages, inputs,
//! expressions, cron). Every issue names its line, column and pointer.

use std::fmt;

use serde::Serialize;

use crate::manifest::check::check_semantics;
use crate::manifest::types::{ManifestV1, Step};
use crate::manifest::yaml::{self, Located, Position, escape_segment};

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// Most steps in one pipeline.
pub const MAX_STEPS: usize = 100;
pub const API_VERSION: &str = "tenantry/v1";

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ManifestIssue {
    pub line: usize,
    pub column: usize,
    /// JSON pointer of the field (`/steps/1/validate/maxErrorRate`).
    pub pointer: String,
    pub message: String,
}

impl fmt::Display for ManifestIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(
            f,
            "line {}, column {} ({pointer}): {}",
            self.line, self.column, self.message
        )
    }
}

/// Every problem found; parsing stops at the first syntax or type error, the semantic checks
/// report all they find.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ManifestError {
    pub issues: Vec<ManifestIssue>,
}

impl ManifestError {
    pub fn into_issues(self) -> Vec<ManifestIssue> {
        self.issues
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.issues.iter().map(ToString::to_string).collect();
        write!(f, "invalid manifest: {}", lines.join("; "))
    }
}

/// A manifest that passed every check, with its steps in dependency order.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub spec: ManifestV1,
    /// Indexes into `spec.steps`, each after everything it needs.
    pub order: Vec<usize>,
}

impl Manifest {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.spec.steps.iter().find(|step| step.id == id)
    }

    /// Steps that list `id` in their `needs`.
    pub fn dependants(&self, id: &str) -> Vec<&Step> {
        self.spec
            .steps
            .iter()
            .filter(|step| step.needs.iter().any(|need| need == id))
            .collect()
    }

    /// Re-validates a stored manifest (a run record written by an earlier version).
    pub fn from_spec(spec: ManifestV1) -> Result<Self, ManifestError> {
        let text = serde_json::to_string(&spec).map_err(|error| ManifestError {
            issues: vec![issue_at(
                Position { line: 1, column: 1 },
                "",
                error.to_string(),
            )],
        })?;
        parse_manifest(&text)
    }
}

fn issue_at(position: Position, pointer: &str, message: impl Into<String>) -> ManifestIssue {
    ManifestIssue {
        line: position.line,
        column: position.column,
        pointer: pointer.to_string(),
        message: message.into(),
    }
}

/// Collects issues with positions from the located tree.
pub(crate) struct Checker<'a> {
    located: &'a Located,
    issues: Vec<ManifestIssue>,
}

impl Checker<'_> {
    pub(crate) fn push(&mut self, pointer: &str, message: impl Into<String>) {
        let position = self.located.position_of(pointer);
        self.issues.push(issue_at(position, pointer, message));
    }

    /// An issue about a mapping key itself (an unknown field): located at the key.
    fn push_key(&mut self, pointer: &str, message: impl Into<String>) {
        let position = match self.located.keys.get(pointer) {
            Some(position) => *position,
            None => self.located.position_of(pointer),
        };
        self.issues.push(issue_at(position, pointer, message));
    }
}

/// Converts the path serde stopped at into a JSON pointer.
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => pointer.push_str(&format!("/{}", escape_segment(key))),
            Segment::Enum { variant } => pointer.push_str(&format!("/{}", escape_segment(variant))),
            Segment::Unknown => {}
        }
    }
    pointer
}

/// Reads `text` (YAML or JSON) into a validated manifest.
pub fn parse_manifest(text: &str) -> Result<Manifest, ManifestError> {
    let first = |message: String| ManifestError {
        issues: vec![issue_at(Position { line: 1, column: 1 }, "", message)],
    };
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(first(format!(
            "the manifest is {} bytes; the limit is {MAX_MANIFEST_BYTES}",
            text.len()
        )));
    }
    let located = yaml::parse(text).map_err(|error| ManifestError {
        issues: vec![issue_at(error.position, "", error.message)],
    })?;
    let mut checker = Checker {
        located: &located,
        issues: Vec::new(),
    };
    if !located.value.is_object() {
        checker.push(
            "",
            "a manifest is a mapping with apiVersion, kind, metadata and steps",
        );
        return Err(ManifestError {
            issues: checker.issues,
        });
    }
    match located.value.get("apiVersion").and_then(|v| v.as_str()) {
        Some(API_VERSION) => {}
        Some(other) => checker.push(
            "/apiVersion",
            format!("unsupported apiVersion {other:?}; this platform reads {API_VERSION:?}"),
        ),
        None => checker.push(
            "",
            format!("missing field `apiVersion` (use {API_VERSION:?})"),
        ),
    }
    match located.value.get("kind").and_then(|v| v.as_str()) {
        Some("Pipeline") => {}
        Some(other) => checker.push(
            "/kind",
            format!("unsupported kind {other:?}; expected \"Pipeline\""),
        ),
        None => checker.push("", "missing field `kind` (use \"Pipeline\")"),
    }
    if !checker.issues.is_empty() {
        return Err(ManifestError {
            issues: checker.issues,
        });
    }
    let spec: ManifestV1 = match serde_path_to_error::deserialize(located.value.clone()) {
        Ok(spec) => spec,
        Err(error) => {
            let mut pointer = pointer_of(error.path());
            let message = error.inner().to_string();
            // An unknown field: point at the key itself (serde may stop at its parent).
            if let Some(name) = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
            {
                let segment = format!("/{}", escape_segment(name));
                if !pointer.ends_with(&segment) {
                    pointer.push_str(&segment);
                }
                checker.push_key(&pointer, message);
            } else {
                checker.push(&pointer, message);
            }
            return Err(ManifestError {
                issues: checker.issues,
            });
        }
    };
    let order = check_semantics(&spec, &mut checker);
    if checker.issues.is_empty() {
        Ok(Manifest { spec, order })
    } else {
        Err(ManifestError {
            issues: checker.issues,
        })
    }
}
