//! Random event sequences (with merges, out-of-order times, a clock moving past window edges,
//! and an audience added in the middle whose backfill runs between batches) against a simple
//! model: after every run, each profile's memberships are exactly what the definitions say when
//! evaluated naively over the events on its timeline, read back from the log; sizes match the
//! member rows; and the last announcement of every (audience, profile) matches its membership.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tandem_audiences::condition::{Comparison, Op};
use tandem_audiences::state;
use tandem_config::{since_ms, AudienceConfig, ConditionConfig};
use tandem_core::envelope::{EventEnvelope, EventType};
use tandem_unify::kv::{KvRead, Table};
use tandem_unify::model::{self, ProfileRow, TimelineRow};

fn definitions() -> Vec<AudienceConfig> {
    vec![
        audience(
            "a1",
            json!({"event": "A", "at_least": 2, "within_days": 10,
                   "where": [{"property": "total", "op": "gt", "value": 100}]}),
        ),
        audience("a2", json!({"event": "B", "at_most": 0, "within_days": 5})),
        audience(
            "a3",
            json!({"all": [{"trait": "plan", "op": "eq", "value": "pro"}, {"not": {"audience": "a1"}}]}),
        ),
        audience(
            "a4",
            json!({"any": [{"audience": "a1"}, {"trait": "seats", "op": "gte", "value": 10}]}),
        ),
        audience(
            "a5",
            json!({"event": "A", "since": "2026-01-21", "where": [{"property": "total", "op": "in", "value": [1, 2, 3, 150]}]}),
        ),
        audience(
            "a6",
            json!({"event": "*", "type": "identify", "at_least": 2}),
        ),
    ]
}

/// A late audience, added while events keep coming.
fn late() -> AudienceConfig {
    audience(
        "late",
        json!({"all": [{"event": "B", "at_least": 1, "within_days": 20, "where": [{"property": "total", "op": "lt", "value": 50}]},
                       {"audience": "a4"}]}),
    )
}

#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<(EventType, Value, i64)>),
    /// Move the clock forward by this many hours and sweep windows.
    Advance(i64),
    /// Add the late audience; its job then runs a few profiles per batch.
    AddLate,
}

fn event() -> impl Strategy<Value = (EventType, Value, i64)> {
    let ids = (prop::option::of(0..4u8), prop::option::of(0..4u8))
        .prop_filter("an identifier", |(u, a)| u.is_some() || a.is_some());
    let kind = prop::sample::select(vec![
        EventType::Track,
        EventType::Track,
        EventType::Identify,
    ]);
    (
        kind,
        ids,
        prop::sample::select(vec!["A", "B"]),
        0..200u32,
        0..2u8,
        0..20u32,
        0..40i64,
    )
        .prop_map(|(kind, (user, anon), name, total, plan, seats, day)| {
            let mut event = json!({});
            if let Some(user) = user {
                event["userId"] = json!(format!("u{user}"));
            }
            if let Some(anon) = anon {
                event["anonymousId"] = json!(format!("a{anon}"));
            }
            if kind == EventType::Track {
                event["event"] = json!(name);
                event["properties"] = json!({"total": total});
            } else {
                let plan = if plan == 0 { "free" } else { "pro" };
                event["traits"] = json!({"plan": plan, "seats": seats});
            }
            (kind, event, T0 + day * DAY + total as i64)
        })
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => prop::collection::vec(event(), 1..6).prop_map(Step::Batch),
        2 => (1..72i64).prop_map(Step::Advance),
        1 => Just(Step::AddLate),
    ];
    prop::collection::vec(step, 1..40)
}

