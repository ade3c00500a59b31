//! Tracking plans: the expected shape of a workspace's events, checked on the collect path.
//!
//! * [`CompiledPlan`] (`compile.rs`): a [`TrackingPlanConfig`] whose JSON Schemas are compiled
//!   once per plan version (never per event); [`CompiledPlan::check`] lists an event's
//!   [`Violation`]s (JSON pointer from the event's root, the schema keyword, a message).
//! * [`infer`] (`infer.rs`): a draft plan from sample events — property types (a union when they
//!   mix), `required` for properties every sample has, `enum` for strings with few distinct values.
//!
//! What a violation does (allow, flag, quarantine, block) is the server's business
//! (`tandem-server::plans`): this crate is pure, no I/O.

mod compile;
mod infer;

pub use compile::{CompiledPlan, SchemaProblem, Violation, RULE_UNPLANNED_EVENT};
pub use infer::{infer, InferredPlan};
pub use tandem_config::{PlanMode, TrackingPlanConfig, UnplannedEvents};

#[cfg(test)]
mod tests;
