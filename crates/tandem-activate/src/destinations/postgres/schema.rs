//! Schema evolution: names made valid identifiers, column types inferred from values, and the
//! plan that reconciles a batch's rows with the tables as they are (new tables, new columns,
//! `bigint` widened to `double precision`, type conflicts diverted to a `<column>_text` column
//! and reported). Planning is pure; `service.rs` runs the plan.

use super::config::IDENTIFIER_BYTES_MAX;
use super::request::{Row, Scalar};
use serde::Serialize;
use std::collections::HashMap;
use tandem_core::limits::{
    WAREHOUSE_EVENT_TABLES_MAX, WAREHOUSE_SCHEMA_PROBLEMS_KEPT, WAREHOUSE_TABLE_COLUMNS_MAX,
};

/// Columns PostgreSQL reserves in every table (`column name conflicts with a system column`).
const SYSTEM_COLUMNS: [&str; 6] = ["tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"];
/// Suffix of the column holding, as text, values whose type conflicts with their column's.
pub const CONFLICT_SUFFIX: &str = "_text";

/// The column types tandem creates, and `Other` for columns someone else made (values are then
/// passed as they are and PostgreSQL converts them, or refuses the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    BigInt,
    Double,
    Boolean,
    Timestamp,
    Text,
    Other,
}

impl ColumnType {
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::BigInt => "bigint",
            ColumnType::Double => "double precision",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamptz",
            ColumnType::Text | ColumnType::Other => "text",
        }
    }

    /// From `information_schema.columns.data_type`.
    pub fn from_information_schema(data_type: &str) -> ColumnType {
        match data_type {
            "bigint" => ColumnType::BigInt,
            "double precision" => ColumnType::Double,
            "boolean" => ColumnType::Boolean,
            "timestamp with time zone" => ColumnType::Timestamp,
            "text" | "character varying" => ColumnType::Text,
            _ => ColumnType::Other,
        }
    }
}

/// The columns of each table of the schema, as last read or changed by this process.
pub type Catalog = HashMap<String, HashMap<String, ColumnType>>;

/// `name` as a PostgreSQL identifier: snake_case (`orderId` → `order_id`, `Order Completed` →
/// `order_completed`), ASCII letters, digits and `_`, not starting with a digit, at most 63
/// bytes; a name with nothing usable left becomes `_<hash>`.
pub fn identifier(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (index, &char) in chars.iter().enumerate() {
        if char.is_ascii_alphanumeric() {
            if char.is_ascii_uppercase() && index > 0 {
                let previous = chars[index - 1];
                let next_lower = chars.get(index + 1).is_some_and(char::is_ascii_lowercase);
                if previous.is_ascii_lowercase()
                    || previous.is_ascii_digit()
                    || (previous.is_ascii_uppercase() && next_lower)
                {
                    out.push('_');
                }
            }
            out.push(char.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    let mut result = if trimmed.is_empty() {
        format!(
            "_{:08x}",
            xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as u32
        )
    } else if trimmed.starts_with(|char: char| char.is_ascii_digit()) {
        format!("_{trimmed}")
    } else {
        trimmed.to_string()
    };
    result.truncate(IDENTIFIER_BYTES_MAX);
    if SYSTEM_COLUMNS.contains(&result.as_str()) || result == "oid" {
        result.insert(0, '_');
    }
    result
}

/// `"name"`: every identifier is quoted (`timestamp`, `user`, `order` are keywords).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The column holding, as text, the values that conflict with `column`'s type.
pub fn conflict_column(column: &str) -> String {
    let mut base = column.to_string();
    base.truncate(IDENTIFIER_BYTES_MAX - CONFLICT_SUFFIX.len());
    base + CONFLICT_SUFFIX
}

/// A value tandem could not store as sent (it still stored the event).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchemaProblem {
    pub table: String,
    pub column: String,
    /// `type_conflict`, `column_limit` or `event_table_limit`.
    pub kind: &'static str,
    /// The column's type (for conflicts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column_type: Option<ColumnType>,
    /// The type the value would have needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_type: Option<ColumnType>,
    /// Where the value went instead (`<column>_text`), if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_in: Option<String>,
    pub message_id: String,
    pub message: String,
    /// The event's position in its batch (not reported).
    #[serde(skip)]
    pub event_index: usize,
}

impl SchemaProblem {
    /// Problems of the same key are one entry in the report (with a count).
    pub fn key(&self) -> (String, String, &'static str, Option<ColumnType>) {
        (
            self.table.clone(),
            self.column.clone(),
            self.kind,
            self.value_type,
        )
    }
}

/// One schema change, run before the load in its own transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChange {
    /// `id text PRIMARY KEY` and `loaded_at`; every other column is added.
    CreateTable { table: String },
    AddColumn {
        table: String,
        column: String,
        kind: ColumnType,
    },
    /// `bigint` → `double precision` (a fractional value arrived for an integer column).
    Widen { table: String, column: String },
}

/// One row ready for loading: cells are JSON values PostgreSQL converts into the column types
/// (`jsonb_populate_recordset`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRow {
    pub event_index: usize,
    pub table: String,
    pub upsert: bool,
    pub cells: Vec<(String, serde_json::Value)>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub changes: Vec<SchemaChange>,
    pub rows: Vec<LoadRow>,
    pub problems: Vec<SchemaProblem>,
}

