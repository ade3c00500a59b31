//! Policies: the organization's guardrails and each workspace's overrides.
//!
//! - `GET /api/v1/policies`: every organization policy (value, overridable, declared in the
//!   config file or through the API, its version), and the policies tandem itself reads.
//! - `GET|PUT|DELETE /api/v1/policies/{name}`, `GET …/{name}/history`, `POST …/{name}/rollback`:
//!   organization policies set through the API (IT only; what the file declares answers 409).
//! - `PUT|DELETE /api/v1/workspaces/{workspace}/policies/{name}`: a workspace's override of an
//!   overridable policy, as a change like any other (versioned in the workspace's history, a
//!   change request when the caller's changes need approval).
//! - `GET /api/v1/workspaces/{workspace}/policy/effective`: every policy as the workspace runs
//!   with it, and where each value comes from.

use crate::auth::{Authorized, ManageOrganizationPolicies, ManageWorkspacePolicies, ReadCatalog};
use crate::changes::{self, Kind};
use crate::error::{ApiError, ApiResult};
use crate::policies::{json_of, toml_of, PolicyVersion};
use crate::routes::Routes;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tandem_config::policy::KNOWN_POLICIES;
use tandem_core::{time_util, ErrorCode};

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/policies", get(list))
        .route("/api/v1/policies/{name}", get(show).put(set).delete(remove))
        .route("/api/v1/policies/{name}/history", get(history))
        .route("/api/v1/policies/{name}/rollback", post(rollback))
        .route(
            "/api/v1/workspaces/{workspace}/policies/{name}",
            put(set_override).delete(remove_override),
        )
        .route(
            "/api/v1/workspaces/{workspace}/policy/effective",
            get(effective),
        )
}

fn json_body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> ApiResult<T> {
    body.map(|Json(body)| body)
        .map_err(|rejection| ApiError::new(ErrorCode::InvalidRequest, rejection.body_text()))
}

fn known(name: &str) -> Option<&'static str> {
    KNOWN_POLICIES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, meaning)| *meaning)
}

/// An organization policy as the API shows it, with who overrides it.
fn policy_view(state: &AppState, name: &str) -> Option<Value> {
    let values = state.policies.values();
    let (policy, declared_in) = values.organization.get(name)?;
    let overridden_by: Vec<&String> = values
        .workspaces
        .iter()
        .filter(|(_, overrides)| overrides.contains_key(name))
        .map(|(workspace, _)| workspace)
        .collect();
    let version = state.policies.history(name).last().map(|v| v.version);
    Some(json!({
        "name": name,
        "value": json_of(&policy.value),
        "overridable": policy.overridable,
        "declared_in": declared_in,
        "version": version,
        "meaning": known(name),
        "overridden_by": overridden_by,
    }))
}

async fn list(State(state): State<AppState>, _auth: Authorized<ReadCatalog>) -> Json<Value> {
    let names: Vec<String> = state
        .policies
        .values()
        .organization
        .keys()
        .cloned()
        .collect();
    let policies: Vec<Value> = names
        .iter()
        .filter_map(|name| policy_view(&state, name))
        .collect();
    let known: Vec<Value> = KNOWN_POLICIES
        .iter()
        .map(|(name, meaning)| json!({"name": name, "meaning": meaning}))
        .collect();
    Json(json!({"policies": policies, "known": known}))
}

