//! `[[workspaces.audiences]]` and `[workspaces.personalization]`: the shape of an audience
//! definition (the file and the management API share it) and every rule it must follow — each
//! problem with its path, so the file reports it on its line and the API names the field.
//! Compiling and evaluating definitions is `tandem-audiences`' job.
//!
//! A condition is one of:
//! * `{ all = [...] }`, `{ any = [...] }`, `{ not = {...} }`;
//! * `{ trait = "plan", op = "eq", value = "pro" }` on a profile trait, or
//!   `{ computed = "orders_30d", op = "gte", value = 3 }` on a computed trait;
//! * `{ event = "Order Completed", at_least = 2, within_days = 30, where = [{ property = "total",
//!   op = "gt", value = 100 }] }` — also `at_most`, `since = "2026-01-01"`, `type = "page"`, and
//!   `event = "*"` for any name of that type;
//! * `{ audience = "high-value" }`: membership of another audience of the workspace.

use crate::error::ConfigProblem;
use crate::validate::is_slug;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tandem_core::limits::{
    AUDIENCES_PER_WORKSPACE_MAX, AUDIENCE_CONDITIONS_MAX, AUDIENCE_CONDITION_DEPTH_MAX,
    AUDIENCE_EVENT_FILTERS_MAX, AUDIENCE_IN_VALUES_MAX, AUDIENCE_WINDOW_DAYS_MAX,
    PERSONALIZE_RULES_MAX, PERSONALIZE_TRAITS_MAX,
};

/// The comparison operators of trait, computed-trait and `where` conditions. `ne` is accepted
/// for `neq` (the spelling computed-trait filters use).
pub const AUDIENCE_OPERATORS: [&str; 9] = [
    "eq", "neq", "gt", "gte", "lt", "lte", "contains", "exists", "in",
];
/// The call types an event condition may count.
pub const AUDIENCE_EVENT_TYPES: [&str; 5] = ["track", "page", "screen", "identify", "group"];

/// `[[workspaces.audiences]]`: a set of profiles defined by a condition, kept up to date as
/// events arrive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudienceConfig {
    /// Slug, unique within the workspace; `Audience Entered` events carry it as `audience_key`.
    pub id: String,
    /// Display name.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who answers for the audience (a team address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who is in it.
    pub condition: ConditionConfig,
}

/// One node of a condition tree: exactly one of its kinds (see the module comment).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConditionConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<ConditionConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<ConditionConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ConditionConfig>>,
    /// A profile trait (last-write-wins value of identify calls), dotted for nested objects.
    #[serde(rename = "trait", skip_serializing_if = "Option::is_none")]
    pub trait_name: Option<String>,
    /// A computed trait of the workspace (`[[workspaces.computed_traits]]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computed: Option<String>,
    /// `eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `contains`, `exists`, `in` (trait conditions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The value compared with; a list for `in`; absent for `exists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The event name (`event` of a track call, `name` of a page or screen call); `*` = any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Which calls: `track` (default), `page`, `screen`, `identify`, `group`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The profile performed the event at least this many times (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_least: Option<u64>,
    /// …or at most this many times (`at_most = 0`: did not perform it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_most: Option<u64>,
    /// Counting only the last this-many whole UTC days (today included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_days: Option<u32>,
    /// …or only events since this date (`2026-01-01`) or instant (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Conditions on the event's properties (traits for identify/group), all of which must hold.
    #[serde(rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterConfig>,
    /// Membership of another audience of the workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// One `where` filter of an event condition: `property` `op` `value`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Dotted path in `properties` (in `traits` for identify/group).
    pub property: String,
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// What kind of node a condition is, once checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionKind {
    All,
    Any,
    Not,
    Trait,
    Computed,
    Event,
    Audience,
}

