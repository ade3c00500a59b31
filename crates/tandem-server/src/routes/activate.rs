//! Activate: destination types, destinations, connections with their delivery status, the DLQ
//! (list, inspect, replay, discard), backfills and alerts.

use crate::auth::{Authorized, ManageDeliveries, ManageDestinations, ReadDestinations};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tandem_activate::dlq::DlqFilter;
use tandem_activate::runtime::{ActivateError, Activation, DlqSelection, ManagedBy};
use tandem_config::{ConnectionConfig, DestinationConfig};
use tandem_core::limits::{DLQ_ENTRIES_LISTED_DEFAULT, DLQ_ENTRIES_LISTED_MAX};
use tandem_core::{time_util, ErrorCode};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/destination-types", get(destination_types))
        .route("/api/v1/alerts", get(alerts))
        .route(
            "/api/v1/workspaces/{workspace}/destinations",
            get(list_destinations).post(create_destination),
        )
        .route(
            "/api/v1/workspaces/{workspace}/destinations/{destination}",
            get(get_destination).delete(delete_destination),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections",
            get(list_connections).post(create_connection),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections/{connection}",
            get(get_connection).delete(delete_connection),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections/{connection}/dlq",
            get(list_dlq),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections/{connection}/dlq/replay",
            post(replay_dlq),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections/{connection}/dlq/discard",
            post(discard_dlq),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections/{connection}/dlq/replays/{job}",
            get(replay_progress),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections/{connection}/dlq/{entry}",
            get(get_dlq_entry),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections/{connection}/backfill",
            get(backfill_progress).post(start_backfill),
        )
}

impl From<ActivateError> for ApiError {
    fn from(error: ActivateError) -> Self {
        match error {
            ActivateError::NotFound(message) => ApiError::new(ErrorCode::NotFound, message),
            ActivateError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            ActivateError::Invalid { message, problems } => {
                let details: Vec<Value> = problems
                    .into_iter()
                    .map(|(field, message)| json!({"field": field, "message": message}))
                    .collect();
                ApiError::new(ErrorCode::InvalidRequest, message)
                    .with_details(json!({ "problems": details }))
            }
            ActivateError::Internal(message) => ApiError::internal(message),
        }
    }
}

fn activation(state: &AppState, workspace: &str) -> ApiResult<Arc<Activation>> {
    state
        .workspaces
        .get(workspace)
        .map(|workspace| workspace.activation.clone())
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))
}

async fn destination_types(_auth: Authorized<ReadDestinations>) -> Json<Value> {
    let types: Vec<Value> = tandem_activate::registry::REGISTRY
        .iter()
        .map(|kind| json!({"name": kind.name, "description": kind.description, "settings_schema": (kind.settings_schema)()}))
        .collect();
    Json(json!({ "destination_types": types }))
}

#[derive(Deserialize)]
struct AlertQuery {
    workspace: Option<String>,
}

async fn alerts(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Query(query): Query<AlertQuery>,
) -> Json<Value> {
    Json(json!({ "alerts": state.alerts.list(query.workspace.as_deref()) }))
}

/// Settings are secrets (tokens, passwords, signing secrets): the API never shows their values.
fn destination_view(config: &DestinationConfig, managed_by: ManagedBy) -> Value {
    let keys: Vec<&String> = config
        .settings
        .as_object()
        .map(|map| map.keys().collect())
        .unwrap_or_default();
    json!({
        "id": config.id, "name": config.name, "type": config.kind, "owner": config.owner,
        "purpose": config.purpose, "data_categories": config.data_categories, "enabled": config.enabled,
        "settings_keys": keys, "managed_by": managed_by,
    })
}

async fn list_destinations(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    let views: Vec<Value> = activation(&state, &workspace)?
        .destinations()?
        .iter()
        .map(|(config, by)| destination_view(config, *by))
        .collect();
    Ok(Json(json!({ "destinations": views })))
}

async fn get_destination(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    activation(&state, &workspace)?
        .destinations()?
        .iter()
        .find(|(config, _)| config.id == id)
        .map(|(config, by)| Json(destination_view(config, *by)))
        .ok_or_else(|| ApiError::not_found(format!("destination {workspace}/{id}")))
}

