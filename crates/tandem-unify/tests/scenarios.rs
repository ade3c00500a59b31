//! The merge scenarios every CDP gets wrong somewhere, each with the profiles it must end with.

mod common;

use common::World;
use serde_json::json;
use tandem_core::envelope::EventType::{Alias, Group, Identify, Page, Track};
use tandem_unify::identity::Identity;
use tandem_unify::query;

#[test]
fn anonymous_visitor_becomes_known_on_identify() {
    let mut w = World::new();
    w.send(Page, json!({"anonymousId": "a1", "name": "Home"}));
    w.send(
        Track,
        json!({"anonymousId": "a1", "event": "Viewed Product"}),
    );
    let applied = w.send(Identify, json!({"anonymousId": "a1", "userId": "u1", "traits": {"email": "Ada@Example.org", "name": "Ada"}}));
    assert!(!applied.created && applied.merged == 0);
    assert!(w.same(("anonymous_id", "a1"), ("user_id", "u1")));
    assert!(w.same(("user_id", "u1"), ("email", "ada@example.org")));
    let profile = w.profile_of("user_id", "u1").unwrap();
    assert_eq!(profile.event_count, 3);
    assert_eq!(profile.traits["name"].json, "\"Ada\"");
    assert_eq!(w.profiles().len(), 1);
    w.check_invariants();
}

#[test]
fn two_anonymous_sessions_merge_into_the_older_profile_when_identified() {
    let mut w = World::new();
    w.send(Track, json!({"anonymousId": "laptop", "event": "A"}));
    w.send(Track, json!({"anonymousId": "phone", "event": "B"}));
    let laptop = w.profile_id("anonymous_id", "laptop");
    w.send(Identify, json!({"anonymousId": "laptop", "userId": "u1"}));
    let applied = w.send(Identify, json!({"anonymousId": "phone", "userId": "u1"}));
    assert_eq!(applied.merged, 1);
    assert_eq!(
        w.profile_id("anonymous_id", "phone"),
        laptop,
        "the oldest profile survives"
    );
    assert_eq!(w.profiles().len(), 1);
    assert_eq!(w.profile_of("user_id", "u1").unwrap().event_count, 4);
    let explanation = query::explain(
        &w.kv,
        &Identity::new("anonymous_id", "phone"),
        &Identity::new("anonymous_id", "laptop"),
    )
    .unwrap();
    assert!(explanation.same_profile);
    let hops: Vec<String> = explanation
        .path
        .iter()
        .map(|h| format!("{}->{} {}", h.from, h.to, h.rule))
        .collect();
    assert_eq!(
        hops,
        [
            "anonymous_id:phone->user_id:u1 merged profiles",
            "user_id:u1->anonymous_id:laptop added identifier"
        ]
    );
    assert!(explanation
        .path
        .iter()
        .all(|h| h.event_type == "identify" && !h.message_id.is_empty()));
    w.check_invariants();
}

#[test]
fn shared_family_device_never_merges_two_users() {
    let mut w = World::new();
    w.send(Identify, json!({"anonymousId": "tablet", "userId": "mum"}));
    let applied = w.send(Identify, json!({"anonymousId": "tablet", "userId": "son"}));
    assert_eq!(
        applied.refused, 1,
        "the anonymous id is dropped from the second event"
    );
    assert!(!w.same(("user_id", "mum"), ("user_id", "son")));
    assert!(
        w.same(("anonymous_id", "tablet"), ("user_id", "mum")),
        "the device stays with its first user"
    );
    let refusals = query::refusals(&w.kv, 10).unwrap();
    assert_eq!(refusals[0].rule, "limit user_id: 1");
    assert_eq!(refusals[0].dropped, Identity::new("anonymous_id", "tablet"));
    // The son's later events on his own id still land on his profile.
    w.send(Track, json!({"userId": "son", "event": "Played"}));
    assert_eq!(w.profile_of("user_id", "son").unwrap().event_count, 2);
    w.check_invariants();
}

