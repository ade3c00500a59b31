//! Audiences: definitions (CRUD + merge patch; those the config file declares answer 409 to
//! changes; every change versioned and, under `change_approval`, a change request), sizes and
//! backfill progress, previews, and member lists (which need ReadProfiles: they name people).

use crate::audiences::preview::PreviewView;
use crate::auth::{Authorized, ManageAudiences, Permission, ReadAudiences, ReadProfiles};
use crate::changes::{self, Kind};
use crate::error::{ApiError, ApiResult};
use crate::routes::activate::patched;
use crate::routes::Routes;
use crate::state::{AppState, Workspace};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tandem_activate::runtime::ManagedBy;
use tandem_config::AudienceConfig;
use tandem_core::limits::AUDIENCE_MEMBERS_PAGE_MAX;
use tandem_core::time_util::format_iso8601_ms;
use tandem_core::ErrorCode;
use tandem_unify::model::{format_profile_id, parse_profile_id, ProfileRow};

pub fn router() -> Routes {
    Routes::new()
        .route(
            "/api/v1/workspaces/{workspace}/audiences",
            get(list_audiences).post(create_audience),
        )
        .route(
            "/api/v1/workspaces/{workspace}/audiences/preview",
            post(preview),
        )
        .route(
            "/api/v1/workspaces/{workspace}/audiences/previews/{preview}",
            get(preview_progress),
        )
        .route(
            "/api/v1/workspaces/{workspace}/audiences/{audience}",
            get(get_audience)
                .patch(patch_audience)
                .delete(delete_audience),
        )
        .route(
            "/api/v1/workspaces/{workspace}/audiences/{audience}/members",
            get(members),
        )
}

fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(T, Value)> {
    let Json(value) =
        body.map_err(|rejection| ApiError::new(ErrorCode::InvalidRequest, rejection.body_text()))?;
    let parsed = serde_json::from_value(value.clone()).map_err(|error| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{error}; expected an audience definition: {{\"id\", \"name\", \"condition\": {{…}}}}"),
        )
    })?;
    Ok((parsed, value))
}

