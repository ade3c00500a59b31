//! Settings, object naming, encoding, subject matching and classification of the files
//! destination (no disk here; `tests/files.rs` writes to a real directory).

use super::config::{parse, FileFormat};
use super::request::{
    concerns, day_of, decode_parquet, encode_parquet, plan_objects, without_subject, FileRow,
    Rewrite,
};
use super::service::{classify_io, classify_store};
use crate::destination::{OutboundEvent, Outcome};
use serde_json::json;
use std::io::{Error, ErrorKind};
use tandem_core::EventType;

/// 2024-03-05T12:00:00Z
const MARCH_5_NOON_MS: i64 = 1_709_640_000_000;
const DAY_MS: i64 = 86_400_000;

fn event(offset: u64, event_type: EventType, user: &str, received_at_ms: i64) -> OutboundEvent {
    let message_id = format!("m{offset}");
    OutboundEvent {
        offset,
        message_id: message_id.clone(),
        event_type,
        source_id: "web".into(),
        received_at_ms,
        user_key: user.into(),
        event: json!({
            "type": event_type.as_str(),
            "messageId": message_id,
            "userId": user,
            "event": "Order Completed",
            "timestamp": "2024-03-05T11:59:58.500Z",
            "properties": {"total": 12.5}
        })
        .into(),
    }
}

#[test]
fn settings_need_one_place_and_a_clean_prefix() {
    let ok = parse(&json!({"path": "exports", "format": "parquet"})).unwrap();
    assert_eq!(ok.format, FileFormat::Parquet);
    assert_eq!(ok.prefix, "{workspace}");
    let problems = parse(&json!({})).unwrap_err();
    assert!(
        problems[0].message.contains("one of `path`"),
        "{problems:?}"
    );
    let both = parse(&json!({"path": "x", "s3": {"bucket": "events"}})).unwrap_err();
    assert!(both[0].message.contains("both"), "{both:?}");
    for prefix in ["", "/abs", "a//b", "a/../b", "a b", "{team}/x", "x/"] {
        let problems = parse(&json!({"path": "x", "prefix": prefix})).unwrap_err();
        assert_eq!(problems[0].field, "prefix", "{prefix:?}: {problems:?}");
    }
    parse(&json!({"path": "x", "prefix": "lake/env=prod/{workspace}/{destination}"})).unwrap();
    let unknown = parse(&json!({"path": "x", "compression": "zstd"})).unwrap_err();
    assert!(unknown[0].message.contains("compression"), "{unknown:?}");
}

#[test]
fn s3_settings_are_checked_field_by_field() {
    parse(&json!({"s3": {
        "bucket": "tandem-events", "endpoint": "http://127.0.0.1:9000", "allow_http": true,
        "access_key_id": "key", "secret_access_key": "secret", "region": "eu-west-1"
    }}))
    .unwrap();
    let problems = parse(&json!({"s3": {
        "bucket": "No_Such", "endpoint": "http://minio:9000", "access_key_id": "key",
        "session_token": "t"
    }}))
    .unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["s3.bucket", "s3.endpoint", "s3.secret_access_key"],
        "{problems:?}"
    );
}

#[test]
fn objects_are_split_by_type_and_day_and_named_by_content() {
    let batch = vec![
        event(10, EventType::Track, "u1", MARCH_5_NOON_MS),
        event(11, EventType::Identify, "u1", MARCH_5_NOON_MS),
        event(12, EventType::Track, "u2", MARCH_5_NOON_MS + DAY_MS),
        event(13, EventType::Track, "u3", MARCH_5_NOON_MS),
    ];
    let objects = plan_objects(&batch, "ws1", FileFormat::Jsonl).unwrap();
    let names: Vec<&str> = objects.iter().map(|object| object.path.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert!(names[0]
        .starts_with("ws1/identify/dt=2024-03-05/00000000000000000011-00000000000000000011-"));
    assert!(
        names[1].starts_with("ws1/track/dt=2024-03-05/00000000000000000010-00000000000000000013-")
    );
    assert!(
        names[2].starts_with("ws1/track/dt=2024-03-06/00000000000000000012-00000000000000000012-")
    );
    assert!(names.iter().all(|name| name.ends_with(".jsonl")));
    assert_eq!(objects[1].events, vec![0, 3]);
    let lines: Vec<serde_json::Value> = objects[1]
        .body
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![(*batch[0].event).clone(), (*batch[3].event).clone()]
    );

    let again = plan_objects(&batch, "ws1", FileFormat::Jsonl).unwrap();
    assert_eq!(again, objects, "same batch, same objects");
    let mut other = batch.clone();
    other[3].message_id = "another".into();
    let changed = plan_objects(&other, "ws1", FileFormat::Jsonl).unwrap();
    assert_ne!(changed[1].path, objects[1].path, "other events, other name");
    assert_eq!(changed[0].path, objects[0].path);
}

#[test]
fn days_are_utc() {
    assert_eq!(day_of(MARCH_5_NOON_MS), "2024-03-05");
    assert_eq!(day_of(MARCH_5_NOON_MS + 12 * 3_600_000 - 1), "2024-03-05");
    assert_eq!(day_of(MARCH_5_NOON_MS + 12 * 3_600_000), "2024-03-06");
}

