//! Deterministic fairness simulations on the scheduler core with seeded traces, asserting the
//! start-time fair queueing bound: for tenants i, j backlogged over an interval,
//! |W_i/w_i - W_j/w_j| <= c_i^max/w_i + c_j^max/w_j (W = cost served).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenantry::TenantId;
use tenantry::queue::{Band, Core, JobSpec, Lease, TenantPolicy};

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

fn spec(tenant_id: &str, n: usize, group: &str, cost: f64) -> JobSpec {
    JobSpec {
        job_id: format!("{tenant_id}-{group}-{n}"),
        tenant: tenant(tenant_id),
        kind: "validate".to_string(),
        group: group.to_string(),
        band: Band::Standard,
        cost_estimate: cost,
        max_attempts: 3,
        idempotency_key_opt: None,
        run_at_ms_opt: None,
        payload: serde_json::Value::Null,
    }
}

fn policy(weight: f64) -> TenantPolicy {
    TenantPolicy {
        weight,
        cap_floor: 1_000_000,
        cap_max: 1_000_000,
        rate_per_sec: 0.0,
        rate_burst: 1,
    }
}

/// Dispatches one job at a time (completing it at once) and records cost served per tenant
/// after every dispatch while every tenant in `tenants` is still backlogged.
fn run_backlogged(
    core: &mut Core,
    tenants: &[(&str, f64)],
    dispatches: usize,
) -> Vec<HashMap<String, f64>> {
    let mut served: HashMap<String, f64> = HashMap::new();
    let mut prefixes = Vec::new();
    for step in 0..dispatches {
        let leases: Vec<Lease> = core.lease(1, 60_000, step as u64);
        let Some(lease) = leases.into_iter().next() else {
            break;
        };
        let cost = lease.payload.as_f64().unwrap_or(1.0);
        *served.entry(lease.tenant.to_string()).or_default() += cost;
        core.complete(&lease, cost, step as u64).unwrap();
        let all_backlogged = tenants
            .iter()
            .all(|(t, _)| core.stats(&tenant(t)).queued > 0);
        if !all_backlogged {
            break;
        }
        prefixes.push(served.clone());
    }
    prefixes
}

fn assert_sfq_bound(
    prefixes: &[HashMap<String, f64>],
    tenants: &[(&str, f64)],
    max_cost: &HashMap<&str, f64>,
) {
    assert!(!prefixes.is_empty());
    for served in prefixes {
        for (i, wi) in tenants {
            for (j, wj) in tenants {
                let normalised_i = served.get(*i).copied().unwrap_or(0.0) / wi;
                let normalised_j = served.get(*j).copied().unwrap_or(0.0) / wj;
                let bound = max_cost[i] / wi + max_cost[j] / wj + 1e-9;
                assert!(
                    (normalised_i - normalised_j).abs() <= bound,
                    "lag {i}/{j} = {} exceeds bound {bound} at {served:?}",
                    (normalised_i - normalised_j).abs()
                );
            }
        }
    }
}

fn enqueue_with_cost(
    core: &mut Core,
    tenant_id: &str,
    count: usize,
    group_of: impl Fn(usize) -> String,
    cost_of: &mut dyn FnMut() -> f64,
) -> f64 {
    let mut max_cost: f64 = 0.0;
    let specs = (0..count)
        .map(|n| {
            let cost = cost_of();
            max_cost = max_cost.max(cost);
            let mut job = spec(tenant_id, n, &group_of(n), cost);
            job.payload = serde_json::json!(cost);
            job
        })
        .collect();
    core.enqueue(specs, 0);
    max_cost
}

#[test]
fn weights_one_four_sixteen_hold_the_sfq_bound_at_every_prefix() {
    let mut core = Core::new(0);
    let tenants = [("free-t", 1.0), ("pro-t", 4.0), ("ent-t", 16.0)];
    let mut max_cost = HashMap::new();
    for (t, w) in tenants {
        core.set_policy(&tenant(t), policy(w));
        max_cost.insert(
            t,
            enqueue_with_cost(&mut core, t, 3_000, |_| "g".into(), &mut || 1.0),
        );
    }
    let prefixes = run_backlogged(&mut core, &tenants, 3_000);
    assert_sfq_bound(&prefixes, &tenants, &max_cost);
    let last = prefixes.last().unwrap();
    let ratio = last["ent-t"] / last["free-t"];
    assert!(
        (ratio - 16.0).abs() <= 1.0,
        "enterprise/free served ratio {ratio}"
    );
}

