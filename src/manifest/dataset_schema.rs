//! Dataset schemas: JSON Schema files under `schemas/datasets/`, built into the binary, read as
//! column rules for the `validate` stage. The subset understood per property: `type` (one type
//! or `[type, "null"]`), `enum`, `pattern`, `minLength`, `maxLength`, `minimum`, `maximum`, and
//! `x-unique`; `required` at the top level makes a column required and not null.

use serde_json::Value;

use crate::manifest::types::{ColumnRule, ColumnType};

const BUILTIN: &[(&str, &str)] = &[(
    "contract-clause",
    include_str!("../../schemas/datasets/contract-clause.schema.json"),
)];

/// Names of the built-in dataset schemas.
pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(name, _)| *name).collect()
}

/// The text of a built-in schema.
pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, text)| *text)
}

/// The column rules a schema stands for.
pub fn rules_of(name: &str) -> Result<Vec<ColumnRule>, String> {
    let text = builtin(name).ok_or_else(|| format!("unknown dataset schema {name:?}"))?;
    rules_from_json_schema(text)
}

fn type_of(name: &str) -> Option<ColumnType> {
    match name {
        "string" => Some(ColumnType::String),
        "integer" => Some(ColumnType::Integer),
        "number" => Some(ColumnType::Float),
        "boolean" => Some(ColumnType::Boolean),
        _ => None,
    }
}

/// Reads the supported subset of a JSON Schema into column rules.
pub fn rules_from_json_schema(text: &str) -> Result<Vec<ColumnRule>, String> {
    let schema: Value =
        serde_json::from_str(text).map_err(|e| format!("schema is not JSON: {e}"))?;
    let properties = schema["properties"]
        .as_object()
        .ok_or("a dataset schema needs `properties`")?;
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut rules = Vec::new();
    for (column, property) in properties {
        let (column_type, nullable) = match &property["type"] {
            Value::String(name) => (type_of(name), false),
            Value::Array(names) => {
                let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
                let nullable = names.contains(&"null");
                (names.iter().find_map(|name| type_of(name)), nullable)
            }
            _ => (None, true),
        };
        let is_required = required.contains(&column.as_str());
        let allowed = property["enum"].as_array().map(|values| {
            values
                .iter()
                .filter_map(|value| match value {
                    Value::String(text) => Some(text.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
                .collect()
        });
        rules.push(ColumnRule {
            column: column.clone(),
            required: Some(is_required),
            column_type,
            not_null: is_required && !nullable,
            min: property["minimum"].as_f64(),
            max: property["maximum"].as_f64(),
            regex: property["pattern"].as_str().map(str::to_string),
            allowed,
            unique: property["x-unique"].as_bool().unwrap_or(false),
            max_length: property["maxLength"].as_u64(),
            min_length: property["minLength"].as_u64(),
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_clause_schema_reads_as_rules() {
        let rules = rules_of("contract-clause").unwrap();
        let by_name = |name: &str| rules.iter().find(|rule| rule.column == name).unwrap();
        assert!(by_name("clause_id").unique && by_name("clause_id").not_null);
        assert!(!by_name("label").not_null, "label is nullable");
        assert_eq!(by_name("label").allowed.as_ref().unwrap().len(), 10);
        assert_eq!(by_name("page").required, Some(false));
        assert_eq!(by_name("page").column_type, Some(ColumnType::Integer));
        assert_eq!(by_name("text").min_length, Some(10));
    }
}