fn invalid(problems: Vec<(String, String)>) -> ApiError {
    let message = problems
        .iter()
        .map(|(field, message)| {
            if field.is_empty() {
                message.clone()
            } else {
                format!("{field}: {message}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::from(ActivateError::Invalid { message, problems })
}

async fn create_destination(
    State(state): State<AppState>,
    _auth: Authorized<ManageDestinations>,
    Path(workspace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let activation = activation(&state, &workspace)?;
    let config: DestinationConfig = serde_json::from_value(body.clone())
        .map_err(|error| ApiError::new(ErrorCode::InvalidRequest, error.to_string()))?;
    let mut problems: Vec<(String, String)> = tandem_config::destination_problems(&config)
        .into_iter()
        .map(|problem| (problem.path, problem.message))
        .collect();
    for (field, message) in
        tandem_activate::registry::config_validator(&config.kind, &config.settings)
    {
        problems.push((
            if field == "type" {
                field
            } else {
                format!("settings.{field}")
                    .trim_end_matches('.')
                    .to_string()
            },
            message,
        ));
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    if activation
        .destinations()?
        .iter()
        .any(|(existing, _)| existing.id == config.id)
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("destination {} already exists", config.id),
        ));
    }
    activation
        .put_definition(
            "destination",
            &config.id,
            serde_json::to_value(&config).map_err(ApiError::internal)?,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(destination_view(&config, ManagedBy::Api)),
    ))
}

async fn delete_destination(
    State(state): State<AppState>,
    _auth: Authorized<ManageDestinations>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let activation = activation(&state, &workspace)?;
    match activation
        .destinations()?
        .iter()
        .find(|(config, _)| config.id == id)
    {
        None => return Err(ApiError::not_found(format!("destination {workspace}/{id}"))),
        Some((_, ManagedBy::Config)) => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("destination {id} is declared in the config file; change it there"),
            ))
        }
        Some(_) => {}
    }
    if let Some((connection, _)) = activation
        .connections()?
        .iter()
        .find(|(connection, _)| connection.destination == id)
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "connection {} still sends to destination {id}",
                connection.id
            ),
        ));
    }
    activation.delete_definition("destination", &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn connection_view(
    activation: &Activation,
    config: &ConnectionConfig,
    managed_by: ManagedBy,
) -> Value {
    let mut view = serde_json::to_value(config).unwrap_or_default();
    view["managed_by"] = json!(managed_by);
    view["enabled"] = json!(config.enabled);
    if let Ok(status) = activation.status(&config.id) {
        view["status"] = serde_json::to_value(status).unwrap_or_default();
    }
    view
}

async fn list_connections(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    let activation = activation(&state, &workspace)?;
    let views: Vec<Value> = activation
        .connections()?
        .iter()
        .map(|(config, by)| connection_view(&activation, config, *by))
        .collect();
    Ok(Json(json!({ "connections": views })))
}

async fn get_connection(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let activation = activation(&state, &workspace)?;
    let connections = activation.connections()?;
    let (config, by) = connections
        .iter()
        .find(|(config, _)| config.id == id)
        .ok_or_else(|| ApiError::not_found(format!("connection {workspace}/{id}")))?;
    Ok(Json(connection_view(&activation, config, *by)))
}

async fn create_connection(
    State(state): State<AppState>,
    _auth: Authorized<ManageDestinations>,
    Path(workspace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let activation = activation(&state, &workspace)?;
    let config: ConnectionConfig = serde_json::from_value(body)
        .map_err(|error| ApiError::new(ErrorCode::InvalidRequest, error.to_string()))?;
    let sources: Vec<String> = state
        .store
        .sources()?
        .into_iter()
        .filter(|source| source.workspace_id == workspace)
        .map(|source| source.id)
        .collect();
    let source_ids: Vec<&str> = sources.iter().map(String::as_str).collect();
    let destinations: Vec<String> = activation
        .destinations()?
        .into_iter()
        .map(|(destination, _)| destination.id)
        .collect();
    let destination_ids: Vec<&str> = destinations.iter().map(String::as_str).collect();
    let problems = tandem_config::connection_problems(&config, &source_ids, &destination_ids);
    if !problems.is_empty() {
        return Err(invalid(
            problems
                .into_iter()
                .map(|problem| (problem.path, problem.message))
                .collect(),
        ));
    }
    if activation
        .connections()?
        .iter()
        .any(|(existing, _)| existing.id == config.id)
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("connection {} already exists", config.id),
        ));
    }
    activation
        .put_definition(
            "connection",
            &config.id,
            serde_json::to_value(&config).map_err(ApiError::internal)?,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(connection_view(&activation, &config, ManagedBy::Api)),
    ))
}

