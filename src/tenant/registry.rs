//! The tenant registry record, kept under `_system/tenants/<id>.json`, and the tenant's
//! default configuration, kept (encrypted) in its own prefix as `config.json`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tenant::{Plan, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// Record written, smoke check not yet passed.
    Provisioning,
    Active,
    /// Refusing new requests while its data is deleted.
    Offboarding,
    /// Data deleted and key shredded; only the record and tombstone remain.
    Offboarded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub plan: Plan,
    pub state: TenantState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `shared` or the name of a dedicated worker pool.
    pub pool_placement: String,
}

impl TenantRecord {
    pub fn registry_key(id: &TenantId) -> String {
        format!("tenants/{id}.json")
    }
}

/// Per-tenant business configuration: thresholds, label renames, output format, transforms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Predictions below this confidence are labelled `needs_review`.
    pub confidence_threshold: f64,
    pub label_renames: BTreeMap<String, String>,
    /// `parquet`, `csv` or `jsonl`.
    pub output_format: String,
    /// Transform presets by name (lists of transform ops, as in a manifest): a pipeline step
    /// with `preset: NAME` runs them, so a tenant's source format is configuration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transforms: BTreeMap<String, serde_json::Value>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            confidence_threshold: 0.5,
            label_renames: BTreeMap::new(),
            output_format: "parquet".to_string(),
            transforms: BTreeMap::new(),
        }
    }
}
