//! Validating an event by the Segment spec and writing the stored (enriched) JSON.
//!
//! Rules, following Segment's "Common fields" and "Timestamps" documentation:
//! - `userId` or `anonymousId` is required (strings; numbers are accepted and stored as strings);
//!   `track` needs `event`, `group` needs `groupId`, `alias` needs `previousId`.
//! - `messageId` must be a string of at most `MESSAGE_ID_CHARS_MAX` characters; one is assigned
//!   when missing. `properties`, `traits`, `context` and `integrations` must be objects.
//! - `receivedAt` is the server's clock when the request arrived.
//! - `timestamp`: the client's `timestamp` when it set one (server libraries let users set it);
//!   otherwise, when both `sentAt` (of the event, else of the batch) and `originalTimestamp` are
//!   present, `receivedAt − (sentAt − originalTimestamp)`, which corrects the device's clock
//!   skew; otherwise `originalTimestamp`; otherwise `receivedAt`.
//! - `context.ip` is the peer address when the client did not set it. The batch's `context`,
//!   `integrations` and `sentAt` apply to events that lack their own.
//! - `writeKey` is never stored.
//!
//! Untouched members are copied byte for byte from the request: no event is re-serialized.

use crate::parse::{codes, ParsedRequest, RawEvent, Rejection};
use crate::raw::{as_str, kind, push_json_string, Kind, RawObject};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::net::IpAddr;
use tandem_core::envelope::{dedup_key, EventEnvelope};
use tandem_core::limits::MESSAGE_ID_CHARS_MAX;
use tandem_core::time_util::{format_iso8601_ms, parse_iso8601_ms};
use tandem_core::EventType;

/// Members the enricher writes itself; the client's copies are not copied through.
const REWRITTEN: &[&str] = &["type", "messageId", "userId", "anonymousId", "timestamp", "receivedAt", "writeKey", "context"];

/// What every event of one request shares.
pub struct EnrichContext<'a> {
    source_id: &'a str,
    received_at_ms: i64,
    received_at: String,
    ip: Option<String>,
    batch_sent_at: Option<&'a RawValue>,
    batch_context: Option<&'a RawValue>,
    batch_integrations: Option<&'a RawValue>,
}

