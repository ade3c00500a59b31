//! The catalog and the record of processing:
//! `GET /api/v1/catalog` (every workspace's volumes, deliveries, violations and findings: the
//! organization admin's cross-market view), `GET /api/v1/workspaces/{workspace}/catalog` (every
//! source, destination, connection and transformation with owner, purpose, data categories,
//! created/changed by, last seen and volume, plus findings) and
//! `GET /api/v1/workspaces/{workspace}/record-of-processing[?format=markdown]` (GDPR Art. 30).

use crate::auth::{Authorized, ReadCatalog};
use crate::error::{ApiError, ApiResult};
use crate::inventory::{
    findings, Change, ConnectionItem, DestinationItem, RefusedTraffic, Severity, SourceItem,
    TransformationItem, WorkspaceCatalog,
};
use crate::plans::violations::PlanTotals;
use crate::processing::{self, Retention};
use crate::routes::Routes;
use crate::state::{AppState, Workspace};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tandem_activate::history::Version;
use tandem_core::{time_util, ErrorCode};
use tandem_store::UnknownKeyTraffic;

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/catalog", get(organization_catalog))
        .route(
            "/api/v1/workspaces/{workspace}/catalog",
            get(workspace_catalog),
        )
        .route(
            "/api/v1/workspaces/{workspace}/record-of-processing",
            get(record_of_processing),
        )
}

/// Who created and who last changed each API-managed object, from its version history.
struct Provenance(HashMap<(String, String), (Change, Change)>);

impl Provenance {
    fn load(workspace: &Workspace) -> ApiResult<Provenance> {
        let versions: Vec<Version> = workspace
            .activation
            .dlq
            .versions(None, None)
            .map_err(ApiError::internal)?;
        let mut map: HashMap<(String, String), (Change, Change)> = HashMap::new();
        for version in versions {
            let change = Change {
                at: Some(time_util::format_iso8601_ms(version.at_ms)),
                by: Some(version.by.clone()),
            };
            let entry = map
                .entry((version.kind.clone(), version.id.clone()))
                .or_insert_with(|| (change.clone(), Change::default()));
            entry.1 = change;
        }
        Ok(Provenance(map))
    }

    fn of(&self, kind: &str, id: &str) -> (Change, Change) {
        self.0
            .get(&(kind.to_string(), id.to_string()))
            .cloned()
            .unwrap_or_default()
    }
}

