//! Validating an event by the Segment spec and writing the stored (enriched) JSON.
//!
//! Rules, following Segment's "Common fields" and "Timestamps" documentation:
//! - `userId` or `anonymousId` is required (strings; numbers are accepted and stored as strings);
//!   `track` needs `event`, `group` needs `groupId`, `alias` needs `userId` and `previousId`.
//! - `messageId` must be a string of at most `MESSAGE_ID_CHARS_MAX` characters; one (a UUID v4)
//!   is assigned when it is missing, `null` or empty. `properties`, `traits`, `context` and
//!   `integrations` must be objects; `timestamp`, `originalTimestamp` and `sentAt` ISO-8601 strings.
//! - `receivedAt` is the server's clock when the request arrived.
//! - `timestamp` (see [`event_time_ms`]): the client's `timestamp` when it set one (server
//!   libraries and the HTTP API let users set it, e.g. to import history); otherwise, when both
//!   `sentAt` (of the event, else of the batch) and `originalTimestamp` are present,
//!   `receivedAt − (sentAt − originalTimestamp)`, which corrects the device's clock skew;
//!   otherwise `originalTimestamp`; otherwise `receivedAt`.
//! - `originalTimestamp` is kept as sent; when the client set only `timestamp`, it is that value
//!   (Segment: "the timestamp value manually passed in through server-side libraries").
//! - `context.ip` is the peer address when neither the event's nor the batch's context has an
//!   `ip`. The batch's `context` is merged into each event's (the event's members win); the
//!   batch's `integrations` and `sentAt` apply to events that lack their own.
//! - With `anonymize_ip` (`[workspaces.pii]`, [`EnrichContext::anonymizing_ip`]), whichever
//!   `context.ip` is stored — the peer's or the client's — has its last IPv4 octet or its last 80
//!   IPv6 bits zeroed (`tandem_pii::anonymize_ip`); a client's `ip` that is not an address is
//!   left out rather than stored unchecked.
//! - `writeKey` is a credential and is never stored; `type` is always the canonical call type.
//!
//! Untouched members are copied byte for byte from the request: no event is re-serialized.

use crate::parse::{codes, ParsedRequest, RawEvent, Rejection};
use crate::raw::{as_str, kind, push_json_string, Kind, RawObject};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;
use tandem_core::envelope::{dedup_key, EventEnvelope};
use tandem_core::limits::MESSAGE_ID_CHARS_MAX;
use tandem_core::time_util::{format_iso8601_ms, parse_iso8601_ms};
use tandem_core::EventType;

/// Members the enricher writes itself; the client's copies are not copied through.
const REWRITTEN: &[&str] = &[
    "type",
    "messageId",
    "userId",
    "anonymousId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "writeKey",
    "context",
    "integrations",
];
/// Members that must be JSON objects when present.
const OBJECT_MEMBERS: [&str; 4] = ["properties", "traits", "context", "integrations"];
/// Members that must be ISO-8601 date-time strings when present.
const TIME_MEMBERS: [&str; 3] = ["timestamp", "originalTimestamp", "sentAt"];
/// Earliest and latest instants written as `timestamp` (years 0000 and 9999): a skew correction
/// landing outside them falls back to `receivedAt`, so every stored time reads back.
const EVENT_TIME_MS_MIN: i64 = -62_167_219_200_000;
const EVENT_TIME_MS_MAX: i64 = 253_402_300_799_999;
/// Members of an object beyond which key lookups use a hash set instead of a scan.
const LINEAR_LOOKUP_MEMBERS_MAX: usize = 32;
/// Bytes added to an event by enrichment, besides the batch's shared members (ids, times, ip).
const ENRICHMENT_BYTES_GUESS: usize = 256;
/// Characters of a refused value quoted back in a rejection message.
const QUOTED_CHARS_MAX: usize = 64;

/// What every event of one request shares, computed once per request.
pub struct EnrichContext<'a> {
    source_id: &'a str,
    received_at_ms: i64,
    received_at: String,
    ip: Option<String>,
    anonymize_ip: bool,
    batch_sent_at: Option<&'a RawValue>,
    batch_sent_at_ms: Option<i64>,
    batch_context: RawObject<'a>,
    batch_integrations: Option<&'a RawValue>,
}

