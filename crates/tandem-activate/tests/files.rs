//! The files destination against a real directory: JSON lines and Parquet written and read
//! back (Parquet with the parquet crate), a redelivered batch overwrites its own objects, a
//! permission problem is rejected, and `delete_user` rewrites the objects without the subject.
//!
//! Only the local-filesystem backend is exercised: no S3-compatible server is packaged here, so
//! the S3 settings are covered by validation only.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tandem_activate::destinations::files::{decode_parquet, FileRow};
use tandem_activate::{
    BatchOutcome, BuildContext, DeleteOutcome, Destination, OutboundEvent, Outcome,
};
use tandem_core::EventType;

/// 2024-03-05T12:00:00Z
const MARCH_5_NOON_MS: i64 = 1_709_640_000_000;
const DAY_MS: i64 = 86_400_000;

fn event(offset: u64, event_type: EventType, user: &str, received_at_ms: i64) -> OutboundEvent {
    let message_id = format!("msg-{offset}");
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
            "timestamp": "2024-03-05T11:59:00.000Z",
            "traits": {"email": format!("{user}@example.com")},
            "properties": {"offset": offset}
        })
        .into(),
    }
}

fn build(data_dir: &Path, settings: Value) -> Arc<dyn Destination> {
    let kind = tandem_activate::registry::find("files").expect("files is registered");
    (kind.validate)(&settings).expect("valid settings");
    let context = BuildContext {
        workspace_id: "ws1".into(),
        destination_id: "lake".into(),
        data_dir: data_dir.to_path_buf(),
    };
    (kind.build)(&settings, &context).expect("builds")
}

/// Every file under `root`, relative, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, directory: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(directory) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut found = Vec::new();
    walk(root, root, &mut found);
    found.sort();
    found
}

fn jsonl_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn parquet_rows(path: &Path) -> Vec<FileRow> {
    decode_parquet(std::fs::read(path).unwrap().into()).unwrap()
}

fn batch() -> Vec<OutboundEvent> {
    vec![
        event(100, EventType::Track, "ada", MARCH_5_NOON_MS),
        event(101, EventType::Identify, "ada", MARCH_5_NOON_MS),
        event(102, EventType::Track, "bob", MARCH_5_NOON_MS),
        event(103, EventType::Track, "ada", MARCH_5_NOON_MS + DAY_MS),
    ]
}

