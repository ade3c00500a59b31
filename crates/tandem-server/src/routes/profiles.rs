//! Profiles: the Segment-compatible Profile API and tandem's native profile routes.
//!
//! Segment-compatible (HTTP Basic, a workspace access token as user name, empty password):
//! `GET /v1/spaces/{workspace}/collections/{users|accounts}/profiles/{type}:{value}/{traits|events|external_ids|metadata|links}`
//! with `limit`, `next` (cursor), `include` (traits), `verbose` (traits with provenance).
//!
//! Native (admin bearer token): the whole 360° view, search by identifier or trait, explain,
//! split, refusals, and access tokens.

use crate::auth::{Authorized, ManageAccessTokens, ManageIdentity, ReadProfiles};
use crate::error::{ApiError, ApiResult};
use crate::pii::Sight;
use crate::routes::Routes;
use crate::state::{AppState, Workspace};
use crate::unify::{control_record, LogRecords};
use crate::unify::{save_rules, UnifyRules};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;
use tandem_core::limits::{PROFILE_API_LIMIT_DEFAULT, PROFILE_API_LIMIT_MAX};
use tandem_core::time_util::format_iso8601_ms;
use tandem_core::{time_util, ErrorCode};
use tandem_unify::engine::{control_outcome_key, ControlOutcome};
use tandem_unify::kv::{KvError, KvRead, Snapshot, Table};
use tandem_unify::model::{
    self, format_profile_id, parse_profile_id, AccountRow, ProfileRow, Provenance, TraitRow,
};
use tandem_unify::{query, Identity, RecordSource};

/// How long a split request waits for unify to apply it before answering 202.
pub const SPLIT_WAIT_SECONDS: u64 = 30;
/// Most profiles one trait search scans per request (it pages on with `after`).
pub const TRAIT_SEARCH_SCAN_MAX: usize = 100_000;

pub fn router() -> Routes {
    Routes::new()
        .route(
            "/v1/spaces/{workspace}/collections/{collection}/profiles/{id}/{resource}",
            get(segment_profile),
        )
        .route(
            "/api/v1/workspaces/{workspace}/profiles",
            get(search_profiles),
        )
        .route(
            "/api/v1/workspaces/{workspace}/profiles/{id}",
            get(profile_view),
        )
        .route(
            "/api/v1/workspaces/{workspace}/profiles/{id}/split",
            post(split_profile),
        )
        .route(
            "/api/v1/workspaces/{workspace}/identity/explain",
            get(explain),
        )
        .route(
            "/api/v1/workspaces/{workspace}/identity/refusals",
            get(refusals),
        )
        .route(
            "/api/v1/workspaces/{workspace}/identity/splits",
            get(splits),
        )
        .route("/api/v1/workspaces/{workspace}/unify", get(unify_status))
        .route(
            "/api/v1/workspaces/{workspace}/unify/rules",
            get(get_rules).put(put_rules),
        )
        .route(
            "/api/v1/workspaces/{workspace}/access-tokens",
            get(list_tokens).post(create_token),
        )
        .route(
            "/api/v1/workspaces/{workspace}/access-tokens/{id}/revoke",
            post(revoke_token),
        )
}

fn store_error(error: KvError) -> ApiError {
    ApiError::internal(error)
}

/// The Profile API caller: a workspace access token (Basic), or a management credential (Bearer:
/// admin token, API token, session) holding `ReadProfiles` in the path's workspace.
pub struct ProfileAccess {
    workspace_id: Option<String>,
    /// PII in clear (an access token, or a credential holding ReadPii) or masked.
    sight: Sight,
}

impl FromRequestParts<AppState> for ProfileAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if let Some(encoded) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .unwrap_or_default();
            let token = decoded.split(':').next().unwrap_or_default();
            return match state.access_tokens.workspace_of(token) {
                Some(workspace_id) => Ok(ProfileAccess {
                    workspace_id: Some(workspace_id),
                    sight: Sight::Clear,
                }),
                None => Err(ApiError::new(
                    ErrorCode::InvalidToken,
                    "the access token is not valid",
                )),
            };
        }
        // Any management credential (bearer or session cookie) with ReadProfiles in this workspace.
        let principal = crate::auth::authenticate(parts, state).map_err(|error| {
            if error.code == ErrorCode::MissingCredentials {
                ApiError::new(
                    ErrorCode::MissingCredentials,
                    "send a workspace access token as HTTP Basic user name (empty password)",
                )
            } else {
                error
            }
        })?;
        let workspace = crate::auth::workspace_parameter(parts)
            .await?
            .unwrap_or_default();
        crate::routes::access::may_read_profiles(&principal, &workspace)?;
        Ok(ProfileAccess {
            workspace_id: None,
            sight: Sight::of(&principal),
        })
    }
}

