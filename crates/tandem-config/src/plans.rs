//! `[[workspaces.tracking_plans]]`: the shape of a tracking plan (the file and the management API
//! share it) and its rules that need no JSON Schema compiler. Compiling the schemas themselves is
//! `tandem-plans`' job: this crate knows no JSON Schema.

use crate::error::ConfigProblem;
use crate::validate::is_slug;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use tandem_core::limits::{TRACKING_PLANS_PER_WORKSPACE_MAX, TRACKING_PLAN_EVENTS_MAX};

/// What a plan does with an event that violates it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanMode {
    /// The event is stored as sent; its violations are counted.
    #[default]
    Allow,
    /// The event is stored with its violations in `context.violations`, and counted.
    Flag,
    /// The event is held aside (the workspace's quarantine), to be released or discarded.
    Quarantine,
    /// The event is dropped (the client still gets 200, as Segment answers) and counted.
    Block,
}

impl PlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanMode::Allow => "allow",
            PlanMode::Flag => "flag",
            PlanMode::Quarantine => "quarantine",
            PlanMode::Block => "block",
        }
    }
}

/// What happens to a track event whose name the plan does not list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnplannedEvents {
    /// It passes unchecked.
    #[default]
    Allow,
    /// It is a violation (rule `unplanned_event`), handled by the plan's mode.
    Violation,
}

/// `[[workspaces.tracking_plans]]`: the expected shape of a workspace's (or some sources') events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingPlanConfig {
    /// Slug, unique within the workspace.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Who answers for the plan (a team address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Source ids the plan applies to; empty: every source of the workspace that no other plan
    /// names. A source is governed by at most one enforced plan.
    pub sources: Vec<String>,
    /// `allow` (default), `flag`, `quarantine` or `block`.
    pub mode: PlanMode,
    /// `allow` (default) or `violation`: what a track event whose name is not in `events` is.
    pub unplanned_events: UnplannedEvents,
    /// A draft is kept and shown but not enforced (an inferred plan waiting for review).
    pub draft: bool,
    /// Track event name → JSON Schema of its `properties`.
    pub events: BTreeMap<String, serde_json::Value>,
    /// JSON Schema of identify calls' `traits`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identify_traits: Option<serde_json::Value>,
    /// JSON Schema of group calls' `traits`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_traits: Option<serde_json::Value>,
}

/// Problems of one plan on its own (paths relative to it), given the workspace's source ids; the
/// management API uses this too. The schemas are only checked to be JSON objects (or booleans)
/// here; `tandem-plans` compiles them.
pub fn tracking_plan_problems(
    plan: &TrackingPlanConfig,
    source_ids: &[&str],
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if !is_slug(&plan.id) {
        problems.push(ConfigProblem::new(
            "id",
            format!(
                "`{}` is not a valid tracking plan id (a slug: [a-z0-9][a-z0-9_-]{{0,62}})",
                plan.id
            ),
        ));
    }
    if plan.name.trim().is_empty() {
        problems.push(ConfigProblem::new(
            "name",
            "every tracking plan needs a name",
        ));
    }
    for (index, source) in plan.sources.iter().enumerate() {
        if !source_ids.contains(&source.as_str()) {
            let message = format!("no source `{source}` in this workspace");
            problems.push(ConfigProblem::new(format!("sources[{index}]"), message));
        }
    }
    if plan.events.len() > TRACKING_PLAN_EVENTS_MAX {
        let message = format!("at most {TRACKING_PLAN_EVENTS_MAX} events per plan");
        problems.push(ConfigProblem::new("events", message));
    }
    let schemas = plan
        .events
        .iter()
        .map(|(name, schema)| (format!("events.{name}"), Some(schema)))
        .chain([
            ("identify_traits".to_string(), plan.identify_traits.as_ref()),
            ("group_traits".to_string(), plan.group_traits.as_ref()),
        ]);
    for (path, schema) in schemas {
        if let Some(schema) = schema {
            if !schema.is_object() && !schema.is_boolean() {
                problems.push(ConfigProblem::new(
                    path,
                    "a JSON Schema must be an object (a table) or a boolean",
                ));
            }
        }
    }
    for name in plan.events.keys() {
        if name.trim().is_empty() {
            problems.push(ConfigProblem::new("events", "an event name is empty"));
        }
    }
    problems
}

/// The enforced plans of a workspace may not overlap: one plan per source, and at most one that
/// applies to the whole workspace. `plans` yields (path, plan).
pub fn plan_overlaps<'a>(
    plans: impl IntoIterator<Item = (String, &'a TrackingPlanConfig)>,
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut by_source: HashMap<&str, &str> = HashMap::new();
    let mut workspace_wide: Option<&str> = None;
    for (path, plan) in plans {
        if plan.draft {
            continue;
        }
        if plan.sources.is_empty() {
            if let Some(other) = workspace_wide {
                problems.push(ConfigProblem::new(
                    format!("{path}.sources"),
                    format!("plan `{other}` already applies to the whole workspace; list the sources this one governs"),
                ));
            }
            workspace_wide = Some(&plan.id);
        }
        for (index, source) in plan.sources.iter().enumerate() {
            if let Some(other) = by_source.insert(source, &plan.id) {
                if other != plan.id {
                    problems.push(ConfigProblem::new(
                        format!("{path}.sources[{index}]"),
                        format!("source `{source}` is already governed by plan `{other}`"),
                    ));
                }
            }
        }
    }
    problems
}

