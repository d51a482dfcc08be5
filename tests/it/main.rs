//! The one integration-test binary: real HTTP servers on random ports over real file stores.

mod apalis_adapter;
mod audit_chain;
mod bad_input;
mod cli;
mod crypto_binding;
mod isolation;
mod jobs;
mod lifecycle;
mod manifests;
mod metering;
mod models;
mod paths;
mod pipeline_schedules;
mod pipelines;
mod queue_conformance;
mod queue_fairness;
mod queue_idle;
mod s3;
mod serving;
mod support;
mod usage;
mod worker_faults;
