//! The record of processing activities (GDPR Art. 30) of a workspace, derived from its live
//! catalog: which categories of personal data flow from which sources to which recipients, for
//! which purposes, under which consent categories and safeguards, and how long they are kept.
//! Pure: [`record`] builds it from a [`WorkspaceCatalog`], [`document`] writes it as Markdown.

use crate::inventory::{takes, Finding, WorkspaceCatalog};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write;

/// What the record says about retention (from the config file's `[log]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Retention {
    /// Sealed log segments older than this are deleted; `None`: kept until removed.
    pub log_hours: Option<u64>,
    pub log_bytes_max: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Collection {
    pub source: String,
    pub name: String,
    pub owner: String,
    pub purpose: Option<String>,
    pub data_categories: Vec<String>,
    pub tracking_plan: Option<String>,
    pub enabled: bool,
    /// Destinations (ids) its events reach through enabled connections.
    pub recipients: Vec<String>,
}

/// One flow: events of some sources to one destination through one connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flow {
    pub connection: String,
    pub sources: Vec<String>,
    /// Empty: every call type.
    pub event_types: Vec<String>,
    /// Empty: every event name (minus `exclude_events`).
    pub events: Vec<String>,
    pub exclude_events: Vec<String>,
    pub purpose: Option<String>,
    pub consent_categories: Vec<String>,
    pub transformation: bool,
    pub mappings: usize,
}

/// One processing activity: what one recipient (destination) receives and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    pub destination: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Who answers for the data there.
    pub owner: String,
    /// The destination's purpose and any narrower ones its connections state.
    pub purposes: Vec<String>,
    /// What the destination declares it receives.
    pub declared_data_categories: Vec<String>,
    /// What its sources declare they collect: the categories that can reach it.
    pub source_data_categories: Vec<String>,
    /// Collected by its sources but not declared by the destination: the record and the
    /// destination's declaration disagree.
    pub undeclared_data_categories: Vec<String>,
    pub consent_categories: Vec<String>,
    pub flows: Vec<Flow>,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordOfProcessing {
    /// The organization (controller).
    pub controller: String,
    pub workspace: String,
    pub workspace_name: String,
    pub generated_at: String,
    pub collection: Vec<Collection>,
    pub activities: Vec<Activity>,
    pub retention: Retention,
    /// Technical and organisational measures tandem itself applies.
    pub safeguards: Vec<&'static str>,
    /// Catalog findings the record depends on (missing purposes, categories, consent).
    pub gaps: Vec<Finding>,
}

/// Measures tandem applies to every workspace, whatever its configuration.
pub const SAFEGUARDS: &[&str] = &[
    "write keys, API tokens and sessions are stored only as SHA-256 hashes; passwords as argon2 hashes",
    "every management route needs a role's permission, per workspace (deny by default)",
    "every configuration change, login and token use is in a hash-chained, verifiable audit log",
    "changes by marketers can require approval (change requests with a dry run)",
    "events are stored durably (fsync before acknowledgement) and each workspace has its own log",
];

fn sorted_union<'a>(lists: impl IntoIterator<Item = &'a Vec<String>>) -> Vec<String> {
    lists
        .into_iter()
        .flatten()
        .cloned()
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect()
}

/// The record of processing of one workspace.
pub fn record(
    controller: &str,
    catalog: &WorkspaceCatalog,
    retention: Retention,
) -> RecordOfProcessing {
    let enabled_connections: Vec<_> = catalog
        .connections
        .iter()
        .filter(|connection| connection.enabled)
        .collect();
    let collection = catalog
        .sources
        .iter()
        .map(|source| {
            let recipients: BTreeSet<String> = enabled_connections
                .iter()
                .filter(|connection| takes(&connection.sources, &source.id))
                .map(|connection| connection.destination.clone())
                .collect();
            Collection {
                source: source.id.clone(),
                name: source.name.clone(),
                owner: source.owner.clone(),
                purpose: source.purpose.clone(),
                data_categories: source.data_categories.clone(),
                tracking_plan: source.tracking_plan.clone(),
                enabled: source.enabled,
                recipients: recipients.into_iter().collect(),
            }
        })
        .collect();
    let activities = catalog
        .destinations
        .iter()
        .filter_map(|destination| {
            let connections: Vec<_> = enabled_connections
                .iter()
                .filter(|connection| connection.destination == destination.id)
                .collect();
            if connections.is_empty() {
                return None;
            }
            let sources: Vec<_> = connections
                .iter()
                .flat_map(|connection| catalog.sources_of(connection))
                .collect();
            let source_data_categories =
                sorted_union(sources.iter().map(|source| &source.data_categories));
            let undeclared_data_categories = source_data_categories
                .iter()
                .filter(|category| !destination.data_categories.contains(category))
                .cloned()
                .collect();
            let mut purposes: Vec<String> = destination.purpose.iter().cloned().collect();
            for purpose in connections.iter().filter_map(|c| c.purpose.as_ref()) {
                if !purposes.contains(purpose) {
                    purposes.push(purpose.clone());
                }
            }
            let flows = connections
                .iter()
                .map(|connection| Flow {
                    connection: connection.id.clone(),
                    sources: connection.sources.clone(),
                    event_types: connection.event_types.clone(),
                    events: connection.events.clone(),
                    exclude_events: connection.exclude_events.clone(),
                    purpose: connection.purpose.clone(),
                    consent_categories: connection.consent_categories.clone(),
                    transformation: connection.transformation,
                    mappings: connection.mappings,
                })
                .collect();
            Some(Activity {
                destination: destination.id.clone(),
                name: destination.name.clone(),
                kind: destination.kind.clone(),
                owner: destination.owner.clone(),
                purposes,
                declared_data_categories: destination.data_categories.clone(),
                source_data_categories,
                undeclared_data_categories,
                consent_categories: sorted_union(
                    connections
                        .iter()
                        .map(|connection| &connection.consent_categories),
                ),
                flows,
                enabled: destination.enabled,
            })
        })
        .collect();
    let gaps = catalog
        .findings
        .iter()
        .filter(|finding| {
            matches!(
                finding.code,
                "no_purpose" | "no_data_categories" | "no_consent_categories"
            )
        })
        .cloned()
        .collect();
    RecordOfProcessing {
        controller: controller.to_string(),
        workspace: catalog.workspace.clone(),
        workspace_name: catalog.name.clone(),
        generated_at: catalog.generated_at.clone(),
        collection,
        activities,
        retention,
        safeguards: SAFEGUARDS.to_vec(),
        gaps,
    }
}

