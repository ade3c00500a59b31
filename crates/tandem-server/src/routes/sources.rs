//! The catalog of sources: `/api/v1/workspaces`, `/api/v1/workspaces/{workspace}/sources[/{id}]`,
//! and `/api/v1/unknown-keys` (traffic with unknown or disabled write keys: shadow IT).

use crate::auth::{Authorized, ManageSources, ReadCatalog, ReadOperations};
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use tandem_core::{ids, time_util, ErrorCode};
use tandem_store::{ManagedBy, SourceActivity, SourceKey, SourceRecord};

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/workspaces", get(list_workspaces))
        .route(
            "/api/v1/workspaces/{workspace}/sources",
            get(list_sources).post(create_source),
        )
        .route(
            "/api/v1/workspaces/{workspace}/sources/{source}",
            get(get_source),
        )
        .route(
            "/api/v1/workspaces/{workspace}/sources/{source}/disable",
            post(disable_source),
        )
        .route(
            "/api/v1/workspaces/{workspace}/sources/{source}/enable",
            post(enable_source),
        )
        .route("/api/v1/workspaces/{workspace}/log", get(log_status))
        .route("/api/v1/unknown-keys", get(unknown_keys))
}

/// A source as the API shows it: the record (never the key) plus its activity.
#[derive(Serialize)]
pub(crate) struct SourceView {
    pub(crate) workspace_id: String,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) owner: String,
    pub(crate) purpose: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) data_categories: Vec<String>,
    pub(crate) enabled: bool,
    pub(crate) managed_by: ManagedBy,
    pub(crate) created_at: String,
    pub(crate) created_by: String,
    pub(crate) updated_at: String,
    pub(crate) last_seen_at: Option<String>,
    pub(crate) events_accepted: u64,
    pub(crate) events_rejected: u64,
    /// `last_seen_at` in ms since the epoch (the catalog's findings).
    #[serde(skip)]
    pub(crate) last_seen_ms: Option<i64>,
}

fn source_view(
    state: &AppState,
    record: SourceRecord,
    stored: Option<&SourceActivity>,
) -> SourceView {
    let mut activity = stored.cloned().unwrap_or_default();
    if let Some(live) = state.catalog.source_by_id(&record.workspace_id, &record.id) {
        activity.events_accepted += live.accepted.load(Ordering::Relaxed);
        activity.events_rejected += live.rejected.load(Ordering::Relaxed);
        let last = live.last_seen_ms.load(Ordering::Relaxed);
        if last > 0 {
            activity.last_seen_ms = Some(activity.last_seen_ms.unwrap_or(0).max(last));
        }
    }
    SourceView {
        workspace_id: record.workspace_id,
        id: record.id,
        name: record.name,
        owner: record.owner,
        purpose: record.purpose,
        data_categories: record.data_categories,
        enabled: record.enabled,
        managed_by: record.managed_by,
        created_at: time_util::format_iso8601_ms(record.created_at_ms),
        created_by: record.created_by,
        updated_at: time_util::format_iso8601_ms(record.updated_at_ms),
        last_seen_at: activity.last_seen_ms.map(time_util::format_iso8601_ms),
        last_seen_ms: activity.last_seen_ms,
        events_accepted: activity.events_accepted,
        events_rejected: activity.events_rejected,
    }
}

pub(crate) fn workspace_sources(
    state: &AppState,
    workspace_id: &str,
) -> ApiResult<Vec<SourceView>> {
    let store = state.catalog.store();
    let activity = store.activity()?;
    let find = |key: &SourceKey| activity.iter().find(|(k, _)| k == key).map(|(_, a)| a);
    Ok(store
        .sources()?
        .into_iter()
        .filter(|source| source.workspace_id == workspace_id)
        .map(|source| {
            let stored = find(&source.key());
            source_view(state, source, stored)
        })
        .collect())
}

fn require_workspace(state: &AppState, workspace: &str) -> ApiResult<()> {
    if state.workspaces.contains_key(workspace) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("workspace {workspace}")))
    }
}

