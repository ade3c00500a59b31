//! Who may do what, where: the management API's authorization as a typed extractor.
//!
//! A handler that takes `Authorized<ManageSources>` cannot run unless the caller holds that
//! permission, so a route cannot forget to check; there is no extractor that grants without a
//! permission (deny by default). The same extractor checks the **workspace**: when the route has
//! a `{workspace}` (or `{ws}`) path parameter, it reads it itself (`RawPathParams`) and refuses a
//! credential scoped to another workspace — every workspace route is checked by construction.
//! A route without one acts on the whole organization: only organization-wide credentials pass,
//! except for [`Permission::ReadSelf`] (`/api/v1/me`, logout).
//!
//! Credentials, each resolved to a [`Principal`] = credential + [`Role`] + [`Scope`]:
//! * the admin token (`TANDEM_ADMIN_TOKEN`, or generated at first start; argon2 hash): the
//!   break-glass organization admin;
//! * management API tokens `tdm_tok_…` (role + workspace or organization, SHA-256, expiry,
//!   revocable, `last_used_at`), sent as `Authorization: Bearer`;
//! * login sessions `tdm_sess_…` of users (argon2 passwords), sent as the `tandem_session`
//!   cookie or as `Authorization: Bearer`.
//!
//! The role → permission table is [`permissions!`] below: one line per permission naming the
//! roles that hold it. A new permission is one line there and `Authorized<NewPermission>` in the
//! handlers; the access matrix test (`tandem-cli/tests/access_matrix.rs`) picks it up from the
//! OpenAPI document (`x-tandem-permission`) and `GET /api/v1/roles`.

use crate::error::ApiError;
use crate::state::AppState;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use tandem_audit::{Actor, AuditEvent};
use tandem_core::limits::TOKEN_LAST_USED_WRITE_INTERVAL_MS;
use tandem_core::{ids, time_util, ErrorCode};
use tandem_store::MetadataStore;

/// The roles of an organization, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// IT: everything, in every workspace; the only role that manages users.
    OrgAdmin,
    /// Everything inside one workspace except users and the audit log.
    WorkspaceAdmin,
    /// Sources, imports, live debugging, profiles, destinations and connections, deliveries, audiences, personalization.
    Marketer,
    /// Profiles (for DSR), consent, data-subject requests, the catalog and the audit log.
    PrivacyOfficer,
    /// The catalog, operational figures and profiles with every PII-classified value masked.
    Analyst,
    /// Read-only: the catalog and operational state.
    Viewer,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::OrgAdmin,
        Role::WorkspaceAdmin,
        Role::Marketer,
        Role::PrivacyOfficer,
        Role::Analyst,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::OrgAdmin => "org_admin",
            Role::WorkspaceAdmin => "workspace_admin",
            Role::Marketer => "marketer",
            Role::PrivacyOfficer => "privacy_officer",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|role| role.as_str() == name)
    }

    pub fn permissions(self) -> Vec<Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(|permission| permission.roles().contains(&self))
            .collect()
    }

    pub fn may(self, permission: Permission) -> bool {
        permission.roles().contains(&self)
    }

    /// Whether a credential with this role may have `scope`: an organization admin is
    /// organization-wide, a workspace admin belongs to one workspace, the others may be either.
    pub fn check_scope(self, scope: &Scope) -> Result<(), String> {
        match (self, scope) {
            (Role::OrgAdmin, Scope::Workspace(_)) => {
                Err("org_admin is organization-wide: give no workspace".into())
            }
            (Role::WorkspaceAdmin, Scope::Organization) => {
                Err("workspace_admin belongs to one workspace: name it".into())
            }
            _ => Ok(()),
        }
    }
}

