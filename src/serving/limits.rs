//! Per-tenant admission: a token bucket for the request rate (the plan's API rate and burst)
//! and a cap on requests in flight. Both answer at once: a refused request costs a map lookup,
//! never a wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::tenant::TenantId;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    updated_ms: u64,
}

impl TokenBucket {
    pub fn full(burst: f64, now_ms: u64) -> Self {
        Self {
            tokens: burst,
            updated_ms: now_ms,
        }
    }

    /// Takes one token, or says how many milliseconds until one is there.
    pub fn take(&mut self, rate: f64, burst: f64, now_ms: u64) -> Result<(), u64> {
        let elapsed_ms = now_ms.saturating_sub(self.updated_ms) as f64;
        self.tokens = (self.tokens + elapsed_ms * rate / 1000.0).min(burst);
        self.updated_ms = self.updated_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if rate <= 0.0 {
            return Err(u64::MAX);
        }
        Err(((1.0 - self.tokens) * 1000.0 / rate).ceil().max(1.0) as u64)
    }
}

/// Why a request was refused admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the rate limit: retry after this many milliseconds.
    RateLimited { retry_after_ms: u64 },
    /// The tenant already has its cap of requests in flight.
    TooManyInFlight { cap: u32 },
}

#[derive(Debug)]
struct TenantLimits {
    bucket: TokenBucket,
    in_flight: u32,
}

/// Admission state of every tenant this process has seen.
#[derive(Debug, Default, Clone)]
pub struct Limits {
    tenants: Arc<Mutex<HashMap<TenantId, TenantLimits>>>,
}

/// The limits of one tenant's plan, as admission uses them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanLimits {
    pub rate_per_sec: f64,
    pub burst: f64,
    pub max_in_flight: u32,
}

impl Limits {
    /// Admits one request or refuses it; an admitted request holds an in-flight slot until
    /// the returned guard drops.
    pub fn admit(
        &self,
        tenant: &TenantId,
        plan: PlanLimits,
        now_ms: u64,
    ) -> Result<InFlight, Refusal> {
        let mut tenants = self.tenants.lock().expect("limits poisoned");
        let state = tenants
            .entry(tenant.clone())
            .or_insert_with(|| TenantLimits {
                bucket: TokenBucket::full(plan.burst.max(1.0), now_ms),
                in_flight: 0,
            });
        if state.in_flight >= plan.max_in_flight {
            return Err(Refusal::TooManyInFlight {
                cap: plan.max_in_flight,
            });
        }
        state
            .bucket
            .take(plan.rate_per_sec, plan.burst.max(1.0), now_ms)
            .map_err(|retry_after_ms| Refusal::RateLimited { retry_after_ms })?;
        state.in_flight += 1;
        Ok(InFlight {
            limits: self.clone(),
            tenant: tenant.clone(),
        })
    }

    /// Requests of `tenant` in flight now.
    pub fn in_flight(&self, tenant: &TenantId) -> u32 {
        let tenants = self.tenants.lock().expect("limits poisoned");
        tenants.get(tenant).map_or(0, |state| state.in_flight)
    }
}

/// An admitted request's in-flight slot, given back on drop.
#[derive(Debug)]
pub struct InFlight {
    limits: Limits,
    tenant: TenantId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut tenants = self.limits.tenants.lock().expect("limits poisoned");
        if let Some(state) = tenants.get_mut(&self.tenant) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: f64, burst: f64, cap: u32) -> PlanLimits {
        PlanLimits {
            rate_per_sec: rate,
            burst,
            max_in_flight: cap,
        }
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate_holds_with_a_retry_time() {
        let limits = Limits::default();
        let acme = TenantId::parse("acme").unwrap();
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(limits.admit(&acme, plan(10.0, 5.0, 100), 1_000).unwrap());
        }
        assert_eq!(
            limits
                .admit(&acme, plan(10.0, 5.0, 100), 1_000)
                .unwrap_err(),
            Refusal::RateLimited {
                retry_after_ms: 100
            }
        );
        // 100 ms later one token is back
        assert!(limits.admit(&acme, plan(10.0, 5.0, 100), 1_100).is_ok());
    }

    #[test]
    fn in_flight_requests_are_capped_and_given_back_on_drop() {
        let limits = Limits::default();
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let first = limits.admit(&acme, plan(1e6, 1e6, 2), 0).unwrap();
        let _second = limits.admit(&acme, plan(1e6, 1e6, 2), 0).unwrap();
        assert_eq!(
            limits.admit(&acme, plan(1e6, 1e6, 2), 0).unwrap_err(),
            Refusal::TooManyInFlight { cap: 2 }
        );
        // another tenant is not affected
        assert!(limits.admit(&globex, plan(1e6, 1e6, 2), 0).is_ok());
        drop(first);
        assert_eq!(limits.in_flight(&acme), 1);
        assert!(limits.admit(&acme, plan(1e6, 1e6, 2), 0).is_ok());
    }
}
