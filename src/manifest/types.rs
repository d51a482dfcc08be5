//! The manifest as users write it (`apiVersion: tenantry/v1`, `kind: Pipeline`). Keys are
//! camelCase; every struct refuses unknown fields. The JSON Schema in
//! `schemas/manifest.schema.json` is generated from these types (`tenantry manifest schema`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pipeline manifest, version `tenantry/v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "tenantry pipeline manifest (tenantry/v1)")]
pub struct ManifestV1 {
    /// Always `tenantry/v1`.
    pub api_version: String,
    /// Always `Pipeline`.
    pub kind: String,
    pub metadata: Metadata,
    /// Input datasets by alias: steps name an alias, never a storage path.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Cron expression (UTC): 5 fields (`min hour day month weekday`) or 6 with seconds. When
    /// set, submitting the manifest registers a schedule instead of starting a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Priority band of every step: `interactive`, `standard` (default) or `batch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Pipeline name: 1-63 lowercase letters, digits and '-'.
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InputSpec {
    /// A dataset of this tenant (uploaded with `PUT /v1/datasets/{name}`).
    pub dataset: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Interactive,
    Standard,
    Batch,
}

/// One step: an id, the steps it needs, and exactly one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// Step id: 1-40 lowercase letters, digits, '-' or '_'; unique in the manifest.
    pub id: String,
    /// Steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Wall-clock limit of one attempt, in seconds (default: the pool's limit for the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Attempts before the step fails (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<ValidateStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate: Option<MigrateStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<ScoreStage>,
}

/// What one attempt of a step may use; the cost estimate the fair queue charges comes from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// CPU cores (fractions allowed), 0.1-64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// GPUs (0 or 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Expected worker-seconds of one attempt (fair-share charge before it is measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seconds: Option<f64>,
}

/// Checks a dataset against a schema and rules; writes `errors.parquet` (row, column, rule,
/// value), `summary.json` and the passing rows as `data.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValidateStage {
    /// An input alias or the id of a step this one needs (its `data.parquet`).
    pub input: String,
    /// A dataset schema under `schemas/datasets/` (`contract-clause` reads
    /// `schemas/datasets/contract-clause.schema.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ColumnRule>,
    /// Largest share of rows with an error (0-1) for the step to pass; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
}

impl ValidateStage {
    pub fn checks(&self) -> ValidationChecks {
        ValidationChecks {
            schema: self.schema.clone(),
            rules: self.rules.clone(),
            max_error_rate: self.max_error_rate,
        }
    }
}

/// The checks of a validation: a dataset schema and/or column rules, and the tolerance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValidationChecks {
    /// A dataset schema under `schemas/datasets/` (`contract-clause` reads
    /// `schemas/datasets/contract-clause.schema.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ColumnRule>,
    /// Largest share of rows with an error (0-1) for the step to pass; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
}

/// Rules on one column; every rule set is checked on every row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ColumnRule {
    pub column: String,
    /// The column must exist (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub column_type: Option<ColumnType>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_null: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The whole value must match (anchored for you).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
    /// In characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    String,
    Integer,
    Float,
    Boolean,
}

/// Declarative operations run in order with polars, lazily.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransformStage {
    pub input: String,
    /// Name of a transform preset in the tenant's configuration (`transforms.<name>`), run
    /// before `ops`: a new source format is configuration, not code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default)]
    pub ops: Vec<TransformOp>,
}

/// One transform operation (exactly one key per list item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum TransformOp {
    /// Keep these columns, in this order.
    Select(Vec<String>),
    /// Old name -> new name.
    Rename(BTreeMap<String, String>),
    /// Column -> type (`string`, `integer`, `float`, `boolean`); a value that does not convert
    /// fails the step.
    Cast(BTreeMap<String, ColumnType>),
    /// Keep rows where the expression is true, e.g. `len(text) > 0 and label != "other"`.
    Filter(String),
    Derive(DeriveOp),
    Dedupe(DedupeOp),
    /// Column -> replacement for nulls (a string, number or boolean).
    FillNull(BTreeMap<String, serde_json::Value>),
    NormalizeText(NormalizeTextOp),
    MapValues(MapValuesOp),
    Join(JoinOp),
}

