use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use tandem_core::EventType;

fn plan(events: Value) -> TrackingPlanConfig {
    TrackingPlanConfig {
        id: "web".into(),
        name: "Web".into(),
        events: serde_json::from_value(events).unwrap(),
        ..TrackingPlanConfig::default()
    }
}

fn order_plan() -> CompiledPlan {
    let config = plan(json!({
        "Order Completed": {
            "type": "object",
            "required": ["order_id", "total"],
            "properties": {
                "order_id": {"type": "string"},
                "total": {"type": "number", "minimum": 0},
                "currency": {"enum": ["EUR", "USD"]}
            }
        }
    }));
    CompiledPlan::compile(config, 1).unwrap()
}

#[test]
fn a_conforming_event_has_no_violations() {
    let event = json!({"type": "track", "event": "Order Completed", "properties": {"order_id": "o1", "total": 12.5, "currency": "EUR"}});
    assert_eq!(order_plan().check(EventType::Track, &event), vec![]);
}

#[test]
fn violations_name_the_field_and_the_rule() {
    let event = json!({"event": "Order Completed", "properties": {"total": -1, "currency": "GBP"}});
    let mut violations = order_plan().check(EventType::Track, &event);
    violations.sort_by(|a, b| a.field.cmp(&b.field));
    let found: Vec<(&str, &str)> = violations
        .iter()
        .map(|violation| (violation.field.as_str(), violation.rule.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("/properties/currency", "enum"),
            ("/properties/order_id", "required"),
            ("/properties/total", "minimum"),
        ]
    );
    assert!(violations[1].message.contains("order_id"), "{violations:?}");
}

#[test]
fn absent_properties_are_checked_as_an_empty_object() {
    let event = json!({"event": "Order Completed"});
    let violations = order_plan().check(EventType::Track, &event);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations
        .iter()
        .all(|violation| violation.rule == "required"));
}

#[test]
fn unplanned_events_pass_or_violate_as_the_plan_says() {
    let event = json!({"event": "Something Else", "properties": {}});
    assert!(order_plan().check(EventType::Track, &event).is_empty());
    let mut config = order_plan().config.clone();
    config.unplanned_events = UnplannedEvents::Violation;
    let strict = CompiledPlan::compile(config, 2).unwrap();
    let violations = strict.check(EventType::Track, &event);
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].rule, RULE_UNPLANNED_EVENT);
    assert_eq!(violations[0].field, "/event");
    // Page calls are not planned.
    assert!(strict
        .check(EventType::Page, &json!({"name": "Home"}))
        .is_empty());
}

#[test]
fn identify_and_group_traits_have_their_own_schemas() {
    let config = TrackingPlanConfig {
        identify_traits: Some(
            json!({"type": "object", "properties": {"email": {"type": "string", "format": "email"}, "age": {"type": "integer"}}}),
        ),
        group_traits: Some(json!({"type": "object", "required": ["plan"]})),
        ..plan(json!({}))
    };
    let compiled = CompiledPlan::compile(config, 1).unwrap();
    let violations = compiled.check(EventType::Identify, &json!({"traits": {"age": "old"}}));
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "/traits/age");
    assert_eq!(violations[0].rule, "type");
    let violations = compiled.check(EventType::Group, &json!({"groupId": "g", "traits": {}}));
    assert_eq!(violations[0].field, "/traits/plan");
}

#[test]
fn a_bad_schema_is_refused_naming_the_event() {
    let config = plan(json!({
        "Good": {"type": "object"},
        "Bad Event": {"type": "no-such-type"},
        "Bad Pattern": {"type": "string", "pattern": "(unclosed"}
    }));
    let problems = CompiledPlan::compile(config, 1).unwrap_err();
    let events: Vec<&str> = problems
        .iter()
        .filter_map(|problem| problem.event.as_deref())
        .collect();
    assert_eq!(events, vec!["Bad Event", "Bad Pattern"]);
    assert!(problems.iter().all(|problem| !problem.message.is_empty()));
    assert_eq!(problems[0].schema, "events.Bad Event");
}

