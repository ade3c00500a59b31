//! A workspace's audience definitions compiled into an [`AudienceSet`]: every audience after
//! the audiences it refers to, each event condition turned into a hidden counter (identical
//! event conditions of several audiences share one), comparisons prepared.

use crate::condition::{split_path, Comparison, Condition, Op};
use serde_json::Value;
use std::sync::Arc;
use tandem_config::{
    audience_order, audience_problems, audience_set_problems, since_ms, AudienceConfig,
    ConditionConfig, ConditionKind,
};
use tandem_core::limits::AUDIENCE_COUNTERS_MAX;
use tandem_unify::computed::{ComputedDef, EventPredicate};

/// What a hidden counter counts: one event condition's event, filters and time range.
#[derive(Clone, Debug)]
pub struct CounterSpec {
    /// `~aud:` and a digest of what it counts (so equal conditions share it, across restarts).
    pub name: String,
    pub event_type: String,
    /// `None`: any name of that type (`event = "*"`).
    pub event: Option<String>,
    pub filters: Vec<(Vec<String>, Comparison)>,
    pub window_days: Option<u32>,
    pub since_ms: Option<i64>,
    /// The counter as unify keeps it.
    pub def: ComputedDef,
}

/// The prefix of hidden counter names: never a computed trait's (those are slugs).
pub const COUNTER_PREFIX: &str = "~aud:";

impl CounterSpec {
    fn new(
        event_type: &str,
        event: Option<String>,
        filters: Vec<(Vec<String>, Comparison)>,
        window_days: Option<u32>,
        since_ms: Option<i64>,
    ) -> Result<CounterSpec, String> {
        let description = serde_json::json!({
            "type": event_type,
            "event": event,
            "where": filters.iter().map(|(path, c)| (path.join("."), format!("{:?}", c.op), c.value.clone())).collect::<Vec<_>>(),
            "window_days": window_days,
            "since_ms": since_ms,
        })
        .to_string();
        let name = format!(
            "{COUNTER_PREFIX}{:016x}",
            xxhash_rust::xxh3::xxh3_64(description.as_bytes())
        );
        let predicate = {
            let (event_type, event, filters) =
                (event_type.to_string(), event.clone(), filters.clone());
            EventPredicate(Arc::new(move |json: &Value| {
                event_matches(&event_type, event.as_deref(), &filters, json)
            }))
        };
        let def = ComputedDef::hidden_counter(&name, event_type, predicate, window_days, since_ms)?;
        Ok(CounterSpec {
            name,
            event_type: event_type.to_string(),
            event,
            filters,
            window_days,
            since_ms,
            def,
        })
    }

    /// Whether the counter reads event properties (and so needs the event itself, not only its
    /// name and time, to be counted from history).
    pub fn needs_properties(&self) -> bool {
        !self.filters.is_empty()
    }

    /// Whether an event of the counter's type with this name (from a timeline row) may count.
    pub fn name_matches(&self, name: Option<&str>) -> bool {
        match &self.event {
            None => true,
            Some(wanted) => name == Some(wanted.as_str()),
        }
    }
}

/// Whether `json` (an event of type `event_type`) is one an event condition counts.
pub fn event_matches(
    event_type: &str,
    event: Option<&str>,
    filters: &[(Vec<String>, Comparison)],
    json: &Value,
) -> bool {
    if let Some(wanted) = event {
        let field = if event_type == "track" {
            "event"
        } else {
            "name"
        };
        if json.get(field).and_then(Value::as_str) != Some(wanted) {
            return false;
        }
    }
    let payload = match event_type {
        "identify" | "group" => json.get("traits"),
        _ => json.get("properties"),
    };
    filters.iter().all(|(path, comparison)| {
        comparison.holds(payload.and_then(|p| crate::condition::lookup(p, path)))
    })
}

/// One audience, compiled.
#[derive(Clone, Debug)]
pub struct CompiledAudience {
    pub id: String,
    pub name: String,
    /// A digest of the definition: memberships are re-evaluated when it changes.
    pub fingerprint: String,
    pub config: AudienceConfig,
    pub condition: Condition,
    /// Indexes (into [`AudienceSet::audiences`]) of the audiences it refers to, directly.
    pub references: Vec<usize>,
    /// Indexes (into [`AudienceSet::counters`]) of its counters.
    pub counters: Vec<usize>,
}

