//! Settings, subjects, messages and classification of the NATS destination (no server here;
//! `tests/nats.rs` publishes to a real nats-server).

use super::config::parse;
use super::request::{build_messages, render_subject, stream_subjects, token, SubjectContext};
use super::service::classify_publish;
use crate::destination::{OutboundEvent, Outcome};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use serde_json::json;
use tandem_core::EventType;

fn event(event_type: EventType, body: serde_json::Value) -> OutboundEvent {
    OutboundEvent {
        offset: 3,
        message_id: "m-3".into(),
        event_type,
        source_id: "web.app".into(),
        received_at_ms: 0,
        user_key: "u1".into(),
        event: body.into(),
    }
}

const CONTEXT: SubjectContext<'static> = SubjectContext {
    template: "tandem.{workspace}.{type}.{event}",
    workspace_id: "eu",
    destination_id: "bus",
};

#[test]
fn settings_are_checked() {
    let ok = parse(
        &json!({"servers": ["nats://127.0.0.1:4222"], "stream": "TANDEM", "create_stream": true}),
    )
    .unwrap();
    assert_eq!(ok.subject, "tandem.{workspace}.{type}");
    assert_eq!(ok.ack_timeout_ms, 5_000);
    let problems = parse(&json!({
        "servers": [], "subject": "tandem.*.{nope}", "create_stream": true, "ack_timeout_ms": 0,
        "auth": {"type": "token", "token": ""}
    }))
    .unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "servers",
            "subject",
            "create_stream",
            "ack_timeout_ms",
            "auth.token"
        ],
        "{problems:?}"
    );
    for subject in ["tandem..x", ".x", "x.", "a b", "x.>", "x.*"] {
        let problems =
            parse(&json!({"servers": ["127.0.0.1:4222"], "subject": subject})).unwrap_err();
        assert_eq!(problems[0].field, "subject", "{subject:?}");
    }
    let stream = parse(&json!({"servers": ["127.0.0.1:4222"], "stream": "a.b"})).unwrap_err();
    assert_eq!(stream[0].field, "stream");
    let unknown = parse(&json!({"servers": ["127.0.0.1:4222"], "tls": true})).unwrap_err();
    assert!(unknown[0].message.contains("tls"), "{unknown:?}");
    parse(&json!({"servers": ["127.0.0.1:4222"], "auth": {"type": "user_password", "username": "t", "password": "p"}})).unwrap();
}

#[test]
fn subjects_are_rendered_and_sanitized() {
    let track = event(EventType::Track, json!({"event": "Order Completed.v2 > *"}));
    assert_eq!(
        render_subject(&CONTEXT, &track),
        "tandem.eu.track.Order_Completed_v2____"
    );
    let page = event(EventType::Page, json!({"name": "Home"}));
    assert_eq!(render_subject(&CONTEXT, &page), "tandem.eu.page.Home");
    let identify = event(EventType::Identify, json!({"traits": {}}));
    assert_eq!(
        render_subject(&CONTEXT, &identify),
        "tandem.eu.identify.identify"
    );
    let by_source = SubjectContext {
        template: "cdp.{source}.{destination}",
        ..CONTEXT
    };
    assert_eq!(render_subject(&by_source, &identify), "cdp.web_app.bus");
    assert_eq!(token(""), "_");
    assert_eq!(token(&"é".repeat(100)).len(), 64);
    assert_eq!(stream_subjects("tandem.{workspace}.{type}"), "tandem.*.*");
    assert_eq!(stream_subjects("fixed.x-{event}"), "fixed.*");
}

#[test]
fn messages_carry_the_event_and_its_id() {
    let body = json!({"type": "track", "event": "Signed Up", "messageId": "m-3"});
    let messages = build_messages(&[event(EventType::Track, body.clone())], &CONTEXT);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].message_id, "m-3");
    assert_eq!(messages[0].subject, "tandem.eu.track.Signed_Up");
    let sent: serde_json::Value = serde_json::from_slice(&messages[0].payload).unwrap();
    assert_eq!(sent, body);
}

#[test]
fn publish_failures_are_classified() {
    for kind in [
        PublishErrorKind::TimedOut,
        PublishErrorKind::BrokenPipe,
        PublishErrorKind::StreamNotFound,
        PublishErrorKind::MaxAckPending,
        PublishErrorKind::Other,
    ] {
        let outcome = classify_publish(&PublishError::new(kind));
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    }
    let too_large = classify_publish(&PublishError::new(PublishErrorKind::MaxPayloadExceeded));
    assert!(matches!(too_large, Outcome::Reject { .. }), "{too_large:?}");
}
