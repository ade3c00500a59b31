//! The live event stream for debugging: Server-Sent Events of every event a source sends, as it
//! happens — accepted (as stored, with its offset), quarantined or blocked by a tracking plan, or
//! rejected (with why); each with its plan's verdict when one checked it.
//! `GET /api/v1/workspaces/{workspace}/live` and `.../sources/{source}/live`.
//!
//! And where a stored event went: `GET /api/v1/workspaces/{workspace}/events/{offset}` reads the
//! record back and asks every connection what it made of it — filtered (and by which rule),
//! disabled, dead-lettered (with the error), delivered (its consumer is past the offset), or
//! still queued — with the tracking plan governing its source now.

use crate::auth::{Authorized, ReadLiveEvents};
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;
use crate::state::{AppState, LiveEvent};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Json;
use futures::stream::Stream;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tandem_activate::connection::{Connection, Skip};
use tandem_activate::dlq::DlqFilter;
use tandem_activate::worker::consumer_name;
use tandem_config::{ConnectionConfig, DestinationConfig};
use tandem_core::envelope::{EventEnvelope, EventType};
use tandem_core::limits::LIVE_STREAMS_MAX;
use tandem_core::ErrorCode;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};
use tokio_stream::StreamExt;

/// Interval of SSE comments keeping idle connections (and proxies) open.
const KEEP_ALIVE_SECONDS: u64 = 15;

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/workspaces/{workspace}/live", get(workspace_live))
        .route(
            "/api/v1/workspaces/{workspace}/sources/{source}/live",
            get(source_live),
        )
        .route(
            "/api/v1/workspaces/{workspace}/events/{offset}",
            get(event_routing),
        )
}

async fn workspace_live(
    State(state): State<AppState>,
    _auth: Authorized<ReadLiveEvents>,
    Path(workspace): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    stream(&state, workspace, None)
}

async fn source_live(
    State(state): State<AppState>,
    _auth: Authorized<ReadLiveEvents>,
    Path((workspace, source)): Path<(String, String)>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    if state.catalog.source_by_id(&workspace, &source).is_none() {
        return Err(ApiError::not_found(format!("source {workspace}/{source}")));
    }
    stream(&state, workspace, Some(source))
}

fn stream(
    state: &AppState,
    workspace: String,
    source: Option<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    if !state.workspaces.contains_key(&workspace) {
        return Err(ApiError::not_found(format!("workspace {workspace}")));
    }
    if state.live.receiver_count() >= LIVE_STREAMS_MAX {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("at most {LIVE_STREAMS_MAX} live streams may be open at once"),
        ));
    }
    let matches = move |event: &LiveEvent| {
        event.workspace_id == workspace
            && source
                .as_ref()
                .is_none_or(|source| &event.source_id == source)
    };
    let events = BroadcastStream::new(state.live.subscribe()).filter_map(
        move |item: Result<Arc<LiveEvent>, BroadcastStreamRecvError>| match item {
            Ok(event) if matches(&event) => Some(Ok(Event::default()
                .event(event.kind)
                .data(serde_json::to_string(&*event).unwrap_or_default()))),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Ok(Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{missed}}}")))),
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(KEEP_ALIVE_SECONDS))))
}

/// `GET .../events/{offset}`: the stored event and, per connection, where it went or why not.
async fn event_routing(
    State(state): State<AppState>,
    _auth: Authorized<ReadLiveEvents>,
    Path((workspace_id, offset)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let workspace = state
        .workspaces
        .get(&workspace_id)
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace_id}")))?;
    let offset: u64 = offset.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("`{offset}` is not a log offset (a whole number)"),
        )
    })?;
    let log = workspace.log.clone();
    let records = tokio::task::spawn_blocking(move || log.read(offset, 1))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let record = records
        .into_iter()
        .find(|record| record.offset == offset)
        .ok_or_else(|| {
            let stats = workspace.log.stats();
            ApiError::not_found(format!(
                "event at offset {offset} (the log holds {}..{})",
                stats.start_offset, stats.end_offset
            ))
        })?;
    let envelope = EventEnvelope::decode(&record.payload).map_err(ApiError::internal)?;
    if envelope.event_type == EventType::Control {
        return Err(ApiError::not_found(format!(
            "event at offset {offset} (it is a control record, not an event)"
        )));
    }
    let event: Value = serde_json::from_slice(envelope.json).map_err(ApiError::internal)?;
    let source = envelope.source_id.to_string();
    let event_type = envelope.event_type;

    let tracking_plan = workspace.plans.plan_for(&source).map(|plan| {
        let checked = crate::plans::Checked {
            violations: if plan.governs(event_type) {
                plan.check(event_type, &event)
            } else {
                Vec::new()
            },
            plan,
        };
        let mut view = checked.live_view();
        view["note"] = json!("checked now against the plan in force; the stored event carries `context.violations` when the plan flagged it");
        view
    });

    let stored = StoredEvent {
        offset,
        received_at_ms: record.timestamp_ms,
        source: &source,
        event_type,
        event: &event,
    };
    let activation = &workspace.activation;
    let destinations = activation.destinations()?;
    let mut deliveries = Vec::new();
    for (config, _) in activation.connections()? {
        let destination = destinations
            .iter()
            .find(|(destination, _)| destination.id == config.destination)
            .map(|(destination, _)| destination.clone());
        deliveries.push(route_of(workspace, &config, destination.as_ref(), &stored).await);
    }
    Ok(Json(json!({
        "workspace": workspace_id,
        "offset": offset,
        "source": source,
        "type": event_type.as_str(),
        "received_at": tandem_core::time_util::format_iso8601_ms(record.timestamp_ms),
        "event": event,
        "tracking_plan": tracking_plan,
        "deliveries": deliveries,
    })))
}