/// A table cell: pipes escaped, line breaks flattened, empty shown as a dash.
fn cell(text: &str) -> String {
    let text = text.replace('|', "\\|").replace(['\n', '\r'], " ");
    if text.trim().is_empty() {
        "—".to_string()
    } else {
        text
    }
}

fn list(items: &[String]) -> String {
    cell(&items.join(", "))
}

fn flow_scope(flow: &Flow) -> String {
    let mut scope = String::new();
    scope.push_str(&if flow.event_types.is_empty() {
        "all calls".to_string()
    } else {
        flow.event_types.join(", ")
    });
    if !flow.events.is_empty() {
        let _ = write!(scope, "; events {}", flow.events.join(", "));
    }
    if !flow.exclude_events.is_empty() {
        let _ = write!(scope, "; except {}", flow.exclude_events.join(", "));
    }
    scope
}

/// The record as a readable Markdown document (what a privacy officer files).
pub fn document(record: &RecordOfProcessing) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Record of processing activities — {}\n",
        record.workspace_name
    );
    let _ = writeln!(out, "- Controller: {}", record.controller);
    let _ = writeln!(out, "- Workspace: `{}`", record.workspace);
    let _ = writeln!(
        out,
        "- Generated: {} from the live configuration of tandem\n",
        record.generated_at
    );

    let _ = writeln!(out, "## Processing activities (recipients)\n");
    if record.activities.is_empty() {
        let _ = writeln!(
            out,
            "No personal data leaves tandem: no enabled connection.\n"
        );
    } else {
        let _ = writeln!(
            out,
            "| Recipient | Owner | Purposes | Data categories | Sources | Consent required | Safeguards |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for activity in &record.activities {
            let mut categories = activity.declared_data_categories.clone();
            for undeclared in &activity.undeclared_data_categories {
                categories.push(format!("{undeclared} (undeclared)"));
            }
            let sources: BTreeSet<&str> = activity
                .flows
                .iter()
                .flat_map(|flow| flow.sources.iter().map(String::as_str))
                .collect();
            let mut safeguards = Vec::new();
            if activity.flows.iter().any(|flow| flow.transformation) {
                safeguards.push("transformation".to_string());
            }
            if activity.flows.iter().any(|flow| flow.mappings > 0) {
                safeguards.push("field mappings".to_string());
            }
            if activity
                .flows
                .iter()
                .any(|flow| !flow.events.is_empty() || !flow.event_types.is_empty())
            {
                safeguards.push("event filter".to_string());
            }
            let _ = writeln!(
                out,
                "| {} (`{}`, {}) | {} | {} | {} | {} | {} | {} |",
                cell(&activity.name),
                activity.destination,
                activity.kind,
                cell(&activity.owner),
                list(&activity.purposes),
                list(&categories),
                cell(&sources.into_iter().collect::<Vec<_>>().join(", ")),
                list(&activity.consent_categories),
                list(&safeguards),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "### Flows\n");
        let _ = writeln!(
            out,
            "| Connection | Sources | Recipient | Scope | Consent required |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for activity in &record.activities {
            for flow in &activity.flows {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | `{}` | {} | {} |",
                    flow.connection,
                    list(&flow.sources),
                    activity.destination,
                    cell(&flow_scope(flow)),
                    list(&flow.consent_categories),
                );
            }
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## Collection (sources)\n");
    let _ = writeln!(
        out,
        "| Source | Owner | Purpose | Data categories | Tracking plan | Recipients |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for collection in &record.collection {
        let _ = writeln!(
            out,
            "| {} (`{}`){} | {} | {} | {} | {} | {} |",
            cell(&collection.name),
            collection.source,
            if collection.enabled { "" } else { ", disabled" },
            cell(&collection.owner),
            cell(collection.purpose.as_deref().unwrap_or("")),
            list(&collection.data_categories),
            cell(collection.tracking_plan.as_deref().unwrap_or("")),
            list(&collection.recipients),
        );
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Retention\n");
    let _ = writeln!(
        out,
        "- Event log: {}",
        match record.retention.log_hours {
            Some(hours) if hours % 24 == 0 => format!("{} days", hours / 24),
            Some(hours) => format!("{hours} hours"),
            None => "kept until removed (no time limit configured)".to_string(),
        }
    );
    if let Some(bytes) = record.retention.log_bytes_max {
        let _ = writeln!(
            out,
            "- Event log size limit: {bytes} bytes (oldest segments removed first)"
        );
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Technical and organisational measures\n");
    for safeguard in &record.safeguards {
        let _ = writeln!(out, "- {safeguard}");
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Gaps to resolve\n");
    if record.gaps.is_empty() {
        let _ = writeln!(
            out,
            "None: every object states its purpose, data categories and consent."
        );
    } else {
        for gap in &record.gaps {
            let _ = writeln!(out, "- `{}` ({}): {}", gap.object, gap.code, gap.message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{findings, tests::fixture};

    fn fixture_record() -> RecordOfProcessing {
        let mut catalog = fixture();
        catalog.findings = findings(&catalog, 0);
        record(
            "Acme",
            &catalog,
            Retention {
                log_hours: Some(24 * 90),
                log_bytes_max: None,
            },
        )
    }

    #[test]
    fn each_recipient_lists_what_reaches_it_and_why() {
        let record = fixture_record();
        assert_eq!(record.controller, "Acme");
        let names: Vec<&str> = record
            .activities
            .iter()
            .map(|a| a.destination.as_str())
            .collect();
        assert_eq!(
            names,
            ["crm", "lake"],
            "an unused destination is no processing activity"
        );
        let crm = &record.activities[0];
        assert_eq!(crm.purposes, ["sales follow-up"]);
        assert_eq!(
            crm.source_data_categories,
            ["behavioral", "device", "identifiers"]
        );
        assert_eq!(crm.undeclared_data_categories, ["device", "identifiers"]);
        assert_eq!(crm.consent_categories, ["marketing"]);
        assert_eq!(crm.flows[0].events, ["Order Completed"]);
        let lake = &record.activities[1];
        assert_eq!(
            lake.source_data_categories,
            ["behavioral", "contact", "device", "identifiers"],
            "`*` takes every source"
        );
        assert!(lake.consent_categories.is_empty());
    }

    #[test]
    fn collection_names_recipients_and_gaps_come_from_findings() {
        let record = fixture_record();
        let web = &record.collection[0];
        assert_eq!(web.recipients, ["crm", "lake"]);
        assert_eq!(record.collection[1].recipients, ["lake"]);
        let gaps: Vec<(&str, &str)> = record
            .gaps
            .iter()
            .map(|gap| (gap.code, gap.object.as_str()))
            .collect();
        assert!(gaps.contains(&("no_consent_categories", "connection/all-to-lake")));
        assert!(gaps.contains(&("no_purpose", "source/crm-import")));
        assert!(
            !gaps.iter().any(|(code, _)| *code == "dead_letters"),
            "operational findings are not gaps of the record"
        );
    }

    #[test]
    fn a_disabled_connection_sends_nothing_so_it_is_no_activity() {
        let mut catalog = fixture();
        for connection in &mut catalog.connections {
            connection.enabled = false;
        }
        let record = record("Acme", &catalog, Retention::default());
        assert!(record.activities.is_empty());
        assert!(record.collection.iter().all(|c| c.recipients.is_empty()));
        assert!(document(&record).contains("No personal data leaves tandem"));
    }

    #[test]
    fn the_document_is_readable_markdown() {
        let record = fixture_record();
        let text = document(&record);
        assert!(text.starts_with("# Record of processing activities — EMEA\n"));
        assert!(text.contains("| crm destination (`crm`, webhook) | crm@acme.test | sales follow-up | contact, behavioral, device (undeclared), identifiers (undeclared) | web | marketing | event filter |"), "{text}");
        assert!(
            text.contains("| `all-to-lake` | * | `lake` | all calls | — |"),
            "{text}"
        );
        assert!(text.contains("- Event log: 90 days"));
        assert!(text.contains("(no_purpose)"));
        // Every table row has as many cells as its header.
        for table in text.split("\n\n").filter(|block| block.starts_with('|')) {
            let widths: BTreeSet<usize> = table
                .lines()
                .map(|line| line.replace("\\|", "").matches('|').count())
                .collect();
            assert_eq!(widths.len(), 1, "ragged table:\n{table}");
        }
    }

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(cell("  "), "—");
    }
}