/// A new (or replaced) column computed from an expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeriveOp {
    pub column: String,
    /// e.g. `lower(trim(title)) + ": " + text`, `amount * 1.2`, `len(text)`.
    pub expr: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DedupeOp {
    /// Columns that identify a row (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// `first` (default) or `last`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Keep>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NormalizeTextOp {
    pub columns: Vec<String>,
    /// Strip leading and trailing white space (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lowercase: bool,
    /// Unicode normal form: `nfc`, `nfkc` (default), `nfd`, `nfkd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unicode: Option<UnicodeForm>,
    /// Collapse runs of white space into one space.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collapse_whitespace: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnicodeForm {
    Nfc,
    Nfkc,
    Nfd,
    Nfkd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MapValuesOp {
    pub column: String,
    /// Old value -> new value.
    pub mapping: BTreeMap<String, String>,
    /// Value for anything not in `mapping` (default: keep the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Joins a reference dataset of the same tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JoinOp {
    /// An input alias of this manifest.
    pub input: String,
    pub on: Vec<String>,
    /// `left` (default) or `inner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<JoinHow>,
    /// Columns to take from the reference (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JoinHow {
    Left,
    Inner,
}

/// Brings a tenant's existing data in: the transform (mapping its format onto the target
/// shape) and the validation run on a sample first, a report goes under
/// `reports/migrations/`, and the full migration runs only if the sample passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MigrateStage {
    pub input: String,
    pub sample: Sample,
    #[serde(default)]
    pub validate: ValidationChecks,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<TransformOp>,
    /// The dataset the migrated rows are stored as (default: the step's output only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into_dataset: Option<String>,
}

/// The sample a migration checks first: `rows` (the first N) or `fraction` (every k-th row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sample {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
}

/// Fine-tunes the tenant's variant of a base model on labelled rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FinetuneStage {
    pub input: String,
    /// Name of the tenant's model in its registry.
    pub model: String,
    /// Base model (`ngram`, the default) or `none` to train from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// Training parameters (epochs, learning rate, LoRA rank, holdout share ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// Scores a dataset with the tenant's pinned variant (or the one named).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScoreStage {
    pub input: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_column: Option<String>,
    /// The deployment label whose pin is used when no version is named (`production`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Rows per partition job: a larger input fans out over the pool and is merged at the
    /// end (default 250000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_rows: Option<u64>,
}

/// The stage of a step, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum StageRef<'a> {
    Validate(&'a ValidateStage),
    Transform(&'a TransformStage),
    Migrate(&'a MigrateStage),
    Finetune(&'a FinetuneStage),
    Score(&'a ScoreStage),
}

impl StageRef<'_> {
    /// The job kind the step runs as.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Validate(_) => "validate",
            Self::Transform(_) => "transform",
            Self::Migrate(_) => "migrate",
            Self::Finetune(_) => "finetune",
            Self::Score(_) => "score",
        }
    }

    /// The input the stage reads.
    pub fn input(&self) -> &str {
        match self {
            Self::Validate(stage) => &stage.input,
            Self::Transform(stage) => &stage.input,
            Self::Migrate(stage) => &stage.input,
            Self::Finetune(stage) => &stage.input,
            Self::Score(stage) => &stage.input,
        }
    }
}

impl Step {
    /// Every stage set on the step (a valid step has exactly one).
    pub fn stages(&self) -> Vec<StageRef<'_>> {
        let mut stages = Vec::new();
        if let Some(stage) = &self.validate {
            stages.push(StageRef::Validate(stage));
        }
        if let Some(stage) = &self.transform {
            stages.push(StageRef::Transform(stage));
        }
        if let Some(stage) = &self.migrate {
            stages.push(StageRef::Migrate(stage));
        }
        if let Some(stage) = &self.finetune {
            stages.push(StageRef::Finetune(stage));
        }
        if let Some(stage) = &self.score {
            stages.push(StageRef::Score(stage));
        }
        stages
    }

    /// The step's one stage (validated manifests only).
    pub fn stage(&self) -> StageRef<'_> {
        self.stages()
            .into_iter()
            .next()
            .expect("a validated step has exactly one stage")
    }
}
