//! Activate: connections from a workspace's sources to destinations, and reliable delivery.
//!
//! The contract every destination type implements is in [`destination`]; the types are listed in
//! [`registry`]. Life of a delivery (see ARCHITECTURE.md) is written here as the plumbing lands.

pub mod batcher;
pub mod connection;
pub mod destination;
pub mod destinations;
pub mod dlq;
pub mod registry;
pub mod retry;
pub mod runtime;
pub mod stats;
pub mod worker;

pub use connection::{Transform, TransformCompiler};
pub use destination::{
    parse_settings, BatchLimits, BatchOutcome, BuildContext, DeleteOutcome, Destination,
    DestinationType, OutboundEvent, Outcome, SettingsProblem,
};
