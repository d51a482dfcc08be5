//! Pipeline runs: manifests become runs, steps become jobs when their needs succeed, failures
//! skip dependants, cancel stops a whole run; cron schedules fire once per period; and the
//! handlers of the stages (validate, transform, migrate, finetune, score).

pub mod cron;
pub mod finetune;
pub mod handlers;
pub mod run;
pub mod score;
mod service;

pub use cron::{CronLock, CronScheduler, ScheduleRecord, TickReport};
pub use run::{RunRecord, RunState, RunView, StepState, StepView, Trigger};
pub use service::{PipelineError, PipelineResult, PipelineService};

/// Every job handler this build has: the built-in kinds, the data stages and billing.
pub fn handler_registry(diagnostics: bool) -> crate::worker::HandlerRegistry {
    let mut registry = crate::worker::HandlerRegistry::builtin(diagnostics);
    handlers::register(&mut registry);
    finetune::register(&mut registry);
    score::register(&mut registry);
    crate::billing::jobs::register(&mut registry);
    registry
}
