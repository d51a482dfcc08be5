//! The fair multi-tenant job queue: one contract, a memory backend (embedded default) and a
//! Redis backend (Lua), both held to the same conformance suite.
//!
//! Scheduling is hierarchical start-time fair queueing with virtual time (band -> tenant ->
//! group -> job; see `shared/notes/fair-queue.md`): plan weights, cost-aware charging corrected
//! at completion, idle re-entry at max(V, F), concurrency caps with a guaranteed floor and a
//! shared burst pool, GCRA rate limits that park a tenant, priority bands with reserved shares,
//! leases with fencing tokens, retries with full-jitter backoff and a per-tenant dead-letter
//! list.

mod contract;
mod gcra;
mod memory;
mod redis_queue;
mod retry;
mod types;

pub use contract::{JobQueue, TenantQueueStats};
pub use memory::{Core, MemoryQueue};
pub use redis_queue::RedisQueue;
pub use retry::{BACKOFF_BASE_MS, BACKOFF_CAP_MS, backoff_ms};
pub use types::{
    AttemptRecord, Band, Blocker, DeadLetter, Enqueued, Explanation, FailOutcome, JobSpec, Lease,
    QueueError, QueueResult, QueueState, TenantPolicy,
};
