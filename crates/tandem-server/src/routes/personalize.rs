//! The personalization API: `GET /v1/personalize` (and `POST`, for bodies) answers what tandem
//! may tell the current visitor's page — allow-listed traits, allow-listed audience
//! memberships, and the decisions of the workspace's rules — authenticated by a public browser
//! key (CORS like the Segment API). Its management: the policy and the public keys.

use crate::auth::{Authorized, ManagePersonalization, ReadAudiences};
use crate::changes::{self, Kind};
use crate::error::{ApiError, ApiResult};
use crate::personalize::{decide, visible, CachedProfile, PublicKeyRecord, PUBLIC_KEY_PREFIX};
use crate::routes::Routes;
use crate::state::{AppState, Workspace};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tandem_config::PersonalizationConfig;
use tandem_core::time_util::format_iso8601_ms;
use tandem_core::ErrorCode;
use tandem_unify::identity::{Identity, ANONYMOUS_ID, USER_ID};
use tandem_unify::query;

/// The browser-facing route (write-key-like credentials, CORS).
pub fn public_router() -> Routes {
    Routes::new().route(
        "/v1/personalize",
        get(personalize_get).post(personalize_post),
    )
}

pub fn router() -> Routes {
    Routes::new()
        .route(
            "/api/v1/workspaces/{workspace}/personalization",
            get(get_policy).put(put_policy),
        )
        .route(
            "/api/v1/workspaces/{workspace}/personalization/keys",
            get(list_keys).post(create_key),
        )
        .route(
            "/api/v1/workspaces/{workspace}/personalization/keys/{key}/revoke",
            post(revoke_key),
        )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Visitor {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    /// The public key, for clients that cannot set a header.
    key: Option<String>,
}

/// The public key of a request: `X-Tandem-Key`, HTTP Basic user name, or `key`.
fn presented_key(headers: &HeaderMap, visitor: &Visitor) -> Option<String> {
    let header_key = headers
        .get("x-tandem-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty());
    if let Some(key) = header_key {
        return Some(key.to_string());
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.split(':').next().map(str::to_string))
        .filter(|key| !key.is_empty());
    basic.or_else(|| visitor.key.clone())
}

fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    visitor: &Visitor,
) -> ApiResult<PublicKeyRecord> {
    let Some(key) = presented_key(headers, visitor) else {
        return Err(ApiError::new(
            ErrorCode::MissingCredentials,
            format!("send a public key (`{PUBLIC_KEY_PREFIX}…`) as the X-Tandem-Key header"),
        ));
    };
    let record = state.public_keys.resolve(&key).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidToken,
            "the public key is not valid (revoked, or never existed)",
        )
    })?;
    if !record.allowed_origins.is_empty() {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !record
            .allowed_origins
            .iter()
            .any(|allowed| allowed == origin)
        {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this public key is for pages of {}",
                    record.allowed_origins.join(", ")
                ),
            ));
        }
    }
    Ok(record)
}

async fn personalize_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(visitor): Query<Visitor>,
) -> ApiResult<Response> {
    answer(&state, &headers, visitor).await
}

async fn personalize_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Visitor>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(visitor) = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{}; expected {{\"anonymousId\": \"…\", \"userId\": \"…\"}}",
                rejection.body_text()
            ),
        )
    })?;
    answer(&state, &headers, visitor).await
}

async fn answer(state: &AppState, headers: &HeaderMap, visitor: Visitor) -> ApiResult<Response> {
    let key = authenticate(state, headers, &visitor)?;
    let workspace = state.workspace(&key.workspace_id)?;
    let identities: Vec<Identity> = [
        (USER_ID, &visitor.user_id),
        (ANONYMOUS_ID, &visitor.anonymous_id),
    ]
    .into_iter()
    .filter_map(|(kind, value)| {
        value
            .as_deref()
            .filter(|v| !v.trim().is_empty())
            .map(|v| Identity::new(kind, v))
    })
    .collect();
    if identities.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "name the visitor: `anonymousId` and/or `userId`",
        ));
    }
    let mut profile = lookup(workspace, &identities)?;
    // Personalization output is a route like any other: it needs the person's consent to the
    // `personalization` category (the profile's latest preferences, else `consent_missing`).
    // Without it the visitor is answered as unknown: default offers, nothing of the profile.
    let consent = profile.as_ref().map(|found| {
        let id = found.id;
        tandem_consent::decide(
            &[tandem_consent::PERSONALIZATION.to_string()],
            None,
            || {
                workspace
                    .unify
                    .store()
                    .read(|kv| tandem_unify::query::latest_consent(kv, id))
                    .ok()
                    .flatten()
            },
            || state.policies.consent(&workspace.id).missing,
        )
    });
    if consent.as_ref().is_some_and(|decision| !decision.allowed) {
        profile = None;
    }
    let policy = workspace.personalization.get();
    let (decisions, rules) = decide(&policy, profile.as_deref());
    let mut body = json!({
        "profile": visible(&policy, profile.as_deref()),
        "decisions": decisions,
        "rules": rules,
    });
    if let Some(decision) = consent {
        body["consent"] = json!({"allowed": decision.allowed, "basis": decision.basis});
    }
    body["workspace"] = json!(workspace.id);
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// The cached profile of the first identity that has one; on a miss, read from the store and
/// cached.
fn lookup(workspace: &Workspace, identities: &[Identity]) -> ApiResult<Option<Arc<CachedProfile>>> {
    let cache = &workspace.audiences.cache;
    for identity in identities {
        if let Some(found) = cache.get(&format!("{}:{}", identity.kind, identity.value)) {
            metrics::counter!("tandem_personalize_cache_total", "result" => "hit").increment(1);
            return Ok(Some(found));
        }
    }
    metrics::counter!("tandem_personalize_cache_total", "result" => "miss").increment(1);
    let generation = cache.generation();
    let captured = workspace.personalization.get().captured_traits();
    let found = workspace
        .unify
        .store()
        .read(|kv| {
            for identity in identities {
                if let Some(profile) = query::profile_by_identity(kv, identity)? {
                    let row = tandem_audiences::state::profile_audiences(kv, profile.id)?;
                    return Ok(Some(tandem_audiences::engine::profile_view(
                        &profile, &row, &captured,
                    )));
                }
            }
            Ok(None)
        })
        .map_err(ApiError::internal)?;
    Ok(found.map(|view| {
        cache.put(&view, generation);
        Arc::new(CachedProfile {
            id: view.id,
            traits: view.traits,
            audiences: view.audiences,
            generation,
        })
    }))
}

