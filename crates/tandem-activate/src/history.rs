//! The version history of a workspace's API-managed configuration and its change requests, in
//! the activate store (`DATA/activate/<workspace>.redb`) beside the definitions they describe.
//!
//! Keeping them in the same file as the `definitions` table is what makes a change atomic: one
//! redb write transaction checks every object's version, writes every definition and appends
//! every version record, or does none of it. Sources live in the metadata store; their history
//! is kept here too (`stored: false`: only the version is written, the caller writes the source
//! inside [`Dlq::apply_writes`]'s `before_commit`, so a failed source write aborts the whole
//! transaction).
//!
//! Change requests are stored as opaque JSON: their shape belongs to the server.

use crate::dlq::{Dlq, StoreError, DEFINITIONS};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `(kind, id, version)` → JSON of a [`Version`]; versions start at 1 and are dense per object.
const VERSIONS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("versions");
/// Change request id → its JSON (the server's `ChangeRequest`).
const CHANGE_REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("change_requests");

/// Copies the history tables into another store's transaction (vacuum).
pub(crate) fn copy_tables(
    from: &redb::ReadTransaction,
    to: &WriteTransaction,
) -> Result<(), crate::dlq::StoreError> {
    crate::dlq::copy_table(from, to, VERSIONS)?;
    crate::dlq::copy_table(from, to, CHANGE_REQUESTS)
}

pub(crate) fn create_tables(write: &WriteTransaction) -> Result<(), StoreError> {
    write.open_table(VERSIONS)?;
    write.open_table(CHANGE_REQUESTS)?;
    Ok(())
}

/// One recorded change of one object: its whole JSON before and after, who, when and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// `source`, `destination` or `connection`.
    pub kind: String,
    pub id: String,
    pub version: u64,
    /// Absent: the change created the object.
    pub before: Option<Value>,
    /// Absent: the change deleted the object.
    pub after: Option<Value>,
    pub at_ms: i64,
    /// The principal who made the change (or approved the change request that made it).
    pub by: String,
    /// The change request it applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_request: Option<String>,
    /// Why, in words (`create`, `update`, `delete`, `rollback to version 3`).
    pub reason: String,
}

/// One object's change, checked against what it was when the change was prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionWrite {
    pub kind: String,
    pub id: String,
    /// What the object must be now (absent: it must not exist); a difference is a conflict.
    pub before: Option<Value>,
    /// What it becomes (absent: deleted).
    pub after: Option<Value>,
    /// The object's latest version when the change was prepared (0: none recorded).
    pub base_version: u64,
    /// Whether this store keeps the definition (destinations, connections) or only its history.
    pub stored: bool,
    pub reason: String,
}

/// Who applies a set of writes, and for which change request.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub by: String,
    pub change_request: Option<String>,
    pub at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An object changed since the change was prepared; nothing was written.
    #[error("{0}")]
    Conflict(String),
    /// `before_commit` refused; nothing was written.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

macro_rules! apply_store_error {
    ($($kind:ty),*) => {$(
        impl From<$kind> for ApplyError {
            fn from(error: $kind) -> Self { ApplyError::Store(StoreError::from(error)) }
        }
    )*};
}
apply_store_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// The newest version number of `(kind, id)` in `table` (0 when none).
fn latest_in(
    table: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    kind: &str,
    id: &str,
) -> Result<u64, StoreError> {
    let last = table
        .range((kind, id, 0)..=(kind, id, u64::MAX))?
        .next_back();
    Ok(match last {
        Some(row) => row?.0.value().2,
        None => 0,
    })
}

impl Dlq {
    /// The newest version number of an object (0 when it has no recorded history).
    pub fn latest_version(&self, kind: &str, id: &str) -> Result<u64, StoreError> {
        let read = self.database.read().begin_read()?;
        latest_in(&read.open_table(VERSIONS)?, kind, id)
    }

