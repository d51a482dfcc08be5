//! tenantry: one platform, many tenants.
//!
//! Components (dependencies point down):
//! - [`api`]: axum control-plane routes, the API-key extractor, JSON errors, OpenAPI.
//! - [`demo`]: the end-to-end demo run by `tenantry demo`.
//! - [`platform`]: the composition root wiring storage, keys, tenants and audit together.
//! - [`pipeline`]: pipeline runs (DAG release, cancel, outputs), cron schedules, stage handlers.
//! - [`stages`]: the validate and transform stages on polars DataFrames.
//! - [`manifest`]: pipeline manifests: types, strict parsing with positions, DAG checks.
//! - [`model`]: the `ngram` base encoder and per-tenant heads (burn), training, metrics.
//! - [`dataset`]: tenant datasets (Parquet, CSV and JSONL in; Parquet at rest) via polars.
//! - [`audit`]: the per-tenant hash-chained audit log.
//! - [`tenant`]: tenant ids, plans, the registry, API keys and roles, onboarding and offboarding.
//! - [`storage`]: object-store builders and `TenantStore`, the only way to reach tenant bytes.
//! - [`crypto`]: the platform KEK, tenant DEKs and the AES-256-GCM envelope.
//! - [`config`]: process settings from `tenantry.toml` and `TENANTRY_*` variables.
//! - [`shutdown`]: the signal future used by every server.

pub mod api;
pub mod audit;
pub mod bench;
pub mod billing;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dataset;
pub mod demo;
pub mod fixtures;
pub mod jobs;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod platform;
pub mod queue;
pub mod serving;
pub mod shutdown;
pub mod stages;
pub mod storage;
pub mod tenant;
pub mod usage;
pub mod worker;

pub use config::Settings;
pub use platform::{Platform, PlatformError};
pub use storage::TenantStore;
pub use tenant::TenantId;
