//! Users, sessions and management API tokens:
//! `POST /api/v1/auth/login`, `POST /api/v1/auth/logout`, `GET /api/v1/me`, `GET /api/v1/roles`,
//! `/api/v1/users[/{id}]` (organization admins), `/api/v1/tokens[/{id}]` (organization-wide) and
//! `/api/v1/workspaces/{workspace}/tokens[/{id}]` (a workspace admin's own workspace).
//!
//! Life of a login: the password is checked against the user's argon2 hash (an unknown email
//! costs the same argon2 run, so timing does not tell which emails exist); a session id
//! `tdm_sess_…` of 32 random bytes is made, its SHA-256 stored with the user, expiry
//! (`SESSION_TTL_MS`), IP and user agent; the id goes back once, in the body and as the
//! `tandem_session` cookie (HttpOnly, SameSite=Strict, Secure over https). Each request resolves
//! the session to the user *now* — a role change or removal applies at once. Success and failure
//! are audited.

use crate::auth::{
    authorize, csrf_token, hash_argon2, same_origin, secret_digest, session_cookie, verify_argon2,
    Authorized, Credential, ManageApiTokens, ManageUsers, Permission, Principal, ReadSelf,
    RequestInfo, Role, Scope, API_TOKEN_PREFIX, SESSION_COOKIE, SESSION_PREFIX,
};
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::OnceLock;
use tandem_audit::{Actor, AuditEvent};
use tandem_core::limits::{
    API_TOKENS_MAX, API_TOKEN_EXPIRY_DAYS_MAX, PASSWORD_BYTES_MAX, PASSWORD_CHARS_MIN,
    SESSION_TTL_MS, USERS_MAX,
};
use tandem_core::{ids, time_util, ErrorCode};
use tandem_store::{ApiTokenRecord, SessionRecord, UserRecord};

/// Expiry of a token created without `expires_in_days`.
pub const API_TOKEN_EXPIRY_DAYS_DEFAULT: i64 = 90;

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/roles", get(roles))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route(
            "/api/v1/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route(
            "/api/v1/tokens",
            get(list_org_tokens).post(create_org_token),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(revoke_org_token),
        )
        .route(
            "/api/v1/workspaces/{workspace}/tokens",
            get(list_workspace_tokens).post(create_workspace_token),
        )
        .route(
            "/api/v1/workspaces/{workspace}/tokens/{id}",
            axum::routing::delete(revoke_workspace_token),
        )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

fn body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
    expected: &str,
) -> ApiResult<T> {
    body.map(|Json(value)| value)
        .map_err(|rejection| invalid(format!("{}; expected {expected}", rejection.body_text())))
}

fn iso(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        Value::String(time_util::format_iso8601_ms(ms))
    })
}

// ---- login, logout, me, roles ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

/// A hash to verify against when the email is unknown, so that case costs the same time.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_argon2("decoy password, never valid").expect("argon2 hashes"))
}

fn session_cookie_header(value: &str, max_age_seconds: i64, https: bool) -> HeaderValue {
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}{secure}"
    ))
    .expect("cookie values are ASCII")
}