/// Declares the permissions, their marker types for `Authorized<P>`, and which roles hold each.
macro_rules! permissions {
    ($( $(#[$doc:meta])* $name:ident => [$($role:ident),* $(,)?] ),* $(,)?) => {
        /// What a caller may do. Each management route names exactly one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum Permission { $( $(#[$doc])* $name ),* }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$name),*];
            /// The name used in the OpenAPI document (`x-tandem-permission`) and in errors.
            pub fn as_str(self) -> &'static str { match self { $(Permission::$name => stringify!($name)),* } }
            pub fn parse(name: &str) -> Option<Permission> {
                Permission::ALL.iter().copied().find(|p| p.as_str() == name)
            }
            /// The roles holding this permission.
            pub fn roles(self) -> &'static [Role] { match self { $(Permission::$name => &[$(Role::$role),*]),* } }
        }

        $(
            #[doc = concat!("Requires [`Permission::", stringify!($name), "`].")]
            pub struct $name;
            impl RequiredPermission for $name { const PERMISSION: Permission = Permission::$name; }
        )*
    };
}

/// Marker types naming a permission at the type level, for `Authorized<P>`.
pub trait RequiredPermission: Send + Sync + 'static {
    const PERMISSION: Permission;
}

permissions! {
    /// Who am I (`/api/v1/me`), the role table, logging out: every role.
    ReadSelf => [OrgAdmin, WorkspaceAdmin, Marketer, PrivacyOfficer, Analyst, Viewer],
    /// List workspaces, sources, the catalog, unknown-key traffic.
    ReadCatalog => [OrgAdmin, WorkspaceAdmin, Marketer, PrivacyOfficer, Analyst, Viewer],
    /// Read log positions, consumer lag and other operational state.
    ReadOperations => [OrgAdmin, WorkspaceAdmin, Marketer, Analyst, Viewer],
    /// Create, enable, disable sources (and see a write key once, at creation); import files.
    ManageSources => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// Watch the live event stream of a source (event payloads: personal data).
    ReadLiveEvents => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// Read profiles, identities, explanations (personal data: values the workspace classifies as
    /// PII are masked unless the caller also holds ReadPii).
    ReadProfiles => [OrgAdmin, WorkspaceAdmin, Marketer, PrivacyOfficer, Analyst],
    /// See PII-classified values (emails, phones, names, …) in clear in profile answers; without
    /// it they are masked (`tandem_pii::mask`). Asked by the profile routes, not a route of its own.
    ReadPii => [OrgAdmin, WorkspaceAdmin, PrivacyOfficer],
    /// Record a person's consent preferences on their behalf (a `Consent Preference Updated`
    /// event in the log, with who recorded it).
    ManageConsent => [OrgAdmin, WorkspaceAdmin, PrivacyOfficer],
    /// Split profiles (undo merges), change the identity rules.
    ManageIdentity => [OrgAdmin, WorkspaceAdmin],
    /// Create and revoke Profile API access tokens.
    ManageAccessTokens => [OrgAdmin, WorkspaceAdmin],
    /// Create, list and revoke management API tokens (never beyond the creator's own role and scope).
    ManageApiTokens => [OrgAdmin, WorkspaceAdmin],
    /// Create, change and remove users.
    ManageUsers => [OrgAdmin],
    /// Read, export and verify the audit log.
    ReadAudit => [OrgAdmin, PrivacyOfficer],
    /// List destination types, destinations, connections with their delivery status, backfill and
    /// replay progress, alerts (no event payloads).
    ReadDestinations => [OrgAdmin, WorkspaceAdmin, Marketer, PrivacyOfficer, Analyst, Viewer],
    /// Read dead letters: the events a destination refused, with their payloads (personal data).
    ReadDeadLetters => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// Create, change and delete destinations and connections.
    ManageDestinations => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// Replay and discard dead letters, start backfills.
    ManageDeliveries => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// List tracking plans, their schemas and violation counters (field names and samples'
    /// messages, no event payloads): everyone who reads the catalog.
    ReadTrackingPlans => [OrgAdmin, WorkspaceAdmin, Marketer, PrivacyOfficer, Analyst, Viewer],
    /// Create, change and delete tracking plans, infer drafts, and force the release of
    /// quarantined events that still violate: IT sets the guardrails.
    ManageTrackingPlans => [OrgAdmin, WorkspaceAdmin],
    /// Set, remove and roll back organization policies (the guardrails every workspace inherits).
    ManageOrganizationPolicies => [OrgAdmin],
    /// Override an overridable organization policy in one workspace.
    ManageWorkspacePolicies => [OrgAdmin, WorkspaceAdmin],
    /// Read quarantined events with their payloads (personal data, as dead letters are).
    ReadQuarantine => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// Release quarantined events (re-validated against the current plan) and discard them.
    /// Marketers hold it: they own the sources whose data they fix, and a release lets through
    /// only what IT's plan now accepts — forcing past the plan needs ManageTrackingPlans.
    ReleaseQuarantine => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// Read change requests (diffs, and dry runs with sample events: personal data) and the
    /// version history of the configuration.
    ReadChanges => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// Propose change requests, comment on them, withdraw one's own, import a config file, roll back.
    ProposeChanges => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// Approve (which applies) or reject change requests, never one's own.
    ApproveChanges => [OrgAdmin, WorkspaceAdmin],
    /// Export the live configuration as TOML (destination settings included: secrets).
    ExportConfig => [OrgAdmin, WorkspaceAdmin],
    /// List audiences, their definitions, sizes and backfill progress, and preview a
    /// definition's size (no personal data: members and samples need ReadProfiles).
    ReadAudiences => [OrgAdmin, WorkspaceAdmin, Marketer, PrivacyOfficer, Analyst, Viewer],
    /// Create, change and delete audiences (versioned; under change approval like destinations).
    ManageAudiences => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// Set the personalization policy (allow-listed traits and audiences, decision rules) and
    /// create or revoke its public browser keys.
    ManagePersonalization => [OrgAdmin, WorkspaceAdmin, Marketer],
    /// List data-subject requests, their status per store and SLA (identifiers shown hashed).
    ReadPrivacyRequests => [OrgAdmin, WorkspaceAdmin, PrivacyOfficer],
    /// Create data-subject requests (access, erasure, suppression, rectification) and download
    /// access exports (personal data): the privacy officer's own tool.
    ManagePrivacyRequests => [OrgAdmin, PrivacyOfficer],
}

