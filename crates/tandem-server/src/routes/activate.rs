//! Activate: destination types, destinations, connections with their delivery status, the DLQ
//! (list, inspect, replay, discard), backfills and alerts.

use crate::auth::{
    Authorized, ManageDeliveries, ManageDestinations, ReadDeadLetters, ReadDestinations,
};
use crate::changes::{self, Kind};
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tandem_activate::connection::Connection;
use tandem_activate::dlq::DlqFilter;
use tandem_activate::runtime::{ActivateError, Activation, DlqSelection, ManagedBy};
use tandem_config::{ConnectionConfig, DestinationConfig};
use tandem_core::limits::{DLQ_ENTRIES_LISTED_DEFAULT, DLQ_ENTRIES_LISTED_MAX};
use tandem_core::{time_util, ErrorCode};

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/destination-types", get(destination_types))
        .route(
            "/api/v1/workspaces/{workspace}/destination-types",
            get(workspace_destination_types),
        )
        .route("/api/v1/alerts", get(alerts))
        .route(
            "/api/v1/workspaces/{workspace}/destinations",
            get(list_destinations).post(create_destination),
        )
        .route(
            "/api/v1/workspaces/{workspace}/destinations/{destination}",
            get(get_destination)
                .patch(patch_destination)
                .delete(delete_destination),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections",
            get(list_connections).post(create_connection),
        )
        .route(
            "/api/v1/workspaces/{workspace}/connections/{connection}",
            get(get_connection)
                .patch(patch_connection)
                .delete(delete_connection),
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
        .route(
            "/api/v1/workspaces/{workspace}/transformations/test",
            post(test_transformation),
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
    Json(destination_types_json())
}

/// The same catalog for a credential scoped to one workspace (the organization route refuses
/// those): what the console's set-up forms are generated from.
async fn workspace_destination_types(
    State(state): State<AppState>,
    _auth: Authorized<ReadDestinations>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    activation(&state, &workspace)?;
    Ok(Json(destination_types_json()))
}

fn destination_types_json() -> Value {
    let types: Vec<Value> = tandem_activate::registry::REGISTRY
        .iter()
        .map(|kind| json!({"name": kind.name, "description": kind.description, "settings_schema": (kind.settings_schema)()}))
        .collect();
    json!({ "destination_types": types })
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

/// A destination definition from JSON, with every problem of its fields and settings.
pub(crate) fn checked_destination(body: Value) -> ApiResult<DestinationConfig> {
    let config: DestinationConfig = serde_json::from_value(body)
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
    Ok(config)
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The API-managed definition `id` of `kind` patched with `patch` (its `id` may not change).
pub(crate) fn patched<T: serde::Serialize>(
    current: &T,
    id: &str,
    patch: &Value,
) -> ApiResult<(Value, Value)> {
    if !patch.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the body must be a JSON object (a merge patch)",
        ));
    }
    if patch.get("id").is_some_and(|new| new != id) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "`id` cannot change: create a new one and delete this one",
        ));
    }
    let before = serde_json::to_value(current).map_err(ApiError::internal)?;
    let mut after = before.clone();
    merge_patch(&mut after, patch);
    Ok((before, after))
}

/// The API-managed destination or connection `id` among `definitions`: 404 when absent, 409 when
/// it is declared in the config file (configuration as code: it changes there).
fn api_managed<T>(
    definitions: Vec<(T, ManagedBy)>,
    id_of: impl Fn(&T) -> &str,
    kind: &str,
    workspace: &str,
    id: &str,
) -> ApiResult<T> {
    match definitions
        .into_iter()
        .find(|(config, _)| id_of(config) == id)
    {
        None => Err(ApiError::not_found(format!("{kind} {workspace}/{id}"))),
        Some((_, ManagedBy::Config)) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("{kind} {id} is declared in the config file; change it there"),
        )),
        Some((config, _)) => Ok(config),
    }
}