/// The live catalog of one workspace, findings included.
fn build(
    state: &AppState,
    ws: &Workspace,
    unknown: &[UnknownKeyTraffic],
) -> ApiResult<WorkspaceCatalog> {
    let provenance = Provenance::load(ws)?;
    let activation = &ws.activation;
    let destinations = activation.destinations()?;
    let connections = activation.connections()?;

    let connection_items: Vec<ConnectionItem> = connections
        .iter()
        .map(|(config, managed_by)| {
            let destination = destinations
                .iter()
                .find(|(destination, _)| destination.id == config.destination);
            let (owner, owner_from) = match (&config.owner, destination) {
                (Some(owner), _) => (owner.clone(), "connection"),
                (None, Some((destination, _))) => (destination.owner.clone(), "destination"),
                (None, None) => (String::new(), "destination"),
            };
            let (created, changed) = provenance.of("connection", &config.id);
            let status = activation.status(&config.id).ok();
            ConnectionItem {
                id: config.id.clone(),
                sources: config.sources.clone(),
                destination: config.destination.clone(),
                owner,
                owner_from,
                purpose: config.purpose.clone(),
                event_types: config.event_types.clone(),
                events: config.events.clone(),
                exclude_events: config.exclude_events.clone(),
                consent_categories: config.consent_categories.clone(),
                transformation: config.transformation.is_some(),
                mappings: config.mappings.len(),
                enabled: config.enabled,
                managed_by: managed(*managed_by),
                created,
                changed,
                state: status.as_ref().map_or("error", |s| s.state).to_string(),
                delivered: status.as_ref().map_or(0, |s| s.delivered),
                failed: status.as_ref().map_or(0, |s| s.failed),
                filtered: status.as_ref().map_or(0, |s| s.filtered),
                dlq_size: status.as_ref().map_or(0, |s| s.dlq_size),
                lag_records: status.as_ref().map_or(0, |s| s.lag_records),
                last_delivered_at: status.and_then(|s| s.last_delivered_at),
            }
        })
        .collect();

    let transformations = connections
        .iter()
        .filter_map(|(config, _)| {
            let code = config.transformation.as_ref()?;
            let item = connection_items.iter().find(|item| item.id == config.id)?;
            Some(TransformationItem {
                connection: config.id.clone(),
                destination: config.destination.clone(),
                owner: item.owner.clone(),
                sha256: hex(&Sha256::digest(code.as_bytes())),
                lines: code.lines().count(),
                bytes: code.len(),
                changed: item.changed.clone(),
            })
        })
        .collect();

    let destination_items = destinations
        .iter()
        .map(|(config, managed_by)| {
            let mine: Vec<&ConnectionItem> = connection_items
                .iter()
                .filter(|connection| connection.destination == config.id)
                .collect();
            let (created, changed) = provenance.of("destination", &config.id);
            DestinationItem {
                id: config.id.clone(),
                name: config.name.clone(),
                kind: config.kind.clone(),
                owner: config.owner.clone(),
                purpose: config.purpose.clone(),
                data_categories: config.data_categories.clone(),
                enabled: config.enabled,
                managed_by: managed(*managed_by),
                created,
                changed,
                connections: mine.iter().map(|c| c.id.clone()).collect(),
                delivered: mine.iter().map(|c| c.delivered).sum(),
                failed: mine.iter().map(|c| c.failed).sum(),
                dlq_size: mine.iter().map(|c| c.dlq_size).sum(),
                last_delivered_at: mine
                    .iter()
                    .filter_map(|c| c.last_delivered_at.clone())
                    .max(),
            }
        })
        .collect();

    let source_items = crate::routes::sources::workspace_sources(state, &ws.id)?
        .into_iter()
        .map(|view| {
            let (_, changed) = provenance.of("source", &view.id);
            SourceItem {
                connections: connection_items
                    .iter()
                    .filter(|c| crate::inventory::takes(&c.sources, &view.id))
                    .map(|c| c.id.clone())
                    .collect(),
                tracking_plan: ws
                    .plans
                    .plan_for(&view.id)
                    .map(|plan| plan.id().to_string()),
                created: Change {
                    at: Some(view.created_at.clone()),
                    by: Some(view.created_by.clone()),
                },
                changed: if changed.at.is_some() {
                    changed
                } else {
                    Change {
                        at: Some(view.updated_at.clone()),
                        by: None,
                    }
                },
                id: view.id,
                name: view.name,
                owner: view.owner,
                purpose: view.purpose,
                data_categories: view.data_categories,
                enabled: view.enabled,
                managed_by: view.managed_by,
                last_seen_at: view.last_seen_at,
                last_seen_ms: view.last_seen_ms,
                events_accepted: view.events_accepted,
                events_rejected: view.events_rejected,
            }
        })
        .collect();

    let refused_traffic = unknown
        .iter()
        .filter_map(|traffic| {
            let source = traffic.source.as_ref()?;
            (source.workspace_id == ws.id).then(|| RefusedTraffic {
                source: source.source_id.clone(),
                key_fingerprint: traffic.key_fingerprint.clone(),
                attempts: traffic.attempts,
                last_seen_at: time_util::format_iso8601_ms(traffic.last_seen_ms),
                last_ip: traffic.last_ip.clone(),
                last_user_agent: traffic.last_user_agent.clone(),
                last_origin: traffic.last_origin.clone(),
            })
        })
        .collect();

    let mut catalog = WorkspaceCatalog {
        workspace: ws.id.clone(),
        name: ws.name.clone(),
        generated_at: time_util::format_iso8601_ms(time_util::now_ms()),
        sources: source_items,
        destinations: destination_items,
        connections: connection_items,
        transformations,
        refused_traffic,
        findings: Vec::new(),
    };
    catalog.findings = findings(&catalog, time_util::now_ms());
    Ok(catalog)
}

