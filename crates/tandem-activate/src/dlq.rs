//! The dead-letter queue of a workspace, in redb at `DATA/activate/<workspace>.redb`: events a
//! destination refused for good, or whose retry budget ran out, with the ORIGINAL event (before
//! mappings and transformation) so a replay after a fix re-shapes it. Keyed (connection, offset,
//! fan-out index): inserting the same failure twice (a redelivery after a crash) keeps one entry.
//! Every insert commits durably before the worker's offset may pass it.
//!
//! The same file keeps the destinations and connections created through the API (table
//! `definitions`), so a workspace's activation state is one file.

use parking_lot::Mutex;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

const DLQ: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("dlq");
/// `("destination" | "connection", id)` → JSON of its config.
pub(crate) const DEFINITIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("definitions");

#[derive(Debug, thiserror::Error)]
#[error("activate store: {0}")]
pub struct StoreError(pub(crate) String);

macro_rules! store_error {
    ($($kind:ty),*) => {$(
        impl From<$kind> for StoreError {
            fn from(error: $kind) -> Self { StoreError(error.to_string()) }
        }
    )*};
}
store_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlqEntry {
    pub connection: String,
    pub offset: u64,
    /// Which output of a fan-out transformation (0 without one).
    pub index: u32,
    pub message_id: String,
    pub event_type: String,
    pub source_id: String,
    pub received_at_ms: i64,
    /// The event as stored in the log, before mappings and transformation.
    pub original: serde_json::Value,
    pub error: String,
    pub attempts: u32,
    pub first_failure_ms: i64,
    pub last_failure_ms: i64,
}

impl DlqEntry {
    /// The entry's id in the API: `<offset>-<index>`.
    pub fn id(&self) -> String {
        format!("{}-{}", self.offset, self.index)
    }

    /// The track event name, if any.
    pub fn event_name(&self) -> Option<&str> {
        self.original
            .get("event")
            .and_then(serde_json::Value::as_str)
    }
}

/// Most dead letters [`Dlq::expire_older_than`] removes in one write transaction: a large
/// expiry is several short transactions, so deliveries writing new entries wait little.
pub const DLQ_EXPIRE_TRANSACTION_ENTRIES_MAX: usize = 10_000;

/// The one field expiry reads of an entry (the payload is skipped, not kept).
#[derive(Deserialize)]
struct LastFailure {
    last_failure_ms: i64,
}

/// Parses an entry id `<offset>-<index>`.
pub fn parse_entry_id(id: &str) -> Option<(u64, u32)> {
    let (offset, index) = id.split_once('-')?;
    Some((offset.parse().ok()?, index.parse().ok()?))
}

/// Which entries a listing, replay or discard covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlqFilter {
    /// Only entries after this id (pagination).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Only entries whose error contains this text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_contains: Option<String>,
    /// Only track events of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

impl DlqFilter {
    fn matches(&self, entry: &DlqEntry) -> bool {
        self.error_contains
            .as_deref()
            .is_none_or(|text| entry.error.contains(text))
            && self
                .event
                .as_deref()
                .is_none_or(|name| entry.event_name() == Some(name))
    }
}

/// Copies every row of `table` from one transaction into another (vacuum).
pub(crate) fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<(), StoreError> {
    let source = from.open_table(table)?;
    let mut target = to.open_table(table)?;
    for row in source.iter()? {
        let (key, value) = row?;
        target.insert(key.value(), value.value())?;
    }
    Ok(())
}

/// The activate store of one workspace: its DLQ and its API-created definitions.
pub struct Dlq {
    pub(crate) database: parking_lot::RwLock<Database>,
    path: std::path::PathBuf,
    /// Entries per connection, kept beside the table so status reads are O(1).
    counts: Mutex<HashMap<String, u64>>,
}

