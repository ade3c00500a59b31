//! Validation and enrichment by the Segment spec, through the public API.

use serde_json::{json, Value};
use std::net::IpAddr;
use tandem_collect::*;
use tandem_core::time_util::parse_iso8601_ms;
use tandem_core::EventType;

const RECEIVED_AT_MS: i64 = 1_700_000_100_000; // 2023-11-14T22:15:00Z
const PEER: &str = "10.1.2.3";

fn run(kind: RequestKind, body: Value) -> Vec<Result<Value, Rejection>> {
    run_text(kind, &body.to_string())
}

fn run_text(kind: RequestKind, body: &str) -> Vec<Result<Value, Rejection>> {
    let bytes = body.as_bytes();
    let parsed = parse_request(kind, bytes).unwrap();
    let ip: IpAddr = PEER.parse().unwrap();
    let context = EnrichContext::new("web", RECEIVED_AT_MS, Some(ip), &parsed);
    parsed
        .events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            event
                .clone()
                .and_then(|event| enrich(index, &event, &context))
                .map(|enriched| {
                    let text = String::from_utf8(enriched.json).unwrap();
                    assert!(
                        !text.contains("big") || text.contains("123456789012345678901234567890"),
                        "numbers are copied byte for byte"
                    );
                    serde_json::from_str(&text.replace("123456789012345678901234567890", "0"))
                        .unwrap()
                })
        })
        .collect()
}

fn single(event_type: EventType, body: Value) -> Result<Value, Rejection> {
    run(RequestKind::Single(event_type), body).remove(0)
}

#[test]
fn every_call_type_is_accepted_with_its_required_fields() {
    let cases = [
        (
            EventType::Track,
            json!({"userId": "u", "event": "Signed Up", "properties": {"plan": "pro"}}),
        ),
        (
            EventType::Identify,
            json!({"anonymousId": "a", "traits": {"email": "x@y.z"}}),
        ),
        (EventType::Page, json!({"userId": "u", "name": "Home"})),
        (EventType::Screen, json!({"userId": "u", "name": "Home"})),
        (EventType::Group, json!({"userId": "u", "groupId": "g"})),
        (EventType::Alias, json!({"userId": "u", "previousId": "a"})),
    ];
    for (event_type, body) in cases {
        let stored = single(event_type, body).unwrap();
        assert_eq!(stored["type"], event_type.as_str());
    }
}

#[test]
fn missing_required_fields_are_rejected_with_their_code() {
    let code = |event_type, body| single(event_type, body).unwrap_err().code;
    assert_eq!(
        code(EventType::Track, json!({"event": "E"})),
        "missing_identity"
    );
    assert_eq!(
        code(
            EventType::Track,
            json!({"userId": "", "anonymousId": null, "event": "E"})
        ),
        "missing_identity"
    );
    assert_eq!(
        code(EventType::Track, json!({"userId": "u"})),
        "missing_event"
    );
    assert_eq!(
        code(EventType::Track, json!({"userId": "u", "event": ""})),
        "missing_event"
    );
    assert_eq!(
        code(EventType::Group, json!({"userId": "u"})),
        "missing_group_id"
    );
    assert_eq!(
        code(EventType::Alias, json!({"userId": "u"})),
        "missing_previous_id"
    );
    assert_eq!(
        code(EventType::Track, json!({"userId": {"a": 1}, "event": "E"})),
        "invalid_field"
    );
    assert_eq!(
        code(
            EventType::Track,
            json!({"userId": "u", "event": "E", "properties": [1]})
        ),
        "invalid_field"
    );
    assert_eq!(
        code(
            EventType::Track,
            json!({"userId": "u", "event": "E", "messageId": "m".repeat(101)})
        ),
        "invalid_message_id"
    );
    assert_eq!(
        code(
            EventType::Track,
            json!({"userId": "u", "event": "E", "messageId": 7})
        ),
        "invalid_message_id"
    );
    assert_eq!(
        code(
            EventType::Track,
            json!({"userId": "u", "event": "E", "timestamp": "yesterday"})
        ),
        "invalid_timestamp"
    );
    assert!(single(
        EventType::Track,
        json!({"userId": "u", "event": "E", "messageId": "m".repeat(100)})
    )
    .is_ok());
}

