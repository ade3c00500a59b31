//! Change requests, version history, rollback, and configuration as code:
//! `/api/v1/workspaces/{workspace}/change-requests[/{id}[/comments|/approve|/reject|/withdraw]]`,
//! `/api/v1/workspaces/{workspace}/config/{history,rollback,export,import}`.
//!
//! Approving a change request applies it at once (there is no separate apply step): the
//! approver sees the dry run, approves, and the operations are re-validated and applied in one
//! transaction; a version that moved since the request was made answers 409 and marks the
//! request `failed` (propose it again against the current state). Nobody approves their own.

use crate::auth::{
    ApproveChanges, Authorized, ExportConfig, ProposeChanges, ReadChanges, RequiredPermission,
};
use crate::changes::{self, dry_run, ChangeRequest, Comment, Kind, Operation, Status};
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tandem_activate::history::Provenance;
use tandem_activate::runtime::ManagedBy;
use tandem_config::{Config, SourceConfig};
use tandem_core::limits::{
    CHANGE_REQUEST_COMMENTS_MAX, CHANGE_REQUEST_COMMENT_BYTES_MAX, CONFIG_IMPORT_BYTES_MAX,
};
use tandem_core::{ids, time_util, ErrorCode};

pub fn router() -> Routes {
    Routes::new()
        .route(
            "/api/v1/workspaces/{workspace}/change-requests",
            get(list_requests).post(create_request),
        )
        .route(
            "/api/v1/workspaces/{workspace}/change-requests/{id}",
            get(get_request),
        )
        .route(
            "/api/v1/workspaces/{workspace}/change-requests/{id}/comments",
            post(comment),
        )
        .route(
            "/api/v1/workspaces/{workspace}/change-requests/{id}/approve",
            post(approve),
        )
        .route(
            "/api/v1/workspaces/{workspace}/change-requests/{id}/reject",
            post(reject),
        )
        .route(
            "/api/v1/workspaces/{workspace}/change-requests/{id}/withdraw",
            post(withdraw),
        )
        .route(
            "/api/v1/workspaces/{workspace}/config/history",
            get(history),
        )
        .route(
            "/api/v1/workspaces/{workspace}/config/rollback",
            post(rollback),
        )
        .route("/api/v1/workspaces/{workspace}/config/export", get(export))
        .route("/api/v1/workspaces/{workspace}/config/import", post(import))
}

/// Change requests decide one at a time: two approvals of one request cannot both apply it.
static DECISIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn json_body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> ApiResult<T> {
    body.map(|Json(value)| value)
        .map_err(|rejection| ApiError::new(ErrorCode::InvalidRequest, rejection.body_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<Status>,
}

async fn list_requests(
    State(state): State<AppState>,
    _auth: Authorized<ReadChanges>,
    Path(workspace): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let activation = changes::activation(&state, &workspace)?;
    let mut requests = Vec::new();
    for json in activation
        .dlq
        .change_requests()
        .map_err(ApiError::internal)?
    {
        let request: ChangeRequest = serde_json::from_value(json).map_err(ApiError::internal)?;
        if query.status.is_none_or(|status| status == request.status) {
            requests.push(request.view());
        }
    }
    Ok(Json(json!({ "change_requests": requests })))
}

async fn get_request(
    State(state): State<AppState>,
    _auth: Authorized<ReadChanges>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let activation = changes::activation(&state, &workspace)?;
    let request = ChangeRequest::load(&activation, &id)?;
    let mut view = request.view();
    // The dry run is of the live log and config: only meaningful before the request is decided.
    if matches!(request.status, Status::Open | Status::Approved) {
        view["impact"] = json!(dry_run::impact(&state, &workspace, &request.operations).await?);
    }
    Ok(Json(view))
}

/// One proposed operation: `value` (the whole object) for create or update, `patch` (a JSON
/// merge patch of the current object) for update, neither for delete.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposedOperation {
    kind: String,
    id: String,
    action: changes::Action,
    value: Option<Value>,
    patch: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRequest {
    title: Option<String>,
    operations: Vec<ProposedOperation>,
}

fn parse_kind(kind: &str) -> ApiResult<Kind> {
    Kind::parse(kind).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "unknown kind `{kind}`: {}",
                Kind::ALL.map(Kind::as_str).join(", ")
            ),
        )
    })
}

