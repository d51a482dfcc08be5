//! Pipeline manifests: the versioned types users write, strict parsing with line, column and
//! JSON pointer on every error, semantic checks (DAG, stages, inputs, expressions, cron), the
//! transform expression language and the built-in dataset schemas. No IO, no tokio.

mod check;
pub mod dataset_schema;
pub mod expr;
mod parse;
mod token;
mod types;
pub mod yaml;

pub use check::{is_name, parse_schedule};
pub use parse::{
    API_VERSION, MAX_MANIFEST_BYTES, Manifest, ManifestError, ManifestIssue, parse_manifest,
};
pub use types::*;

/// The JSON Schema of a manifest, generated from the types (`schemas/manifest.schema.json`).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ManifestV1);
    let mut text = serde_json::to_string_pretty(&schema).expect("schemas serialise");
    text.push('\n');
    text
}

/// Parses a list of transform ops kept outside a manifest (a tenant's transform preset).
pub fn parse_ops(value: &serde_json::Value) -> Result<Vec<TransformOp>, String> {
    let ops: Vec<TransformOp> = serde_path_to_error::deserialize(value.clone())
        .map_err(|error| format!("at {}: {}", error.path(), error.inner()))?;
    for (index, op) in ops.iter().enumerate() {
        let check = match op {
            TransformOp::Filter(text) => expr::parse_expr(text).err(),
            TransformOp::Derive(derive) => expr::parse_expr(&derive.expr).err(),
            TransformOp::Join(_) => {
                return Err(format!(
                    "at [{index}]: presets cannot join (reference datasets are manifest inputs)"
                ));
            }
            _ => None,
        };
        if let Some(error) = check {
            return Err(format!("at [{index}]: invalid expression: {error}"));
        }
    }
    Ok(ops)
}
