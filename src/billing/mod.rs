//! Billing: versioned plans with their billing models (per-request tiers, per-token,
//! subscription with included quota and overage, usage with a monthly minimum), rating a
//! month's usage into invoice lines with exact decimal money, and deterministic invoices.

pub mod costs;
pub mod cron;
pub mod forecast;
pub mod invoice;
pub mod jobs;
pub mod pricing;
pub mod rollup;
pub mod service;
pub mod settings;

pub use invoice::{BillingError, BillingPlan, Component, Invoice, Line, Segment, rate};
pub use pricing::{PricingError, Tier, TierMode, round_money};