/// The audiences of a workspace, compiled, in evaluation order.
#[derive(Clone, Debug, Default)]
pub struct AudienceSet {
    pub audiences: Vec<CompiledAudience>,
    pub counters: Vec<CounterSpec>,
}

/// The digest of a definition.
pub fn fingerprint(config: &AudienceConfig) -> String {
    let text = serde_json::to_string(config).expect("audience definitions serialize");
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

impl AudienceSet {
    /// Compiles definitions; every problem (they should have been validated) as one message.
    pub fn compile(
        configs: &[AudienceConfig],
        computed_traits: &[&str],
    ) -> Result<AudienceSet, String> {
        let mut problems: Vec<String> = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            for problem in audience_problems(config, computed_traits) {
                problems.push(format!("audiences[{index}] ({}).{problem}", config.id));
            }
        }
        for problem in audience_set_problems(
            configs
                .iter()
                .map(|config| (format!("audience {}", config.id), config)),
        ) {
            problems.push(problem.to_string());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let order = audience_order(&configs.iter().collect::<Vec<_>>())
            .ok_or_else(|| "audiences refer to each other in a cycle".to_string())?;
        let mut set = AudienceSet::default();
        for id in order {
            let config = configs
                .iter()
                .find(|config| config.id == id)
                .expect("ordered ids come from the configs");
            let mut counters = Vec::new();
            let condition = set.compile_condition(&config.condition, &mut counters)?;
            let mut references: Vec<usize> = config
                .condition
                .audience_references()
                .iter()
                .filter_map(|reference| set.index_of(reference))
                .collect();
            references.sort_unstable();
            counters.sort_unstable();
            counters.dedup();
            set.audiences.push(CompiledAudience {
                id: config.id.clone(),
                name: config.name.clone(),
                fingerprint: fingerprint(config),
                config: config.clone(),
                condition,
                references,
                counters,
            });
        }
        if set.counters.len() > AUDIENCE_COUNTERS_MAX {
            return Err(format!(
                "{} distinct event conditions; at most {AUDIENCE_COUNTERS_MAX} per workspace",
                set.counters.len()
            ));
        }
        Ok(set)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.audiences.iter().position(|audience| audience.id == id)
    }

    pub fn get(&self, id: &str) -> Option<&CompiledAudience> {
        self.audiences.iter().find(|audience| audience.id == id)
    }

    pub fn counter_index(&self, name: &str) -> Option<usize> {
        self.counters
            .iter()
            .position(|counter| counter.name == name)
    }

    /// The hidden counters as unify keeps them.
    pub fn counter_defs(&self) -> Vec<ComputedDef> {
        self.counters
            .iter()
            .map(|counter| counter.def.clone())
            .collect()
    }

    /// The audiences that refer to any of `changed` (by index), directly or through others,
    /// with `changed` themselves: everything whose membership may move when they do.
    pub fn with_dependents(&self, changed: &[usize]) -> Vec<usize> {
        let mut marked = vec![false; self.audiences.len()];
        for index in changed {
            marked[*index] = true;
        }
        // Evaluation order puts every audience after those it refers to: one pass suffices.
        for (index, audience) in self.audiences.iter().enumerate() {
            if audience.references.iter().any(|r| marked[*r]) {
                marked[index] = true;
            }
        }
        (0..self.audiences.len()).filter(|i| marked[*i]).collect()
    }

    fn compile_condition(
        &mut self,
        node: &ConditionConfig,
        counters: &mut Vec<usize>,
    ) -> Result<Condition, String> {
        let kind = *node
            .kinds()
            .first()
            .ok_or_else(|| "an empty condition".to_string())?;
        let comparison = || {
            let op = Op::parse(node.op.as_deref().unwrap_or_default())
                .ok_or_else(|| format!("unknown op {:?}", node.op))?;
            Ok::<_, String>(Comparison::new(
                op,
                node.value.clone().unwrap_or(Value::Null),
            ))
        };
        Ok(match kind {
            ConditionKind::All | ConditionKind::Any => {
                let list = node.all.as_ref().or(node.any.as_ref()).expect("kind");
                let children = list
                    .iter()
                    .map(|child| self.compile_condition(child, counters))
                    .collect::<Result<Vec<_>, _>>()?;
                if kind == ConditionKind::All {
                    Condition::All(children)
                } else {
                    Condition::Any(children)
                }
            }
            ConditionKind::Not => Condition::Not(Box::new(
                self.compile_condition(node.not.as_ref().expect("kind"), counters)?,
            )),
            ConditionKind::Trait => Condition::Trait {
                path: split_path(node.trait_name.as_deref().expect("kind")),
                comparison: comparison()?,
            },
            ConditionKind::Computed => Condition::Computed {
                name: node.computed.clone().expect("kind"),
                comparison: comparison()?,
            },
            ConditionKind::Audience => {
                let id = node.audience.as_deref().expect("kind");
                Condition::Audience(
                    self.index_of(id)
                        .ok_or_else(|| format!("no audience `{id}` (yet)"))?,
                )
            }
            ConditionKind::Event => {
                let filters = node
                    .filters
                    .iter()
                    .map(|filter| {
                        let op = Op::parse(&filter.op)
                            .ok_or_else(|| format!("unknown op `{}`", filter.op))?;
                        Ok((
                            split_path(&filter.property),
                            Comparison::new(op, filter.value.clone().unwrap_or(Value::Null)),
                        ))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let event = node.event.clone().filter(|name| name != "*");
                let since = match &node.since {
                    Some(text) => {
                        Some(since_ms(text).ok_or_else(|| format!("`{text}` is not a date"))?)
                    }
                    None => None,
                };
                let spec = CounterSpec::new(
                    node.event_type.as_deref().unwrap_or("track"),
                    event,
                    filters,
                    node.within_days,
                    since,
                )?;
                let index = match self.counter_index(&spec.name) {
                    Some(index) => index,
                    None => {
                        self.counters.push(spec);
                        self.counters.len() - 1
                    }
                };
                counters.push(index);
                let (times, at_most) = match (node.at_least, node.at_most) {
                    (_, Some(most)) => (most, true),
                    (least, None) => (least.unwrap_or(1), false),
                };
                Condition::Event {
                    counter: index,
                    times,
                    at_most,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn audience(id: &str, condition: Value) -> AudienceConfig {
        serde_json::from_value(json!({"id": id, "name": id, "condition": condition})).unwrap()
    }

    #[test]
    fn references_come_first_and_equal_event_conditions_share_a_counter() {
        let orders = json!({"event": "Order Completed", "at_least": 2, "within_days": 30, "where": [{"property": "total", "op": "gt", "value": 100}]});
        let set = AudienceSet::compile(
            &[
                audience(
                    "vip",
                    json!({"all": [{"audience": "buyers"}, orders.clone()]}),
                ),
                audience("buyers", orders.clone()),
                audience(
                    "lapsed",
                    json!({"event": "Order Completed", "at_most": 0, "within_days": 90}),
                ),
            ],
            &[],
        )
        .unwrap();
        let ids: Vec<&str> = set.audiences.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["buyers", "lapsed", "vip"]);
        assert_eq!(
            set.counters.len(),
            2,
            "vip and buyers share the orders counter"
        );
        assert_eq!(set.audiences[2].counters, set.audiences[0].counters);
        assert_eq!(set.audiences[2].references, [0]);
        assert_eq!(set.with_dependents(&[0]), [0, 2]);
        assert!(set
            .counters
            .iter()
            .all(|c| c.name.starts_with(COUNTER_PREFIX)));
        let counter = &set.counters[set.audiences[0].counters[0]];
        assert!(event_matches(
            "track",
            counter.event.as_deref(),
            &counter.filters,
            &json!({"event": "Order Completed", "properties": {"total": 150}})
        ));
        assert!(!event_matches(
            "track",
            counter.event.as_deref(),
            &counter.filters,
            &json!({"event": "Order Completed", "properties": {"total": 50}})
        ));
        // The same definition compiles to the same counter name (it is stored under it).
        let again = AudienceSet::compile(&[audience("buyers", orders)], &[]).unwrap();
        assert_eq!(again.counters[0].name, counter.name);
    }

    #[test]
    fn invalid_sets_are_refused_with_every_problem() {
        let error = AudienceSet::compile(
            &[
                audience("a", json!({"audience": "b"})),
                audience("b", json!({"audience": "a"})),
                audience("c", json!({"computed": "ltv", "op": "gt", "value": 1})),
            ],
            &[],
        )
        .unwrap_err();
        assert!(error.contains("cycle"), "{error}");
        assert!(error.contains("no computed trait `ltv`"), "{error}");
    }
}
