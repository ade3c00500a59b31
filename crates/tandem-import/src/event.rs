//! A row's `identify` event: its identity, traits, external ids and timestamp, the provenance
//! tandem adds (`context.library`, `context.import`) and a deterministic `messageId`.
//!
//! The `messageId` is `import-<16 hex digits>-<row>`: the hex digits are a hash of the import's
//! id and of how rows become events (format and mapping). Importing the same file the same way
//! again, or resuming, sends the same ids, and the server's dedup index drops the rows it already
//! stored; importing it with a corrected mapping sends new ids, so the corrected events are stored
//! rather than dropped as duplicates of the wrong ones.

use crate::limits::IMPORT_ID_BYTES_MAX;
use crate::mapping::Target;
use crate::reject::{Reason, Rejection};
use crate::value::{identifier, timestamp_ms, trait_value, Cell};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use tandem_core::limits::EVENT_BYTES_MAX;
use tandem_core::time_util::format_iso8601_ms;

/// `context.library.name` of every imported event.
pub const LIBRARY_NAME: &str = "tandem-import";
/// `context.library.version`: this crate's version.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Bytes of the SHA-256 of the import id kept in messageIds (64 bits: two imports collide with
/// odds of 1 in 2^64, and then only on equal row numbers).
const MESSAGE_ID_KEY_BYTES: usize = 8;

/// What makes one import distinct: its id, and the file name shown in `context.import`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportIdentity {
    /// `--import-id`, or `<file name>:<size>:<hash of its first 64 KiB>`.
    pub id: String,
    /// The file's name (without its directory), written as `context.import.file`.
    pub file_name: String,
    /// Hex of the first bytes of SHA-256(id, conversion): the messageId's middle part.
    key: String,
    /// `"context":{"library":…,"import":{"id":…,"file":…,"row":` written once per import.
    context_head: Vec<u8>,
}

impl ImportIdentity {
    /// An import id the user chose (`--import-id`): 1 to `IMPORT_ID_BYTES_MAX` bytes, printable.
    /// `conversion` names how rows become events (the format and `Mapping::fingerprint`).
    pub fn given(id: &str, file_name: &str, conversion: &str) -> Result<ImportIdentity, String> {
        if id.is_empty() || id.len() > IMPORT_ID_BYTES_MAX || id.chars().any(char::is_control) {
            return Err(format!(
                "an import id is 1 to {IMPORT_ID_BYTES_MAX} bytes without control characters"
            ));
        }
        Ok(ImportIdentity::new(id.to_string(), file_name, conversion))
    }

    /// The default id of a file: its name, size and a hash of its first bytes. The same file
    /// imported twice gets the same id (so the same messageIds); a changed file gets another.
    pub fn of_file(file_name: &str, size: u64, head: &[u8], conversion: &str) -> ImportIdentity {
        let digest = Sha256::digest(head);
        let id = format!(
            "{file_name}:{size}:{}",
            tandem_core::ids::hex(&digest[..MESSAGE_ID_KEY_BYTES])
        );
        ImportIdentity::new(id, file_name, conversion)
    }

    fn new(id: String, file_name: &str, conversion: &str) -> ImportIdentity {
        let mut hasher = Sha256::new();
        hasher.update(id.as_bytes());
        hasher.update([0]);
        hasher.update(conversion.as_bytes());
        let digest = hasher.finalize();
        let key = tandem_core::ids::hex(&digest[..MESSAGE_ID_KEY_BYTES]);
        let mut context_head = Vec::with_capacity(128);
        context_head.extend_from_slice(b"\"context\":{\"library\":{\"name\":");
        write_json(&mut context_head, LIBRARY_NAME);
        context_head.extend_from_slice(b",\"version\":");
        write_json(&mut context_head, LIBRARY_VERSION);
        context_head.extend_from_slice(b"},\"import\":{\"id\":");
        write_json(&mut context_head, &id);
        context_head.extend_from_slice(b",\"file\":");
        write_json(&mut context_head, file_name);
        context_head.extend_from_slice(b",\"row\":");
        ImportIdentity {
            id,
            file_name: file_name.to_string(),
            key,
            context_head,
        }
    }