impl Dlq {
    pub fn open(path: &Path) -> Result<Dlq, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| StoreError(error.to_string()))?;
        }
        let database = Database::create(path)?;
        let write = database.begin_write()?;
        write.open_table(DLQ)?;
        write.open_table(DEFINITIONS)?;
        crate::history::create_tables(&write)?;
        write.commit()?;
        let mut counts: HashMap<String, u64> = HashMap::new();
        {
            let read = database.begin_read()?;
            let table = read.open_table(DLQ)?;
            for row in table.iter()? {
                let (key, _) = row?;
                *counts.entry(key.value().0.to_string()).or_default() += 1;
            }
        }
        Ok(Dlq {
            database: parking_lot::RwLock::new(database),
            path: path.to_path_buf(),
            counts: Mutex::new(counts),
        })
    }

    /// Inserts (or, for a key already there, updates: new error, attempts added, first failure
    /// kept) `entries` in one durable transaction.
    pub fn insert(&self, entries: &[DlqEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut added: HashMap<String, u64> = HashMap::new();
        let write = self.database.read().begin_write()?;
        {
            let mut table = write.open_table(DLQ)?;
            for entry in entries {
                let key = (entry.connection.as_str(), entry.offset, entry.index);
                let previous: Option<DlqEntry> = match table.get(key)? {
                    Some(bytes) => Some(serde_json::from_slice(bytes.value())?),
                    None => None,
                };
                let stored = match previous {
                    Some(previous) => DlqEntry {
                        attempts: previous.attempts + entry.attempts,
                        first_failure_ms: previous.first_failure_ms,
                        ..entry.clone()
                    },
                    None => {
                        *added.entry(entry.connection.clone()).or_default() += 1;
                        entry.clone()
                    }
                };
                table.insert(key, serde_json::to_vec(&stored)?.as_slice())?;
            }
        }
        write.commit()?;
        let mut counts = self.counts.lock();
        for (connection, count) in added {
            *counts.entry(connection).or_default() += count;
        }
        Ok(())
    }

    /// Every dead letter `names_subject` says is the data subject's (a DSR access request).
    pub fn find_matching(
        &self,
        names_subject: &dyn Fn(&DlqEntry) -> bool,
    ) -> Result<Vec<DlqEntry>, StoreError> {
        let mut found = Vec::new();
        let read = self.database.read().begin_read()?;
        let table = read.open_table(DLQ)?;
        for row in table.iter()? {
            let (_, value) = row?;
            let entry: DlqEntry = serde_json::from_slice(value.value())?;
            if names_subject(&entry) {
                found.push(entry);
            }
        }
        Ok(found)
    }

    /// Removes every dead letter `names_subject` says is the data subject's (a DSR erasure),
    /// in one durable transaction; answers how many.
    pub fn erase_matching(
        &self,
        names_subject: &dyn Fn(&DlqEntry) -> bool,
    ) -> Result<u64, StoreError> {
        let doomed: Vec<(String, u64, u32)> = self
            .find_matching(names_subject)?
            .into_iter()
            .map(|entry| (entry.connection, entry.offset, entry.index))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let write = self.database.read().begin_write()?;
        {
            let mut table = write.open_table(DLQ)?;
            for (connection, offset, index) in &doomed {
                table.remove((connection.as_str(), *offset, *index))?;
            }
        }
        write.commit()?;
        let mut counts = self.counts.lock();
        for (connection, _, _) in &doomed {
            let count = counts.entry(connection.clone()).or_default();
            *count = count.saturating_sub(1);
        }
        Ok(doomed.len() as u64)
    }

    /// Removes every dead letter whose last failure is before `cutoff_ms` (retention), in
    /// durable transactions of at most [`DLQ_EXPIRE_TRANSACTION_ENTRIES_MAX`] entries, keeping
    /// the per-connection counts right; answers how many went. Call [`Dlq::vacuum`] after a
    /// removal that removed something, so freed pages do not keep the old payloads.
    pub fn expire_older_than(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut doomed: Vec<(String, u64, u32)> = Vec::new();
        {
            let read = self.database.read().begin_read()?;
            let table = read.open_table(DLQ)?;
            for row in table.iter()? {
                let (key, value) = row?;
                let failure: LastFailure = serde_json::from_slice(value.value())?;
                if failure.last_failure_ms < cutoff_ms {
                    let (connection, offset, index) = key.value();
                    doomed.push((connection.to_string(), offset, index));
                }
            }
        }
        let mut removed = 0;
        for chunk in doomed.chunks(DLQ_EXPIRE_TRANSACTION_ENTRIES_MAX) {
            let mut gone: HashMap<&str, u64> = HashMap::new();
            let write = self.database.read().begin_write()?;
            {
                let mut table = write.open_table(DLQ)?;
                for (connection, offset, index) in chunk {
                    // A replay or discard may have removed it since the scan.
                    if table
                        .remove((connection.as_str(), *offset, *index))?
                        .is_some()
                    {
                        *gone.entry(connection.as_str()).or_default() += 1;
                    }
                }
            }
            write.commit()?;
            let mut counts = self.counts.lock();
            for (connection, count) in gone {
                let kept = counts.entry(connection.to_string()).or_default();
                *kept = kept.saturating_sub(count);
                removed += count;
            }
        }
        Ok(removed)
    }

    /// Rewrites the file with its live rows only — redb reuses freed pages but never clears
    /// them, so an erased dead letter's bytes would linger — and swaps it in. Answers the new
    /// file's size.
    pub fn vacuum(&self) -> Result<u64, StoreError> {
        let mut database = self.database.write();
        let side = self.path.with_extension("redb.vacuum");
        let _ = std::fs::remove_file(&side);
        let io = |error: std::io::Error| StoreError(error.to_string());
        {
            let copy = Database::create(&side)?;
            let read = database.begin_read()?;
            let write = copy.begin_write()?;
            copy_table(&read, &write, DLQ)?;
            copy_table(&read, &write, DEFINITIONS)?;
            crate::history::copy_tables(&read, &write)?;
            write.commit()?;
        }
        std::fs::rename(&side, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io)?;
        }
        *database = Database::create(&self.path)?;
        std::fs::metadata(&self.path).map(|m| m.len()).map_err(io)
    }

    /// Removes entries by (offset, index); returns how many existed.
    pub fn remove(&self, connection: &str, keys: &[(u64, u32)]) -> Result<u64, StoreError> {
        let mut removed = 0;
        let write = self.database.read().begin_write()?;
        {
            let mut table = write.open_table(DLQ)?;
            for &(offset, index) in keys {
                if table.remove((connection, offset, index))?.is_some() {
                    removed += 1;
                }
            }
        }
        write.commit()?;
        let mut counts = self.counts.lock();
        let count = counts.entry(connection.to_string()).or_default();
        *count = count.saturating_sub(removed);
        Ok(removed)
    }

    pub fn get(
        &self,
        connection: &str,
        offset: u64,
        index: u32,
    ) -> Result<Option<DlqEntry>, StoreError> {
        let read = self.database.read().begin_read()?;
        let table = read.open_table(DLQ)?;
        match table.get((connection, offset, index))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries of `connection` matching `filter`, oldest offset first.
    pub fn list(
        &self,
        connection: &str,
        filter: &DlqFilter,
        limit: usize,
    ) -> Result<Vec<DlqEntry>, StoreError> {
        let start = match filter.after.as_deref().and_then(parse_entry_id) {
            Some((offset, index)) => match index.checked_add(1) {
                Some(next) => (offset, next),
                None => (offset.saturating_add(1), 0),
            },
            None => (0, 0),
        };
        let read = self.database.read().begin_read()?;
        let table = read.open_table(DLQ)?;
        let mut entries = Vec::new();
        for row in table.range((connection, start.0, start.1)..=(connection, u64::MAX, u32::MAX))? {
            if entries.len() >= limit {
                break;
            }
            let (_, bytes) = row?;
            let entry: DlqEntry = serde_json::from_slice(bytes.value())?;
            if filter.matches(&entry) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    pub fn count(&self, connection: &str) -> u64 {
        self.counts.lock().get(connection).copied().unwrap_or(0)
    }

    /// Every entry of the workspace (all connections), for tests and the total gauge.
    pub fn total(&self) -> Result<u64, StoreError> {
        let read = self.database.read().begin_read()?;
        Ok(read.open_table(DLQ)?.len()?)
    }

    /// Stores an API-created definition (`kind` = "destination" | "connection").
    pub fn put_definition(
        &self,
        kind: &str,
        id: &str,
        json: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let write = self.database.read().begin_write()?;
        write
            .open_table(DEFINITIONS)?
            .insert((kind, id), serde_json::to_vec(json)?.as_slice())?;
        write.commit()?;
        Ok(())
    }

    pub fn delete_definition(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let write = self.database.read().begin_write()?;
        let existed = write.open_table(DEFINITIONS)?.remove((kind, id))?.is_some();
        write.commit()?;
        Ok(existed)
    }

    /// Every API-created definition of `kind`, by id.
    pub fn definitions(&self, kind: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let read = self.database.read().begin_read()?;
        let table = read.open_table(DEFINITIONS)?;
        let mut found = Vec::new();
        for row in table.range((kind, "")..)? {
            let (key, bytes) = row?;
            if key.value().0 != kind {
                break;
            }
            found.push(serde_json::from_slice(bytes.value())?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(connection: &str, offset: u64, index: u32, error: &str) -> DlqEntry {
        DlqEntry {
            connection: connection.into(),
            offset,
            index,
            message_id: format!("m{offset}"),
            event_type: "track".into(),
            source_id: "web".into(),
            received_at_ms: 1,
            original: json!({"event": if offset.is_multiple_of(2) { "Even" } else { "Odd" }}),
            error: error.into(),
            attempts: 1,
            first_failure_ms: offset as i64,
            last_failure_ms: offset as i64,
        }
    }

    #[test]
    fn insert_is_idempotent_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activate/ws.redb");
        let dlq = Dlq::open(&path).unwrap();
        dlq.insert(&[
            entry("a", 1, 0, "HTTP 400"),
            entry("a", 2, 0, "HTTP 400"),
            entry("b", 1, 0, "x"),
        ])
        .unwrap();
        let mut again = entry("a", 1, 0, "HTTP 422");
        again.first_failure_ms = 99;
        dlq.insert(&[again]).unwrap();
        assert_eq!(dlq.count("a"), 2);
        let stored = dlq.get("a", 1, 0).unwrap().unwrap();
        assert_eq!(
            (
                stored.error.as_str(),
                stored.attempts,
                stored.first_failure_ms
            ),
            ("HTTP 422", 2, 1)
        );
        drop(dlq);
        let dlq = Dlq::open(&path).unwrap();
        assert_eq!(
            (dlq.count("a"), dlq.count("b"), dlq.total().unwrap()),
            (2, 1, 3)
        );
        assert_eq!(dlq.remove("a", &[(1, 0), (7, 0)]).unwrap(), 1);
        assert_eq!(dlq.count("a"), 1);
    }

    #[test]
    fn expiry_removes_only_old_entries_and_keeps_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws.redb");
        let dlq = Dlq::open(&path).unwrap();
        // `entry` sets last_failure_ms = offset.
        dlq.insert(&[
            entry("a", 1, 0, "x"),
            entry("a", 5, 0, "x"),
            entry("a", 9, 0, "x"),
            entry("b", 2, 0, "x"),
            entry("b", 3, 1, "x"),
            entry("c", 10, 0, "x"),
        ])
        .unwrap();
        // Before 5: a/1, b/2, b/3-1 go; a/5 (not before the cutoff) stays.
        assert_eq!(dlq.expire_older_than(5).unwrap(), 3);
        assert_eq!((dlq.count("a"), dlq.count("b"), dlq.count("c")), (2, 0, 1));
        assert!(dlq.get("a", 1, 0).unwrap().is_none());
        assert!(dlq.get("a", 5, 0).unwrap().is_some());
        assert_eq!(dlq.expire_older_than(5).unwrap(), 0);
        dlq.vacuum().unwrap();
        drop(dlq);
        // The counts kept in memory are the ones a reopen recounts.
        let dlq = Dlq::open(&path).unwrap();
        assert_eq!(
            (
                dlq.count("a"),
                dlq.count("b"),
                dlq.count("c"),
                dlq.total().unwrap()
            ),
            (2, 0, 1, 3)
        );
    }

    #[test]
    fn list_filters_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = Dlq::open(&dir.path().join("ws.redb")).unwrap();
        let entries: Vec<_> = (0..10)
            .map(|offset| {
                entry(
                    "a",
                    offset,
                    0,
                    if offset < 5 { "HTTP 400" } else { "timeout" },
                )
            })
            .collect();
        dlq.insert(&entries).unwrap();
        dlq.insert(&[entry("b", 3, 0, "HTTP 400")]).unwrap();
        let page = dlq.list("a", &DlqFilter::default(), 4).unwrap();
        assert_eq!(
            page.iter().map(DlqEntry::id).collect::<Vec<_>>(),
            ["0-0", "1-0", "2-0", "3-0"]
        );
        let next = dlq
            .list(
                "a",
                &DlqFilter {
                    after: Some("3-0".into()),
                    ..Default::default()
                },
                100,
            )
            .unwrap();
        assert_eq!(next.len(), 6);
        let filter = DlqFilter {
            error_contains: Some("timeout".into()),
            event: Some("Odd".into()),
            ..Default::default()
        };
        let found = dlq.list("a", &filter, 100).unwrap();
        assert_eq!(
            found.iter().map(|entry| entry.offset).collect::<Vec<_>>(),
            [5, 7, 9]
        );
        assert_eq!(parse_entry_id("12-3"), Some((12, 3)));
        assert_eq!(parse_entry_id("12"), None);
    }

    #[test]
    fn definitions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = Dlq::open(&dir.path().join("ws.redb")).unwrap();
        dlq.put_definition("destination", "hook", &json!({"id": "hook"}))
            .unwrap();
        dlq.put_definition("connection", "c1", &json!({"id": "c1"}))
            .unwrap();
        assert_eq!(
            dlq.definitions("destination").unwrap(),
            vec![json!({"id": "hook"})]
        );
        assert!(dlq.delete_definition("connection", "c1").unwrap());
        assert!(dlq.definitions("connection").unwrap().is_empty());
    }
}
