//! Turning events into rows: which tables an event lands in, and its columns (the standard
//! ones, `context_*`, and properties or traits flattened with `_`), each value with the column
//! type it implies.

use super::schema::{identifier, ColumnType};
use crate::destination::OutboundEvent;
use serde_json::{Map, Value};
use std::collections::HashMap;
use tandem_core::limits::WAREHOUSE_FLATTEN_DEPTH_MAX;
use tandem_core::time_util::{format_iso8601_ms, parse_iso8601_ms};
use tandem_core::EventType;

/// `context.page.url` → `context_page_url`; deeper objects are stored as JSON text.
const CONTEXT_FLATTEN_DEPTH: usize = 2;
/// Earliest instant inferred as a timestamp (0001-01-01: PostgreSQL has no year 0).
const TIMESTAMP_MS_MIN: i64 = -62_135_596_800_000;
/// The tables every schema has, before the prefix. A track event whose name would collide
/// with one of them gets `_events` appended to its table name.
pub const FIXED_TABLES: [&str; 9] = [
    "tracks",
    "pages",
    "screens",
    "identifies",
    "groups",
    "aliases",
    "users",
    "audience_memberships",
    "schema_problems",
];
/// Columns tandem fills itself in every table; a property or trait of the same name (or of
/// one a table adds: `event` in a track's table, `name` in `pages`, …, or starting with
/// `context_`) is stored as `properties_<name>` / `traits_<name>`.
const STANDARD_COLUMNS: [&str; 9] = [
    "id",
    "received_at",
    "sent_at",
    "timestamp",
    "original_timestamp",
    "user_id",
    "anonymous_id",
    "source_id",
    "loaded_at",
];

/// One value, with the type it implies for a new column.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// An RFC 3339 date-time: as sent, and normalized to UTC.
    Timestamp {
        text: String,
        utc: String,
    },
    Text(String),
}

impl Scalar {
    pub fn column_type(&self) -> ColumnType {
        match self {
            Scalar::Int(_) => ColumnType::BigInt,
            Scalar::Float(_) => ColumnType::Double,
            Scalar::Bool(_) => ColumnType::Boolean,
            Scalar::Timestamp { .. } => ColumnType::Timestamp,
            Scalar::Text(_) => ColumnType::Text,
        }
    }

    /// Whether the value can be stored in a column of type `column` as it is.
    pub fn fits(&self, column: ColumnType) -> bool {
        matches!(
            (column, self),
            (ColumnType::Text | ColumnType::Other, _)
                | (ColumnType::BigInt, Scalar::Int(_))
                | (ColumnType::Double, Scalar::Int(_) | Scalar::Float(_))
                | (ColumnType::Boolean, Scalar::Bool(_))
                | (ColumnType::Timestamp, Scalar::Timestamp { .. })
        )
    }

    /// The JSON value PostgreSQL converts into a `column` cell.
    pub fn cell(&self, column: ColumnType) -> Value {
        match (column, self) {
            (ColumnType::Text, _) => Value::String(self.text()),
            (_, Scalar::Int(value)) => Value::from(*value),
            (_, Scalar::Float(value)) => Value::from(*value),
            (_, Scalar::Bool(value)) => Value::Bool(*value),
            (ColumnType::Timestamp, Scalar::Timestamp { utc, .. }) => Value::String(utc.clone()),
            (_, Scalar::Timestamp { text, .. }) => Value::String(text.clone()),
            (_, Scalar::Text(text)) => Value::String(text.clone()),
        }
    }

    /// The value as text (as sent, for timestamps).
    pub fn text(&self) -> String {
        match self {
            Scalar::Int(value) => value.to_string(),
            Scalar::Float(value) => value.to_string(),
            Scalar::Bool(value) => value.to_string(),
            Scalar::Timestamp { text, .. } => text.clone(),
            Scalar::Text(text) => text.clone(),
        }
    }