/// `POST .../change-requests`: proposes operations for review, whatever the policy says.
async fn create_request(
    State(state): State<AppState>,
    auth: Authorized<ProposeChanges>,
    Path(workspace): Path<String>,
    body: Result<Json<NewRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    changes::activation(&state, &workspace)?;
    let request = json_body(body)?;
    let mut operations = Vec::with_capacity(request.operations.len());
    for proposed in request.operations {
        let kind = parse_kind(&proposed.kind)?;
        let after = match (proposed.action, proposed.value, proposed.patch) {
            (changes::Action::Delete, None, None) => None,
            (changes::Action::Create | changes::Action::Update, Some(value), None) => Some(value),
            (changes::Action::Update, None, Some(patch)) => {
                let (mut current, _) = changes::current(&state, &workspace, kind, &proposed.id)?
                    .ok_or_else(|| ApiError::not_found(format!("{} {}", kind.as_str(), proposed.id)))?;
                crate::routes::activate::merge_patch(&mut current, &patch);
                Some(current)
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "{} {}: give `value` for create, `value` or `patch` for update, nothing for delete",
                        proposed.kind, proposed.id
                    ),
                ))
            }
        };
        let operation = changes::prepare(&state, &workspace, kind, &proposed.id, after)?;
        if operation.action != proposed.action {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{} {}: it is a {:?}, not a {:?}, against the live configuration",
                    proposed.kind, proposed.id, operation.action, proposed.action
                ),
            ));
        }
        operations.push(operation);
    }
    let title = request
        .title
        .unwrap_or_else(|| format!("{} operation(s)", operations.len()));
    let created = changes::propose(&state, &auth, &workspace, title, operations).await?;
    Ok((StatusCode::CREATED, Json(created.view())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    text: String,
}

async fn comment(
    State(state): State<AppState>,
    auth: Authorized<ProposeChanges>,
    Path((workspace, id)): Path<(String, String)>,
    body: Result<Json<CommentBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let activation = changes::activation(&state, &workspace)?;
    let body = json_body(body)?;
    if body.text.trim().is_empty() || body.text.len() > CHANGE_REQUEST_COMMENT_BYTES_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("`text` must be 1 ..= {CHANGE_REQUEST_COMMENT_BYTES_MAX} bytes"),
        ));
    }
    let _decisions = DECISIONS.lock().await;
    let mut request = ChangeRequest::load(&activation, &id)?;
    if request.comments.len() >= CHANGE_REQUEST_COMMENTS_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("change request {id} has {CHANGE_REQUEST_COMMENTS_MAX} comments already"),
        ));
    }
    let comment = Comment {
        by: auth.principal.name(),
        at_ms: time_util::now_ms(),
        text: body.text,
    };
    request.comments.push(comment.clone());
    request.updated_at_ms = comment.at_ms;
    request.save(&activation)?;
    auth.audit(
        &state,
        "change_request.comment",
        Some(&workspace),
        format!("change_request {workspace}/{id}"),
        None,
        serde_json::to_value(&comment).ok(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(request.view())))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Decision {
    comment: Option<String>,
}

/// Loads `id` for a decision: it must be open (or approved, to retry an interrupted apply).
fn decidable(
    activation: &tandem_activate::runtime::Activation,
    id: &str,
    retry_approved: bool,
) -> ApiResult<ChangeRequest> {
    let request = ChangeRequest::load(activation, id)?;
    let decidable =
        request.status == Status::Open || (retry_approved && request.status == Status::Approved);
    if !decidable {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "change request {id} is {:?}: nothing to decide",
                request.status
            )
            .to_lowercase(),
        ));
    }
    Ok(request)
}

