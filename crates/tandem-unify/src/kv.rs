//! The storage contract of unify: an ordered key-value space split into tables, read and written
//! in transactions. `RedbKv` is the embedded implementation; `MemoryKv` is the simple model the
//! property tests compare against and what `tandem rebuild --dry-run` uses. A PostgreSQL
//! implementation (one `(table, key, value)` relation) keeps the same contract.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

/// The tables of the unify state. The byte is the key prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Table {
    /// identity key → `IdentityRow`
    Identities = 1,
    /// profile id → `ProfileRow`
    Profiles = 2,
    /// profile id, event time, dedup key → `TimelineRow`
    Timeline = 3,
    /// identity key, 0xFF, identity key → `LinkRow` (both directions)
    Links = 4,
    /// profile id, offset, absorbed id → `MergeRow`
    Merges = 5,
    /// offset, index → `RefusalRow`: merges that did not happen, and why
    Refusals = 6,
    /// identity key → `Vec<SplitSide>`
    Separations = 7,
    /// split id → `SplitRow`
    Splits = 8,
    /// group id → `AccountRow`
    Accounts = 9,
    /// group id, 0xFF, profile id → `()`
    Members = 10,
    /// profile id, trait name → computed-trait state
    Computed = 11,
    /// absorbed profile id → surviving profile id
    Redirects = 12,
    /// name → value (the consumer's offset, counters)
    Meta = 13,
    /// dedup key (source, messageId) → (): events already applied, so a redelivery —
    /// even with a different receive time — changes nothing
    Seen = 14,
    /// expiry time, profile id, trait name → (): when a windowed computed trait's oldest day
    /// leaves its window
    Expiry = 15,
    /// Audience memberships, their outbox and bookkeeping, owned by `tandem-audiences` (its
    /// keys start with a sub-table byte): in this store so that a batch, the memberships it
    /// changes and the events announcing them commit in one transaction.
    Audiences = 16,
    /// profile id, event time, dedup key → `ConsentRow`: the consent history (a row whenever
    /// an event's preferences differ from those before it in time), the proof of each choice
    Consent = 17,
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("store: {0}")]
    Store(String),
    #[error("corrupt value in {table:?}: {message}")]
    Corrupt { table: Table, message: String },
}

impl KvError {
    pub fn store(error: impl std::fmt::Display) -> KvError {
        KvError::Store(error.to_string())
    }
}

pub type KvResult<T> = Result<T, KvError>;

fn prefixed(table: Table, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(table as u8);
    out.extend_from_slice(key);
    out
}