impl<'a> EnrichContext<'a> {
    pub fn new(source_id: &'a str, received_at_ms: i64, ip: Option<IpAddr>, parsed: &'a ParsedRequest<'_>) -> EnrichContext<'a> {
        EnrichContext {
            source_id,
            received_at_ms,
            received_at: format_iso8601_ms(received_at_ms),
            ip: ip.map(|ip| ip.to_string()),
            batch_sent_at: parsed.sent_at,
            batch_context: parsed.context,
            batch_integrations: parsed.integrations,
        }
    }
}

/// An accepted event, ready for the log.
#[derive(Debug, Clone)]
pub struct Enriched {
    pub event_type: EventType,
    pub message_id: String,
    /// `dedup_key(source, messageId)`: the key of the dedup index and of the log envelope.
    pub dedup_key: u64,
    /// The corrected `timestamp`, ms since the epoch.
    pub event_time_ms: i64,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// The stored JSON object.
    pub json: Vec<u8>,
}

impl Enriched {
    /// The log record's payload: the envelope header, then the JSON.
    pub fn envelope_bytes(&self, source_id: &str) -> Vec<u8> {
        EventEnvelope { event_type: self.event_type, dedup_key: self.dedup_key, event_time_ms: self.event_time_ms, source_id, json: &self.json }.encode()
    }
}

/// Validates event `index` of a request and writes its enriched JSON.
pub fn enrich(index: usize, event: &RawEvent, ctx: &EnrichContext) -> Result<Enriched, Rejection> {
    let fields = &event.fields;
    let client_message_id = fields.get("messageId");
    let shown_id = client_message_id.and_then(as_str).map(|id| id.chars().take(MESSAGE_ID_CHARS_MAX).collect::<String>());
    let reject = |code: &'static str, message: String| Rejection { index, message_id: shown_id.clone(), code, message };

    let message_id = match client_message_id.filter(|raw| kind(raw) != Kind::Null) {
        None => None,
        Some(raw) => match as_str(raw) {
            Some(id) if id.chars().count() > MESSAGE_ID_CHARS_MAX => return Err(reject(codes::INVALID_MESSAGE_ID, format!("`messageId` is longer than {MESSAGE_ID_CHARS_MAX} characters"))),
            Some(id) if id.is_empty() => None,
            Some(id) => Some(id.into_owned()),
            None => return Err(reject(codes::INVALID_MESSAGE_ID, "`messageId` must be a string".into())),
        },
    }
    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

    let user_id = identifier(fields, "userId").map_err(|message| reject(codes::INVALID_FIELD, message))?;
    let anonymous_id = identifier(fields, "anonymousId").map_err(|message| reject(codes::INVALID_FIELD, message))?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(reject(codes::MISSING_IDENTITY, "every event needs a `userId` or an `anonymousId`".into()));
    }
    check_type_fields(event.event_type, fields).map_err(|(code, message)| reject(code, message))?;
    for name in ["properties", "traits", "context", "integrations"] {
        if fields.get(name).is_some_and(|raw| !matches!(kind(raw), Kind::Object | Kind::Null)) {
            return Err(reject(codes::INVALID_FIELD, format!("`{name}` must be an object")));
        }
    }
    let client_timestamp = match fields.get("timestamp").filter(|raw| kind(raw) != Kind::Null) {
        None => None,
        Some(raw) => match as_str(raw).as_deref().and_then(parse_iso8601_ms) {
            Some(ms) => Some((raw, ms)),
            None => return Err(reject(codes::INVALID_TIMESTAMP, format!("`timestamp` {} is not an ISO-8601 date-time", raw.get().chars().take(64).collect::<String>()))),
        },
    };
    let event_time_ms = match client_timestamp {
        Some((_, ms)) => ms,
        None => corrected_time(fields, ctx),
    };

    let mut json = Vec::with_capacity(fields.0.iter().map(|(key, value)| key.len() + value.get().len() + 4).sum::<usize>() + 256);
    write_event(&mut json, event, ctx, &message_id, user_id.as_deref(), anonymous_id.as_deref(), client_timestamp.map(|(raw, _)| raw), event_time_ms);
    Ok(Enriched {
        event_type: event.event_type,
        dedup_key: dedup_key(ctx.source_id, &message_id),
        message_id,
        event_time_ms,
        user_id,
        anonymous_id,
        json,
    })
}

/// `receivedAt − (sentAt − originalTimestamp)` when both are known, else `originalTimestamp`,
/// else `receivedAt`.
fn corrected_time(fields: &RawObject, ctx: &EnrichContext) -> i64 {
    let parse = |raw: Option<&RawValue>| raw.and_then(as_str).as_deref().and_then(parse_iso8601_ms);
    let original = parse(fields.get("originalTimestamp"));
    let sent = parse(fields.get("sentAt")).or_else(|| parse(ctx.batch_sent_at));
    match (original, sent) {
        (Some(original), Some(sent)) => ctx.received_at_ms.saturating_sub(sent.saturating_sub(original)),
        (Some(original), None) => original,
        _ => ctx.received_at_ms,
    }
}

/// A `userId`-like member: a non-empty string, or a number (kept as its text). Absent, null or
/// empty: `None`.
fn identifier(fields: &RawObject, name: &str) -> Result<Option<String>, String> {
    let Some(raw) = fields.get(name) else { return Ok(None) };
    match kind(raw) {
        Kind::Null => Ok(None),
        Kind::String => Ok(as_str(raw).filter(|text| !text.is_empty()).map(Cow::into_owned)),
        Kind::Number => Ok(Some(raw.get().to_string())),
        _ => Err(format!("`{name}` must be a string")),
    }
}