impl ConditionConfig {
    /// The kinds this node claims to be (a valid node claims exactly one).
    pub fn kinds(&self) -> Vec<ConditionKind> {
        let mut kinds = Vec::new();
        if self.all.is_some() {
            kinds.push(ConditionKind::All);
        }
        if self.any.is_some() {
            kinds.push(ConditionKind::Any);
        }
        if self.not.is_some() {
            kinds.push(ConditionKind::Not);
        }
        if self.trait_name.is_some() {
            kinds.push(ConditionKind::Trait);
        }
        if self.computed.is_some() {
            kinds.push(ConditionKind::Computed);
        }
        if self.event.is_some() {
            kinds.push(ConditionKind::Event);
        }
        if self.audience.is_some() {
            kinds.push(ConditionKind::Audience);
        }
        kinds
    }

    /// Every audience this condition refers to (anywhere in its tree).
    pub fn audience_references(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        self.visit(&mut |node| {
            if let Some(id) = &node.audience {
                found.insert(id.clone());
            }
        });
        found
    }

    /// Calls `visit` on this node and every node below it.
    pub fn visit(&self, visit: &mut dyn FnMut(&ConditionConfig)) {
        visit(self);
        for child in self.children() {
            child.visit(visit);
        }
    }

    fn children(&self) -> Vec<&ConditionConfig> {
        let mut children: Vec<&ConditionConfig> = Vec::new();
        for list in [&self.all, &self.any].into_iter().flatten() {
            children.extend(list.iter());
        }
        if let Some(not) = &self.not {
            children.push(not);
        }
        children
    }
}

/// `since` as ms since the epoch: a date (`2026-01-01`, midnight UTC) or an RFC 3339 instant.
pub fn since_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() == 10 {
        return tandem_core::time_util::parse_iso8601_ms(&format!("{text}T00:00:00Z"));
    }
    tandem_core::time_util::parse_iso8601_ms(text)
}

/// The canonical name of an operator (`ne` → `neq`), if it is one.
pub fn canonical_operator(op: &str) -> Option<&'static str> {
    let op = if op == "ne" { "neq" } else { op };
    AUDIENCE_OPERATORS
        .iter()
        .copied()
        .find(|known| *known == op)
}

/// Problems of one audience on its own (paths relative to it): its id, name and condition tree.
/// `computed_traits` are the names of the workspace's computed traits; references to other
/// audiences are checked by [`audience_set_problems`].
pub fn audience_problems(
    audience: &AudienceConfig,
    computed_traits: &[&str],
) -> Vec<ConditionProblem> {
    let mut problems = Vec::new();
    if !is_slug(&audience.id) {
        problems.push(ConditionProblem::new(
            "id",
            format!(
                "`{}` is not a valid audience id (a slug: [a-z0-9][a-z0-9_-]{{0,62}})",
                audience.id
            ),
        ));
    }
    if ["preview", "previews"].contains(&audience.id.as_str()) {
        problems.push(ConditionProblem::new(
            "id",
            format!("`{}` is reserved (the API's preview routes)", audience.id),
        ));
    }
    if audience.name.trim().is_empty() {
        problems.push(ConditionProblem::new("name", "every audience needs a name"));
    }
    let mut nodes = 0;
    check_condition(
        &audience.condition,
        "condition",
        1,
        computed_traits,
        &mut nodes,
        &mut problems,
    );
    if nodes > AUDIENCE_CONDITIONS_MAX {
        problems.push(ConditionProblem::new(
            "condition",
            format!("{nodes} conditions; at most {AUDIENCE_CONDITIONS_MAX} per audience"),
        ));
    }
    problems
}

/// A problem of a definition: the path of the field inside it and what is wrong.
pub type ConditionProblem = ConfigProblem;