/// The end of the key range of all keys starting with `prefix` (exclusive), or none if unbounded.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Reads.
pub trait KvRead {
    fn get(&self, table: Table, key: &[u8]) -> KvResult<Option<Vec<u8>>>;
    /// Up to `limit` entries whose key starts with `prefix`, from `after` (exclusive) on, in key
    /// order or reversed. Keys are returned without the table byte.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// Writes, within one transaction.
pub trait KvWrite: KvRead {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> KvResult<()>;
    fn delete(&mut self, table: Table, key: &[u8]) -> KvResult<()>;
}

fn bounds(
    table: Table,
    prefix: &[u8],
    after: Option<&[u8]>,
    reverse: bool,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start_all = prefixed(table, prefix);
    let end_all = prefix_end(&start_all);
    let upper = match end_all {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    match (after, reverse) {
        (None, _) => (Bound::Included(start_all), upper),
        (Some(after), false) => (Bound::Excluded(prefixed(table, after)), upper),
        (Some(after), true) => (
            Bound::Included(start_all),
            Bound::Excluded(prefixed(table, after)),
        ),
    }
}

/// The in-memory model: a sorted map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryKv {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvRead for MemoryKv {
    fn get(&self, table: Table, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Ok(self.map.get(&prefixed(table, key)).cloned())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let range = self.map.range(bounds(table, prefix, after, reverse));
        let strip = |(k, v): (&Vec<u8>, &Vec<u8>)| (k[1..].to_vec(), v.clone());
        Ok(if reverse {
            range.rev().take(limit).map(strip).collect()
        } else {
            range.take(limit).map(strip).collect()
        })
    }
}

impl KvWrite for MemoryKv {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> KvResult<()> {
        self.map.insert(prefixed(table, key), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> KvResult<()> {
        self.map.remove(&prefixed(table, key));
        Ok(())
    }
}

const KV: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("unify");

/// A consistent read snapshot of a `RedbKv`.
pub type Snapshot = RedbTable<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>;

/// The embedded store: one redb file per workspace.
pub struct RedbKv {
    db: redb::Database,
}

/// Reads from a redb table (a read or a write transaction's).
pub struct RedbTable<T>(pub T);

impl<T: redb::ReadableTable<&'static [u8], &'static [u8]>> KvRead for RedbTable<T> {
    fn get(&self, table: Table, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Ok(self
            .0
            .get(prefixed(table, key).as_slice())
            .map_err(KvError::store)?
            .map(|value| value.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let (low, high) = bounds(table, prefix, after, reverse);
        let (low, high) = (
            low.as_ref().map(Vec::as_slice),
            high.as_ref().map(Vec::as_slice),
        );
        let range = self.0.range::<&[u8]>((low, high)).map_err(KvError::store)?;
        let mut out = Vec::new();
        type Entry<'a> = Result<
            (
                redb::AccessGuard<'a, &'static [u8]>,
                redb::AccessGuard<'a, &'static [u8]>,
            ),
            redb::StorageError,
        >;
        let mut push = |entry: Entry| -> KvResult<bool> {
            let (key, value) = entry.map_err(KvError::store)?;
            out.push((key.value()[1..].to_vec(), value.value().to_vec()));
            Ok(out.len() < limit)
        };
        if limit == 0 {
            return Ok(out);
        }
        if reverse {
            for entry in range.rev() {
                if !push(entry)? {
                    break;
                }
            }
        } else {
            for entry in range {
                if !push(entry)? {
                    break;
                }
            }
        }
        Ok(out)
    }
}

impl KvWrite for RedbTable<redb::Table<'_, &'static [u8], &'static [u8]>> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> KvResult<()> {
        self.0
            .insert(prefixed(table, key).as_slice(), value)
            .map_err(KvError::store)?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> KvResult<()> {
        self.0
            .remove(prefixed(table, key).as_slice())
            .map_err(KvError::store)?;
        Ok(())
    }
}

/// Rows per write transaction when a store is copied (bounds the copy's dirty pages in memory).
pub const COPY_ROWS_PER_TRANSACTION: usize = 100_000;

/// Bytes of page cache redb keeps for the unify store.
pub const REDB_CACHE_BYTES: usize = 1024 * 1024 * 1024;

impl RedbKv {
    pub fn open(path: &Path) -> KvResult<RedbKv> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(KvError::store)?;
        }
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(path)
            .map_err(KvError::store)?;
        let txn = db.begin_write().map_err(KvError::store)?;
        txn.open_table(KV).map_err(KvError::store)?;
        txn.commit().map_err(KvError::store)?;
        Ok(RedbKv { db })
    }

