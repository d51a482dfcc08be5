//! Plans: the billing tier a tenant is on, and the weight, quotas and limits that follow from it.

use serde::{Deserialize, Serialize};

/// Whether a tenant's models may build on the shared base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Fine-tune a variant over the platform's shared base.
    Shared,
    /// Train the tenant's own model from its data alone.
    Independent,
}

/// A plan snapshot, copied into the tenant record at onboarding (plans are versioned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    pub name: String,
    pub version: u32,
    /// Fair-queue weight (free 1, pro 4, enterprise 16).
    pub weight: u32,
    /// Guaranteed concurrent jobs.
    pub concurrency_floor: u32,
    /// Most concurrent jobs, borrowing from the shared burst pool above the floor.
    pub concurrency_cap: u32,
    /// API requests per second (token bucket refill) and burst size.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Stored bytes allowed.
    pub storage_quota_bytes: u64,
    /// Largest single upload accepted, in bytes.
    pub max_upload_bytes: u64,
    pub isolation: Isolation,
    /// Online prediction requests in flight at once (503 beyond).
    #[serde(default = "default_max_inflight_requests")]
    pub max_inflight_requests: u32,
    /// The tenant's variants are never evicted from a serving process's cache.
    #[serde(default)]
    pub serving_pinned: bool,
}

fn default_max_inflight_requests() -> u32 {
    32
}

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// Names of the built-in plans.
pub fn builtin_plan_names() -> &'static [&'static str] {
    &["free", "pro", "enterprise", "enterprise-isolated"]
}

/// Returns a built-in plan by name.
pub fn builtin_plan(name: &str) -> Option<Plan> {
    let plan = |weight, floor, cap, rate, burst, quota, upload, isolation| Plan {
        max_inflight_requests: match weight {
            1 => 8,
            4 => 32,
            _ => 128,
        },
        serving_pinned: weight >= 16,
        name: name.to_string(),
        version: 1,
        weight,
        concurrency_floor: floor,
        concurrency_cap: cap,
        rate_limit_per_sec: rate,
        rate_limit_burst: burst,
        storage_quota_bytes: quota,
        max_upload_bytes: upload,
        isolation,
    };
    match name {
        "free" => Some(plan(1, 1, 2, 10, 20, GIB, 16 * MIB, Isolation::Shared)),
        "pro" => Some(plan(
            4,
            2,
            8,
            100,
            200,
            50 * GIB,
            64 * MIB,
            Isolation::Shared,
        )),
        "enterprise" => Some(plan(
            16,
            4,
            32,
            1000,
            2000,
            1024 * GIB,
            64 * MIB,
            Isolation::Shared,
        )),
        "enterprise-isolated" => Some(plan(
            16,
            4,
            32,
            1000,
            2000,
            1024 * GIB,
            64 * MIB,
            Isolation::Independent,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_plan_is_consistent() {
        for name in builtin_plan_names() {
            let plan = builtin_plan(name).unwrap();
            assert!(plan.weight >= 1);
            assert!(plan.concurrency_floor <= plan.concurrency_cap, "{name}");
            assert!(plan.rate_limit_burst >= plan.rate_limit_per_sec, "{name}");
        }
        assert!(builtin_plan("platinum").is_none());
    }
}