/// Permissions no route requires on its own: a handler admitted by another permission asks
/// them to decide how much to show (`ReadPii`: profile answers in clear rather than masked).
pub const REFINING_PERMISSIONS: &[Permission] = &[Permission::ReadPii];

/// Where a credential may act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Scope {
    Organization,
    Workspace(String),
}

impl Scope {
    pub fn from_workspace(workspace: Option<String>) -> Scope {
        workspace.map_or(Scope::Organization, Scope::Workspace)
    }

    pub fn workspace(&self) -> Option<&str> {
        match self {
            Scope::Organization => None,
            Scope::Workspace(workspace) => Some(workspace),
        }
    }

    pub fn covers(&self, workspace: &str) -> bool {
        match self {
            Scope::Organization => true,
            Scope::Workspace(own) => own == workspace,
        }
    }

    /// `self` is within `outer` (a token may not reach beyond its creator).
    pub fn within(&self, outer: &Scope) -> bool {
        match (self, outer) {
            (_, Scope::Organization) => true,
            (Scope::Workspace(inner), Scope::Workspace(outer)) => inner == outer,
            (Scope::Organization, Scope::Workspace(_)) => false,
        }
    }
}

/// Which credential a principal presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The organization's break-glass admin token.
    AdminToken,
    /// A user's login session.
    Session { user_id: String, email: String },
    /// A management API token.
    ApiToken { id: String, name: String },
}

/// Who is calling: a credential, its role and where it may act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub credential: Credential,
    pub role: Role,
    pub scope: Scope,
}

impl Principal {
    pub fn admin_token() -> Principal {
        Principal {
            credential: Credential::AdminToken,
            role: Role::OrgAdmin,
            scope: Scope::Organization,
        }
    }

