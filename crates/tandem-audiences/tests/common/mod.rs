//! A log and a unify state in memory with audiences following them, for the scenario and
//! property tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::cell::RefCell;
use std::sync::Arc;
use tandem_audiences::engine::{preview_chunk, Effects, PreviewQuery};
use tandem_audiences::state::{self, OutboxEntry};
use tandem_audiences::{AudienceEngine, AudienceSet, Preview, Reason};
use tandem_config::AudienceConfig;
use tandem_core::envelope::{dedup_key, EventEnvelope, EventType};
use tandem_unify::identity::Identity;
use tandem_unify::kv::{MemoryKv, Table};
use tandem_unify::model::{self, ProfileId, ProfileRow};
use tandem_unify::store::apply_all_into;
use tandem_unify::{query, Changed, Engine, IdentityRules, RecordSource};

pub const DAY: i64 = 86_400_000;
pub const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

pub struct LogSource<'a>(pub &'a RefCell<Vec<Vec<u8>>>);

impl RecordSource for LogSource<'_> {
    fn record(&self, offset: u64) -> Option<Vec<u8>> {
        self.0.borrow().get(offset as usize).cloned()
    }
}

pub fn audience(id: &str, condition: Value) -> AudienceConfig {
    serde_json::from_value(
        json!({"id": id, "name": format!("Audience {id}"), "condition": condition}),
    )
    .unwrap()
}

pub struct World {
    pub log: RefCell<Vec<Vec<u8>>>,
    pub kv: MemoryKv,
    pub unify: Engine,
    pub audiences: AudienceEngine,
    pub now: i64,
    /// Every outbox entry written, in order (what the log would receive).
    pub announced: Vec<OutboxEntry>,
    next_message: u64,
}

impl World {
    pub fn new(configs: Vec<AudienceConfig>) -> World {
        let set = Arc::new(AudienceSet::compile(&configs, &[]).unwrap());
        let kv = MemoryKv::default();
        let audiences = AudienceEngine::open(&kv, set.clone()).unwrap();
        let mut world = World {
            log: RefCell::new(Vec::new()),
            kv,
            unify: Engine::new(IdentityRules::default()),
            audiences,
            now: T0,
            announced: Vec::new(),
            next_message: 0,
        };
        world.define(configs);
        world
    }

    /// Replaces the definitions (as the API would) and runs the job to its end.
    pub fn define(&mut self, configs: Vec<AudienceConfig>) {
        let set = Arc::new(AudienceSet::compile(&configs, &[]).unwrap());
        self.unify.computed = set.counter_defs();
        self.audiences
            .plan(&mut self.kv, set, "test", self.now, false)
            .unwrap();
        self.finish_job();
    }

    /// Replaces the definitions but leaves the job for [`World::step`].
    pub fn define_pending(&mut self, configs: Vec<AudienceConfig>) {
        let set = Arc::new(AudienceSet::compile(&configs, &[]).unwrap());
        self.unify.computed = set.counter_defs();
        self.audiences
            .plan(&mut self.kv, set, "test", self.now, false)
            .unwrap();
    }

    pub fn step(&mut self, limit: usize) -> Effects {
        let source = LogSource(&self.log);
        let effects = self
            .audiences
            .step(&mut self.kv, &source, self.now, limit)
            .unwrap();
        self.announced.extend(effects.outbox.iter().cloned());
        effects
    }

    pub fn finish_job(&mut self) {
        for _ in 0..100_000 {
            if !self.audiences.busy() {
                return;
            }
            self.step(3);
        }
        panic!("the job never ended");
    }