/// How tables are counted against [`WAREHOUSE_EVENT_TABLES_MAX`]: the fixed tables are not.
pub struct Limits<'a> {
    pub fixed_tables: &'a [String],
    pub event_tables_max: usize,
    pub table_columns_max: usize,
}

impl Limits<'_> {
    pub fn new(fixed_tables: &[String]) -> Limits<'_> {
        Limits {
            fixed_tables,
            event_tables_max: WAREHOUSE_EVENT_TABLES_MAX,
            table_columns_max: WAREHOUSE_TABLE_COLUMNS_MAX,
        }
    }
}

/// Reconciles `rows` with `catalog`: what to change first, what to load, what to report.
/// `catalog` is not modified; the plan's changes describe the catalog after it.
pub fn plan(rows: &[(usize, Row)], catalog: &Catalog, limits: &Limits) -> Plan {
    let mut overlay: HashMap<&str, HashMap<String, ColumnType>> = HashMap::new();
    let mut event_tables = catalog
        .keys()
        .filter(|table| !limits.fixed_tables.contains(table))
        .count();
    let mut plan = Plan::default();
    for (event_index, row) in rows {
        let columns = match overlay.get_mut(row.table.as_str()) {
            Some(columns) => columns,
            None => {
                let columns = match catalog.get(&row.table) {
                    Some(columns) => columns.clone(),
                    None => {
                        let fixed = limits.fixed_tables.contains(&row.table);
                        if !fixed && event_tables >= limits.event_tables_max {
                            plan.problems.push(SchemaProblem {
                                table: row.table.clone(),
                                column: String::new(),
                                kind: "event_table_limit",
                                column_type: None,
                                value_type: None,
                                stored_in: None,
                                message_id: row.message_id.clone(),
                                message: format!(
                                    "the schema holds {} event tables already; this event is only in the shared table",
                                    limits.event_tables_max
                                ),
                                event_index: *event_index,
                            });
                            continue;
                        }
                        event_tables += usize::from(!fixed);
                        plan.changes.push(SchemaChange::CreateTable {
                            table: row.table.clone(),
                        });
                        HashMap::from([
                            ("id".to_string(), ColumnType::Text),
                            ("loaded_at".to_string(), ColumnType::Timestamp),
                        ])
                    }
                };
                overlay.entry(row.table.as_str()).or_insert(columns)
            }
        };
        let mut cells = Vec::with_capacity(row.cells.len());
        for (column, scalar) in &row.cells {
            place(
                (&row.table, &row.message_id, *event_index),
                column,
                scalar,
                columns,
                limits.table_columns_max,
                &mut plan,
                &mut cells,
            );
        }
        plan.rows.push(LoadRow {
            event_index: *event_index,
            table: row.table.clone(),
            upsert: row.upsert,
            cells,
        });
    }
    plan
}