#[derive(Deserialize, Default)]
struct ProfileQuery {
    limit: Option<usize>,
    next: Option<String>,
    include: Option<String>,
    verbose: Option<bool>,
}

fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit.unwrap_or(PROFILE_API_LIMIT_DEFAULT) {
        0 => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "limit is at least 1",
        )),
        n if n > PROFILE_API_LIMIT_MAX => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit is at most {PROFILE_API_LIMIT_MAX}"),
        )),
        n => Ok(n),
    }
}

fn cursor(url: &str, next: Option<String>) -> Value {
    json!({"url": url, "has_more": next.is_some(), "next": next.unwrap_or_default()})
}

fn provenance_json(provenance: &Provenance) -> Value {
    json!({
        "source_id": provenance.source,
        "message_id": provenance.message_id,
        "timestamp": format_iso8601_ms(provenance.time_ms),
    })
}

fn trait_value(row: &TraitRow) -> Value {
    serde_json::from_str(&row.json).unwrap_or(Value::Null)
}

/// A page of traits in name order: `(name, row)` from after `next`.
fn trait_page<'a>(
    traits: &'a std::collections::BTreeMap<String, TraitRow>,
    include: Option<&str>,
    next: Option<&str>,
    limit: usize,
    verbose: bool,
) -> (Map<String, Value>, Option<String>) {
    let wanted: Option<Vec<&str>> = include.map(|list| list.split(',').map(str::trim).collect());
    let mut selected = traits
        .iter()
        .filter(|(name, _)| wanted.as_ref().is_none_or(|w| w.contains(&name.as_str())))
        .filter(|(name, _)| next.is_none_or(|after| name.as_str() > after));
    let mut out = Map::new();
    let mut last: Option<&'a String> = None;
    for (name, row) in selected.by_ref().take(limit) {
        let value = if verbose {
            let mut v = provenance_json(&row.provenance);
            v["value"] = trait_value(row);
            v
        } else {
            trait_value(row)
        };
        out.insert(name.clone(), value);
        last = Some(name);
    }
    let more = selected.next().is_some();
    (out, if more { last.cloned() } else { None })
}

async fn segment_profile(
    State(state): State<AppState>,
    access: ProfileAccess,
    Path((workspace_id, collection, id, resource)): Path<(String, String, String, String)>,
    Query(params): Query<ProfileQuery>,
) -> ApiResult<Json<Value>> {
    if access
        .workspace_id
        .as_deref()
        .is_some_and(|w| w != workspace_id)
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this access token is for another workspace",
        ));
    }
    let workspace = state.workspace(&workspace_id)?;
    let identity = Identity::parse_path(&id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "the profile is named `type:value`, e.g. `user_id:u123`",
        )
    })?;
    let limit = page_limit(params.limit)?;
    let url =
        format!("/v1/spaces/{workspace_id}/collections/{collection}/profiles/{id}/{resource}");
    let store = workspace.unify.store().clone();
    match collection.as_str() {
        "users" => {
            let profile = store
                .read(|kv| query::profile_by_identity(kv, &identity))
                .map_err(store_error)?
                .ok_or_else(|| ApiError::not_found(format!("profile {id}")))?;
            let mut answer = user_resource(workspace, &profile, &resource, &params, limit, &url)?;
            mask_user_resource(workspace, access.sight, &resource, &params, &mut answer.0);
            Ok(answer)
        }
        "accounts" => {
            if identity.kind != tandem_unify::identity::GROUP_ID {
                return Err(ApiError::not_found(format!("account {id}")));
            }
            let account = store
                .read(|kv| query::account(kv, &identity.value))
                .map_err(store_error)?
                .ok_or_else(|| ApiError::not_found(format!("account {id}")))?;
            let mut answer =
                account_resource(workspace, &account, &resource, &params, limit, &url)?;
            mask_account_resource(workspace, access.sight, &resource, &params, &mut answer.0);
            Ok(answer)
        }
        other => Err(ApiError::not_found(format!("collection {other}"))),
    }
}