    /// Appends events (one batch) and applies them like the unify task.
    pub fn batch(&mut self, events: Vec<(EventType, Value, i64)>) -> Effects {
        let mut records = Vec::new();
        for (event_type, mut event, time) in events {
            let message_id = format!("m{}", self.next_message);
            self.next_message += 1;
            event["messageId"] = json!(message_id);
            event["type"] = json!(event_type.as_str());
            let json = serde_json::to_vec(&event).unwrap();
            let payload = EventEnvelope {
                event_type,
                dedup_key: dedup_key("web", &message_id),
                event_time_ms: time,
                source_id: "web",
                json: &json,
            }
            .encode();
            let offset = {
                let mut log = self.log.borrow_mut();
                log.push(payload.clone());
                log.len() as u64 - 1
            };
            records.push((offset, payload));
        }
        let source = LogSource(&self.log);
        let mut changed = Changed::default();
        apply_all_into(&mut self.kv, &self.unify, &source, &records, &mut changed).unwrap();
        let effects = self
            .audiences
            .after_batch(&mut self.kv, &changed, &source, self.now, Reason::Event)
            .unwrap();
        self.announced.extend(effects.outbox.iter().cloned());
        effects
    }

    pub fn track(&mut self, user: &str, name: &str, properties: Value, time: i64) -> Effects {
        self.batch(vec![(
            EventType::Track,
            json!({"userId": user, "event": name, "properties": properties}),
            time,
        )])
    }

    pub fn identify(&mut self, ids: Value, traits: Value, time: i64) -> Effects {
        let mut event = ids;
        event["traits"] = traits;
        self.batch(vec![(EventType::Identify, event, time)])
    }

    /// Moves the clock and runs the window sweep like the unify task.
    pub fn advance_to(&mut self, now: i64) -> Effects {
        self.now = now;
        let mut profiles = Vec::new();
        self.unify
            .expire_windows_into(&mut self.kv, now, usize::MAX, &mut profiles)
            .unwrap();
        let changed = Changed {
            profiles: profiles.into_iter().collect(),
            ..Changed::default()
        };
        let source = LogSource(&self.log);
        let effects = self
            .audiences
            .after_batch(&mut self.kv, &changed, &source, now, Reason::Window)
            .unwrap();
        self.announced.extend(effects.outbox.iter().cloned());
        effects
    }

    pub fn profile_of(&self, identity: &str) -> Option<ProfileRow> {
        let identity = Identity::parse_path(identity).unwrap();
        query::profile_by_identity(&self.kv, &identity).unwrap()
    }

    /// The audience ids `identity`'s profile is in.
    pub fn memberships(&self, identity: &str) -> Vec<String> {
        match self.profile_of(identity) {
            Some(profile) => state::profile_audiences(&self.kv, profile.id)
                .unwrap()
                .memberships
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn members(&self, audience: &str) -> Vec<ProfileId> {
        state::members(&self.kv, audience, None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    pub fn size(&self, audience: &str) -> u64 {
        state::size(&self.kv, audience).unwrap()
    }

    /// Announced (event name, audience, profile) in order.
    pub fn announcements(&self) -> Vec<(String, String, ProfileId)> {
        self.announced
            .iter()
            .map(|e| (e.event_name().to_string(), e.audience.clone(), e.profile))
            .collect()
    }

    /// Previews `candidate` (with the current definitions) over every profile.
    pub fn preview(&self, configs: &[AudienceConfig], candidate: &str) -> Preview {
        let set = AudienceSet::compile(configs, &[]).unwrap();
        let index = set.index_of(candidate).unwrap();
        let running = &self.audiences.set;
        let from_history: Vec<bool> = set
            .counters
            .iter()
            .map(|c| running.counter_index(&c.name).is_none())
            .collect();
        let source = LogSource(&self.log);
        let mut preview = Preview::default();
        let mut after = None;
        loop {
            let query = PreviewQuery {
                set: &set,
                candidate: index,
                from_history: &from_history,
                now_ms: self.now,
                samples_max: 100,
            };
            after = preview_chunk(&self.kv, &source, &query, after, 2, &mut preview).unwrap();
            if after.is_none() {
                return preview;
            }
        }
    }

    /// Every profile id.
    pub fn profiles(&self) -> Vec<ProfileRow> {
        self.kv
            .scan(Table::Profiles, &[], None, false, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, v)| model::decode(Table::Profiles, &v).unwrap())
            .collect()
    }
}

use tandem_unify::kv::KvRead;
