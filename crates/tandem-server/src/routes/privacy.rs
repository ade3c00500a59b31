//! Data-subject requests (`crate::privacy`).
//!
//! `POST /api/v1/workspaces/{ws}/privacy/requests` — `{"type": "access" | "erasure" |
//!       "suppression" | "rectification", "identifier": {"type": "email", "id": "…"}, "traits":
//!       {…} (rectification), "note": "…"}` → 202 with the request; it runs in the background;
//! `GET  /api/v1/workspaces/{ws}/privacy/requests?status=` — requests, newest first, with the
//!       SLA summary (open, overdue);
//! `GET  /api/v1/workspaces/{ws}/privacy/requests/{id}` — one, with its status per store and
//!       destination (the deletion report);
//! `GET  /api/v1/workspaces/{ws}/privacy/requests/{id}/export` — an access request's document;
//! `GET  /api/v1/workspaces/{ws}/privacy/suppressions` — how many identifiers are suppressed.

use crate::auth::{Authorized, ManagePrivacyRequests, ReadPrivacyRequests};
use crate::error::{ApiError, ApiResult};
use crate::privacy::{DsrKind, DsrRequest, DsrStatus, DSR_DUE_MS, DSR_IDENTIFIER_CHARS_MAX};
use crate::routes::Routes;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tandem_core::time_util::now_ms;
use tandem_core::{ids, ErrorCode};
use tandem_unify::identity::{normalize, Identity};

pub fn router() -> Routes {
    Routes::new()
        .route(
            "/api/v1/workspaces/{workspace}/privacy/requests",
            get(list).post(create),
        )
        .route(
            "/api/v1/workspaces/{workspace}/privacy/requests/{id}",
            get(show),
        )
        .route(
            "/api/v1/workspaces/{workspace}/privacy/requests/{id}/export",
            get(export),
        )
        .route(
            "/api/v1/workspaces/{workspace}/privacy/suppressions",
            get(suppressions),
        )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifierBody {
    #[serde(rename = "type")]
    kind: String,
    id: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: IdentifierBody,
    #[serde(default)]
    traits: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    note: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    auth: Authorized<ManagePrivacyRequests>,
    Path(workspace_id): Path<String>,
    Json(body): Json<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let workspace = state.workspace(&workspace_id)?;
    let kind = DsrKind::parse(&body.kind).ok_or_else(|| {
        invalid(format!(
            "type: `{}` is not one of access, erasure, suppression, rectification",
            body.kind
        ))
    })?;
    let value = tandem_unify::identity::id_text(&body.identifier.id)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| invalid("identifier.id: a non-empty string (or number)"))?;
    if value.chars().count() > DSR_IDENTIFIER_CHARS_MAX {
        return Err(invalid(format!(
            "identifier.id: at most {DSR_IDENTIFIER_CHARS_MAX} characters"
        )));
    }
    let identifier_type = body.identifier.kind.trim().to_string();
    let well_formed = !identifier_type.is_empty()
        && identifier_type.len() <= 64
        && identifier_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !well_formed {
        return Err(invalid(format!(
            "identifier.type: `{identifier_type}` is not an identifier type (user_id, anonymous_id, email, phone, device_id, advertising_id, or an external id type)"
        )));
    }
    match (&kind, &body.traits) {
        (DsrKind::Rectification, None) => {
            return Err(invalid(
                "traits: a rectification names the corrected traits",
            ))
        }
        (DsrKind::Rectification, Some(traits)) if traits.is_empty() => {
            return Err(invalid("traits: at least one trait"))
        }
        (DsrKind::Rectification, _) | (_, None) => {}
        (_, Some(_)) => return Err(invalid("traits: only for a rectification")),
    }
    let identity = Identity::new(&identifier_type, &normalize(&identifier_type, &value));
    let now = now_ms();
    let request = DsrRequest {
        id: format!("dsr_{}", ids::random_secret(12)),
        workspace_id: workspace_id.clone(),
        kind,
        status: DsrStatus::Pending,
        subject_type: identifier_type,
        subject_hash: workspace.privacy.hash(&identity),
        subject_value: Some(value),
        traits: body.traits,
        requested_by: auth.principal.name(),
        note: body.note,
        created_at_ms: now,
        due_at_ms: now + DSR_DUE_MS,
        started_at_ms: None,
        completed_at_ms: None,
        identifiers: 0,
        profiles: Vec::new(),
        steps: Vec::new(),
        error: None,
    };
    workspace
        .privacy
        .save(&request)
        .map_err(|error| ApiError::internal(format!("saving the request: {error}")))?;
    // The audit entry names the request and the identifier's type and hash, never its value.
    auth.audit(
        &state,
        "privacy.request",
        Some(&workspace_id),
        format!("privacy_request/{}", request.id),
        None,
        Some(json!({"type": request.kind, "subject_type": request.subject_type, "subject_hash": request.subject_hash, "note": request.note})),
    )
    .await?;
    tokio::spawn(crate::privacy::erase::run(
        state.clone(),
        workspace_id,
        request.id.clone(),
    ));
    Ok((StatusCode::ACCEPTED, Json(request.view())))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    status: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    _auth: Authorized<ReadPrivacyRequests>,
    Path(workspace_id): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let status = match query.status.as_deref() {
        None => None,
        Some("pending") => Some(DsrStatus::Pending),
        Some("running") => Some(DsrStatus::Running),
        Some("completed") => Some(DsrStatus::Completed),
        Some("failed") => Some(DsrStatus::Failed),
        Some(other) => {
            return Err(invalid(format!(
                "status: `{other}` is not one of pending, running, completed, failed"
            )))
        }
    };
    let all = workspace.privacy.list(None);
    let now = now_ms();
    let open = all.iter().filter(|r| r.completed_at_ms.is_none()).count();
    let overdue = all
        .iter()
        .filter(|r| r.completed_at_ms.is_none() && now > r.due_at_ms)
        .count();
    let requests: Vec<Value> = workspace
        .privacy
        .list(status)
        .iter()
        .map(DsrRequest::view)
        .collect();
    Ok(Json(json!({
        "requests": requests,
        "sla": {"open": open, "overdue": overdue, "due_days": DSR_DUE_MS / 86_400_000},
    })))
}

