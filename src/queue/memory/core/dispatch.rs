//! Dispatch, leases, completion, failure and reaping.

use super::{Core, MAX_CHARGE_CORRECTION, Tag, remove_tag};
use crate::queue::gcra;
use crate::queue::retry::backoff_ms;
use crate::queue::types::{AttemptRecord, FailOutcome, Lease, QueueError, QueueResult, QueueState};
use crate::tenant::TenantId;

/// Most expired leases handled per reap call.
const REAP_BATCH: usize = 1_000;

impl Core {
    /// Leases up to `max` jobs in fair order. Work per call is bounded by `max`, whatever the
    /// backlog: parked tenants leave the active set instead of being retried.
    pub fn lease(&mut self, max: usize, lease_ms: u64, now_ms: u64) -> Vec<Lease> {
        self.last_lease_ms = Some(now_ms);
        self.promote_due(now_ms);
        let mut out = Vec::with_capacity(max);
        let mut budget = max * 4 + 64;
        while out.len() < max && budget > 0 {
            budget -= 1;
            let Some(band) = self.pick_band() else { break };
            let Some((Tag(start), tenant)) = self.active[band].pop_first() else {
                break;
            };
            self.active_tags[band].remove(&tenant);
            let state = self
                .tenants
                .get(&tenant)
                .expect("active tenants have state");
            let policy = state.policy;
            let new_tat = match gcra::check(
                state.gcra_tat,
                now_ms,
                policy.rate_per_sec,
                policy.rate_burst,
            ) {
                Ok(tat) => tat,
                Err(retry_at) => {
                    self.deactivate(&tenant);
                    self.throttled.insert((retry_at, tenant.clone()));
                    self.throttled_until.insert(tenant, retry_at);
                    continue;
                }
            };
            let burst_slot = if state.inflight < policy.cap_floor {
                false
            } else if state.inflight < policy.cap_max && self.burst_in_use < self.burst_pool {
                true
            } else {
                self.deactivate(&tenant);
                self.capped.insert(tenant);
                continue;
            };
            out.push(self.take_head(&tenant, band, start, new_tat, burst_slot, lease_ms, now_ms));
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn take_head(
        &mut self,
        tenant: &TenantId,
        band: usize,
        start: f64,
        new_tat: f64,
        burst_slot: bool,
        lease_ms: u64,
        now_ms: u64,
    ) -> Lease {
        let state = self.tenants.get_mut(tenant).expect("tenant state");
        state.gcra_tat = Some(new_tat);
        let tenant_band = &mut state.bands[band];
        let (Tag(group_start), group) = tenant_band
            .active_groups
            .pop_first()
            .expect("active tenants have work");
        tenant_band.group_tags.remove(&group);
        let queue = tenant_band
            .groups
            .get_mut(&group)
            .expect("active group has a queue");
        let seq = queue.pop_front().expect("active group has a job");
        let group_empty = queue.is_empty();
        let job = self.jobs.get_mut(&seq).expect("queued job exists");
        let cost = job.spec.cost_estimate.max(0.0);
        tenant_band.local_vt = tenant_band.local_vt.max(group_start);
        let group_finish = group_start + cost;
        tenant_band.group_finish.insert(group.clone(), group_finish);
        if group_empty {
            tenant_band.groups.remove(&group);
        } else {
            tenant_band
                .active_groups
                .insert((Tag(group_finish), group.clone()));
            tenant_band.group_tags.insert(group, group_finish);
        }
        let has_more = tenant_band.has_work();
        if !has_more {
            // A drained tenant band forgets its group tags: memory stays bounded by live groups.
            tenant_band.group_finish.clear();
            tenant_band.local_vt = 0.0;
        }
        let finish = start + cost / state.policy.weight.max(1e-9);
        state.finish[band] = finish;
        state.served_cost += cost;
        state.inflight += 1;
        self.virtual_time[band] = self.virtual_time[band].max(start);
        if has_more {
            self.active[band].insert((Tag(finish), tenant.clone()));
            self.active_tags[band].insert(tenant.clone(), finish);
        }
        if burst_slot {
            self.burst_in_use += 1;
        }
        job.attempt += 1;
        job.token += 1;
        job.state = QueueState::Running;
        job.lease_expiry_ms = now_ms + lease_ms;
        self.leases.insert((job.lease_expiry_ms, seq));
        Lease {
            job_id: job.spec.job_id.clone(),
            tenant: tenant.clone(),
            kind: job.spec.kind.clone(),
            token: job.token,
            attempt: job.attempt,
            max_attempts: job.spec.max_attempts,
            payload: job.spec.payload.clone(),
            expires_at_ms: job.lease_expiry_ms,
        }
    }

    /// Finds the job a lease refers to, checking its fencing token.
    fn check_lease(&self, lease: &Lease) -> QueueResult<u64> {
        let seq = *self
            .ids
            .get(&(lease.tenant.clone(), lease.job_id.clone()))
            .ok_or_else(|| QueueError::NotFound(lease.job_id.clone()))?;
        let job = &self.jobs[&seq];
        if job.state != QueueState::Running || job.token != lease.token {
            return Err(QueueError::StaleLease {
                job_id: lease.job_id.clone(),
                token: lease.token,
            });
        }
        Ok(seq)
    }

    pub fn heartbeat(&mut self, lease: &Lease, lease_ms: u64, now_ms: u64) -> QueueResult<()> {
        let seq = self.check_lease(lease)?;
        let job = self.jobs.get_mut(&seq).expect("checked");
        self.leases.remove(&(job.lease_expiry_ms, seq));
        job.lease_expiry_ms = now_ms + lease_ms;
        self.leases.insert((job.lease_expiry_ms, seq));
        Ok(())
    }

    /// Frees the job's slot and wakes whoever was parked waiting for one.
    pub(super) fn release(&mut self, seq: u64) {
        let job = self.jobs.get_mut(&seq).expect("released job exists");
        self.leases.remove(&(job.lease_expiry_ms, seq));
        let tenant = job.spec.tenant.clone();
        // Slots above the tenant's floor are burst slots, whichever job holds them.
        let mut freed_burst = false;
        if let Some(state) = self.tenants.get_mut(&tenant) {
            freed_burst = state.inflight > state.policy.cap_floor;
            state.inflight = state.inflight.saturating_sub(1);
        }
        if freed_burst {
            self.burst_in_use = self.burst_in_use.saturating_sub(1);
            // One burst slot freed: wake one other tenant parked below its own cap.
            let waiting = self.capped.iter().find(|t| {
                **t != tenant
                    && self
                        .tenants
                        .get(*t)
                        .is_some_and(|s| s.inflight < s.policy.cap_max)
            });
            if let Some(other) = waiting.cloned() {
                self.capped.remove(&other);
                self.unpark(&other);
            }
        }
        if self.capped.remove(&tenant) {
            self.unpark(&tenant);
        }
    }

    /// Completes a job and corrects its charge with the measured cost.
    pub fn complete(&mut self, lease: &Lease, measured_cost: f64, _now_ms: u64) -> QueueResult<()> {
        let seq = self.check_lease(lease)?;
        let job = self.jobs.get_mut(&seq).expect("checked");
        job.state = QueueState::Succeeded;
        let band = job.spec.band.index();
        let estimate = job.spec.cost_estimate.max(0.0);
        let measured = if measured_cost.is_finite() {
            measured_cost.max(0.0)
        } else {
            estimate
        };
        let correction = (measured - estimate).clamp(-MAX_CHARGE_CORRECTION, MAX_CHARGE_CORRECTION);
        let tenant = lease.tenant.clone();
        if correction != 0.0
            && let Some(state) = self.tenants.get_mut(&tenant)
        {
            let delta = correction / state.policy.weight.max(1e-9);
            state.finish[band] += delta;
            state.served_cost += correction;
            if let Some(tag) = self.active_tags[band].get(&tenant).copied() {
                remove_tag(&mut self.active[band], &mut self.active_tags[band], &tenant);
                let adjusted = (tag + delta).max(self.virtual_time[band]);
                self.active[band].insert((Tag(adjusted), tenant.clone()));
                self.active_tags[band].insert(tenant, adjusted);
            }
        }
        self.release(seq);
        Ok(())
    }

    fn record_attempt(&mut self, seq: u64, error: &str, now_ms: u64) {
        let job = self.jobs.get_mut(&seq).expect("job exists");
        job.history.push(AttemptRecord {
            attempt: job.attempt,
            at_ms: now_ms,
            error: error.chars().take(2_000).collect(),
        });
    }

    fn retry_or_dead_letter(
        &mut self,
        seq: u64,
        retryable: bool,
        now_ms: u64,
        jitter: f64,
    ) -> FailOutcome {
        let job = self.jobs.get_mut(&seq).expect("job exists");
        if retryable && job.attempt < job.spec.max_attempts {
            let run_at_ms = now_ms + backoff_ms(job.attempt, jitter);
            job.state = QueueState::Delayed;
            job.run_at_ms = run_at_ms;
            self.delayed.insert((run_at_ms, seq));
            return FailOutcome::RetryAt {
                run_at_ms,
                attempt: job.attempt,
            };
        }
        job.state = QueueState::DeadLettered;
        let attempts = job.attempt;
        let tenant = job.spec.tenant.clone();
        self.tenant_mut(&tenant).dead.push(seq);
        FailOutcome::DeadLettered { attempts }
    }

    pub fn fail(
        &mut self,
        lease: &Lease,
        error: &str,
        retryable: bool,
        now_ms: u64,
        jitter: f64,
    ) -> QueueResult<FailOutcome> {
        let seq = self.check_lease(lease)?;
        self.record_attempt(seq, error, now_ms);
        self.release(seq);
        Ok(self.retry_or_dead_letter(seq, retryable, now_ms, jitter))
    }

    /// Requeues jobs whose lease expired: the lost run counts as an attempt, so a job that
    /// kills its worker every time ends in the dead-letter list.
    pub fn reap(
        &mut self,
        now_ms: u64,
        jitter: &mut dyn FnMut() -> f64,
    ) -> Vec<(TenantId, String, FailOutcome)> {
        let expired: Vec<(u64, u64)> = self
            .leases
            .iter()
            .take_while(|(expiry, _)| *expiry <= now_ms)
            .take(REAP_BATCH)
            .copied()
            .collect();
        let mut out = Vec::with_capacity(expired.len());
        for (_, seq) in expired {
            let job = &self.jobs[&seq];
            let message = format!("lease expired on attempt {}: worker lost", job.attempt);
            let job_id = job.spec.job_id.clone();
            let tenant = job.spec.tenant.clone();
            self.jobs.get_mut(&seq).expect("job exists").token += 1;
            self.record_attempt(seq, &message, now_ms);
            self.release(seq);
            let outcome = self.retry_or_dead_letter(seq, true, now_ms, jitter());
            out.push((tenant, job_id, outcome));
        }
        out
    }
}
