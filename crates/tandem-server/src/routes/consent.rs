//! Consent: the workspace's categories and policy, a profile's consent history (the proof of
//! each choice: time, source, messageId), recording a choice through the API, and the
//! explanation of a routing decision ("why was event X not sent to destination Y?").
//!
//! `GET  /api/v1/workspaces/{ws}/consent` — categories, `consent_missing`, every connection's
//!       categories;
//! `GET  /api/v1/workspaces/{ws}/profiles/{id}/consent` — latest preferences and history;
//! `PUT  /api/v1/workspaces/{ws}/profiles/{id}/consent` — `{"categoryPreferences": {…}}`
//!       appended to the log as a `Consent Preference Updated` event of the built-in source
//!       `tandem-privacy` (so the profile, delivery and the archive learn it the same way as an
//!       SDK's);
//! `POST /api/v1/workspaces/{ws}/consent/explain` — `{"connection", "event" | "message_id"}`:
//!       each check delivery makes, in its order, and the first that stops the event.

use crate::auth::{Authorized, ManageConsent, ReadCatalog, ReadProfiles};
use crate::error::{ApiError, ApiResult};
use crate::routes::profiles::find_profile;
use crate::routes::Routes;
use crate::state::{AppState, Workspace};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tandem_activate::connection::{Connection, Skip};
use tandem_core::envelope::{dedup_key, EventEnvelope, EventType, PRIVACY_SOURCE_ID};
use tandem_core::limits::{CONSENT_EXPLAIN_SCAN_RECORDS_MAX, CONSENT_HISTORY_MAX};
use tandem_core::time_util::format_iso8601_ms;
use tandem_core::{ids, time_util, ErrorCode};
use tandem_unify::identity::{ANONYMOUS_ID, USER_ID};
use tandem_unify::model::{format_profile_id, ProfileRow};
use tandem_unify::query;

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/workspaces/{workspace}/consent", get(overview))
        .route(
            "/api/v1/workspaces/{workspace}/profiles/{id}/consent",
            get(history).put(record),
        )
        .route(
            "/api/v1/workspaces/{workspace}/consent/explain",
            post(explain),
        )
}

async fn overview(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let policy = state.policies.consent(&workspace_id);
    let connections = workspace
        .activation
        .connections()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(connection, _)| {
            json!({
                "connection": connection.id,
                "destination": connection.destination,
                "consent_categories": connection.consent_categories,
                "enforced": tandem_consent::needs_consent(&connection.consent_categories),
            })
        })
        .collect::<Vec<_>>();
    Ok(Json(json!({
        "workspace": workspace.id,
        "categories": policy.categories,
        "missing": policy.missing,
        "connections": connections,
    })))
}

