//! The unify state of one workspace: a `RedbKv` file whose transactions carry both the effects of
//! a batch of records and the offset after it, so state and position can never disagree.

use crate::engine::{Applied, Engine, RecordSource};
use crate::kv::{KvRead, KvResult, KvWrite, MemoryKv, RedbKv, RedbTable, Table};
use crate::model::ProfileId;
use std::collections::BTreeSet;
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

/// The profiles a batch (or a window sweep) changed, for a stage that follows profiles in the
/// same transaction (audiences).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Profiles that exist after the batch and were created, changed or re-resolved by it.
    pub profiles: BTreeSet<ProfileId>,
    /// (absorbed, survivor) of each merge, in order: the absorbed profile no longer exists.
    pub merged: Vec<(ProfileId, ProfileId)>,
    /// Profiles a split re-resolved (they may exist again under the same id, or not).
    pub split: Vec<ProfileId>,
    /// Profiles erased by a data-subject request: gone, with no announcement of any kind.
    pub erased: Vec<ProfileId>,
}

impl Changed {
    pub fn add(&mut self, applied: &Applied) {
        if let Some(profile) = applied.profile {
            self.profiles.insert(profile);
            for absorbed in &applied.absorbed {
                self.merged.push((*absorbed, profile));
                self.profiles.remove(absorbed);
            }
        }
        if let Some(split) = &applied.split {
            self.split.push(split.profile);
            self.profiles.extend(split.result.iter().copied());
        }
        for erased in &applied.erased {
            self.profiles.remove(erased);
            self.erased.push(*erased);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
            && self.merged.is_empty()
            && self.split.is_empty()
            && self.erased.is_empty()
    }
}

/// What follows a batch inside its transaction: called with the store and what the batch
/// changed; answers whether the commit must be durable (e.g. it wrote events to announce).
pub type AfterBatch<'a> = &'a mut dyn FnMut(&mut dyn KvWrite, &Changed) -> KvResult<bool>;

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

    /// A copy of the live rows in a new file at `path` (see [`RedbKv::copy_to`]).
    pub fn copy_to(&self, path: &Path) -> KvResult<UnifyStore> {
        Ok(UnifyStore {
            kv: self.kv.copy_to(path)?,
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

    /// [`UnifyStore::apply_batch`], then `after` in the same transaction; the commit is durable
    /// when `durable` or when `after` asks for it.
    pub fn apply_batch_with(
        &self,
        engine: &Engine,
        source: &dyn RecordSource,
        records: &[(u64, Vec<u8>)],
        durable: bool,
        after: AfterBatch<'_>,
    ) -> KvResult<(BatchStats, bool)> {
        self.kv.write_deciding(|kv| {
            let mut changed = Changed::default();
            let stats = apply_all_into(kv, engine, source, records, &mut changed)?;
            let wanted = after(&mut DynKv(kv), &changed)?;
            Ok(((stats, durable || wanted), durable || wanted))
        })
    }

    /// Moves windowed computed traits forward like [`UnifyStore::expire_windows`], then runs
    /// `after` on the profiles it changed, in the same transaction (always durable).
    pub fn expire_windows_with(
        &self,
        engine: &Engine,
        now_ms: i64,
        limit: usize,
        after: AfterBatch<'_>,
    ) -> KvResult<usize> {
        self.kv.write(true, |kv| {
            let mut profiles = Vec::new();
            let count = engine.expire_windows_into(kv, now_ms, limit, &mut profiles)?;
            let changed = Changed {
                profiles: profiles.into_iter().collect(),
                ..Changed::default()
            };
            if !changed.is_empty() {
                after(&mut DynKv(kv), &changed)?;
            }
            Ok(count)
        })
    }

    /// Runs `work` in a write transaction of its own (`durable`: fsync at commit). Writers take
    /// turns: this waits for a batch in progress.
    pub fn write<T>(
        &self,
        durable: bool,
        work: impl FnOnce(&mut dyn KvWrite) -> KvResult<T>,
    ) -> KvResult<T> {
        self.kv.write(durable, |kv| work(&mut DynKv(kv)))
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
    apply_all_into(kv, engine, source, records, &mut Changed::default())
}

/// [`apply_all`], also noting what changed.
pub fn apply_all_into<K: crate::kv::KvWrite>(
    kv: &mut K,
    engine: &Engine,
    source: &dyn RecordSource,
    records: &[(u64, Vec<u8>)],
    changed: &mut Changed,
) -> KvResult<BatchStats> {
    let mut stats = BatchStats::default();
    let Some(last) = records.last() else {
        return Ok(stats);
    };
    for (offset, payload) in records {
        let applied = engine.apply(kv, source, *offset, payload)?;
        stats.add(&applied);
        changed.add(&applied);
    }
    kv.put(Table::Meta, OFFSET_KEY, &(last.0 + 1).to_be_bytes())?;
    Ok(stats)
}

/// Any store as a `dyn KvWrite`, and back as a sized `KvWrite` for the generic helpers.
pub struct DynKv<'a, K: ?Sized>(pub &'a mut K);

impl<K: KvWrite + ?Sized> KvRead for DynKv<'_, K> {
    fn get(&self, table: Table, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.0.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.0.scan(table, prefix, after, reverse, limit)
    }
}

impl<K: KvWrite + ?Sized> KvWrite for DynKv<'_, K> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> KvResult<()> {
        self.0.put(table, key, value)
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> KvResult<()> {
        self.0.delete(table, key)
    }
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
