//! The metadata store: the catalog of sources (with owner, purpose and activity), users, API
//! tokens and sessions (secrets only in hashed form), and the traffic seen with unknown or disabled write keys (shadow IT).
//!
//! [`MetadataStore`] is the contract; [`RedbStore`] keeps it in one embedded redb file (ACID,
//! fsync'd on commit). A PostgreSQL implementation comes with scale-out.

mod model;
mod redb_store;

pub use model::*;
pub use redb_store::RedbStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store: {0}")]
    Engine(String),
    #[error("metadata store: corrupt value under {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
}

/// What every metadata backend keeps. Writes are durable when the call returns.
pub trait MetadataStore: Send + Sync + 'static {
    fn sources(&self) -> Result<Vec<SourceRecord>, StoreError>;
    fn source(
        &self,
        workspace_id: &str,
        source_id: &str,
    ) -> Result<Option<SourceRecord>, StoreError>;
    /// Inserts a new source; `Conflict` if one with the same workspace and id exists.
    fn create_source(&self, source: &SourceRecord) -> Result<(), StoreError>;
    /// Inserts or replaces a source (used to sync sources declared in the config file).
    fn put_source(&self, source: &SourceRecord) -> Result<(), StoreError>;
    fn delete_source(&self, workspace_id: &str, source_id: &str) -> Result<(), StoreError>;

    /// Adds the given activity deltas (accepted/rejected counts, last seen) to each source.
    fn record_activity(&self, deltas: &[(SourceKey, ActivityDelta)]) -> Result<(), StoreError>;
    fn activity(&self) -> Result<Vec<(SourceKey, SourceActivity)>, StoreError>;

    /// Adds attempts with unknown or disabled write keys.
    fn record_unknown_traffic(&self, seen: &[UnknownKeyTraffic]) -> Result<(), StoreError>;
    fn unknown_traffic(&self) -> Result<Vec<UnknownKeyTraffic>, StoreError>;

    fn setting(&self, name: &str) -> Result<Option<String>, StoreError>;
    fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError>;

    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Inserts a new user; `Conflict` if the id or the email (case-insensitive) is taken.
    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Replaces an existing user; `NotFound` if there is none, `Conflict` if the email is taken.
    fn update_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Removes a user and every session of theirs, in one transaction.
    fn delete_user(&self, id: &str) -> Result<UserRecord, StoreError>;

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError>;
    fn api_token_by_hash(&self, sha256: &str) -> Result<Option<ApiTokenRecord>, StoreError>;
    /// Inserts or replaces a token (keyed by its hash).
    fn put_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError>;

    fn session(&self, sha256: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Stores a session and drops the sessions expired before `now_ms`, in one transaction.
    fn put_session(&self, session: &SessionRecord, now_ms: i64) -> Result<(), StoreError>;
    fn delete_session(&self, sha256: &str) -> Result<(), StoreError>;
}
