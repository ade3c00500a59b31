//! Turning a batch into NATS messages: subject from the template, body = the event JSON,
//! `Nats-Msg-Id` = the messageId.

use crate::destination::OutboundEvent;

/// Longest value put in one subject token: an event name is user input, and every distinct
/// subject costs the server an entry in its subject index.
pub const SUBJECT_TOKEN_CHARS_MAX: usize = 64;

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsMessage {
    pub subject: String,
    /// JetStream deduplicates on it (`Nats-Msg-Id`) within the stream's duplicate window.
    pub message_id: String,
    pub payload: bytes::Bytes,
}

/// The values the subject template's placeholders take for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectContext<'a> {
    pub template: &'a str,
    pub workspace_id: &'a str,
    pub destination_id: &'a str,
}

pub fn build_messages(batch: &[OutboundEvent], context: &SubjectContext<'_>) -> Vec<NatsMessage> {
    batch
        .iter()
        .map(|event| NatsMessage {
            subject: render_subject(context, event),
            message_id: event.message_id.clone(),
            payload: event.event.to_json_bytes().into(),
        })
        .collect()
}

/// The subject of `event`: every placeholder replaced by its sanitized value.
pub fn render_subject(context: &SubjectContext<'_>, event: &OutboundEvent) -> String {
    let name = ["event", "name"]
        .iter()
        .find_map(|field| event.event.get(*field).and_then(|value| value.as_str()))
        .filter(|name| !name.is_empty())
        .unwrap_or(event.event_type.as_str());
    context
        .template
        .replace("{workspace}", &token(context.workspace_id))
        .replace("{destination}", &token(context.destination_id))
        .replace("{source}", &token(&event.source_id))
        .replace("{type}", event.event_type.as_str())
        .replace("{event}", &token(name))
}

/// One subject token: `.`, wildcards, whitespace and anything not a letter, digit, `_` or `-`
/// become `_` (so `Order Completed` → `Order_Completed`), cut to [`SUBJECT_TOKEN_CHARS_MAX`].
pub fn token(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .take(SUBJECT_TOKEN_CHARS_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_string()
    } else {
        cleaned
    }
}

/// The subjects a stream created for `template` captures: each token holding a placeholder
/// becomes `*` (`tandem.{workspace}.{type}` → `tandem.*.*`).
pub fn stream_subjects(template: &str) -> String {
    template
        .split('.')
        .map(|part| if part.contains('{') { "*" } else { part })
        .collect::<Vec<_>>()
        .join(".")
}