/// An audience as the API shows it.
fn view(workspace: &Workspace, config: &AudienceConfig, managed_by: ManagedBy) -> ApiResult<Value> {
    let size = workspace
        .unify
        .store()
        .read(|kv| tandem_audiences::state::size(kv, &config.id))
        .map_err(ApiError::internal)?;
    let published = workspace.audiences.published.read().clone();
    let backfill = published
        .job
        .as_ref()
        .filter(|job| {
            job.job.audiences.contains(&config.id)
                || job.job.removed.iter().any(|(id, _)| id == &config.id)
        })
        .map(job_json);
    let counters: Vec<Value> = published
        .set
        .get(&config.id)
        .map(|compiled| {
            compiled
                .counters
                .iter()
                .map(|index| {
                    let counter = &published.set.counters[*index];
                    json!({
                        "name": counter.name,
                        "type": counter.event_type,
                        "event": counter.event.as_deref().unwrap_or("*"),
                        "within_days": counter.window_days,
                        "since": counter.since_ms.map(format_iso8601_ms),
                        "filters": counter.filters.len(),
                        "complete": published.complete_counters.contains(&counter.name),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let version = workspace
        .activation
        .dlq
        .latest_version(crate::audiences::AUDIENCE_KIND, &config.id)
        .map_err(ApiError::internal)?;
    let mut out = serde_json::to_value(config).map_err(ApiError::internal)?;
    out["managed_by"] = json!(managed_by);
    out["size"] = json!(size);
    // pending: changed, not yet taken by the unify task (it takes changes between batches);
    // backfilling: its job is evaluating every profile; live: memberships follow events.
    out["status"] = json!(if workspace.audiences.is_pending() {
        "pending"
    } else if backfill.is_some() {
        "backfilling"
    } else {
        "live"
    });
    out["backfill"] = backfill.unwrap_or(Value::Null);
    out["counters"] = json!(counters);
    out["version"] = json!(version);
    Ok(out)
}

fn job_json(job: &tandem_audiences::JobView) -> Value {
    json!({
        "id": job.job.id,
        "reason": job.job.reason,
        "progress": job.progress,
        "profiles_done": job.job.profiles_done,
        "entered": job.job.entered,
        "exited": job.job.exited,
        "started_at": format_iso8601_ms(job.job.started_at_ms),
        "audiences": job.job.audiences,
        "removing": job.job.removed.iter().map(|(id, _)| id).collect::<Vec<_>>(),
    })
}

async fn list_audiences(
    State(state): State<AppState>,
    _auth: Authorized<ReadAudiences>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let views = workspace
        .audiences
        .definitions()
        .iter()
        .map(|(config, by)| view(workspace, config, *by))
        .collect::<ApiResult<Vec<_>>>()?;
    let published = workspace.audiences.published.read().clone();
    Ok(Json(json!({
        "audiences": views,
        // Changed definitions the unify task has not planned yet (it does between batches).
        "pending": workspace.audiences.is_pending(),
        "job": published.job.as_ref().map(job_json),
        "error": published.error,
    })))
}

async fn get_audience(
    State(state): State<AppState>,
    _auth: Authorized<ReadAudiences>,
    Path((workspace_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let (config, by) = find(workspace, &workspace_id, &id)?;
    Ok(Json(view(workspace, &config, by)?))
}

fn find(
    workspace: &Workspace,
    workspace_id: &str,
    id: &str,
) -> ApiResult<(AudienceConfig, ManagedBy)> {
    workspace
        .audiences
        .definitions()
        .into_iter()
        .find(|(config, _)| config.id == id)
        .ok_or_else(|| ApiError::not_found(format!("audience {workspace_id}/{id}")))
}

/// The API-managed audience `id`: 404 when absent, 409 when the config file declares it.
fn api_managed(workspace: &Workspace, workspace_id: &str, id: &str) -> ApiResult<AudienceConfig> {
    match find(workspace, workspace_id, id)? {
        (_, ManagedBy::Config) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("audience {id} is declared in the config file; change it there"),
        )),
        (config, ManagedBy::Api) => Ok(config),
    }
}

async fn create_audience(
    State(state): State<AppState>,
    auth: Authorized<ManageAudiences>,
    Path(workspace_id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let workspace = state.workspace(&workspace_id)?;
    let (config, _): (AudienceConfig, Value) = json_body(body)?;
    let operation =
        changes::prepare_create(&state, &workspace_id, Kind::Audience, &config.id, &config)?;
    let title = format!("create audience {}", config.id);
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace_id, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    let shown = view(workspace, &config, ManagedBy::Api)?;
    auth.audit(
        &state,
        "audience.create",
        Some(&workspace_id),
        format!("audience {workspace_id}/{}", config.id),
        None,
        Some(serde_json::to_value(&config).map_err(ApiError::internal)?),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

async fn patch_audience(
    State(state): State<AppState>,
    auth: Authorized<ManageAudiences>,
    Path((workspace_id, id)): Path<(String, String)>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let workspace = state.workspace(&workspace_id)?;
    let Json(patch) =
        body.map_err(|rejection| ApiError::new(ErrorCode::InvalidRequest, rejection.body_text()))?;
    let current = api_managed(workspace, &workspace_id, &id)?;
    let (before, mut after) = patched(&current, &id, &patch)?;
    // A condition is one tree: a patch that gives one replaces it whole (merging two trees
    // would mix their kinds).
    if let Some(condition) = patch.get("condition").filter(|c| !c.is_null()) {
        after["condition"] = condition.clone();
    }
    let config: AudienceConfig = serde_json::from_value(after).map_err(|error| {
        ApiError::new(ErrorCode::InvalidRequest, format!("audience {id}: {error}"))
    })?;
    let operation = changes::prepare(
        &state,
        &workspace_id,
        Kind::Audience,
        &id,
        Some(serde_json::to_value(&config).map_err(ApiError::internal)?),
    )?;
    let title = format!("update audience {id}");
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace_id, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    auth.audit(
        &state,
        "audience.update",
        Some(&workspace_id),
        format!("audience {workspace_id}/{id}"),
        Some(before),
        Some(serde_json::to_value(&config).map_err(ApiError::internal)?),
    )
    .await?;
    Ok(Json(view(workspace, &config, ManagedBy::Api)?).into_response())
}

async fn delete_audience(
    State(state): State<AppState>,
    auth: Authorized<ManageAudiences>,
    Path((workspace_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let workspace = state.workspace(&workspace_id)?;
    let current = api_managed(workspace, &workspace_id, &id)?;
    let users: Vec<String> = workspace
        .audiences
        .definitions()
        .iter()
        .filter(|(config, _)| {
            config.id != id && config.condition.audience_references().contains(&id)
        })
        .map(|(config, _)| config.id.clone())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("audience {id} is used by audience(s) {}", users.join(", ")),
        ));
    }
    let policy = workspace.personalization.get();
    let mut used_by_rules = policy.config.audiences.contains(&id);
    for rule in &policy.config.rules {
        used_by_rules |= rule.when.audience_references().contains(&id);
    }
    if used_by_rules {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("audience {id} is used by the personalization policy"),
        ));
    }
    let operation = changes::prepare(&state, &workspace_id, Kind::Audience, &id, None)?;
    let title = format!("delete audience {id}");
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace_id, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    auth.audit(
        &state,
        "audience.delete",
        Some(&workspace_id),
        format!("audience {workspace_id}/{id}"),
        Some(serde_json::to_value(&current).map_err(ApiError::internal)?),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct MembersQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// Identifiers of a profile the API shows beside its id.
fn identities_json(profile: Option<&ProfileRow>) -> Value {
    let Some(profile) = profile else {
        return json!({});
    };
    let first = |kind: &str| {
        profile
            .identities
            .iter()
            .find(|(identity, _)| identity.kind == kind)
            .map(|(identity, _)| identity.value.clone())
    };
    json!({"user_id": first("user_id"), "anonymous_id": first("anonymous_id"), "email": first("email")})
}

async fn members(
    State(state): State<AppState>,
    auth: Authorized<ReadProfiles>,
    Path((workspace_id, id)): Path<(String, String)>,
    Query(query): Query<MembersQuery>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    find(workspace, &workspace_id, &id)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > AUDIENCE_MEMBERS_PAGE_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit is from 1 to {AUDIENCE_MEMBERS_PAGE_MAX}"),
        ));
    }
    let after = match query.after.as_deref() {
        None => None,
        Some(text) => Some(parse_profile_id(text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "`after` is a profile id (`prof_…`)",
            )
        })?),
    };
    let (page, size) = workspace
        .unify
        .store()
        .read(|kv| {
            let rows = tandem_audiences::state::members(kv, &id, after, limit + 1)?;
            let mut page = Vec::with_capacity(rows.len());
            for (profile, entered) in rows {
                let row: Option<ProfileRow> = tandem_unify::model::get(
                    kv,
                    tandem_unify::kv::Table::Profiles,
                    &profile.to_be_bytes(),
                )?;
                page.push((profile, entered, row));
            }
            Ok((page, tandem_audiences::state::size(kv, &id)?))
        })
        .map_err(ApiError::internal)?;
    let more = page.len() > limit;
    let sight = crate::pii::Sight::of(&auth.principal);
    let shown: Vec<Value> = page
        .iter()
        .take(limit)
        .map(|(profile, entered, row)| {
            let mut member = masked_identities(workspace, sight, row.as_ref());
            member["profile_id"] = json!(format_profile_id(*profile));
            member["entered_at"] = json!(format_iso8601_ms(*entered));
            member
        })
        .collect();
    let next = more
        .then(|| page.get(limit - 1).map(|(p, _, _)| format_profile_id(*p)))
        .flatten();
    Ok(Json(
        json!({"audience": id, "size": size, "members": shown, "next": next}),
    ))
}

/// A member's identifiers, PII masked unless `sight` is clear.
fn masked_identities(
    workspace: &Workspace,
    sight: crate::pii::Sight,
    row: Option<&ProfileRow>,
) -> Value {
    let mut member = identities_json(row);
    for kind in ["user_id", "anonymous_id", "email"] {
        sight.identity(&workspace.pii, kind, &mut member[kind]);
    }
    member
}

/// A preview's answer: its figures, and a sample of members when the caller may read profiles.
fn preview_json(
    workspace: &Workspace,
    view: &PreviewView,
    principal: &crate::auth::Principal,
    workspace_id: &str,
) -> ApiResult<Value> {
    let may_read_profiles = principal.may(Permission::ReadProfiles);
    let sight = crate::pii::Sight::of(principal);
    let mut out = serde_json::to_value(view).map_err(ApiError::internal)?;
    out["poll"] = json!(format!(
        "/api/v1/workspaces/{workspace_id}/audiences/previews/{}",
        view.id
    ));
    if view.status == "done" {
        out["sample"] = if may_read_profiles {
            let rows = workspace
                .unify
                .store()
                .read(|kv| {
                    view.sample
                        .iter()
                        .map(|profile| {
                            tandem_unify::model::get::<ProfileRow>(
                                kv,
                                tandem_unify::kv::Table::Profiles,
                                &profile.to_be_bytes(),
                            )
                            .map(|row| (*profile, row))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(ApiError::internal)?;
            json!(rows
                .iter()
                .map(|(profile, row)| {
                    let mut member = masked_identities(workspace, sight, row.as_ref());
                    member["profile_id"] = json!(format_profile_id(*profile));
                    member
                })
                .collect::<Vec<_>>())
        } else {
            Value::Null
        };
        if !may_read_profiles {
            out["sample_note"] = json!("sample members need ReadProfiles");
        }
    }
    Ok(out)
}

async fn preview(
    State(state): State<AppState>,
    auth: Authorized<ReadAudiences>,
    Path(workspace_id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let workspace = state.workspace(&workspace_id)?;
    let Json(mut value) =
        body.map_err(|rejection| ApiError::new(ErrorCode::InvalidRequest, rejection.body_text()))?;
    // A definition under construction may have no id or name yet.
    if let Some(object) = value.as_object_mut() {
        object
            .entry("id")
            .or_insert_with(|| json!("preview-candidate"));
        object.entry("name").or_insert_with(|| json!("Preview"));
    }
    let (config, _): (AudienceConfig, Value) = json_body(Ok(Json(value)))?;
    let job = crate::audiences::start_preview(workspace, config)?;
    let done = crate::audiences::wait_preview(&job).await;
    let shown = preview_json(workspace, &job.view(), &auth.principal, &workspace_id)?;
    let status = if done {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(shown)).into_response())
}

async fn preview_progress(
    State(state): State<AppState>,
    auth: Authorized<ReadAudiences>,
    Path((workspace_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let job = workspace.audiences.previews.get(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "preview {id} (previews are kept in memory, the newest few)"
        ))
    })?;
    Ok(Json(preview_json(
        workspace,
        &job.view(),
        &auth.principal,
        &workspace_id,
    )?))
}