/// Masks a Profile API answer about a person for a reader without ReadPii.
fn mask_user_resource(
    workspace: &Workspace,
    sight: Sight,
    resource: &str,
    params: &ProfileQuery,
    answer: &mut Value,
) {
    if sight == Sight::Clear {
        return;
    }
    let pii = &workspace.pii;
    match resource {
        "traits" => mask_trait_page(answer, params, |name, value| {
            sight.trait_value(pii, name, value)
        }),
        "events" => {
            for event in answer["data"].as_array_mut().into_iter().flatten() {
                sight.event(pii, event);
            }
        }
        _ => sight.anything(pii, answer),
    }
}

/// Masks a Profile API answer about an account for a reader without ReadPii.
fn mask_account_resource(
    workspace: &Workspace,
    sight: Sight,
    resource: &str,
    params: &ProfileQuery,
    answer: &mut Value,
) {
    if sight == Sight::Clear {
        return;
    }
    let pii = &workspace.pii;
    match resource {
        "traits" => mask_trait_page(answer, params, |name, value| {
            sight.account_trait(pii, name, value)
        }),
        _ => sight.anything(pii, answer),
    }
}

/// Masks each value of a `{"traits": {name: value | {value, …}}}` answer.
fn mask_trait_page(answer: &mut Value, params: &ProfileQuery, mask: impl Fn(&str, &mut Value)) {
    let verbose = params.verbose.unwrap_or(false);
    if let Some(traits) = answer["traits"].as_object_mut() {
        for (name, value) in traits.iter_mut() {
            if verbose {
                mask(name, &mut value["value"]);
            } else {
                mask(name, value);
            }
        }
    }
}

fn user_resource(
    workspace: &Workspace,
    profile: &ProfileRow,
    resource: &str,
    params: &ProfileQuery,
    limit: usize,
    url: &str,
) -> ApiResult<Json<Value>> {
    match resource {
        "traits" => {
            let mut all = with_computed(profile);
            // Like Segment's audiences, memberships show as boolean traits named by the
            // audience key (members only).
            let memberships = workspace
                .unify
                .store()
                .read(|kv| tandem_audiences::state::profile_audiences(kv, profile.id))
                .map_err(store_error)?;
            for (audience, entered_at_ms) in memberships.memberships {
                all.entry(audience).or_insert(TraitRow {
                    json: "true".into(),
                    provenance: Provenance {
                        source: tandem_core::envelope::AUDIENCES_SOURCE_ID.into(),
                        message_id: String::new(),
                        time_ms: entered_at_ms,
                        offset: 0,
                    },
                });
            }
            let (traits, next) = trait_page(
                &all,
                params.include.as_deref(),
                params.next.as_deref(),
                limit,
                params.verbose.unwrap_or(false),
            );
            Ok(Json(json!({"traits": traits, "cursor": cursor(url, next)})))
        }
        "external_ids" => {
            let skip: usize = params
                .next
                .as_deref()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let data: Vec<Value> = profile
                .identities
                .iter()
                .skip(skip)
                .take(limit)
                .map(|(identity, seen)| external_id_json(identity, seen, "users"))
                .collect();
            let next =
                (skip + limit < profile.identities.len()).then(|| (skip + limit).to_string());
            Ok(Json(json!({"data": data, "cursor": cursor(url, next)})))
        }
        "events" => {
            let before = match params.next.as_deref() {
                Some(hex) => Some(decode_hex(hex).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        "`next` is not a cursor this API gave",
                    )
                })?),
                None => None,
            };
            let mut rows = workspace
                .unify
                .store()
                .read(|kv| query::timeline(kv, profile.id, before.as_deref(), limit + 1))
                .map_err(store_error)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let next = more
                .then(|| rows.last().map(|(key, _)| encode_hex(key)))
                .flatten();
            let source = LogRecords(workspace.log.clone());
            let data: Vec<Value> = rows
                .iter()
                .map(|(_, row)| event_json(&source, row.offset, &row.source))
                .collect();
            Ok(Json(json!({"data": data, "cursor": cursor(url, next)})))
        }
        "metadata" => Ok(Json(json!({"metadata": {
            "created_at": format_iso8601_ms(profile.created.time_ms),
            "updated_at": format_iso8601_ms(profile.last_message_ms),
            "expires_at": Value::Null,
            "first_message_at": format_iso8601_ms(profile.first_message_ms),
            "last_message_at": format_iso8601_ms(profile.last_message_ms),
            "last_source_id": profile.last_source,
            "last_message_id": profile.last_message_id,
            "segment_id": format_profile_id(profile.id),
        }}))),
        "links" => {
            let data: Vec<Value> = profile
                .groups
                .iter()
                .take(limit)
                .map(|group| json!({"to_collection": "accounts", "external_ids": [{"id": group, "type": "group_id"}]}))
                .collect();
            Ok(Json(json!({"data": data, "cursor": cursor(url, None)})))
        }
        other => Err(ApiError::not_found(format!("profile resource {other}"))),
    }
}

