//! Parsing a tracking call: the request as a whole, then each event on its own.

use crate::raw::{as_str, nesting_depth, RawObject};
use serde::Serialize;
use serde_json::value::RawValue;
use tandem_core::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX, EVENT_BYTES_MAX, JSON_DEPTH_MAX, MESSAGE_ID_CHARS_MAX};
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
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RequestError {
        RequestError { code, message: message.into() }
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

/// Rejection codes, one per rule.
pub mod codes {
    pub const EVENT_TOO_LARGE: &str = "event_too_large";
    pub const INVALID_EVENT: &str = "invalid_event";
    pub const INVALID_TYPE: &str = "invalid_type";
    pub const MISSING_IDENTITY: &str = "missing_identity";
    pub const MISSING_EVENT: &str = "missing_event";
    pub const MISSING_GROUP_ID: &str = "missing_group_id";
    pub const MISSING_PREVIOUS_ID: &str = "missing_previous_id";
    pub const INVALID_MESSAGE_ID: &str = "invalid_message_id";
    pub const INVALID_TIMESTAMP: &str = "invalid_timestamp";
    pub const INVALID_FIELD: &str = "invalid_field";
}

/// An event that parsed as a JSON object with a known type; not yet validated.
#[derive(Debug, Clone)]
pub struct RawEvent<'a> {
    pub event_type: EventType,
    pub fields: RawObject<'a>,
}

/// A parsed request: the write key from the body (if any), the batch-level fields that apply to
/// every event, and each event or the reason it was refused.
#[derive(Debug, Clone)]
pub struct ParsedRequest<'a> {
    pub write_key: Option<String>,
    pub events: Vec<Result<RawEvent<'a>, Rejection>>,
    pub sent_at: Option<&'a RawValue>,
    pub context: Option<&'a RawValue>,
    pub integrations: Option<&'a RawValue>,
}

/// Parses a request body (already decoded). See the crate docs for the limits applied.
pub fn parse_request(kind: RequestKind, body: &[u8]) -> Result<ParsedRequest<'_>, RequestError> {
    let limit = match kind {
        RequestKind::Single(_) => EVENT_BYTES_MAX,
        RequestKind::Batch => BATCH_BYTES_MAX,
    };
    if body.len() > limit {
        let code = if matches!(kind, RequestKind::Single(_)) { ErrorCode::EventTooLarge } else { ErrorCode::BodyTooLarge };
        return Err(RequestError::new(code, format!("the body has {} bytes; the limit is {limit}", body.len())));
    }
    let text = std::str::from_utf8(body)
        .map_err(|error| RequestError::new(ErrorCode::InvalidEncoding, format!("the body is not UTF-8 (invalid byte at position {})", error.valid_up_to())))?;
    if matches!(kind, RequestKind::Single(_)) && nesting_depth(text) > JSON_DEPTH_MAX {
        return Err(RequestError::new(ErrorCode::InvalidJson, format!("the event is nested deeper than {JSON_DEPTH_MAX} levels")));
    }
    let top: RawObject = serde_json::from_str(text).map_err(|error| RequestError::new(ErrorCode::InvalidJson, format!("the body is not a JSON object: {error}")))?;
    let write_key = top.get("writeKey").and_then(as_str).map(|key| key.into_owned());
    match kind {
        RequestKind::Single(event_type) => {
            Ok(ParsedRequest { write_key, events: vec![Ok(RawEvent { event_type, fields: top })], sent_at: None, context: None, integrations: None })
        }
        RequestKind::Batch => {
            let batch = top.get("batch").ok_or_else(|| RequestError::new(ErrorCode::InvalidRequest, "the body has no `batch` array"))?;
            let items: Vec<&RawValue> = serde_json::from_str(batch.get()).map_err(|_| RequestError::new(ErrorCode::InvalidRequest, "`batch` must be an array of events"))?;
            if items.len() > BATCH_EVENTS_MAX {
                return Err(RequestError::new(ErrorCode::BatchTooManyEvents, format!("the batch has {} events; the limit is {BATCH_EVENTS_MAX}", items.len())));
            }
            let events = items.into_iter().enumerate().map(|(index, item)| parse_batch_item(index, item)).collect();
            Ok(ParsedRequest { write_key, events, sent_at: top.get("sentAt"), context: top.get("context"), integrations: top.get("integrations") })
        }
    }
}