async fn list_workspaces(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
) -> ApiResult<Json<Value>> {
    let workspaces: Vec<Value> = state
        .workspaces
        .values()
        .map(|workspace| {
            let stats = workspace.log.stats();
            json!({"id": workspace.id, "name": workspace.name, "log": {"end_offset": stats.end_offset, "bytes": stats.bytes}})
        })
        .collect();
    Ok(Json(
        json!({"organization": state.config.organization.name, "workspaces": workspaces}),
    ))
}

async fn list_sources(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    require_workspace(&state, &workspace)?;
    Ok(Json(
        json!({"sources": workspace_sources(&state, &workspace)?}),
    ))
}

async fn get_source(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
    Path((workspace, source)): Path<(String, String)>,
) -> ApiResult<Json<SourceView>> {
    require_workspace(&state, &workspace)?;
    workspace_sources(&state, &workspace)?
        .into_iter()
        .find(|view| view.id == source)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("source {workspace}/{source}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSource {
    id: Option<String>,
    name: String,
    owner: String,
    purpose: Option<String>,
    #[serde(default)]
    data_categories: Vec<String>,
}

/// Longest source id: it is stored in every log record's envelope.
const SOURCE_ID_CHARS_MAX: usize = tandem_core::envelope::SOURCE_ID_BYTES_MAX;

fn valid_source_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= SOURCE_ID_CHARS_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn slug(name: &str) -> String {
    let mut slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    slug = slug
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    slug.truncate(SOURCE_ID_CHARS_MAX - 7);
    if slug.is_empty() {
        slug.push_str("source");
    }
    slug
}

async fn create_source(
    State(state): State<AppState>,
    auth: Authorized<ManageSources>,
    Path(workspace): Path<String>,
    body: Result<Json<NewSource>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_workspace(&state, &workspace)?;
    let Json(new) =
        body.map_err(|rejection| ApiError::new(ErrorCode::InvalidRequest, rejection.body_text()))?;
    if new.name.trim().is_empty() || new.owner.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "`name` and `owner` are required: every source has an owner",
        ));
    }
    let mut problems = Vec::new();
    tandem_config::check_data_categories(&new.data_categories, "data_categories", &mut problems);
    if let Some(problem) = problems.first() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            problem.to_string(),
        ));
    }
    let id = match new.id {
        Some(id) if tandem_core::envelope::BUILT_IN_SOURCE_IDS.contains(&id.as_str()) => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("`{id}` is a built-in source (audience events, privacy records)"),
            ))
        }
        Some(id) if valid_source_id(&id) => id,
        Some(id) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("source id `{id}` must be 1..=64 of [a-z0-9_-]"),
            ))
        }
        None => format!(
            "{}-{}",
            slug(&new.name),
            &ids::random_secret(4)
                .to_lowercase()
                .replace(['-', '_'], "x")[..6]
        ),
    };
    let write_key = ids::random_secret(24);
    let now = time_util::now_ms();
    let record = SourceRecord {
        workspace_id: workspace.clone(),
        id,
        name: new.name.trim().to_string(),
        owner: new.owner.trim().to_string(),
        purpose: new.purpose,
        data_categories: new.data_categories,
        write_key_hash: ids::write_key_hash(&write_key),
        enabled: true,
        managed_by: ManagedBy::Api,
        created_at_ms: now,
        created_by: auth.principal.name(),
        updated_at_ms: now,
    };
    // Versioned like every change; creating a source needs no approval (it sends nowhere).
    let operation = crate::changes::prepare(
        &state,
        &workspace,
        crate::changes::Kind::Source,
        &record.id,
        Some(
            serde_json::to_value(crate::changes::source_document(&record))
                .map_err(ApiError::internal)?,
        ),
    )?;
    if operation.action != crate::changes::Action::Create {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("source {} already exists", record.id),
        ));
    }
    let provenance = tandem_activate::history::Provenance {
        by: record.created_by.clone(),
        change_request: None,
        at_ms: now,
    };
    crate::changes::apply(&state, &workspace, &[operation], &provenance).await?;
    auth.audit(
        &state,
        "source.create",
        Some(&workspace),
        format!("source {workspace}/{}", record.id),
        None,
        serde_json::to_value(&record).ok(),
    )
    .await?;
    tracing::info!(workspace = %record.workspace_id, source = %record.id, owner = %record.owner, "source created");
    let view = source_view(&state, record, None);
    let mut body = serde_json::to_value(view).map_err(ApiError::internal)?;
    body["write_key"] = Value::String(write_key);
    body["write_key_note"] = Value::String("shown once: tandem keeps only its hash".into());
    Ok((StatusCode::CREATED, Json(body)))
}