impl<'a> EnrichContext<'a> {
    /// `source_id` keys deduplication; `received_at_ms` is the server clock when the request
    /// arrived; `ip` is the peer address (`context.ip` unless the client set one).
    pub fn new(
        source_id: &'a str,
        received_at_ms: i64,
        ip: Option<IpAddr>,
        parsed: &'a ParsedRequest<'_>,
    ) -> EnrichContext<'a> {
        EnrichContext {
            source_id,
            received_at_ms,
            received_at: format_iso8601_ms(received_at_ms),
            ip: ip.map(|ip| ip.to_string()),
            anonymize_ip: false,
            batch_sent_at: parsed.batch_sent_at,
            batch_sent_at_ms: parsed.sent_at_ms,
            batch_context: parsed
                .batch_context
                .and_then(RawObject::parse)
                .unwrap_or_default(),
            batch_integrations: parsed.batch_integrations,
        }
    }

    /// Stores every `context.ip` anonymized (the workspace's `anonymize_ip`).
    pub fn anonymizing_ip(mut self) -> EnrichContext<'a> {
        self.anonymize_ip = true;
        self.ip = self
            .ip
            .as_deref()
            .and_then(|text| text.parse::<IpAddr>().ok())
            .map(|ip| tandem_pii::anonymize_ip(ip).to_string());
        self
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
    /// The log record's payload: the envelope header, then the JSON. `source_id` must be the
    /// source the event was enriched for (1 to 64 bytes, as every catalog id is; the envelope
    /// encoder asserts it).
    pub fn envelope_bytes(&self, source_id: &str) -> Vec<u8> {
        EventEnvelope {
            event_type: self.event_type,
            dedup_key: self.dedup_key,
            event_time_ms: self.event_time_ms,
            source_id,
            json: &self.json,
        }
        .encode()
    }
}

/// The validated values an event's stored form is written from.
struct Checked<'a> {
    message_id: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    client_timestamp: Option<&'a RawValue>,
    event_time_ms: i64,
}

/// Validates event `index` of a request and writes its enriched JSON.
pub fn enrich(index: usize, event: &RawEvent, ctx: &EnrichContext) -> Result<Enriched, Rejection> {
    let fields = &event.fields;
    let shown_id = fields
        .get("messageId")
        .and_then(as_str)
        .map(|id| id.chars().take(MESSAGE_ID_CHARS_MAX).collect::<String>());
    let checked = check(event, ctx).map_err(|(code, message)| Rejection {
        index,
        message_id: shown_id,
        code,
        message,
    })?;
    let capacity = fields
        .0
        .iter()
        .map(|(key, value)| key.len() + value.get().len() + 4)
        .sum::<usize>()
        + ctx
            .batch_context
            .0
            .iter()
            .map(|(key, value)| key.len() + value.get().len() + 4)
            .sum::<usize>()
        + ctx.batch_integrations.map_or(0, |raw| raw.get().len())
        + ENRICHMENT_BYTES_GUESS;
    let mut json = Vec::with_capacity(capacity);
    write_event(&mut json, event, ctx, &checked);
    Ok(Enriched {
        event_type: event.event_type,
        dedup_key: dedup_key(ctx.source_id, &checked.message_id),
        message_id: checked.message_id,
        event_time_ms: checked.event_time_ms,
        user_id: checked.user_id,
        anonymous_id: checked.anonymous_id,
        json,
    })
}

