//! Audience scenarios on a unify state in memory: event conditions with filters and windows,
//! merges that make someone qualify (or continue a membership), window exits, nesting and
//! references, backfill of a new definition (preview size == members after), changed and
//! deleted definitions.

mod common;

use common::*;
use serde_json::json;
use tandem_audiences::Reason;
use tandem_core::envelope::EventType;

fn big_spenders() -> tandem_config::AudienceConfig {
    audience(
        "big-spenders",
        json!({"event": "Order Completed", "at_least": 2, "within_days": 30,
               "where": [{"property": "total", "op": "gt", "value": 100}]}),
    )
}

#[test]
fn an_event_condition_with_a_filter_enters_once_and_exits_when_the_window_passes() {
    let mut world = World::new(vec![big_spenders()]);
    world.track("u1", "Order Completed", json!({"total": 150}), T0);
    world.track("u1", "Order Completed", json!({"total": 50}), T0 + 1000);
    assert!(world.memberships("user_id:u1").is_empty());
    let effects = world.track(
        "u1",
        "Order Completed",
        json!({"total": "180"}),
        T0 + 2 * DAY,
    );
    assert_eq!(effects.outbox.len(), 1);
    assert_eq!(world.memberships("user_id:u1"), ["big-spenders"]);
    assert_eq!(world.size("big-spenders"), 1);
    // More qualifying orders change nothing.
    world.track("u1", "Order Completed", json!({"total": 500}), T0 + 3 * DAY);
    assert_eq!(world.announced.len(), 1);
    let entered = &world.announced[0];
    assert_eq!(entered.event_name(), "Audience Entered");
    assert_eq!(entered.identities[0], ("user_id".into(), "u1".into()));
    // Day 0's order leaves the 30-day window on day 30: two qualifying orders remain.
    world.advance_to(T0 + 30 * DAY + 1);
    assert_eq!(world.memberships("user_id:u1"), ["big-spenders"]);
    // On day 32 only the order of day 3 is left.
    let effects = world.advance_to(T0 + 32 * DAY + 1);
    assert_eq!(effects.outbox.len(), 1, "{:?}", effects.outbox);
    assert_eq!(effects.outbox[0].event_name(), "Audience Exited");
    assert_eq!(effects.outbox[0].reason, Reason::Window);
    assert!(world.memberships("user_id:u1").is_empty());
    assert_eq!(world.size("big-spenders"), 0);
}

#[test]
fn did_not_perform_enters_when_the_last_event_leaves_the_window() {
    let mut world = World::new(vec![audience(
        "lapsed",
        json!({"all": [{"trait": "plan", "op": "exists"},
                       {"event": "Order Completed", "at_most": 0, "within_days": 7}]}),
    )]);
    world.identify(json!({"userId": "u1"}), json!({"plan": "pro"}), T0);
    assert_eq!(world.memberships("user_id:u1"), ["lapsed"], "never ordered");
    world.track("u1", "Order Completed", json!({}), T0 + DAY);
    assert!(world.memberships("user_id:u1").is_empty());
    world.advance_to(T0 + 7 * DAY);
    assert!(
        world.memberships("user_id:u1").is_empty(),
        "day 1 is still in the window"
    );
    world.advance_to(T0 + 8 * DAY + 5);
    assert_eq!(world.memberships("user_id:u1"), ["lapsed"]);
    let names: Vec<String> = world.announcements().into_iter().map(|a| a.0).collect();
    assert_eq!(
        names,
        ["Audience Entered", "Audience Exited", "Audience Entered"]
    );
}

#[test]
fn a_merge_makes_someone_qualify() {
    let mut world = World::new(vec![big_spenders()]);
    world.batch(vec![(
        EventType::Track,
        json!({"anonymousId": "a1", "event": "Order Completed", "properties": {"total": 120}}),
        T0,
    )]);
    world.track("u1", "Order Completed", json!({"total": 130}), T0 + 1);
    assert!(world.announced.is_empty());
    let effects = world.identify(
        json!({"userId": "u1", "anonymousId": "a1"}),
        json!({}),
        T0 + 2,
    );
    assert_eq!(effects.outbox.len(), 1);
    let entered = &effects.outbox[0];
    assert_eq!(entered.event_name(), "Audience Entered");
    assert_eq!(entered.reason, Reason::Merge);
    assert_eq!(world.memberships("anonymous_id:a1"), ["big-spenders"]);
    assert_eq!(world.size("big-spenders"), 1);
    let kinds: Vec<&str> = entered.identities.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["user_id", "anonymous_id"]);
}