async fn patch_destination(
    State(state): State<AppState>,
    auth: Authorized<ManageDestinations>,
    Path((workspace, id)): Path<(String, String)>,
    Json(patch): Json<Value>,
) -> ApiResult<Response> {
    let activation = activation(&state, &workspace)?;
    let current = api_managed(
        activation.destinations()?,
        |config| &config.id,
        "destination",
        &workspace,
        &id,
    )?;
    let (_, after) = patched(&current, &id, &patch)?;
    let config = checked_destination(after)?;
    let operation = changes::prepare(
        &state,
        &workspace,
        Kind::Destination,
        &id,
        Some(serde_json::to_value(&config).map_err(ApiError::internal)?),
    )?;
    let title = format!("update destination {id}");
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    let view = destination_view(&config, ManagedBy::Api);
    auth.audit(
        &state,
        "destination.update",
        Some(&workspace),
        format!("destination {workspace}/{id}"),
        Some(destination_view(&current, ManagedBy::Api)),
        Some(view.clone()),
    )
    .await?;
    Ok(Json(view).into_response())
}

async fn create_destination(
    State(state): State<AppState>,
    auth: Authorized<ManageDestinations>,
    Path(workspace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    activation(&state, &workspace)?;
    let config = checked_destination(body)?;
    let operation =
        changes::prepare_create(&state, &workspace, Kind::Destination, &config.id, &config)?;
    let title = format!("create destination {}", config.id);
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    let view = destination_view(&config, ManagedBy::Api);
    auth.audit(
        &state,
        "destination.create",
        Some(&workspace),
        format!("destination {workspace}/{}", config.id),
        None,
        Some(view.clone()),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn delete_destination(
    State(state): State<AppState>,
    auth: Authorized<ManageDestinations>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let activation = activation(&state, &workspace)?;
    let before = destination_view(
        &api_managed(
            activation.destinations()?,
            |config| &config.id,
            "destination",
            &workspace,
            &id,
        )?,
        ManagedBy::Api,
    );
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
    let operation = changes::prepare(&state, &workspace, Kind::Destination, &id, None)?;
    let title = format!("delete destination {id}");
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    auth.audit(
        &state,
        "destination.delete",
        Some(&workspace),
        format!("destination {workspace}/{id}"),
        Some(before),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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

/// A connection definition from JSON, with every problem, its sources and destination checked.
fn checked_connection(
    state: &AppState,
    activation: &Activation,
    workspace: &str,
    body: Value,
) -> ApiResult<ConnectionConfig> {
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
    let mut problems = tandem_config::connection_problems(&config, &source_ids, &destination_ids);
    problems.extend(tandem_config::pii_category_problems(
        &config,
        &crate::pii::declared(state, workspace),
    ));
    if !problems.is_empty() {
        return Err(invalid(
            problems
                .into_iter()
                .map(|problem| (problem.path, problem.message))
                .collect(),
        ));
    }
    Ok(config)
}

async fn patch_connection(
    State(state): State<AppState>,
    auth: Authorized<ManageDestinations>,
    Path((workspace, id)): Path<(String, String)>,
    Json(patch): Json<Value>,
) -> ApiResult<Response> {
    let activation = activation(&state, &workspace)?;
    let current = api_managed(
        activation.connections()?,
        |config| &config.id,
        "connection",
        &workspace,
        &id,
    )?;
    let (before, after) = patched(&current, &id, &patch)?;
    let config = checked_connection(&state, &activation, &workspace, after)?;
    let operation = changes::prepare(
        &state,
        &workspace,
        Kind::Connection,
        &id,
        Some(serde_json::to_value(&config).map_err(ApiError::internal)?),
    )?;
    let title = format!("update connection {id}");
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    auth.audit(
        &state,
        "connection.update",
        Some(&workspace),
        format!("connection {workspace}/{id}"),
        Some(before),
        serde_json::to_value(&config).ok(),
    )
    .await?;
    Ok(Json(connection_view(&activation, &config, ManagedBy::Api)).into_response())
}

async fn create_connection(
    State(state): State<AppState>,
    auth: Authorized<ManageDestinations>,
    Path(workspace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let activation = activation(&state, &workspace)?;
    let config = checked_connection(&state, &activation, &workspace, body)?;
    let operation =
        changes::prepare_create(&state, &workspace, Kind::Connection, &config.id, &config)?;
    let title = format!("create connection {}", config.id);
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    auth.audit(
        &state,
        "connection.create",
        Some(&workspace),
        format!("connection {workspace}/{}", config.id),
        None,
        serde_json::to_value(&config).ok(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(connection_view(&activation, &config, ManagedBy::Api)),
    )
        .into_response())
}

async fn delete_connection(
    State(state): State<AppState>,
    auth: Authorized<ManageDestinations>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let activation = activation(&state, &workspace)?;
    let config = api_managed(
        activation.connections()?,
        |config| &config.id,
        "connection",
        &workspace,
        &id,
    )?;
    let operation = changes::prepare(&state, &workspace, Kind::Connection, &id, None)?;
    let title = format!("delete connection {id}");
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    auth.audit(
        &state,
        "connection.delete",
        Some(&workspace),
        format!("connection {workspace}/{id}"),
        serde_json::to_value(&config).ok(),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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
    _auth: Authorized<ReadDeadLetters>,
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
    _auth: Authorized<ReadDeadLetters>,
    Path((workspace, connection, entry)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(dlq_view(
        &activation(&state, &workspace)?.dlq_get(&connection, &entry)?,
    )))
}

fn check_selection(selection: &DlqSelection) -> ApiResult<()> {
    if selection.all != selection.ids.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "give either `ids` or `all: true`",
        ));
    }
    Ok(())
}

async fn replay_dlq(
    State(state): State<AppState>,
    auth: Authorized<ManageDeliveries>,
    Path((workspace, connection)): Path<(String, String)>,
    Json(selection): Json<DlqSelection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_selection(&selection)?;
    let job = activation(&state, &workspace)?.dlq_replay(&connection, &selection)?;
    auth.audit(
        &state,
        "dlq.replay",
        Some(&workspace),
        format!("connection {workspace}/{connection}"),
        None,
        serde_json::to_value(&selection).ok(),
    )
    .await?;
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
    auth: Authorized<ManageDeliveries>,
    Path((workspace, connection)): Path<(String, String)>,
    Json(selection): Json<DlqSelection>,
) -> ApiResult<Json<Value>> {
    check_selection(&selection)?;
    let discarded = activation(&state, &workspace)?.dlq_discard(&connection, &selection)?;
    auth.audit(
        &state,
        "dlq.discard",
        Some(&workspace),
        format!("connection {workspace}/{connection}"),
        None,
        Some(json!({ "selection": serde_json::to_value(&selection).ok(), "discarded": discarded })),
    )
    .await?;
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
    auth: Authorized<ManageDeliveries>,
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
    auth.audit(
        &state,
        "backfill.start",
        Some(&workspace),
        format!("connection {workspace}/{connection}"),
        None,
        Some(json!({ "from": request.from, "to": request.to })),
    )
    .await?;
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

/// `POST /api/v1/workspaces/{workspace}/transformations/test`: what a transformation makes of
/// sample events (`events`) or of the workspace's most recent ones (`recent`, filtered and mapped
/// as `connection` would), before it is enabled. Nothing is sent anywhere.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformationTest {
    /// The code to try; absent: the transformation of `connection`.
    code: Option<String>,
    /// Sample events, as a source would send them.
    events: Option<Vec<Value>>,
    /// How many of the most recent events to try it on (when `events` is absent).
    recent: Option<usize>,
    /// A connection whose filters and mappings apply first (and whose code is the default).
    connection: Option<String>,
    /// The source the sample events come through (`context.sourceId`); for `recent`, only its events.
    source: Option<String>,
    /// Mappings to try instead of the connection's (an editor's unsaved ones). Without `code`
    /// (and no code on the connection) the test shows what the mappings alone make of the events.
    mappings: Option<Vec<tandem_config::MappingConfig>>,
}

/// The code a test runs when only mappings are tried: the event as the mappings left it.
const IDENTITY_TRANSFORMATION: &str = "function transform(event) { return event }";

async fn test_transformation(
    State(state): State<AppState>,
    _auth: Authorized<ManageDestinations>,
    Path(workspace): Path<String>,
    Json(request): Json<TransformationTest>,
) -> ApiResult<Json<Value>> {
    use tandem_core::limits::{
        TRANSFORM_TEST_EVENTS_MAX, TRANSFORM_TEST_RECENT_DEFAULT, TRANSFORM_TEST_SCAN_RECORDS_MAX,
    };
    let activation = activation(&state, &workspace)?;
    let log = state
        .workspaces
        .get(&workspace)
        .map(|workspace| workspace.log.clone())
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))?;
    // The connection, compiled without its transformation: its filters and mappings.
    let (shaper, connection_code) = match &request.connection {
        None => (None, None),
        Some(id) => {
            let (config, _) = activation
                .connections()?
                .into_iter()
                .find(|(config, _)| &config.id == id)
                .ok_or_else(|| ApiError::not_found(format!("connection {workspace}/{id}")))?;
            let (destination, _) = activation
                .destinations()?
                .into_iter()
                .find(|(destination, _)| destination.id == config.destination)
                .ok_or_else(|| {
                    ApiError::not_found(format!("destination {workspace}/{}", config.destination))
                })?;
            let code = config.transformation.clone();
            let mappings = request.mappings.clone().unwrap_or(config.mappings.clone());
            let plain = ConnectionConfig {
                transformation: None,
                mappings,
                ..config
            };
            let shaper = Connection::compile(&workspace, &plain, &destination, None)
                .map_err(|error| ApiError::new(ErrorCode::InvalidRequest, error))?;
            (Some(Arc::new(shaper)), code)
        }
    };
    // Mappings tried without a connection apply by themselves, in order.
    let loose_mappings: Vec<tandem_activate::connection::Mapping> =
        match (&request.connection, &request.mappings) {
            (None, Some(mappings)) => mappings
                .iter()
                .enumerate()
                .map(|(index, mapping)| {
                    tandem_activate::connection::Mapping::compile(mapping).map_err(|error| {
                        ApiError::new(
                            ErrorCode::InvalidRequest,
                            format!("mappings[{index}]: {error}"),
                        )
                    })
                })
                .collect::<ApiResult<_>>()?,
            _ => Vec::new(),
        };
    let code = request
        .code
        .or(connection_code)
        .or_else(|| {
            request
                .mappings
                .is_some()
                .then(|| IDENTITY_TRANSFORMATION.to_string())
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "give `code` or `mappings`, or a `connection` that has a transformation",
            )
        })?;
    let source = request.source.clone().unwrap_or_default();
    let samples: Vec<(String, Value)> = match (request.events, request.recent) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give either `events` or `recent`, not both",
            ))
        }
        (Some(events), None) => {
            if events.len() > TRANSFORM_TEST_EVENTS_MAX {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "{} events; at most {TRANSFORM_TEST_EVENTS_MAX} per test",
                        events.len()
                    ),
                ));
            }
            if let Some(bad) = events.iter().position(|event| !event.is_object()) {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("events[{bad}] is not a JSON object"),
                ));
            }
            events
                .into_iter()
                .map(|event| (source.clone(), event))
                .collect()
        }
        (None, recent) => {
            let wanted = recent.unwrap_or(TRANSFORM_TEST_RECENT_DEFAULT);
            if !(1..=TRANSFORM_TEST_EVENTS_MAX).contains(&wanted) {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("`recent` must be 1 ..= {TRANSFORM_TEST_EVENTS_MAX}"),
                ));
            }
            let only_source = request.source.clone();
            let shaper = shaper.clone();
            tokio::task::spawn_blocking(move || {
                recent_events(
                    log.as_ref(),
                    wanted,
                    TRANSFORM_TEST_SCAN_RECORDS_MAX,
                    |source_id, event_type, event| {
                        only_source.as_deref().is_none_or(|only| only == source_id)
                            && shaper.as_ref().is_none_or(|shaper| {
                                shaper.accepts_header(source_id, event_type).is_ok()
                                    && shaper.accepts_event(event_type, event).is_ok()
                            })
                    },
                )
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
        }
    };
    // The connection's mappings first, as delivery applies them.
    let inputs: Vec<(String, Value)> = samples
        .into_iter()
        .map(|(source, event)| {
            let event = match &shaper {
                Some(shaper) => shaper
                    .shape(&event, &source)
                    .ok()
                    .and_then(|mut shaped| shaped.pop())
                    .unwrap_or(event),
                None => {
                    let mut event = event;
                    for mapping in &loose_mappings {
                        mapping.apply(&mut event);
                    }
                    event
                }
            };
            (source, event)
        })
        .collect();
    let destination_type = shaper
        .as_ref()
        .map(|shaper| shaper.destination_type.clone());
    let results = tokio::task::spawn_blocking(move || {
        use tandem_transform::{TransformContext, TransformLimits};
        let contexts: Vec<TransformContext> = inputs
            .iter()
            .map(|(source, _)| TransformContext {
                workspace_id: workspace.clone(),
                source_id: (!source.is_empty()).then(|| source.clone()),
                connection_id: request.connection.clone(),
                destination_type: destination_type.clone(),
            })
            .collect();
        let runs: Vec<(&Value, &TransformContext)> = inputs
            .iter()
            .map(|(_, event)| event)
            .zip(contexts.iter())
            .collect();
        let run = tandem_transform::test_run_each(&code, &runs, TransformLimits::default());
        let results = run.results;
        let summary = json!({
            "events": results.len(),
            "outputs": results.iter().filter_map(|result| result.output.as_ref()).map(Vec::len).sum::<usize>(),
            "dropped": results.iter().filter(|result| result.output.as_ref().is_some_and(Vec::is_empty)).count(),
            "failed": results.iter().filter(|result| result.error.is_some()).count(),
        });
        let results: Vec<Value> = results
            .into_iter()
            .zip(inputs.iter())
            .map(|(result, (_, input))| {
                let mut view = serde_json::to_value(&result).unwrap_or_default();
                view["input"] = input.clone();
                view
            })
            .collect();
        json!({ "compile_error": run.compile_error, "summary": summary, "results": results })
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(results))
}