#[tokio::test]
async fn json_lines_are_partitioned_by_type_and_day_and_redelivery_overwrites() {
    let data = tempfile::tempdir().unwrap();
    let destination = build(data.path(), json!({"path": "exports"}));
    let batch = batch();
    assert_eq!(
        destination.send(&batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let root = data.path().join("exports");
    let files = files_under(&root);
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names[0]
        .starts_with("ws1/identify/dt=2024-03-05/00000000000000000101-00000000000000000101-"));
    assert!(
        names[1].starts_with("ws1/track/dt=2024-03-05/00000000000000000100-00000000000000000102-")
    );
    assert!(
        names[2].starts_with("ws1/track/dt=2024-03-06/00000000000000000103-00000000000000000103-")
    );
    assert!(names.iter().all(|name| name.ends_with(".jsonl")));
    assert_eq!(
        jsonl_events(&root.join(&files[1])),
        vec![(*batch[0].event).clone(), (*batch[2].event).clone()]
    );

    // The same batch again (a redelivery after a crash): the same objects, overwritten.
    assert_eq!(
        destination.send(&batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(
        files_under(&root),
        files,
        "no duplicate objects, no staging files left"
    );
    let total: usize = files
        .iter()
        .map(|file| jsonl_events(&root.join(file)).len())
        .sum();
    assert_eq!(total, batch.len());
}

#[tokio::test]
async fn parquet_is_written_with_fixed_columns_and_the_event() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("lake");
    let destination = build(
        data.path(),
        json!({"path": root.display().to_string(), "format": "parquet", "prefix": "events/{destination}"}),
    );
    let batch = batch();
    assert_eq!(
        destination.send(&batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let files = files_under(&root);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().all(|file| file.starts_with("events/lake")
        && file.extension().is_some_and(|ext| ext == "parquet")));
    let track_day_one = files
        .iter()
        .find(|file| file.starts_with("events/lake/track/dt=2024-03-05"))
        .unwrap();
    let rows = parquet_rows(&root.join(track_day_one));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].message_id, "msg-100");
    assert_eq!(rows[0].event_type, "track");
    assert_eq!(rows[0].event.as_deref(), Some("Order Completed"));
    assert_eq!(rows[0].user_id.as_deref(), Some("ada"));
    assert_eq!(rows[0].anonymous_id, None);
    assert_eq!(rows[0].timestamp_ms, Some(MARCH_5_NOON_MS - 60_000));
    assert_eq!(rows[0].received_at_ms, MARCH_5_NOON_MS);
    assert_eq!(rows[0].source_id, "web");
    let full: Value = serde_json::from_str(&rows[0].event_json).unwrap();
    assert_eq!(full, *batch[0].event);
    assert_eq!(rows[1].user_id.as_deref(), Some("bob"));

    // The columns and their types, as any Parquet reader sees them.
    let file = std::fs::File::open(root.join(track_day_one)).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let columns: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|field| format!("{}:{}", field.name(), field.data_type()))
        .collect();
    assert_eq!(
        columns,
        [
            "message_id:Utf8",
            "type:Utf8",
            "event:Utf8",
            "user_id:Utf8",
            "anonymous_id:Utf8",
            "timestamp:Timestamp(ms, \"UTC\")",
            "received_at:Timestamp(ms, \"UTC\")",
            "source_id:Utf8",
            "event_json:Utf8"
        ]
    );

    assert_eq!(
        destination.send(&batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(files_under(&root), files, "a redelivery overwrites");
}

#[tokio::test]
async fn delete_user_rewrites_the_objects_without_the_subject() {
    for format in ["jsonl", "parquet"] {
        let data = tempfile::tempdir().unwrap();
        let root = data.path().join("out");
        let destination = build(data.path(), json!({"path": "out", "format": format}));
        let batch = batch();
        assert_eq!(
            destination.send(&batch).await,
            BatchOutcome::All(Outcome::Delivered)
        );
        let ada = vec![("email".to_string(), "ada@example.com".to_string())];
        assert_eq!(destination.delete_user(&ada).await, DeleteOutcome::Deleted);

        let files = files_under(&root);
        assert_eq!(
            files.len(),
            1,
            "{format}: objects holding only ada's events are gone: {files:?}"
        );
        let users: BTreeSet<String> = files
            .iter()
            .flat_map(|file| match format {
                "jsonl" => jsonl_events(&root.join(file))
                    .iter()
                    .map(|event| event["userId"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>(),
                _ => parquet_rows(&root.join(file))
                    .into_iter()
                    .map(|row| row.user_id.unwrap())
                    .collect(),
            })
            .collect();
        assert_eq!(users, BTreeSet::from(["bob".to_string()]), "{format}");

        // Deleting again finds nothing; other users' events are untouched.
        assert_eq!(destination.delete_user(&ada).await, DeleteOutcome::Deleted);
        assert_eq!(files_under(&root), files, "{format}");
    }
}

#[tokio::test]
async fn an_unwritable_directory_is_rejected_and_a_later_fix_delivers() {
    let data = tempfile::tempdir().unwrap();
    // A file where the directory should be: no retry can make it a directory.
    std::fs::write(data.path().join("blocked"), b"not a directory").unwrap();
    let destination = build(data.path(), json!({"path": "blocked"}));
    let batch = batch();
    match destination.send(&batch[..1]).await {
        BatchOutcome::All(Outcome::Reject { error }) => {
            assert!(error.contains("ws1/track/dt=2024-03-05"), "{error}")
        }
        other => panic!("expected a reject, got {other:?}"),
    }
    std::fs::remove_file(data.path().join("blocked")).unwrap();
    assert_eq!(
        destination.send(&batch[..1]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(files_under(&data.path().join("blocked")).len(), 1);
}