/// Activate's and the metadata store's "who manages it" are the same two cases.
fn managed(by: tandem_activate::runtime::ManagedBy) -> tandem_store::ManagedBy {
    match by {
        tandem_activate::runtime::ManagedBy::Config => tandem_store::ManagedBy::Config,
        tandem_activate::runtime::ManagedBy::Api => tandem_store::ManagedBy::Api,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Unknown-key traffic, read once per request after the in-memory counters are flushed.
fn refused_keys(state: &AppState) -> ApiResult<Vec<UnknownKeyTraffic>> {
    state.catalog.flush()?;
    Ok(state.catalog.store().unknown_traffic()?)
}

async fn workspace_catalog(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<WorkspaceCatalog>> {
    let ws = state.workspace(&workspace_id)?;
    let unknown = refused_keys(&state)?;
    Ok(Json(build(&state, ws, &unknown)?))
}

#[derive(Deserialize)]
struct RecordQuery {
    /// `json` (default) or `markdown`.
    format: Option<String>,
}

async fn record_of_processing(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
    Path(workspace_id): Path<String>,
    Query(query): Query<RecordQuery>,
) -> ApiResult<Response> {
    let ws = state.workspace(&workspace_id)?;
    let markdown = match query.format.as_deref() {
        None | Some("json") => false,
        Some("markdown" | "md") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("unknown format `{other}`: use `json` or `markdown`"),
            ))
        }
    };
    let unknown = refused_keys(&state)?;
    let catalog = build(&state, ws, &unknown)?;
    let retention = Retention {
        log_hours: state.config.log.retention_hours,
        log_bytes_max: state.config.log.retention_bytes_max,
    };
    let record = processing::record(&state.config.organization.name, &catalog, retention);
    if markdown {
        Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            processing::document(&record),
        )
            .into_response())
    } else {
        Ok(Json(record).into_response())
    }
}

/// Every workspace side by side: what the organization admin compares across markets.
async fn organization_catalog(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
) -> ApiResult<Json<Value>> {
    let unknown = refused_keys(&state)?;
    let mut workspaces = Vec::new();
    for ws in state.workspaces.values() {
        let catalog = build(&state, ws, &unknown)?;
        let mut totals = PlanTotals::default();
        for entry in &ws.plans.set().entries {
            let plan = ws.plans.violations.totals(entry.plan.id());
            totals.allowed += plan.allowed;
            totals.flagged += plan.flagged;
            totals.quarantined += plan.quarantined;
            totals.blocked += plan.blocked;
            totals.released += plan.released;
            totals.discarded += plan.discarded;
        }
        let count = |severity: Severity| {
            catalog
                .findings
                .iter()
                .filter(|finding| finding.severity == severity)
                .count()
        };
        let log = ws.log.stats();
        workspaces.push(json!({
            "id": ws.id,
            "name": ws.name,
            "sources": catalog.sources.len(),
            "destinations": catalog.destinations.len(),
            "connections": catalog.connections.len(),
            "events_accepted": catalog.sources.iter().map(|s| s.events_accepted).sum::<u64>(),
            "events_rejected": catalog.sources.iter().map(|s| s.events_rejected).sum::<u64>(),
            "log": {"end_offset": log.end_offset, "bytes": log.bytes},
            "delivered": catalog.connections.iter().map(|c| c.delivered).sum::<u64>(),
            "delivery_failed": catalog.connections.iter().map(|c| c.failed).sum::<u64>(),
            "dead_letters": catalog.connections.iter().map(|c| c.dlq_size).sum::<u64>(),
            "tracking_plan_violations": totals,
            "findings": {
                "critical": count(Severity::Critical),
                "warning": count(Severity::Warning),
                "info": count(Severity::Info),
            },
        }));
    }
    let unknown_keys: Vec<Value> = unknown
        .iter()
        .filter(|traffic| traffic.source.is_none())
        .map(|traffic| {
            json!({
                "key_fingerprint": traffic.key_fingerprint, "attempts": traffic.attempts,
                "last_seen_at": time_util::format_iso8601_ms(traffic.last_seen_ms),
                "last_ip": traffic.last_ip, "last_origin": traffic.last_origin,
            })
        })
        .collect();
    Ok(Json(json!({
        "organization": state.config.organization.name,
        "workspaces": workspaces,
        "unknown_keys": unknown_keys,
    })))
}