fn find(state: &AppState, workspace_id: &str, id: &str) -> ApiResult<DsrRequest> {
    state
        .workspace(workspace_id)?
        .privacy
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("privacy request {id}")))
}

async fn show(
    State(state): State<AppState>,
    _auth: Authorized<ReadPrivacyRequests>,
    Path((workspace_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(find(&state, &workspace_id, &id)?.view()))
}

async fn export(
    State(state): State<AppState>,
    _auth: Authorized<ManagePrivacyRequests>,
    Path((workspace_id, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let request = find(&state, &workspace_id, &id)?;
    if request.kind != DsrKind::Access {
        return Err(invalid(format!("{id} is not an access request")));
    }
    if request.status != DsrStatus::Completed {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "{id} is {}: the export is not ready",
                request.status.as_str()
            ),
        ));
    }
    let path = state.workspace(&workspace_id)?.privacy.export_path(&id);
    let bytes = tokio::fs::read(&path).await.map_err(|_| {
        ApiError::not_found(format!(
            "the export of {id} (exports are kept {} days, and deleted by an erasure of the same person)",
            crate::privacy::DSR_EXPORT_RETENTION_MS / 86_400_000
        ))
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.json\""),
            ),
        ],
        bytes,
    ))
}

async fn suppressions(
    State(state): State<AppState>,
    _auth: Authorized<ReadPrivacyRequests>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    Ok(Json(json!({
        "workspace": workspace_id,
        "suppressed_identifiers": workspace.privacy.suppressed_count(),
        "stored_as": "salted SHA-256 of type and normalized value",
    })))
}