fn account_resource(
    workspace: &Workspace,
    account: &AccountRow,
    resource: &str,
    params: &ProfileQuery,
    limit: usize,
    url: &str,
) -> ApiResult<Json<Value>> {
    match resource {
        "traits" => {
            let (traits, next) = trait_page(
                &account.traits,
                params.include.as_deref(),
                params.next.as_deref(),
                limit,
                params.verbose.unwrap_or(false),
            );
            Ok(Json(json!({"traits": traits, "cursor": cursor(url, next)})))
        }
        "external_ids" => {
            let created = account.created.clone().unwrap_or(Provenance {
                source: String::new(),
                message_id: String::new(),
                time_ms: 0,
                offset: 0,
            });
            let mut data = vec![external_id_json(
                &query::group_identity(&account.group_id),
                &created,
                "accounts",
            )];
            data.extend(
                account
                    .identities
                    .iter()
                    .map(|(i, p)| external_id_json(i, p, "accounts")),
            );
            data.truncate(limit);
            Ok(Json(json!({"data": data, "cursor": cursor(url, None)})))
        }
        "metadata" => Ok(Json(json!({"metadata": {
            "created_at": account.created.as_ref().map(|p| format_iso8601_ms(p.time_ms)),
            "updated_at": format_iso8601_ms(account.last_message_ms),
            "last_message_at": format_iso8601_ms(account.last_message_ms),
            "members": account.members,
        }}))),
        "links" => {
            let after = params.next.as_deref().and_then(parse_profile_id);
            let store = workspace.unify.store();
            let (members, profiles) = store
                .read(|kv| {
                    let members = query::account_members(kv, &account.group_id, after, limit + 1)?;
                    let profiles = members
                        .iter()
                        .take(limit)
                        .map(|id| query::resolve_profile(kv, *id))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((members, profiles))
                })
                .map_err(store_error)?;
            let next = (members.len() > limit).then(|| format_profile_id(members[limit - 1]));
            let data: Vec<Value> = profiles
                .into_iter()
                .flatten()
                .map(|profile| {
                    let ids: Vec<Value> = profile
                        .identities
                        .iter()
                        .map(|(identity, _)| json!({"id": identity.value, "type": identity.kind}))
                        .collect();
                    json!({"to_collection": "users", "external_ids": ids})
                })
                .collect();
            Ok(Json(json!({"data": data, "cursor": cursor(url, next)})))
        }
        "events" => Ok(Json(json!({"data": [], "cursor": cursor(url, None)}))),
        other => Err(ApiError::not_found(format!("account resource {other}"))),
    }
}

fn external_id_json(identity: &Identity, seen: &Provenance, collection: &str) -> Value {
    json!({
        "id": identity.value,
        "type": identity.kind,
        "source_id": seen.source,
        "collection": collection,
        "created_at": format_iso8601_ms(seen.time_ms),
        "encoding": "none",
    })
}

/// The stored event at `offset`, as Segment shapes it, or a stub saying it is gone (retention).
fn event_json(source: &LogRecords, offset: u64, source_id: &str) -> Value {
    let event = source.record(offset).and_then(|payload| {
        let envelope = tandem_core::envelope::EventEnvelope::decode(&payload).ok()?;
        serde_json::from_slice::<Value>(envelope.json).ok()
    });
    match event {
        Some(mut event) => {
            event["source_id"] = json!(source_id);
            event
        }
        None => json!({"source_id": source_id, "expired": true}),
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A profile's traits with its computed traits (which win over a plain trait of the same name).
fn with_computed(profile: &ProfileRow) -> std::collections::BTreeMap<String, TraitRow> {
    let mut all = profile.traits.clone();
    for (name, json) in &profile.computed {
        let provenance = Provenance {
            source: "computed".into(),
            message_id: profile.last_message_id.clone(),
            time_ms: profile.last_message_ms,
            offset: 0,
        };
        all.insert(
            name.clone(),
            TraitRow {
                json: json.clone(),
                provenance,
            },
        );
    }
    all
}

/// `prof_…` or `type:value`.
pub(crate) fn find_profile(workspace: &Workspace, id: &str) -> ApiResult<ProfileRow> {
    let store = workspace.unify.store();
    let found = if let Some(profile_id) = parse_profile_id(id) {
        store.read(|kv| query::resolve_profile(kv, profile_id))
    } else if let Some(identity) = Identity::parse_path(id) {
        store.read(|kv| query::profile_by_identity(kv, &identity))
    } else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "name a profile by its id (`prof_…`) or an identifier (`type:value`)",
        ));
    };
    found
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("profile {id}")))
}