    /// How records name their creator: `admin-token`, `user:<email>`, `token:<id>`.
    pub fn name(&self) -> String {
        match &self.credential {
            Credential::AdminToken => "admin-token".into(),
            Credential::Session { email, .. } => format!("user:{email}"),
            Credential::ApiToken { id, .. } => format!("token:{id}"),
        }
    }

    pub fn may(&self, permission: Permission) -> bool {
        self.role.may(permission)
    }

    /// Tokens (not sessions): their every use on the management API is audited.
    pub fn is_token(&self) -> bool {
        !matches!(self.credential, Credential::Session { .. })
    }

    pub fn actor(&self) -> Actor {
        let (kind, id, name) = match &self.credential {
            Credential::AdminToken => ("admin_token", None, "admin-token".to_string()),
            Credential::Session { user_id, email } => {
                ("user", Some(user_id.clone()), email.clone())
            }
            Credential::ApiToken { id, name } => ("api_token", Some(id.clone()), name.clone()),
        };
        Actor {
            kind: kind.into(),
            id,
            name,
            role: Some(self.role.as_str().into()),
            scope: self.scope.workspace().map(str::to_string),
        }
    }

    pub fn to_json(&self) -> Value {
        let (kind, id, name) = match &self.credential {
            Credential::AdminToken => ("admin_token", None, "admin-token".to_string()),
            Credential::Session { user_id, email } => {
                ("user", Some(user_id.clone()), email.clone())
            }
            Credential::ApiToken { id, name } => ("api_token", Some(id.clone()), name.clone()),
        };
        json!({
            "kind": kind, "id": id, "name": name, "role": self.role.as_str(),
            "workspace": self.scope.workspace(),
            "permissions": self.role.permissions().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        })
    }
}

/// Where a request came from, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub method: String,
    pub path: String,
    /// The request came over TLS (a proxy's `X-Forwarded-Proto: https`, or an https public URL).
    pub https: bool,
}

impl RequestInfo {
    pub fn of(parts: &Parts, state: &AppState) -> RequestInfo {
        RequestInfo {
            ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip().to_string()),
            user_agent: header_text(&parts.headers, header::USER_AGENT.as_str()),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            https: is_https(&parts.headers, state),
        }
    }

    /// An audit event with this request's origin.
    pub fn event(&self, actor: Actor, action: &str, outcome: &str) -> AuditEvent {
        AuditEvent {
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            ..AuditEvent::new(actor, action, outcome)
        }
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

fn is_https(headers: &HeaderMap, state: &AppState) -> bool {
    let forwarded = header_text(headers, "x-forwarded-proto")
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let public = state
        .config
        .server
        .public_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"));
    forwarded || public
}

/// What the audit middleware (`routes::audit::record_requests`) learns from the extractor:
/// who called (when authenticated) and whether a bad credential was presented.
#[derive(Clone, Default)]
pub struct AuditSlot(pub Arc<Mutex<Option<SlotInfo>>>);

#[derive(Clone)]
pub enum SlotInfo {
    Principal(Principal),
    /// A credential was presented and refused (wrong, revoked, expired).
    BadCredential(String),
}

impl AuditSlot {
    fn set(parts: &Parts, info: SlotInfo) {
        if let Some(slot) = parts.extensions.get::<AuditSlot>() {
            *slot.0.lock() = Some(info);
        }
    }
}

/// Proof, in a handler's signature, that the caller holds permission `P` — in the workspace of
/// the route's `{workspace}` parameter when it has one, else for the whole organization.
pub struct Authorized<P: RequiredPermission> {
    pub principal: Principal,
    pub request: RequestInfo,
    _permission: PhantomData<P>,
}

impl<P: RequiredPermission> Authorized<P> {
    /// Appends an audit entry for a change this request made; durable when it returns.
    pub async fn audit(
        &self,
        state: &AppState,
        action: &str,
        workspace: Option<&str>,
        resource: String,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Result<(), ApiError> {
        let event = AuditEvent {
            workspace: workspace.map(str::to_string),
            resource: Some(resource),
            before,
            after,
            ..self
                .request
                .event(self.principal.actor(), action, "success")
        };
        crate::routes::audit::record(state, event).await
    }
}

impl<P: RequiredPermission> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(parts, state)?;
        let workspace = workspace_parameter(parts).await?;
        authorize(&principal, P::PERMISSION, workspace.as_deref())?;
        Ok(Authorized {
            principal,
            request: RequestInfo::of(parts, state),
            _permission: PhantomData,
        })
    }
}

