//! Turning a batch into objects: grouping by event type and day, naming, encoding as JSON lines
//! or Parquet, and the rewrite that removes a data subject's events.

use super::config::FileFormat;
use crate::destination::OutboundEvent;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

/// Rows decoded at a time when a Parquet object is read back for a rewrite (memory per step).
const PARQUET_ROWS_PER_READ: usize = 8192;

/// One object to write: its name under the store's root, the events it holds (indexes into the
/// batch) and its encoded body.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedObject {
    pub path: String,
    pub events: Vec<usize>,
    pub body: Vec<u8>,
}

/// The objects for `batch`: one per (event type, UTC day of `receivedAt`), named
/// `<prefix>/<type>/dt=YYYY-MM-DD/<first offset>-<last offset>-<hash of the messageIds>.<ext>`.
/// The same events always give the same name, so a redelivered batch overwrites its object
/// instead of adding a duplicate.
pub fn plan_objects(
    batch: &[OutboundEvent],
    prefix: &str,
    format: FileFormat,
) -> Result<Vec<PlannedObject>, String> {
    let mut groups: BTreeMap<(&'static str, String), Vec<usize>> = BTreeMap::new();
    for (index, event) in batch.iter().enumerate() {
        let key = (event.event_type.as_str(), day_of(event.received_at_ms));
        groups.entry(key).or_default().push(index);
    }
    groups
        .into_iter()
        .map(|((event_type, day), events)| {
            let members: Vec<&OutboundEvent> = events.iter().map(|&index| &batch[index]).collect();
            let path = format!(
                "{prefix}/{event_type}/dt={day}/{}.{}",
                object_stem(&members),
                format.extension()
            );
            let body = match format {
                FileFormat::Jsonl => encode_jsonl(&members),
                FileFormat::Parquet => {
                    let rows: Vec<FileRow> =
                        members.iter().map(|event| FileRow::of(event)).collect();
                    encode_parquet(&rows)?
                }
            };
            Ok(PlannedObject { path, events, body })
        })
        .collect()
}

/// `YYYY-MM-DD` (UTC) of a time in ms since the epoch.
pub fn day_of(ms: i64) -> String {
    tandem_core::time_util::format_iso8601_ms(ms)[..10].to_string()
}

/// `<first offset>-<last offset>-<16 hex digits of SHA-256 over the messageIds>`; offsets are
/// zero-padded so names sort by offset.
pub fn object_stem(events: &[&OutboundEvent]) -> String {
    let first = events.iter().map(|event| event.offset).min().unwrap_or(0);
    let last = events.iter().map(|event| event.offset).max().unwrap_or(0);
    let mut digest = Sha256::new();
    for event in events {
        digest.update(event.message_id.as_bytes());
        digest.update([0]);
    }
    let hash: String = digest.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{first:020}-{last:020}-{hash}")
}

fn encode_jsonl(events: &[&OutboundEvent]) -> Vec<u8> {
    let mut body = Vec::new();
    for event in events {
        // The value, not the stored bytes: those may hold newlines between tokens.
        serde_json::to_writer(&mut body, event.event.value()).expect("JSON values serialize");
        body.push(b'\n');
    }
    body
}

/// One row of a Parquet object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub message_id: String,
    pub event_type: String,
    /// The track event's name (`event`), else the page/screen `name`.
    pub event: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// The event's own `timestamp`, when it parses.
    pub timestamp_ms: Option<i64>,
    pub received_at_ms: i64,
    pub source_id: String,
    /// The whole event, as JSON text.
    pub event_json: String,
}

impl FileRow {
    pub fn of(event: &OutboundEvent) -> FileRow {
        let text = |field: &str| scalar_text(event.event.get(field));
        FileRow {
            message_id: event.message_id.clone(),
            event_type: event.event_type.as_str().to_string(),
            event: text("event").or_else(|| text("name")),
            user_id: text("userId"),
            anonymous_id: text("anonymousId"),
            timestamp_ms: event
                .event
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(tandem_core::time_util::parse_iso8601_ms),
            received_at_ms: event.received_at_ms,
            source_id: event.source_id.clone(),
            event_json: serde_json::to_string(event.event.value()).expect("JSON values serialize"),
        }
    }
}

/// A string, or a number written as text (some SDKs send numeric user ids).
fn scalar_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The Parquet schema: fixed columns a query engine can filter on, plus the whole event.
pub static PARQUET_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("message_id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("anonymous_id", DataType::Utf8, true),
        Field::new("timestamp", time.clone(), true),
        Field::new("received_at", time, false),
        Field::new("source_id", DataType::Utf8, false),
        Field::new("event_json", DataType::Utf8, false),
    ]))
});

pub fn encode_parquet(rows: &[FileRow]) -> Result<Vec<u8>, String> {
    let strings = |pick: fn(&FileRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(pick).collect::<StringArray>())
    };
    let times = |pick: fn(&FileRow) -> Option<i64>| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(pick)
                .collect::<TimestampMillisecondArray>()
                .with_timezone("UTC"),
        )
    };
    let columns = vec![
        strings(|row| Some(&row.message_id)),
        strings(|row| Some(&row.event_type)),
        strings(|row| row.event.as_deref()),
        strings(|row| row.user_id.as_deref()),
        strings(|row| row.anonymous_id.as_deref()),
        times(|row| row.timestamp_ms),
        times(|row| Some(row.received_at_ms)),
        strings(|row| Some(&row.source_id)),
        strings(|row| Some(&row.event_json)),
    ];
    let batch = RecordBatch::try_new(PARQUET_SCHEMA.clone(), columns)
        .map_err(|error| format!("cannot build the Parquet rows: {error}"))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut body = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut body, PARQUET_SCHEMA.clone(), Some(properties))
        .map_err(|error| format!("cannot start the Parquet file: {error}"))?;
    writer
        .write(&batch)
        .map_err(|error| format!("cannot write the Parquet rows: {error}"))?;
    writer
        .close()
        .map_err(|error| format!("cannot finish the Parquet file: {error}"))?;
    Ok(body)
}

