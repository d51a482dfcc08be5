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
    /// When `plan` took effect (the tenant's creation when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_since: Option<DateTime<Utc>>,
    /// The plans in force before `plan`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan_history: Vec<PlanPeriod>,
}

/// A plan and the time it was in force: `[from, until)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanPeriod {
    pub plan: Plan,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl TenantRecord {
    pub fn registry_key(id: &TenantId) -> String {
        format!("tenants/{id}.json")
    }

    /// The plan billed for `day`: a plan change takes effect for the whole day it happens on
    /// (the last change of a day wins), so the days of a month split into whole-day segments.
    pub fn plan_on(&self, day: chrono::NaiveDate) -> &Plan {
        let current_from = self.plan_since.unwrap_or(self.created_at).date_naive();
        if day >= current_from {
            return &self.plan;
        }
        self.plan_history
            .iter()
            .rev()
            .find(|period| period.from.date_naive() <= day)
            .map(|period| &period.plan)
            .unwrap_or_else(|| {
                self.plan_history
                    .first()
                    .map(|period| &period.plan)
                    .unwrap_or(&self.plan)
            })
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