#[test]
fn parquet_rows_round_trip() {
    let mut anonymous = event(2, EventType::Page, "", MARCH_5_NOON_MS);
    anonymous.event =
        json!({"type": "page", "anonymousId": "a-9", "name": "Home", "timestamp": "garbage"})
            .into();
    let rows = vec![
        FileRow::of(&event(1, EventType::Track, "u1", MARCH_5_NOON_MS)),
        FileRow::of(&anonymous),
    ];
    assert_eq!(rows[0].event.as_deref(), Some("Order Completed"));
    assert_eq!(rows[0].timestamp_ms, Some(MARCH_5_NOON_MS - 1_500));
    assert_eq!(rows[1].event.as_deref(), Some("Home"));
    assert_eq!(rows[1].user_id, None);
    assert_eq!(rows[1].anonymous_id.as_deref(), Some("a-9"));
    assert_eq!(rows[1].timestamp_ms, None);
    let body = encode_parquet(&rows).unwrap();
    assert_eq!(&body[..4], b"PAR1");
    assert_eq!(decode_parquet(body.into()).unwrap(), rows);
}

#[test]
fn subjects_match_by_id_and_by_trait() {
    let identifiers = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(kind, value)| (kind.to_string(), value.to_string()))
            .collect()
    };
    let identify = json!({"type": "identify", "userId": 42, "anonymousId": "a1",
        "traits": {"email": "ada@example.com"}});
    assert!(concerns(&identify, &identifiers(&[("user_id", "42")])));
    assert!(concerns(&identify, &identifiers(&[("anonymous_id", "a1")])));
    assert!(concerns(
        &identify,
        &identifiers(&[("email", "ada@example.com")])
    ));
    assert!(!concerns(
        &identify,
        &identifiers(&[("email", "bob@example.com"), ("user_id", "4")])
    ));
    let track = json!({"type": "track", "userId": "u9", "context": {"traits": {"phone": "+33"}}});
    assert!(concerns(&track, &identifiers(&[("phone", "+33")])));
    let alias = json!({"type": "alias", "userId": "new", "previousId": "a1"});
    assert!(concerns(&alias, &identifiers(&[("anonymous_id", "a1")])));
}

#[test]
fn rewrites_remove_only_the_subject() {
    let subject = vec![("user_id".to_string(), "u1".to_string())];
    let batch = vec![
        event(1, EventType::Track, "u1", MARCH_5_NOON_MS),
        event(2, EventType::Track, "u2", MARCH_5_NOON_MS),
        event(3, EventType::Track, "u1", MARCH_5_NOON_MS),
    ];
    for format in [FileFormat::Jsonl, FileFormat::Parquet] {
        let object = plan_objects(&batch, "ws", format).unwrap().remove(0);
        match without_subject(format, object.body.clone().into(), &subject).unwrap() {
            Rewrite::Replace {
                body,
                kept,
                removed,
            } => {
                assert_eq!((kept, removed), (1, 2), "{format:?}");
                let again = without_subject(format, body.into(), &subject).unwrap();
                assert_eq!(again, Rewrite::Untouched, "{format:?}");
            }
            other => panic!("{format:?}: {other:?}"),
        }
        let only_u1 = plan_objects(&batch[..1], "ws", format).unwrap().remove(0);
        assert_eq!(
            without_subject(format, only_u1.body.into(), &subject).unwrap(),
            Rewrite::Delete { removed: 1 }
        );
        let nobody = vec![("user_id".to_string(), "u7".to_string())];
        assert_eq!(
            without_subject(format, object.body.into(), &nobody).unwrap(),
            Rewrite::Untouched
        );
    }
}

#[test]
fn io_errors_are_classified() {
    let rejected = [
        ErrorKind::PermissionDenied,
        ErrorKind::ReadOnlyFilesystem,
        ErrorKind::NotADirectory,
        ErrorKind::InvalidFilename,
    ];
    for kind in rejected {
        let outcome = classify_io(&Error::from(kind), "ws/track/x.jsonl");
        assert!(
            matches!(outcome, Outcome::Reject { .. }),
            "{kind:?}: {outcome:?}"
        );
    }
    for kind in [
        ErrorKind::StorageFull,
        ErrorKind::QuotaExceeded,
        ErrorKind::Interrupted,
        ErrorKind::Other,
    ] {
        let outcome = classify_io(&Error::from(kind), "ws/track/x.jsonl");
        assert!(
            matches!(outcome, Outcome::Retry { .. }),
            "{kind:?}: {outcome:?}"
        );
    }
    let denied = object_store::Error::PermissionDenied {
        path: "x".into(),
        source: "403 Forbidden".into(),
    };
    assert!(matches!(
        classify_store(&denied, "x"),
        Outcome::Reject { .. }
    ));
    let down = object_store::Error::Generic {
        store: "S3",
        source: "connection refused".into(),
    };
    assert!(matches!(classify_store(&down, "x"), Outcome::Retry { .. }));
}