fn parse_batch_item(index: usize, item: &RawValue) -> Result<RawEvent<'_>, Rejection> {
    let reject = |message_id, code, message: String| Rejection { index, message_id, code, message };
    let Some(fields) = RawObject::parse(item) else {
        return Err(reject(None, codes::INVALID_EVENT, "the event is not a JSON object".into()));
    };
    let message_id = fields.get("messageId").and_then(as_str).map(|id| id.chars().take(MESSAGE_ID_CHARS_MAX).collect());
    if item.get().len() > EVENT_BYTES_MAX {
        return Err(reject(message_id, codes::EVENT_TOO_LARGE, format!("the event has {} bytes; the limit is {EVENT_BYTES_MAX}", item.get().len())));
    }
    if nesting_depth(item.get()) > JSON_DEPTH_MAX {
        return Err(reject(message_id, codes::INVALID_EVENT, format!("the event is nested deeper than {JSON_DEPTH_MAX} levels")));
    }
    let type_name = fields.get("type").and_then(as_str);
    match type_name.as_deref().and_then(EventType::parse) {
        Some(event_type) => Ok(RawEvent { event_type, fields }),
        None => {
            let found = type_name.map_or("no `type`".to_string(), |name| format!("`type` {name:?}"));
            Err(reject(message_id, codes::INVALID_TYPE, format!("{found}: expected track, identify, page, screen, group or alias")))
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
        let parsed = parse_request(RequestKind::Single(EventType::Track), br#"{"type":"identify","event":"E","writeKey":"k"}"#).unwrap();
        assert_eq!(parsed.write_key.as_deref(), Some("k"));
        assert_eq!(parsed.events[0].as_ref().unwrap().event_type, EventType::Track);
    }

    #[test]
    fn request_level_problems_are_named() {
        let code = |kind, body: &[u8]| parse_request(kind, body).unwrap_err().code;
        assert_eq!(code(RequestKind::Batch, b"{not json"), ErrorCode::InvalidJson);
        assert_eq!(code(RequestKind::Batch, b"[1,2]"), ErrorCode::InvalidJson);
        assert_eq!(code(RequestKind::Batch, b"{}"), ErrorCode::InvalidRequest);
        assert_eq!(code(RequestKind::Batch, br#"{"batch":{}}"#), ErrorCode::InvalidRequest);
        assert_eq!(code(RequestKind::Batch, b"{\"a\":\"\xff\"}"), ErrorCode::InvalidEncoding);
        let big = format!(r#"{{"userId":"u","event":"E","properties":{{"p":"{}"}}}}"#, "x".repeat(EVENT_BYTES_MAX));
        assert_eq!(code(RequestKind::Single(EventType::Track), big.as_bytes()), ErrorCode::EventTooLarge);
        let too_many = format!(r#"{{"batch":[{}]}}"#, vec!["{}"; BATCH_EVENTS_MAX + 1].join(","));
        assert_eq!(code(RequestKind::Batch, too_many.as_bytes()), ErrorCode::BatchTooManyEvents);
        assert_eq!(code(RequestKind::Batch, &vec![b' '; BATCH_BYTES_MAX + 1]), ErrorCode::BodyTooLarge);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let deep_batch = format!(r#"{{"batch":[{{"type":"track","properties":{{"p":{}}}}},{{"type":"track"}}]}}"#, nested(10_000));
        let parsed = batch(&deep_batch);
        assert_eq!(parsed.events[0].as_ref().unwrap_err().code, codes::INVALID_EVENT);
        assert!(parsed.events[1].is_ok());
        let deep_single = format!(r#"{{"properties":{{"p":{}}}}}"#, nested(5_000));
        assert_eq!(parse_request(RequestKind::Single(EventType::Track), deep_single.as_bytes()).unwrap_err().code, ErrorCode::InvalidJson);
        let far_too_deep = format!("{{\"batch\":{}}}", nested(100_000));
        assert_eq!(batch(&far_too_deep).events[0].as_ref().unwrap_err().code, codes::INVALID_EVENT);
    }

    #[test]
    fn bad_batch_items_are_rejected_alone() {
        let parsed = batch(r#"{"batch":[{"type":"track","messageId":"a"},{"type":"nonsense","messageId":"b"},7,{"messageId":"d"}],"sentAt":"2024-01-01T00:00:00Z"}"#);
        assert!(parsed.events[0].is_ok());
        let rejection = parsed.events[1].as_ref().unwrap_err();
        assert_eq!((rejection.index, rejection.code, rejection.message_id.as_deref()), (1, codes::INVALID_TYPE, Some("b")));
        assert!(rejection.message.contains("nonsense"));
        assert_eq!(parsed.events[2].as_ref().unwrap_err().code, codes::INVALID_EVENT);
        assert_eq!(parsed.events[3].as_ref().unwrap_err().code, codes::INVALID_TYPE);
        assert!(parsed.sent_at.is_some());
    }

    #[test]
    fn an_oversized_event_in_a_batch_is_rejected_alone() {
        let body = format!(r#"{{"batch":[{{"type":"track","properties":{{"p":"{}"}}}},{{"type":"track"}}]}}"#, "x".repeat(EVENT_BYTES_MAX));
        let parsed = batch(&body);
        assert_eq!(parsed.events[0].as_ref().unwrap_err().code, codes::EVENT_TOO_LARGE);
        assert!(parsed.events[1].is_ok());
    }

    #[test]
    fn rejections_serialize_in_camel_case() {
        let rejection = Rejection { index: 3, message_id: Some("m".into()), code: codes::MISSING_EVENT, message: "x".into() };
        assert_eq!(serde_json::to_string(&rejection).unwrap(), r#"{"index":3,"messageId":"m","code":"missing_event","message":"x"}"#);
    }
}