/// The route's `{workspace}` (or `{ws}`) path parameter, if it has one.
pub async fn workspace_parameter(parts: &mut Parts) -> Result<Option<String>, ApiError> {
    match RawPathParams::from_request_parts(parts, &()).await {
        Ok(params) => Ok(params
            .iter()
            .find(|(name, _)| *name == "workspace" || *name == "ws")
            .map(|(_, value)| value.to_string())),
        Err(axum::extract::rejection::RawPathParamsRejection::MissingPathParams(_)) => Ok(None),
        Err(rejection) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            rejection.body_text(),
        )),
    }
}

/// Whether `principal` may use `permission` in `workspace` (`None`: an organization route).
pub fn authorize(
    principal: &Principal,
    permission: Permission,
    workspace: Option<&str>,
) -> Result<(), ApiError> {
    let details = || {
        json!({
            "permission": permission.as_str(),
            "role": principal.role.as_str(),
            "credential_workspace": principal.scope.workspace(),
            "workspace": workspace,
        })
    };
    if !principal.may(permission) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "permission {} is required; role {} does not have it",
                permission.as_str(),
                principal.role.as_str()
            ),
        )
        .with_details(details()));
    }
    match (workspace, principal.scope.workspace()) {
        (Some(workspace), Some(own)) if workspace != own => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this credential is scoped to workspace {own}; it cannot act in workspace {workspace}"),
        )
        .with_details(details())),
        (None, Some(own)) if permission != Permission::ReadSelf => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this route acts on the whole organization; this credential is scoped to workspace {own}"),
        )
        .with_details(details())),
        _ => Ok(()),
    }
}

/// Prefix of management API tokens and of session ids: recognisable in logs and secret scanners.
pub const API_TOKEN_PREFIX: &str = "tdm_tok_";
pub const SESSION_PREFIX: &str = "tdm_sess_";
/// The cookie a login sets for the console.
pub const SESSION_COOKIE: &str = "tandem_session";

/// The header a cookie-authenticated state-changing request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-tandem-csrf";

/// How a request presented its credential: the cookie is sent by the browser by itself (so a
/// state-changing request needs proof it came from the console), a bearer token is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Bearer,
    Cookie,
}

/// The credential of a request: `Authorization: Bearer …`, else the session cookie.
fn presented_secret(headers: &HeaderMap) -> Option<(String, Presented)> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            return Some((token.trim().to_string(), Presented::Bearer));
        }
    }
    session_cookie(headers).map(|secret| (secret, Presented::Cookie))
}

/// The CSRF token of a session: derived from its secret (SHA-256 with a domain prefix), so
/// nothing is stored and it cannot be turned back into the session. The console learns it from
/// the login answer or `GET /api/v1/me` — answers another origin cannot read (no CORS on the
/// management API) — and sends it as `X-Tandem-CSRF` (synchronizer token).
pub fn csrf_token(session_secret: &str) -> String {
    ids::hex(&Sha256::digest(
        format!("tandem-csrf-v1\0{session_secret}").as_bytes(),
    ))
}

/// Methods that change nothing: the cookie alone may authenticate them.
fn is_safe_method(method: &axum::http::Method) -> bool {
    matches!(
        *method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    )
}

