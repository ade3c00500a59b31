use serde::{Deserialize, Serialize};

/// Where a source's definition lives: the config file wins over API edits for `Config` sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagedBy {
    Config,
    Api,
}

/// A source in the catalog: every source has an owner (no shadow IT). The write key itself is
/// never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub workspace_id: String,
    pub id: String,
    pub name: String,
    pub owner: String,
    #[serde(default)]
    pub purpose: Option<String>,
    /// Categories of personal data collected (the catalog, the record of processing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_categories: Vec<String>,
    pub write_key_hash: String,
    pub enabled: bool,
    pub managed_by: ManagedBy,
    pub created_at_ms: i64,
    pub created_by: String,
    pub updated_at_ms: i64,
}

impl SourceRecord {
    pub fn key(&self) -> SourceKey {
        SourceKey {
            workspace_id: self.workspace_id.clone(),
            source_id: self.id.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceKey {
    pub workspace_id: String,
    pub source_id: String,
}

impl SourceKey {
    pub(crate) fn storage_key(&self) -> String {
        format!("{}/{}", self.workspace_id, self.source_id)
    }
}

/// Accumulated activity of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceActivity {
    pub last_seen_ms: Option<i64>,
    pub events_accepted: u64,
    pub events_rejected: u64,
}

/// Activity since the last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityDelta {
    pub last_seen_ms: i64,
    pub events_accepted: u64,
    pub events_rejected: u64,
}

/// Requests made with a write key tandem does not accept, grouped by key fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownKeyTraffic {
    /// First 12 hex digits of the key's SHA-256: enough to tell keys apart, useless to replay.
    pub key_fingerprint: String,
    /// `unknown_write_key` or `disabled_source`.
    pub reason: String,
    /// The source, when the key belongs to a disabled one.
    #[serde(default)]
    pub source: Option<SourceKey>,
    pub attempts: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    #[serde(default)]
    pub last_ip: Option<String>,
    #[serde(default)]
    pub last_user_agent: Option<String>,
    #[serde(default)]
    pub last_origin: Option<String>,
}

/// A person who logs in (the console, `tandem` CLI). The password is kept only as an argon2 hash.
/// `role` is the role's name (`org_admin`, `workspace_admin`, …): the server maps it to
/// permissions, and a name it does not know grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    /// Unique (compared lowercase): what the user logs in with.
    pub email: String,
    #[serde(default)]
    pub name: String,
    pub role: String,
    /// `None`: the whole organization; `Some(w)`: only workspace `w`.
    #[serde(default)]
    pub workspace_id: Option<String>,
    pub password_argon2: String,
    pub created_at_ms: i64,
    pub created_by: String,
    pub updated_at_ms: i64,
}

/// A management API token: a role in one workspace (or the organization). Only the SHA-256 of
/// the secret is kept (the secret is 32 random characters, so a fast hash is enough).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub workspace_id: Option<String>,
    /// Hex SHA-256 of the secret: the storage key.
    pub sha256: String,
    pub created_at_ms: i64,
    pub created_by: String,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
    #[serde(default)]
    pub last_used_at_ms: Option<i64>,
}

/// A login session: the secret goes to the client (cookie or bearer), its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sha256: String,
    pub user_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}