#[test]
fn two_users_on_one_email_stay_two_profiles() {
    let mut w = World::new();
    w.send(
        Identify,
        json!({"userId": "u1", "traits": {"email": "family@example.org"}}),
    );
    let applied = w.send(
        Identify,
        json!({"userId": "u2", "traits": {"email": "family@example.org"}}),
    );
    assert_eq!(applied.refused, 1);
    assert!(!w.same(("user_id", "u1"), ("user_id", "u2")));
    assert_eq!(w.profile_of("user_id", "u2").unwrap().identities.len(), 1);
    w.check_invariants();
}

#[test]
fn alias_chains_join_previous_ids() {
    let mut w = World::new();
    w.send(Track, json!({"anonymousId": "a1", "event": "Visit"}));
    w.send(Alias, json!({"previousId": "a1", "userId": "u1"}));
    assert!(w.same(("anonymous_id", "a1"), ("user_id", "u1")));
    w.send(Track, json!({"anonymousId": "a2", "event": "Visit"}));
    w.send(Alias, json!({"previousId": "a2", "userId": "u1"}));
    assert!(w.same(("anonymous_id", "a2"), ("anonymous_id", "a1")));
    // Aliasing one user id to another would give a profile two user ids: refused, recorded.
    w.send(Identify, json!({"userId": "u2"}));
    let applied = w.send(Alias, json!({"previousId": "u2", "userId": "u1"}));
    assert_eq!(applied.refused, 1);
    assert!(!w.same(("user_id", "u1"), ("user_id", "u2")));
    w.check_invariants();
}

#[test]
fn blocked_placeholder_values_join_nothing() {
    let mut w = World::new();
    w.send(
        Track,
        json!({"userId": "null", "anonymousId": "a1", "event": "E"}),
    );
    w.send(
        Track,
        json!({"userId": "null", "anonymousId": "a2", "event": "E"}),
    );
    w.send(
        Identify,
        json!({"userId": "0", "anonymousId": "a3", "traits": {"email": "undefined"}}),
    );
    assert_eq!(w.profiles().len(), 3);
    assert!(w.profile_of("user_id", "null").is_none());
    assert!(w.applied.iter().all(|a| a.ignored_identifiers >= 1));
    let only_placeholder = w.send(Track, json!({"userId": "undefined", "event": "E"}));
    assert!(only_placeholder.unattributed);
    w.check_invariants();
}

#[test]
fn limit_overflow_drops_the_extra_identifier_and_keeps_the_event() {
    let mut w = World::new();
    for device in 1..=5 {
        w.send(
            Identify,
            json!({"userId": "u1", "anonymousId": format!("a{device}")}),
        );
    }
    let applied = w.send(
        Track,
        json!({"userId": "u1", "anonymousId": "a6", "event": "E"}),
    );
    assert_eq!(applied.refused, 1);
    assert_eq!(
        applied.profile,
        Some(w.profile_of("user_id", "u1").unwrap().id),
        "the event still counts for u1"
    );
    assert!(w.profile_of("anonymous_id", "a6").is_none());
    w.send(Track, json!({"anonymousId": "a6", "event": "E"}));
    assert!(!w.same(("anonymous_id", "a6"), ("user_id", "u1")));
    w.check_invariants();
}

#[test]
fn windowed_limits_count_only_recent_identifiers() {
    let config = tandem_config::IdentityConfig {
        identifiers: vec![tandem_config::IdentifierConfig {
            kind: "anonymous_id".into(),
            priority: None,
            limit: Some(2),
            window_days: Some(7),
        }],
        ..Default::default()
    };
    let mut w = World::with_rules(tandem_unify::IdentityRules::from_config(&config).unwrap());
    let day = 86_400_000;
    let start = 1_700_000_000_000;
    w.send_at(
        Identify,
        json!({"userId": "u", "anonymousId": "old1"}),
        start,
    );
    w.send_at(
        Identify,
        json!({"userId": "u", "anonymousId": "old2"}),
        start + day,
    );
    let refused = w.send_at(
        Identify,
        json!({"userId": "u", "anonymousId": "new1"}),
        start + 2 * day,
    );
    assert_eq!(refused.refused, 1, "three in one week is over the limit");
    let allowed = w.send_at(
        Identify,
        json!({"userId": "u", "anonymousId": "new1", "messageId": "later"}),
        start + 30 * day,
    );
    assert_eq!(
        allowed.refused, 0,
        "a month later the old ones no longer count"
    );
    assert!(w.same(("anonymous_id", "new1"), ("user_id", "u")));
}