async fn history(
    State(state): State<AppState>,
    _auth: Authorized<ReadProfiles>,
    Path((workspace_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let profile = find_profile(workspace, &id)?;
    Ok(Json(consent_json(workspace, &profile)?))
}

/// A profile's consent as the API shows it (also part of the 360° view).
pub fn consent_json(workspace: &Workspace, profile: &ProfileRow) -> ApiResult<Value> {
    let rows = workspace
        .unify
        .store()
        .read(|kv| query::consent_history(kv, profile.id, CONSENT_HISTORY_MAX))
        .map_err(ApiError::internal)?;
    Ok(json!({
        "profile": format_profile_id(profile.id),
        "latest": rows.first().map(|row| &row.preferences),
        "history": rows.iter().map(|row| json!({
            "preferences": row.preferences,
            "at": format_iso8601_ms(row.provenance.time_ms),
            "source_id": row.provenance.source,
            "message_id": row.provenance.message_id,
            "offset": row.provenance.offset,
            "event_type": row.event_type,
            "event": row.event,
        })).collect::<Vec<_>>(),
    }))
}

/// The userId and anonymousId an event tandem writes on a person's behalf carries (the first of
/// each the profile holds).
pub(crate) fn event_ids(profile: &ProfileRow) -> (Option<String>, Option<String>) {
    let find = |kind: &str| {
        profile
            .identities
            .iter()
            .find(|(identity, _)| identity.kind == kind)
            .map(|(identity, _)| identity.value.clone())
    };
    (find(USER_ID), find(ANONYMOUS_ID))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordBody {
    #[serde(rename = "categoryPreferences")]
    category_preferences: serde_json::Map<String, Value>,
    /// Why (kept in the audit log), e.g. "withdrawn by phone, ticket 4411".
    #[serde(default)]
    note: Option<String>,
}

async fn record(
    State(state): State<AppState>,
    auth: Authorized<ManageConsent>,
    Path((workspace_id, id)): Path<(String, String)>,
    Json(body): Json<RecordBody>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let policy = state.policies.consent(&workspace_id);
    let mut preferences = serde_json::Map::new();
    for (category, value) in &body.category_preferences {
        let Some(granted) = value.as_bool() else {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("categoryPreferences.{category}: expected true or false"),
            ));
        };
        if !policy.categories.contains(category) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "categoryPreferences.{category}: no such consent category in this workspace ({})",
                    policy.categories.join(", ")
                ),
            ));
        }
        preferences.insert(category.clone(), Value::Bool(granted));
    }
    let profile = find_profile(workspace, &id)?;
    // The event names the person by the identifiers delivery and unify look up first.
    let (user_id, anonymous_id) = event_ids(&profile);
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the profile has no userId or anonymousId to record consent under",
        ));
    }
    let now = time_util::now_ms();
    let message_id = format!("consent-{}", ids::random_secret(12));
    let mut event = json!({
        "type": "track",
        "event": tandem_consent::CONSENT_EVENT,
        "messageId": message_id,
        "timestamp": format_iso8601_ms(now),
        "receivedAt": format_iso8601_ms(now),
        "properties": {"recordedBy": auth.principal.name()},
        "context": {"consent": {"categoryPreferences": preferences}},
    });
    if let Some(user_id) = &user_id {
        event["userId"] = json!(user_id);
    }
    if let Some(anonymous_id) = &anonymous_id {
        event["anonymousId"] = json!(anonymous_id);
    }
    let enriched = tandem_collect::Enriched {
        event_type: EventType::Track,
        dedup_key: dedup_key(PRIVACY_SOURCE_ID, &message_id),
        message_id: message_id.clone(),
        event_time_ms: now,
        user_id,
        anonymous_id,
        json: serde_json::to_vec(&event).expect("JSON values serialize"),
    };
    crate::routes::collect::append_enriched(
        &state,
        workspace,
        PRIVACY_SOURCE_ID,
        vec![enriched],
        now,
    )
    .await?;
    auth.audit(
        &state,
        "consent.record",
        Some(&workspace_id),
        format!("profile/{}", format_profile_id(profile.id)),
        None,
        Some(json!({"categoryPreferences": preferences, "message_id": message_id, "note": body.note})),
    )
    .await?;
    Ok(Json(json!({
        "profile": format_profile_id(profile.id),
        "message_id": message_id,
        "categoryPreferences": preferences,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    connection: String,
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    message_id: Option<String>,
}

async fn explain(
    State(state): State<AppState>,
    _auth: Authorized<ReadProfiles>,
    Path(workspace_id): Path<String>,
    Json(body): Json<ExplainBody>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let (config, _) = workspace
        .activation
        .connections()
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|(connection, _)| connection.id == body.connection)
        .ok_or_else(|| ApiError::not_found(format!("connection {}", body.connection)))?;
    let (destination, _) = workspace
        .activation
        .destinations()
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|(destination, _)| destination.id == config.destination)
        .ok_or_else(|| ApiError::not_found(format!("destination {}", config.destination)))?;
    let connection = Connection::compile(&workspace.id, &config, &destination, None)
        .map_err(|error| ApiError::new(ErrorCode::InvalidRequest, error))?;
    let (event_type, source_id, event, offset) = match (body.event, body.message_id) {
        (Some(event), None) => {
            let event_type = event
                .get("type")
                .and_then(Value::as_str)
                .and_then(EventType::parse)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        "event.type: one of track, identify, page, screen, group, alias",
                    )
                })?;
            let source = event
                .get("context")
                .and_then(|c| c.get("sourceId"))
                .and_then(Value::as_str)
                .map(str::to_string);
            (event_type, source, event, None)
        }
        (None, Some(message_id)) => {
            let found = find_by_message_id(workspace, &message_id).await?;
            let (offset, event_type, source, event) = found.ok_or_else(|| {
                ApiError::not_found(format!(
                    "messageId {message_id} in the last {CONSENT_EXPLAIN_SCAN_RECORDS_MAX} records of the log"
                ))
            })?;
            (event_type, Some(source), event, Some(offset))
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give either `event` (an event as stored) or `message_id` (found in the log)",
            ))
        }
    };
    let oracle = workspace.activation.hooks.consent.clone();
    let decision = connection.consent_explain(&event, oracle.as_ref());
    let mut checks = Vec::new();
    let mut stopped_by: Option<&str> = None;
    let mut check = |name: &'static str, passed: bool, detail: String| {
        if !passed && stopped_by.is_none() {
            stopped_by = Some(name);
        }
        checks.push(json!({"check": name, "passed": passed, "detail": detail}));
    };
    check(
        "enabled",
        connection.enabled,
        if connection.enabled {
            "the connection and its destination are enabled".into()
        } else {
            "the connection or its destination is disabled".into()
        },
    );
    let header = match &source_id {
        Some(source) => connection.accepts_header(source, event_type),
        None => connection
            .accepts_header("*", event_type)
            .or_else(|skip| match skip {
                Skip::Source => Ok(()),
                other => Err(other),
            }),
    };
    check(
        "source_and_type",
        header.is_ok(),
        match header {
            Ok(()) => "the connection takes this source and call type".into(),
            Err(skip) => format!("filtered: {skip:?}"),
        },
    );
    let fields = connection.accepts_event(event_type, &event);
    check(
        "event_filters",
        fields.is_ok(),
        match fields {
            Ok(()) => "track names and the integrations object let it through".into(),
            Err(skip) => format!("filtered: {skip:?}"),
        },
    );
    check("consent", decision.allowed, decision.reason.clone());
    Ok(Json(json!({
        "connection": connection.id,
        "destination": connection.destination_id,
        "message_id": event.get("messageId"),
        "offset": offset,
        "sent": stopped_by.is_none(),
        "stopped_by": stopped_by,
        "checks": checks,
        "consent": decision,
    })))
}