#[test]
fn enrichment_adds_server_fields_and_strips_the_write_key() {
    let body = r#"{"userId": 42, "event": "E", "writeKey": "secret", "properties": {"n": 1.50, "big": 123456789012345678901234567890}}"#;
    let stored = run_text(RequestKind::Single(EventType::Track), body)
        .remove(0)
        .unwrap();
    assert!(stored.get("writeKey").is_none());
    assert_eq!(stored["userId"], "42", "numeric ids are stored as strings");
    assert_eq!(stored["receivedAt"], "2023-11-14T22:15:00.000Z");
    assert_eq!(
        stored["timestamp"], "2023-11-14T22:15:00.000Z",
        "no client time: receivedAt"
    );
    assert_eq!(stored["context"]["ip"], PEER);
    assert_eq!(
        stored["messageId"].as_str().unwrap().len(),
        36,
        "a UUID is assigned"
    );
}

#[test]
fn client_context_ip_wins_and_other_context_is_kept() {
    let stored = single(
        EventType::Page,
        json!({"userId": "u", "context": {"ip": "1.1.1.1", "locale": "de"}}),
    )
    .unwrap();
    assert_eq!(stored["context"], json!({"ip": "1.1.1.1", "locale": "de"}));
    let stored = single(
        EventType::Page,
        json!({"userId": "u", "context": {"library": {"name": "x"}}}),
    )
    .unwrap();
    assert_eq!(
        stored["context"],
        json!({"library": {"name": "x"}, "ip": PEER})
    );
    let stored = single(EventType::Page, json!({"userId": "u", "context": {}})).unwrap();
    assert_eq!(stored["context"], json!({"ip": PEER}));
}

#[test]
fn timestamp_is_corrected_for_client_clock_skew() {
    // The device clock is 1 hour fast: it says it sent at 23:15 what it recorded at 23:14:50.
    let stored = single(EventType::Track, json!({"userId": "u", "event": "E", "originalTimestamp": "2023-11-14T23:14:50Z", "sentAt": "2023-11-14T23:15:00Z"})).unwrap();
    assert_eq!(
        stored["timestamp"], "2023-11-14T22:14:50.000Z",
        "receivedAt - (sentAt - originalTimestamp)"
    );
    assert_eq!(
        stored["originalTimestamp"], "2023-11-14T23:14:50Z",
        "the client's value is kept"
    );
    let set = single(EventType::Track, json!({"userId": "u", "event": "E", "timestamp": "2020-01-01T00:00:00.000+02:00", "sentAt": "2023-11-14T23:15:00Z"})).unwrap();
    assert_eq!(
        set["timestamp"], "2020-01-01T00:00:00.000+02:00",
        "a timestamp the client set is kept"
    );
    let only_original = single(
        EventType::Track,
        json!({"userId": "u", "event": "E", "originalTimestamp": "2023-01-01T00:00:00Z"}),
    )
    .unwrap();
    assert_eq!(
        parse_iso8601_ms(only_original["timestamp"].as_str().unwrap()),
        parse_iso8601_ms("2023-01-01T00:00:00Z")
    );
}

