//! Webhook: events POSTed as JSON to a URL, one per request or batched (`{"batch": [...]}`).
//!
//! Every request carries `Idempotency-Key` (the event's messageId; for a batch, a digest of its
//! messageIds) and, with a `signing_secret`, `X-Tandem-Timestamp` (Unix seconds) and
//! `X-Tandem-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. The answer is
//! classified: 2xx delivered; 408, 429, 5xx, timeouts and connection errors retried (honouring
//! `Retry-After`); any other status rejected (→ bisection → DLQ).

mod config;
mod request;
mod service;
#[cfg(test)]
mod tests;

pub use config::{WebhookAuth, WebhookSettings};
pub use request::{signature, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::destination::DestinationType;

pub static TYPE: DestinationType = DestinationType {
    name: "webhook",
    description: "HTTP POST of JSON events to a URL, single or batched, signed with HMAC-SHA256",
    settings_schema: config::schema,
    validate: config::validate,
    build: service::build,
};