#[test]
fn external_references_are_not_fetched() {
    let config = plan(json!({"Remote": {"$ref": "http://127.0.0.1:9/schema.json"}}));
    assert!(CompiledPlan::compile(config, 1).is_err());
}

#[test]
fn inference_finds_types_unions_required_and_enums() {
    let events = [
        json!({"event": "Order Completed", "properties": {"order_id": "o1", "total": 10, "currency": "EUR", "coupon": "A1"}}),
        json!({"event": "Order Completed", "properties": {"order_id": "o2", "total": 12.5, "currency": "USD", "coupon": null}}),
        json!({"event": "Order Completed", "properties": {"order_id": "o3", "total": 7, "currency": "EUR"}}),
        json!({"event": "Order Completed", "properties": {"order_id": "o4", "total": 3, "currency": "USD"}}),
        json!({"type": "identify", "traits": {"email": "a@example.test", "plan": "pro"}}),
        json!({"type": "identify", "traits": {"email": "b@example.test", "plan": "pro"}}),
    ];
    let inferred = infer(events.iter().map(|event| {
        let kind = if event.get("traits").is_some() {
            EventType::Identify
        } else {
            EventType::Track
        };
        (kind, event)
    }));
    let order = &inferred.events["Order Completed"];
    assert_eq!(order["type"], "object");
    assert_eq!(order["required"], json!(["currency", "order_id", "total"]));
    assert_eq!(
        order["properties"]["total"]["type"], "number",
        "integer folds into number"
    );
    assert_eq!(
        order["properties"]["coupon"]["type"],
        json!(["null", "string"])
    );
    assert_eq!(
        order["properties"]["currency"]["enum"],
        json!(["EUR", "USD"])
    );
    assert!(
        order["properties"]["order_id"].get("enum").is_none(),
        "ids are not an enum"
    );
    let traits = inferred.identify_traits.as_ref().unwrap();
    assert_eq!(traits["required"], json!(["email", "plan"]));
    assert_eq!(traits["properties"]["plan"]["enum"], json!(["pro"]));
    assert_eq!(inferred.samples["Order Completed"], 4);
    assert_eq!(inferred.samples["identify"], 2);
    let config = inferred.into_config("draft".into(), "Draft".into(), vec![]);
    assert!(config.draft);
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        prop::sample::select(vec!["a", "b", "EUR", "", "x/y~z"]).prop_map(Value::from),
        "[a-z0-9 ]{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec!["a", "b", "c", "d/e", "~f"]),
                inner,
                0..4
            )
            .prop_map(|map| Value::Object(
                map.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

fn sample_event() -> impl Strategy<Value = (EventType, Value)> {
    let properties = prop::collection::btree_map(
        prop::sample::select(vec!["total", "currency", "sku", "nested", "list", "flag"]),
        json_value(),
        0..5,
    );
    (
        prop::sample::select(vec![
            EventType::Track,
            EventType::Identify,
            EventType::Group,
        ]),
        prop::sample::select(vec!["Order Completed", "Signed Up", "Viewed"]),
        properties,
        any::<bool>(),
    )
        .prop_map(|(kind, name, properties, omit)| {
            let body: serde_json::Map<String, Value> = properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let part = if kind == EventType::Track {
                "properties"
            } else {
                "traits"
            };
            let mut event = json!({"type": kind.as_str(), "event": name});
            if !omit {
                event[part] = Value::Object(body);
            }
            (kind, event)
        })
}

proptest! {
    /// A plan inferred from events accepts every one of them, compiled in every mode.
    #[test]
    fn an_inferred_plan_accepts_the_events_it_came_from(events in prop::collection::vec(sample_event(), 1..40)) {
        let inferred = infer(events.iter().map(|(kind, event)| (*kind, event)));
        let mut config = inferred.into_config("inferred".into(), "Inferred".into(), vec![]);
        config.unplanned_events = UnplannedEvents::Violation;
        let compiled = CompiledPlan::compile(config, 1).expect("an inferred plan compiles");
        for (kind, event) in &events {
            let violations = compiled.check(*kind, event);
            prop_assert!(violations.is_empty(), "{event} broke its inferred plan: {violations:?}");
        }
    }
}
