//! Classification, request building, signatures and settings of the webhook (no network here;
//! `tests/webhook.rs` talks to a real HTTP receiver).

use super::config::parse;
use super::request::{batch_key, build_requests, signature};
use super::service::classify_status;
use crate::destination::{OutboundEvent, Outcome};
use serde_json::json;
use std::time::{Duration, SystemTime};
use tandem_core::EventType;

fn event(message_id: &str) -> OutboundEvent {
    OutboundEvent {
        offset: 7,
        message_id: message_id.to_string(),
        event_type: EventType::Track,
        source_id: "web".into(),
        received_at_ms: 0,
        user_key: "u1".into(),
        event: json!({"type": "track", "messageId": message_id}).into(),
    }
}

#[test]
fn status_classes() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(classify_status(200, None, "", now), Outcome::Delivered);
    assert_eq!(classify_status(204, Some("5"), "", now), Outcome::Delivered);
    assert_eq!(
        classify_status(429, Some("5"), "", now),
        Outcome::Retry {
            error: "HTTP 429".into(),
            after: Some(Duration::from_secs(5))
        }
    );
    let date = httpdate::fmt_http_date(now + Duration::from_secs(3));
    assert_eq!(
        classify_status(503, Some(&date), "down", now),
        Outcome::Retry {
            error: "HTTP 503: down".into(),
            after: Some(Duration::from_secs(3))
        }
    );
    assert_eq!(
        classify_status(500, Some("later"), "", now),
        Outcome::Retry {
            error: "HTTP 500".into(),
            after: None
        },
        "an unreadable Retry-After falls back to the backoff"
    );
    assert!(matches!(
        classify_status(408, None, "", now),
        Outcome::Retry { .. }
    ));
    for status in [400, 401, 403, 404, 413, 422, 301] {
        assert!(
            matches!(
                classify_status(status, None, "", now),
                Outcome::Reject { .. }
            ),
            "{status}"
        );
    }
    assert_eq!(
        classify_status(400, None, " {\"error\":\"bad email\"} ", now),
        Outcome::Reject {
            error: "HTTP 400: {\"error\":\"bad email\"}".into()
        }
    );
}

#[test]
fn batched_requests_split_by_count_and_keep_order() {
    let batch: Vec<_> = (0..5).map(|index| event(&format!("m{index}"))).collect();
    let requests = build_requests(&batch, true, 2);
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].events, 0..2);
    assert_eq!(requests[2].events, 4..5);
    let body: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(body["batch"][0]["messageId"], "m2");
    assert_eq!(body["batch"][1]["messageId"], "m3");
    assert_eq!(
        requests[2].idempotency_key, "m4",
        "a lone event's key is its messageId"
    );
    assert_eq!(
        requests[0].idempotency_key,
        batch_key(&batch[0..2]),
        "same batch, same key"
    );
    assert_ne!(requests[0].idempotency_key, requests[1].idempotency_key);
}

#[test]
fn single_requests_send_the_event_itself() {
    let batch = vec![event("a"), event("b")];
    let requests = build_requests(&batch, false, 100);
    assert_eq!(requests.len(), 2);
    let body: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(body, json!({"type": "track", "messageId": "b"}));
    assert_eq!(requests[1].idempotency_key, "b");
}

#[test]
fn signature_is_hmac_sha256_of_timestamp_dot_body() {
    // Computed independently: python3 hmac.new(secret, b'1700000000.{"a":1}', sha256).
    assert_eq!(
        signature("whsec-0123456789abcdef", 1_700_000_000, br#"{"a":1}"#),
        "v1=d77c78ac4da074c56908b55eac30358b2a7bfc573be4c76819af5102e8dcf939"
    );
}

#[test]
fn settings_problems_are_all_reported() {
    let problems = parse(&json!({
        "url": "ftp://example.com",
        "headers": {"Content-Type": "text/plain", "bad name": "x"},
        "signing_secret": "short",
        "auth": {"type": "bearer", "token": ""},
        "timeout_ms": 0
    }))
    .unwrap_err();
    let fields: Vec<&str> = problems
        .iter()
        .map(|problem| problem.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "url",
            "headers.Content-Type",
            "headers.bad name",
            "signing_secret",
            "auth.token",
            "timeout_ms"
        ]
    );
    let unknown = parse(&json!({"url": "http://x", "verb": "PUT"})).unwrap_err();
    assert!(
        unknown[0].message.contains("unknown field `verb`"),
        "{unknown:?}"
    );
    let good = parse(&json!({"url": "http://127.0.0.1:9000/hook", "auth": {"type": "basic", "username": "u", "password": "p"}})).unwrap();
    assert!(good.batch, "batching is the default");
}