#[test]
fn heavy_tailed_costs_hold_the_bound() {
    let mut rng = StdRng::seed_from_u64(42);
    let mut core = Core::new(0);
    let tenants = [("alpha", 1.0), ("beta", 2.0), ("gamma", 3.0)];
    let mut max_cost = HashMap::new();
    for (t, w) in tenants {
        core.set_policy(&tenant(t), policy(w));
        // Pareto(alpha = 1.5), scale 1, truncated at 200.
        let mut pareto = || (1.0 / (1.0 - rng.r#gen::<f64>()).powf(1.0 / 1.5)).min(200.0);
        max_cost.insert(
            t,
            enqueue_with_cost(&mut core, t, 2_000, |_| "g".into(), &mut pareto),
        );
    }
    let prefixes = run_backlogged(&mut core, &tenants, 2_000);
    assert_sfq_bound(&prefixes, &tenants, &max_cost);
}

#[test]
fn a_tenant_spraying_ten_thousand_keys_gets_one_tenants_share() {
    let mut core = Core::new(0);
    let tenants = [("sprayer", 1.0), ("honest", 1.0)];
    for (t, w) in tenants {
        core.set_policy(&tenant(t), policy(w));
    }
    enqueue_with_cost(
        &mut core,
        "sprayer",
        10_000,
        |n| format!("key-{n}"),
        &mut || 1.0,
    );
    enqueue_with_cost(&mut core, "honest", 10_000, |_| "one".into(), &mut || 1.0);
    let prefixes = run_backlogged(&mut core, &tenants, 4_000);
    let last = prefixes.last().unwrap();
    let share = last["sprayer"] / (last["sprayer"] + last["honest"]);
    assert!(share <= 0.5 * 1.05, "sprayer got {share:.4} of the pool");
    let max_cost = HashMap::from([("sprayer", 1.0), ("honest", 1.0)]);
    assert_sfq_bound(&prefixes, &tenants, &max_cost);
}

#[test]
fn a_quiet_tenants_first_job_overtakes_a_flood() {
    let mut core = Core::new(0);
    core.set_policy(&tenant("flood"), policy(1.0));
    core.set_policy(&tenant("quiet"), policy(1.0));
    enqueue_with_cost(&mut core, "flood", 100_000, |_| "g".into(), &mut || 1.0);
    for step in 0..500u64 {
        let lease = core.lease(1, 60_000, step).pop().unwrap();
        core.complete(&lease, 1.0, step).unwrap();
    }
    core.enqueue(vec![spec("quiet", 0, "g", 1.0)], 500);
    let mut dispatches_before_quiet = 0;
    loop {
        let lease = core.lease(1, 60_000, 501).pop().unwrap();
        if lease.tenant.as_str() == "quiet" {
            break;
        }
        dispatches_before_quiet += 1;
        core.complete(&lease, 1.0, 501).unwrap();
    }
    assert!(
        dispatches_before_quiet <= 1,
        "quiet tenant waited behind {dispatches_before_quiet} flood jobs"
    );
}

#[test]
fn under_reported_cost_is_charged_back_at_completion() {
    let mut core = Core::new(0);
    let tenants = [("cheat", 1.0), ("fair", 1.0)];
    for (t, w) in tenants {
        core.set_policy(&tenant(t), policy(w));
    }
    // "cheat" estimates 1 but really costs 10; "fair" estimates and costs 10.
    enqueue_with_cost(&mut core, "cheat", 2_000, |_| "g".into(), &mut || 1.0);
    enqueue_with_cost(&mut core, "fair", 2_000, |_| "g".into(), &mut || 10.0);
    let mut real: HashMap<String, f64> = HashMap::new();
    for step in 0..1_000u64 {
        let lease = core.lease(1, 60_000, step).pop().unwrap();
        let actual = 10.0;
        *real.entry(lease.tenant.to_string()).or_default() += actual;
        core.complete(&lease, actual, step).unwrap();
    }
    let cheat = real["cheat"];
    let fair = real["fair"];
    assert!(
        (cheat - fair).abs() <= 20.0 + 1e-9,
        "real cost served cheat={cheat} fair={fair}"
    );
}
