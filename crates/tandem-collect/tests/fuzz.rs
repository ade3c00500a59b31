//! Property tests: random and mutated requests never panic, and every accepted event is stored
//! as valid JSON carrying the enriched fields and the client's properties unchanged.

use proptest::prelude::*;
use serde_json::{json, Value};
use tandem_collect::*;
use tandem_core::EventType;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn kinds() -> impl Strategy<Value = RequestKind> {
    prop_oneof![
        Just(RequestKind::Batch),
        prop::sample::select(EventType::ALL.to_vec()).prop_map(RequestKind::Single)
    ]
}

/// The raw JSON text of one member of a stored event.
fn member_text(json: &[u8], key: &str) -> String {
    let members: std::collections::HashMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(json).unwrap();
    members[key].get().to_string()
}

/// Runs the whole per-request pipeline; returns the stored JSON text of accepted events.
fn pipeline_json(kind: RequestKind, encoding: Option<&str>, body: &[u8]) -> Vec<Vec<u8>> {
    let Ok(decoded) = decode_body(encoding, body) else {
        return Vec::new();
    };
    let Ok(parsed) = parse_request(kind, &decoded) else {
        return Vec::new();
    };
    let context = EnrichContext::new(
        "src",
        1_700_000_000_000,
        Some("127.0.0.1".parse().unwrap()),
        &parsed,
    );
    let accepted = parsed
        .events
        .iter()
        .enumerate()
        .filter_map(|(index, event)| {
            event
                .clone()
                .and_then(|event| enrich(index, &event, &context))
                .ok()
        });
    accepted.map(|enriched| enriched.json).collect()
}

/// Runs the whole per-request pipeline; returns the stored JSON of accepted events.
fn pipeline(kind: RequestKind, encoding: Option<&str>, body: &[u8]) -> Vec<Value> {
    let Ok(decoded) = decode_body(encoding, body) else {
        return Vec::new();
    };
    let Ok(parsed) = parse_request(kind, &decoded) else {
        return Vec::new();
    };
    let context = EnrichContext::new(
        "src",
        1_700_000_000_000,
        Some("127.0.0.1".parse().unwrap()),
        &parsed,
    );
    let mut stored = Vec::new();
    for (index, event) in parsed.events.iter().enumerate() {
        if let Ok(enriched) = event
            .clone()
            .and_then(|event| enrich(index, &event, &context))
        {
            let value: Value =
                serde_json::from_slice(&enriched.json).expect("stored JSON is valid");
            for field in ["messageId", "type", "receivedAt", "timestamp"] {
                assert!(value.get(field).is_some(), "{field} missing in {value}");
            }
            assert!(value.get("writeKey").is_none());
            stored.push(value);
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

/// Any JSON value a client could send as a property (finite numbers: JSON has no others).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |float| float.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        "[\"\\\\/\u{0}-\u{1f}\u{7f}-\u{a0}\u{2028}\u{d7ff}\u{e000}\u{10ffff}]{0,6}"
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// Copies `len` bytes from one place over another.
    Splice {
        from: usize,
        to: usize,
        len: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            prop::sample::select(vec![
                b"{".to_vec(),
                b"[".to_vec(),
                b"\"".to_vec(),
                b"\\u0000".to_vec(),
                vec![0xff, 0xfe],
                b"1e999999".to_vec(),
                b"null".to_vec(),
                b",".to_vec()
            ])
        )
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                b"[".repeat(200),
                b"{\"a\":".repeat(150),
                b"9".repeat(400)
            ])
        )
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), any::<usize>(), 0usize..64).prop_map(|(from, to, len)| Mutation::Splice {
            from,
            to,
            len
        }),
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
            Mutation::Splice { from, to, len } => {
                let from = from % bytes.len();
                let piece: Vec<u8> = bytes[from..(from + len).min(bytes.len())].to_vec();
                let to = to % bytes.len();
                let end = (to + piece.len()).min(bytes.len());
                bytes.splice(to..end, piece);
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
        let body = mutate(json!({"batch": events, "context": {"app": "x"}, "sentAt": "2023-11-14T22:15:00Z"}).to_string().into_bytes(), &mutations);
        pipeline(kind, None, &body);
        pipeline(kind, Some("gzip"), &gzip(&body));
        let single = mutate(events[0].to_string().into_bytes(), &mutations);
        pipeline(kind, None, &single);
    }

    #[test]
    fn mutated_gzip_streams_never_panic(events in prop::collection::vec(valid_event(), 1..5), mutations in prop::collection::vec(mutation(), 1..4)) {
        let compressed = mutate(gzip(json!({"batch": events}).to_string().as_bytes()), &mutations);
        pipeline(RequestKind::Batch, Some("gzip"), &compressed);
    }

    #[test]
    fn any_properties_are_stored_unchanged(properties in prop::collection::vec(json_value(), 1..6), single_call in any::<bool>()) {
        let events: Vec<Value> = properties.iter().enumerate()
            .map(|(index, value)| json!({"type": "track", "userId": "u", "event": "E", "properties": {"p": value}, "traits": value, "messageId": format!("m{index}")}))
            .collect();
        let (kind, body) = if single_call {
            (RequestKind::Single(EventType::Track), events[0].to_string())
        } else {
            (RequestKind::Batch, json!({"batch": events}).to_string())
        };
        let stored = pipeline_json(kind, None, body.as_bytes());
        let expected = if single_call { &events[..1] } else { &events[..] };
        // Compared as text: the bytes are copied, and f64 text does not always survive a parse.
        let kept: Vec<String> = stored.iter().map(|json| member_text(json, "properties")).collect();
        let sent: Vec<String> = expected.iter().filter(|event| event["traits"].is_object() || event["traits"].is_null()).map(|event| event["properties"].to_string()).collect();
        prop_assert_eq!(kept, sent, "events whose traits are objects (or null) are kept with their properties unchanged");
    }

    #[test]
    fn large_batches_of_small_events_are_parsed_or_refused_whole(count in 2400usize..2600, mutations in prop::collection::vec(mutation(), 0..3)) {
        let body = mutate(json!({"batch": vec![json!({"type": "page", "anonymousId": "a"}); count]}).to_string().into_bytes(), &mutations);
        match parse_request(RequestKind::Batch, &body) {
            Ok(parsed) => prop_assert!(parsed.events.len() <= tandem_core::limits::BATCH_EVENTS_MAX),
            Err(error) => prop_assert!(!error.message.is_empty()),
        }
    }
}

