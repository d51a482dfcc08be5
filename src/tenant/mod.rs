//! Tenants: ids, plans, the registry, API keys and roles, onboarding and offboarding.

mod id;
mod keys;
mod lifecycle;
mod plan;
mod registry;

pub use id::{TenantId, TenantIdError};
pub use keys::{Action, AuthError, IssuedKey, KeyRecord, KeyService, Principal, Role};
pub use lifecycle::{CONFIG_PATH, OffboardReport, OnboardReport};
pub use plan::{Isolation, Plan, builtin_plan, builtin_plan_names};
pub use registry::{PlanPeriod, TenantConfig, TenantRecord, TenantState};
