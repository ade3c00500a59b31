//! Authorization of the management API as a typed extractor: a handler that takes
//! `Authorized<ManageSources>` cannot run unless the caller holds that permission, so a route
//! cannot forget to check. Deny by default: there is no extractor that grants without a permission.
//!
//! Today one principal exists, the admin token (`TANDEM_ADMIN_TOKEN`, or generated at first start
//! and stored as an argon2 hash). Users, roles and scoped tokens extend [`Principal`].

use crate::error::ApiError;
use crate::state::AppState;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;
use tandem_core::ErrorCode;
use tandem_store::MetadataStore;

/// What a caller may do. Each management route names exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// List workspaces, sources, the catalog, unknown-key traffic.
    ReadCatalog,
    /// Create, enable, disable sources (and see a write key once, at creation).
    ManageSources,
    /// Watch the live event stream of a source (event payloads: personal data).
    ReadLiveEvents,
    /// Read log positions, consumer lag and other operational state.
    ReadOperations,
    /// Read profiles, identities, explanations (personal data).
    ReadProfiles,
    /// Split profiles (undo merges).
    ManageIdentity,
    /// Create and revoke Profile API access tokens.
    ManageAccessTokens,
    /// List destinations, connections with their delivery status, DLQ entries, alerts.
    ReadDestinations,
    /// Create, change and delete destinations and connections.
    ManageDestinations,
    /// Replay and discard dead letters, start backfills.
    ManageDeliveries,
}

/// Marker types naming a permission at the type level, for `Authorized<P>`.
pub trait RequiredPermission: Send + Sync + 'static {
    const PERMISSION: Permission;
}

macro_rules! permission_markers {
    ($($marker:ident => $permission:ident),* $(,)?) => {
        $(
            #[doc = concat!("Requires [`Permission::", stringify!($permission), "`].")]
            pub struct $marker;
            impl RequiredPermission for $marker { const PERMISSION: Permission = Permission::$permission; }
        )*
    };
}

permission_markers! {
    ReadCatalog => ReadCatalog,
    ManageSources => ManageSources,
    ReadLiveEvents => ReadLiveEvents,
    ReadOperations => ReadOperations,
    ReadProfiles => ReadProfiles,
    ManageIdentity => ManageIdentity,
    ManageAccessTokens => ManageAccessTokens,
    ReadDestinations => ReadDestinations,
    ManageDestinations => ManageDestinations,
    ManageDeliveries => ManageDeliveries,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The organization-wide admin token: every permission, every workspace.
    AdminToken,
}

impl Principal {
    pub fn name(&self) -> &'static str {
        match self {
            Principal::AdminToken => "admin-token",
        }
    }

    pub fn may(&self, _permission: Permission) -> bool {
        match self {
            Principal::AdminToken => true,
        }
    }
}

/// Proof, in a handler's signature, that the caller holds permission `P`.
pub struct Authorized<P: RequiredPermission> {
    pub principal: Principal,
    _permission: PhantomData<P>,
}

impl<P: RequiredPermission> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingCredentials,
                "send the admin token as `Authorization: Bearer <token>`",
            )
        })?;
        let principal = state.admin_tokens.authenticate(&token)?;
        if !principal.may(P::PERMISSION) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{:?} is required", P::PERMISSION),
            ));
        }
        Ok(Authorized {
            principal,
            _permission: PhantomData,
        })
    }
}

fn bearer_token(parts: &Parts) -> Option<String> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
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
            return Ok(Principal::AdminToken);
        }
        if !verify_argon2(&self.argon2_hash, token) {
            metrics::counter!("tandem_admin_auth_failures_total").increment(1);
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
        Ok(Principal::AdminToken)
    }
}

fn hash_argon2(secret: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("hashing the admin token: {error}"))
}

fn verify_argon2(hash: &str, secret: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}