    /// The messageId of data row `row`: at most 44 characters (`MESSAGE_ID_CHARS_MAX` is 100).
    pub fn message_id(&self, row: u64) -> String {
        format!("import-{}-{row}", self.key)
    }
}

/// Writes a string as JSON; a `&str` always serialises.
fn write_json(out: &mut Vec<u8>, text: &str) {
    // serde_json escapes into a Vec without I/O; the only error it could return is an I/O one.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Collects one row's values, then writes its event.
pub struct EventBuilder<'a> {
    identity: &'a ImportIdentity,
    user_id: Option<(String, String)>,
    anonymous_id: Option<(String, String)>,
    timestamp: Option<(i64, String)>,
    traits: Map<String, Value>,
    /// Joined paths of traits set to an object value by a column: nothing may be nested in them.
    object_traits: HashSet<String>,
    external_ids: Vec<(String, String)>,
}

impl<'a> EventBuilder<'a> {
    pub fn new(identity: &'a ImportIdentity) -> EventBuilder<'a> {
        EventBuilder {
            identity,
            user_id: None,
            anonymous_id: None,
            timestamp: None,
            traits: Map::new(),
            object_traits: HashSet::new(),
            external_ids: Vec::new(),
        }
    }

    /// Puts one cell where its target says. Empty cells and JSON `null` set nothing.
    pub fn apply(&mut self, column: &str, target: &Target, cell: Cell) -> Result<(), Rejection> {
        if cell.is_empty() {
            return Ok(());
        }
        match target {
            Target::Ignore => Ok(()),
            Target::UserId => {
                let id = identifier(column, cell)?;
                set_once(&mut self.user_id, id, column, "userId")
            }
            Target::AnonymousId => {
                let id = identifier(column, cell)?;
                set_once(&mut self.anonymous_id, id, column, "anonymousId")
            }
            Target::Timestamp { format } => {
                let ms = timestamp_ms(column, cell, *format)?;
                set_once(&mut self.timestamp, ms, column, "timestamp")
            }
            Target::ExternalId { id_type } => {
                let id = identifier(column, cell)?;
                self.external_ids.push((id, id_type.clone()));
                Ok(())
            }
            Target::Trait { path, kind } => {
                let is_email = path.len() == 1 && path[0] == "email";
                let value = trait_value(column, cell, *kind, is_email)?;
                self.insert_trait(path, value, column)
            }
        }
    }

    fn insert_trait(
        &mut self,
        path: &[String],
        value: Value,
        column: &str,
    ) -> Result<(), Rejection> {
        let conflict = || {
            Rejection::new(
                Reason::ConflictingColumns,
                format!(
                    "column {column:?}: traits.{} is already set by another column",
                    path.join(".")
                ),
            )
        };
        let Some((last, parents)) = path.split_last() else {
            return Ok(());
        };
        let mut object = &mut self.traits;
        for (depth, segment) in parents.iter().enumerate() {
            if self.object_traits.contains(&path[..=depth].join(".")) {
                return Err(conflict());
            }
            let slot = object
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            object = match slot {
                Value::Object(inner) => inner,
                _ => return Err(conflict()),
            };
        }
        if object.contains_key(last) {
            return Err(conflict());
        }
        if value.is_object() {
            self.object_traits.insert(path.join("."));
        }
        object.insert(last.clone(), value);
        Ok(())
    }

    /// The event's JSON for data row `row`, or why the row cannot be an event.
    pub fn finish(self, row: u64) -> Result<Vec<u8>, Rejection> {
        if self.user_id.is_none() && self.anonymous_id.is_none() {
            return Err(Rejection::new(
                Reason::MissingIdentity,
                "no userId or anonymousId: the columns mapped to them are empty in this row",
            ));
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"type\":\"identify\",\"messageId\":");
        write_json(&mut out, &self.identity.message_id(row));
        if let Some((user_id, _)) = &self.user_id {
            out.extend_from_slice(b",\"userId\":");
            write_json(&mut out, user_id);
        }
        if let Some((anonymous_id, _)) = &self.anonymous_id {
            out.extend_from_slice(b",\"anonymousId\":");
            write_json(&mut out, anonymous_id);
        }
        if let Some((ms, _)) = self.timestamp {
            out.extend_from_slice(b",\"timestamp\":");
            write_json(&mut out, &format_iso8601_ms(ms));
        }
        if !self.traits.is_empty() {
            out.extend_from_slice(b",\"traits\":");
            serde_json::to_writer(&mut out, &self.traits).map_err(|error| {
                Rejection::new(
                    Reason::InvalidValue,
                    format!("a trait cannot be written: {error}"),
                )
            })?;
        }
        out.push(b',');
        out.extend_from_slice(&self.identity.context_head);
        out.extend_from_slice(row.to_string().as_bytes());
        out.push(b'}');
        if !self.external_ids.is_empty() {
            out.extend_from_slice(b",\"externalIds\":[");
            for (index, (id, id_type)) in self.external_ids.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"id\":");
                write_json(&mut out, id);
                out.extend_from_slice(b",\"type\":");
                write_json(&mut out, id_type);
                out.extend_from_slice(b",\"collection\":\"users\",\"encoding\":\"none\"}");
            }
            out.push(b']');
        }
        out.extend_from_slice(b"}}");
        if out.len() > EVENT_BYTES_MAX {
            return Err(Rejection::new(
                Reason::EventTooLarge,
                format!(
                    "the identify event would be {} bytes; Segment's limit per event is {EVENT_BYTES_MAX}",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }
}

fn set_once<T>(
    slot: &mut Option<(T, String)>,
    value: T,
    column: &str,
    what: &str,
) -> Result<(), Rejection> {
    if let Some((_, first)) = slot {
        return Err(Rejection::new(
            Reason::ConflictingColumns,
            format!("columns {first:?} and {column:?} both give the {what}"),
        ));
    }
    *slot = Some((value, column.to_string()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity() -> ImportIdentity {
        ImportIdentity::given("crm-2024-06", "crm.csv", "csv").unwrap()
    }

    fn build(cells: &[(&str, &str, &str)]) -> Result<Value, Rejection> {
        let identity = identity();
        let mut builder = EventBuilder::new(&identity);
        for (column, target, text) in cells {
            builder.apply(column, &Target::parse(target).unwrap(), Cell::Text(text))?;
        }
        let json = builder.finish(7)?;
        Ok(serde_json::from_slice(&json).expect("the event is JSON"))
    }

    #[test]
    fn a_full_row_becomes_a_segment_identify_event() {
        let event = build(&[
            ("id", "userId", "u-1"),
            ("email", "traits.email", "ada@example.com"),
            ("city", "traits.address.city", "London"),
            ("age", "traits.age:number", "36"),
            ("crm", "externalId:crm_id", "C-9"),
            ("since", "timestamp", "2024-05-01"),
        ])
        .unwrap();
        assert_eq!(
            event,
            json!({
                "type": "identify",
                "messageId": identity().message_id(7),
                "userId": "u-1",
                "timestamp": "2024-05-01T00:00:00.000Z",
                "traits": {"email": "ada@example.com", "address": {"city": "London"}, "age": 36},
                "context": {
                    "library": {"name": "tandem-import", "version": LIBRARY_VERSION},
                    "import": {"id": "crm-2024-06", "file": "crm.csv", "row": 7},
                    "externalIds": [{"id": "C-9", "type": "crm_id", "collection": "users", "encoding": "none"}],
                },
            })
        );
    }

    #[test]
    fn message_ids_are_deterministic_per_import_and_row() {
        let a = ImportIdentity::of_file("crm.csv", 1234, b"id,email\n", "m");
        let again = ImportIdentity::of_file("crm.csv", 1234, b"id,email\n", "m");
        assert_eq!(a, again);
        assert_eq!(a.message_id(1), again.message_id(1));
        assert_ne!(a.message_id(1), a.message_id(2));
        for other in [
            ImportIdentity::of_file("crm.csv", 1235, b"id,email\n", "m"),
            ImportIdentity::of_file("crm2.csv", 1234, b"id,email\n", "m"),
            ImportIdentity::of_file("crm.csv", 1234, b"id,mail\n", "m"),
            // The same file mapped differently: its events differ, so must their ids.
            ImportIdentity::of_file("crm.csv", 1234, b"id,email\n", "m2"),
        ] {
            assert_ne!(a.message_id(1), other.message_id(1), "{}", other.id);
        }
        let id = a.message_id(u64::MAX);
        assert!(
            id.len() <= tandem_core::limits::MESSAGE_ID_CHARS_MAX,
            "{id}"
        );
        assert!(id.starts_with("import-"));
        // The user's id decides alone: the same --import-id on a renamed file keeps the ids.
        assert_eq!(
            ImportIdentity::given("x", "a.csv", "m")
                .unwrap()
                .message_id(3),
            ImportIdentity::given("x", "b.csv", "m")
                .unwrap()
                .message_id(3)
        );
        assert!(ImportIdentity::given("", "a.csv", "m").is_err());
        assert!(ImportIdentity::given("a\nb", "a.csv", "m").is_err());
    }

    #[test]
    fn missing_identity_is_refused_even_with_traits() {
        let rejection = build(&[
            ("email", "traits.email", "a@example.com"),
            ("id", "userId", " "),
        ])
        .unwrap_err();
        assert_eq!(rejection.reason, Reason::MissingIdentity);
        let event = build(&[("anon", "anonymousId", "a-1")]).unwrap();
        assert_eq!(event["anonymousId"], "a-1");
        assert!(event.get("userId").is_none());
        assert!(event.get("traits").is_none(), "no empty traits object");
    }

    #[test]
    fn two_columns_for_one_place_are_a_conflict() {
        for cells in [
            vec![("a", "userId", "1"), ("b", "userId", "2")],
            vec![
                ("a", "userId", "1"),
                ("t1", "timestamp", "2024-01-01"),
                ("t2", "timestamp", "2024-01-02"),
            ],
            vec![
                ("a", "userId", "1"),
                ("x", "traits.x", "1"),
                ("y", "traits.x", "2"),
            ],
            vec![
                ("a", "userId", "1"),
                ("x", "traits.x", "1"),
                ("y", "traits.x.y", "2"),
            ],
            vec![
                ("a", "userId", "1"),
                ("y", "traits.x.y", "2"),
                ("x", "traits.x", "1"),
            ],
        ] {
            assert_eq!(
                build(&cells).unwrap_err().reason,
                Reason::ConflictingColumns,
                "{cells:?}"
            );
        }
        // An object-valued trait from JSON cannot take nested columns either.
        let identity = identity();
        let mut builder = EventBuilder::new(&identity);
        builder
            .apply("id", &Target::UserId, Cell::Text("u"))
            .unwrap();
        builder
            .apply(
                "address",
                &Target::trait_named("address"),
                Cell::Json(&json!({"zip": "1"})),
            )
            .unwrap();
        let nested = Target::parse("traits.address.city").unwrap();
        assert_eq!(
            builder
                .apply("city", &nested, Cell::Text("Paris"))
                .unwrap_err()
                .reason,
            Reason::ConflictingColumns
        );
    }

    #[test]
    fn an_event_over_32_kb_is_refused() {
        let big = "x".repeat(EVENT_BYTES_MAX);
        let rejection =
            build(&[("id", "userId", "u"), ("notes", "traits.notes", &big)]).unwrap_err();
        assert_eq!(rejection.reason, Reason::EventTooLarge);
        assert!(rejection.message.contains("32768"), "{}", rejection.message);
        let fits = "x".repeat(EVENT_BYTES_MAX - 400);
        assert!(build(&[("id", "userId", "u"), ("notes", "traits.notes", &fits)]).is_ok());
    }

    #[test]
    fn text_is_escaped() {
        let event = build(&[
            ("id", "userId", "u\"1"),
            ("name", "traits.name", "Zoë \"Z\" \\ <b>\u{1F600}"),
        ])
        .unwrap();
        assert_eq!(event["userId"], "u\"1");
        assert_eq!(event["traits"]["name"], "Zoë \"Z\" \\ <b>\u{1F600}");
    }
}