type Problem = (&'static str, String);

fn check<'a>(event: &RawEvent<'a>, ctx: &EnrichContext) -> Result<Checked<'a>, Problem> {
    let fields = &event.fields;
    let message_id = message_id(fields)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let user_id = identifier(fields, "userId")?;
    let anonymous_id = identifier(fields, "anonymousId")?;
    check_identity(event.event_type, user_id.is_some(), anonymous_id.is_some())?;
    check_type_fields(event.event_type, fields)?;
    for name in OBJECT_MEMBERS {
        if fields
            .get_present(name)
            .is_some_and(|raw| kind(raw) != Kind::Object)
        {
            return Err((codes::INVALID_FIELD, format!("`{name}` must be an object")));
        }
    }
    let [timestamp, original, sent_at] = TIME_MEMBERS.map(|name| time_member(fields, name));
    let (timestamp, original, sent_at) = (timestamp?, original?, sent_at?);
    let sent_at_ms = sent_at.map(|(_, ms)| ms).or(ctx.batch_sent_at_ms);
    let event_time_ms = event_time_ms(
        ctx.received_at_ms,
        timestamp.map(|(_, ms)| ms),
        original.map(|(_, ms)| ms),
        sent_at_ms,
    );
    Ok(Checked {
        message_id,
        user_id,
        anonymous_id,
        client_timestamp: timestamp.map(|(raw, _)| raw),
        event_time_ms,
    })
}

/// The client's `messageId`: `None` when absent, `null` or empty (one is assigned).
fn message_id(fields: &RawObject) -> Result<Option<String>, Problem> {
    let Some(raw) = fields.get_present("messageId") else {
        return Ok(None);
    };
    match as_str(raw) {
        Some(id) if id.chars().count() > MESSAGE_ID_CHARS_MAX => Err((
            codes::INVALID_MESSAGE_ID,
            format!("`messageId` is longer than {MESSAGE_ID_CHARS_MAX} characters"),
        )),
        Some(id) if id.is_empty() => Ok(None),
        Some(id) => Ok(Some(id.into_owned())),
        None => Err((
            codes::INVALID_MESSAGE_ID,
            "`messageId` must be a string".into(),
        )),
    }
}

/// A `userId`-like member: a non-empty string, or a number (kept as its text). Absent, null or
/// empty: `None`. Any other kind is refused rather than ignored.
fn identifier(fields: &RawObject, name: &str) -> Result<Option<String>, Problem> {
    let Some(raw) = fields.get(name) else {
        return Ok(None);
    };
    match kind(raw) {
        Kind::Null => Ok(None),
        Kind::String => Ok(as_str(raw)
            .filter(|text| !text.is_empty())
            .map(Cow::into_owned)),
        Kind::Number => Ok(Some(raw.get().to_string())),
        _ => Err((codes::INVALID_FIELD, format!("`{name}` must be a string"))),
    }
}

fn check_identity(
    event_type: EventType,
    has_user_id: bool,
    has_anonymous_id: bool,
) -> Result<(), Problem> {
    if event_type == EventType::Alias && !has_user_id {
        return Err((
            codes::MISSING_IDENTITY,
            "an alias call needs the new `userId`".into(),
        ));
    }
    if !has_user_id && !has_anonymous_id {
        return Err((
            codes::MISSING_IDENTITY,
            "every event needs a `userId` or an `anonymousId`".into(),
        ));
    }
    Ok(())
}

fn check_type_fields(event_type: EventType, fields: &RawObject) -> Result<(), Problem> {
    let required = match event_type {
        EventType::Track => Some((
            "event",
            codes::MISSING_EVENT,
            "a track call needs an `event` name",
        )),
        EventType::Group => Some((
            "groupId",
            codes::MISSING_GROUP_ID,
            "a group call needs a `groupId`",
        )),
        EventType::Alias => Some((
            "previousId",
            codes::MISSING_PREVIOUS_ID,
            "an alias call needs a `previousId`",
        )),
        _ => None,
    };
    let Some((name, code, message)) = required else {
        return Ok(());
    };
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

/// A date-time member, raw and in ms; `None` when absent or `null`.
fn time_member<'a>(
    fields: &RawObject<'a>,
    name: &str,
) -> Result<Option<(&'a RawValue, i64)>, Problem> {
    let Some(raw) = fields.get_present(name) else {
        return Ok(None);
    };
    match as_str(raw).as_deref().and_then(parse_iso8601_ms) {
        Some(ms) => Ok(Some((raw, ms))),
        None => {
            let shown: String = raw.get().chars().take(QUOTED_CHARS_MAX).collect();
            Err((
                codes::INVALID_TIMESTAMP,
                format!("`{name}` {shown} is not an ISO-8601 date-time"),
            ))
        }
    }
}