    /// A JSON value as a scalar: `null` is none (no column), arrays and objects are JSON text.
    pub fn from_json(value: &Value) -> Option<Scalar> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(value) => Scalar::Bool(*value),
            Value::Number(number) => match number.as_i64() {
                Some(value) => Scalar::Int(value),
                None => Scalar::Float(number.as_f64()?),
            },
            Value::String(text) => Scalar::from_text(text),
            Value::Array(_) | Value::Object(_) => Scalar::Text(clean(&value.to_string())),
        })
    }

    fn from_text(text: &str) -> Scalar {
        let looks_like_time = text.len() >= 19 && text.as_bytes().get(10) == Some(&b'T');
        match looks_like_time.then(|| parse_iso8601_ms(text)).flatten() {
            Some(ms) if ms >= TIMESTAMP_MS_MIN => Scalar::Timestamp {
                text: text.to_string(),
                utc: format_iso8601_ms(ms),
            },
            _ => Scalar::Text(clean(text)),
        }
    }
}

/// PostgreSQL text cannot hold NUL.
fn clean(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "")
    } else {
        text.to_string()
    }
}

/// One row for one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub table: String,
    /// `users`: merged into the existing row by `id` instead of inserted once.
    pub upsert: bool,
    pub message_id: String,
    pub cells: Vec<(String, Scalar)>,
}

/// How tables are named for one destination.
#[derive(Debug, Clone)]
pub struct Naming {
    pub prefix: String,
    pub event_tables: bool,
}

impl Naming {
    /// A fixed table's name (`tracks`, `users`, …) with the prefix.
    pub fn table(&self, name: &str) -> String {
        let mut table = format!("{}{name}", self.prefix);
        table.truncate(super::config::IDENTIFIER_BYTES_MAX);
        table
    }

    /// Every fixed table's name with the prefix.
    pub fn fixed_tables(&self) -> Vec<String> {
        FIXED_TABLES.iter().map(|name| self.table(name)).collect()
    }

    /// The table of a track event called `event`.
    pub fn event_table(&self, event: &str) -> String {
        self.table(&event_name(event))
    }
}

/// A track event's name as its table is called (without the prefix), and as the `event` column
/// shows it: snake_case, `_events` appended when it would collide with a fixed table.
pub fn event_name(event: &str) -> String {
    let mut name = identifier(event);
    if FIXED_TABLES.contains(&name.as_str()) {
        name.push_str("_events");
    }
    name
}

/// The rows of one event: its type's table (`tracks` and the event's own table for a track;
/// `identifies` and the `users` upsert for an identify with a userId; …).
pub fn rows(event: &OutboundEvent, naming: &Naming) -> Vec<Row> {
    let json = &event.event;
    let mut common = standard_cells(event);
    if let Some(context) = json.get("context").and_then(Value::as_object) {
        flatten("context", context, 1, CONTEXT_FLATTEN_DEPTH, &mut common);
    }
    let row = |table: String, cells: Vec<(String, Scalar)>| Row {
        table,
        upsert: false,
        message_id: event.message_id.clone(),
        cells,
    };
    match event.event_type {
        EventType::Track => {
            let name = string(json, "event").unwrap_or_default();
            let mut tracks = common;
            tracks.push(("event".into(), Scalar::Text(event_name(&name))));
            tracks.push(("event_text".into(), Scalar::Text(clean(&name))));
            let mut rows = Vec::with_capacity(2);
            if naming.event_tables && !name.is_empty() {
                let mut own = tracks.clone();
                members(json, "properties", &["event", "event_text"], &mut own);
                rows.push(row(naming.event_table(&name), own));
            }
            rows.insert(0, row(naming.table("tracks"), tracks));
            rows
        }
        EventType::Page | EventType::Screen => {
            let mut cells = common;
            if let Some(name) = string(json, "name") {
                cells.push(("name".into(), Scalar::Text(clean(&name))));
            }
            members(json, "properties", &["name"], &mut cells);
            let table = if event.event_type == EventType::Page {
                "pages"
            } else {
                "screens"
            };
            vec![row(naming.table(table), cells)]
        }
        EventType::Identify => {
            let mut cells = common;
            members(json, "traits", &[], &mut cells);
            let mut rows = vec![row(naming.table("identifies"), cells)];
            if let Some(user_id) = string(json, "userId").filter(|id| !id.is_empty()) {
                let mut user = vec![
                    ("id".to_string(), Scalar::Text(clean(&user_id))),
                    (
                        "received_at".to_string(),
                        Scalar::from_text(&format_iso8601_ms(event.received_at_ms)),
                    ),
                ];
                members(json, "traits", &[], &mut user);
                rows.push(Row {
                    upsert: true,
                    ..row(naming.table("users"), user)
                });
            }
            rows
        }
        EventType::Group => {
            let mut cells = common;
            if let Some(group_id) = string(json, "groupId") {
                cells.push(("group_id".into(), Scalar::Text(clean(&group_id))));
            }
            members(json, "traits", &["group_id"], &mut cells);
            vec![row(naming.table("groups"), cells)]
        }
        EventType::Alias => {
            let mut cells = common;
            if let Some(previous_id) = string(json, "previousId") {
                cells.push(("previous_id".into(), Scalar::Text(clean(&previous_id))));
            }
            vec![row(naming.table("aliases"), cells)]
        }
        // Control records are tandem's own and never reach destinations; nothing to load.
        EventType::Control => Vec::new(),
    }
}

