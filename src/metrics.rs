//! Prometheus metrics for the queue and workers, rendered as text at `/metrics`.
//!
//! Label cardinality is bounded: the busiest tenants (queued + running) get their own label,
//! every other tenant is summed into `tenant="other"`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;

use crate::queue::TenantQueueStats as TenantSample;

pub const QUEUE_DEPTH: &str = "tenantry_queue_jobs";
pub const QUEUE_PARKED: &str = "tenantry_queue_tenant_parked";
pub const DISPATCH_SHARE: &str = "tenantry_queue_dispatch_share";
pub const SERVED_COST: &str = "tenantry_queue_served_cost_total";
pub const JOB_WAIT: &str = "tenantry_job_wait_seconds";
/// Tenants with their own label; the rest are `other`.
pub const TOP_TENANTS: usize = 20;
const OTHER: &str = "other";
const WAIT_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; WAIT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(WAIT_BUCKETS) {
            if value <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// Queue wait (submit -> start) histograms recorded by this process's workers.
#[derive(Debug, Default)]
pub struct WaitTimes {
    histograms: Mutex<HashMap<(String, String), Histogram>>,
}

impl WaitTimes {
    pub fn observe(&self, pool: &str, tenant: &str, seconds: f64) {
        let mut histograms = self.histograms.lock().expect("metrics poisoned");
        histograms
            .entry((pool.to_string(), tenant.to_string()))
            .or_default()
            .observe(seconds.max(0.0));
    }
}

pub const QUOTA_ALERTS: &str = "tenantry_quota_alerts_total";

/// Projected-quota-exhaustion alerts raised by this process, per meter (the tenant is in the
/// alert record and the log event, not a label: cardinality stays bounded).
#[derive(Debug, Default)]
pub struct QuotaAlerts {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl QuotaAlerts {
    pub fn raised(&self, meter: &str) {
        *self
            .counts
            .lock()
            .expect("metrics poisoned")
            .entry(meter.to_string())
            .or_default() += 1;
    }

    pub fn count(&self, meter: &str) -> u64 {
        self.counts
            .lock()
            .expect("metrics poisoned")
            .get(meter)
            .copied()
            .unwrap_or(0)
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {QUOTA_ALERTS} Projected quota exhaustions alerted, per meter.\n# TYPE {QUOTA_ALERTS} counter"
        );
        for (meter, count) in self.counts.lock().expect("metrics poisoned").iter() {
            let _ = writeln!(out, "{QUOTA_ALERTS}{{meter=\"{}\"}} {count}", escape(meter));
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders queue samples (pool -> tenant -> sample) and wait histograms.
pub fn render(
    samples: &BTreeMap<String, BTreeMap<String, TenantSample>>,
    waits: &WaitTimes,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP {QUEUE_DEPTH} Jobs by pool, tenant and state.\n# TYPE {QUEUE_DEPTH} gauge"
    );
    let _ = writeln!(
        out,
        "# HELP {QUEUE_PARKED} Tenants parked by a cap or a rate limit.\n# TYPE {QUEUE_PARKED} gauge"
    );
    let _ = writeln!(
        out,
        "# HELP {SERVED_COST} Cost dispatched per tenant.\n# TYPE {SERVED_COST} counter"
    );
    let _ = writeln!(
        out,
        "# HELP {DISPATCH_SHARE} Share of the pool's dispatched cost.\n# TYPE {DISPATCH_SHARE} gauge"
    );
    let mut labelled_tenants: HashMap<String, Vec<String>> = HashMap::new();
    for (pool, tenants) in samples {
        let mut ranked: Vec<(&String, &TenantSample)> = tenants.iter().collect();
        ranked.sort_by(|a, b| {
            (b.1.queued + b.1.running)
                .cmp(&(a.1.queued + a.1.running))
                .then(a.0.cmp(b.0))
        });
        let mut folded: BTreeMap<String, TenantSample> = BTreeMap::new();
        let mut parked: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (rank, (tenant, sample)) in ranked.into_iter().enumerate() {
            let label = if rank < TOP_TENANTS {
                tenant.clone()
            } else {
                OTHER.to_string()
            };
            if label != OTHER {
                labelled_tenants
                    .entry(pool.clone())
                    .or_default()
                    .push(label.clone());
            }
            let entry = folded.entry(label.clone()).or_default();
            entry.queued += sample.queued;
            entry.running += sample.running;
            entry.delayed += sample.delayed;
            entry.dead_lettered += sample.dead_lettered;
            entry.served_cost += sample.served_cost;
            if !sample.parked.is_empty() {
                *parked.entry((label, sample.parked.clone())).or_default() += 1;
            }
        }
        let total_served: f64 = folded.values().map(|s| s.served_cost).sum();
        for (tenant, sample) in &folded {
            let (pool_l, tenant_l) = (escape(pool), escape(tenant));
            for (state, value) in [
                ("queued", sample.queued),
                ("running", sample.running),
                ("delayed", sample.delayed),
                ("dead_lettered", sample.dead_lettered),
            ] {
                let _ = writeln!(
                    out,
                    "{QUEUE_DEPTH}{{pool=\"{pool_l}\",tenant=\"{tenant_l}\",state=\"{state}\"}} {value}"
                );
            }
            let _ = writeln!(
                out,
                "{SERVED_COST}{{pool=\"{pool_l}\",tenant=\"{tenant_l}\"}} {}",
                sample.served_cost
            );
            let share = if total_served > 0.0 {
                sample.served_cost / total_served
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "{DISPATCH_SHARE}{{pool=\"{pool_l}\",tenant=\"{tenant_l}\"}} {share}"
            );
        }
        for ((tenant, reason), count) in parked {
            let _ = writeln!(
                out,
                "{QUEUE_PARKED}{{pool=\"{}\",tenant=\"{}\",reason=\"{reason}\"}} {count}",
                escape(pool),
                escape(&tenant)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP {JOB_WAIT} Time from submit to start.\n# TYPE {JOB_WAIT} histogram"
    );
    let histograms = waits.histograms.lock().expect("metrics poisoned").clone();
    let mut folded: BTreeMap<(String, String), Histogram> = BTreeMap::new();
    for ((pool, tenant), histogram) in histograms {
        let keep = labelled_tenants
            .get(&pool)
            .is_some_and(|names| names.contains(&tenant));
        let label = if keep { tenant } else { OTHER.to_string() };
        folded.entry((pool, label)).or_default().merge(&histogram);
    }
    for ((pool, tenant), histogram) in folded {
        let labels = format!("pool=\"{}\",tenant=\"{}\"", escape(&pool), escape(&tenant));
        for (bound, count) in WAIT_BUCKETS.iter().zip(histogram.buckets) {
            let _ = writeln!(out, "{JOB_WAIT}_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{JOB_WAIT}_bucket{{{labels},le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(out, "{JOB_WAIT}_sum{{{labels}}} {}", histogram.sum);
        let _ = writeln!(out, "{JOB_WAIT}_count{{{labels}}} {}", histogram.count);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_beyond_the_top_are_folded_into_other() {
        let mut tenants = BTreeMap::new();
        for n in 0..(TOP_TENANTS + 5) {
            tenants.insert(
                format!("t{n:03}"),
                TenantSample {
                    queued: n as u64,
                    served_cost: 1.0,
                    ..Default::default()
                },
            );
        }
        let samples = BTreeMap::from([("cpu".to_string(), tenants)]);
        let waits = WaitTimes::default();
        waits.observe("cpu", "t000", 0.2);
        let text = render(&samples, &waits);
        let tenant_labels: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with(QUEUE_DEPTH))
            .filter_map(|l| l.split("tenant=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(tenant_labels.len(), TOP_TENANTS + 1);
        assert!(tenant_labels.contains("other"));
        assert!(
            text.contains("tenantry_queue_jobs{pool=\"cpu\",tenant=\"other\",state=\"queued\"} 10")
        );
        assert!(text.contains("tenantry_job_wait_seconds_count{pool=\"cpu\",tenant=\"other\"} 1"));
    }
}