/// The 360° view of a profile, PII masked unless `sight` is clear.
fn profile_json(workspace: &Workspace, profile: &ProfileRow, sight: Sight) -> ApiResult<Value> {
    let mut view = profile_view_json(workspace, profile)?;
    if sight == Sight::Masked {
        let pii = &workspace.pii;
        for (name, entry) in view["traits"].as_object_mut().into_iter().flatten() {
            sight.trait_value(pii, name, &mut entry["value"]);
        }
        for (name, value) in view["computed_traits"]
            .as_object_mut()
            .into_iter()
            .flatten()
        {
            sight.trait_value(pii, name, value);
        }
        sight.anything(pii, &mut view["identities"]);
        sight.anything(pii, &mut view["merges"]);
    }
    Ok(view)
}

/// The 360° view in clear (the masking of [`profile_json`] aside): also an access request's.
pub(crate) fn profile_view_json(workspace: &Workspace, profile: &ProfileRow) -> ApiResult<Value> {
    let (merges, timeline, memberships) = workspace
        .unify
        .store()
        .read(|kv| {
            Ok((
                query::merges(kv, profile.id, PROFILE_API_LIMIT_MAX)?,
                query::timeline(kv, profile.id, None, PROFILE_API_LIMIT_DEFAULT)?,
                tandem_audiences::state::profile_audiences(kv, profile.id)?,
            ))
        })
        .map_err(store_error)?;
    let set = workspace.audiences.set();
    let audiences: Vec<Value> = memberships
        .memberships
        .iter()
        .map(|(id, entered_at_ms)| {
            json!({
                "id": id,
                "name": set.get(id).map(|a| a.name.clone()),
                "entered_at": format_iso8601_ms(*entered_at_ms),
            })
        })
        .collect();
    let traits: Map<String, Value> = profile
        .traits
        .iter()
        .map(|(name, row)| {
            let mut value = provenance_json(&row.provenance);
            value["value"] = trait_value(row);
            (name.clone(), value)
        })
        .collect();
    Ok(json!({
        "id": format_profile_id(profile.id),
        "identities": profile.identities.iter().map(|(identity, seen)| json!({
            "type": identity.kind, "id": identity.value, "first_seen": provenance_json(seen)
        })).collect::<Vec<_>>(),
        "traits": traits,
        "computed_traits": profile.computed.iter().map(|(name, json)| {
            (name.clone(), serde_json::from_str::<Value>(json).unwrap_or(Value::Null))
        }).collect::<Map<String, Value>>(),
        "accounts": profile.groups,
        "audiences": audiences,
        "consent": crate::routes::consent::consent_json(workspace, profile)?,
        "metadata": {
            "created_at": format_iso8601_ms(profile.created.time_ms),
            "first_message_at": format_iso8601_ms(profile.first_message_ms),
            "last_message_at": format_iso8601_ms(profile.last_message_ms),
            "last_source_id": profile.last_source,
            "last_message_id": profile.last_message_id,
            "events": profile.event_count,
            "merged_profiles": profile.merges,
        },
        "merges": merges.iter().map(|merge| json!({
            "absorbed": format_profile_id(merge.absorbed),
            "through": merge.through,
            "event_type": merge.event_type,
            "event": provenance_json(&merge.provenance),
        })).collect::<Vec<_>>(),
        "recent_events": timeline.iter().map(|(_, row)| json!({
            "type": row.event_type, "name": row.name, "message_id": row.message_id,
            "source_id": row.source, "offset": row.offset,
        })).collect::<Vec<_>>(),
    }))
}