/// Up to `wanted` of the log's most recent events passing `keep`, oldest first, reading at most
/// `scan_max` records backwards from the end.
pub(crate) fn recent_events(
    log: &dyn tandem_log::EventLog,
    wanted: usize,
    scan_max: usize,
    keep: impl Fn(&str, tandem_core::EventType, &Value) -> bool,
) -> Result<Vec<(String, Value)>, String> {
    const WINDOW: u64 = 1_000;
    let stats = log.stats();
    let mut found: Vec<(String, Value)> = Vec::new();
    let mut end = stats.end_offset;
    let mut scanned = 0usize;
    while end > stats.start_offset && found.len() < wanted && scanned < scan_max {
        let from = end.saturating_sub(WINDOW).max(stats.start_offset);
        let records = log
            .read(from, (end - from) as usize)
            .map_err(|error| error.to_string())?;
        scanned += records.len();
        let mut window: Vec<(String, Value)> = Vec::new();
        for record in records.iter().filter(|record| record.offset < end) {
            let Ok(envelope) = tandem_core::envelope::EventEnvelope::decode(&record.payload) else {
                continue;
            };
            let Ok(event) = serde_json::from_slice::<Value>(envelope.json) else {
                continue;
            };
            if keep(envelope.source_id, envelope.event_type, &event) {
                window.push((envelope.source_id.to_string(), event));
            }
        }
        // Newest last within the window; keep the newest `wanted` overall.
        window.extend(found);
        found = window;
        if found.len() > wanted {
            found.drain(..found.len() - wanted);
        }
        if records.is_empty() {
            break;
        }
        end = from;
    }
    Ok(found)
}
