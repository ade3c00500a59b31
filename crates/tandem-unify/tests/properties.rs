//! Random event sequences over a small universe of identifiers (so they collide often): no profile
//! ever breaks a limit, the graph is consistent, replay from zero gives the same state, and
//! applying every event a second time changes nothing.

mod common;

use common::{graph_tables, World};
use proptest::prelude::*;
use serde_json::{json, Value};
use tandem_core::envelope::EventType;

#[derive(Clone, Debug)]
enum Step {
    Event(EventType, Value, i64),
    Split(usize, usize),
}

fn event() -> impl Strategy<Value = (EventType, Value, i64)> {
    let user = prop::option::of(prop::sample::select(vec!["u0", "u1", "u2", "u3", "null"]));
    let anon = prop::option::of((0..8u8).prop_map(|i| format!("a{i}")));
    let email = prop::option::of(prop::sample::select(vec![
        "x@e.org", "y@e.org", "Z@e.org", "z@e.org",
    ]));
    let device = prop::option::of((0..3u8).prop_map(|i| format!("d{i}")));
    let kind = prop::sample::select(vec![
        EventType::Track,
        EventType::Identify,
        EventType::Identify,
        EventType::Alias,
        EventType::Group,
        EventType::Page,
    ]);
    let trait_value = 0..4u8;
    let time = 0..50i64;
    (kind, user, anon, email, device, trait_value, time).prop_map(
        |(kind, user, anon, email, device, trait_value, time)| {
            let mut event = json!({"event": "E", "groupId": "g1", "previousId": "a1"});
            if let Some(user) = user {
                event["userId"] = json!(user);
            }
            if let Some(anon) = anon {
                event["anonymousId"] = json!(anon);
            }
            if kind == EventType::Alias && event.get("userId").is_none() {
                event["userId"] = json!("u1");
            }
            event["traits"] = json!({"plan": trait_value});
            if let Some(email) = email {
                event["traits"]["email"] = json!(email);
            }
            if let Some(device) = device {
                event["context"] = json!({"device": {"id": device}});
            }
            event["messageId"] = json!(format!("m{}", time * 7 + trait_value as i64));
            (kind, event, 1_700_000_000_000 + time * 1000)
        },
    )
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            20 => event().prop_map(|(k, e, t)| Step::Event(k, e, t)),
            1 => (0..20usize, 0..5usize).prop_map(|(a, b)| Step::Split(a, b)),
        ],
        1..60,
    )
}

fn run(steps: &[Step]) -> World {
    let mut w = World::new();
    for step in steps {
        match step {
            Step::Event(kind, event, time) => {
                w.send_at(*kind, event.clone(), *time);
            }
            Step::Split(profile_index, identity_index) => {
                let profiles = w.profiles();
                if profiles.is_empty() {
                    continue;
                }
                let profile = &profiles[profile_index % profiles.len()];
                let (identity, _) = &profile.identities[identity_index % profile.identities.len()];
                let id = tandem_unify::model::format_profile_id(profile.id);
                w.split(&id, &[(identity.kind.as_str(), identity.value.as_str())]);
            }
        }
        w.check_invariants();
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn limits_hold_and_replay_is_deterministic(steps in steps()) {
        let w = run(&steps);
        w.check_invariants();
        prop_assert_eq!(graph_tables(&w.replay()), graph_tables(&w.kv));
    }

    #[test]
    fn applying_every_event_twice_changes_nothing(events in prop::collection::vec(event(), 1..40)) {
        let mut w = World::new();
        for (kind, event, time) in &events {
            w.send_at(*kind, event.clone(), *time);
        }
        let once = graph_tables(&w.kv);
        for (kind, event, time) in &events {
            // A redelivery: same messageId and source, received later.
            w.send_at(*kind, event.clone(), *time + 5);
        }
        prop_assert_eq!(graph_tables(&w.kv), once);
    }
}