#[test]
fn a_membership_continues_through_a_merge_or_ends_with_it() {
    let viewed = audience("viewed-pricing", json!({"event": "Viewed Pricing"}));
    let never_signed_up = audience("prospects", json!({"event": "Signed Up", "at_most": 0}));
    let mut world = World::new(vec![viewed, never_signed_up]);
    world.batch(vec![(
        EventType::Track,
        json!({"anonymousId": "a1", "event": "Viewed Pricing"}),
        T0,
    )]);
    let anonymous = world.profile_of("anonymous_id:a1").unwrap().id;
    world.track("u1", "Signed Up", json!({}), T0 + 1);
    let user = world.profile_of("user_id:u1").unwrap().id;
    assert_eq!(
        world.memberships("anonymous_id:a1"),
        ["prospects", "viewed-pricing"]
    );
    assert!(world.memberships("user_id:u1").is_empty());
    world.announced.clear();
    world.identify(
        json!({"userId": "u1", "anonymousId": "a1"}),
        json!({}),
        T0 + 2,
    );
    let survivor = world.profile_of("user_id:u1").unwrap().id;
    assert_eq!(survivor, anonymous, "the oldest profile survives");
    let mut seen = world.announcements();
    seen.sort();
    // The pricing view continues in the merged profile (entered as it, naming the absorbed);
    // the merged profile signed up, so the prospect leaves.
    assert_eq!(
        seen,
        [(
            "Audience Exited".to_string(),
            "prospects".to_string(),
            anonymous
        ),],
        "{:?}",
        world.announced
    );
    let _ = user;
    assert_eq!(world.memberships("user_id:u1"), ["viewed-pricing"]);
    assert_eq!(world.size("viewed-pricing"), 1);
    assert_eq!(world.size("prospects"), 0);
}

#[test]
fn the_survivor_enters_for_a_membership_only_the_absorbed_had() {
    let viewed = audience("viewed-pricing", json!({"event": "Viewed Pricing"}));
    let mut world = World::new(vec![viewed]);
    world.track("u1", "Signed Up", json!({}), T0);
    world.batch(vec![(
        EventType::Track,
        json!({"anonymousId": "a1", "event": "Viewed Pricing"}),
        T0 + 1,
    )]);
    let absorbed = world.profile_of("anonymous_id:a1").unwrap().id;
    world.announced.clear();
    world.identify(
        json!({"userId": "u1", "anonymousId": "a1"}),
        json!({}),
        T0 + 2,
    );
    let survivor = world.profile_of("user_id:u1").unwrap().id;
    assert_ne!(survivor, absorbed);
    assert_eq!(world.announced.len(), 1, "{:?}", world.announced);
    let entered = &world.announced[0];
    assert_eq!(entered.event_name(), "Audience Entered");
    assert_eq!(entered.profile, survivor);
    assert_eq!(entered.merged, [absorbed]);
    assert_eq!(world.members("viewed-pricing"), [survivor]);
    assert_eq!(world.size("viewed-pricing"), 1);
}

#[test]
fn nested_conditions_and_references_to_other_audiences() {
    let buyers = audience("buyers", json!({"event": "Order Completed"}));
    let churned = audience(
        "churned",
        json!({"trait": "status", "op": "eq", "value": "churned"}),
    );
    let vip = audience(
        "vip",
        json!({"all": [{"audience": "buyers"}, {"not": {"audience": "churned"}},
                       {"any": [{"trait": "plan", "op": "in", "value": ["pro", "enterprise"]},
                                {"trait": "seats", "op": "gte", "value": 10}]}]}),
    );
    let mut world = World::new(vec![vip, buyers, churned]);
    world.identify(json!({"userId": "u1"}), json!({"seats": "12"}), T0);
    assert!(world.memberships("user_id:u1").is_empty());
    world.track("u1", "Order Completed", json!({}), T0 + 1);
    assert_eq!(world.memberships("user_id:u1"), ["buyers", "vip"]);
    world.identify(
        json!({"userId": "u1"}),
        json!({"status": "churned"}),
        T0 + 2,
    );
    assert_eq!(world.memberships("user_id:u1"), ["buyers", "churned"]);
    world.identify(
        json!({"userId": "u2"}),
        json!({"plan": "enterprise"}),
        T0 + 3,
    );
    world.track("u2", "Order Completed", json!({}), T0 + 4);
    assert_eq!(world.memberships("user_id:u2"), ["buyers", "vip"]);
}

