//! Property tests: random and mutated requests never panic, and every accepted event is stored
//! as valid JSON carrying the enriched fields and the client's properties unchanged.

use proptest::prelude::*;
use serde_json::{json, Value};
use tandem_collect::*;
use tandem_core::EventType;

fn kinds() -> impl Strategy<Value = RequestKind> {
    prop_oneof![Just(RequestKind::Batch), prop::sample::select(EventType::ALL.to_vec()).prop_map(RequestKind::Single)]
}

/// Runs the whole per-request pipeline; returns the stored JSON of accepted events.
fn pipeline(kind: RequestKind, encoding: Option<&str>, body: &[u8]) -> Vec<Value> {
    let Ok(decoded) = decode_body(encoding, body) else { return Vec::new() };
    let Ok(parsed) = parse_request(kind, &decoded) else { return Vec::new() };
    let context = EnrichContext::new("src", 1_700_000_000_000, Some("127.0.0.1".parse().unwrap()), &parsed);
    let mut stored = Vec::new();
    for (index, event) in parsed.events.iter().enumerate() {
        if let Ok(enriched) = event.clone().and_then(|event| enrich(index, &event, &context)) {
            // Lexically valid JSON (huge numbers such as 1e999999 are kept verbatim, as sent).
            let members: std::collections::HashMap<String, &serde_json::value::RawValue> = serde_json::from_slice(&enriched.json).expect("stored JSON is valid");
            for field in ["messageId", "type", "receivedAt", "timestamp"] {
                assert!(members.contains_key(field), "{field} missing");
            }
            assert!(!members.contains_key("writeKey"));
            if let Ok(value) = serde_json::from_slice::<Value>(&enriched.json) {
                stored.push(value);
            }
        }
    }
    stored
}

fn valid_event() -> impl Strategy<Value = Value> {
    (prop::sample::select(vec!["track", "identify", "page", "screen", "group", "alias"]), "[a-z]{1,8}", any::<i64>(), any::<i32>().prop_map(|n| n as f64 / 8.0), "\\PC{0,20}").prop_map(|(kind, id, int, float, text)| {
        json!({"type": kind, "userId": id, "event": "E", "groupId": "g", "previousId": "p", "messageId": format!("{id}-{int}"),
               "properties": {"int": int, "float": if float.is_finite() { json!(float) } else { json!(null) }, "text": text, "nested": {"a": [1, {"b": text}]}},
               "context": {"library": {"name": "fuzz"}}})
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::sample::select(vec![b"{".to_vec(), b"[".to_vec(), b"\"".to_vec(), b"\\u0000".to_vec(), vec![0xff, 0xfe], b"1e999999".to_vec(), b"null".to_vec(), b",".to_vec()]))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        if bytes.is_empty() {
            break;
        }
        match mutation {
            Mutation::Flip(at, bits) => {
                let at = at % bytes.len();
                bytes[at] ^= bits;
            }
            Mutation::Truncate(at) => bytes.truncate(at % bytes.len()),
            Mutation::Insert(at, insert) => {
                let at = at % bytes.len();
                bytes.splice(at..at, insert.iter().copied());
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(kind in kinds(), body in prop::collection::vec(any::<u8>(), 0..2000), gzip in any::<bool>()) {
        pipeline(kind, gzip.then_some("gzip"), &body);
    }

    #[test]
    fn valid_batches_keep_every_property(events in prop::collection::vec(valid_event(), 1..20)) {
        let body = json!({"batch": events}).to_string();
        let stored = pipeline(RequestKind::Batch, None, body.as_bytes());
        prop_assert_eq!(stored.len(), events.len());
        for (sent, kept) in events.iter().zip(&stored) {
            prop_assert_eq!(&sent["properties"], &kept["properties"]);
            prop_assert_eq!(&sent["messageId"], &kept["messageId"]);
            prop_assert_eq!(&kept["context"]["ip"], "127.0.0.1");
        }
    }

    #[test]
    fn mutated_batches_never_panic(events in prop::collection::vec(valid_event(), 1..10), mutations in prop::collection::vec(mutation(), 1..6), kind in kinds()) {
        let body = mutate(json!({"batch": events}).to_string().into_bytes(), &mutations);
        pipeline(kind, None, &body);
        let single = mutate(events[0].to_string().into_bytes(), &mutations);
        pipeline(kind, None, &single);
    }
}

#[test]
fn ten_thousand_element_batches_are_refused_whole() {
    let body = json!({"batch": vec![json!({"type": "track", "userId": "u", "event": "E"}); 10_000]}).to_string();
    let error = parse_request(RequestKind::Batch, body.as_bytes()).map(|_| ()).unwrap_err();
    assert!(matches!(error.code, tandem_core::ErrorCode::BodyTooLarge | tandem_core::ErrorCode::BatchTooManyEvents));
    let small = json!({"batch": vec![json!(1); 10_000]}).to_string();
    assert_eq!(parse_request(RequestKind::Batch, small.as_bytes()).map(|_| ()).unwrap_err().code, tandem_core::ErrorCode::BatchTooManyEvents);
}

#[test]
fn wrong_types_everywhere_are_rejected_not_crashed() {
    for value in [json!(null), json!(1), json!("s"), json!([1]), json!({"x": 1}), json!(true), json!(1e300)] {
        for field in ["userId", "anonymousId", "event", "groupId", "previousId", "messageId", "timestamp", "sentAt", "originalTimestamp", "properties", "traits", "context", "integrations", "type"] {
            let mut event = json!({"type": "track", "userId": "u", "event": "E", "groupId": "g", "previousId": "p"});
            event[field] = value.clone();
            pipeline(RequestKind::Batch, None, json!({"batch": [event.clone()], "sentAt": value, "context": value}).to_string().as_bytes());
            pipeline(RequestKind::Single(EventType::Group), None, event.to_string().as_bytes());
        }
    }
}