async fn show(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    policy_view(&state, &name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("policy {name}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    value: Value,
    #[serde(default)]
    overridable: bool,
    /// Why, recorded with the version and in the audit log.
    #[serde(default)]
    reason: String,
}

async fn set(
    State(state): State<AppState>,
    auth: Authorized<ManageOrganizationPolicies>,
    Path(name): Path<String>,
    body: Result<Json<PolicyBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let body = json_body(body)?;
    let value = toml_of(&body.value)?;
    let before = policy_view(&state, &name);
    state.policies.set_organization(
        &name,
        Some((value, body.overridable)),
        &auth.principal.name(),
        &body.reason,
    )?;
    let after = policy_view(&state, &name);
    let action = if before.is_some() {
        "policy.update"
    } else {
        "policy.create"
    };
    auth.audit(
        &state,
        action,
        None,
        format!("policy {name}"),
        before,
        after.clone(),
    )
    .await?;
    Ok(Json(after.unwrap_or_default()))
}

async fn remove(
    State(state): State<AppState>,
    auth: Authorized<ManageOrganizationPolicies>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let before = policy_view(&state, &name);
    state
        .policies
        .set_organization(&name, None, &auth.principal.name(), "removed")?;
    auth.audit(
        &state,
        "policy.delete",
        None,
        format!("policy {name}"),
        before,
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn version_view(version: &PolicyVersion) -> Value {
    json!({
        "version": version.version, "value": version.value, "overridable": version.overridable,
        "by": version.by, "at": time_util::format_iso8601_ms(version.at_ms), "reason": version.reason,
    })
}

async fn history(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
    Path(name): Path<String>,
) -> Json<Value> {
    let versions: Vec<Value> = state
        .policies
        .history(&name)
        .iter()
        .map(version_view)
        .collect();
    Json(json!({"name": name, "versions": versions}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u64,
}

/// Makes the policy what version `version` left it (removing it if that version removed it),
/// as a new version.
async fn rollback(
    State(state): State<AppState>,
    auth: Authorized<ManageOrganizationPolicies>,
    Path(name): Path<String>,
    body: Result<Json<RollbackBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let body = json_body(body)?;
    let target = state
        .policies
        .history(&name)
        .into_iter()
        .find(|version| version.version == body.version)
        .ok_or_else(|| ApiError::not_found(format!("version {} of policy {name}", body.version)))?;
    let value = target
        .value
        .as_ref()
        .map(|value| Ok::<_, ApiError>((toml_of(value)?, target.overridable)))
        .transpose()?;
    let before = policy_view(&state, &name);
    let recorded = state.policies.set_organization(
        &name,
        value,
        &auth.principal.name(),
        &format!("rollback to version {}", body.version),
    )?;
    let after = policy_view(&state, &name);
    auth.audit(
        &state,
        "policy.rollback",
        None,
        format!("policy {name}"),
        before,
        after.clone(),
    )
    .await?;
    Ok(Json(
        json!({"restored_version": body.version, "version": version_view(&recorded), "policy": after}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    value: Value,
}

/// The override as the API answers it once applied.
fn override_view(state: &AppState, workspace: &str, name: &str) -> Value {
    let effective = state
        .policies
        .effective(workspace)
        .into_iter()
        .find(|policy| policy.name == name);
    json!({"workspace": workspace, "policy": effective})
}

async fn submit_override(
    state: &AppState,
    auth: &Authorized<ManageWorkspacePolicies>,
    workspace: &str,
    name: &str,
    after: Option<Value>,
) -> ApiResult<Option<Response>> {
    if !state.workspaces.contains_key(workspace) {
        return Err(ApiError::not_found(format!("workspace {workspace}")));
    }
    let operation = changes::prepare(state, workspace, Kind::Policy, name, after)?;
    let title = match operation.after {
        Some(_) => format!("override policy {name}"),
        None => format!("remove the override of policy {name}"),
    };
    let before = operation.before.clone();
    let after = operation.after.clone();
    if let Some(accepted) = changes::submit(state, auth, workspace, title, vec![operation]).await? {
        return Ok(Some(accepted));
    }
    let action = match (&before, &after) {
        (None, _) => "policy_override.create",
        (Some(_), Some(_)) => "policy_override.update",
        (Some(_), None) => "policy_override.delete",
    };
    auth.audit(
        state,
        action,
        Some(workspace),
        format!("policy {workspace}/{name}"),
        before,
        after,
    )
    .await?;
    Ok(None)
}

async fn set_override(
    State(state): State<AppState>,
    auth: Authorized<ManageWorkspacePolicies>,
    Path((workspace, name)): Path<(String, String)>,
    body: Result<Json<OverrideBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let value = toml_of(&body.value)?;
    if let Some(problem) = state.policies.override_problem(&name, &value) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, problem));
    }
    let document = changes::policy_document(&name, &value);
    if let Some(accepted) =
        submit_override(&state, &auth, &workspace, &name, Some(document)).await?
    {
        return Ok(accepted);
    }
    Ok(Json(override_view(&state, &workspace, &name)).into_response())
}

async fn remove_override(
    State(state): State<AppState>,
    auth: Authorized<ManageWorkspacePolicies>,
    Path((workspace, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    if let Some(accepted) = submit_override(&state, &auth, &workspace, &name, None).await? {
        return Ok(accepted);
    }
    Ok(Json(override_view(&state, &workspace, &name)).into_response())
}

async fn effective(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    if !state.workspaces.contains_key(&workspace) {
        return Err(ApiError::not_found(format!("workspace {workspace}")));
    }
    let policies = state.policies.effective(&workspace);
    Ok(Json(json!({
        "workspace": workspace,
        "policies": serde_json::to_value(policies).map_err(ApiError::internal)?,
    })))
}