fn check_condition(
    node: &ConditionConfig,
    path: &str,
    depth: usize,
    computed_traits: &[&str],
    nodes: &mut usize,
    problems: &mut Vec<ConfigProblem>,
) {
    *nodes += 1;
    let problem = |problems: &mut Vec<ConfigProblem>, field: &str, message: String| {
        let at = if field.is_empty() {
            path.to_string()
        } else {
            format!("{path}.{field}")
        };
        problems.push(ConfigProblem::new(at, message));
    };
    if depth > AUDIENCE_CONDITION_DEPTH_MAX {
        problem(
            problems,
            "",
            format!("nested deeper than {AUDIENCE_CONDITION_DEPTH_MAX} levels"),
        );
        return;
    }
    let kinds = node.kinds();
    let kind = match kinds.as_slice() {
        [kind] => *kind,
        [] => {
            problem(problems, "", "an empty condition: give one of `all`, `any`, `not`, `trait`, `computed`, `event`, `audience`".into());
            return;
        }
        several => {
            problem(
                problems,
                "",
                format!(
                    "one condition per node, this one is {}: wrap them in `all` or `any`",
                    several
                        .iter()
                        .map(|kind| format!("{kind:?}").to_lowercase())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            );
            return;
        }
    };
    // Fields that belong to another kind of condition.
    let comparison = matches!(kind, ConditionKind::Trait | ConditionKind::Computed);
    let event = kind == ConditionKind::Event;
    let stray: [(&str, bool, bool); 8] = [
        ("op", node.op.is_some(), comparison),
        ("value", node.value.is_some(), comparison),
        ("type", node.event_type.is_some(), event),
        ("at_least", node.at_least.is_some(), event),
        ("at_most", node.at_most.is_some(), event),
        ("within_days", node.within_days.is_some(), event),
        ("since", node.since.is_some(), event),
        ("where", !node.filters.is_empty(), event),
    ];
    for (field, present, allowed) in stray {
        if present && !allowed {
            let owner = if comparison || event {
                "this kind of condition"
            } else {
                "a combining condition (all/any/not)"
            };
            problem(
                problems,
                field,
                format!("`{field}` does not apply to {owner}"),
            );
        }
    }
    match kind {
        ConditionKind::All | ConditionKind::Any => {
            let (name, list) = if kind == ConditionKind::All {
                ("all", node.all.as_ref())
            } else {
                ("any", node.any.as_ref())
            };
            let list = list.expect("kind says present");
            if list.is_empty() {
                problem(
                    problems,
                    name,
                    format!("`{name}` needs at least one condition"),
                );
            }
            for (index, child) in list.iter().enumerate() {
                check_condition(
                    child,
                    &format!("{path}.{name}[{index}]"),
                    depth + 1,
                    computed_traits,
                    nodes,
                    problems,
                );
            }
        }
        ConditionKind::Not => {
            let child = node.not.as_ref().expect("kind says present");
            check_condition(
                child,
                &format!("{path}.not"),
                depth + 1,
                computed_traits,
                nodes,
                problems,
            );
        }
        ConditionKind::Trait | ConditionKind::Computed => {
            let (field, name) = match kind {
                ConditionKind::Trait => ("trait", node.trait_name.as_deref()),
                _ => ("computed", node.computed.as_deref()),
            };
            let name = name.unwrap_or_default();
            if name.trim().is_empty() {
                problem(problems, field, format!("name the {field} to compare"));
            } else if kind == ConditionKind::Computed && !computed_traits.contains(&name) {
                let known = if computed_traits.is_empty() {
                    "the workspace defines none".to_string()
                } else {
                    format!("one of {}", computed_traits.join(", "))
                };
                problem(
                    problems,
                    field,
                    format!("no computed trait `{name}` in this workspace ({known})"),
                );
            }
            check_comparison(node.op.as_deref(), node.value.as_ref(), path, problems);
        }
        ConditionKind::Event => check_event(node, path, problems),
        ConditionKind::Audience => {
            if node
                .audience
                .as_deref()
                .is_some_and(|id| id.trim().is_empty())
            {
                problem(problems, "audience", "name the audience".into());
            }
        }
    }
}

/// `op` and `value` of a comparison at `path` (a trait condition or a `where` filter).
fn check_comparison(
    op: Option<&str>,
    value: Option<&Value>,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    let Some(op_text) = op else {
        problems.push(ConfigProblem::new(
            format!("{path}.op"),
            format!("missing — one of {}", AUDIENCE_OPERATORS.join(", ")),
        ));
        return;
    };
    let Some(op) = canonical_operator(op_text) else {
        problems.push(ConfigProblem::new(
            format!("{path}.op"),
            format!(
                "unknown op `{op_text}`; one of {}",
                AUDIENCE_OPERATORS.join(", ")
            ),
        ));
        return;
    };
    let at = format!("{path}.value");
    match (op, value) {
        ("exists", None) => {}
        ("exists", Some(_)) => problems.push(ConfigProblem::new(
            at,
            "`exists` takes no value (use `not` for “does not exist”)",
        )),
        (_, None) => problems.push(ConfigProblem::new(at, format!("`{op}` needs a `value`"))),
        ("in", Some(Value::Array(values))) => {
            if values.is_empty() {
                problems.push(ConfigProblem::new(at, "`in` needs at least one value"));
            } else if values.len() > AUDIENCE_IN_VALUES_MAX {
                problems.push(ConfigProblem::new(
                    at,
                    format!("at most {AUDIENCE_IN_VALUES_MAX} values"),
                ));
            } else if values.iter().any(|v| v.is_array() || v.is_object()) {
                problems.push(ConfigProblem::new(
                    at,
                    "`in` compares with strings, numbers or booleans",
                ));
            }
        }
        ("in", Some(_)) => problems.push(ConfigProblem::new(at, "`in` needs a list of values")),
        ("gt" | "gte" | "lt" | "lte", Some(value)) if !value.is_number() && !value.is_string() => {
            problems.push(ConfigProblem::new(
                at,
                format!("`{op}` compares with a number, or a string (dates compare as times)"),
            ))
        }
        ("contains", Some(value)) if value.is_array() || value.is_object() => {
            problems.push(ConfigProblem::new(
                at,
                "`contains` looks for a string in a string, or a value in a list",
            ))
        }
        (_, Some(value)) if value.is_object() || value.is_array() => {
            problems.push(ConfigProblem::new(
                at,
                format!("`{op}` compares with a string, number or boolean"),
            ))
        }
        _ => {}
    }
}

fn check_event(node: &ConditionConfig, path: &str, problems: &mut Vec<ConfigProblem>) {
    let at = |field: &str| format!("{path}.{field}");
    if node
        .event
        .as_deref()
        .is_some_and(|name| name.trim().is_empty())
    {
        problems.push(ConfigProblem::new(
            at("event"),
            "name the event (`*` for any)",
        ));
    }
    if let Some(kind) = &node.event_type {
        if !AUDIENCE_EVENT_TYPES.contains(&kind.as_str()) {
            problems.push(ConfigProblem::new(
                at("type"),
                format!("one of {}", AUDIENCE_EVENT_TYPES.join(", ")),
            ));
        } else if matches!(kind.as_str(), "identify" | "group")
            && node.event.as_deref() != Some("*")
        {
            problems.push(ConfigProblem::new(
                at("event"),
                format!("{kind} calls have no name: use `event = \"*\"`"),
            ));
        }
    }
    if node.at_least.is_some() && node.at_most.is_some() {
        problems.push(ConfigProblem::new(
            at("at_most"),
            "give `at_least` or `at_most`, not both (combine two conditions with `all`)",
        ));
    }
    if node.at_least == Some(0) {
        problems.push(ConfigProblem::new(
            at("at_least"),
            "`at_least = 0` always holds; leave the condition out",
        ));
    }
    if node.within_days.is_some() && node.since.is_some() {
        problems.push(ConfigProblem::new(
            at("since"),
            "give `within_days` or `since`, not both",
        ));
    }
    if let Some(days) = node.within_days {
        if days == 0 || days > AUDIENCE_WINDOW_DAYS_MAX {
            problems.push(ConfigProblem::new(
                at("within_days"),
                format!("from 1 to {AUDIENCE_WINDOW_DAYS_MAX} days; leave it out for all time"),
            ));
        }
    }
    if let Some(since) = &node.since {
        if since_ms(since).is_none() {
            problems.push(ConfigProblem::new(
                at("since"),
                format!("`{since}` is not a date (2026-01-01) or an RFC 3339 instant"),
            ));
        }
    }
    if node.filters.len() > AUDIENCE_EVENT_FILTERS_MAX {
        problems.push(ConfigProblem::new(
            at("where"),
            format!("at most {AUDIENCE_EVENT_FILTERS_MAX} filters"),
        ));
    }
    for (index, filter) in node.filters.iter().enumerate() {
        let filter_path = format!("{path}.where[{index}]");
        if filter.property.trim().is_empty() {
            problems.push(ConfigProblem::new(
                format!("{filter_path}.property"),
                "name the property to compare",
            ));
        }
        check_comparison(
            Some(filter.op.as_str()),
            filter.value.as_ref(),
            &filter_path,
            problems,
        );
    }
}

/// Problems of a workspace's whole set of audiences (`(path, audience)`, paths as the caller
/// names them): duplicate ids, references to audiences that do not exist, and cycles of
/// references. A cycle is reported on each audience in it.
pub fn audience_set_problems<'a>(
    audiences: impl IntoIterator<Item = (String, &'a AudienceConfig)>,
) -> Vec<ConfigProblem> {
    let audiences: Vec<(String, &AudienceConfig)> = audiences.into_iter().collect();
    let mut problems = Vec::new();
    if audiences.len() > AUDIENCES_PER_WORKSPACE_MAX {
        problems.push(ConfigProblem::new(
            audiences[AUDIENCES_PER_WORKSPACE_MAX].0.clone(),
            format!("at most {AUDIENCES_PER_WORKSPACE_MAX} audiences per workspace"),
        ));
    }
    let mut first: HashMap<&str, &str> = HashMap::new();
    for (path, audience) in &audiences {
        if let Some(earlier) = first.insert(&audience.id, path) {
            problems.push(ConfigProblem::new(
                format!("{path}.id"),
                format!("`{}` is already the id of {earlier}", audience.id),
            ));
        }
    }
    let references: BTreeMap<&str, BTreeSet<String>> = audiences
        .iter()
        .map(|(_, audience)| {
            (
                audience.id.as_str(),
                audience.condition.audience_references(),
            )
        })
        .collect();
    for (path, audience) in &audiences {
        for reference in &references[audience.id.as_str()] {
            if !references.contains_key(reference.as_str()) {
                problems.push(ConfigProblem::new(
                    format!("{path}.condition"),
                    format!("no audience `{reference}` in this workspace"),
                ));
            }
        }
        if let Some(cycle) = cycle_through(&audience.id, &references) {
            problems.push(ConfigProblem::new(
                format!("{path}.condition"),
                format!(
                    "audiences may not refer to each other in a cycle: {}",
                    cycle.join(" → ")
                ),
            ));
        }
    }
    problems
}

/// A cycle of references starting and ending at `start`, if there is one.
fn cycle_through(
    start: &str,
    references: &BTreeMap<&str, BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn walk(
        at: &str,
        start: &str,
        references: &BTreeMap<&str, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in references.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(next, start, references, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(start, start, references, &mut path, &mut seen).then_some(path)
}

/// The audience ids in an order where every audience comes after those it refers to (ties by
/// id); `None` when there is a cycle.
pub fn audience_order(audiences: &[&AudienceConfig]) -> Option<Vec<String>> {
    let mut remaining: BTreeMap<&str, BTreeSet<String>> = audiences
        .iter()
        .map(|a| (a.id.as_str(), a.condition.audience_references()))
        .collect();
    let mut order = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let ready: Vec<&str> = remaining
            .iter()
            .filter(|(_, refs)| refs.iter().all(|r| !remaining.contains_key(r.as_str())))
            .map(|(id, _)| *id)
            .collect();
        if ready.is_empty() {
            return None;
        }
        for id in ready {
            remaining.remove(id);
            order.push(id.to_string());
        }
    }
    Some(order)
}

pub(crate) fn check_audiences(
    workspace: &crate::WorkspaceConfig,
    workspace_path: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    let computed: Vec<&str> = workspace
        .computed_traits
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    for (index, audience) in workspace.audiences.iter().enumerate() {
        let path = format!("{workspace_path}.audiences[{index}]");
        problems.extend(
            audience_problems(audience, &computed)
                .into_iter()
                .map(|p| ConfigProblem::new(format!("{path}.{}", p.path), p.message)),
        );
    }
    problems.extend(audience_set_problems(
        workspace
            .audiences
            .iter()
            .enumerate()
            .map(|(index, a)| (format!("{workspace_path}.audiences[{index}]"), a)),
    ));
    if let Some(personalization) = &workspace.personalization {
        let audiences: Vec<&str> = workspace.audiences.iter().map(|a| a.id.as_str()).collect();
        problems.extend(
            personalization_problems(personalization, &audiences, None)
                .into_iter()
                .map(|p| {
                    ConfigProblem::new(
                        format!("{workspace_path}.personalization.{}", p.path),
                        p.message,
                    )
                }),
        );
    }
}

/// `[workspaces.personalization]`: what the browser-facing personalization API
/// (`GET /v1/personalize`) may answer about the current visitor, and its decision rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonalizationConfig {
    /// Traits (or computed traits) a public key may read: never personal data (see
    /// [`PII_TRAIT_NAMES`]).
    pub traits: Vec<String>,
    /// Audiences whose membership a public key may read (rules may use any audience).
    pub audiences: Vec<String>,
    /// `[[workspaces.personalization.rules]]`, in order: for each slot, the first rule whose
    /// condition holds decides.
    pub rules: Vec<RuleConfig>,
}

/// One decision rule: "if in audience `high-value` and not in `churned`, offer `vip-banner`".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Slug, unique within the workspace.
    pub id: String,
    /// The decision's name in the answer (`homepage_banner`); several rules may share a slot.
    pub slot: String,
    /// What the answer says for the slot when the rule holds (a string or any JSON value).
    pub offer: Value,
    /// When the rule holds: audience memberships and allow-listed traits, combined with
    /// all/any/not (event conditions belong in an audience).
    pub when: ConditionConfig,
}

