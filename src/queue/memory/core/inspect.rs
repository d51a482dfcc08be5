//! Cancellation, dead letters, redrive, explain and statistics.

use super::{Core, NO_WORKER_AFTER_MS, remove_tag};
use crate::queue::contract::TenantQueueStats;
use crate::queue::types::{Blocker, DeadLetter, Explanation, QueueState};
use crate::tenant::TenantId;

impl Core {
    fn seq_of(&self, tenant: &TenantId, job_id: &str) -> Option<u64> {
        self.ids.get(&(tenant.clone(), job_id.to_string())).copied()
    }

    pub fn state(&self, tenant: &TenantId, job_id: &str) -> Option<QueueState> {
        self.seq_of(tenant, job_id).map(|seq| self.jobs[&seq].state)
    }

    /// Cancels a job; returns the state it was in.
    pub fn cancel(&mut self, tenant: &TenantId, job_id: &str) -> Option<QueueState> {
        let seq = self.seq_of(tenant, job_id)?;
        let job = &self.jobs[&seq];
        let previous = job.state;
        match previous {
            QueueState::Queued => {
                let band = job.spec.band.index();
                let group = job.spec.group.clone();
                let state = self.tenants.get_mut(tenant).expect("tenant state");
                let tenant_band = &mut state.bands[band];
                if let Some(queue) = tenant_band.groups.get_mut(&group) {
                    queue.retain(|queued| *queued != seq);
                    if queue.is_empty() {
                        tenant_band.groups.remove(&group);
                        remove_tag(
                            &mut tenant_band.active_groups,
                            &mut tenant_band.group_tags,
                            &group,
                        );
                    }
                }
                if !tenant_band.has_work() {
                    remove_tag(&mut self.active[band], &mut self.active_tags[band], tenant);
                }
            }
            QueueState::Delayed => {
                self.delayed.remove(&(job.run_at_ms, seq));
            }
            QueueState::Running => {
                self.jobs.get_mut(&seq).expect("job").token += 1;
                self.release(seq);
            }
            _ => return Some(previous),
        }
        self.jobs.get_mut(&seq).expect("job").state = QueueState::Cancelled;
        Some(previous)
    }

    pub fn dead_letters(&self, tenant: &TenantId) -> Vec<DeadLetter> {
        let Some(state) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        state
            .dead
            .iter()
            .map(|seq| {
                let job = &self.jobs[seq];
                DeadLetter {
                    job_id: job.spec.job_id.clone(),
                    kind: job.spec.kind.clone(),
                    attempts: job.history.clone(),
                }
            })
            .collect()
    }

    /// Puts a dead-lettered job back in its queue with a fresh attempt budget.
    pub fn redrive(&mut self, tenant: &TenantId, job_id: &str) -> bool {
        let Some(seq) = self.seq_of(tenant, job_id) else {
            return false;
        };
        if self.jobs[&seq].state != QueueState::DeadLettered {
            return false;
        }
        if let Some(state) = self.tenants.get_mut(tenant) {
            state.dead.retain(|dead| *dead != seq);
        }
        self.jobs.get_mut(&seq).expect("job").attempt = 0;
        self.make_ready(seq);
        true
    }

    pub fn explain(&self, tenant: &TenantId, job_id: &str, now_ms: u64) -> Option<Explanation> {
        let seq = self.seq_of(tenant, job_id)?;
        let job = &self.jobs[&seq];
        let band = job.spec.band.index();
        let virtual_time = self.virtual_time[band];
        let tenant_tag_opt = self.active_tags[band].get(tenant).copied();
        let mut explanation = Explanation {
            job_id: job_id.to_string(),
            state: job.state,
            position_opt: None,
            tenant_tag_opt,
            virtual_time,
            blocked_by: "none".to_string(),
            detail: String::new(),
        };
        match job.state {
            QueueState::Queued => {}
            QueueState::Delayed => {
                let blocker = Blocker::Delayed {
                    run_at_ms: job.run_at_ms,
                };
                explanation.blocked_by = blocker.kind().to_string();
                explanation.detail = blocker.detail();
                return Some(explanation);
            }
            other => {
                explanation.detail = format!("job is {}", other.as_str());
                return Some(explanation);
            }
        }
        let state = self.tenants.get(tenant).expect("tenant state");
        let ahead = state.bands[band]
            .groups
            .values()
            .flat_map(|queue| queue.iter())
            .filter(|queued| **queued < seq)
            .count();
        explanation.position_opt = Some(ahead as u64);
        let policy = state.policy;
        let blocker = if self.capped.contains(tenant) {
            Blocker::Cap {
                inflight: u64::from(state.inflight),
                cap: u64::from(policy.cap_max),
                floor: u64::from(policy.cap_floor),
            }
        } else if let Some(until) = self.throttled_until.get(tenant) {
            Blocker::RateLimit { until_ms: *until }
        } else if self
            .last_lease_ms
            .is_none_or(|last| now_ms.saturating_sub(last) > NO_WORKER_AFTER_MS)
        {
            Blocker::NoWorker
        } else if (0..band).any(|b| !self.active[b].is_empty()) {
            Blocker::Band {
                band: job.spec.band,
            }
        } else {
            Blocker::FairTurn {
                tenant_tag: tenant_tag_opt.unwrap_or(virtual_time),
                virtual_time,
            }
        };
        explanation.blocked_by = blocker.kind().to_string();
        explanation.detail = blocker.detail();
        Some(explanation)
    }

    /// Cancels the tenant's unfinished jobs and forgets the tenant entirely.
    pub fn forget_tenant(&mut self, tenant: &TenantId) -> u64 {
        let seqs: Vec<u64> = self
            .ids
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, seq)| *seq)
            .collect();
        let mut cancelled = 0;
        for seq in &seqs {
            let job_id = self.jobs[seq].spec.job_id.clone();
            if self
                .cancel(tenant, &job_id)
                .is_some_and(|previous| !previous.is_terminal())
            {
                cancelled += 1;
            }
            self.jobs.remove(seq);
        }
        self.ids.retain(|(t, _), _| t != tenant);
        self.idempotency.retain(|(t, _), _| t != tenant);
        self.deactivate(tenant);
        self.capped.remove(tenant);
        if let Some(until) = self.throttled_until.remove(tenant) {
            self.throttled.remove(&(until, tenant.clone()));
        }
        self.tenants.remove(tenant);
        cancelled
    }

    pub fn stats(&self, tenant: &TenantId) -> TenantQueueStats {
        let mut stats = TenantQueueStats::default();
        let Some(state) = self.tenants.get(tenant) else {
            return stats;
        };
        stats.queued = state
            .bands
            .iter()
            .flat_map(|b| b.groups.values())
            .map(|q| q.len() as u64)
            .sum();
        stats.running = u64::from(state.inflight);
        stats.delayed = self
            .delayed
            .iter()
            .filter(|(_, seq)| self.jobs[seq].spec.tenant == *tenant)
            .count() as u64;
        stats.dead_lettered = state.dead.len() as u64;
        stats.served_cost = state.served_cost;
        stats.parked = if self.capped.contains(tenant) {
            "capped".to_string()
        } else if self.throttled_until.contains_key(tenant) {
            "throttled".to_string()
        } else {
            String::new()
        };
        stats
    }
}
