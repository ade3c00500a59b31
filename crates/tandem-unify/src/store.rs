//! The unify state of one workspace: a `RedbKv` file whose transactions carry both the effects of
//! a batch of records and the offset after it, so state and position can never disagree.

use crate::engine::{Applied, Engine, RecordSource};
use crate::kv::{KvRead, KvResult, MemoryKv, RedbKv, RedbTable, Table};
use std::path::Path;

const OFFSET_KEY: &[u8] = b"offset";
const FINGERPRINT_KEY: &[u8] = b"rules_fingerprint";

/// Totals of a batch, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub records: u64,
    pub created: u64,
    pub merged: u64,
    pub refused: u64,
    pub duplicates: u64,
    pub unattributed: u64,
    pub unreadable: u64,
    pub ignored_identifiers: u64,
    pub splits: u64,
}

impl BatchStats {
    pub fn add(&mut self, applied: &Applied) {
        self.records += 1;
        self.created += applied.created as u64;
        self.merged += applied.merged as u64;
        self.refused += applied.refused as u64;
        self.duplicates += applied.duplicate as u64;
        self.unattributed += applied.unattributed as u64;
        self.unreadable += applied.unreadable as u64;
        self.ignored_identifiers += applied.ignored_identifiers as u64;
        self.splits += applied.split.is_some() as u64;
    }
}

impl std::ops::AddAssign<&BatchStats> for BatchStats {
    fn add_assign(&mut self, other: &BatchStats) {
        self.records += other.records;
        self.created += other.created;
        self.merged += other.merged;
        self.refused += other.refused;
        self.duplicates += other.duplicates;
        self.unattributed += other.unattributed;
        self.unreadable += other.unreadable;
        self.ignored_identifiers += other.ignored_identifiers;
        self.splits += other.splits;
    }
}

/// The next offset to apply, as stored.
pub fn stored_offset(kv: &impl KvRead) -> KvResult<Option<u64>> {
    Ok(kv
        .get(Table::Meta, OFFSET_KEY)?
        .and_then(|bytes| bytes.as_slice().try_into().ok().map(u64::from_be_bytes)))
}

pub struct UnifyStore {
    kv: RedbKv,
}

impl UnifyStore {
    pub fn open(path: &Path) -> KvResult<UnifyStore> {
        Ok(UnifyStore {
            kv: RedbKv::open(path)?,
        })
    }

    /// The next log offset to apply (0 for a new store).
    pub fn next_offset(&self) -> KvResult<u64> {
        Ok(self.kv.read(stored_offset)?.unwrap_or(0))
    }

    /// Applies `records` (offset, payload; consecutive) in one transaction that also stores the
    /// offset after the last one. `durable` makes the commit fsync.
    pub fn apply_batch(
        &self,
        engine: &Engine,
        source: &dyn RecordSource,
        records: &[(u64, Vec<u8>)],
        durable: bool,
    ) -> KvResult<BatchStats> {
        self.kv
            .write(durable, |kv| apply_all(kv, engine, source, records))
    }

    /// The fingerprint of the rules the state was built with.
    pub fn fingerprint(&self) -> KvResult<Option<String>> {
        self.kv.read(|kv| {
            Ok(kv
                .get(Table::Meta, FINGERPRINT_KEY)?
                .map(|bytes| String::from_utf8_lossy(&bytes).to_string()))
        })
    }

    pub fn set_fingerprint(&self, fingerprint: &str) -> KvResult<()> {
        self.kv.write(true, |kv| {
            crate::kv::KvWrite::put(kv, Table::Meta, FINGERPRINT_KEY, fingerprint.as_bytes())
        })
    }

    /// Moves windowed computed traits forward (see [`Engine::expire_windows`]); durable.
    pub fn expire_windows(&self, engine: &Engine, now_ms: i64, limit: usize) -> KvResult<usize> {
        self.kv
            .write(true, |kv| engine.expire_windows(kv, now_ms, limit))
    }

    /// Makes everything committed so far durable.
    pub fn sync(&self) -> KvResult<()> {
        self.kv.write(true, |_| Ok(()))
    }

    /// Runs `work` on a consistent snapshot.
    pub fn read<T>(
        &self,
        work: impl FnOnce(&RedbTable<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>) -> KvResult<T>,
    ) -> KvResult<T> {
        self.kv.read(work)
    }
}

/// Applies records to any store and advances its offset.
pub fn apply_all<K: crate::kv::KvWrite>(
    kv: &mut K,
    engine: &Engine,
    source: &dyn RecordSource,
    records: &[(u64, Vec<u8>)],
) -> KvResult<BatchStats> {
    let mut stats = BatchStats::default();
    let Some(last) = records.last() else {
        return Ok(stats);
    };
    for (offset, payload) in records {
        stats.add(&engine.apply(kv, source, *offset, payload)?);
    }
    kv.put(Table::Meta, OFFSET_KEY, &(last.0 + 1).to_be_bytes())?;
    Ok(stats)
}

/// The in-memory equivalent, for tests and dry runs.
pub fn apply_in_memory(
    kv: &mut MemoryKv,
    engine: &Engine,
    source: &dyn RecordSource,
    records: &[(u64, Vec<u8>)],
) -> KvResult<BatchStats> {
    apply_all(kv, engine, source, records)
}