async fn profile_view(
    State(state): State<AppState>,
    auth: Authorized<ReadProfiles>,
    Path((workspace_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let profile = find_profile(workspace, &id)?;
    let sight = Sight::of(&auth.principal);
    Ok(Json(profile_json(workspace, &profile, sight)?))
}

#[derive(Deserialize)]
struct SearchQuery {
    identifier: Option<String>,
    #[serde(rename = "trait")]
    trait_name: Option<String>,
    value: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn search_profiles(
    State(state): State<AppState>,
    auth: Authorized<ReadProfiles>,
    Path(workspace_id): Path<String>,
    Query(search): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let sight = Sight::of(&auth.principal);
    let limit = page_limit(search.limit)?;
    if let Some(identifier) = search.identifier {
        let profiles = match find_profile(workspace, &identifier) {
            Ok(profile) => vec![profile_json(workspace, &profile, sight)?],
            Err(error) if error.code == ErrorCode::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        return Ok(Json(json!({"profiles": profiles, "next": Value::Null})));
    }
    let (Some(name), Some(raw)) = (search.trait_name, search.value) else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "search with `identifier=type:value`, or `trait=name&value=…` (JSON, or a plain string)",
        ));
    };
    let value: Value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
    // Matching a masked trait by value would tell its value: the search needs ReadPii then.
    if sight == Sight::Masked {
        if let Some(category) =
            workspace
                .pii
                .classifier
                .classify(&["traits", &name], &value, Some("identify"))
        {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "trait `{name}` holds PII ({category}): searching by its value needs permission ReadPii"
                ),
            ));
        }
    }
    let after = search.after.as_deref().and_then(parse_profile_id);
    let (found, scanned_to) = workspace
        .unify
        .store()
        .read(|kv| query::search_by_trait(kv, &name, &value, after, limit, TRAIT_SEARCH_SCAN_MAX))
        .map_err(store_error)?;
    let profiles = found
        .iter()
        .map(|profile| profile_json(workspace, profile, sight))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({
        "profiles": profiles,
        "next": scanned_to.map(format_profile_id),
    })))
}

#[derive(Deserialize)]
struct ExplainQuery {
    a: String,
    b: String,
}

async fn explain(
    State(state): State<AppState>,
    auth: Authorized<ReadProfiles>,
    Path(workspace_id): Path<String>,
    Query(params): Query<ExplainQuery>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let parse = |text: &str| {
        Identity::parse_path(text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`{text}` is not `type:value`"),
            )
        })
    };
    let (a, b) = (parse(&params.a)?, parse(&params.b)?);
    let explanation = workspace
        .unify
        .store()
        .read(|kv| query::explain(kv, &a, &b))
        .map_err(store_error)?;
    let mut answer = serde_json::to_value(explanation).map_err(ApiError::internal)?;
    Sight::of(&auth.principal).anything(&workspace.pii, &mut answer);
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

/// The newest rows a listing query gives (at most `limit`), from a consistent snapshot.
fn newest<T>(
    state: &AppState,
    workspace_id: &str,
    limit: Option<usize>,
    list: fn(&Snapshot, usize) -> Result<Vec<T>, KvError>,
) -> ApiResult<Vec<T>> {
    let workspace = state.workspace(workspace_id)?;
    let limit = page_limit(limit).unwrap_or(PROFILE_API_LIMIT_MAX);
    workspace
        .unify
        .store()
        .read(|kv| list(kv, limit))
        .map_err(store_error)
}

async fn refusals(
    State(state): State<AppState>,
    auth: Authorized<ReadProfiles>,
    Path(workspace_id): Path<String>,
    Query(params): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let rows = newest(&state, &workspace_id, params.limit, |kv, limit| {
        query::refusals(kv, limit)
    })?;
    let data: Vec<Value> = rows
        .iter()
        .map(|refusal| json!({
            "dropped": refusal.dropped,
            "rule": refusal.rule,
            "profiles": refusal.profiles.iter().map(|p| format_profile_id(*p)).collect::<Vec<_>>(),
            "event": provenance_json(&refusal.provenance),
        }))
        .collect();
    let mut answer = json!({"refusals": data});
    Sight::of(&auth.principal).anything(&state.workspace(&workspace_id)?.pii, &mut answer);
    Ok(Json(answer))
}

fn split_json(split: &model::SplitRow) -> Value {
    json!({
        "id": split.id,
        "profile": format_profile_id(split.profile),
        "separated": split.separated,
        "rest": split.rest,
        "requested_by": split.requested_by,
        "reason": split.reason,
        "at": format_iso8601_ms(split.at_ms),
        "result": split.result.iter().map(|p| format_profile_id(*p)).collect::<Vec<_>>(),
        "events_reapplied": split.events,
    })
}

