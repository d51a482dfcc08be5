//! Per-tenant serving figures: request latency histograms (what the SLA reports read), rows,
//! and outcomes classified as client errors (4xx: the caller's fault, not counted against the
//! platform) or platform errors (5xx). Rendered for Prometheus with the busiest tenants
//! labelled and the rest summed into `tenant="other"`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::tenant::TenantId;

/// Latency bucket upper bounds, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const TOP_TENANTS: usize = 20;
const OTHER: &str = "other";

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// 4xx other than throttling: bad input, unknown model.
    ClientError,
    /// 429.
    RateLimited,
    /// 503 from a full queue or an in-flight cap.
    Overloaded,
    /// 5xx: the platform failed.
    PlatformError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::RateLimited => "rate_limited",
            Outcome::Overloaded => "overloaded",
            Outcome::PlatformError => "platform_error",
        }
    }

    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::ClientError,
        Outcome::RateLimited,
        Outcome::Overloaded,
        Outcome::PlatformError,
    ];
}

/// A latency histogram with cumulative-on-render buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Count per bucket (not cumulative); the last slot is +Inf.
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn observe(&mut self, seconds: f64) {
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[slot] += 1;
        self.count += 1;
        self.sum_seconds += seconds.max(0.0);
    }

    fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }

    /// The upper bound of the bucket holding quantile `q` (an over-estimate, as SLAs want).
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (slot, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(LATENCY_BUCKETS.get(slot).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// One tenant's figures since the process started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantServing {
    /// Latency of answered requests (successful ones).
    pub latency: LatencyHistogram,
    pub rows: u64,
    pub outcomes: HashMap<&'static str, u64>,
}

impl TenantServing {
    pub fn requests(&self) -> u64 {
        self.outcomes.values().sum()
    }
}

#[derive(Debug, Default)]
pub struct ServingStats {
    tenants: Mutex<HashMap<TenantId, TenantServing>>,
}

impl ServingStats {
    pub fn record(&self, tenant: &TenantId, outcome: Outcome, rows: usize, seconds: f64) {
        let mut tenants = self.tenants.lock().expect("stats poisoned");
        let entry = tenants.entry(tenant.clone()).or_default();
        *entry.outcomes.entry(outcome.as_str()).or_default() += 1;
        if outcome == Outcome::Ok {
            entry.latency.observe(seconds);
            entry.rows += rows as u64;
        }
    }

    pub fn tenant(&self, tenant: &TenantId) -> TenantServing {
        let tenants = self.tenants.lock().expect("stats poisoned");
        tenants.get(tenant).cloned().unwrap_or_default()
    }

    /// Prometheus text: latency histograms, rows and outcomes per tenant (top 20 + other).
    pub fn render(&self, out: &mut String) {
        let tenants = self.tenants.lock().expect("stats poisoned");
        let mut ranked: Vec<(&TenantId, &TenantServing)> = tenants.iter().collect();
        ranked.sort_by(|a, b| b.1.requests().cmp(&a.1.requests()).then(a.0.cmp(b.0)));
        let mut folded: Vec<(String, TenantServing)> = Vec::new();
        let mut other = TenantServing::default();
        for (rank, (tenant, figures)) in ranked.into_iter().enumerate() {
            if rank < TOP_TENANTS {
                folded.push((tenant.to_string(), figures.clone()));
            } else {
                other.latency.merge(&figures.latency);
                other.rows += figures.rows;
                for (outcome, count) in &figures.outcomes {
                    *other.outcomes.entry(outcome).or_default() += count;
                }
            }
        }
        if other.requests() > 0 {
            folded.push((OTHER.to_string(), other));
        }
        let _ = writeln!(
            out,
            "# HELP tenantry_predict_latency_seconds Online prediction latency per tenant.\n# TYPE tenantry_predict_latency_seconds histogram"
        );
        for (tenant, figures) in &folded {
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(figures.latency.counts) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "tenantry_predict_latency_seconds_bucket{{tenant=\"{tenant}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "tenantry_predict_latency_seconds_bucket{{tenant=\"{tenant}\",le=\"+Inf\"}} {}\ntenantry_predict_latency_seconds_sum{{tenant=\"{tenant}\"}} {}\ntenantry_predict_latency_seconds_count{{tenant=\"{tenant}\"}} {}",
                figures.latency.count, figures.latency.sum_seconds, figures.latency.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP tenantry_predict_requests_total Prediction requests per tenant and outcome.\n# TYPE tenantry_predict_requests_total counter"
        );
        for (tenant, figures) in &folded {
            for outcome in Outcome::ALL {
                let count = figures.outcomes.get(outcome.as_str()).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "tenantry_predict_requests_total{{tenant=\"{tenant}\",outcome=\"{}\"}} {count}",
                    outcome.as_str()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tenantry_predict_rows_total Rows scored online per tenant.\n# TYPE tenantry_predict_rows_total counter"
        );
        for (tenant, figures) in &folded {
            let _ = writeln!(
                out,
                "tenantry_predict_rows_total{{tenant=\"{tenant}\"}} {}",
                figures.rows
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let mut histogram = LatencyHistogram::default();
        for _ in 0..98 {
            histogram.observe(0.0008);
        }
        histogram.observe(0.004);
        histogram.observe(0.2);
        assert_eq!(histogram.quantile_upper_bound(0.5), Some(0.001));
        assert_eq!(histogram.quantile_upper_bound(0.99), Some(0.005));
        assert_eq!(histogram.quantile_upper_bound(1.0), Some(0.25));
    }

    #[test]
    fn only_the_busiest_tenants_get_a_label() {
        let stats = ServingStats::default();
        for n in 0..30 {
            let tenant = TenantId::parse(&format!("t{n:02}")).unwrap();
            for _ in 0..=n {
                stats.record(&tenant, Outcome::Ok, 1, 0.001);
            }
        }
        let mut text = String::new();
        stats.render(&mut text);
        assert!(text.contains("tenant=\"t29\""));
        assert!(!text.contains("tenant=\"t00\""));
        assert!(text.contains("tenant=\"other\""));
    }
}