/// Enabling or disabling a source is a change of its definition: versioned, and a change
/// request when the workspace's `change_approval` policy covers the caller (202).
async fn set_enabled<P: crate::auth::RequiredPermission>(
    auth: &Authorized<P>,
    state: &AppState,
    workspace: &str,
    source: &str,
    enabled: bool,
) -> ApiResult<Response> {
    require_workspace(state, workspace)?;
    let store = state.catalog.store();
    let record = store
        .source(workspace, source)?
        .ok_or_else(|| ApiError::not_found(format!("source {workspace}/{source}")))?;
    if record.managed_by == ManagedBy::Config {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this source is declared in the config file: change it there (configuration as code)",
        ));
    }
    let document = crate::changes::source_document(&SourceRecord {
        enabled,
        ..record.clone()
    });
    let operation = crate::changes::prepare(
        state,
        workspace,
        crate::changes::Kind::Source,
        source,
        Some(serde_json::to_value(&document).map_err(ApiError::internal)?),
    )?;
    let verb = if enabled { "enable" } else { "disable" };
    let title = format!("{verb} source {source}");
    if let Some(accepted) =
        crate::changes::submit(state, auth, workspace, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    let updated = store
        .source(workspace, source)?
        .ok_or_else(|| ApiError::not_found(format!("source {workspace}/{source}")))?;
    auth.audit(
        state,
        if enabled {
            "source.enable"
        } else {
            "source.disable"
        },
        Some(workspace),
        format!("source {workspace}/{source}"),
        serde_json::to_value(&record).ok(),
        serde_json::to_value(&updated).ok(),
    )
    .await?;
    tracing::info!(workspace, source, enabled, "source enabled state changed");
    Ok(Json(source_view(state, updated, None)).into_response())
}

async fn disable_source(
    State(state): State<AppState>,
    auth: Authorized<ManageSources>,
    Path((workspace, source)): Path<(String, String)>,
) -> ApiResult<Response> {
    set_enabled(&auth, &state, &workspace, &source, false).await
}

async fn enable_source(
    State(state): State<AppState>,
    auth: Authorized<ManageSources>,
    Path((workspace, source)): Path<(String, String)>,
) -> ApiResult<Response> {
    set_enabled(&auth, &state, &workspace, &source, true).await
}

async fn unknown_keys(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
) -> ApiResult<Json<Value>> {
    state.catalog.flush()?;
    let traffic = state.catalog.store().unknown_traffic()?;
    let rows: Vec<Value> = traffic
        .into_iter()
        .map(|t| {
            json!({
                "key_fingerprint": t.key_fingerprint, "reason": t.reason, "source": t.source, "attempts": t.attempts,
                "first_seen_at": time_util::format_iso8601_ms(t.first_seen_ms), "last_seen_at": time_util::format_iso8601_ms(t.last_seen_ms),
                "last_ip": t.last_ip, "last_user_agent": t.last_user_agent, "last_origin": t.last_origin,
            })
        })
        .collect();
    Ok(Json(json!({"unknown_keys": rows})))
}

async fn log_status(
    State(state): State<AppState>,
    _auth: Authorized<ReadOperations>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    let ws = state
        .workspaces
        .get(&workspace)
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))?;
    let stats = ws.log.stats();
    let consumers: Vec<Value> = ws
        .log
        .consumers()
        .into_iter()
        .map(|(name, offset)| json!({"name": name, "committed_offset": offset, "lag": stats.end_offset.saturating_sub(offset)}))
        .collect();
    Ok(Json(json!({
        "workspace": workspace, "start_offset": stats.start_offset, "end_offset": stats.end_offset,
        "bytes": stats.bytes, "segments": stats.segments, "queued_bytes": stats.queued_bytes, "consumers": consumers,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_valid_ids() {
        assert_eq!(slug("My Web Site!"), "my-web-site");
        assert_eq!(slug("---"), "source");
        assert!(valid_source_id(&format!(
            "{}-abcdef",
            slug(&"x".repeat(200))
        )));
    }
}