async fn splits(
    State(state): State<AppState>,
    auth: Authorized<ReadProfiles>,
    Path(workspace_id): Path<String>,
    Query(params): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let rows = newest(&state, &workspace_id, params.limit, |kv, limit| {
        query::splits(kv, limit)
    })?;
    let mut answer = json!({"splits": rows.iter().map(split_json).collect::<Vec<_>>()});
    Sight::of(&auth.principal).anything(&state.workspace(&workspace_id)?.pii, &mut answer);
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct SplitBody {
    identities: Vec<Identity>,
    #[serde(default)]
    reason: String,
}

async fn split_profile(
    State(state): State<AppState>,
    auth: Authorized<ManageIdentity>,
    Path((workspace_id, id)): Path<(String, String)>,
    body: Result<Json<SplitBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{rejection}; expected {{\"identities\": [{{\"type\": \"anonymous_id\", \"id\": \"…\"}}], \"reason\": \"…\"}}"),
        )
    })?;
    let workspace = state.workspace(&workspace_id)?;
    let profile = find_profile(workspace, &id)?;
    if body.identities.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "name the identities to separate",
        ));
    }
    let control = json!({
        "control": "split",
        "profileId": format_profile_id(profile.id),
        "identities": body.identities,
        "requestedBy": auth.principal.name(),
        "reason": body.reason,
    });
    let record = control_record(&control, time_util::now_ms());
    let pending = workspace.log.append(vec![record]).map_err(ApiError::from)?;
    let offsets = pending.await.map_err(ApiError::from)?;
    let offset = offsets.start;
    auth.audit(
        &state,
        "profile.split",
        Some(&workspace_id),
        format!("profile {}", format_profile_id(profile.id)),
        None,
        Some(json!({"control": control, "log_offset": offset})),
    )
    .await?;
    if !workspace
        .unify
        .wait_applied(offset, Duration::from_secs(SPLIT_WAIT_SECONDS))
        .await
    {
        return Ok((
            StatusCode::ACCEPTED,
            Json(
                json!({"status": "pending", "offset": offset, "splits": format!("/api/v1/workspaces/{workspace_id}/identity/splits")}),
            ),
        ));
    }
    let outcome: Option<ControlOutcome> = workspace
        .unify
        .store()
        .read(|kv| model::get(kv, Table::Meta, &control_outcome_key(offset)))
        .map_err(store_error)?;
    match outcome {
        Some(ControlOutcome::Split(split)) => {
            Ok((StatusCode::OK, Json(json!({"split": split_json(&split)}))))
        }
        Some(ControlOutcome::Failed(message)) => {
            Err(ApiError::new(ErrorCode::InvalidRequest, message))
        }
        Some(ControlOutcome::Erased { .. }) | None => Err(ApiError::internal(
            "the split was applied but left no outcome",
        )),
    }
}

async fn unify_status(
    State(state): State<AppState>,
    _auth: Authorized<ReadProfiles>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let applied = *workspace.unify.applied.borrow();
    let end = workspace.log.stats().end_offset;
    let profiles = workspace
        .unify
        .store()
        .read(|kv| Ok(kv.scan(Table::Profiles, &[], None, false, 1)?.len()))
        .map_err(store_error)?;
    let rules = workspace.unify.rules();
    Ok(Json(json!({
        "rules_fingerprint": rules.fingerprint(),
        "rebuild": *workspace.unify.rebuild.read(),
        "applied_offset": applied,
        "log_end_offset": end,
        "lag_records": end.saturating_sub(applied),
        "has_profiles": profiles > 0,
    })))
}

#[derive(Deserialize)]
struct TokenBody {
    name: String,
}

async fn create_token(
    State(state): State<AppState>,
    auth: Authorized<ManageAccessTokens>,
    Path(workspace_id): Path<String>,
    body: Result<Json<TokenBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{rejection}; expected {{\"name\": \"…\"}}"),
        )
    })?;
    state.workspace(&workspace_id)?;
    if body.name.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "a token needs a name (what uses it)",
        ));
    }
    let (record, secret) =
        state
            .access_tokens
            .create(&workspace_id, body.name.trim(), &auth.principal.name())?;
    auth.audit(
        &state,
        "access_token.create",
        Some(&workspace_id),
        format!("access token {}", record.id),
        None,
        Some(json!({"id": record.id, "name": record.name, "workspace_id": record.workspace_id})),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id, "name": record.name, "workspace_id": record.workspace_id,
            "token": secret,
            "note": "shown once: store it now",
        })),
    ))
}