/// Trait names that are personal data and never readable with a public key, whatever the
/// allow-list says (compared lowercase, with `-` as `_`; the last segment of a dotted path).
pub const PII_TRAIT_NAMES: &[&str] = &[
    "email",
    "phone",
    "mobile",
    "name",
    "first_name",
    "last_name",
    "firstname",
    "lastname",
    "full_name",
    "username",
    "address",
    "street",
    "city",
    "postal_code",
    "postcode",
    "zip",
    "zip_code",
    "birthday",
    "birth_date",
    "date_of_birth",
    "dob",
    "age",
    "gender",
    "ip",
    "ssn",
    "tax_id",
    "passport",
    "iban",
    "credit_card",
    "avatar",
    "user_id",
    "anonymous_id",
];

/// Whether a trait name is on the built-in personal-data list.
pub fn is_pii_trait(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    let normalized = last.trim().to_lowercase().replace('-', "_");
    PII_TRAIT_NAMES.contains(&normalized.as_str())
}

/// Problems of a personalization config (paths relative to it), given the workspace's audience
/// ids. `computed_traits` (when known) are allowed in `traits` too.
pub fn personalization_problems(
    config: &PersonalizationConfig,
    audiences: &[&str],
    _computed_traits: Option<&[&str]>,
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if config.traits.len() > PERSONALIZE_TRAITS_MAX {
        problems.push(ConfigProblem::new(
            "traits",
            format!("at most {PERSONALIZE_TRAITS_MAX} traits"),
        ));
    }
    for (index, name) in config.traits.iter().enumerate() {
        if name.trim().is_empty() {
            problems.push(ConfigProblem::new(
                format!("traits[{index}]"),
                "empty trait name",
            ));
        } else if is_pii_trait(name) {
            problems.push(ConfigProblem::new(
                format!("traits[{index}]"),
                format!("`{name}` is personal data: a public key never reads it"),
            ));
        }
    }
    for (index, id) in config.audiences.iter().enumerate() {
        if !audiences.contains(&id.as_str()) {
            problems.push(ConfigProblem::new(
                format!("audiences[{index}]"),
                format!("no audience `{id}` in this workspace"),
            ));
        }
    }
    if config.rules.len() > PERSONALIZE_RULES_MAX {
        problems.push(ConfigProblem::new(
            "rules",
            format!("at most {PERSONALIZE_RULES_MAX} rules"),
        ));
    }
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (index, rule) in config.rules.iter().enumerate() {
        let path = format!("rules[{index}]");
        if !is_slug(&rule.id) {
            problems.push(ConfigProblem::new(
                format!("{path}.id"),
                format!("`{}` is not a valid rule id (a slug)", rule.id),
            ));
        }
        if let Some(first) = ids.insert(&rule.id, index) {
            problems.push(ConfigProblem::new(
                format!("{path}.id"),
                format!("`{}` is already the id of rules[{first}]", rule.id),
            ));
        }
        if rule.slot.trim().is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.slot"),
                "name the slot the rule decides",
            ));
        }
        if rule.offer.is_null() {
            problems.push(ConfigProblem::new(
                format!("{path}.offer"),
                "what does the rule offer?",
            ));
        }
        let mut nodes = 0;
        check_condition(
            &rule.when,
            &format!("{path}.when"),
            1,
            &[],
            &mut nodes,
            &mut problems,
        );
        rule.when.visit(&mut |node| {
            if node.event.is_some() || node.computed.is_some() {
                problems.push(ConfigProblem::new(
                    format!("{path}.when"),
                    "rules use audiences and allow-listed traits; put event and computed-trait conditions in an audience",
                ));
            }
            if let Some(name) = &node.trait_name {
                if !config.traits.contains(name) {
                    problems.push(ConfigProblem::new(
                        format!("{path}.when"),
                        format!("trait `{name}` is not in `traits` (rules read only allow-listed traits)"),
                    ));
                }
            }
            if let Some(id) = &node.audience {
                if !audiences.contains(&id.as_str()) {
                    problems.push(ConfigProblem::new(
                        format!("{path}.when"),
                        format!("no audience `{id}` in this workspace"),
                    ));
                }
            }
        });
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSPACE: &str = r#"
[[workspaces]]
id = "demo"
name = "Demo"