/// Puts one value into its column (adding or widening it), or into the conflict column.
fn place(
    (table, message_id, event_index): (&str, &str, usize),
    column: &str,
    scalar: &Scalar,
    columns: &mut HashMap<String, ColumnType>,
    columns_max: usize,
    plan: &mut Plan,
    cells: &mut Vec<(String, serde_json::Value)>,
) {
    let wanted = scalar.column_type();
    let existing = columns.get(column).copied();
    let Some(existing) = existing else {
        if columns.len() >= columns_max {
            let mut problem = column_limit(table, column, message_id, columns_max);
            problem.event_index = event_index;
            plan.problems.push(problem);
            return;
        }
        columns.insert(column.to_string(), wanted);
        plan.changes.push(SchemaChange::AddColumn {
            table: table.to_string(),
            column: column.to_string(),
            kind: wanted,
        });
        cells.push((column.to_string(), scalar.cell(wanted)));
        return;
    };
    if existing == ColumnType::BigInt && wanted == ColumnType::Double {
        columns.insert(column.to_string(), ColumnType::Double);
        plan.changes.push(SchemaChange::Widen {
            table: table.to_string(),
            column: column.to_string(),
        });
        cells.push((column.to_string(), scalar.cell(ColumnType::Double)));
        return;
    }
    if scalar.fits(existing) {
        cells.push((column.to_string(), scalar.cell(existing)));
        return;
    }
    // A type conflict: the value goes, as text, to `<column>_text`; the event is still loaded.
    let target = conflict_column(column);
    let target_type = columns.get(&target).copied();
    let stored_in = match target_type {
        Some(ColumnType::Text | ColumnType::Other) => Some(target),
        Some(_) => None,
        None if columns.len() >= columns_max => None,
        None => {
            columns.insert(target.clone(), ColumnType::Text);
            plan.changes.push(SchemaChange::AddColumn {
                table: table.to_string(),
                column: target.clone(),
                kind: ColumnType::Text,
            });
            Some(target)
        }
    };
    if let Some(stored_in) = &stored_in {
        cells.push((stored_in.clone(), scalar.cell(ColumnType::Text)));
    }
    let message = match &stored_in {
        Some(stored_in) => format!(
            "a {} value arrived for the {} column {column}; stored as text in {stored_in}",
            wanted.sql(),
            existing.sql()
        ),
        None => format!(
            "a {} value arrived for the {} column {column} and its conflict column is unusable; value not stored",
            wanted.sql(),
            existing.sql()
        ),
    };
    plan.problems.push(SchemaProblem {
        table: table.to_string(),
        column: column.to_string(),
        kind: "type_conflict",
        column_type: Some(existing),
        value_type: Some(wanted),
        stored_in,
        message_id: message_id.to_string(),
        message,
        event_index,
    });
}

fn column_limit(table: &str, column: &str, message_id: &str, columns_max: usize) -> SchemaProblem {
    SchemaProblem {
        table: table.to_string(),
        column: column.to_string(),
        kind: "column_limit",
        column_type: None,
        value_type: None,
        stored_in: None,
        message_id: message_id.to_string(),
        message: format!("the table has {columns_max} columns already; value not stored"),
        event_index: 0,
    }
}

/// The catalog after `changes` (applied once they are committed).
pub fn apply(catalog: &mut Catalog, changes: &[SchemaChange]) {
    for change in changes {
        match change {
            SchemaChange::CreateTable { table } => {
                let columns = catalog.entry(table.clone()).or_default();
                columns.insert("id".into(), ColumnType::Text);
                columns.insert("loaded_at".into(), ColumnType::Timestamp);
            }
            SchemaChange::AddColumn {
                table,
                column,
                kind,
            } => {
                catalog
                    .entry(table.clone())
                    .or_default()
                    .entry(column.clone())
                    .or_insert(*kind);
            }
            SchemaChange::Widen { table, column } => {
                catalog
                    .entry(table.clone())
                    .or_default()
                    .insert(column.clone(), ColumnType::Double);
            }
        }
    }
}

