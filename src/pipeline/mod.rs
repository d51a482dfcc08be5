//! Pipeline runs: manifests become runs, steps become jobs when their needs succeed, failures
//! skip dependants, cancel stops a whole run; cron schedules fire once per period; and the
//! handlers of the data stages (validate, transform, migrate).

pub mod cron;
pub mod handlers;
pub mod run;
mod service;

pub use cron::{CronLock, CronScheduler, ScheduleRecord, TickReport};
pub use run::{RunRecord, RunState, RunView, StepState, StepView, Trigger};
pub use service::{PipelineError, PipelineResult, PipelineService};

/// Every job handler this build has: the built-in kinds plus the data stages.
pub fn handler_registry(diagnostics: bool) -> crate::worker::HandlerRegistry {
    let mut registry = crate::worker::HandlerRegistry::builtin(diagnostics);
    handlers::register(&mut registry);
    registry
}