[[workspaces.sources]]
id = "web"
name = "Website"
owner = "web-team@example.test"
write_key = "test-write-key-0123456789"

[[workspaces.computed_traits]]
name = "orders"
function = "count"
event = "Order Completed"
"#;

    fn problems(extra: &str) -> Vec<String> {
        match crate::parse(&format!("{WORKSPACE}{extra}"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(error) => error.problems().iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_full_audience_reads_from_toml_and_round_trips() {
        let text = format!(
            "{WORKSPACE}{}",
            r#"
[[workspaces.audiences]]
id = "high-value"
name = "High-value customers"
[workspaces.audiences.condition]
all = [
  { trait = "plan", op = "in", value = ["pro", "enterprise"] },
  { computed = "orders", op = "gte", value = 3 },
  { event = "Order Completed", at_least = 2, within_days = 30, where = [{ property = "total", op = "gt", value = 100 }] },
  { not = { event = "Unsubscribed", since = "2026-01-01" } },
]

[[workspaces.audiences]]
id = "vip"
name = "VIP"
condition = { all = [{ audience = "high-value" }, { trait = "vip", op = "eq", value = true }] }
"#
        );
        let config = crate::parse(&text, "t.toml").unwrap();
        let audience = &config.workspaces[0].audiences[0];
        let all = audience.condition.all.as_ref().unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[2].filters[0].value, Some(serde_json::json!(100)));
        assert_eq!(
            config.workspaces[0].audiences[1]
                .condition
                .audience_references(),
            ["high-value".to_string()].into()
        );
        assert_eq!(
            crate::parse(&crate::to_toml(&config), "t.toml").unwrap(),
            config
        );
        let order = audience_order(&config.workspaces[0].audiences.iter().collect::<Vec<_>>());
        assert_eq!(order.unwrap(), ["high-value", "vip"]);
    }

    #[test]
    fn every_problem_is_reported_on_its_line_with_its_path() {
        let found = problems(
            r#"
[[workspaces.audiences]]
id = "Bad Id"
name = ""
[workspaces.audiences.condition]
all = [
  { trait = "plan", op = "between", value = 1 },
  { computed = "nope", op = "gt", value = 1 },
  { event = "Order Completed", at_least = 2, at_most = 3, within_days = 0, where = [{ property = "", op = "in", value = 3 }] },
  { trait = "plan", event = "x" },
  { audience = "ghost" },
  { trait = "plan", op = "exists", value = 1 },
  { event = "x", since = "yesterday" },
  { all = [] },
]
"#,
        );
        let joined = found.join("\n");
        for expected in [
            "audiences[0].id: `Bad Id` is not a valid audience id",
            "audiences[0].name: every audience needs a name",
            "condition.all[0].op: unknown op `between`",
            "condition.all[1].computed: no computed trait `nope` in this workspace (one of orders)",
            "condition.all[2].at_most: give `at_least` or `at_most`, not both",
            "condition.all[2].within_days: from 1 to 730 days",
            "condition.all[2].where[0].property: name the property",
            "condition.all[2].where[0].value: `in` needs a list of values",
            "condition.all[3]: one condition per node, this one is trait and event",
            "no audience `ghost` in this workspace",
            "condition.all[5].value: `exists` takes no value",
            "condition.all[6].since: `yesterday` is not a date",
            "condition.all[7].all: `all` needs at least one condition",
        ] {
            assert!(
                joined.contains(expected),
                "missing `{expected}` in:\n{joined}"
            );
        }
        assert!(found.iter().all(|p| p.starts_with("line ")), "{joined}");
        // The problems point at the lines of their inline tables.
        let line_of = |needle: &str| {
            found
                .iter()
                .find(|p| p.contains(needle))
                .and_then(|p| p.strip_prefix("line "))
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap()
        };
        assert_eq!(line_of("unknown op `between`"), 22, "{joined}");
        assert_eq!(line_of("`yesterday`"), 28, "{joined}");
    }

    #[test]
    fn cycles_and_duplicates_are_refused() {
        let found = problems(
            r#"
[[workspaces.audiences]]
id = "a"
name = "A"
condition = { audience = "b" }

[[workspaces.audiences]]
id = "b"
name = "B"
condition = { any = [{ audience = "c" }, { trait = "x", op = "exists" }] }

[[workspaces.audiences]]
id = "c"
name = "C"
condition = { not = { audience = "a" } }

[[workspaces.audiences]]
id = "self"
name = "Self"
condition = { audience = "self" }
"#,
        );
        let joined = found.join("\n");
        assert!(joined.contains("a cycle: a → b → c → a"), "{joined}");
        assert!(joined.contains("a cycle: b → c → a → b"), "{joined}");
        assert!(joined.contains("a cycle: self → self"), "{joined}");
        let duplicate = problems(
            "\n[[workspaces.audiences]]\nid = \"c\"\nname = \"C\"\ncondition = { trait = \"x\", op = \"exists\" }\n\n[[workspaces.audiences]]\nid = \"c\"\nname = \"C again\"\ncondition = { trait = \"x\", op = \"exists\" }\n",
        );
        assert_eq!(duplicate.len(), 1, "{duplicate:?}");
        assert!(
            duplicate[0].contains("`c` is already the id of workspaces[0].audiences[0]"),
            "{duplicate:?}"
        );
    }

    #[test]
    fn personalization_refuses_personal_data_and_unknown_audiences() {
        let found = problems(
            r#"
[[workspaces.audiences]]
id = "high-value"
name = "High value"
condition = { trait = "plan", op = "eq", value = "pro" }

[workspaces.personalization]
traits = ["plan", "email", "address.city"]
audiences = ["high-value", "ghost"]
[[workspaces.personalization.rules]]
id = "vip-banner"
slot = "homepage_banner"
offer = "vip-banner"
when = { all = [{ audience = "high-value" }, { not = { audience = "churned" } }, { trait = "tier", op = "eq", value = "gold" }] }
"#,
        );
        let joined = found.join("\n");
        assert!(
            joined.contains("personalization.traits[1]: `email` is personal data"),
            "{joined}"
        );
        assert!(
            joined.contains("personalization.traits[2]: `address.city` is personal data"),
            "{joined}"
        );
        assert!(
            joined.contains("personalization.audiences[1]: no audience `ghost`"),
            "{joined}"
        );
        assert!(joined.contains("no audience `churned`"), "{joined}");
        assert!(
            joined.contains("trait `tier` is not in `traits`"),
            "{joined}"
        );
        assert!(found.iter().all(|p| p.starts_with("line ")), "{joined}");
    }
}
