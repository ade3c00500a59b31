//! Inferring a draft plan from sample events, for IT to review before it is enforced.
//!
//! Per track event name (and for identify and group traits), the samples' `properties` (`traits`)
//! give one schema, built the same way at every depth:
//! * `type`: every JSON type seen, a union when they mix (`integer` folds into `number` when both occur);
//! * for objects, `properties` (each built from the values under that name) and `required` (the
//!   names every sample object has);
//! * for strings only, `enum` when they took at most `TRACKING_PLAN_INFER_ENUM_VALUES_MAX`
//!   distinct values, each seen at least twice on average (a closed set, not ids or free text).
//!
//! By construction the draft accepts every event it was inferred from (a property test holds it to that).

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use tandem_config::TrackingPlanConfig;
use tandem_core::limits::{TRACKING_PLAN_EVENTS_MAX, TRACKING_PLAN_INFER_ENUM_VALUES_MAX};
use tandem_core::EventType;

/// Objects nested deeper than this get `type: object` without their properties.
const INFER_DEPTH_MAX: usize = 4;

/// What [`infer`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferredPlan {
    /// Track event name → schema of its `properties`.
    pub events: BTreeMap<String, Value>,
    pub identify_traits: Option<Value>,
    pub group_traits: Option<Value>,
    /// Samples per event name (`identify` and `group` for the traits).
    pub samples: BTreeMap<String, usize>,
}

impl InferredPlan {
    /// The draft plan (`draft = true`, mode `allow`, unplanned events allowed).
    pub fn into_config(self, id: String, name: String, sources: Vec<String>) -> TrackingPlanConfig {
        TrackingPlanConfig {
            id,
            name,
            sources,
            draft: true,
            events: self.events,
            identify_traits: self.identify_traits,
            group_traits: self.group_traits,
            ..TrackingPlanConfig::default()
        }
    }
}

/// A draft plan from `events` (call type and stored event).
pub fn infer<'a>(events: impl IntoIterator<Item = (EventType, &'a Value)>) -> InferredPlan {
    let empty = Value::Object(Map::new());
    let mut track: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    let mut identify: Vec<&Value> = Vec::new();
    let mut group: Vec<&Value> = Vec::new();
    for (event_type, event) in events {
        match event_type {
            EventType::Track => {
                let Some(name) = event.get("event").and_then(Value::as_str) else {
                    continue;
                };
                if !track.contains_key(name) && track.len() >= TRACKING_PLAN_EVENTS_MAX {
                    continue;
                }
                track
                    .entry(name)
                    .or_default()
                    .push(event.get("properties").unwrap_or(&empty));
            }
            EventType::Identify => identify.push(event.get("traits").unwrap_or(&empty)),
            EventType::Group => group.push(event.get("traits").unwrap_or(&empty)),
            _ => {}
        }
    }
    let mut samples = BTreeMap::new();
    let mut schemas = BTreeMap::new();
    for (name, values) in track {
        samples.insert(name.to_string(), values.len());
        schemas.insert(name.to_string(), schema_for(&values, 0));
    }
    let traits = |values: &[&Value], label: &str, samples: &mut BTreeMap<String, usize>| {
        (!values.is_empty()).then(|| {
            samples.insert(label.to_string(), values.len());
            schema_for(values, 0)
        })
    };
    let identify_traits = traits(&identify, "identify", &mut samples);
    let group_traits = traits(&group, "group", &mut samples);
    InferredPlan {
        events: schemas,
        identify_traits,
        group_traits,
        samples,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The schema every one of `values` satisfies (see the module doc).
fn schema_for(values: &[&Value], depth: usize) -> Value {
    let mut types: BTreeSet<&'static str> = values.iter().map(|value| type_name(value)).collect();
    if types.contains("number") {
        types.remove("integer");
    }
    let mut schema = Map::new();
    let type_value = match types.len() {
        1 => json!(types.iter().next().expect("one type")),
        _ => json!(types.iter().collect::<Vec<_>>()),
    };
    schema.insert("type".into(), type_value);

    let objects: Vec<&Map<String, Value>> = values
        .iter()
        .filter_map(|value| value.as_object())
        .collect();
    if !objects.is_empty() && depth < INFER_DEPTH_MAX {
        let mut by_name: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for object in &objects {
            for (name, value) in *object {
                by_name.entry(name).or_default().push(value);
            }
        }
        let required: Vec<&str> = by_name
            .iter()
            .filter(|(_, found)| found.len() == objects.len())
            .map(|(name, _)| *name)
            .collect();
        let properties: Map<String, Value> = by_name
            .iter()
            .map(|(name, found)| (name.to_string(), schema_for(found, depth + 1)))
            .collect();
        schema.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            schema.insert("required".into(), json!(required));
        }
    }

    if types.len() == 1 && types.contains("string") {
        let distinct: BTreeSet<&str> = values.iter().filter_map(|value| value.as_str()).collect();
        if distinct.len() <= TRACKING_PLAN_INFER_ENUM_VALUES_MAX
            && values.len() >= 2 * distinct.len()
        {
            schema.insert("enum".into(), json!(distinct));
        }
    }
    Value::Object(schema)
}