    /// Runs `work` in a write transaction and commits it; `durable` chooses fsync at commit. A
    /// non-durable commit is lost on a crash together with everything after it (never partly).
    pub fn write<T>(
        &self,
        durable: bool,
        work: impl FnOnce(&mut RedbTable<redb::Table<'_, &'static [u8], &'static [u8]>>) -> KvResult<T>,
    ) -> KvResult<T> {
        let mut txn = self.db.begin_write().map_err(KvError::store)?;
        if !durable {
            txn.set_durability(redb::Durability::None);
        }
        let result = {
            let table = txn.open_table(KV).map_err(KvError::store)?;
            let mut table = RedbTable(table);
            work(&mut table)?
        };
        txn.commit().map_err(KvError::store)?;
        Ok(result)
    }

    /// Runs `work` in a write transaction that decides itself whether its commit fsyncs: it
    /// returns its result and `true` for a durable commit.
    pub fn write_deciding<T>(
        &self,
        work: impl FnOnce(
            &mut RedbTable<redb::Table<'_, &'static [u8], &'static [u8]>>,
        ) -> KvResult<(T, bool)>,
    ) -> KvResult<T> {
        let mut txn = self.db.begin_write().map_err(KvError::store)?;
        let (result, durable) = {
            let table = txn.open_table(KV).map_err(KvError::store)?;
            let mut table = RedbTable(table);
            work(&mut table)?
        };
        if !durable {
            txn.set_durability(redb::Durability::None);
        }
        txn.commit().map_err(KvError::store)?;
        Ok(result)
    }

    /// Copies every row of a consistent snapshot into a new file at `path` (which must not
    /// exist), fsynced. The copy holds only live rows: freed pages of the original — where
    /// erased rows' bytes may linger until reused — are not carried over. This is how an
    /// erasure becomes physical.
    pub fn copy_to(&self, path: &Path) -> KvResult<RedbKv> {
        use redb::ReadableTable;
        let copy = RedbKv::open(path)?;
        let txn = self.db.begin_read().map_err(KvError::store)?;
        let table = txn.open_table(KV).map_err(KvError::store)?;
        let mut rows = table.iter().map_err(KvError::store)?.peekable();
        while rows.peek().is_some() {
            let out = copy.db.begin_write().map_err(KvError::store)?;
            {
                let mut target = out.open_table(KV).map_err(KvError::store)?;
                for row in rows.by_ref().take(COPY_ROWS_PER_TRANSACTION) {
                    let (key, value) = row.map_err(KvError::store)?;
                    target
                        .insert(key.value(), value.value())
                        .map_err(KvError::store)?;
                }
            }
            out.commit().map_err(KvError::store)?;
        }
        Ok(copy)
    }

    /// Runs `work` on a consistent snapshot.
    pub fn read<T>(
        &self,
        work: impl FnOnce(&RedbTable<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>) -> KvResult<T>,
    ) -> KvResult<T> {
        let txn = self.db.begin_read().map_err(KvError::store)?;
        let table = txn.open_table(KV).map_err(KvError::store)?;
        work(&RedbTable(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(kv: &mut impl KvWrite) {
        for key in [b"a1".as_slice(), b"a2", b"a3", b"b1"] {
            kv.put(Table::Timeline, key, key).unwrap();
        }
        kv.put(Table::Profiles, b"a9", b"other table").unwrap();
        let keys = |rows: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
            rows.into_iter().map(|r| r.0).collect()
        };
        assert_eq!(
            keys(kv.scan(Table::Timeline, b"a", None, false, 10).unwrap()),
            [b"a1".to_vec(), b"a2".to_vec(), b"a3".to_vec()]
        );
        assert_eq!(
            keys(kv.scan(Table::Timeline, b"a", None, true, 2).unwrap()),
            [b"a3".to_vec(), b"a2".to_vec()]
        );
        assert_eq!(
            keys(
                kv.scan(Table::Timeline, b"a", Some(b"a1"), false, 10)
                    .unwrap()
            ),
            [b"a2".to_vec(), b"a3".to_vec()]
        );
        assert_eq!(
            keys(
                kv.scan(Table::Timeline, b"a", Some(b"a3"), true, 10)
                    .unwrap()
            ),
            [b"a2".to_vec(), b"a1".to_vec()]
        );
        kv.delete(Table::Timeline, b"a2").unwrap();
        assert_eq!(kv.get(Table::Timeline, b"a2").unwrap(), None);
        assert_eq!(
            kv.get(Table::Profiles, b"a9").unwrap().unwrap(),
            b"other table"
        );
        assert_eq!(
            kv.scan(Table::Profiles, b"", None, false, 10)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn memory_and_redb_scan_alike() {
        exercise(&mut MemoryKv::default());
        let dir = tempfile::tempdir().unwrap();
        let kv = RedbKv::open(&dir.path().join("u.redb")).unwrap();
        kv.write(true, |table| {
            exercise(table);
            Ok(())
        })
        .unwrap();
        let value = kv.read(|table| table.get(Table::Timeline, b"a1")).unwrap();
        assert_eq!(value.unwrap(), b"a1");
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