#[test]
fn late_events_do_not_overwrite_newer_traits() {
    let mut w = World::new();
    let t = 1_700_000_000_000;
    w.send_at(
        Identify,
        json!({"userId": "u1", "traits": {"plan": "pro"}}),
        t + 2000,
    );
    w.send_at(
        Identify,
        json!({"userId": "u1", "traits": {"plan": "free", "city": "Oslo"}}),
        t + 1000,
    );
    let profile = w.profile_of("user_id", "u1").unwrap();
    assert_eq!(
        profile.traits["plan"].json, "\"pro\"",
        "the newer value wins"
    );
    assert_eq!(
        profile.traits["city"].json, "\"Oslo\"",
        "a late trait nobody set later is kept"
    );
    assert_eq!(profile.traits["plan"].provenance.time_ms, t + 2000);
    assert_eq!(profile.first_message_ms, t + 1000);
}

#[test]
fn merging_keeps_the_newest_trait_of_either_side() {
    let mut w = World::new();
    w.send(
        Identify,
        json!({"anonymousId": "a1", "traits": {"color": "red", "size": "M"}}),
    );
    w.send(
        Identify,
        json!({"userId": "u1", "traits": {"color": "blue"}}),
    );
    w.send(Identify, json!({"anonymousId": "a1", "userId": "u1"}));
    let profile = w.profile_of("user_id", "u1").unwrap();
    assert_eq!(profile.traits["color"].json, "\"blue\"");
    assert_eq!(profile.traits["size"].json, "\"M\"");
}

#[test]
fn split_undoes_a_wrong_merge_and_keeps_it_undone() {
    let mut w = World::new();
    w.send(Track, json!({"anonymousId": "kiosk", "event": "Browse"}));
    w.send(
        Identify,
        json!({"anonymousId": "kiosk", "userId": "alice", "traits": {"name": "Alice"}}),
    );
    w.send(Track, json!({"userId": "alice", "event": "Bought"}));
    let profile = w.profile_id("user_id", "alice");
    let applied = w.split(&profile, &[("anonymous_id", "kiosk")]);
    let split = applied.split.expect("split done");
    assert_eq!(
        split.separated,
        vec![Identity::new("anonymous_id", "kiosk")]
    );
    assert_eq!(split.result.len(), 2);
    assert_eq!(split.events, 3);
    assert!(!w.same(("anonymous_id", "kiosk"), ("user_id", "alice")));
    assert_eq!(
        w.profile_id("anonymous_id", "kiosk"),
        profile,
        "the side with the first event keeps the id"
    );
    assert_eq!(
        w.profile_of("anonymous_id", "kiosk").unwrap().event_count,
        1
    );
    assert_eq!(w.profile_of("user_id", "alice").unwrap().event_count, 2);
    let alice = w.profile_of("user_id", "alice").unwrap();
    assert_eq!(alice.traits["name"].json, "\"Alice\"");
    // The same evidence arriving again does not re-merge them; the refusal names the split.
    let again = w.send(Identify, json!({"anonymousId": "kiosk", "userId": "alice"}));
    assert_eq!(again.refused, 1);
    assert!(query::refusals(&w.kv, 1).unwrap()[0]
        .rule
        .starts_with("split "));
    assert!(!w.same(("anonymous_id", "kiosk"), ("user_id", "alice")));
    assert_eq!(query::splits(&w.kv, 10).unwrap().len(), 1);
    w.check_invariants();
    // Replay from zero reaches the same state, split included.
    assert_eq!(
        common::graph_tables(&w.replay()),
        common::graph_tables(&w.kv)
    );
}

