//! The catalog of a workspace as data: every source, destination, connection and
//! transformation with its owner, purpose, data categories, who created and changed it, when it
//! was last seen and its volume — and the findings that need someone's attention (an object
//! without a purpose, personal data sent without a consent category, traffic on a disabled
//! key). Pure: `routes::catalog` gathers the live state into a [`WorkspaceCatalog`], and
//! `processing` derives the record of processing from the same value.

use serde::Serialize;
use tandem_store::ManagedBy;

/// A source without events for this long is reported as silent (it may be shadow IT's opposite:
/// a forgotten integration still holding a valid key).
pub const SOURCE_SILENT_DAYS: i64 = 30;

/// Who created or last changed an object, and when.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Change {
    pub at: Option<String>,
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceItem {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub purpose: Option<String>,
    pub data_categories: Vec<String>,
    pub enabled: bool,
    pub managed_by: ManagedBy,
    pub created: Change,
    pub changed: Change,
    pub last_seen_at: Option<String>,
    /// Milliseconds since the epoch of `last_seen_at` (for findings; not shown).
    #[serde(skip)]
    pub last_seen_ms: Option<i64>,
    pub events_accepted: u64,
    pub events_rejected: u64,
    /// The tracking plan governing it, if any.
    pub tracking_plan: Option<String>,
    /// Connections that take its events (enabled or not).
    pub connections: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationItem {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub owner: String,
    pub purpose: Option<String>,
    pub data_categories: Vec<String>,
    pub enabled: bool,
    pub managed_by: ManagedBy,
    pub created: Change,
    pub changed: Change,
    pub connections: Vec<String>,
    /// Totals over its connections since the server started.
    pub delivered: u64,
    pub failed: u64,
    pub dlq_size: u64,
    pub last_delivered_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionItem {
    pub id: String,
    pub sources: Vec<String>,
    pub destination: String,
    /// The connection's owner, else its destination's.
    pub owner: String,
    /// `connection` or `destination`: where `owner` comes from.
    pub owner_from: &'static str,
    /// The connection's own purpose, when narrower than its destination's.
    pub purpose: Option<String>,
    pub event_types: Vec<String>,
    pub events: Vec<String>,
    pub exclude_events: Vec<String>,
    pub consent_categories: Vec<String>,
    pub transformation: bool,
    pub mappings: usize,
    pub enabled: bool,
    pub managed_by: ManagedBy,
    pub created: Change,
    pub changed: Change,
    /// `running`, `disabled` or `error`.
    pub state: String,
    pub delivered: u64,
    pub failed: u64,
    pub filtered: u64,
    pub dlq_size: u64,
    pub lag_records: u64,
    pub last_delivered_at: Option<String>,
}

/// A connection's transformation: code that changes personal data on its way out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransformationItem {
    pub connection: String,
    pub destination: String,
    pub owner: String,
    /// SHA-256 of the code (hex): the same code has the same digest in every workspace.
    pub sha256: String,
    pub lines: usize,
    pub bytes: usize,
    pub changed: Change,
}

/// Attempts with the key of a disabled source of this workspace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusedTraffic {
    pub source: String,
    pub key_fingerprint: String,
    pub attempts: u64,
    pub last_seen_at: String,
    pub last_ip: Option<String>,
    pub last_user_agent: Option<String>,
    pub last_origin: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// Something in the catalog that needs an owner's attention.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable code (`no_purpose`, `no_data_categories`, `no_consent_categories`, …).
    pub code: &'static str,
    /// `source/web`, `destination/crm`, `connection/web-to-crm`.
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkspaceCatalog {
    pub workspace: String,
    pub name: String,
    pub generated_at: String,
    pub sources: Vec<SourceItem>,
    pub destinations: Vec<DestinationItem>,
    pub connections: Vec<ConnectionItem>,
    pub transformations: Vec<TransformationItem>,
    pub refused_traffic: Vec<RefusedTraffic>,
    pub findings: Vec<Finding>,
}

impl WorkspaceCatalog {
    pub fn destination(&self, id: &str) -> Option<&DestinationItem> {
        self.destinations.iter().find(|item| item.id == id)
    }

    pub fn source(&self, id: &str) -> Option<&SourceItem> {
        self.sources.iter().find(|item| item.id == id)
    }

    /// The sources a connection takes (`*`: every source of the workspace).
    pub fn sources_of<'a>(&'a self, connection: &'a ConnectionItem) -> Vec<&'a SourceItem> {
        self.sources
            .iter()
            .filter(|source| takes(&connection.sources, &source.id))
            .collect()
    }
}

/// Whether a connection's `sources` list takes `source`.
pub fn takes(sources: &[String], source: &str) -> bool {
    sources.iter().any(|id| id == "*" || id == source)
}

/// The findings of a catalog, most severe first, then by object.
pub fn findings(catalog: &WorkspaceCatalog, now_ms: i64) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut add = |severity, code, object: String, message: String| {
        found.push(Finding {
            severity,
            code,
            object,
            message,
        })
    };
    for source in &catalog.sources {
        let object = format!("source/{}", source.id);
        if source
            .purpose
            .as_deref()
            .is_none_or(|p| p.trim().is_empty())
        {
            add(
                Severity::Warning,
                "no_purpose",
                object.clone(),
                format!(
                    "source `{}` states no purpose: why is this data collected?",
                    source.id
                ),
            );
        }
        if source.data_categories.is_empty() {
            add(
                Severity::Info,
                "no_data_categories",
                object.clone(),
                format!(
                    "source `{}` names no data categories: the record of processing cannot say what it collects",
                    source.id
                ),
            );
        }
        if source.enabled {
            let silent = match source.last_seen_ms {
                Some(last) => now_ms - last > SOURCE_SILENT_DAYS * 86_400_000,
                None => false,
            };
            if silent {
                add(
                    Severity::Info,
                    "silent_source",
                    object.clone(),
                    format!(
                        "source `{}` sent nothing for over {SOURCE_SILENT_DAYS} days but its key still works: disable it if it is retired",
                        source.id
                    ),
                );
            }
        }
    }
    for destination in &catalog.destinations {
        let object = format!("destination/{}", destination.id);
        if destination
            .purpose
            .as_deref()
            .is_none_or(|p| p.trim().is_empty())
        {
            add(
                Severity::Warning,
                "no_purpose",
                object.clone(),
                format!(
                    "destination `{}` states no purpose: why does data go there?",
                    destination.id
                ),
            );
        }
        if destination.data_categories.is_empty() {
            add(
                Severity::Info,
                "no_data_categories",
                object.clone(),
                format!(
                    "destination `{}` names no data categories received",
                    destination.id
                ),
            );
        }
        if destination.connections.is_empty() {
            add(
                Severity::Info,
                "unused_destination",
                object,
                format!(
                    "destination `{}` has no connection: nothing is sent there",
                    destination.id
                ),
            );
        }
    }
    for connection in &catalog.connections {
        let object = format!("connection/{}", connection.id);
        if connection.enabled && connection.consent_categories.is_empty() {
            add(
                Severity::Warning,
                "no_consent_categories",
                object.clone(),
                format!(
                    "connection `{}` names no consent category: events go to `{}` whatever the person chose",
                    connection.id, connection.destination
                ),
            );
        }
        if connection.state == "error" {
            add(
                Severity::Critical,
                "connection_error",
                object.clone(),
                format!("connection `{}` is not running", connection.id),
            );
        }
        if connection.dlq_size > 0 {
            add(
                Severity::Warning,
                "dead_letters",
                object,
                format!(
                    "connection `{}` holds {} dead letter(s) awaiting replay or discard",
                    connection.id, connection.dlq_size
                ),
            );
        }
    }
    for refused in &catalog.refused_traffic {
        add(
            Severity::Critical,
            "disabled_key_in_use",
            format!("source/{}", refused.source),
            format!(
                "{} request(s) still use the key of disabled source `{}` (last from {} at {})",
                refused.attempts,
                refused.source,
                refused
                    .last_origin
                    .as_deref()
                    .or(refused.last_ip.as_deref())
                    .unwrap_or("an unknown origin"),
                refused.last_seen_at
            ),
        );
    }
    found.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.object.cmp(&b.object))
            .then_with(|| a.code.cmp(b.code))
    });
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn source(id: &str, categories: &[&str]) -> SourceItem {
        SourceItem {
            id: id.into(),
            name: format!("{id} site"),
            owner: "web@acme.test".into(),
            purpose: Some("analytics of the web shop".into()),
            data_categories: categories.iter().map(|c| c.to_string()).collect(),
            enabled: true,
            managed_by: ManagedBy::Config,
            created: Change::default(),
            changed: Change::default(),
            last_seen_at: None,
            last_seen_ms: None,
            events_accepted: 10,
            events_rejected: 0,
            tracking_plan: None,
            connections: Vec::new(),
        }
    }

    pub fn destination(id: &str, categories: &[&str], purpose: Option<&str>) -> DestinationItem {
        DestinationItem {
            id: id.into(),
            name: format!("{id} destination"),
            kind: "webhook".into(),
            owner: "crm@acme.test".into(),
            purpose: purpose.map(str::to_string),
            data_categories: categories.iter().map(|c| c.to_string()).collect(),
            enabled: true,
            managed_by: ManagedBy::Api,
            created: Change::default(),
            changed: Change::default(),
            connections: Vec::new(),
            delivered: 0,
            failed: 0,
            dlq_size: 0,
            last_delivered_at: None,
        }
    }

    pub fn connection(
        id: &str,
        sources: &[&str],
        destination: &str,
        consent: &[&str],
    ) -> ConnectionItem {
        ConnectionItem {
            id: id.into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            destination: destination.into(),
            owner: "crm@acme.test".into(),
            owner_from: "destination",
            purpose: None,
            event_types: Vec::new(),
            events: Vec::new(),
            exclude_events: Vec::new(),
            consent_categories: consent.iter().map(|c| c.to_string()).collect(),
            transformation: false,
            mappings: 0,
            enabled: true,
            managed_by: ManagedBy::Config,
            created: Change::default(),
            changed: Change::default(),
            state: "running".into(),
            delivered: 0,
            failed: 0,
            filtered: 0,
            dlq_size: 0,
            lag_records: 0,
            last_delivered_at: None,
        }
    }

    pub fn fixture() -> WorkspaceCatalog {
        let mut web = source("web", &["identifiers", "behavioral", "device"]);
        web.connections = vec!["web-to-crm".into(), "all-to-lake".into()];
        let mut crm_import = source("crm-import", &["identifiers", "contact"]);
        crm_import.purpose = None;
        crm_import.connections = vec!["all-to-lake".into()];
        let mut crm = destination("crm", &["contact", "behavioral"], Some("sales follow-up"));
        crm.connections = vec!["web-to-crm".into()];
        let mut lake = destination("lake", &[], None);
        lake.connections = vec!["all-to-lake".into()];
        let unused = destination("old-ads", &["identifiers"], Some("retargeting"));
        let mut web_to_crm = connection("web-to-crm", &["web"], "crm", &["marketing"]);
        web_to_crm.events = vec!["Order Completed".into()];
        let mut all_to_lake = connection("all-to-lake", &["*"], "lake", &[]);
        all_to_lake.dlq_size = 2;
        WorkspaceCatalog {
            workspace: "emea".into(),
            name: "EMEA".into(),
            generated_at: "2026-11-24T06:00:00.000Z".into(),
            sources: vec![web, crm_import],
            destinations: vec![crm, lake, unused],
            connections: vec![web_to_crm, all_to_lake],
            transformations: Vec::new(),
            refused_traffic: vec![RefusedTraffic {
                source: "legacy-app".into(),
                key_fingerprint: "abcdef012345".into(),
                attempts: 3,
                last_seen_at: "2026-11-24T05:00:00.000Z".into(),
                last_ip: Some("10.0.0.7".into()),
                last_user_agent: None,
                last_origin: Some("https://old.acme.test".into()),
            }],
            findings: Vec::new(),
        }
    }

    #[test]
    fn findings_name_each_gap_most_severe_first() {
        let catalog = fixture();
        let found = findings(&catalog, 0);
        let codes: Vec<(Severity, &str, &str)> = found
            .iter()
            .map(|f| (f.severity, f.code, f.object.as_str()))
            .collect();
        assert_eq!(
            codes,
            vec![
                (
                    Severity::Critical,
                    "disabled_key_in_use",
                    "source/legacy-app"
                ),
                (Severity::Warning, "dead_letters", "connection/all-to-lake"),
                (
                    Severity::Warning,
                    "no_consent_categories",
                    "connection/all-to-lake"
                ),
                (Severity::Warning, "no_purpose", "destination/lake"),
                (Severity::Warning, "no_purpose", "source/crm-import"),
                (Severity::Info, "no_data_categories", "destination/lake"),
                (Severity::Info, "unused_destination", "destination/old-ads"),
            ]
        );
        assert!(
            found[0].message.contains("https://old.acme.test"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_source_silent_for_a_month_is_reported_while_enabled() {
        let mut catalog = fixture();
        catalog.refused_traffic.clear();
        let now = 100 * 86_400_000;
        catalog.sources[0].last_seen_ms = Some(now - (SOURCE_SILENT_DAYS + 1) * 86_400_000);
        let silent = |catalog: &WorkspaceCatalog| {
            findings(catalog, now)
                .iter()
                .filter(|f| f.code == "silent_source")
                .count()
        };
        assert_eq!(silent(&catalog), 1);
        catalog.sources[0].enabled = false;
        assert_eq!(silent(&catalog), 0);
        catalog.sources[0].enabled = true;
        catalog.sources[0].last_seen_ms = Some(now - 86_400_000);
        assert_eq!(silent(&catalog), 0);
    }

    #[test]
    fn star_takes_every_source() {
        let catalog = fixture();
        let lake = &catalog.connections[1];
        let ids: Vec<&str> = catalog
            .sources_of(lake)
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(ids, ["web", "crm-import"]);
        let crm = &catalog.connections[0];
        let ids: Vec<&str> = catalog
            .sources_of(crm)
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(ids, ["web"]);
    }
}
