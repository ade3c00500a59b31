//! NATS: each event published to a JetStream subject and delivered only once acknowledged.
//!
//! The subject comes from a template (`tandem.{workspace}.{type}` by default; `{event}` is the
//! sanitized event name). The body is the event JSON; the `Nats-Msg-Id` header is its messageId,
//! so the stream's duplicate window drops a redelivered event instead of storing it twice. With
//! `stream` set, publishes must land in that stream (`Nats-Expected-Stream`), created on first
//! connection when `create_stream` is true.
//!
//! Publishes of a batch are pipelined (a window of unacknowledged publishes), then every ack is
//! awaited: the answer is per event. A missing ack (timeout, lost connection, no stream yet) is
//! retried; a message too large for the server or stream is rejected (→ DLQ). When a publish
//! fails in the middle of a batch, later events of the same user may already be stored: per-user
//! order in the stream then holds only up to that retry.

mod config;
mod request;
mod service;
#[cfg(test)]
mod tests;

pub use config::{NatsAuth, NatsSettings};
pub use request::{render_subject, stream_subjects, token, SubjectContext};

use crate::destination::DestinationType;

pub static TYPE: DestinationType = DestinationType {
    name: "nats",
    description: "JetStream publish of each event (body = event JSON, Nats-Msg-Id = messageId), delivered once acknowledged",
    settings_schema: config::schema,
    validate: config::validate,
    build: service::build,
};