#[test]
fn ten_thousand_element_batches_are_refused_whole() {
    let body =
        json!({"batch": vec![json!({"type": "track", "userId": "u", "event": "E"}); 10_000]})
            .to_string();
    let error = parse_request(RequestKind::Batch, body.as_bytes())
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(
        error.code,
        tandem_core::ErrorCode::BodyTooLarge | tandem_core::ErrorCode::BatchTooManyEvents
    ));
    let small = json!({"batch": vec![json!(1); 10_000]}).to_string();
    assert_eq!(
        parse_request(RequestKind::Batch, small.as_bytes())
            .map(|_| ())
            .unwrap_err()
            .code,
        tandem_core::ErrorCode::BatchTooManyEvents
    );
}

#[test]
fn wrong_types_everywhere_are_rejected_not_crashed() {
    for value in [
        json!(null),
        json!(1),
        json!("s"),
        json!([1]),
        json!({"x": 1}),
        json!(true),
        json!(1e300),
    ] {
        for field in [
            "userId",
            "anonymousId",
            "event",
            "groupId",
            "previousId",
            "messageId",
            "timestamp",
            "sentAt",
            "originalTimestamp",
            "properties",
            "traits",
            "context",
            "integrations",
            "type",
        ] {
            let mut event = json!({"type": "track", "userId": "u", "event": "E", "groupId": "g", "previousId": "p"});
            event[field] = value.clone();
            pipeline(
                RequestKind::Batch,
                None,
                json!({"batch": [event.clone()], "sentAt": value, "context": value})
                    .to_string()
                    .as_bytes(),
            );
            pipeline(
                RequestKind::Single(EventType::Group),
                None,
                event.to_string().as_bytes(),
            );
        }
    }
}