async fn login(
    State(state): State<AppState>,
    parts: Parts,
    credentials: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let request = RequestInfo::of(&parts, &state);
    // Login CSRF: another site must not log a browser in (as someone else) behind its back.
    if !same_origin(&parts.headers, &state) {
        return Err(ApiError::new(
            ErrorCode::CsrfRejected,
            "a login from another origin is refused",
        ));
    }
    let credentials = body(credentials, r#"{"email": "…", "password": "…"}"#)?;
    if credentials.password.len() > PASSWORD_BYTES_MAX {
        return Err(invalid(format!(
            "a password is at most {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    let user = state
        .store
        .users()?
        .into_iter()
        .find(|user| user.email.eq_ignore_ascii_case(credentials.email.trim()));
    let hash = user.as_ref().map_or_else(
        || decoy_hash().to_string(),
        |user| user.password_argon2.clone(),
    );
    let password = credentials.password.clone();
    let verified = tokio::task::spawn_blocking(move || verify_argon2(&hash, &password))
        .await
        .map_err(ApiError::internal)?;
    let (Some(user), true) = (user, verified) else {
        let actor = Actor {
            kind: "anonymous".into(),
            id: None,
            name: credentials.email.trim().to_string(),
            role: None,
            scope: None,
        };
        let event = AuditEvent {
            resource: Some("session".into()),
            ..request.event(actor, "auth.login", "failure")
        };
        crate::routes::audit::record(&state, event).await?;
        return Err(ApiError::new(
            ErrorCode::InvalidToken,
            "the email or the password is wrong",
        ));
    };
    let role = Role::parse(&user.role);
    let now = time_util::now_ms();
    let secret = format!("{SESSION_PREFIX}{}", ids::random_secret(32));
    let session = SessionRecord {
        sha256: secret_digest(&secret),
        user_id: user.id.clone(),
        created_at_ms: now,
        expires_at_ms: now + SESSION_TTL_MS,
        ip: request.ip.clone(),
        user_agent: request.user_agent.clone(),
    };
    state.store.put_session(&session, now)?;
    let principal = Principal {
        credential: Credential::Session {
            user_id: user.id.clone(),
            email: user.email.clone(),
        },
        role: role.unwrap_or(Role::Viewer),
        scope: Scope::from_workspace(user.workspace_id.clone()),
    };
    let event = AuditEvent {
        workspace: user.workspace_id.clone(),
        resource: Some(format!("user {}", user.id)),
        details: Some(json!({"session_expires_at": iso(Some(session.expires_at_ms))})),
        ..request.event(principal.actor(), "auth.login", "success")
    };
    crate::routes::audit::record(&state, event).await?;
    let mut response = Json(json!({
        "session": secret,
        "csrf_token": csrf_token(&secret),
        "expires_at": iso(Some(session.expires_at_ms)),
        "user": user_view(&user),
        "note": "also set as the tandem_session cookie; send it as `Authorization: Bearer` from scripts",
    }))
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie_header(&secret, SESSION_TTL_MS / 1000, request.https),
    );
    Ok(response)
}

async fn logout(
    State(state): State<AppState>,
    auth: Authorized<ReadSelf>,
    parts: Parts,
) -> ApiResult<Response> {
    if !matches!(auth.principal.credential, Credential::Session { .. }) {
        return Err(invalid(
            "logout ends a login session; tokens are revoked instead (DELETE /api/v1/tokens/{id})",
        ));
    }
    let secret = session_secret(&parts).ok_or_else(|| invalid("no session to end"))?;
    state.store.delete_session(&secret_digest(&secret))?;
    auth.audit(
        &state,
        "auth.logout",
        auth.principal.scope.workspace(),
        "session".into(),
        None,
        None,
    )
    .await?;
    let mut response = Json(json!({"logged_out": true})).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie_header("", 0, auth.request.https),
    );
    Ok(response)
}

async fn me(
    State(state): State<AppState>,
    auth: Authorized<ReadSelf>,
    parts: Parts,
) -> ApiResult<Json<Value>> {
    let mut view = auth.principal.to_json();
    if let Credential::Session { user_id, .. } = &auth.principal.credential {
        if let Some(user) = state.store.user(user_id)? {
            view["user"] = user_view(&user);
        }
        // The console reloads with only the (HttpOnly) cookie: this is how it learns the token
        // its changes must carry. Another origin cannot read this answer.
        if let Some(secret) = session_secret(&parts) {
            view["csrf_token"] = Value::String(csrf_token(&secret));
        }
    }
    Ok(Json(view))
}

/// The session secret the request presented: a bearer `tdm_sess_…`, else the cookie.
fn session_secret(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|v| v.trim().to_string())
        .filter(|v| v.starts_with(SESSION_PREFIX))
        .or_else(|| session_cookie(&parts.headers))
}

/// The role → permission table the server enforces.
pub fn roles_json() -> Value {
    json!({
        "roles": Role::ALL.iter().map(|role| json!({
            "name": role.as_str(),
            "scope": match role {
                Role::OrgAdmin => "organization",
                Role::WorkspaceAdmin => "workspace",
                _ => "organization or workspace",
            },
            "permissions": role.permissions().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "permissions": Permission::ALL.iter().map(|p| json!({
            "name": p.as_str(),
            "roles": p.roles().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

async fn roles(_auth: Authorized<ReadSelf>) -> Json<Value> {
    Json(roles_json())
}

// ---- users ----

fn user_view(user: &UserRecord) -> Value {
    json!({
        "id": user.id, "email": user.email, "name": user.name, "role": user.role,
        "workspace": user.workspace_id,
        "created_at": iso(Some(user.created_at_ms)), "created_by": user.created_by,
        "updated_at": iso(Some(user.updated_at_ms)),
    })
}

fn parse_role(name: &str) -> ApiResult<Role> {
    Role::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        invalid(format!(
            "unknown role `{name}`; roles: {}",
            names.join(", ")
        ))
    })
}

fn check_scope(state: &AppState, role: Role, scope: &Scope) -> ApiResult<()> {
    role.check_scope(scope).map_err(invalid)?;
    if let Scope::Workspace(workspace) = scope {
        if !state.workspaces.contains_key(workspace) {
            return Err(invalid(format!("workspace {workspace} does not exist")));
        }
    }
    Ok(())
}

fn check_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < PASSWORD_CHARS_MIN || password.len() > PASSWORD_BYTES_MAX {
        return Err(invalid(format!(
            "a password has {PASSWORD_CHARS_MIN} characters at least and {PASSWORD_BYTES_MAX} bytes at most"
        )));
    }
    Ok(())
}

async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_argon2(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// A field that is present, even as `null` (`Some(Value::Null)`); absent fields stay `None`
/// through `#[serde(default)]`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// `"workspace": "w"` → Some(Some(w)), `null` → Some(None), absent → None.
fn optional_workspace(value: Option<Value>) -> ApiResult<Option<Option<String>>> {
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(workspace)) => Ok(Some(Some(workspace))),
        Some(other) => Err(invalid(format!(
            "`workspace` is a workspace id or null, not {other}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    #[serde(default)]
    name: String,
    role: String,
    #[serde(default)]
    workspace: Option<String>,
    password: String,
}

async fn list_users(
    State(state): State<AppState>,
    _auth: Authorized<ManageUsers>,
) -> ApiResult<Json<Value>> {
    let mut users = state.store.users()?;
    users.sort_by(|a, b| a.email.cmp(&b.email));
    Ok(Json(
        json!({"users": users.iter().map(user_view).collect::<Vec<_>>()}),
    ))
}

async fn create_user(
    State(state): State<AppState>,
    auth: Authorized<ManageUsers>,
    new: Result<Json<NewUser>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new = body(
        new,
        r#"{"email": "…", "name": "…", "role": "marketer", "workspace": "emea" (or absent: the organization), "password": "…"}"#,
    )?;
    let email = new.email.trim().to_string();
    if !email.contains('@') || email.len() > 254 {
        return Err(invalid(format!("`{email}` is not an email address")));
    }
    let role = parse_role(&new.role)?;
    let scope = Scope::from_workspace(new.workspace);
    check_scope(&state, role, &scope)?;
    check_password(&new.password)?;
    if state.store.users()?.len() >= USERS_MAX {
        return Err(invalid(format!("at most {USERS_MAX} users")));
    }
    let now = time_util::now_ms();
    let user = UserRecord {
        id: ids::random_id("usr"),
        email,
        name: new.name.trim().to_string(),
        role: role.as_str().into(),
        workspace_id: scope.workspace().map(str::to_string),
        password_argon2: hash_password(new.password).await?,
        created_at_ms: now,
        created_by: auth.principal.name(),
        updated_at_ms: now,
    };
    state.store.create_user(&user)?;
    let view = user_view(&user);
    auth.audit(
        &state,
        "user.create",
        user.workspace_id.as_deref(),
        format!("user {}", user.id),
        None,
        Some(view.clone()),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

fn find_user(state: &AppState, id: &str) -> ApiResult<UserRecord> {
    state
        .store
        .user(id)?
        .or_else(|| {
            // Also by email, for the CLI.
            state
                .store
                .users()
                .ok()?
                .into_iter()
                .find(|u| u.email.eq_ignore_ascii_case(id))
        })
        .ok_or_else(|| ApiError::not_found(format!("user {id}")))
}

async fn get_user(
    State(state): State<AppState>,
    _auth: Authorized<ManageUsers>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(user_view(&find_user(&state, &id)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    name: Option<String>,
    role: Option<String>,
    #[serde(default, deserialize_with = "present")]
    workspace: Option<Value>,
    password: Option<String>,
}

async fn update_user(
    State(state): State<AppState>,
    auth: Authorized<ManageUsers>,
    Path(id): Path<String>,
    change: Result<Json<UserChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let change = body(
        change,
        r#"{"name"?, "role"?, "workspace"? (null: the organization), "password"?}"#,
    )?;
    let before = find_user(&state, &id)?;
    let mut user = before.clone();
    if let Some(name) = change.name {
        user.name = name.trim().to_string();
    }
    if let Some(role) = change.role {
        user.role = parse_role(&role)?.as_str().into();
    }
    if let Some(workspace) = optional_workspace(change.workspace)? {
        user.workspace_id = workspace;
    }
    let role = parse_role(&user.role)?;
    check_scope(
        &state,
        role,
        &Scope::from_workspace(user.workspace_id.clone()),
    )?;
    let password_changed = change.password.is_some();
    if let Some(password) = change.password {
        check_password(&password)?;
        user.password_argon2 = hash_password(password).await?;
    }
    user.updated_at_ms = time_util::now_ms();
    state.store.update_user(&user)?;
    let mut after = user_view(&user);
    if password_changed {
        after["password_changed"] = json!(true);
    }
    auth.audit(
        &state,
        "user.update",
        user.workspace_id.as_deref(),
        format!("user {}", user.id),
        Some(user_view(&before)),
        Some(after),
    )
    .await?;
    Ok(Json(user_view(&user)))
}

async fn delete_user(
    State(state): State<AppState>,
    auth: Authorized<ManageUsers>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = find_user(&state, &id)?;
    let removed = state.store.delete_user(&user.id)?;
    let view = user_view(&removed);
    auth.audit(
        &state,
        "user.delete",
        removed.workspace_id.as_deref(),
        format!("user {}", removed.id),
        Some(view.clone()),
        None,
    )
    .await?;
    Ok(Json(
        json!({"removed": view, "note": "their sessions ended"}),
    ))
}

// ---- management API tokens ----

fn token_view(token: &ApiTokenRecord) -> Value {
    let now = time_util::now_ms();
    let status = if token.revoked_at_ms.is_some() {
        "revoked"
    } else if token.expires_at_ms.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    };
    json!({
        "id": token.id, "name": token.name, "role": token.role, "workspace": token.workspace_id,
        "status": status,
        "created_at": iso(Some(token.created_at_ms)), "created_by": token.created_by,
        "expires_at": iso(token.expires_at_ms), "revoked_at": iso(token.revoked_at_ms),
        "last_used_at": iso(token.last_used_at_ms),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    /// Only on `/api/v1/tokens`: absent or null for an organization-wide token.
    #[serde(default)]
    workspace: Option<String>,
    /// Absent: `API_TOKEN_EXPIRY_DAYS_DEFAULT`; null: never expires.
    #[serde(default, deserialize_with = "present")]
    expires_in_days: Option<Value>,
}

const NEW_TOKEN: &str = r#"{"name": "…", "role": "marketer", "expires_in_days": 90 (null: never)}"#;

fn list_tokens(state: &AppState, workspace: Option<&str>) -> ApiResult<Json<Value>> {
    let mut tokens: Vec<ApiTokenRecord> = state
        .store
        .api_tokens()?
        .into_iter()
        .filter(|token| workspace.is_none_or(|w| token.workspace_id.as_deref() == Some(w)))
        .collect();
    tokens.sort_by_key(|token| token.created_at_ms);
    Ok(Json(
        json!({"tokens": tokens.iter().map(token_view).collect::<Vec<_>>()}),
    ))
}

async fn create_token(
    state: &AppState,
    auth: &Authorized<ManageApiTokens>,
    new: NewToken,
    scope: Scope,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = new.name.trim().to_string();
    if name.is_empty() {
        return Err(invalid("a token needs a name (what uses it)"));
    }
    let role = parse_role(&new.role)?;
    check_scope(state, role, &scope)?;
    // Never beyond the creator: no permission they lack, no workspace outside theirs.
    let creator = &auth.principal;
    if let Some(missing) = role.permissions().into_iter().find(|p| !creator.may(*p)) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "a {} token would hold {}, which role {} does not have",
                role.as_str(),
                missing.as_str(),
                creator.role.as_str()
            ),
        ));
    }
    if !scope.within(&creator.scope) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a token cannot reach beyond its creator's workspace",
        ));
    }
    let expires_in_days = match new.expires_in_days {
        None => Some(API_TOKEN_EXPIRY_DAYS_DEFAULT),
        Some(Value::Null) => None,
        Some(value) => match value.as_i64() {
            Some(days) if (1..=API_TOKEN_EXPIRY_DAYS_MAX).contains(&days) => Some(days),
            _ => {
                return Err(invalid(format!(
                    "`expires_in_days` is 1..={API_TOKEN_EXPIRY_DAYS_MAX}, or null for a token that never expires"
                )))
            }
        },
    };
    if state.store.api_tokens()?.len() >= API_TOKENS_MAX {
        return Err(invalid(format!(
            "at most {API_TOKENS_MAX} tokens; revoke unused ones first"
        )));
    }
    let now = time_util::now_ms();
    let secret = format!("{API_TOKEN_PREFIX}{}", ids::random_secret(32));
    let token = ApiTokenRecord {
        id: ids::random_id("tok").to_lowercase(),
        name,
        role: role.as_str().into(),
        workspace_id: scope.workspace().map(str::to_string),
        sha256: secret_digest(&secret),
        created_at_ms: now,
        created_by: creator.name(),
        expires_at_ms: expires_in_days.map(|days| now + days * 86_400_000),
        revoked_at_ms: None,
        last_used_at_ms: None,
    };
    state.store.put_api_token(&token)?;
    let view = token_view(&token);
    auth.audit(
        state,
        "token.create",
        token.workspace_id.as_deref(),
        format!("token {}", token.id),
        None,
        Some(view.clone()),
    )
    .await?;
    let mut answer = view;
    answer["token"] = Value::String(secret);
    answer["note"] = Value::String("shown once: tandem keeps only its SHA-256".into());
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn revoke_token(
    state: &AppState,
    auth: &Authorized<ManageApiTokens>,
    id: &str,
    workspace: Option<&str>,
) -> ApiResult<Json<Value>> {
    let before = state
        .store
        .api_tokens()?
        .into_iter()
        .find(|token| {
            token.id == id && workspace.is_none_or(|w| token.workspace_id.as_deref() == Some(w))
        })
        .ok_or_else(|| ApiError::not_found(format!("token {id}")))?;
    let mut token = before.clone();
    if token.revoked_at_ms.is_none() {
        token.revoked_at_ms = Some(time_util::now_ms());
        state.store.put_api_token(&token)?;
    }
    let view = token_view(&token);
    auth.audit(
        state,
        "token.revoke",
        token.workspace_id.as_deref(),
        format!("token {}", token.id),
        Some(token_view(&before)),
        Some(view.clone()),
    )
    .await?;
    Ok(Json(view))
}

async fn list_org_tokens(
    State(state): State<AppState>,
    _auth: Authorized<ManageApiTokens>,
) -> ApiResult<Json<Value>> {
    list_tokens(&state, None)
}

async fn create_org_token(
    State(state): State<AppState>,
    auth: Authorized<ManageApiTokens>,
    new: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new = body(
        new,
        r#"{"name": "…", "role": "…", "workspace": "emea" (absent: the organization), "expires_in_days": 90}"#,
    )?;
    let scope = Scope::from_workspace(new.workspace.clone());
    create_token(&state, &auth, new, scope).await
}

async fn revoke_org_token(
    State(state): State<AppState>,
    auth: Authorized<ManageApiTokens>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    revoke_token(&state, &auth, &id, None).await
}

fn require_workspace(state: &AppState, workspace: &str) -> ApiResult<()> {
    if state.workspaces.contains_key(workspace) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("workspace {workspace}")))
    }
}

async fn list_workspace_tokens(
    State(state): State<AppState>,
    _auth: Authorized<ManageApiTokens>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    require_workspace(&state, &workspace)?;
    list_tokens(&state, Some(&workspace))
}

async fn create_workspace_token(
    State(state): State<AppState>,
    auth: Authorized<ManageApiTokens>,
    Path(workspace): Path<String>,
    new: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_workspace(&state, &workspace)?;
    let new = body(new, NEW_TOKEN)?;
    if new.workspace.as_deref().is_some_and(|w| w != workspace) {
        return Err(invalid("the workspace is the one in the path"));
    }
    create_token(&state, &auth, new, Scope::Workspace(workspace)).await
}

async fn revoke_workspace_token(
    State(state): State<AppState>,
    auth: Authorized<ManageApiTokens>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    require_workspace(&state, &workspace)?;
    revoke_token(&state, &auth, &id, Some(&workspace)).await
}

/// Whether a principal may use the Profile API of `workspace` through a bearer credential.
pub fn may_read_profiles(principal: &Principal, workspace: &str) -> ApiResult<()> {
    authorize(principal, Permission::ReadProfiles, Some(workspace))
}