/// The most recent record of the log carrying `message_id`, among the last
/// [`CONSENT_EXPLAIN_SCAN_RECORDS_MAX`].
async fn find_by_message_id(
    workspace: &Workspace,
    message_id: &str,
) -> ApiResult<Option<(u64, EventType, String, Value)>> {
    let log = workspace.log.clone();
    let message_id = message_id.to_string();
    // The JSON string as it appears in stored bytes: a cheap filter before parsing.
    let needle = serde_json::to_string(&message_id).expect("strings serialize");
    let finder = memchr::memmem::Finder::new(needle.as_bytes()).into_owned();
    tokio::task::spawn_blocking(move || {
        let end = log.stats().end_offset;
        let mut from = end.saturating_sub(CONSENT_EXPLAIN_SCAN_RECORDS_MAX as u64);
        let mut found = None;
        while from < end {
            let records = log.read(from, 4096).map_err(ApiError::internal)?;
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for record in &records {
                let Ok(envelope) = EventEnvelope::decode(&record.payload) else {
                    continue;
                };
                if finder.find(envelope.json).is_none() {
                    continue;
                }
                let Ok(event) = serde_json::from_slice::<Value>(envelope.json) else {
                    continue;
                };
                if event.get("messageId").and_then(Value::as_str) == Some(message_id.as_str()) {
                    found = Some((
                        record.offset,
                        envelope.event_type,
                        envelope.source_id.to_string(),
                        event,
                    ));
                }
            }
        }
        Ok(found)
    })
    .await
    .map_err(ApiError::internal)?
}