/// The SQL of one change (idempotent, so a change another process made first is harmless).
pub fn change_sql(schema: &str, change: &SchemaChange) -> String {
    let schema = quote(schema);
    match change {
        SchemaChange::CreateTable { table } => format!(
            "CREATE TABLE IF NOT EXISTS {schema}.{} (\"id\" text PRIMARY KEY, \"loaded_at\" timestamptz NOT NULL DEFAULT now())",
            quote(table)
        ),
        SchemaChange::AddColumn {
            table,
            column,
            kind,
        } => format!(
            "ALTER TABLE {schema}.{} ADD COLUMN IF NOT EXISTS {} {}",
            quote(table),
            quote(column),
            kind.sql()
        ),
        SchemaChange::Widen { table, column } => format!(
            "ALTER TABLE {schema}.{} ALTER COLUMN {} TYPE double precision",
            quote(table),
            quote(column)
        ),
    }
}

/// A reported problem with how often it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportedProblem {
    #[serde(flatten)]
    pub problem: SchemaProblem,
    pub occurrences: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// The schema problems of one destination, newest last, one entry per
/// (table, column, kind, value type); at most [`WAREHOUSE_SCHEMA_PROBLEMS_KEPT`] entries (the
/// least recently seen is dropped; the warehouse's `schema_problems` table keeps them all).
#[derive(Debug, Default)]
pub struct ProblemLog {
    entries: parking_lot::Mutex<Vec<ReportedProblem>>,
}

impl ProblemLog {
    /// Adds problems seen at `now_ms`; answers those never seen before (to log them once).
    pub fn record(&self, problems: &[SchemaProblem], now_ms: i64) -> Vec<SchemaProblem> {
        let mut entries = self.entries.lock();
        let mut new = Vec::new();
        for problem in problems {
            let key = problem.key();
            match entries.iter().position(|entry| entry.problem.key() == key) {
                Some(index) => {
                    let mut entry = entries.remove(index);
                    entry.occurrences += 1;
                    entry.last_seen_ms = now_ms;
                    entry.problem = problem.clone();
                    entries.push(entry);
                }
                None => {
                    if entries.len() >= WAREHOUSE_SCHEMA_PROBLEMS_KEPT {
                        entries.remove(0);
                    }
                    entries.push(ReportedProblem {
                        problem: problem.clone(),
                        occurrences: 1,
                        first_seen_ms: now_ms,
                        last_seen_ms: now_ms,
                    });
                    new.push(problem.clone());
                }
            }
        }
        new
    }

    pub fn list(&self) -> Vec<ReportedProblem> {
        self.entries.lock().clone()
    }
}

/// The problem log of every warehouse destination built in this process, by (workspace,
/// destination): a destination rebuilt after a settings change keeps its log.
static PROBLEM_LOGS: std::sync::LazyLock<parking_lot::Mutex<ProblemLogs>> =
    std::sync::LazyLock::new(Default::default);

/// (workspace, destination) → its problem log.
type ProblemLogs = HashMap<(String, String), std::sync::Arc<ProblemLog>>;

pub fn problem_log(workspace_id: &str, destination_id: &str) -> std::sync::Arc<ProblemLog> {
    PROBLEM_LOGS
        .lock()
        .entry((workspace_id.to_string(), destination_id.to_string()))
        .or_default()
        .clone()
}

/// The schema problems (type conflicts, values not stored) a warehouse destination met, for the
/// API: empty for a destination that has none or is not a warehouse.
pub fn schema_problems(workspace_id: &str, destination_id: &str) -> Vec<ReportedProblem> {
    PROBLEM_LOGS
        .lock()
        .get(&(workspace_id.to_string(), destination_id.to_string()))
        .map(|log| log.list())
        .unwrap_or_default()
}
