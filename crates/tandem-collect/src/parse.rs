//! Parsing a tracking call: the request as a whole, then each event on its own.

use crate::raw::{as_str, kind, line_column, scan_body, Kind, RawObject};
use serde::Serialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use tandem_core::limits::{
    BATCH_BYTES_MAX, BATCH_EVENTS_MAX, EVENT_BYTES_MAX, JSON_DEPTH_MAX, MESSAGE_ID_CHARS_MAX,
};
use tandem_core::time_util::parse_iso8601_ms;
use tandem_core::{ErrorCode, EventType};

/// Which endpoint was called: one event of a type fixed by the URL, or `/v1/batch` (`/v1/import`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Single(EventType),
    Batch,
}

/// A problem with the request as a whole: nothing in it is stored. Answered as a 4xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    /// A request error with its code and a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RequestError {
        RequestError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for RequestError {}

/// One event refused, the others of its batch unaffected. Reported in the 400 answer's details
/// as `{"index", "messageId", "code", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub code: &'static str,
    pub message: String,
}

/// Rejection codes, one per rule (the `code` of a [`Rejection`]; part of the public API).
pub mod codes {
    /// The event's own JSON is larger than `EVENT_BYTES_MAX`.
    pub const EVENT_TOO_LARGE: &str = "event_too_large";
    /// A batch element that is not a JSON object.
    pub const INVALID_EVENT: &str = "invalid_event";
    /// `type` missing or not one of the six calls.
    pub const INVALID_TYPE: &str = "invalid_type";
    /// Neither `userId` nor `anonymousId` (alias: no `userId`).
    pub const MISSING_IDENTITY: &str = "missing_identity";
    /// A track call without a non-empty `event`.
    pub const MISSING_EVENT: &str = "missing_event";
    /// A group call without `groupId`.
    pub const MISSING_GROUP_ID: &str = "missing_group_id";
    /// An alias call without `previousId`.
    pub const MISSING_PREVIOUS_ID: &str = "missing_previous_id";
    /// `messageId` not a string, or longer than `MESSAGE_ID_CHARS_MAX` characters.
    pub const INVALID_MESSAGE_ID: &str = "invalid_message_id";
    /// `timestamp`, `originalTimestamp` or `sentAt` not an ISO-8601 date-time string.
    pub const INVALID_TIMESTAMP: &str = "invalid_timestamp";
    /// `properties`, `traits`, `context` or `integrations` not an object, or an id of the wrong kind.
    pub const INVALID_FIELD: &str = "invalid_field";
    /// Every code, for documentation and tests.
    pub const ALL: [&str; 10] = [
        EVENT_TOO_LARGE,
        INVALID_EVENT,
        INVALID_TYPE,
        MISSING_IDENTITY,
        MISSING_EVENT,
        MISSING_GROUP_ID,
        MISSING_PREVIOUS_ID,
        INVALID_MESSAGE_ID,
        INVALID_TIMESTAMP,
        INVALID_FIELD,
    ];
}

/// An event that parsed as a JSON object with a known type; validated by [`crate::enrich`].
#[derive(Debug, Clone)]
pub struct RawEvent<'a> {
    pub event_type: EventType,
    pub(crate) fields: RawObject<'a>,
}

/// A parsed request: the write key from the body (if any), the batch-level fields that apply to
/// every event, and each event or the reason it was refused.
#[derive(Debug, Clone)]
pub struct ParsedRequest<'a> {
    /// `writeKey` of the body (of the batch, else of its first event that has one).
    pub write_key: Option<String>,
    pub events: Vec<Result<RawEvent<'a>, Rejection>>,
    /// The batch's `sentAt`, ms since the epoch (`None` for a single call: its event has its own).
    pub sent_at_ms: Option<i64>,
    /// The batch's `sentAt` as sent, stored into events that have none.
    pub batch_sent_at: Option<&'a RawValue>,
    /// The batch's `context` (an object), merged into each event's context.
    pub batch_context: Option<&'a RawValue>,
    /// The batch's `integrations` (an object), stored into events that have none.
    pub batch_integrations: Option<&'a RawValue>,
}

/// Most bytes of a batch's `context` and `integrations` together. Both are copied into every event
/// of the batch, so this bounds the growth of a request in memory: 2500 events × 8 KiB = 20 MiB.
pub const BATCH_SHARED_BYTES_MAX: usize = 8 * 1024;

/// A UTF-8 byte-order mark, which some clients put before the JSON.
const UTF8_BOM: &str = "\u{feff}";