/// Reads back a Parquet object written by [`encode_parquet`].
pub fn decode_parquet(body: bytes::Bytes) -> Result<Vec<FileRow>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)
        .and_then(|builder| builder.with_batch_size(PARQUET_ROWS_PER_READ).build())
        .map_err(|error| format!("not a readable Parquet file: {error}"))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| format!("unreadable Parquet rows: {error}"))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("Parquet file without column {name:?}"))
        };
        let string_column = |name: &str| -> Result<&StringArray, String> {
            column(name)?
                .as_string_opt::<i32>()
                .ok_or_else(|| format!("Parquet column {name:?} is not text"))
        };
        let time_column = |name: &str| {
            column(name)?
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(|| format!("Parquet column {name:?} is not a ms timestamp"))
        };
        let (message_id, event_type, event) = (
            string_column("message_id")?,
            string_column("type")?,
            string_column("event")?,
        );
        let (user_id, anonymous_id) = (string_column("user_id")?, string_column("anonymous_id")?);
        let (timestamp, received_at) = (time_column("timestamp")?, time_column("received_at")?);
        let (source_id, event_json) = (string_column("source_id")?, string_column("event_json")?);
        let text = |array: &StringArray, row: usize| {
            array.is_valid(row).then(|| array.value(row).to_string())
        };
        for row in 0..batch.num_rows() {
            rows.push(FileRow {
                message_id: message_id.value(row).to_string(),
                event_type: event_type.value(row).to_string(),
                event: text(event, row),
                user_id: text(user_id, row),
                anonymous_id: text(anonymous_id, row),
                timestamp_ms: timestamp.is_valid(row).then(|| timestamp.value(row)),
                received_at_ms: received_at.value(row),
                source_id: source_id.value(row).to_string(),
                event_json: event_json.value(row).to_string(),
            });
        }
    }
    Ok(rows)
}

/// What removing a subject's events from one object gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Rewrite {
    /// None of the subject's events are in the object.
    Untouched,
    /// Some were: the object's new body (`kept` events remain, `removed` are gone).
    Replace {
        body: Vec<u8>,
        kept: usize,
        removed: usize,
    },
    /// Every event in the object was the subject's: delete it.
    Delete { removed: usize },
}

/// The object `body` (in `format`) without the events of the subject with `identifiers`.
pub fn without_subject(
    format: FileFormat,
    body: bytes::Bytes,
    identifiers: &[(String, String)],
) -> Result<Rewrite, String> {
    let (kept_body, kept, removed) = match format {
        FileFormat::Jsonl => {
            let mut kept_body = Vec::with_capacity(body.len());
            let (mut kept, mut removed) = (0, 0);
            for line in body.split(|&byte| byte == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let event: Value = serde_json::from_slice(line)
                    .map_err(|error| format!("a line is not JSON: {error}"))?;
                if concerns(&event, identifiers) {
                    removed += 1;
                } else {
                    kept += 1;
                    kept_body.extend_from_slice(line);
                    kept_body.push(b'\n');
                }
            }
            (kept_body, kept, removed)
        }
        FileFormat::Parquet => {
            let rows = decode_parquet(body)?;
            let total = rows.len();
            let mut kept_rows = Vec::with_capacity(total);
            for row in rows {
                let event: Value = serde_json::from_str(&row.event_json)
                    .map_err(|error| format!("event_json is not JSON: {error}"))?;
                if !concerns(&event, identifiers) {
                    kept_rows.push(row);
                }
            }
            let kept = kept_rows.len();
            let kept_body = if kept == total || kept == 0 {
                Vec::new()
            } else {
                encode_parquet(&kept_rows)?
            };
            (kept_body, kept, total - kept)
        }
    };
    Ok(match (kept, removed) {
        (_, 0) => Rewrite::Untouched,
        (0, removed) => Rewrite::Delete { removed },
        (kept, removed) => Rewrite::Replace {
            body: kept_body,
            kept,
            removed,
        },
    })
}

/// Whether `event` is about the subject: `user_id` matches `userId` (and an alias'
/// `previousId`), `anonymous_id` matches `anonymousId` (and `previousId`), any other identifier
/// type (`email`, `phone`, ...) matches the trait of that name in `traits` or `context.traits`.
pub fn concerns(event: &Value, identifiers: &[(String, String)]) -> bool {
    let equals = |value: Option<&Value>, expected: &str| {
        scalar_text(value).is_some_and(|text| text == expected)
    };
    identifiers.iter().any(|(kind, value)| match kind.as_str() {
        "user_id" => equals(event.get("userId"), value) || equals(event.get("previousId"), value),
        "anonymous_id" => {
            equals(event.get("anonymousId"), value) || equals(event.get("previousId"), value)
        }
        trait_name => {
            let name = trait_name.replace('~', "~0").replace('/', "~1");
            equals(event.pointer(&format!("/traits/{name}")), value)
                || equals(event.pointer(&format!("/context/traits/{name}")), value)
        }
    })
}