/// Whether the request's `Origin` (when the browser sent one) is this server: its host and port
/// equal the `Host` the request was sent to (or `X-Forwarded-Host` behind a proxy), or the
/// origin of `server.public_url`.
pub fn same_origin(headers: &HeaderMap, state: &AppState) -> bool {
    let Some(origin) = header_text(headers, header::ORIGIN.as_str()) else {
        return true;
    };
    let authority = |url: &str| {
        url.split_once("://").map(|(_, rest)| {
            rest.split('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
    };
    let Some(origin_authority) = authority(&origin) else {
        return false; // `null` (sandboxed frames, some redirects) and the like
    };
    let hosts = [
        header_text(headers, header::HOST.as_str()),
        header_text(headers, "x-forwarded-host"),
        state
            .config
            .server
            .public_url
            .as_deref()
            .and_then(authority),
    ];
    hosts
        .into_iter()
        .flatten()
        .any(|host| host.trim().eq_ignore_ascii_case(&origin_authority))
}

/// The console's CSRF defence for a cookie-authenticated request (bearer credentials are not
/// sent by the browser on its own, so they need none): a state-changing method must carry the
/// session's token in `X-Tandem-CSRF` and, when the browser names one, come from this origin.
fn check_csrf(parts: &Parts, state: &AppState, secret: &str) -> Result<(), ApiError> {
    if is_safe_method(&parts.method) {
        return Ok(());
    }
    if !same_origin(&parts.headers, state) {
        return Err(ApiError::new(
            ErrorCode::CsrfRejected,
            "this request comes from another origin; the session cookie is not accepted from there",
        ));
    }
    let expected = csrf_token(secret);
    let sent = header_text(&parts.headers, CSRF_HEADER).unwrap_or_default();
    let matches = sent.len() == expected.len()
        && sent
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0;
    if !matches {
        return Err(ApiError::new(
            ErrorCode::CsrfRejected,
            format!(
                "a change made with the session cookie needs the session's CSRF token in `{CSRF_HEADER}` \
                 (from the login answer or GET /api/v1/me); scripts send `Authorization: Bearer` instead"
            ),
        ));
    }
    Ok(())
}

/// The `tandem_session` cookie's value.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.trim().to_string())
        })
}

/// Hex SHA-256 of a token or session secret: how the store keys them.
pub fn secret_digest(secret: &str) -> String {
    ids::hex(&Sha256::digest(secret.as_bytes()))
}

/// Resolves the request's credential to a principal: 401 when there is none or it is not valid.
pub fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let Some((secret, presented)) = presented_secret(&parts.headers) else {
        return Err(ApiError::new(
            ErrorCode::MissingCredentials,
            "send a token as `Authorization: Bearer <token>` (admin token, API token or session), or log in",
        ));
    };
    let resolved = if secret.starts_with(SESSION_PREFIX) {
        session_principal(state, &secret)
    } else if secret.starts_with(API_TOKEN_PREFIX) {
        api_token_principal(state, &secret)
    } else {
        state.admin_tokens.authenticate(&secret)
    };
    match resolved {
        Ok(principal) => {
            AuditSlot::set(parts, SlotInfo::Principal(principal.clone()));
            if presented == Presented::Cookie {
                // Refused as the principal it is (audited as `access.denied`), not as a bad credential.
                check_csrf(parts, state, &secret)?;
            }
            Ok(principal)
        }
        Err(error) => {
            metrics::counter!("tandem_admin_auth_failures_total").increment(1);
            AuditSlot::set(parts, SlotInfo::BadCredential(error.message.clone()));
            Err(error)
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, message)
}

fn session_principal(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
    let now = time_util::now_ms();
    let session = state
        .store
        .session(&secret_digest(secret))?
        .ok_or_else(|| invalid("the session is not valid (logged out, or never existed)"))?;
    if session.expires_at_ms <= now {
        return Err(invalid("the session expired: log in again"));
    }
    let user = state
        .store
        .user(&session.user_id)?
        .ok_or_else(|| invalid("the session's user was removed"))?;
    let role = Role::parse(&user.role)
        .ok_or_else(|| invalid(format!("the user's role `{}` is unknown", user.role)))?;
    Ok(Principal {
        credential: Credential::Session {
            user_id: user.id,
            email: user.email,
        },
        role,
        scope: Scope::from_workspace(user.workspace_id),
    })
}