#[test]
fn batch_fields_apply_to_events_that_lack_them() {
    let results = run(
        RequestKind::Batch,
        json!({
            "batch": [
                {"type": "track", "userId": "u", "event": "A", "originalTimestamp": "2023-11-14T23:14:50Z"},
                {"type": "identify", "userId": "u", "context": {"locale": "fr"}, "integrations": {"X": false}},
                {"type": "nonsense", "userId": "u", "messageId": "bad"},
                {"type": "track", "userId": "u"}
            ],
            "sentAt": "2023-11-14T23:15:00Z",
            "context": {"library": {"name": "analytics-python"}},
            "integrations": {"All": true},
            "writeKey": "k"
        }),
    );
    let first = results[0].as_ref().unwrap();
    assert_eq!(
        first["timestamp"], "2023-11-14T22:14:50.000Z",
        "the batch's sentAt corrects the clock"
    );
    assert_eq!(
        first["context"],
        json!({"library": {"name": "analytics-python"}, "ip": PEER})
    );
    assert_eq!(first["integrations"], json!({"All": true}));
    assert_eq!(
        first["sentAt"], "2023-11-14T23:15:00Z",
        "the batch's sentAt is stored with each event"
    );
    let second = results[1].as_ref().unwrap();
    assert_eq!(
        second["context"],
        json!({"locale": "fr", "library": {"name": "analytics-python"}, "ip": PEER}),
        "contexts are merged"
    );
    assert_eq!(second["integrations"], json!({"X": false}));
    let third = results[2].as_ref().unwrap_err();
    assert_eq!(
        (third.index, third.code, third.message_id.as_deref()),
        (2, "invalid_type", Some("bad"))
    );
    assert_eq!(results[3].as_ref().unwrap_err().code, "missing_event");
}

#[test]
fn dedup_keys_depend_on_source_and_message_id() {
    let body = json!({"userId": "u", "event": "E", "messageId": "m-1"}).to_string();
    let parsed = parse_request(RequestKind::Single(EventType::Track), body.as_bytes()).unwrap();
    let event = parsed.events[0].as_ref().unwrap();
    let key = |source| {
        enrich(0, event, &EnrichContext::new(source, 0, None, &parsed))
            .unwrap()
            .dedup_key
    };
    assert_eq!(key("web"), key("web"));
    assert_ne!(key("web"), key("ios"));
    let enriched = enrich(0, event, &EnrichContext::new("web", 0, None, &parsed)).unwrap();
    let envelope_bytes = enriched.envelope_bytes("web");
    let envelope = tandem_core::envelope::EventEnvelope::decode(&envelope_bytes).unwrap();
    assert_eq!(
        (envelope.dedup_key, envelope.source_id, envelope.json),
        (enriched.dedup_key, "web", enriched.json.as_slice())
    );
    assert!(
        serde_json::from_slice::<Value>(&enriched.json)
            .unwrap()
            .get("context")
            .is_none(),
        "no ip known: no context added"
    );
}

#[test]
fn the_event_context_wins_over_the_batch_context_member_by_member() {
    let results = run(
        RequestKind::Batch,
        json!({
            "batch": [
                {"type": "page", "userId": "u", "context": {"locale": "fr", "ip": null}},
                {"type": "page", "userId": "u", "context": {"ip": "9.9.9.9"}}
            ],
            "context": {"locale": "en", "ip": "8.8.8.8"}
        }),
    );
    assert_eq!(
        results[0].as_ref().unwrap()["context"],
        json!({"locale": "fr", "ip": "8.8.8.8"}),
        "the batch's ip beats the peer's"
    );
    assert_eq!(
        results[1].as_ref().unwrap()["context"],
        json!({"ip": "9.9.9.9", "locale": "en"})
    );
}

#[test]
fn a_null_context_ip_is_filled() {
    let stored = single(
        EventType::Page,
        json!({"userId": "u", "context": {"ip": null, "locale": "de"}}),
    )
    .unwrap();
    assert_eq!(stored["context"], json!({"locale": "de", "ip": PEER}));
}

#[test]
fn alias_needs_the_new_user_id() {
    let rejection = single(
        EventType::Alias,
        json!({"anonymousId": "a", "previousId": "p"}),
    )
    .unwrap_err();
    assert_eq!(rejection.code, "missing_identity");
    assert!(
        single(EventType::Alias, json!({"userId": 7, "previousId": 6})).is_ok(),
        "numeric ids are ids"
    );
}

#[test]
fn every_date_member_must_be_a_date() {
    for field in ["timestamp", "originalTimestamp", "sentAt"] {
        for bad in [
            json!("soon"),
            json!(1_700_000_000),
            json!({"at": 1}),
            json!(true),
        ] {
            let mut body = json!({"userId": "u", "event": "E"});
            body[field] = bad.clone();
            assert_eq!(
                single(EventType::Track, body).unwrap_err().code,
                "invalid_timestamp",
                "{field} = {bad}"
            );
        }
        let mut body = json!({"userId": "u", "event": "E"});
        body[field] = Value::Null;
        assert!(
            single(EventType::Track, body).is_ok(),
            "null {field} is absent"
        );
    }
}