/// What one connection made of the event at `offset`.
/// The event read back from the log, as `route_of` asks about it.
#[derive(Clone, Copy)]
struct StoredEvent<'a> {
    offset: u64,
    received_at_ms: i64,
    source: &'a str,
    event_type: EventType,
    event: &'a Value,
}

async fn route_of(
    workspace: &crate::state::Workspace,
    config: &ConnectionConfig,
    destination: Option<&DestinationConfig>,
    stored: &StoredEvent<'_>,
) -> Value {
    let StoredEvent {
        offset,
        received_at_ms,
        source,
        event_type,
        event,
    } = *stored;
    let verdict = |status: &str, reason: String| {
        json!({
            "connection": config.id, "destination": config.destination,
            "destination_name": destination.map(|d| d.name.clone()),
            "destination_type": destination.map(|d| d.kind.clone()),
            "status": status, "reason": reason,
            "consent_categories": config.consent_categories,
            "transformation": config.transformation.is_some(),
        })
    };
    let Some(destination) = destination else {
        return verdict(
            "error",
            format!("its destination `{}` does not exist", config.destination),
        );
    };
    // The filters alone decide whether the event goes through; the transformation is not run here.
    let filters = ConnectionConfig {
        transformation: None,
        ..config.clone()
    };
    let connection = match Connection::compile(&workspace.id, &filters, destination, None) {
        Ok(connection) => connection,
        Err(error) => return verdict("error", format!("the connection does not compile: {error}")),
    };
    if !config.enabled {
        return verdict("disabled", "the connection is disabled".into());
    }
    if !destination.enabled {
        return verdict(
            "disabled",
            format!("the destination `{}` is disabled", destination.id),
        );
    }
    let skipped = connection
        .accepts_header(source, event_type)
        .and_then(|()| connection.accepts_event(event_type, event));
    if let Err(skip) = skipped {
        let reason = match skip {
            Skip::Source => format!(
                "source `{source}` is not one of its sources ({})",
                config.sources.join(", ")
            ),
            Skip::EventType => format!(
                "`{}` calls are not sent (event types: {})",
                event_type.as_str(),
                config.event_types.join(", ")
            ),
            Skip::EventName => {
                let name = event
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if config
                    .exclude_events
                    .iter()
                    .any(|excluded| excluded == name)
                {
                    format!("track event `{name}` is excluded")
                } else {
                    format!(
                        "track event `{name}` is not among its events ({})",
                        config.events.join(", ")
                    )
                }
            }
            Skip::Integrations => {
                "the event's `integrations` object turns this destination off".into()
            }
        };
        return verdict("filtered", reason);
    }
    // The same gate the delivery worker applies after the filters (with today's profile
    // consent when the event carries none: the explain route says the same).
    if tandem_consent::needs_consent(&config.consent_categories) {
        let oracle = workspace.activation.hooks.consent.clone();
        let decision = connection.consent_explain(event, oracle.as_ref());
        if !decision.allowed {
            let mut view = verdict("consent_denied", decision.reason.clone());
            view["consent"] = json!(decision);
            return view;
        }
    }
    let activation = &workspace.activation;
    let after = offset
        .checked_sub(1)
        .map(|previous| format!("{previous}-{}", u32::MAX));
    let filter = DlqFilter {
        after,
        ..DlqFilter::default()
    };
    if let Ok(entries) = activation.dlq_list(&config.id, filter, 8).await {
        if let Some(entry) = entries.iter().find(|entry| entry.offset == offset) {
            let mut view = verdict(
                "dlq",
                format!(
                    "dead-lettered after {} attempts: {}",
                    entry.attempts, entry.error
                ),
            );
            view["dlq_entry"] = json!(entry.id());
            return view;
        }
    }
    let committed = workspace
        .log
        .committed_offset(&consumer_name(&config.id))
        .ok()
        .flatten();
    let status = activation.status(&config.id).ok();
    // A new connection starts at the log's end: an event older than its creation was never its.
    let created_at_ms = activation
        .dlq
        .versions(Some("connection"), Some(&config.id))
        .ok()
        .and_then(|versions| {
            versions
                .iter()
                .rev()
                .find(|version| version.before.is_none())
                .map(|version| version.at_ms)
        });
    if created_at_ms.is_some_and(|created| created > received_at_ms) {
        return verdict(
            "not_sent",
            "the connection was created after this event arrived (a new connection starts at the log's end; a backfill sends history)".into(),
        );
    }
    match committed {
        Some(next) if next > offset => {
            let reason = if config.transformation.is_some() {
                "passed the filters; delivered, unless its transformation dropped it".to_string()
            } else {
                "passed the filters and was delivered".to_string()
            };
            verdict("delivered", reason)
        }
        _ => match status {
            Some(status) if status.state == "error" => verdict(
                "stopped",
                format!("the connection is stopped: {}", status.error.unwrap_or_default()),
            ),
            Some(status) if status.circuit != "closed" || status.retrying > 0 => verdict(
                "retrying",
                format!(
                    "on its way: the destination is failing and being retried (circuit {})",
                    status.circuit
                ),
            ),
            _ => verdict(
                "pending",
                "passed the filters; queued, not yet delivered (or the connection started after it: a backfill sends history)".into(),
            ),
        },
    }
}