async fn delete_connection(
    State(state): State<AppState>,
    _auth: Authorized<ManageDestinations>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let activation = activation(&state, &workspace)?;
    match activation
        .connections()?
        .iter()
        .find(|(config, _)| config.id == id)
    {
        None => Err(ApiError::not_found(format!("connection {workspace}/{id}"))),
        Some((_, ManagedBy::Config)) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("connection {id} is declared in the config file; change it there"),
        )),
        Some(_) => {
            activation.delete_definition("connection", &id).await?;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqQuery {
    limit: Option<usize>,
    after: Option<String>,
    error_contains: Option<String>,
    event: Option<String>,
}

async fn list_dlq(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Path((workspace, connection)): Path<(String, String)>,
    Query(query): Query<DlqQuery>,
) -> ApiResult<Json<Value>> {
    let limit = query.limit.unwrap_or(DLQ_ENTRIES_LISTED_DEFAULT);
    if !(1..=DLQ_ENTRIES_LISTED_MAX).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit must be within 1 ..= {DLQ_ENTRIES_LISTED_MAX}"),
        ));
    }
    let activation = activation(&state, &workspace)?;
    let filter = DlqFilter {
        after: query.after,
        error_contains: query.error_contains,
        event: query.event,
    };
    let entries = activation.dlq_list(&connection, filter, limit).await?;
    let views: Vec<Value> = entries.iter().map(dlq_view).collect();
    Ok(Json(
        json!({ "entries": views, "dlq_size": activation.dlq.count(&connection) }),
    ))
}

fn dlq_view(entry: &tandem_activate::dlq::DlqEntry) -> Value {
    json!({
        "id": entry.id(), "offset": entry.offset, "index": entry.index, "message_id": entry.message_id,
        "event_type": entry.event_type, "event_name": entry.event_name(), "source_id": entry.source_id,
        "received_at": time_util::format_iso8601_ms(entry.received_at_ms), "error": entry.error,
        "attempts": entry.attempts, "first_failure_at": time_util::format_iso8601_ms(entry.first_failure_ms),
        "last_failure_at": time_util::format_iso8601_ms(entry.last_failure_ms), "event": entry.original,
    })
}

async fn get_dlq_entry(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Path((workspace, connection, entry)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(dlq_view(
        &activation(&state, &workspace)?.dlq_get(&connection, &entry)?,
    )))
}

fn check_selection(selection: &DlqSelection) -> ApiResult<()> {
    if selection.all == !selection.ids.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "give either `ids` or `all: true`",
        ));
    }
    Ok(())
}

async fn replay_dlq(
    State(state): State<AppState>,
    _auth: Authorized<ManageDeliveries>,
    Path((workspace, connection)): Path<(String, String)>,
    Json(selection): Json<DlqSelection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_selection(&selection)?;
    let job = activation(&state, &workspace)?.dlq_replay(&connection, &selection)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(job.view()).map_err(ApiError::internal)?),
    ))
}

async fn replay_progress(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Path((workspace, _connection, job)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let view = activation(&state, &workspace)?
        .replay_progress(&job)
        .ok_or_else(|| ApiError::not_found(format!("replay {job}")))?;
    Ok(Json(
        serde_json::to_value(view).map_err(ApiError::internal)?,
    ))
}

async fn discard_dlq(
    State(state): State<AppState>,
    _auth: Authorized<ManageDeliveries>,
    Path((workspace, connection)): Path<(String, String)>,
    Json(selection): Json<DlqSelection>,
) -> ApiResult<Json<Value>> {
    check_selection(&selection)?;
    let discarded = activation(&state, &workspace)?.dlq_discard(&connection, &selection)?;
    Ok(Json(json!({ "discarded": discarded })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillRequest {
    from: String,
    to: String,
}

async fn start_backfill(
    State(state): State<AppState>,
    _auth: Authorized<ManageDeliveries>,
    Path((workspace, connection)): Path<(String, String)>,
    Json(request): Json<BackfillRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let parse = |name: &str, text: &str| {
        time_util::parse_iso8601_ms(text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`{name}` is not an ISO-8601 time"),
            )
        })
    };
    let (from, to) = (parse("from", &request.from)?, parse("to", &request.to)?);
    if from > to {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "`from` is after `to`",
        ));
    }
    let job = activation(&state, &workspace)?.backfill(&connection, from, to)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(job.view()).map_err(ApiError::internal)?),
    ))
}

async fn backfill_progress(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Path((workspace, connection)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let view = activation(&state, &workspace)?
        .backfill_progress(&connection)
        .ok_or_else(|| ApiError::not_found(format!("backfill of {connection}")))?;
    Ok(Json(
        serde_json::to_value(view).map_err(ApiError::internal)?,
    ))
}
