//! The scheduler state machine behind the memory backend: hierarchical start-time fair
//! queueing (band -> tenant -> group -> job) with cost-aware charging, caps with a floor and a
//! shared burst pool, GCRA parking, leases with fencing tokens, retries and a dead-letter list.
//! The Redis Lua scripts implement the same rules; the conformance suite holds both to them.

mod dispatch;
mod inspect;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::queue::types::{AttemptRecord, Band, Enqueued, JobSpec, QueueState, TenantPolicy};
use crate::tenant::TenantId;

/// Largest charge-back correction per completion, in cost units (avoids big swings).
pub const MAX_CHARGE_CORRECTION: f64 = 1_000.0;
/// After this long without a lease call, explain reports that no worker is serving the pool.
pub const NO_WORKER_AFTER_MS: u64 = 5_000;

/// A virtual-time tag with a total order (tags are finite).
#[derive(Debug, Clone, Copy)]
struct Tag(f64);
impl PartialEq for Tag {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Tag {}
impl PartialOrd for Tag {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Tag {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug)]
struct Job {
    spec: JobSpec,
    state: QueueState,
    attempt: u32,
    token: u64,
    run_at_ms: u64,
    lease_expiry_ms: u64,
    history: Vec<AttemptRecord>,
}

/// A tenant's work inside one band: its groups in fair order.
#[derive(Debug, Default)]
struct TenantBand {
    groups: HashMap<String, VecDeque<u64>>,
    active_groups: BTreeSet<(Tag, String)>,
    group_tags: HashMap<String, f64>,
    group_finish: HashMap<String, f64>,
    local_vt: f64,
}

impl TenantBand {
    fn has_work(&self) -> bool {
        !self.active_groups.is_empty()
    }

    fn push(&mut self, group: &str, seq: u64) {
        let queue = self.groups.entry(group.to_string()).or_default();
        queue.push_back(seq);
        if !self.group_tags.contains_key(group) {
            let finish = self.group_finish.get(group).copied().unwrap_or(0.0);
            let tag = self.local_vt.max(finish);
            self.group_tags.insert(group.to_string(), tag);
            self.active_groups.insert((Tag(tag), group.to_string()));
        }
    }
}

#[derive(Debug, Default)]
struct TenantState {
    policy: TenantPolicy,
    bands: [TenantBand; 3],
    finish: [f64; 3],
    inflight: u32,
    gcra_tat: Option<f64>,
    served_cost: f64,
    dead: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Core {
    jobs: HashMap<u64, Job>,
    ids: HashMap<(TenantId, String), u64>,
    idempotency: HashMap<(TenantId, String), String>,
    tenants: HashMap<TenantId, TenantState>,
    active: [BTreeSet<(Tag, TenantId)>; 3],
    active_tags: [HashMap<TenantId, f64>; 3],
    virtual_time: [f64; 3],
    band_credit: [f64; 3],
    capped: HashSet<TenantId>,
    throttled: BTreeSet<(u64, TenantId)>,
    throttled_until: HashMap<TenantId, u64>,
    delayed: BTreeSet<(u64, u64)>,
    leases: BTreeSet<(u64, u64)>,
    burst_in_use: u32,
    burst_pool: u32,
    next_seq: u64,
    last_lease_ms: Option<u64>,
}

fn remove_tag<T>(set: &mut BTreeSet<(Tag, T)>, tags: &mut HashMap<T, f64>, key: &T)
where
    T: Ord + Clone + std::hash::Hash + Eq,
{
    if let Some(tag) = tags.remove(key) {
        set.remove(&(Tag(tag), key.clone()));
    }
}

/// Extra credit a lower band earns per higher-band dispatch so that it receives `share`.
fn credit_per_dispatch(share: f64) -> f64 {
    if share <= 0.0 {
        0.0
    } else {
        share / (1.0 - share)
    }
}

impl Core {
    pub fn new(burst_pool: u32) -> Self {
        Self {
            burst_pool,
            ..Self::default()
        }
    }

    fn tenant_mut(&mut self, tenant: &TenantId) -> &mut TenantState {
        self.tenants.entry(tenant.clone()).or_default()
    }

    pub fn set_policy(&mut self, tenant: &TenantId, policy: TenantPolicy) {
        self.tenant_mut(tenant).policy = policy;
        // A raised cap may unblock a parked tenant at once.
        if self.capped.remove(tenant) {
            self.unpark(tenant);
        }
    }