fn check_type_fields(event_type: EventType, fields: &RawObject) -> Result<(), (&'static str, String)> {
    let required = match event_type {
        EventType::Track => Some(("event", codes::MISSING_EVENT, "a track call needs an `event` name")),
        EventType::Group => Some(("groupId", codes::MISSING_GROUP_ID, "a group call needs a `groupId`")),
        EventType::Alias => Some(("previousId", codes::MISSING_PREVIOUS_ID, "an alias call needs a `previousId`")),
        _ => None,
    };
    let Some((name, code, message)) = required else { return Ok(()) };
    let present = match fields.get(name) {
        Some(raw) if kind(raw) == Kind::String => as_str(raw).is_some_and(|text| !text.is_empty()),
        Some(raw) => name != "event" && kind(raw) == Kind::Number,
        None => false,
    };
    if present {
        Ok(())
    } else {
        Err((code, message.to_string()))
    }
}

#[allow(clippy::too_many_arguments)]
fn write_event(
    out: &mut Vec<u8>,
    event: &RawEvent,
    ctx: &EnrichContext,
    message_id: &str,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
    client_timestamp: Option<&RawValue>,
    event_time_ms: i64,
) {
    let fields = &event.fields;
    let mut writer = ObjectWriter::new(out);
    for (key, value) in &fields.0 {
        if !REWRITTEN.contains(&key.as_ref()) {
            writer.raw(key, value.get());
        }
    }
    if fields.get("sentAt").is_none() {
        if let Some(sent_at) = ctx.batch_sent_at {
            writer.raw("sentAt", sent_at.get());
        }
    }
    if fields.get("integrations").is_none() {
        if let Some(integrations) = ctx.batch_integrations {
            writer.raw("integrations", integrations.get());
        }
    }
    let context = fields.get("context").filter(|raw| kind(raw) == Kind::Object).or(ctx.batch_context.filter(|raw| kind(raw) == Kind::Object));
    writer.context(context, ctx.ip.as_deref());
    writer.string("type", event.event_type.as_str());
    writer.string("messageId", message_id);
    if let Some(user_id) = user_id {
        writer.string("userId", user_id);
    }
    if let Some(anonymous_id) = anonymous_id {
        writer.string("anonymousId", anonymous_id);
    }
    match client_timestamp {
        Some(raw) => writer.raw("timestamp", raw.get()),
        None => writer.string("timestamp", &format_iso8601_ms(event_time_ms)),
    }
    writer.string("receivedAt", &ctx.received_at);
    writer.finish();
}

/// Writes a JSON object member by member.
struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> ObjectWriter<'o> {
    fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        push_json_string(self.out, key);
        self.out.push(b':');
    }

    fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.out.extend_from_slice(json.as_bytes());
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(self.out, value);
    }

    /// `context` as sent, with `"ip"` added before its closing brace when it has none.
    fn context(&mut self, context: Option<&RawValue>, ip: Option<&str>) {
        let Some(ip) = ip else {
            if let Some(context) = context {
                self.raw("context", context.get());
            }
            return;
        };
        let members = context.and_then(RawObject::parse).unwrap_or_default();
        if members.get("ip").is_some() {
            self.raw("context", context.expect("members come from a context").get());
            return;
        }
        self.key("context");
        match context {
            Some(context) => {
                let text = context.get().trim_end();
                let body = &text[..text.len() - 1];
                self.out.extend_from_slice(body.as_bytes());
                if !members.0.is_empty() {
                    self.out.push(b',');
                }
            }
            None => self.out.push(b'{'),
        }
        self.out.extend_from_slice(b"\"ip\":");
        push_json_string(self.out, ip);
        self.out.push(b'}');
    }

    fn finish(self) {
        self.out.push(b'}');
    }
}