#[test]
fn a_client_timestamp_is_also_the_original_timestamp() {
    let stored = single(
        EventType::Identify,
        json!({"userId": "u", "timestamp": "2021-05-06T07:08:09Z"}),
    )
    .unwrap();
    assert_eq!(stored["timestamp"], "2021-05-06T07:08:09Z");
    assert_eq!(stored["originalTimestamp"], "2021-05-06T07:08:09Z");
}

#[test]
fn duplicate_and_escaped_keys_are_read_as_a_json_parser_would() {
    let body = r#"{"user\u0049d": "first", "userId": "second", "event": "E", "type": "identify", "type": "page", "properties": {"a": 1}}"#;
    let stored = run_text(RequestKind::Single(EventType::Track), body)
        .remove(0)
        .unwrap();
    assert_eq!(stored["userId"], "second");
    assert_eq!(stored["type"], "track", "the URL names the type");
    let text = {
        let parsed = parse_request(RequestKind::Single(EventType::Track), body.as_bytes()).unwrap();
        let context = EnrichContext::new("web", RECEIVED_AT_MS, None, &parsed);
        String::from_utf8(
            enrich(0, parsed.events[0].as_ref().unwrap(), &context)
                .unwrap()
                .json,
        )
        .unwrap()
    };
    assert_eq!(text.matches("userId").count(), 1, "{text}");
    assert_eq!(text.matches("\"type\"").count(), 1, "{text}");
}

