//! The catalog of sources as the collect path sees it: write key → source, with live activity
//! counters that are flushed to the metadata store, and the record of traffic with unknown or
//! disabled keys (shadow IT made visible).

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use tandem_core::ids::write_key_hash;
use tandem_store::{
    ActivityDelta, ManagedBy, MetadataStore, SourceKey, SourceRecord, StoreError, UnknownKeyTraffic,
};

/// Distinct unknown keys remembered between two flushes; beyond it, attempts are only counted in
/// metrics, so a flood of random keys cannot grow memory.
pub const UNKNOWN_KEYS_PENDING_MAX: usize = 1024;
/// Characters of a key's SHA-256 kept to tell unknown keys apart.
const KEY_FINGERPRINT_CHARS: usize = 12;

/// A source as the hot path needs it, with counters since the last flush.
pub struct SourceEntry {
    pub record: SourceRecord,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub last_seen_ms: AtomicI64,
}

impl SourceEntry {
    fn new(record: SourceRecord) -> Arc<SourceEntry> {
        Arc::new(SourceEntry {
            record,
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_seen_ms: AtomicI64::new(0),
        })
    }

    pub fn note_events(&self, accepted: u64, rejected: u64, now_ms: i64) {
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
    }
}

/// Where a write key leads.
pub enum KeyLookup {
    Enabled(Arc<SourceEntry>),
    Disabled(Arc<SourceEntry>),
    Unknown,
}

/// Request facts recorded for unknown-key traffic.
#[derive(Debug, Clone, Default)]
pub struct RequestOrigin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub origin: Option<String>,
}

pub struct Catalog {
    store: Arc<dyn MetadataStore>,
    by_key_hash: RwLock<HashMap<String, Arc<SourceEntry>>>,
    unknown_pending: Mutex<HashMap<String, UnknownKeyTraffic>>,
}

impl Catalog {
    pub fn load(store: Arc<dyn MetadataStore>) -> Result<Catalog, StoreError> {
        let catalog = Catalog {
            store,
            by_key_hash: RwLock::new(HashMap::new()),
            unknown_pending: Mutex::new(HashMap::new()),
        };
        catalog.reload()?;
        Ok(catalog)
    }

    /// Rebuilds the in-memory index from the store, carrying unflushed counters over.
    pub fn reload(&self) -> Result<(), StoreError> {
        let sources = self.store.sources()?;
        let mut index = self.by_key_hash.write();
        let mut rebuilt = HashMap::with_capacity(sources.len());
        for record in sources {
            let entry = SourceEntry::new(record.clone());
            if let Some(old) = index.values().find(|old| old.record.key() == record.key()) {
                entry.note_events(
                    old.accepted.swap(0, Ordering::Relaxed),
                    old.rejected.swap(0, Ordering::Relaxed),
                    old.last_seen_ms.load(Ordering::Relaxed),
                );
            }
            rebuilt.insert(record.write_key_hash.clone(), entry);
        }
        *index = rebuilt;
        Ok(())
    }

    pub fn lookup(&self, write_key: &str) -> KeyLookup {
        let hash = write_key_hash(write_key);
        match self.by_key_hash.read().get(&hash) {
            Some(entry) if entry.record.enabled => KeyLookup::Enabled(entry.clone()),
            Some(entry) => KeyLookup::Disabled(entry.clone()),
            None => KeyLookup::Unknown,
        }
    }

    pub fn source_by_id(&self, workspace_id: &str, source_id: &str) -> Option<Arc<SourceEntry>> {
        self.by_key_hash
            .read()
            .values()
            .find(|entry| entry.record.workspace_id == workspace_id && entry.record.id == source_id)
            .cloned()
    }

    /// Counts a request made with a key that is unknown or belongs to a disabled source.
    pub fn note_refused_key(
        &self,
        write_key: &str,
        reason: &str,
        source: Option<SourceKey>,
        origin: &RequestOrigin,
        now_ms: i64,
    ) {
        metrics::counter!("tandem_collect_refused_keys_total", "reason" => reason.to_string())
            .increment(1);
        let fingerprint = write_key_hash(write_key)[..KEY_FINGERPRINT_CHARS].to_string();
        let mut pending = self.unknown_pending.lock();
        let slot_key = format!("{reason}/{fingerprint}");
        if !pending.contains_key(&slot_key) && pending.len() >= UNKNOWN_KEYS_PENDING_MAX {
            return;
        }
        let entry = pending
            .entry(slot_key)
            .or_insert_with(|| UnknownKeyTraffic {
                key_fingerprint: fingerprint,
                reason: reason.to_string(),
                source,
                first_seen_ms: now_ms,
                ..Default::default()
            });
        entry.attempts += 1;
        entry.last_seen_ms = now_ms;
        entry.last_ip = origin.ip.clone().or(entry.last_ip.take());
        entry.last_user_agent = origin.user_agent.clone().or(entry.last_user_agent.take());
        entry.last_origin = origin.origin.clone().or(entry.last_origin.take());
    }

    /// Writes counters and unknown-key traffic gathered since the last flush to the store.
    pub fn flush(&self) -> Result<(), StoreError> {
        let deltas: Vec<(SourceKey, ActivityDelta)> = self
            .by_key_hash
            .read()
            .values()
            .filter_map(|entry| {
                let accepted = entry.accepted.swap(0, Ordering::Relaxed);
                let rejected = entry.rejected.swap(0, Ordering::Relaxed);
                (accepted + rejected > 0).then(|| {
                    (
                        entry.record.key(),
                        ActivityDelta {
                            last_seen_ms: entry.last_seen_ms.load(Ordering::Relaxed),
                            events_accepted: accepted,
                            events_rejected: rejected,
                        },
                    )
                })
            })
            .collect();
        self.store.record_activity(&deltas)?;
        let unknown: Vec<UnknownKeyTraffic> = self
            .unknown_pending
            .lock()
            .drain()
            .map(|(_, traffic)| traffic)
            .collect();
        self.store.record_unknown_traffic(&unknown)
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }
}

/// Makes the store's sources match the ones the config file declares: config sources are
/// created or updated; a config-managed source no longer in the file is disabled, not deleted,
/// because events in the log still name it.
pub fn sync_config_sources(
    store: &dyn MetadataStore,
    declared: &[SourceRecord],
    now_ms: i64,
) -> Result<(), StoreError> {
    for source in declared {
        let merged = match store.source(&source.workspace_id, &source.id)? {
            Some(existing) => SourceRecord {
                created_at_ms: existing.created_at_ms,
                created_by: existing.created_by,
                ..source.clone()
            },
            None => source.clone(),
        };
        store.put_source(&merged)?;
    }
    for existing in store.sources()? {
        let still_declared = declared.iter().any(|source| source.key() == existing.key());
        if existing.managed_by == ManagedBy::Config && !still_declared && existing.enabled {
            tracing::warn!(workspace = %existing.workspace_id, source = %existing.id, "source removed from config, disabling it");
            store.put_source(&SourceRecord {
                enabled: false,
                updated_at_ms: now_ms,
                ..existing
            })?;
        }
    }
    Ok(())
}
