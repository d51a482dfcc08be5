//! Jobs: durable job records plus the pool queues they are dispatched through, submit,
//! inspect, cancel, dead letters, redrive and reconciliation after Redis loses its state.

mod record;
mod service;

pub use record::JobRecord;
pub use service::{JobError, JobListener, JobService, ReconcileReport, SubmitJob, open_queues};