/// `id`, the times, `user_id`, `anonymous_id`, `source_id`.
fn standard_cells(event: &OutboundEvent) -> Vec<(String, Scalar)> {
    let json = &event.event;
    let mut cells = vec![
        ("id".to_string(), Scalar::Text(clean(&event.message_id))),
        (
            "received_at".to_string(),
            Scalar::from_text(&format_iso8601_ms(event.received_at_ms)),
        ),
    ];
    for (member, column) in [
        ("sentAt", "sent_at"),
        ("timestamp", "timestamp"),
        ("originalTimestamp", "original_timestamp"),
    ] {
        if let Some(scalar) = json.get(member).and_then(Scalar::from_json) {
            cells.push((column.to_string(), scalar));
        }
    }
    for (member, column) in [("userId", "user_id"), ("anonymousId", "anonymous_id")] {
        if let Some(value) = string(json, member) {
            cells.push((column.to_string(), Scalar::Text(clean(&value))));
        }
    }
    cells.push((
        "source_id".to_string(),
        Scalar::Text(clean(&event.source_id)),
    ));
    cells
}

/// `json[member]` as text (numbers as written; Segment ids may be numbers).
fn string(json: &Value, member: &str) -> Option<String> {
    match json.get(member)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The members of `json[member]` (properties or traits) as columns; a name taken by a standard
/// column (or one of `also_taken`) or the `context_` family gets `<member>_` in front.
fn members(json: &Value, member: &str, also_taken: &[&str], out: &mut Vec<(String, Scalar)>) {
    let Some(object) = json.get(member).and_then(Value::as_object) else {
        return;
    };
    let mut flat = Vec::new();
    flatten("", object, 1, WAREHOUSE_FLATTEN_DEPTH_MAX, &mut flat);
    let mut taken: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(index, (column, _))| (column.clone(), index))
        .collect();
    for (column, scalar) in flat {
        let reserved = STANDARD_COLUMNS.contains(&column.as_str())
            || also_taken.contains(&column.as_str())
            || column.starts_with("context_");
        let column = if reserved {
            identifier(&format!("{member}_{column}"))
        } else {
            column
        };
        push_unique(out, &mut taken, column, scalar);
    }
}

/// Flattens `object` into `parent_child` columns down to `depth_max` levels.
fn flatten(
    parent: &str,
    object: &Map<String, Value>,
    depth: usize,
    depth_max: usize,
    out: &mut Vec<(String, Scalar)>,
) {
    let mut taken: HashMap<String, usize> = HashMap::new();
    flatten_into(parent, object, depth, depth_max, out, &mut taken);
}

fn flatten_into(
    parent: &str,
    object: &Map<String, Value>,
    depth: usize,
    depth_max: usize,
    out: &mut Vec<(String, Scalar)>,
    taken: &mut HashMap<String, usize>,
) {
    for (key, value) in object {
        let column = if parent.is_empty() {
            identifier(key)
        } else {
            identifier(&format!("{parent}_{}", identifier(key)))
        };
        match value {
            Value::Object(inner) if depth < depth_max => {
                flatten_into(&column, inner, depth + 1, depth_max, out, taken)
            }
            _ => {
                if let Some(scalar) = Scalar::from_json(value) {
                    push_unique(out, taken, column, scalar);
                }
            }
        }
    }
}

/// Adds a cell; a later one with the same column (two keys with one snake_case name) replaces
/// the earlier.
fn push_unique(
    out: &mut Vec<(String, Scalar)>,
    taken: &mut HashMap<String, usize>,
    column: String,
    scalar: Scalar,
) {
    match taken.get(&column) {
        Some(&index) => out[index].1 = scalar,
        None => {
            taken.insert(column.clone(), out.len());
            out.push((column, scalar));
        }
    }
}
