//! The quarantine of a workspace: events a `quarantine` plan held aside, in their own durable log
//! (`DATA/quarantine/<workspace>/`, a `tandem-log` FileLog: fsync before the acknowledgement, like
//! the workspace log). An entry's id is its offset in that log. Which entries were released or
//! discarded is kept in the plan store (`quarantine_settled`); the pending ones are indexed in
//! memory, rebuilt at start by scanning the quarantine log.

use super::store::Settled;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tandem_collect::Enriched;
use tandem_core::limits::QUARANTINE_PENDING_EVENTS_MAX;
use tandem_core::EventType;
use tandem_log::{AppendError, EventLog, FileLog, Record};
use tandem_plans::Violation;

/// Records read per call while rebuilding the index.
const SCAN_BATCH_RECORDS: usize = 4096;

/// One quarantine record's payload: the enriched event and why it was held.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldEvent {
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub message_id: String,
    pub dedup_key: u64,
    pub event_time_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    pub received_at_ms: i64,
    pub plan: String,
    pub plan_version: u64,
    pub violations: Vec<Violation>,
    /// The event exactly as it would have been stored.
    pub event: Box<RawValue>,
}

impl HeldEvent {
    pub fn new(
        enriched: &Enriched,
        source: &str,
        received_at_ms: i64,
        plan: &str,
        plan_version: u64,
        violations: Vec<Violation>,
    ) -> Option<HeldEvent> {
        let json = String::from_utf8(enriched.json.clone()).ok()?;
        Some(HeldEvent {
            source: source.to_string(),
            event_type: enriched.event_type,
            message_id: enriched.message_id.clone(),
            dedup_key: enriched.dedup_key,
            event_time_ms: enriched.event_time_ms,
            user_id: enriched.user_id.clone(),
            anonymous_id: enriched.anonymous_id.clone(),
            received_at_ms,
            plan: plan.to_string(),
            plan_version,
            violations,
            event: RawValue::from_string(json).ok()?,
        })
    }

    /// The event as collect enriched it, to go through the rest of the pipeline.
    pub fn enriched(&self, json: Vec<u8>) -> Enriched {
        Enriched {
            event_type: self.event_type,
            message_id: self.message_id.clone(),
            dedup_key: self.dedup_key,
            event_time_ms: self.event_time_ms,
            user_id: self.user_id.clone(),
            anonymous_id: self.anonymous_id.clone(),
            json,
        }
    }

    pub fn event_name(&self) -> String {
        event_label(self.event_type, self.event.get())
    }
}

/// How counters and filters name an event: a track call's name, or `identify traits` / `group traits`.
pub fn event_label(event_type: EventType, json: &str) -> String {
    match event_type {
        EventType::Track => {
            #[derive(Deserialize)]
            struct Name {
                event: Option<String>,
            }
            serde_json::from_str::<Name>(json)
                .ok()
                .and_then(|name| name.event)
                .unwrap_or_default()
        }
        EventType::Identify => "identify traits".into(),
        EventType::Group => "group traits".into(),
        other => other.as_str().into(),
    }
}

/// A pending entry as the index keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct PendingEntry {
    pub id: u64,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub event: String,
    #[serde(rename = "messageId")]
    pub message_id: String,
    pub received_at_ms: i64,
    pub plan: String,
    pub violations: usize,
    #[serde(skip)]
    pub dedup_key: u64,
}

impl PendingEntry {
    fn of(offset: u64, held: &HeldEvent) -> PendingEntry {
        PendingEntry {
            id: offset,
            source: held.source.clone(),
            event_type: held.event_type,
            event: held.event_name(),
            message_id: held.message_id.clone(),
            received_at_ms: held.received_at_ms,
            plan: held.plan.clone(),
            violations: held.violations.len(),
            dedup_key: held.dedup_key,
        }
    }
}

/// Which pending entries a list, release or discard concerns.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Selection {
    pub ids: Option<Vec<u64>>,
    pub event: Option<String>,
    pub source: Option<String>,
}

impl Selection {
    fn matches(&self, entry: &PendingEntry) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&entry.id))
            && self
                .event
                .as_ref()
                .is_none_or(|event| &entry.event == event)
            && self
                .source
                .as_ref()
                .is_none_or(|source| &entry.source == source)
    }
}

#[derive(Default)]
struct Index {
    pending: BTreeMap<u64, PendingEntry>,
    /// Dedup keys of pending entries: a retried request does not quarantine its event twice.
    keys: HashSet<u64>,
}