#[test]
fn a_new_audience_is_backfilled_and_its_preview_matches_its_members() {
    let mut world = World::new(vec![]);
    for (user, totals) in [
        ("u1", vec![150, 200]),
        ("u2", vec![150]),
        ("u3", vec![20, 30, 40]),
        ("u4", vec![101, 500, 90]),
        ("u5", vec![]),
    ] {
        world.identify(json!({"userId": user}), json!({"plan": "pro"}), T0);
        for (day, total) in totals.into_iter().enumerate() {
            world.track(
                user,
                "Order Completed",
                json!({"total": total}),
                T0 + day as i64 * DAY,
            );
        }
    }
    world.now = T0 + 5 * DAY;
    let definitions = vec![big_spenders()];
    let preview = world.preview(&definitions, "big-spenders");
    assert_eq!(preview.size, 2);
    assert_eq!(preview.profiles_scanned, 5);
    assert!(world.announced.is_empty());
    world.define_pending(definitions.clone());
    assert!(world.audiences.busy());
    // Real time waits for the job: a profile it has not reached is not evaluated yet.
    world.step(2);
    assert!(world.audiences.job().unwrap().progress > 0.0);
    world.finish_job();
    let mut members = world.members("big-spenders");
    members.sort();
    let mut sample = preview.sample.clone();
    sample.sort();
    assert_eq!(members, sample);
    assert_eq!(world.size("big-spenders"), 2);
    assert!(world.announced.iter().all(|e| e.reason == Reason::Backfill));
    // The counter counted history and keeps counting.
    world.track("u2", "Order Completed", json!({"total": 300}), T0 + 5 * DAY);
    assert_eq!(world.memberships("user_id:u2"), ["big-spenders"]);
    assert_eq!(world.size("big-spenders"), 3);
    // The preview of a saved audience counts from its counters now, and still agrees.
    assert_eq!(world.preview(&definitions, "big-spenders").size, 3);
}

#[test]
fn a_changed_definition_is_re_evaluated_and_a_deleted_one_exits_its_members() {
    let mut world = World::new(vec![audience(
        "pros",
        json!({"trait": "plan", "op": "eq", "value": "pro"}),
    )]);
    world.identify(
        json!({"userId": "u1"}),
        json!({"plan": "pro", "seats": 3}),
        T0,
    );
    world.identify(
        json!({"userId": "u2"}),
        json!({"plan": "pro", "seats": 30}),
        T0,
    );
    assert_eq!(world.size("pros"), 2);
    world.define(vec![audience(
        "pros",
        json!({"all": [{"trait": "plan", "op": "eq", "value": "pro"}, {"trait": "seats", "op": "gt", "value": 10}]}),
    )]);
    assert_eq!(world.memberships("user_id:u1"), Vec::<String>::new());
    assert_eq!(world.memberships("user_id:u2"), ["pros"]);
    world.define(vec![]);
    assert_eq!(world.size("pros"), 0);
    assert!(world.memberships("user_id:u2").is_empty());
    let last = world.announced.last().unwrap();
    assert_eq!(last.event_name(), "Audience Exited");
    assert_eq!(last.reason, Reason::Deleted);
    let names: Vec<String> = world.announcements().into_iter().map(|a| a.0).collect();
    assert_eq!(
        names,
        [
            "Audience Entered",
            "Audience Entered",
            "Audience Exited",
            "Audience Exited"
        ]
    );
}

#[test]
fn outbox_events_carry_segment_shaped_fields_and_stable_message_ids() {
    let mut world = World::new(vec![audience(
        "pros",
        json!({"trait": "plan", "op": "eq", "value": "pro"}),
    )]);
    world.identify(
        json!({"userId": "u1", "anonymousId": "a1"}),
        json!({"plan": "pro"}),
        T0,
    );
    let entry = &world.announced[0];
    let event = entry.event_json("demo", T0 + 5);
    assert_eq!(event["type"], "track");
    assert_eq!(event["event"], "Audience Entered");
    assert_eq!(event["userId"], "u1");
    assert_eq!(event["anonymousId"], "a1");
    assert_eq!(event["properties"]["audience_key"], "pros");
    assert_eq!(event["properties"]["pros"], true);
    assert_eq!(event["context"]["audience"]["reason"], "event");
    assert_eq!(event["context"]["externalIds"].as_array().unwrap().len(), 2);
    assert_eq!(entry.message_id(), entry.clone().message_id());
    assert!(entry.message_id().len() <= 100);
    let state = tandem_audiences::state::outbox(&world.kv, 10).unwrap();
    assert_eq!(state.len(), 1);
    tandem_audiences::state::trim_outbox(&mut world.kv, entry.sequence).unwrap();
    assert!(tandem_audiences::state::outbox(&world.kv, 10)
        .unwrap()
        .is_empty());
}