/// Parses a request body (already decoded).
///
/// Request-level problems (nothing is stored): a body over `BATCH_BYTES_MAX` (batch,
/// `body_too_large`) or `EVENT_BYTES_MAX` (single call, `event_too_large`); not UTF-8, not JSON, not
/// an object, nested deeper than `JSON_DEPTH_MAX` or holding a number no f64 can hold
/// (`invalid_json`, with line and column); no `batch` array, or batch-level fields of the wrong
/// shape (`invalid_request`); more than `BATCH_EVENTS_MAX` events (`batch_too_many_events`).
/// A batch element that is not an object, is over `EVENT_BYTES_MAX` or has no known `type` is
/// refused alone. A single call's type is the URL's: a `type` in its body is ignored.
pub fn parse_request(kind: RequestKind, body: &[u8]) -> Result<ParsedRequest<'_>, RequestError> {
    check_body_size(kind, body.len())?;
    let text = std::str::from_utf8(body).map_err(|error| {
        RequestError::new(
            ErrorCode::InvalidJson,
            format!(
                "the body is not UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            ),
        )
    })?;
    let text = text.strip_prefix(UTF8_BOM).unwrap_or(text);
    scan_body(text, JSON_DEPTH_MAX).map_err(|problem| {
        let (line, column) = line_column(text, problem.offset);
        RequestError::new(
            ErrorCode::InvalidJson,
            format!("{} at line {line} column {column}", problem.message),
        )
    })?;
    let top: RawObject = serde_json::from_str(text).map_err(|error| {
        RequestError::new(
            ErrorCode::InvalidJson,
            format!("the body is not a JSON object: {error}"),
        )
    })?;
    match kind {
        RequestKind::Single(event_type) => Ok(parse_single(event_type, top)),
        RequestKind::Batch => parse_batch(top),
    }
}

fn check_body_size(kind: RequestKind, bytes: usize) -> Result<(), RequestError> {
    let (limit, code) = match kind {
        RequestKind::Single(_) => (EVENT_BYTES_MAX, ErrorCode::EventTooLarge),
        RequestKind::Batch => (BATCH_BYTES_MAX, ErrorCode::BodyTooLarge),
    };
    if bytes > limit {
        return Err(RequestError::new(
            code,
            format!("the body has {bytes} bytes; the limit is {limit}"),
        ));
    }
    Ok(())
}

fn parse_single(event_type: EventType, fields: RawObject<'_>) -> ParsedRequest<'_> {
    let write_key = fields.get("writeKey").and_then(as_str).map(Cow::into_owned);
    let event = RawEvent { event_type, fields };
    ParsedRequest {
        write_key,
        events: vec![Ok(event)],
        sent_at_ms: None,
        batch_sent_at: None,
        batch_context: None,
        batch_integrations: None,
    }
}

fn parse_batch(top: RawObject<'_>) -> Result<ParsedRequest<'_>, RequestError> {
    let batch = top.get("batch").ok_or_else(|| {
        RequestError::new(ErrorCode::InvalidRequest, "the body has no `batch` array")
    })?;
    if kind(batch) != Kind::Array {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            "`batch` must be an array of events",
        ));
    }
    let items: Vec<&RawValue> = serde_json::from_str(batch.get()).map_err(|error| {
        RequestError::new(
            ErrorCode::InvalidRequest,
            format!("`batch` must be an array of events: {error}"),
        )
    })?;
    if items.len() > BATCH_EVENTS_MAX {
        return Err(RequestError::new(
            ErrorCode::BatchTooManyEvents,
            format!(
                "the batch has {} events; the limit is {BATCH_EVENTS_MAX}",
                items.len()
            ),
        ));
    }
    let (batch_context, batch_integrations) = (
        batch_object(&top, "context")?,
        batch_object(&top, "integrations")?,
    );
    let shared_bytes = batch_context.map_or(0, |raw| raw.get().len())
        + batch_integrations.map_or(0, |raw| raw.get().len());
    if shared_bytes > BATCH_SHARED_BYTES_MAX {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!("the batch's `context` and `integrations` have {shared_bytes} bytes; they are copied into every event, so the limit is {BATCH_SHARED_BYTES_MAX}"),
        ));
    }
    let batch_sent_at = top.get_present("sentAt");
    let sent_at_ms = match batch_sent_at {
        None => None,
        Some(raw) => Some(
            as_str(raw)
                .as_deref()
                .and_then(parse_iso8601_ms)
                .ok_or_else(|| {
                    RequestError::new(
                        ErrorCode::InvalidRequest,
                        "the batch's `sentAt` must be an ISO-8601 date-time string",
                    )
                })?,
        ),
    };
    let events: Vec<_> = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| parse_batch_item(index, item))
        .collect();
    let write_key = top
        .get("writeKey")
        .and_then(as_str)
        .map(Cow::into_owned)
        .or_else(|| first_event_write_key(&events));
    Ok(ParsedRequest {
        write_key,
        events,
        sent_at_ms,
        batch_sent_at,
        batch_context,
        batch_integrations,
    })
}

