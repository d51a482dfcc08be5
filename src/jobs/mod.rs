//! Jobs: durable job records plus the pool queues they are dispatched through, submit,
//! inspect, cancel, dead letters, redrive and reconciliation after Redis loses its state.

mod record;
mod service;
mod submit;

pub use record::{Continuation, JobRecord};
pub use service::{JobError, JobListener, JobService, ReconcileReport, open_queues};
pub use submit::{MAX_PAYLOAD_BYTES, SubmitJob};