fn api_token_principal(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
    let now = time_util::now_ms();
    let mut token = state
        .store
        .api_token_by_hash(&secret_digest(secret))?
        .ok_or_else(|| invalid("the API token is not valid"))?;
    if let Some(revoked) = token.revoked_at_ms {
        return Err(invalid(format!(
            "the API token {} was revoked at {}",
            token.id,
            time_util::format_iso8601_ms(revoked)
        )));
    }
    if let Some(expires) = token.expires_at_ms.filter(|expires| *expires <= now) {
        return Err(invalid(format!(
            "the API token {} expired at {}",
            token.id,
            time_util::format_iso8601_ms(expires)
        )));
    }
    let role = Role::parse(&token.role)
        .ok_or_else(|| invalid(format!("the token's role `{}` is unknown", token.role)))?;
    let principal = Principal {
        credential: Credential::ApiToken {
            id: token.id.clone(),
            name: token.name.clone(),
        },
        role,
        scope: Scope::from_workspace(token.workspace_id.clone()),
    };
    let stale = token
        .last_used_at_ms
        .is_none_or(|last| now - last >= TOKEN_LAST_USED_WRITE_INTERVAL_MS);
    if stale {
        token.last_used_at_ms = Some(now);
        if let Err(error) = state.store.put_api_token(&token) {
            tracing::warn!(%error, token = %token.id, "recording last_used_at failed");
        }
    }
    Ok(principal)
}

/// An argon2 hash (PHC string) of a password or the admin token.
pub fn hash_argon2(secret: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("argon2 hashing: {error}"))
}

pub fn verify_argon2(hash: &str, secret: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}

const ADMIN_TOKEN_HASH_SETTING: &str = "admin_token_argon2";
/// Verified tokens remembered (as SHA-256) so argon2 — slow by design — runs once per token, not per request.
const VERIFIED_TOKENS_CACHED_MAX: usize = 64;

/// The admin credential: an argon2 hash in the metadata store, with a cache of verified tokens.
pub struct AdminTokens {
    argon2_hash: String,
    verified: Mutex<HashSet<[u8; 32]>>,
}

/// What `AdminTokens::initialize` did, so `serve` can print a generated token once.
pub enum AdminTokenOrigin {
    /// From config or `TANDEM_ADMIN_TOKEN`.
    Configured,
    /// Stored at an earlier start.
    Stored,
    /// Generated now: printed once, never again.
    Generated(String),
}

impl AdminTokens {
    /// Uses `configured` when given (and stores its hash), else the stored hash, else generates a token.
    pub fn initialize(
        store: &dyn MetadataStore,
        configured: Option<&str>,
    ) -> anyhow::Result<(Arc<AdminTokens>, AdminTokenOrigin)> {
        let (token_hash, origin) = match (configured, store.setting(ADMIN_TOKEN_HASH_SETTING)?) {
            (Some(token), stored) => {
                let still_valid = stored
                    .as_deref()
                    .is_some_and(|hash| verify_argon2(hash, token));
                let hash = if still_valid {
                    stored.expect("checked")
                } else {
                    hash_argon2(token)?
                };
                store.put_setting(ADMIN_TOKEN_HASH_SETTING, &hash)?;
                (hash, AdminTokenOrigin::Configured)
            }
            (None, Some(stored)) => (stored, AdminTokenOrigin::Stored),
            (None, None) => {
                let token = format!("tdm_admin_{}", tandem_core::ids::random_secret(24));
                let hash = hash_argon2(&token)?;
                store.put_setting(ADMIN_TOKEN_HASH_SETTING, &hash)?;
                (hash, AdminTokenOrigin::Generated(token))
            }
        };
        Ok((
            Arc::new(AdminTokens {
                argon2_hash: token_hash,
                verified: Mutex::new(HashSet::new()),
            }),
            origin,
        ))
    }