pub struct Quarantine {
    log: Arc<FileLog>,
    index: Mutex<Index>,
    /// One release or discard at a time per workspace: an entry is never released twice.
    pub(crate) settling: tokio::sync::Mutex<()>,
}

/// Why events could not be quarantined.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(
        "the quarantine holds {QUARANTINE_PENDING_EVENTS_MAX} events; release or discard some"
    )]
    Full,
    #[error(transparent)]
    Append(#[from] AppendError),
}

impl Quarantine {
    /// Opens the quarantine log and indexes the entries not in `settled`.
    pub fn open(
        log: Arc<FileLog>,
        settled: &HashMap<u64, Settled>,
    ) -> Result<Quarantine, tandem_log::ReadError> {
        let mut index = Index::default();
        let stats = log.stats();
        let mut next = stats.start_offset;
        while next < stats.end_offset {
            let records = log.read(next, SCAN_BATCH_RECORDS)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for record in &records {
                if settled.contains_key(&record.offset) {
                    continue;
                }
                match serde_json::from_slice::<HeldEvent>(&record.payload) {
                    Ok(held) => {
                        let entry = PendingEntry::of(record.offset, &held);
                        index.keys.insert(entry.dedup_key);
                        index.pending.insert(record.offset, entry);
                    }
                    Err(error) => {
                        tracing::warn!(offset = record.offset, %error, "unreadable quarantine record skipped")
                    }
                }
            }
        }
        Ok(Quarantine {
            log,
            index: Mutex::new(index),
            settling: tokio::sync::Mutex::new(()),
        })
    }

    pub fn pending_count(&self) -> usize {
        self.index.lock().pending.len()
    }

    /// Appends `held` durably (the future resolves after the fsync) and indexes it. Events already
    /// pending (same source and messageId) are skipped: their count is returned with the stored ones.
    pub async fn hold(&self, held: Vec<HeldEvent>) -> Result<(usize, usize), HoldError> {
        let (fresh, duplicates): (Vec<HeldEvent>, Vec<HeldEvent>) = {
            let index = self.index.lock();
            if index.pending.len() + held.len() > QUARANTINE_PENDING_EVENTS_MAX {
                return Err(HoldError::Full);
            }
            held.into_iter()
                .partition(|event| !index.keys.contains(&event.dedup_key))
        };
        if fresh.is_empty() {
            return Ok((0, duplicates.len()));
        }
        let records: Vec<Record> = fresh
            .iter()
            .map(|event| Record {
                timestamp_ms: event.received_at_ms,
                payload: Bytes::from(serde_json::to_vec(event).expect("a held event serializes")),
            })
            .collect();
        let durable = self.log.append(records)?;
        let offsets = durable.await?;
        let mut index = self.index.lock();
        for (offset, event) in offsets.zip(fresh.iter()) {
            index.keys.insert(event.dedup_key);
            index
                .pending
                .insert(offset, PendingEntry::of(offset, event));
        }
        Ok((fresh.len(), duplicates.len()))
    }

    /// Pending entries matching `selection`, from `after` (exclusive) on, at most `limit`.
    pub fn list(
        &self,
        selection: &Selection,
        after: Option<u64>,
        limit: usize,
    ) -> Vec<PendingEntry> {
        let index = self.index.lock();
        let start = after.map_or(0, |after| after.saturating_add(1));
        index
            .pending
            .range(start..)
            .map(|(_, entry)| entry)
            .filter(|entry| selection.matches(entry))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Whether an event with this dedup key is already held (a retried request).
    pub fn holds_key(&self, dedup_key: u64) -> bool {
        self.index.lock().keys.contains(&dedup_key)
    }

    pub fn is_pending(&self, id: u64) -> bool {
        self.index.lock().pending.contains_key(&id)
    }

    /// The stored record `id` (pending or settled), when it exists.
    pub fn read(&self, id: u64) -> Result<Option<HeldEvent>, String> {
        let stats = self.log.stats();
        if id < stats.start_offset || id >= stats.end_offset {
            return Ok(None);
        }
        let records = self.log.read(id, 1).map_err(|error| error.to_string())?;
        match records.first() {
            Some(record) if record.offset == id => serde_json::from_slice(&record.payload)
                .map(Some)
                .map_err(|error| format!("quarantine record {id}: {error}")),
            _ => Ok(None),
        }
    }

    /// Drops settled entries from the index (after the store recorded them).
    pub fn forget(&self, ids: &[u64]) {
        let mut index = self.index.lock();
        for id in ids {
            if let Some(entry) = index.pending.remove(id) {
                index.keys.remove(&entry.dedup_key);
            }
        }
    }
}