async fn get_policy(
    State(state): State<AppState>,
    _auth: Authorized<ReadAudiences>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let policy = workspace.personalization.get();
    let mut view = serde_json::to_value(&policy.config).map_err(ApiError::internal)?;
    view["managed_by"] = json!(if policy.declared { "config" } else { "api" });
    view["cached_profiles"] = json!(workspace.audiences.cache.len());
    Ok(Json(view))
}

/// Sets the workspace's policy. A change like any other: versioned, and a change request (202)
/// when `change_approval` covers the caller; the problems are named by field either way.
async fn put_policy(
    State(state): State<AppState>,
    auth: Authorized<ManagePersonalization>,
    Path(workspace_id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let workspace = state.workspace(&workspace_id)?;
    let Json(value) =
        body.map_err(|rejection| ApiError::new(ErrorCode::InvalidRequest, rejection.body_text()))?;
    let config: PersonalizationConfig = serde_json::from_value(value).map_err(|error| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{error}; expected {{\"traits\": […], \"audiences\": […], \"rules\": […]}}"),
        )
    })?;
    let before = workspace.personalization.get();
    if before.declared {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this workspace's personalization is declared in the config file; change it there",
        ));
    }
    let ids: Vec<String> = workspace
        .audiences
        .definitions()
        .into_iter()
        .map(|(c, _)| c.id)
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let problems: Vec<(String, String)> =
        tandem_config::personalization_problems(&config, &ids, None)
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect();
    if !problems.is_empty() {
        return Err(crate::audiences::problems_error(problems));
    }
    let after = serde_json::to_value(&config).map_err(ApiError::internal)?;
    if before.config == config {
        return Ok(Json(after).into_response());
    }
    let operation = changes::prepare(
        &state,
        &workspace_id,
        Kind::Personalization,
        &workspace_id,
        Some(after.clone()),
    )?;
    let title = format!("personalization policy of {workspace_id}");
    if let Some(accepted) =
        changes::submit(&state, &auth, &workspace_id, title, vec![operation]).await?
    {
        return Ok(accepted);
    }
    auth.audit(
        &state,
        "personalization.update",
        Some(&workspace_id),
        format!("personalization {workspace_id}"),
        serde_json::to_value(&before.config).ok(),
        Some(after.clone()),
    )
    .await?;
    Ok(Json(after).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

fn key_json(key: &PublicKeyRecord) -> Value {
    json!({
        "id": key.id, "name": key.name, "allowed_origins": key.allowed_origins,
        "created_at": format_iso8601_ms(key.created_at_ms), "created_by": key.created_by,
        "revoked": key.revoked,
    })
}

async fn list_keys(
    State(state): State<AppState>,
    _auth: Authorized<ManagePersonalization>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    state.workspace(&workspace_id)?;
    let keys: Vec<Value> = state
        .public_keys
        .list(&workspace_id)
        .iter()
        .map(key_json)
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

async fn create_key(
    State(state): State<AppState>,
    auth: Authorized<ManagePersonalization>,
    Path(workspace_id): Path<String>,
    body: Result<Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    state.workspace(&workspace_id)?;
    let Json(body) = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{}; expected {{\"name\": \"…\", \"allowed_origins\": [\"https://…\"]}}",
                rejection.body_text()
            ),
        )
    })?;
    if body.name.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "a key needs a name (which site uses it)",
        ));
    }
    for origin in &body.allowed_origins {
        let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
            && !origin.trim_end_matches('/').contains(['?', '#'])
            && origin.matches('/').count() == 2;
        if !valid {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`{origin}` is not an origin (scheme://host[:port], no path)"),
            ));
        }
    }
    let (record, secret) = state.public_keys.create(
        &workspace_id,
        body.name.trim(),
        body.allowed_origins,
        &auth.principal.name(),
    )?;
    auth.audit(
        &state,
        "personalization_key.create",
        Some(&workspace_id),
        format!("public key {}", record.id),
        None,
        Some(key_json(&record)),
    )
    .await?;
    let mut view = key_json(&record);
    view["key"] = json!(secret);
    view["note"] =
        json!("a public key may sit in web pages: it reads only allow-listed, non-personal fields");
    Ok((StatusCode::CREATED, Json(view)))
}

async fn revoke_key(
    State(state): State<AppState>,
    auth: Authorized<ManagePersonalization>,
    Path((workspace_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state.workspace(&workspace_id)?;
    let record = state.public_keys.revoke(&workspace_id, &id)?;
    auth.audit(
        &state,
        "personalization_key.revoke",
        Some(&workspace_id),
        format!("public key {}", record.id),
        Some(json!({"revoked": false})),
        Some(json!({"revoked": true})),
    )
    .await?;
    Ok(Json(key_json(&record)))
}