#[test]
fn untouched_members_are_copied_byte_for_byte() {
    let body = r#"{"userId":"u","event":"E","properties":{ "price" : 1.50, "big": 123456789012345678901234567890, "tiny": 1e-400, "s": "caf\u00e9 \ud83d\ude00" },"name":"x"}"#;
    let parsed = parse_request(RequestKind::Single(EventType::Track), body.as_bytes()).unwrap();
    let context = EnrichContext::new("web", RECEIVED_AT_MS, None, &parsed);
    let enriched = enrich(0, parsed.events[0].as_ref().unwrap(), &context).unwrap();
    let text = String::from_utf8(enriched.json).unwrap();
    assert!(text.contains(r#""properties":{ "price" : 1.50, "big": 123456789012345678901234567890, "tiny": 1e-400, "s": "caf\u00e9 \ud83d\ude00" }"#), "{text}");
    serde_json::from_str::<Value>(&text).unwrap();
}

#[test]
fn the_enriched_fields_match_the_stored_json() {
    let body = json!({"batch": [{"type": "group", "userId": 12, "anonymousId": "a", "groupId": "g", "messageId": "m-9", "originalTimestamp": "2023-11-14T22:14:00Z"}]});
    let text = body.to_string();
    let parsed = parse_request(RequestKind::Batch, text.as_bytes()).unwrap();
    let context = EnrichContext::new("web", RECEIVED_AT_MS, None, &parsed);
    let enriched = enrich(0, parsed.events[0].as_ref().unwrap(), &context).unwrap();
    assert_eq!(enriched.event_type, EventType::Group);
    assert_eq!(enriched.message_id, "m-9");
    assert_eq!(
        enriched.dedup_key,
        tandem_core::envelope::dedup_key("web", "m-9")
    );
    assert_eq!(enriched.user_id.as_deref(), Some("12"));
    assert_eq!(enriched.anonymous_id.as_deref(), Some("a"));
    assert_eq!(
        Some(enriched.event_time_ms),
        parse_iso8601_ms("2023-11-14T22:14:00Z"),
        "no sentAt: originalTimestamp"
    );
    let stored: Value = serde_json::from_slice(&enriched.json).unwrap();
    assert_eq!(
        parse_iso8601_ms(stored["timestamp"].as_str().unwrap()),
        Some(enriched.event_time_ms)
    );
}

#[test]
fn assigned_message_ids_are_distinct() {
    let body = json!({"batch": [{"type": "track", "userId": "u", "event": "E"}, {"type": "track", "userId": "u", "event": "E", "messageId": ""}, {"type": "track", "userId": "u", "event": "E", "messageId": null}]});
    let ids: std::collections::HashSet<String> = run(RequestKind::Batch, body)
        .into_iter()
        .map(|stored| stored.unwrap()["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn every_rejection_code_is_reachable_and_documented() {
    let body = json!({"batch": [
        {"type": "track", "userId": "u", "event": "E", "properties": {"blob": "x".repeat(tandem_core::limits::EVENT_BYTES_MAX)}},
        [1],
        {"type": "nonsense", "userId": "u"},
        {"type": "page"},
        {"type": "track", "userId": "u"},
        {"type": "group", "userId": "u"},
        {"type": "alias", "userId": "u"},
        {"type": "page", "userId": "u", "messageId": {"id": 1}},
        {"type": "page", "userId": "u", "sentAt": "later"},
        {"type": "page", "userId": "u", "traits": "x"}
    ]});
    let mut codes: Vec<&str> = run(RequestKind::Batch, body)
        .into_iter()
        .map(|result| result.unwrap_err().code)
        .collect();
    let mut all = codes::ALL.to_vec();
    codes.sort_unstable();
    all.sort_unstable();
    assert_eq!(codes, all);
}

/// Every event of a batch enriched with `anonymize_ip`: the stored contexts.
fn anonymized_contexts(body: Value, peer: &str) -> Vec<Value> {
    let text = body.to_string();
    let parsed = parse_request(RequestKind::Batch, text.as_bytes()).unwrap();
    let context = EnrichContext::new("web", RECEIVED_AT_MS, Some(peer.parse().unwrap()), &parsed)
        .anonymizing_ip();
    parsed
        .events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let enriched = enrich(index, event.as_ref().unwrap(), &context).unwrap();
            let stored: Value = serde_json::from_slice(&enriched.json).unwrap();
            stored["context"].clone()
        })
        .collect()
}

#[test]
fn anonymize_ip_zeroes_the_peer_and_the_clients_ip() {
    let contexts = anonymized_contexts(
        json!({"batch": [
            {"type": "track", "userId": "u", "event": "E"},
            {"type": "track", "userId": "u", "event": "E", "context": {"ip": "203.0.113.77", "locale": "fr"}},
            {"type": "track", "userId": "u", "event": "E", "context": {"ip": "2001:db8:abcd:12:34:56:78:9a"}},
            {"type": "track", "userId": "u", "event": "E", "context": {"ip": "not an address", "locale": "de"}},
            {"type": "track", "userId": "u", "event": "E", "context": {"ip": null}}
        ]}),
        "198.51.100.23",
    );
    assert_eq!(contexts[0], json!({"ip": "198.51.100.0"}), "the peer's");
    assert_eq!(contexts[1], json!({"locale": "fr", "ip": "203.0.113.0"}));
    assert_eq!(contexts[2], json!({"ip": "2001:db8:abcd::"}));
    assert_eq!(
        contexts[3],
        json!({"locale": "de"}),
        "an ip that is not an address is left out"
    );
    assert_eq!(
        contexts[4],
        json!({"ip": "198.51.100.0"}),
        "a null ip is filled, anonymized"
    );

    let batch_ip = anonymized_contexts(
        json!({"batch": [{"type": "page", "userId": "u"}], "context": {"ip": "192.0.2.99", "locale": "en"}}),
        "10.0.0.1",
    );
    assert_eq!(
        batch_ip[0],
        json!({"locale": "en", "ip": "192.0.2.0"}),
        "the batch's ip"
    );
    for context in anonymized_contexts(
        json!({"batch": [{"type": "page", "userId": "u", "context": {"ip": "192.0.2.99"}}]}),
        "10.0.0.1",
    ) {
        assert!(!context.to_string().contains("192.0.2.99"));
        assert!(!context.to_string().contains("10.0.0.1"));
    }
}