async fn list_tokens(
    State(state): State<AppState>,
    _auth: Authorized<ManageAccessTokens>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    state.workspace(&workspace_id)?;
    let tokens: Vec<Value> = state
        .access_tokens
        .list(&workspace_id)
        .into_iter()
        .map(|t| json!({"id": t.id, "name": t.name, "created_at": format_iso8601_ms(t.created_at_ms), "created_by": t.created_by, "revoked": t.revoked}))
        .collect();
    Ok(Json(json!({"access_tokens": tokens})))
}

async fn revoke_token(
    State(state): State<AppState>,
    auth: Authorized<ManageAccessTokens>,
    Path((workspace_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state.workspace(&workspace_id)?;
    let record = state.access_tokens.revoke(&workspace_id, &id)?;
    auth.audit(
        &state,
        "access_token.revoke",
        Some(&workspace_id),
        format!("access token {}", record.id),
        Some(json!({"revoked": false})),
        Some(json!({"revoked": true})),
    )
    .await?;
    Ok(Json(json!({"id": record.id, "revoked": true})))
}

fn rules_owner(state: &AppState, workspace_id: &str) -> &'static str {
    let declared = state
        .config
        .workspaces
        .iter()
        .find(|w| w.id == workspace_id)
        .map(UnifyRules::of)
        .unwrap_or_default();
    if !declared.is_default() {
        "config"
    } else {
        "api"
    }
}

/// The identity rules and computed traits a workspace runs with, and who manages them.
async fn get_rules(
    State(state): State<AppState>,
    _auth: Authorized<ReadProfiles>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    let rules = workspace.unify.rules();
    let engine = workspace.unify.engine();
    let mut kinds: Vec<(String, tandem_unify::identity::KindRule)> =
        tandem_unify::identity::DEFAULT_RULES
            .iter()
            .map(|(kind, _)| kind.to_string())
            .chain(rules.identity.identifiers.iter().map(|i| i.kind.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|kind| {
                let rule = engine.rules.rule(&kind);
                (kind, rule)
            })
            .collect();
    kinds.sort_by_key(|(kind, rule)| (rule.priority, kind.clone()));
    Ok(Json(json!({
        "managed_by": rules_owner(&state, &workspace_id),
        "rules": rules,
        "effective_identifiers": kinds.iter().map(|(kind, rule)| json!({
            "type": kind, "priority": rule.priority, "limit": rule.limit,
            "window_days": rule.window_ms.map(|ms| ms / 86_400_000),
        })).collect::<Vec<_>>(),
        "blocked_values": engine.rules.blocked_patterns(),
        "fingerprint": rules.fingerprint(),
        "rebuild": *workspace.unify.rebuild.read(),
    })))
}

/// Replaces the rules (when the config file does not declare them) and rebuilds the profiles
/// from the log under them, online: the current profiles answer until the new ones caught up.
async fn put_rules(
    State(state): State<AppState>,
    auth: Authorized<ManageIdentity>,
    Path(workspace_id): Path<String>,
    body: Result<Json<UnifyRules>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let workspace = state.workspace(&workspace_id)?;
    let Json(rules) = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{rejection}; expected {{\"identity\": {{…}}, \"computed_traits\": […]}} as in the config file"),
        )
    })?;
    if rules_owner(&state, &workspace_id) == "config" {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this workspace's rules are declared in the config file; change them there",
        ));
    }
    let problems = tandem_config::validate_unify_rules(&rules.identity, &rules.computed_traits);
    if !problems.is_empty() {
        let details: Vec<Value> = problems
            .iter()
            .map(|p| json!({"path": p.path, "message": p.message}))
            .collect();
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{} problem(s) in the rules", problems.len()),
        )
        .with_details(json!({"problems": details})));
    }
    if rules == workspace.unify.rules() {
        return Ok((StatusCode::OK, Json(json!({"status": "unchanged"}))));
    }
    workspace
        .unify
        .request_rebuild(rules.clone())
        .map_err(|message| ApiError::new(ErrorCode::InvalidRequest, message))?;
    let before = workspace.unify.rules();
    save_rules(state.store.as_ref(), &workspace_id, &rules)?;
    auth.audit(
        &state,
        "unify_rules.update",
        Some(&workspace_id),
        format!("unify rules of {workspace_id}"),
        serde_json::to_value(&before).ok(),
        serde_json::to_value(&rules).ok(),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "rebuilding",
            "fingerprint": rules.fingerprint(),
            "progress": format!("/api/v1/workspaces/{workspace_id}/unify"),
        })),
    ))
}
