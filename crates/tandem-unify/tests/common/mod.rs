//! A log in memory and a unify state in memory, for scenario and property tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::cell::RefCell;
use tandem_core::envelope::{dedup_key, EventEnvelope, EventType};
use tandem_unify::identity::Identity;
use tandem_unify::kv::{MemoryKv, Table};
use tandem_unify::model::{self, IdentityRow, ProfileRow};
use tandem_unify::store::apply_all;
use tandem_unify::{query, Applied, Engine, IdentityRules, RecordSource};

pub const SOURCE: &str = "web";

/// Encodes an event as the collect stage stores it.
pub fn record(event_type: EventType, mut event: Value, time_ms: i64) -> Vec<u8> {
    let message_id = event
        .get("messageId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| uuid_like(&event));
    event["messageId"] = json!(message_id);
    event["type"] = json!(event_type.as_str());
    let bytes = serde_json::to_vec(&event).unwrap();
    EventEnvelope {
        event_type,
        dedup_key: dedup_key(SOURCE, &message_id),
        event_time_ms: time_ms,
        source_id: SOURCE,
        json: &bytes,
    }
    .encode()
}

fn uuid_like(event: &Value) -> String {
    format!("m-{:016x}", xxhash_rust_like(event.to_string().as_bytes()))
}

fn xxhash_rust_like(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A log and the state built from it.
pub struct World {
    pub log: RefCell<Vec<Vec<u8>>>,
    pub kv: MemoryKv,
    pub engine: Engine,
    pub applied: Vec<Applied>,
    pub clock: i64,
}

pub struct LogSource<'a>(pub &'a RefCell<Vec<Vec<u8>>>);

impl RecordSource for LogSource<'_> {
    fn record(&self, offset: u64) -> Option<Vec<u8>> {
        self.0.borrow().get(offset as usize).cloned()
    }
}

impl World {
    pub fn new() -> World {
        World::with_rules(IdentityRules::default())
    }

    pub fn with_rules(rules: IdentityRules) -> World {
        World {
            log: RefCell::new(Vec::new()),
            kv: MemoryKv::default(),
            engine: Engine::new(rules),
            applied: Vec::new(),
            clock: 1_700_000_000_000,
        }
    }

    /// Appends a record and applies it; returns what it did.
    pub fn push_record(&mut self, payload: Vec<u8>) -> Applied {
        let offset = {
            let mut log = self.log.borrow_mut();
            log.push(payload.clone());
            log.len() as u64 - 1
        };
        let source = LogSource(&self.log);
        let applied = self
            .engine
            .apply(&mut self.kv, &source, offset, &payload)
            .unwrap();
        self.applied.push(applied.clone());
        applied
    }

    /// Sends an event one second after the previous one.
    pub fn send(&mut self, event_type: EventType, event: Value) -> Applied {
        self.clock += 1000;
        let payload = record(event_type, event, self.clock);
        self.push_record(payload)
    }

    pub fn send_at(&mut self, event_type: EventType, event: Value, time_ms: i64) -> Applied {
        let payload = record(event_type, event, time_ms);
        self.push_record(payload)
    }

    pub fn split(&mut self, profile: &str, identities: &[(&str, &str)]) -> Applied {
        let control = json!({
            "control": "split",
            "profileId": profile,
            "identities": identities.iter().map(|(t, v)| json!({"type": t, "id": v})).collect::<Vec<_>>(),
            "requestedBy": "test",
            "reason": "wrong merge",
            "messageId": format!("split-{}", self.log.borrow().len()),
        });
        self.clock += 1000;
        let payload = record(EventType::Control, control, self.clock);
        self.push_record(payload)
    }

    pub fn profile_of(&self, kind: &str, value: &str) -> Option<ProfileRow> {
        query::profile_by_identity(&self.kv, &Identity::new(kind, value)).unwrap()
    }

    pub fn profile_id(&self, kind: &str, value: &str) -> String {
        model::format_profile_id(self.profile_of(kind, value).expect("known identity").id)
    }

    pub fn same(&self, a: (&str, &str), b: (&str, &str)) -> bool {
        match (self.profile_of(a.0, a.1), self.profile_of(b.0, b.1)) {
            (Some(x), Some(y)) => x.id == y.id,
            _ => false,
        }
    }

    pub fn profiles(&self) -> Vec<ProfileRow> {
        self.kv
            .map
            .iter()
            .filter(|(k, _)| k[0] == Table::Profiles as u8)
            .map(|(_, v)| model::decode(Table::Profiles, v).unwrap())
            .collect()
    }

    /// Replays the whole log into a fresh state.
    pub fn replay(&self) -> MemoryKv {
        let mut kv = MemoryKv::default();
        let records: Vec<(u64, Vec<u8>)> = self
            .log
            .borrow()
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64, p.clone()))
            .collect();
        let source = LogSource(&self.log);
        for chunk in records.chunks(7) {
            apply_all(&mut kv, &self.engine, &source, chunk).unwrap();
        }
        kv
    }

    /// Checks the invariants every state must keep; panics with a description otherwise.
    pub fn check_invariants(&self) {
        for profile in self.profiles() {
            let mut counts = std::collections::BTreeMap::<&str, u32>::new();
            for (identity, _) in &profile.identities {
                *counts.entry(identity.kind.as_str()).or_default() += 1;
                let row: IdentityRow = model::get(&self.kv, Table::Identities, &identity.key())
                    .unwrap()
                    .unwrap_or_else(|| panic!("{identity} of a profile has no identity row"));
                assert_eq!(row.profile, profile.id, "{identity} points elsewhere");
            }
            for (kind, count) in counts {
                let limit = self.engine.rules.rule(kind).limit;
                assert!(
                    count <= limit,
                    "profile holds {count} {kind} (limit {limit})"
                );
            }
        }
        for (key, value) in self
            .kv
            .map
            .iter()
            .filter(|(k, _)| k[0] == Table::Identities as u8)
        {
            let row: IdentityRow = model::decode(Table::Identities, value).unwrap();
            let identity = Identity::from_key(&key[1..]).unwrap();
            let profile = query::resolve_profile(&self.kv, row.profile).unwrap();
            let profile = profile.unwrap_or_else(|| panic!("{identity} points at no profile"));
            assert!(
                profile.has_identity(&identity),
                "{identity} missing from its profile"
            );
        }
    }
}

/// The tables that make up the graph and the profiles (what replay must reproduce).
pub fn graph_tables(kv: &MemoryKv) -> Vec<(Vec<u8>, Vec<u8>)> {
    let kept = [
        Table::Identities,
        Table::Profiles,
        Table::Timeline,
        Table::Links,
        Table::Merges,
        Table::Accounts,
        Table::Members,
        Table::Splits,
        Table::Separations,
        Table::Seen,
    ];
    kv.map
        .iter()
        .filter(|(k, _)| kept.iter().any(|t| *t as u8 == k[0]))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