    pub fn enqueue(&mut self, specs: Vec<JobSpec>, now_ms: u64) -> Vec<Enqueued> {
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let tenant = spec.tenant.clone();
            if let Some(key) = &spec.idempotency_key_opt
                && let Some(existing) = self.idempotency.get(&(tenant.clone(), key.clone()))
            {
                out.push(Enqueued {
                    job_id: existing.clone(),
                    existing: true,
                });
                continue;
            }
            if self
                .ids
                .contains_key(&(tenant.clone(), spec.job_id.clone()))
            {
                out.push(Enqueued {
                    job_id: spec.job_id.clone(),
                    existing: true,
                });
                continue;
            }
            self.next_seq += 1;
            let seq = self.next_seq;
            if let Some(key) = &spec.idempotency_key_opt {
                self.idempotency
                    .insert((tenant.clone(), key.clone()), spec.job_id.clone());
            }
            self.ids.insert((tenant.clone(), spec.job_id.clone()), seq);
            let run_at_ms = spec.run_at_ms_opt.unwrap_or(0);
            out.push(Enqueued {
                job_id: spec.job_id.clone(),
                existing: false,
            });
            self.tenant_mut(&tenant);
            self.jobs.insert(
                seq,
                Job {
                    spec,
                    state: QueueState::Delayed,
                    attempt: 0,
                    token: 0,
                    run_at_ms,
                    lease_expiry_ms: 0,
                    history: Vec::new(),
                },
            );
            if run_at_ms > now_ms {
                self.delayed.insert((run_at_ms, seq));
            } else {
                self.make_ready(seq);
            }
        }
        out
    }

    fn make_ready(&mut self, seq: u64) {
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        job.state = QueueState::Queued;
        let tenant = job.spec.tenant.clone();
        let band = job.spec.band.index();
        let group = job.spec.group.clone();
        self.tenant_mut(&tenant).bands[band].push(&group, seq);
        self.activate(&tenant, band);
    }

    /// Idle re-entry: a tenant (re)joins at max(V, F_last) unless it is parked.
    fn activate(&mut self, tenant: &TenantId, band: usize) {
        if self.capped.contains(tenant)
            || self.throttled_until.contains_key(tenant)
            || self.active_tags[band].contains_key(tenant)
        {
            return;
        }
        let Some(state) = self.tenants.get(tenant) else {
            return;
        };
        if !state.bands[band].has_work() {
            return;
        }
        let tag = self.virtual_time[band].max(state.finish[band]);
        self.active[band].insert((Tag(tag), tenant.clone()));
        self.active_tags[band].insert(tenant.clone(), tag);
    }

    fn deactivate(&mut self, tenant: &TenantId) {
        for band in 0..3 {
            remove_tag(&mut self.active[band], &mut self.active_tags[band], tenant);
        }
    }

    fn unpark(&mut self, tenant: &TenantId) {
        for band in 0..3 {
            self.activate(tenant, band);
        }
    }

    /// Moves due delayed jobs and due throttled tenants back into play (bounded per call).
    fn promote_due(&mut self, now_ms: u64) {
        for _ in 0..10_000 {
            match self.delayed.first() {
                Some(&(run_at, seq)) if run_at <= now_ms => {
                    self.delayed.pop_first();
                    self.make_ready(seq);
                }
                _ => break,
            }
        }
        loop {
            match self.throttled.first() {
                Some((until, _)) if *until <= now_ms => {
                    let (_, tenant) = self.throttled.pop_first().expect("checked non-empty");
                    self.throttled_until.remove(&tenant);
                    self.unpark(&tenant);
                }
                _ => break,
            }
        }
    }

    /// Bands are served in order, except that a lower band with runnable work earns credit on
    /// every higher-band dispatch and is served when its credit reaches one dispatch.
    fn pick_band(&mut self) -> Option<usize> {
        let with_work: Vec<usize> = (0..3).filter(|b| !self.active[*b].is_empty()).collect();
        let first = *with_work.first()?;
        for &band in with_work.iter().rev() {
            if band != first && self.band_credit[band] >= 1.0 {
                self.band_credit[band] -= 1.0;
                return Some(band);
            }
        }
        for &band in &with_work {
            if band != first {
                let share = Band::from_index(band)
                    .map(Band::reserved_share)
                    .unwrap_or(0.0);
                self.band_credit[band] =
                    (self.band_credit[band] + credit_per_dispatch(share)).min(2.0);
            }
        }
        Some(first)
    }
}