fn add_comment(request: &mut ChangeRequest, by: String, comment: Option<String>) {
    if let Some(text) = comment.filter(|text| !text.trim().is_empty()) {
        request.comments.push(Comment {
            by,
            at_ms: time_util::now_ms(),
            text: text
                .chars()
                .take(CHANGE_REQUEST_COMMENT_BYTES_MAX)
                .collect(),
        });
    }
}

/// `POST .../{id}/approve`: approves and applies, atomically (see the module doc).
async fn approve(
    State(state): State<AppState>,
    auth: Authorized<ApproveChanges>,
    Path((workspace, id)): Path<(String, String)>,
    body: Option<Json<Decision>>,
) -> ApiResult<Json<Value>> {
    let activation = changes::activation(&state, &workspace)?;
    let _decisions = DECISIONS.lock().await;
    let mut request = decidable(&activation, &id, true)?;
    if request.proposed_by == auth.principal.name() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} proposed change request {id} and cannot approve it: another role with ApproveChanges must",
                request.proposed_by
            ),
        )
        .with_details(json!({"permission": "ApproveChanges", "proposed_by": request.proposed_by})));
    }
    let before = request.view();
    let now = time_util::now_ms();
    request.status = Status::Approved;
    request.decided_by = Some(auth.principal.name());
    request.decided_at_ms = Some(now);
    request.updated_at_ms = now;
    add_comment(
        &mut request,
        auth.principal.name(),
        body.and_then(|Json(d)| d.comment),
    );
    request.save(&activation)?;
    auth.audit(
        &state,
        "change_request.approve",
        Some(&workspace),
        format!("change_request {workspace}/{id}"),
        Some(before),
        Some(request.view()),
    )
    .await?;
    let applied = apply_request(&state, &auth, &workspace, &mut request).await;
    applied.map(|()| Json(request.view()))
}

/// Applies an approved request: `applied` with its versions, or `failed` with the error (which
/// is also the answer: 409 for a conflict, 400 when no longer valid). Each step is audited.
async fn apply_request<P: RequiredPermission>(
    state: &AppState,
    auth: &Authorized<P>,
    workspace: &str,
    request: &mut ChangeRequest,
) -> ApiResult<()> {
    let activation = changes::activation(state, workspace)?;
    let provenance = Provenance {
        by: auth.principal.name(),
        change_request: Some(request.id.clone()),
        at_ms: time_util::now_ms(),
    };
    let resource = format!("change_request {workspace}/{}", request.id);
    match changes::apply(state, workspace, &request.operations, &provenance).await {
        Ok(versions) => {
            request.status = Status::Applied;
            request.error = None;
            request.versions = versions
                .iter()
                .map(|v| json!({"kind": v.kind, "id": v.id, "version": v.version}))
                .collect();
            request.updated_at_ms = time_util::now_ms();
            request.save(&activation)?;
            for operation in &request.operations {
                auth.audit(
                    state,
                    &format!("{}.{:?}", operation.kind.as_str(), operation.action).to_lowercase(),
                    Some(workspace),
                    format!(
                        "{} {workspace}/{} (change request {})",
                        operation.kind.as_str(),
                        operation.id,
                        request.id
                    ),
                    operation
                        .before
                        .as_ref()
                        .map(|before| changes::redacted(operation.kind, Some(before))),
                    operation
                        .after
                        .as_ref()
                        .map(|after| changes::redacted(operation.kind, Some(after))),
                )
                .await?;
            }
            auth.audit(
                state,
                "change_request.apply",
                Some(workspace),
                resource,
                None,
                Some(request.view()),
            )
            .await?;
            Ok(())
        }
        Err(error) => {
            request.status = Status::Failed;
            request.error = Some(error.message.clone());
            request.updated_at_ms = time_util::now_ms();
            request.save(&activation)?;
            auth.audit(
                state,
                "change_request.fail",
                Some(workspace),
                resource,
                None,
                Some(request.view()),
            )
            .await?;
            Err(error)
        }
    }
}