#[test]
fn split_of_an_unknown_profile_or_every_identifier_fails_cleanly() {
    let mut w = World::new();
    w.send(Identify, json!({"anonymousId": "a", "userId": "u"}));
    let profile = w.profile_id("user_id", "u");
    assert!(w
        .split(&profile, &[("anonymous_id", "a"), ("user_id", "u")])
        .split
        .is_none());
    assert!(w
        .split("prof_0000000000000000", &[("anonymous_id", "a")])
        .split
        .is_none());
    assert!(w.split("garbage", &[("anonymous_id", "a")]).split.is_none());
    assert!(w.same(("anonymous_id", "a"), ("user_id", "u")));
}

#[test]
fn groups_make_accounts_with_members() {
    let mut w = World::new();
    w.send(Group, json!({"userId": "u1", "groupId": "acme", "traits": {"name": "Acme", "plan": "enterprise"}}));
    w.send(Group, json!({"userId": "u2", "groupId": "acme"}));
    w.send(Group, json!({"userId": "u1", "groupId": "acme"}));
    let account = query::account(&w.kv, "acme").unwrap().unwrap();
    assert_eq!(account.members, 2);
    assert_eq!(account.traits["plan"].json, "\"enterprise\"");
    assert_eq!(
        query::account_members(&w.kv, "acme", None, 10)
            .unwrap()
            .len(),
        2
    );
    assert!(
        !w.same(("user_id", "u1"), ("user_id", "u2")),
        "sharing an account never merges users"
    );
    assert_eq!(
        w.profile_of("user_id", "u1").unwrap().groups,
        vec!["acme".to_string()]
    );
}

#[test]
fn the_same_event_twice_changes_nothing() {
    let mut w = World::new();
    let event = json!({"anonymousId": "a", "userId": "u", "messageId": "m1", "traits": {"x": 1}});
    w.send(Identify, event.clone());
    let before = common::graph_tables(&w.kv);
    let again = w.send(Identify, event);
    assert!(again.duplicate);
    assert_eq!(common::graph_tables(&w.kv), before);
}

#[test]
fn consent_history_keeps_each_change_with_its_proof_and_follows_merges() {
    let mut w = World::new();
    let granted = json!({"categoryPreferences": {"analytics": true, "marketing": true}});
    let withdrawn = json!({"categoryPreferences": {"analytics": true, "marketing": false}});
    w.send_at(
        Track,
        json!({"anonymousId": "phone", "event": "A", "context": {"consent": granted}}),
        1000000,
    );
    // The same preferences again add nothing.
    w.send_at(
        Track,
        json!({"anonymousId": "phone", "event": "B", "context": {"consent": granted}}),
        2000000,
    );
    w.send_at(Track, json!({"anonymousId": "laptop", "event": "Consent Preference Updated", "context": {"consent": withdrawn}}), 3000000);
    w.send_at(
        Identify,
        json!({"anonymousId": "phone", "userId": "u1"}),
        4000000,
    );
    w.send_at(
        Identify,
        json!({"anonymousId": "laptop", "userId": "u1"}),
        5000000,
    );
    let profile = w.profile_of("user_id", "u1").unwrap();
    let history = query::consent_history(&w.kv, profile.id, 10).unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(!history[0].preferences["marketing"], "newest first");
    assert_eq!(
        history[0].event.as_deref(),
        Some("Consent Preference Updated")
    );
    assert!(!history[0].provenance.message_id.is_empty());
    assert!(history[1].preferences["marketing"]);
    assert!(!query::latest_consent(&w.kv, profile.id).unwrap().unwrap()["marketing"]);
    // A late event from before the withdrawal is history, not the latest choice.
    w.send_at(Track, json!({"userId": "u1", "event": "Late", "context": {"consent": {"categoryPreferences": {"analytics": false}}}}), 1500000);
    let history = query::consent_history(&w.kv, profile.id, 10).unwrap();
    assert_eq!(history.len(), 3);
    assert!(!history[0].preferences["marketing"]);
    w.check_invariants();
}