    /// The versions of one object (`kind` and `id`), of one kind, or of everything; oldest first
    /// per object.
    pub fn versions(
        &self,
        kind: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<Version>, StoreError> {
        let read = self.database.read().begin_read()?;
        let table = read.open_table(VERSIONS)?;
        let mut found = Vec::new();
        for row in table.iter()? {
            let (key, bytes) = row?;
            let (row_kind, row_id, _) = key.value();
            if kind.is_some_and(|kind| kind != row_kind) || id.is_some_and(|id| id != row_id) {
                continue;
            }
            found.push(serde_json::from_slice(bytes.value())?);
        }
        Ok(found)
    }

    pub fn version(
        &self,
        kind: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<Version>, StoreError> {
        let read = self.database.read().begin_read()?;
        let table = read.open_table(VERSIONS)?;
        let found = table.get((kind, id, version))?;
        Ok(match found {
            Some(bytes) => Some(serde_json::from_slice(bytes.value())?),
            None => None,
        })
    }

    /// Applies every write or none, in one durable transaction: each object's latest version
    /// must still be its `base_version` and its stored definition still its `before` (else
    /// [`ApplyError::Conflict`] naming it); then definitions are written or removed and one
    /// version appended per write. `before_commit` runs last, inside the transaction (the
    /// caller's writes to other stores); its error aborts everything. Returns the new versions.
    pub fn apply_writes(
        &self,
        writes: &[DefinitionWrite],
        provenance: &Provenance,
        before_commit: impl FnOnce() -> Result<(), String>,
    ) -> Result<Vec<Version>, ApplyError> {
        let write = self.database.read().begin_write()?;
        let mut recorded = Vec::with_capacity(writes.len());
        {
            let mut versions = write.open_table(VERSIONS)?;
            let mut definitions = write.open_table(DEFINITIONS)?;
            for change in writes {
                let (kind, id) = (change.kind.as_str(), change.id.as_str());
                let latest = latest_in(&versions, kind, id)?;
                if latest != change.base_version {
                    return Err(ApplyError::Conflict(format!(
                        "{kind} {id} changed since this change was prepared (version {} then, {latest} now)",
                        change.base_version
                    )));
                }
                if change.stored {
                    let current: Option<Value> = match definitions.get((kind, id))? {
                        Some(bytes) => Some(serde_json::from_slice(bytes.value())?),
                        None => None,
                    };
                    if current != change.before {
                        return Err(ApplyError::Conflict(match (&current, &change.before) {
                            (Some(_), None) => format!("{kind} {id} exists already"),
                            (None, Some(_)) => format!("{kind} {id} no longer exists"),
                            _ => format!("{kind} {id} changed since this change was prepared"),
                        }));
                    }
                    match &change.after {
                        Some(after) => {
                            definitions
                                .insert((kind, id), serde_json::to_vec(after)?.as_slice())?;
                        }
                        None => {
                            definitions.remove((kind, id))?;
                        }
                    }
                }
                let version = Version {
                    kind: kind.to_string(),
                    id: id.to_string(),
                    version: latest + 1,
                    before: change.before.clone(),
                    after: change.after.clone(),
                    at_ms: provenance.at_ms,
                    by: provenance.by.clone(),
                    change_request: provenance.change_request.clone(),
                    reason: change.reason.clone(),
                };
                versions.insert(
                    (kind, id, version.version),
                    serde_json::to_vec(&version)?.as_slice(),
                )?;
                recorded.push(version);
            }
        }
        before_commit().map_err(ApplyError::Refused)?;
        write.commit()?;
        Ok(recorded)
    }

    /// Stores (creates or replaces) a change request's JSON, durably.
    pub fn put_change_request(&self, id: &str, json: &Value) -> Result<(), StoreError> {
        let write = self.database.read().begin_write()?;
        write
            .open_table(CHANGE_REQUESTS)?
            .insert(id, serde_json::to_vec(json)?.as_slice())?;
        write.commit()?;
        Ok(())
    }

    pub fn change_request(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let read = self.database.read().begin_read()?;
        let table = read.open_table(CHANGE_REQUESTS)?;
        let found = table.get(id)?;
        Ok(match found {
            Some(bytes) => Some(serde_json::from_slice(bytes.value())?),
            None => None,
        })
    }

    /// Every change request, by id (ids sort by creation time).
    pub fn change_requests(&self) -> Result<Vec<Value>, StoreError> {
        let read = self.database.read().begin_read()?;
        let table = read.open_table(CHANGE_REQUESTS)?;
        let mut found = Vec::new();
        for row in table.iter()? {
            found.push(serde_json::from_slice(row?.1.value())?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Dlq) {
        let dir = tempfile::tempdir().unwrap();
        let dlq = Dlq::open(&dir.path().join("ws.redb")).unwrap();
        (dir, dlq)
    }

    fn write(
        kind: &str,
        id: &str,
        before: Option<Value>,
        after: Option<Value>,
        base: u64,
    ) -> DefinitionWrite {
        DefinitionWrite {
            kind: kind.into(),
            id: id.into(),
            before,
            after,
            base_version: base,
            stored: kind != "source",
            reason: "test".into(),
        }
    }

    fn by(name: &str) -> Provenance {
        Provenance {
            by: name.into(),
            change_request: None,
            at_ms: 1,
        }
    }

    #[test]
    fn writes_apply_together_with_dense_versions() {
        let (_dir, dlq) = store();
        let destination = json!({"id": "hook", "url": 1});
        let connection = json!({"id": "c1", "destination": "hook"});
        let versions = dlq
            .apply_writes(
                &[
                    write("destination", "hook", None, Some(destination.clone()), 0),
                    write("connection", "c1", None, Some(connection.clone()), 0),
                    write(
                        "source",
                        "web",
                        Some(json!({"enabled": true})),
                        Some(json!({"enabled": false})),
                        0,
                    ),
                ],
                &by("alice"),
                || Ok(()),
            )
            .unwrap();
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        assert_eq!(
            dlq.definitions("destination").unwrap(),
            std::slice::from_ref(&destination)
        );
        assert_eq!(
            dlq.definitions("connection").unwrap(),
            std::slice::from_ref(&connection)
        );
        // Sources' definitions live elsewhere: only their history is here.
        assert!(dlq.definitions("source").unwrap().is_empty());
        let changed = json!({"id": "hook", "url": 2});
        dlq.apply_writes(
            &[write(
                "destination",
                "hook",
                Some(destination.clone()),
                Some(changed.clone()),
                1,
            )],
            &by("bob"),
            || Ok(()),
        )
        .unwrap();
        let history = dlq.versions(Some("destination"), Some("hook")).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].before, Some(destination));
        assert_eq!(history[1].after, Some(changed));
        assert_eq!(history[1].by, "bob");
        assert_eq!(dlq.latest_version("destination", "hook").unwrap(), 2);
        assert_eq!(
            dlq.version("connection", "c1", 1).unwrap().unwrap().after,
            Some(connection)
        );
    }

    #[test]
    fn a_stale_write_or_a_refusal_applies_nothing() {
        let (_dir, dlq) = store();
        let first = json!({"id": "hook", "v": 1});
        dlq.apply_writes(
            &[write("destination", "hook", None, Some(first.clone()), 0)],
            &by("a"),
            || Ok(()),
        )
        .unwrap();
        // Prepared against version 0: stale. The first write of the batch is undone too.
        let stale = dlq.apply_writes(
            &[
                write("connection", "c1", None, Some(json!({"id": "c1"})), 0),
                write(
                    "destination",
                    "hook",
                    None,
                    Some(json!({"id": "hook", "v": 9})),
                    0,
                ),
            ],
            &by("a"),
            || Ok(()),
        );
        assert!(
            matches!(stale, Err(ApplyError::Conflict(message)) if message.contains("destination hook"))
        );
        assert!(dlq.definitions("connection").unwrap().is_empty());
        // The right version but another definition than expected: also a conflict.
        let changed_behind = dlq.apply_writes(
            &[write(
                "destination",
                "hook",
                Some(json!({"id": "hook", "v": 0})),
                None,
                1,
            )],
            &by("a"),
            || Ok(()),
        );
        assert!(matches!(changed_behind, Err(ApplyError::Conflict(_))));
        let refused = dlq.apply_writes(
            &[write("destination", "hook", Some(first.clone()), None, 1)],
            &by("a"),
            || Err("the source store said no".into()),
        );
        assert!(matches!(refused, Err(ApplyError::Refused(_))));
        assert_eq!(dlq.definitions("destination").unwrap(), [first]);
        assert_eq!(dlq.latest_version("destination", "hook").unwrap(), 1);
    }

    #[test]
    fn change_requests_round_trip() {
        let (_dir, dlq) = store();
        dlq.put_change_request("cr_2", &json!({"id": "cr_2"}))
            .unwrap();
        dlq.put_change_request("cr_1", &json!({"id": "cr_1", "status": "open"}))
            .unwrap();
        dlq.put_change_request("cr_1", &json!({"id": "cr_1", "status": "applied"}))
            .unwrap();
        assert_eq!(
            dlq.change_request("cr_1").unwrap().unwrap()["status"],
            "applied"
        );
        assert_eq!(dlq.change_requests().unwrap().len(), 2);
        assert!(dlq.change_request("cr_3").unwrap().is_none());
    }
}