async fn reject(
    State(state): State<AppState>,
    auth: Authorized<ApproveChanges>,
    Path((workspace, id)): Path<(String, String)>,
    body: Option<Json<Decision>>,
) -> ApiResult<Json<Value>> {
    decide(
        &state,
        &auth,
        &workspace,
        &id,
        Status::Rejected,
        body.and_then(|Json(d)| d.comment),
    )
    .await
}

/// `POST .../{id}/withdraw`: the proposer takes back an open request.
async fn withdraw(
    State(state): State<AppState>,
    auth: Authorized<ProposeChanges>,
    Path((workspace, id)): Path<(String, String)>,
    body: Option<Json<Decision>>,
) -> ApiResult<Json<Value>> {
    let activation = changes::activation(&state, &workspace)?;
    let request = ChangeRequest::load(&activation, &id)?;
    if request.proposed_by != auth.principal.name() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "only its proposer ({}) withdraws change request {id}; reject it instead",
                request.proposed_by
            ),
        ));
    }
    decide(
        &state,
        &auth,
        &workspace,
        &id,
        Status::Withdrawn,
        body.and_then(|Json(d)| d.comment),
    )
    .await
}

/// Closes an open request as rejected or withdrawn; audited.
async fn decide<P: RequiredPermission>(
    state: &AppState,
    auth: &Authorized<P>,
    workspace: &str,
    id: &str,
    status: Status,
    comment: Option<String>,
) -> ApiResult<Json<Value>> {
    let activation = changes::activation(state, workspace)?;
    let _decisions = DECISIONS.lock().await;
    let mut request = decidable(&activation, id, false)?;
    let before = request.view();
    let now = time_util::now_ms();
    request.status = status;
    request.decided_by = Some(auth.principal.name());
    request.decided_at_ms = Some(now);
    request.updated_at_ms = now;
    add_comment(&mut request, auth.principal.name(), comment);
    request.save(&activation)?;
    let action = format!("change_request.{status:?}").to_lowercase();
    auth.audit(
        state,
        &action,
        Some(workspace),
        format!("change_request {workspace}/{id}"),
        Some(before),
        Some(request.view()),
    )
    .await?;
    Ok(Json(request.view()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    kind: Option<String>,
    id: Option<String>,
}

/// `GET .../config/history?kind=&id=`: the versions, oldest first per object.
async fn history(
    State(state): State<AppState>,
    _auth: Authorized<ReadChanges>,
    Path(workspace): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    let activation = changes::activation(&state, &workspace)?;
    let kind = query.kind.as_deref().map(parse_kind).transpose()?;
    let versions = activation
        .dlq
        .versions(kind.map(Kind::as_str), query.id.as_deref())
        .map_err(ApiError::internal)?;
    let views: Vec<Value> = versions
        .iter()
        .map(|version| {
            let kind = Kind::parse(&version.kind).unwrap_or(Kind::Source);
            json!({
                "kind": version.kind, "id": version.id, "version": version.version,
                "at": time_util::format_iso8601_ms(version.at_ms), "by": version.by,
                "change_request": version.change_request, "reason": version.reason,
                "changes": crate::changes::diff::changed_paths(version.before.as_ref(), version.after.as_ref()),
                "before": changes::redacted(kind, version.before.as_ref()),
                "after": changes::redacted(kind, version.after.as_ref()),
            })
        })
        .collect();
    Ok(Json(json!({ "versions": views })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    kind: String,
    id: String,
    version: u64,
}

/// `POST .../config/rollback`: makes the object what version `version` made it (deleting it if
/// that version deleted it). A change like any other: versioned, and a change request (202)
/// when the caller's changes need approval.
async fn rollback(
    State(state): State<AppState>,
    auth: Authorized<ProposeChanges>,
    Path(workspace): Path<String>,
    body: Result<Json<RollbackBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let activation = changes::activation(&state, &workspace)?;
    let body = json_body(body)?;
    let kind = parse_kind(&body.kind)?;
    let target = activation
        .dlq
        .version(kind.as_str(), &body.id, body.version)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "version {} of {} {}",
                body.version, body.kind, body.id
            ))
        })?;
    let live = changes::current(&state, &workspace, kind, &body.id)?.map(|(json, _)| json);
    if live == target.after {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "{} {} is already as version {} left it",
                body.kind, body.id, body.version
            ),
        ));
    }
    let mut operation = changes::prepare(&state, &workspace, kind, &body.id, target.after.clone())?;
    operation.reason = format!("rollback to version {}", body.version);
    let title = format!(
        "roll back {} {} to version {}",
        body.kind, body.id, body.version
    );
    let before = operation.before.clone();
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    auth.audit(
        &state,
        &format!("{}.rollback", kind.as_str()),
        Some(&workspace),
        format!("{} {workspace}/{}", kind.as_str(), body.id),
        Some(changes::redacted(kind, before.as_ref())),
        Some(changes::redacted(kind, target.after.as_ref())),
    )
    .await?;
    let version = activation
        .dlq
        .latest_version(kind.as_str(), &body.id)
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "kind": kind, "id": body.id, "restored_version": body.version, "version": version,
        "after": changes::redacted(kind, target.after.as_ref()),
    }))
    .into_response())
}