/// Erasure removes every row of the person — bytes of none of their identifiers or trait values
/// remain anywhere in the state — and leaves another person, their shared account and its
/// membership count right.
#[test]
fn erase_leaves_no_byte_of_the_person_and_spares_the_others() {
    let mut world = World::new();
    world.send(
        Identify,
        json!({"anonymousId": "device-phone-1", "userId": "ada-42", "traits": {"email": "ada@example.com", "name": "Ada Lovelace"}}),
    );
    world.send(
        Track,
        json!({"anonymousId": "device-laptop-2", "userId": "ada-42", "event": "Viewed", "context": {"consent": {"categoryPreferences": {"marketing": true}}}}),
    );
    world.send(
        Group,
        json!({"userId": "ada-42", "groupId": "acme", "traits": {"name": "Acme"}}),
    );
    // A third device, anonymous first, then merged in by an alias.
    world.send(
        Page,
        json!({"anonymousId": "device-tablet-3", "name": "Home"}),
    );
    world.send(
        Alias,
        json!({"userId": "ada-42", "previousId": "device-tablet-3"}),
    );
    world.send(
        Identify,
        json!({"userId": "bob-7", "traits": {"email": "bob@example.com"}}),
    );
    world.send(Group, json!({"userId": "bob-7", "groupId": "acme"}));
    let ada = world.profile_id("user_id", "ada-42");
    let control = json!({"control": "erase", "request": "dsr_1", "profileIds": [ada], "messageId": "erase-1"});
    world.clock += 1000;
    let applied = world.push_record(common::record(
        tandem_core::envelope::EventType::Control,
        control,
        world.clock,
    ));
    assert_eq!(applied.erased.len(), 1);
    let bytes: Vec<u8> = world
        .kv
        .map
        .iter()
        .flat_map(|(k, v)| k.iter().chain(v.iter()).copied().collect::<Vec<u8>>())
        .collect();
    for needle in [
        "ada-42",
        "device-phone-1",
        "device-laptop-2",
        "device-tablet-3",
        "ada@example.com",
        "Ada Lovelace",
    ] {
        assert!(
            !bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes()),
            "{needle} is still in the unify state"
        );
    }
    assert!(world.profile_of("user_id", "ada-42").is_none());
    assert!(world.profile_of("user_id", "bob-7").is_some());
    let account = tandem_unify::query::account(&world.kv, "acme")
        .unwrap()
        .unwrap();
    assert_eq!(account.members, 1);
    world.check_invariants();
    // Erasing again (a replay reaching the same control record) finds nothing and fails nothing.
    let again = json!({"control": "erase", "request": "dsr_1", "profileIds": [ada], "messageId": "erase-2"});
    world.clock += 1000;
    let applied = world.push_record(common::record(
        tandem_core::envelope::EventType::Control,
        again,
        world.clock,
    ));
    assert!(applied.erased.is_empty());
}

#[test]
fn retention_erase_spares_a_profile_active_again_since_the_sweep() {
    let mut world = World::new();
    let start = world.clock;
    world.send_at(Identify, json!({"userId": "old-1"}), start);
    world.send_at(Identify, json!({"userId": "back-2"}), start);
    world.send_at(Identify, json!({"userId": "recent-3"}), start + 10_000);
    let old = world.profile_id("user_id", "old-1");
    let back = world.profile_id("user_id", "back-2");
    // The sweep selected `old-1` and `back-2` (inactive before start + 5 s); `back-2` sends an
    // event before the erase record is applied.
    world.send_at(
        Track,
        json!({"userId": "back-2", "event": "Returned"}),
        start + 20_000,
    );
    let control = json!({"control": "erase", "request": "retention-2026-12-08", "profileIds": [old, back], "inactiveBeforeMs": start + 5_000});
    world.clock = start + 30_000;
    let applied = world.push_record(common::record(
        tandem_core::envelope::EventType::Control,
        control,
        world.clock,
    ));
    assert_eq!(applied.erased.len(), 1);
    assert!(world.profile_of("user_id", "old-1").is_none());
    assert!(world.profile_of("user_id", "back-2").is_some());
    assert!(world.profile_of("user_id", "recent-3").is_some());
    world.check_invariants();
}