/// The naive answer: does `condition` hold for this profile with these events at `now`?
fn holds(
    condition: &ConditionConfig,
    profile: &ProfileRow,
    events: &[(String, Value, i64)],
    members: &BTreeMap<String, bool>,
    now: i64,
) -> bool {
    if let Some(list) = &condition.all {
        return list.iter().all(|c| holds(c, profile, events, members, now));
    }
    if let Some(list) = &condition.any {
        return list.iter().any(|c| holds(c, profile, events, members, now));
    }
    if let Some(inner) = &condition.not {
        return !holds(inner, profile, events, members, now);
    }
    if let Some(id) = &condition.audience {
        return members[id];
    }
    let compare = |op: &str, value: &Option<Value>, found: Option<&Value>| {
        Comparison::new(Op::parse(op).unwrap(), value.clone().unwrap_or(Value::Null)).holds(found)
    };
    if let Some(name) = &condition.trait_name {
        let found: Option<Value> = profile
            .traits
            .get(name)
            .and_then(|t| serde_json::from_str(&t.json).ok());
        return compare(
            condition.op.as_deref().unwrap(),
            &condition.value,
            found.as_ref(),
        );
    }
    let name = condition.event.as_deref().unwrap();
    let kind = condition.event_type.as_deref().unwrap_or("track");
    let from = match (condition.within_days, &condition.since) {
        (Some(days), _) => (now.div_euclid(DAY) - days as i64 + 1) * DAY,
        (None, Some(since)) => since_ms(since).unwrap(),
        _ => i64::MIN,
    };
    let count = events
        .iter()
        .filter(|(event_kind, json, time)| {
            event_kind == kind
                && *time >= from
                && (name == "*" || json["event"] == name)
                && condition
                    .filters
                    .iter()
                    .all(|f| compare(&f.op, &f.value, json["properties"].get(&f.property)))
        })
        .count() as u64;
    match (condition.at_least, condition.at_most) {
        (_, Some(most)) => count <= most,
        (least, None) => count >= least.unwrap_or(1),
    }
}

fn check(world: &World, configs: &[AudienceConfig]) -> Result<(), TestCaseError> {
    let set = tandem_audiences::AudienceSet::compile(configs, &[]).unwrap();
    let mut total_members: BTreeMap<String, u64> = BTreeMap::new();
    for profile in world.profiles() {
        let rows = world
            .kv
            .scan(
                Table::Timeline,
                &profile.id.to_be_bytes(),
                None,
                false,
                usize::MAX,
            )
            .unwrap();
        let events: Vec<(String, Value, i64)> = rows
            .iter()
            .map(|(_, v)| {
                let row: TimelineRow = model::decode(Table::Timeline, v).unwrap();
                let payload = world.log.borrow()[row.offset as usize].clone();
                let envelope = EventEnvelope::decode(&payload).unwrap();
                (
                    row.event_type,
                    serde_json::from_slice(envelope.json).unwrap(),
                    envelope.event_time_ms,
                )
            })
            .collect();
        let mut expected: BTreeMap<String, bool> = BTreeMap::new();
        for audience in &set.audiences {
            let member = holds(
                &audience.config.condition,
                &profile,
                &events,
                &expected,
                world.now,
            );
            expected.insert(audience.id.clone(), member);
        }
        let stored = state::profile_audiences(&world.kv, profile.id).unwrap();
        for (id, member) in &expected {
            prop_assert_eq!(
                stored.contains(id),
                *member,
                "profile {:x} audience {} at {}: {:?} events {:?}",
                profile.id,
                id,
                world.now,
                profile.traits,
                events
            );
            if *member {
                *total_members.entry(id.clone()).or_default() += 1;
            }
            let last = world
                .announced
                .iter()
                .rev()
                .find(|e| e.audience == *id && e.profile == profile.id);
            prop_assert_eq!(
                last.is_some_and(|e| e.entered),
                *member,
                "announcements of {} for {:x}",
                id,
                profile.id
            );
        }
        prop_assert_eq!(
            stored.memberships.len(),
            expected.values().filter(|m| **m).count()
        );
    }
    for audience in &set.audiences {
        let members = world.members(&audience.id).len() as u64;
        let expected = total_members.get(&audience.id).copied().unwrap_or(0);
        prop_assert_eq!(members, expected, "member rows of {}", audience.id);
        prop_assert_eq!(
            world.size(&audience.id),
            expected,
            "size of {}",
            audience.id
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn memberships_follow_the_naive_model(steps in steps()) {
        let mut configs = definitions();
        let mut world = World::new(configs.clone());
        for step in steps {
            match step {
                Step::Batch(events) => {
                    world.now = world.now.max(events.iter().map(|e| e.2).max().unwrap());
                    world.batch(events);
                    if world.audiences.busy() {
                        world.step(2);
                    }
                }
                Step::Advance(hours) => {
                    world.advance_to(world.now + hours * 3_600_000);
                }
                Step::AddLate => {
                    if !configs.iter().any(|c| c.id == "late") {
                        configs.push(late());
                        world.define_pending(configs.clone());
                    }
                }
            }
        }
        world.finish_job();
        // Bring every window up to now before comparing.
        world.advance_to(world.now);
        check(&world, &configs)?;
    }
}