/// When the event happened, by Segment's rules (all in ms since the epoch):
/// 1. the client's `timestamp` when it set one;
/// 2. else `receivedAt − (sentAt − originalTimestamp)` when both are known: the device's clock
///    may be wrong, but the time between recording and sending is measured on that one clock;
/// 3. else `originalTimestamp`;
/// 4. else `receivedAt`.
///
/// A correction landing outside years 0000-9999 (absurd client clocks) gives `receivedAt`.
///
/// Rule 1 is a choice: Segment's own pipeline treats a `timestamp` generated on a device
/// (analytics.js/-next, the mobile SDKs) as `originalTimestamp` and corrects it with `sentAt` too.
/// tandem keeps any client-set `timestamp` exactly, so imports keep their times to the
/// millisecond; only clients that send `originalTimestamp` get their clock skew corrected.
pub fn event_time_ms(
    received_at_ms: i64,
    timestamp_ms: Option<i64>,
    original_ms: Option<i64>,
    sent_at_ms: Option<i64>,
) -> i64 {
    let time = match (timestamp_ms, original_ms, sent_at_ms) {
        (Some(timestamp), _, _) => timestamp,
        (None, Some(original), Some(sent)) => {
            received_at_ms.saturating_sub(sent.saturating_sub(original))
        }
        (None, Some(original), None) => original,
        (None, None, _) => received_at_ms,
    };
    if (EVENT_TIME_MS_MIN..=EVENT_TIME_MS_MAX).contains(&time) {
        time
    } else {
        received_at_ms
    }
}

fn write_event(out: &mut Vec<u8>, event: &RawEvent, ctx: &EnrichContext, checked: &Checked) {
    let fields = &event.fields;
    let mut writer = ObjectWriter::new(out);
    for (key, value) in &fields.0 {
        if !REWRITTEN.contains(&key.as_ref()) {
            writer.raw(key, value.get());
        }
    }
    if let Some(sent_at) = fields.get_present("sentAt").or(ctx.batch_sent_at) {
        writer.raw("sentAt", sent_at.get());
    }
    if let Some(integrations) = fields
        .get_present("integrations")
        .or(ctx.batch_integrations)
    {
        writer.raw("integrations", integrations.get());
    }
    write_context(&mut writer, fields.get_present("context"), ctx);
    writer.string("type", event.event_type.as_str());
    writer.string("messageId", &checked.message_id);
    if let Some(user_id) = &checked.user_id {
        writer.string("userId", user_id);
    }
    if let Some(anonymous_id) = &checked.anonymous_id {
        writer.string("anonymousId", anonymous_id);
    }
    if let Some(original) = fields
        .get_present("originalTimestamp")
        .or(checked.client_timestamp)
    {
        writer.raw("originalTimestamp", original.get());
    }
    match checked.client_timestamp {
        Some(raw) => writer.raw("timestamp", raw.get()),
        None => writer.string("timestamp", &format_iso8601_ms(checked.event_time_ms)),
    }
    writer.string("receivedAt", &ctx.received_at);
    writer.finish();
}

