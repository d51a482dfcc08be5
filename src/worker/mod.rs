//! Worker pools: run jobs leased from a pool's fair queue, each in its tenant's context.

mod apalis_adapter;
mod handlers;
mod runner;

pub use apalis_adapter::{ApalisQueueBackend, QueuePersistence};
pub use handlers::{
    HandlerError, HandlerRegistry, JobContext, JobHandler, JobOutput, ProgressReporter,
};
pub use runner::{PoolRunner, REAP_INTERVAL, run_reaper};