    pub fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if self.verified.lock().contains(&digest) {
            return Ok(Principal::admin_token());
        }
        if !verify_argon2(&self.argon2_hash, token) {
            return Err(ApiError::new(
                ErrorCode::InvalidToken,
                "the token is not valid",
            ));
        }
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_TOKENS_CACHED_MAX {
            verified.clear();
        }
        verified.insert(digest);
        Ok(Principal::admin_token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_only_org_admins_manage_users() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(*role));
        }
        for permission in Permission::ALL {
            assert_eq!(Permission::parse(permission.as_str()), Some(*permission));
            assert!(
                Role::OrgAdmin.may(*permission),
                "the organization admin holds every permission, not {permission:?}"
            );
        }
        assert_eq!(Permission::ManageUsers.roles(), &[Role::OrgAdmin]);
        for role in Role::ALL {
            assert!(role.may(Permission::ReadSelf));
        }
    }

    #[test]
    fn viewers_and_analysts_see_no_personal_data_in_clear_and_change_nothing() {
        let personal = [
            Permission::ReadPii,
            Permission::ReadLiveEvents,
            Permission::ReadAudit,
            Permission::ReadDeadLetters,
            Permission::ReadQuarantine,
            Permission::ReadChanges,
        ];
        for role in [Role::Viewer, Role::Analyst] {
            for permission in role.permissions() {
                assert!(
                    permission.as_str().starts_with("Read") && !personal.contains(&permission),
                    "{role:?} holds {permission:?}"
                );
            }
        }
        assert!(!Role::Viewer.may(Permission::ReadProfiles));
        assert!(Role::Analyst.may(Permission::ReadProfiles), "masked");
        assert!(!Role::Marketer.may(Permission::ReadPii), "masked too");
        assert_eq!(
            Permission::ReadPii.roles(),
            &[Role::OrgAdmin, Role::WorkspaceAdmin, Role::PrivacyOfficer]
        );
    }

    #[test]
    fn the_csrf_token_is_the_sessions_own_and_not_its_store_key() {
        let session = "tdm_sess_0123456789abcdef";
        let token = csrf_token(session);
        assert_eq!(token, csrf_token(session), "derived, not random");
        assert_eq!(token.len(), 64);
        assert_ne!(
            token,
            secret_digest(session),
            "not the digest the store keys sessions by"
        );
        assert_ne!(token, csrf_token("tdm_sess_another"));
        assert!(is_safe_method(&axum::http::Method::GET));
        assert!(!is_safe_method(&axum::http::Method::POST));
        assert!(!is_safe_method(&axum::http::Method::DELETE));
    }

    #[test]
    fn scoped_credentials_stay_in_their_workspace() {
        let marketer = Principal {
            credential: Credential::ApiToken {
                id: "tok_1".into(),
                name: "ci".into(),
            },
            role: Role::Marketer,
            scope: Scope::Workspace("emea".into()),
        };
        assert!(authorize(&marketer, Permission::ManageSources, Some("emea")).is_ok());
        let foreign = authorize(&marketer, Permission::ManageSources, Some("apac")).unwrap_err();
        assert_eq!(foreign.code, ErrorCode::Forbidden);
        assert!(
            foreign.message.contains("scoped to workspace emea"),
            "{}",
            foreign.message
        );
        let organization = authorize(&marketer, Permission::ReadCatalog, None).unwrap_err();
        assert!(organization.message.contains("whole organization"));
        assert!(authorize(&marketer, Permission::ReadSelf, None).is_ok());
        let missing = authorize(&marketer, Permission::ManageUsers, Some("emea")).unwrap_err();
        assert!(
            missing.message.contains("ManageUsers"),
            "{}",
            missing.message
        );
        assert!(authorize(&Principal::admin_token(), Permission::ManageUsers, None).is_ok());
        assert!(Scope::Workspace("emea".into()).within(&Scope::Organization));
        assert!(!Scope::Organization.within(&Scope::Workspace("emea".into())));
        assert!(Role::OrgAdmin
            .check_scope(&Scope::Workspace("emea".into()))
            .is_err());
        assert!(Role::WorkspaceAdmin
            .check_scope(&Scope::Organization)
            .is_err());
    }
}