/// The live configuration of `workspace` as a config file: the organization's policies, the
/// workspace's identity rules, computed traits and policies from the file, and every source
/// (its key as `write_key_sha256`), destination and connection, from the file or the API.
pub fn live_config(state: &AppState, workspace: &str) -> ApiResult<Config> {
    let activation = changes::activation(state, workspace)?;
    let mut own = state
        .config
        .workspaces
        .iter()
        .find(|declared| declared.id == workspace)
        .cloned()
        .unwrap_or_else(|| tandem_config::WorkspaceConfig {
            id: workspace.to_string(),
            name: state.workspaces[workspace].name.clone(),
            ..Default::default()
        });
    own.sources = state
        .store
        .sources()?
        .into_iter()
        .filter(|source| source.workspace_id == workspace)
        .map(|record| changes::source_document(&record))
        .collect();
    own.destinations = activation
        .destinations()?
        .into_iter()
        .map(|(config, _)| config)
        .collect();
    own.connections = activation
        .connections()?
        .into_iter()
        .map(|(config, _)| config)
        .collect();
    if let Some(target) = state.workspaces.get(workspace) {
        own.audiences = target
            .audiences
            .definitions()
            .into_iter()
            .map(|(config, _)| config)
            .collect();
        let policy = target.personalization.get();
        if policy.declared || policy.config != Default::default() {
            own.personalization = Some(policy.config.clone());
        }
    }
    own.tracking_plans = changes::workspace_plans(state, workspace)?
        .set()
        .entries
        .iter()
        .map(|entry| entry.plan.config.clone())
        .collect();
    let policies = state.policies.values();
    own.policies = policies
        .workspaces
        .get(workspace)
        .map(|overrides| {
            overrides
                .iter()
                .map(|(name, (value, _))| (name.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut organization = state.config.organization.clone();
    organization.policies = policies
        .organization
        .iter()
        .map(|(name, (policy, _))| (name.clone(), policy.clone()))
        .collect();
    Ok(Config {
        server: state.config.server.clone(),
        admin: Default::default(),
        log: state.config.log.clone(),
        collect: state.config.collect.clone(),
        organization,
        workspaces: vec![own],
    })
}

async fn export(
    State(state): State<AppState>,
    auth: Authorized<ExportConfig>,
    Path(workspace): Path<String>,
) -> ApiResult<Response> {
    let text = tandem_config::to_toml(&live_config(&state, &workspace)?);
    auth.audit(
        &state,
        "config.export",
        Some(&workspace),
        format!("workspace {workspace}"),
        None,
        None,
    )
    .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
        text,
    )
        .into_response())
}

/// `POST .../config/import` (a TOML config file): the differences between its workspace
/// `{workspace}` and the live one become ONE change request — applied at once when the caller's
/// changes need no approval (201), else left open (202). Objects declared in the server's own
/// config file are read-only: the file must leave them as they are. Sources are never deleted.
async fn import(
    State(state): State<AppState>,
    auth: Authorized<ProposeChanges>,
    Path(workspace): Path<String>,
    body: String,
) -> ApiResult<Response> {
    changes::activation(&state, &workspace)?;
    if body.len() > CONFIG_IMPORT_BYTES_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "the file is {} bytes; at most {CONFIG_IMPORT_BYTES_MAX}",
                body.len()
            ),
        ));
    }
    let config = tandem_config::parse(&body, "import").map_err(|error| {
        let problems: Vec<Value> = error
            .problems()
            .iter()
            .map(|problem| json!({"field": problem.path, "line": problem.line, "message": problem.message}))
            .collect();
        ApiError::new(ErrorCode::InvalidRequest, format!("the file is not a valid config: {error}"))
            .with_details(json!({ "problems": problems }))
    })?;
    let wanted = config
        .workspaces
        .into_iter()
        .find(|declared| declared.id == workspace)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("the file declares no workspace `{workspace}`"),
            )
        })?;
    let live = live_config(&state, &workspace)?.workspaces.remove(0);
    let mut problems: Vec<String> = Vec::new();
    let mut operations: Vec<Operation> = Vec::new();
    let sources: Vec<(String, Value)> = wanted
        .sources
        .iter()
        .map(|source| {
            Ok((
                source.id.clone(),
                serde_json::to_value(hashed(source)).map_err(ApiError::internal)?,
            ))
        })
        .collect::<ApiResult<_>>()?;
    diff_kind(
        &state,
        &workspace,
        Kind::Source,
        sources,
        &mut operations,
        &mut problems,
    )?;
    let to_pairs =
        |items: Vec<(String, serde_json::Result<Value>)>| -> ApiResult<Vec<(String, Value)>> {
            items
                .into_iter()
                .map(|(id, json)| Ok((id, json.map_err(ApiError::internal)?)))
                .collect()
        };
    let destinations = to_pairs(
        wanted
            .destinations
            .iter()
            .map(|d| (d.id.clone(), serde_json::to_value(d)))
            .collect(),
    )?;
    diff_kind(
        &state,
        &workspace,
        Kind::Destination,
        destinations.clone(),
        &mut operations,
        &mut problems,
    )?;
    let connections = to_pairs(
        wanted
            .connections
            .iter()
            .map(|c| (c.id.clone(), serde_json::to_value(c)))
            .collect(),
    )?;
    diff_kind(
        &state,
        &workspace,
        Kind::Connection,
        connections.clone(),
        &mut operations,
        &mut problems,
    )?;
    let audiences = to_pairs(
        wanted
            .audiences
            .iter()
            .map(|a| (a.id.clone(), serde_json::to_value(a)))
            .collect(),
    )?;
    diff_kind(
        &state,
        &workspace,
        Kind::Audience,
        audiences.clone(),
        &mut operations,
        &mut problems,
    )?;
    let plans = to_pairs(
        wanted
            .tracking_plans
            .iter()
            .map(|plan| (plan.id.clone(), serde_json::to_value(plan)))
            .collect(),
    )?;
    diff_kind(
        &state,
        &workspace,
        Kind::TrackingPlan,
        plans.clone(),
        &mut operations,
        &mut problems,
    )?;
    let personalization: Vec<(String, Value)> = match &wanted.personalization {
        Some(config) => vec![(
            workspace.clone(),
            serde_json::to_value(config).map_err(ApiError::internal)?,
        )],
        None => Vec::new(),
    };
    diff_kind(
        &state,
        &workspace,
        Kind::Personalization,
        personalization.clone(),
        &mut operations,
        &mut problems,
    )?;
    let policies: Vec<(String, Value)> = wanted
        .policies
        .iter()
        .map(|(name, value)| (name.clone(), changes::policy_document(name, value)))
        .collect();
    diff_kind(
        &state,
        &workspace,
        Kind::Policy,
        policies.clone(),
        &mut operations,
        &mut problems,
    )?;
    // What the file leaves out is deleted (sources excepted).
    let absent =
        |kind: Kind, live_ids: Vec<String>, wanted: &[(String, Value)]| -> Vec<(Kind, String)> {
            live_ids
                .into_iter()
                .filter(|id| !wanted.iter().any(|(wanted, _)| wanted == id))
                .map(|id| (kind, id))
                .collect()
        };
    let mut removed = absent(
        Kind::Connection,
        live.connections.iter().map(|c| c.id.clone()).collect(),
        &connections,
    );
    removed.extend(absent(
        Kind::Destination,
        live.destinations.iter().map(|d| d.id.clone()).collect(),
        &destinations,
    ));
    removed.extend(absent(
        Kind::Audience,
        live.audiences.iter().map(|a| a.id.clone()).collect(),
        &audiences,
    ));
    removed.extend(absent(
        Kind::Personalization,
        live.personalization
            .iter()
            .map(|_| workspace.clone())
            .collect(),
        &personalization,
    ));
    removed.extend(absent(
        Kind::TrackingPlan,
        live.tracking_plans.iter().map(|p| p.id.clone()).collect(),
        &plans,
    ));
    removed.extend(absent(
        Kind::Policy,
        live.policies.keys().cloned().collect(),
        &policies,
    ));
    for (kind, id) in removed {
        match changes::prepare(&state, &workspace, kind, &id, None) {
            Ok(operation) => operations.push(operation),
            Err(error) => problems.push(format!(
                "{} {id} is not in the file: {}",
                kind.as_str(),
                error.message
            )),
        }
    }
    if !problems.is_empty() {
        return Err(
            ApiError::new(ErrorCode::InvalidRequest, problems.join("; "))
                .with_details(json!({ "problems": problems })),
        );
    }
    if operations.is_empty() {
        return Ok(Json(json!({"operations": 0, "message": "the file matches the live configuration: nothing to change"})).into_response());
    }
    let title = format!(
        "import of a config file ({} operation(s))",
        operations.len()
    );
    let mut request = changes::propose(&state, &auth, &workspace, title, operations).await?;
    if changes::needs_approval(&state, &auth.principal, &workspace) {
        return Ok(changes::accepted(&request));
    }
    let _decisions = DECISIONS.lock().await;
    request.status = Status::Approved;
    request.decided_by = Some(auth.principal.name());
    request.decided_at_ms = Some(time_util::now_ms());
    apply_request(&state, &auth, &workspace, &mut request).await?;
    Ok((StatusCode::CREATED, Json(request.view())).into_response())
}

/// A source of an imported file as versions hold it: the key replaced by its hash.
fn hashed(source: &SourceConfig) -> SourceConfig {
    let mut source = source.clone();
    if !source.write_key.is_empty() {
        source.write_key_sha256 = Some(ids::write_key_hash(&source.write_key));
        source.write_key.clear();
    }
    source
}

/// The operations making the live objects of `kind` what `wanted` says (creates and updates;
/// deletions are found by the caller); a change to a config-file object is a problem.
fn diff_kind(
    state: &AppState,
    workspace: &str,
    kind: Kind,
    wanted: Vec<(String, Value)>,
    operations: &mut Vec<Operation>,
    problems: &mut Vec<String>,
) -> ApiResult<()> {
    for (id, after) in wanted {
        match changes::current(state, workspace, kind, &id)? {
            Some((live, _)) if live == after => {}
            Some((_, ManagedBy::Config)) => problems.push(format!(
                "{} {id} is declared in the server's config file: change it there",
                kind.as_str()
            )),
            _ => match changes::prepare(state, workspace, kind, &id, Some(after)) {
                Ok(operation) => operations.push(operation),
                Err(error) => problems.push(error.message),
            },
        }
    }
    Ok(())
}
