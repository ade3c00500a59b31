//! Workspace access tokens: what the Segment-compatible Profile API takes as HTTP Basic user name
//! (empty password). Created through the management API (the secret is shown once), stored as
//! SHA-256 hashes — the secrets are 32 random characters, so a fast hash is enough — and revocable.

use crate::error::ApiError;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tandem_core::{ids, time_util, ErrorCode};
use tandem_store::MetadataStore;

const ACCESS_TOKENS_SETTING: &str = "access_tokens";
const DEMO_ACCESS_TOKEN_SETTING: &str = "demo_access_token";
/// Prefix of every access token, so a leaked one is recognisable in logs and secret scanners.
pub const ACCESS_TOKEN_PREFIX: &str = "tdm_pat_";
/// Most access tokens of one organization (they are kept in one settings record).
pub const ACCESS_TOKENS_MAX: usize = 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessTokenRecord {
    pub workspace_id: String,
    pub id: String,
    pub name: String,
    pub sha256: String,
    pub created_at_ms: i64,
    pub created_by: String,
    pub revoked: bool,
}

pub struct AccessTokens {
    store: Arc<dyn MetadataStore>,
    tokens: RwLock<Vec<AccessTokenRecord>>,
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl AccessTokens {
    pub fn load(store: Arc<dyn MetadataStore>) -> anyhow::Result<AccessTokens> {
        let tokens = match store.setting(ACCESS_TOKENS_SETTING)? {
            Some(json) => serde_json::from_str(&json)?,
            None => Vec::new(),
        };
        Ok(AccessTokens {
            store,
            tokens: RwLock::new(tokens),
        })
    }

    fn save(&self, tokens: &[AccessTokenRecord]) -> Result<(), ApiError> {
        let json = serde_json::to_string(tokens).map_err(ApiError::internal)?;
        self.store.put_setting(ACCESS_TOKENS_SETTING, &json)?;
        Ok(())
    }

    /// Creates a token for `workspace_id`; returns its record and the secret (shown once).
    pub fn create(
        &self,
        workspace_id: &str,
        name: &str,
        created_by: &str,
    ) -> Result<(AccessTokenRecord, String), ApiError> {
        let secret = format!("{ACCESS_TOKEN_PREFIX}{}", ids::random_secret(32));
        let record = AccessTokenRecord {
            workspace_id: workspace_id.to_string(),
            id: format!("tok_{}", ids::random_secret(10).to_lowercase()),
            name: name.to_string(),
            sha256: digest(&secret),
            created_at_ms: time_util::now_ms(),
            created_by: created_by.to_string(),
            revoked: false,
        };
        let mut tokens = self.tokens.write();
        if tokens.len() >= ACCESS_TOKENS_MAX {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("at most {ACCESS_TOKENS_MAX} access tokens; revoke unused ones first"),
            ));
        }
        let mut next = tokens.clone();
        next.push(record.clone());
        self.save(&next)?;
        *tokens = next;
        Ok((record, secret))
    }

    pub fn list(&self, workspace_id: &str) -> Vec<AccessTokenRecord> {
        self.tokens
            .read()
            .iter()
            .filter(|t| t.workspace_id == workspace_id)
            .cloned()
            .collect()
    }

    pub fn revoke(&self, workspace_id: &str, id: &str) -> Result<AccessTokenRecord, ApiError> {
        let mut tokens = self.tokens.write();
        let mut next = tokens.clone();
        let record = next
            .iter_mut()
            .find(|t| t.workspace_id == workspace_id && t.id == id)
            .ok_or_else(|| ApiError::not_found(format!("access token {id}")))?;
        record.revoked = true;
        let revoked = record.clone();
        self.save(&next)?;
        *tokens = next;
        Ok(revoked)
    }

    /// The workspace a valid, unrevoked token opens.
    pub fn workspace_of(&self, token: &str) -> Option<String> {
        let hash = digest(token);
        self.tokens
            .read()
            .iter()
            .find(|t| !t.revoked && t.sha256 == hash)
            .map(|t| t.workspace_id.clone())
    }

    /// The demo workspace's token: made at first start and kept, like the demo write key.
    pub fn demo_token(&self, workspace_id: &str) -> anyhow::Result<String> {
        if let Some(token) = self.store.setting(DEMO_ACCESS_TOKEN_SETTING)? {
            if self.workspace_of(&token).as_deref() == Some(workspace_id) {
                return Ok(token);
            }
        }
        let (_, secret) = self
            .create(workspace_id, "demo", "demo")
            .map_err(|error| anyhow::anyhow!(error.message))?;
        self.store.put_setting(DEMO_ACCESS_TOKEN_SETTING, &secret)?;
        Ok(secret)
    }
}