/// A batch-level member that must be an object when present (`null` counts as absent).
fn batch_object<'a>(top: &RawObject<'a>, name: &str) -> Result<Option<&'a RawValue>, RequestError> {
    match top.get_present(name) {
        Some(raw) if kind(raw) != Kind::Object => Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!("the batch's `{name}` must be an object"),
        )),
        present => Ok(present),
    }
}

fn first_event_write_key(events: &[Result<RawEvent<'_>, Rejection>]) -> Option<String> {
    events.iter().flatten().find_map(|event| {
        event
            .fields
            .get("writeKey")
            .and_then(as_str)
            .map(Cow::into_owned)
    })
}

fn parse_batch_item(index: usize, item: &RawValue) -> Result<RawEvent<'_>, Rejection> {
    let reject = |message_id, code, message: String| Rejection {
        index,
        message_id,
        code,
        message,
    };
    let Some(fields) = RawObject::parse(item) else {
        return Err(reject(
            None,
            codes::INVALID_EVENT,
            "the event is not a JSON object".into(),
        ));
    };
    let message_id = fields
        .get("messageId")
        .and_then(as_str)
        .map(|id| id.chars().take(MESSAGE_ID_CHARS_MAX).collect());
    if item.get().len() > EVENT_BYTES_MAX {
        return Err(reject(
            message_id,
            codes::EVENT_TOO_LARGE,
            format!(
                "the event has {} bytes; the limit is {EVENT_BYTES_MAX}",
                item.get().len()
            ),
        ));
    }
    let type_name = fields.get("type").and_then(as_str);
    match type_name.as_deref().and_then(EventType::parse) {
        Some(event_type) => Ok(RawEvent { event_type, fields }),
        None => {
            let found = type_name.map_or("no `type`".to_string(), |name| {
                format!("`type` {:?}", name.chars().take(64).collect::<String>())
            });
            Err(reject(
                message_id,
                codes::INVALID_TYPE,
                format!("{found}: expected track, identify, page, screen, group or alias"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(body: &str) -> ParsedRequest<'_> {
        parse_request(RequestKind::Batch, body.as_bytes()).unwrap()
    }

    #[test]
    fn a_single_call_takes_its_type_from_the_url() {
        let parsed = parse_request(
            RequestKind::Single(EventType::Track),
            br#"{"type":"identify","event":"E","writeKey":"k"}"#,
        )
        .unwrap();
        assert_eq!(parsed.write_key.as_deref(), Some("k"));
        assert_eq!(
            parsed.events[0].as_ref().unwrap().event_type,
            EventType::Track
        );
    }

    #[test]
    fn request_level_problems_are_named() {
        let code = |kind, body: &[u8]| parse_request(kind, body).unwrap_err().code;
        assert_eq!(
            code(RequestKind::Batch, b"{not json"),
            ErrorCode::InvalidJson
        );
        assert_eq!(code(RequestKind::Batch, b"[1,2]"), ErrorCode::InvalidJson);
        assert_eq!(code(RequestKind::Batch, b"{}"), ErrorCode::InvalidRequest);
        assert_eq!(
            code(RequestKind::Batch, br#"{"batch":{}}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(RequestKind::Batch, b"{\"a\":\"\xff\"}"),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            code(RequestKind::Batch, br#"{"batch":[],"context":[1]}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(RequestKind::Batch, br#"{"batch":[],"integrations":"x"}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(RequestKind::Batch, br#"{"batch":[],"sentAt":"soon"}"#),
            ErrorCode::InvalidRequest
        );
        let shared = format!(
            r#"{{"batch":[],"context":{{"p":"{}"}}}}"#,
            "x".repeat(BATCH_SHARED_BYTES_MAX)
        );
        assert_eq!(
            code(RequestKind::Batch, shared.as_bytes()),
            ErrorCode::InvalidRequest
        );
        let big = format!(
            r#"{{"userId":"u","event":"E","properties":{{"p":"{}"}}}}"#,
            "x".repeat(EVENT_BYTES_MAX)
        );
        assert_eq!(
            code(RequestKind::Single(EventType::Track), big.as_bytes()),
            ErrorCode::EventTooLarge
        );
        let too_many = format!(
            r#"{{"batch":[{}]}}"#,
            vec!["{}"; BATCH_EVENTS_MAX + 1].join(",")
        );
        assert_eq!(
            code(RequestKind::Batch, too_many.as_bytes()),
            ErrorCode::BatchTooManyEvents
        );
        assert_eq!(
            code(RequestKind::Batch, &vec![b' '; BATCH_BYTES_MAX + 1]),
            ErrorCode::BodyTooLarge
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let deep_batch = format!(
            r#"{{"batch":[{{"type":"track","properties":{{"p":{}}}}},{{"type":"track"}}]}}"#,
            nested(10_000)
        );
        let error = parse_request(RequestKind::Batch, deep_batch.as_bytes()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidJson);
        assert!(error.message.contains("line 1 column"), "{}", error.message);
        let deep_single = format!(r#"{{"properties":{{"p":{}}}}}"#, nested(5_000));
        assert_eq!(
            parse_request(
                RequestKind::Single(EventType::Track),
                deep_single.as_bytes()
            )
            .unwrap_err()
            .code,
            ErrorCode::InvalidJson
        );
        let far_too_deep = format!("{{\"batch\":{}}}", nested(100_000));
        assert_eq!(
            parse_request(RequestKind::Batch, far_too_deep.as_bytes())
                .unwrap_err()
                .code,
            ErrorCode::InvalidJson
        );
        let unclosed = "[".repeat(BATCH_BYTES_MAX);
        assert_eq!(
            parse_request(RequestKind::Batch, unclosed.as_bytes())
                .unwrap_err()
                .code,
            ErrorCode::InvalidJson
        );
    }

    #[test]
    fn the_deepest_accepted_event_still_parses_as_a_value_tree() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let deepest = format!(
            r#"{{"batch":[{{"type":"track","p":{}}}]}}"#,
            nested(JSON_DEPTH_MAX - 3)
        );
        let parsed = batch(&deepest);
        let event = parsed.events[0].as_ref().unwrap();
        let text = format!("{{\"p\":{}}}", event.fields.get("p").unwrap().get());
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
        let one_more = format!(
            r#"{{"batch":[{{"type":"track","p":{}}}]}}"#,
            nested(JSON_DEPTH_MAX - 2)
        );
        assert_eq!(
            parse_request(RequestKind::Batch, one_more.as_bytes())
                .unwrap_err()
                .code,
            ErrorCode::InvalidJson
        );
    }

    #[test]
    fn huge_numbers_are_kept_as_text_or_refused_by_position() {
        let parsed = batch(
            r#"{"batch":[{"type":"track","properties":{"n":123456789012345678901234567890}}]}"#,
        );
        let properties = parsed.events[0]
            .as_ref()
            .unwrap()
            .fields
            .get("properties")
            .unwrap();
        assert_eq!(properties.get(), r#"{"n":123456789012345678901234567890}"#);
        let error =
            parse_request(RequestKind::Batch, b"{\"batch\":[\n{\"n\":1e999999}]}").unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidJson);
        assert!(
            error.message.contains("line 2 column 6"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_the_write_key_can_come_from_an_event() {
        let parsed = parse_request(
            RequestKind::Batch,
            "\u{feff}{\"batch\":[{\"type\":\"track\",\"writeKey\":\"wk\"}]}".as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed.write_key.as_deref(), Some("wk"));
        let parsed = batch(r#"{"writeKey":"top","batch":[{"type":"track","writeKey":"wk"}]}"#);
        assert_eq!(parsed.write_key.as_deref(), Some("top"));
    }

    #[test]
    fn bad_batch_items_are_rejected_alone() {
        let parsed = batch(
            r#"{"batch":[{"type":"track","messageId":"a"},{"type":"nonsense","messageId":"b"},7,{"messageId":"d"}],"sentAt":"2024-01-01T00:00:00Z"}"#,
        );
        assert!(parsed.events[0].is_ok());
        let rejection = parsed.events[1].as_ref().unwrap_err();
        assert_eq!(
            (
                rejection.index,
                rejection.code,
                rejection.message_id.as_deref()
            ),
            (1, codes::INVALID_TYPE, Some("b"))
        );
        assert!(rejection.message.contains("nonsense"));
        assert_eq!(
            parsed.events[2].as_ref().unwrap_err().code,
            codes::INVALID_EVENT
        );
        assert_eq!(
            parsed.events[3].as_ref().unwrap_err().code,
            codes::INVALID_TYPE
        );
        assert_eq!(parsed.sent_at_ms, Some(1_704_067_200_000));
    }

    #[test]
    fn an_oversized_event_in_a_batch_is_rejected_alone() {
        let body = format!(
            r#"{{"batch":[{{"type":"track","properties":{{"p":"{}"}}}},{{"type":"track"}}]}}"#,
            "x".repeat(EVENT_BYTES_MAX)
        );
        let parsed = batch(&body);
        assert_eq!(
            parsed.events[0].as_ref().unwrap_err().code,
            codes::EVENT_TOO_LARGE
        );
        assert!(parsed.events[1].is_ok());
    }

    #[test]
    fn rejections_serialize_in_camel_case() {
        let rejection = Rejection {
            index: 3,
            message_id: Some("m".into()),
            code: codes::MISSING_EVENT,
            message: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&rejection).unwrap(),
            r#"{"index":3,"messageId":"m","code":"missing_event","message":"x"}"#
        );
    }
}