/// `context`: the event's members, then the batch's members the event lacks, then `ip` when
/// neither has one. Copied verbatim when there is nothing to add.
fn write_context(writer: &mut ObjectWriter, own_raw: Option<&RawValue>, ctx: &EnrichContext) {
    let own = own_raw.and_then(RawObject::parse).unwrap_or_default();
    let own_keys = KeyLookup::present_keys(&own);
    let batch = &ctx.batch_context;
    // Anonymizing, a client's own `ip` (the event's, else the batch's) is rewritten too.
    let client_ip = own.get_present("ip").or_else(|| batch.get_present("ip"));
    let rewrites_client_ip = ctx.anonymize_ip && client_ip.is_some();
    let anonymized_client_ip = client_ip
        .filter(|_| rewrites_client_ip)
        .and_then(as_str)
        .and_then(|text| text.trim().parse::<IpAddr>().ok())
        .map(|ip| tandem_pii::anonymize_ip(ip).to_string());
    let ip = if rewrites_client_ip {
        anonymized_client_ip.as_deref()
    } else {
        ctx.ip
            .as_deref()
            .filter(|_| !own_keys.contains("ip") && batch.get_present("ip").is_none())
    };
    let adds_members = ip.is_some()
        || rewrites_client_ip
        || batch
            .0
            .iter()
            .any(|(key, value)| kind(value) != Kind::Null && !own_keys.contains(key));
    if !adds_members {
        if let Some(raw) = own_raw {
            writer.raw("context", raw.get());
        }
        return;
    }
    let batch_keys = KeyLookup::present_keys(batch);
    let mut context = writer.object("context");
    for (key, value) in &own.0 {
        let replaced = (rewrites_client_ip && key == "ip")
            || kind(value) == Kind::Null
                && (batch_keys.contains(key) || (key == "ip" && ip.is_some()));
        if !replaced {
            context.raw(key, value.get());
        }
    }
    for (key, value) in &batch.0 {
        if !own_keys.contains(key) && (!rewrites_client_ip || key != "ip") {
            context.raw(key, value.get());
        }
    }
    if let Some(ip) = ip {
        context.string("ip", ip);
    }
    context.finish();
}

/// The keys of an object's non-null members, searched by scan when few, by hash when many (so a
/// context with thousands of members costs linear time, not quadratic).
enum KeyLookup<'o> {
    Scan(&'o RawObject<'o>),
    Hash(HashSet<&'o str>),
}

impl<'o> KeyLookup<'o> {
    fn present_keys(object: &'o RawObject<'o>) -> KeyLookup<'o> {
        if object.0.len() <= LINEAR_LOOKUP_MEMBERS_MAX {
            return KeyLookup::Scan(object);
        }
        KeyLookup::Hash(
            object
                .0
                .iter()
                .filter(|(_, value)| kind(value) != Kind::Null)
                .map(|(key, _)| key.as_ref())
                .collect(),
        )
    }

    fn contains(&self, key: &str) -> bool {
        match self {
            KeyLookup::Scan(object) => object.get_present(key).is_some(),
            KeyLookup::Hash(keys) => keys.contains(key),
        }
    }
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

    /// A nested object as the value of `key`; `finish` it before writing on.
    fn object(&mut self, key: &str) -> ObjectWriter<'_> {
        self.key(key);
        ObjectWriter::new(self.out)
    }

    fn finish(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED: i64 = 1_700_000_000_000;

    #[test]
    fn a_client_timestamp_wins() {
        assert_eq!(event_time_ms(RECEIVED, Some(5), Some(7), Some(9)), 5);
    }

    #[test]
    fn skew_is_corrected_with_sent_at() {
        // The device clock is 1 h fast; the event was recorded 5 s before it was sent.
        let sent = RECEIVED + 3_600_000;
        assert_eq!(
            event_time_ms(RECEIVED, None, Some(sent - 5_000), Some(sent)),
            RECEIVED - 5_000
        );
        // A slow clock, and an event queued offline for a day.
        let sent = RECEIVED - 600_000;
        assert_eq!(
            event_time_ms(RECEIVED, None, Some(sent - 86_400_000), Some(sent)),
            RECEIVED - 86_400_000
        );
    }

    #[test]
    fn without_sent_at_the_original_time_is_used_then_received_at() {
        assert_eq!(event_time_ms(RECEIVED, None, Some(42), None), 42);
        assert_eq!(event_time_ms(RECEIVED, None, None, Some(42)), RECEIVED);
    }

    #[test]
    fn absurd_corrections_fall_back_to_received_at() {
        assert_eq!(
            event_time_ms(
                RECEIVED,
                None,
                Some(EVENT_TIME_MS_MIN),
                Some(EVENT_TIME_MS_MAX)
            ),
            RECEIVED
        );
        assert_eq!(
            event_time_ms(RECEIVED, None, Some(i64::MIN), Some(i64::MAX)),
            RECEIVED
        );
        assert_eq!(
            event_time_ms(RECEIVED, Some(i64::MAX), None, None),
            RECEIVED
        );
        assert_eq!(
            format_iso8601_ms(EVENT_TIME_MS_MIN),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_iso8601_ms(EVENT_TIME_MS_MAX),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