pub(crate) fn check_tracking_plans(
    workspace: &crate::WorkspaceConfig,
    workspace_path: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    if workspace.tracking_plans.len() > TRACKING_PLANS_PER_WORKSPACE_MAX {
        let message =
            format!("at most {TRACKING_PLANS_PER_WORKSPACE_MAX} tracking plans per workspace");
        problems.push(ConfigProblem::new(
            format!("{workspace_path}.tracking_plans"),
            message,
        ));
    }
    let source_ids: Vec<&str> = workspace
        .sources
        .iter()
        .map(|source| source.id.as_str())
        .collect();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (index, plan) in workspace.tracking_plans.iter().enumerate() {
        let path = format!("{workspace_path}.tracking_plans[{index}]");
        problems.extend(
            tracking_plan_problems(plan, &source_ids)
                .into_iter()
                .map(|problem| {
                    ConfigProblem::new(format!("{path}.{}", problem.path), problem.message)
                }),
        );
        if let Some(first) = ids.insert(&plan.id, index) {
            let message = format!("`{}` is already the id of tracking_plans[{first}]", plan.id);
            problems.push(ConfigProblem::new(format!("{path}.id"), message));
        }
    }
    problems.extend(plan_overlaps(
        workspace
            .tracking_plans
            .iter()
            .enumerate()
            .map(|(index, plan)| (format!("{workspace_path}.tracking_plans[{index}]"), plan)),
    ));
}

#[cfg(test)]
mod tests {
    const WORKSPACE: &str = r#"
[[workspaces]]
id = "demo"
name = "Demo"

[[workspaces.sources]]
id = "web"
name = "Website"
owner = "web-team@example.test"
write_key = "test-write-key-0123456789"
"#;

    fn problems(plans: &str) -> Vec<String> {
        let text = format!("{WORKSPACE}{plans}");
        match crate::parse(&text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(error) => error
                .problems()
                .iter()
                .map(|problem| problem.to_string())
                .collect(),
        }
    }

    #[test]
    fn a_plan_in_toml_reads_as_json_schemas() {
        let text = format!(
            "{WORKSPACE}{}",
            r#"
[[workspaces.tracking_plans]]
id = "orders"
name = "Orders"
mode = "quarantine"
unplanned_events = "violation"
[workspaces.tracking_plans.events."Order Completed"]
type = "object"
required = ["total"]
properties.total = { type = "number", minimum = 0 }
"#
        );
        let config = crate::parse(&text, "t.toml").unwrap();
        let plan = &config.workspaces[0].tracking_plans[0];
        assert_eq!(plan.mode, super::PlanMode::Quarantine);
        assert_eq!(plan.unplanned_events, super::UnplannedEvents::Violation);
        assert_eq!(
            plan.events["Order Completed"],
            serde_json::json!({"type": "object", "required": ["total"], "properties": {"total": {"type": "number", "minimum": 0}}})
        );
        // And back: the file form round-trips.
        assert_eq!(
            crate::parse(&crate::to_toml(&config), "t.toml").unwrap(),
            config
        );
    }

    #[test]
    fn plan_problems_are_reported_with_their_lines() {
        let found = problems(
            r#"
[[workspaces.tracking_plans]]
id = "Bad Id"
name = "A"
sources = ["nope"]
events = { "Signed Up" = "not a schema" }

[[workspaces.tracking_plans]]
id = "b"
name = "B"

[[workspaces.tracking_plans]]
id = "c"
name = "C"
"#,
        );
        let joined = found.join("\n");
        assert!(joined.contains("tracking_plans[0].id"), "{joined}");
        assert!(joined.contains("no source `nope`"), "{joined}");
        assert!(
            joined.contains("events.Signed Up: a JSON Schema must be an object"),
            "{joined}"
        );
        assert!(
            joined.contains(
                "tracking_plans[2].sources: plan `b` already applies to the whole workspace"
            ),
            "{joined}"
        );
        assert!(
            found.iter().all(|problem| problem.starts_with("line ")),
            "every problem has a line: {joined}"
        );
        assert_eq!(
            problems(
                "\n[[workspaces.tracking_plans]]\nid = \"d\"\nname = \"D\"\nmode = \"sometimes\"\n"
            )
            .len(),
            1
        );
        // A draft overlaps nothing.
        assert!(problems("\n[[workspaces.tracking_plans]]\nid = \"e\"\nname = \"E\"\n\n[[workspaces.tracking_plans]]\nid = \"f\"\nname = \"F\"\ndraft = true\n").is_empty());
    }
}
