//! Activate: connections from a workspace's sources to destinations, and reliable delivery.
//!
//! Life of a delivery:
//! 1. [`runtime::Activation`] starts one [`worker::Worker`] per enabled connection (file- or
//!    API-declared), a log consumer `deliver.<connection>` (new connections start at the log's end).
//! 2. Each record is filtered ([`connection::Connection`]: source, type, track names, Segment
//!    `integrations`), gated on consent ([`consent`]: the connection's categories against the
//!    event's, else the profile's, preferences, else the `consent_missing` policy), mapped, transformed ([`connection::Transform`]); a failing transformation
//!    dead-letters the original event.
//! 3. Events go to lanes by user ([`worker`]); a lane batches them ([`batcher`]) and sends one
//!    batch at a time through the [`destination::Destination`].
//! 4. Outcomes ([`destination::Outcome`]): delivered; retry with backoff, `Retry-After`, a
//!    budget and a circuit breaker ([`retry`]); reject → bisection → [`dlq`].
//! 5. The offset is committed below the lowest record not yet delivered or dead-lettered, at
//!    most every 200 ms; dead letters are durable before the offset passes them.
//! 6. Counters, latency, last errors and alerts ([`stats`]) feed the API and `/metrics`; replay
//!    and backfill ([`runtime`]) use the same send path.

pub mod batcher;
pub mod connection;
pub mod consent;
pub mod destination;
pub mod destinations;
pub mod dlq;
pub mod history;
pub mod registry;
pub mod retry;
pub mod runtime;
pub mod stats;
pub mod worker;

pub use connection::{Transform, TransformCompiler, TransformTarget};
pub use destination::{
    parse_settings, BatchLimits, BatchOutcome, BuildContext, DeleteOutcome, Destination,
    DestinationType, OutboundEvent, Outcome, SettingsProblem,
};
