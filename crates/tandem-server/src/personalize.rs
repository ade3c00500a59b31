//! The personalization API's state: per workspace, the policy (which traits and audiences a
//! browser may read, the decision rules), the public keys, and a bounded in-memory cache of
//! profiles the unify task keeps up to date as it applies batches.
//!
//! Life of a personalization request (`GET /v1/personalize?anonymousId=…`):
//! 1. The public key (`tdm_pub_…`, `X-Tandem-Key` header, `key` parameter or HTTP Basic user)
//!    resolves to its workspace by SHA-256 (in memory); its allowed origins are checked.
//! 2. The visitor's identifiers (userId first, then anonymousId) are looked up in the cache;
//!    on a miss (never seen by this process, or evicted) the profile is read from the unify
//!    store — identity → profile → memberships — and cached (the miss path: one redb read
//!    transaction, tens of µs).
//! 3. [`visible`] — the one place that decides what of a profile a public key may see (the
//!    allow-listed traits, never personal data, and allow-listed audiences); the consent check
//!    of the privacy layer belongs there — then the rules decide each slot.

use parking_lot::RwLock;
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use tandem_audiences::condition::{Comparison, Op};
use tandem_audiences::ProfileView;
use tandem_config::{ConditionConfig, PersonalizationConfig};
use tandem_core::limits::{PERSONALIZE_CACHE_PROFILES_MAX, PERSONALIZE_KEYS_MAX};
use tandem_core::{ids, time_util, ErrorCode};
use tandem_store::MetadataStore;
use tandem_unify::model::ProfileId;

use crate::error::ApiError;

/// A profile as the personalization API reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedProfile {
    pub id: ProfileId,
    pub traits: BTreeMap<String, Value>,
    pub audiences: Vec<String>,
    /// The cache's generation when this was read: a read of the store (the miss path) never
    /// replaces what a later batch put.
    pub generation: u64,
}

/// The bounded cache: profiles by id, and identity (`user_id:u1`) → profile id.
pub struct PersonalizeCache {
    profiles: Cache<ProfileId, Arc<CachedProfile>>,
    identities: Cache<String, ProfileId>,
    generation: std::sync::atomic::AtomicU64,
}

impl Default for PersonalizeCache {
    fn default() -> Self {
        PersonalizeCache::new(PERSONALIZE_CACHE_PROFILES_MAX)
    }
}

impl PersonalizeCache {
    pub fn new(profiles_max: usize) -> PersonalizeCache {
        PersonalizeCache {
            profiles: Cache::new(profiles_max),
            // A profile has a user id and a few anonymous ids.
            identities: Cache::new(profiles_max * 4),
            generation: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The generation a miss-path read starts at (see [`CachedProfile::generation`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// What a batch changed: every profile it evaluated (so recently active visitors are the
    /// ones cached), and those that no longer exist.
    pub fn update(&self, views: &[ProfileView], gone: &[ProfileId]) {
        if views.is_empty() && gone.is_empty() {
            return;
        }
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        for profile in gone {
            self.profiles.remove(profile);
        }
        for view in views {
            self.put(view, generation);
        }
    }

    /// Caches a view read at `generation` unless the cache holds a later one of the profile.
    pub fn put(&self, view: &ProfileView, generation: u64) {
        if self
            .profiles
            .get(&view.id)
            .is_some_and(|cached| cached.generation > generation)
        {
            return;
        }
        for (kind, value) in &view.identities {
            self.identities.insert(format!("{kind}:{value}"), view.id);
        }
        self.profiles.insert(
            view.id,
            Arc::new(CachedProfile {
                id: view.id,
                traits: view.traits.clone(),
                audiences: view.audiences.clone(),
                generation,
            }),
        );
    }

    pub fn insert(&self, view: &ProfileView) {
        self.put(view, self.generation());
    }

    /// The cached profile holding `identity` (`user_id:u1`), if cached.
    pub fn get(&self, identity: &str) -> Option<Arc<CachedProfile>> {
        let id = self.identities.get(identity)?;
        self.profiles.get(&id)
    }

    pub fn clear(&self) {
        self.profiles.clear();
        self.identities.clear();
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

/// A rule's condition, compiled: audiences and allow-listed traits.
#[derive(Clone, Debug)]
enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Audience(String),
    Trait(String, Comparison),
}

fn compile(condition: &ConditionConfig) -> Rule {
    if let Some(list) = &condition.all {
        return Rule::All(list.iter().map(compile).collect());
    }
    if let Some(list) = &condition.any {
        return Rule::Any(list.iter().map(compile).collect());
    }
    if let Some(inner) = &condition.not {
        return Rule::Not(Box::new(compile(inner)));
    }
    if let Some(id) = &condition.audience {
        return Rule::Audience(id.clone());
    }
    let op = Op::parse(condition.op.as_deref().unwrap_or("exists")).unwrap_or(Op::Exists);
    Rule::Trait(
        condition.trait_name.clone().unwrap_or_default(),
        Comparison::new(op, condition.value.clone().unwrap_or(Value::Null)),
    )
}

impl Rule {
    fn holds(&self, profile: Option<&CachedProfile>) -> bool {
        match self {
            Rule::All(list) => list.iter().all(|rule| rule.holds(profile)),
            Rule::Any(list) => list.iter().any(|rule| rule.holds(profile)),
            Rule::Not(rule) => !rule.holds(profile),
            Rule::Audience(id) => profile.is_some_and(|p| p.audiences.iter().any(|a| a == id)),
            Rule::Trait(name, comparison) => {
                comparison.holds(profile.and_then(|p| p.traits.get(name)))
            }
        }
    }
}

/// A workspace's personalization policy, compiled.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub config: PersonalizationConfig,
    /// From the config file (read-only through the API).
    pub declared: bool,
    rules: Vec<(String, String, Value, Rule)>,
}

impl Policy {
    pub fn new(config: PersonalizationConfig, declared: bool) -> Policy {
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                (
                    rule.id.clone(),
                    rule.slot.clone(),
                    rule.offer.clone(),
                    compile(&rule.when),
                )
            })
            .collect();
        Policy {
            config,
            declared,
            rules,
        }
    }

    /// The traits the unify task captures for the cache.
    pub fn captured_traits(&self) -> Vec<String> {
        self.config.traits.clone()
    }
}

/// What of a profile a public key may see: the allow-listed traits that are not personal data
/// and the allow-listed audiences. Every answer of the personalization API goes through here;
/// the privacy layer's consent check (does this visitor allow personalization?) is added here,
/// in one place, when it exists.
pub fn visible(policy: &Policy, profile: Option<&CachedProfile>) -> Value {
    let Some(profile) = profile else {
        return json!({"known": false, "traits": {}, "audiences": []});
    };
    let traits: serde_json::Map<String, Value> = policy
        .config
        .traits
        .iter()
        .filter(|name| !tandem_config::is_pii_trait(name))
        .filter_map(|name| Some((name.clone(), profile.traits.get(name)?.clone())))
        .collect();
    let audiences: Vec<&String> = profile
        .audiences
        .iter()
        .filter(|id| policy.config.audiences.contains(id))
        .collect();
    json!({"known": true, "traits": traits, "audiences": audiences})
}

/// The rules' decisions: for each slot, the offer of its first rule that holds.
pub fn decide(policy: &Policy, profile: Option<&CachedProfile>) -> (Value, Vec<String>) {
    let mut decisions = serde_json::Map::new();
    let mut matched = Vec::new();
    for (id, slot, offer, rule) in &policy.rules {
        if decisions.contains_key(slot) {
            continue;
        }
        if rule.holds(profile) {
            decisions.insert(slot.clone(), offer.clone());
            matched.push(id.clone());
        }
    }
    (Value::Object(decisions), matched)
}

/// Prefix of public keys: recognisable, and never a secret (they live in web pages).
pub const PUBLIC_KEY_PREFIX: &str = "tdm_pub_";
const PUBLIC_KEYS_SETTING: &str = "personalization_public_keys";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublicKeyRecord {
    pub workspace_id: String,
    pub id: String,
    pub name: String,
    pub sha256: String,
    /// Origins (`https://shop.example.com`) whose pages may use it; empty: any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub created_at_ms: i64,
    pub created_by: String,
    pub revoked: bool,
}

/// The public keys of every workspace, kept in one settings record and in memory by hash.
pub struct PublicKeys {
    store: Arc<dyn MetadataStore>,
    keys: RwLock<Vec<PublicKeyRecord>>,
    by_hash: RwLock<std::collections::HashMap<String, usize>>,
}

fn digest(secret: &str) -> String {
    ids::hex(&Sha256::digest(secret.as_bytes()))
}

impl PublicKeys {
    pub fn load(store: Arc<dyn MetadataStore>) -> anyhow::Result<PublicKeys> {
        let keys: Vec<PublicKeyRecord> = match store.setting(PUBLIC_KEYS_SETTING)? {
            Some(json) => serde_json::from_str(&json)?,
            None => Vec::new(),
        };
        let keys_store = PublicKeys {
            store,
            keys: RwLock::new(Vec::new()),
            by_hash: RwLock::new(Default::default()),
        };
        keys_store.replace(keys);
        Ok(keys_store)
    }

    fn replace(&self, keys: Vec<PublicKeyRecord>) {
        let index = keys
            .iter()
            .enumerate()
            .filter(|(_, key)| !key.revoked)
            .map(|(at, key)| (key.sha256.clone(), at))
            .collect();
        *self.keys.write() = keys;
        *self.by_hash.write() = index;
    }

    fn save(&self, keys: Vec<PublicKeyRecord>) -> Result<(), ApiError> {
        let json = serde_json::to_string(&keys).map_err(ApiError::internal)?;
        self.store.put_setting(PUBLIC_KEYS_SETTING, &json)?;
        self.replace(keys);
        Ok(())
    }

    pub fn create(
        &self,
        workspace_id: &str,
        name: &str,
        allowed_origins: Vec<String>,
        created_by: &str,
    ) -> Result<(PublicKeyRecord, String), ApiError> {
        let mut keys = self.keys.read().clone();
        let live = keys
            .iter()
            .filter(|k| k.workspace_id == workspace_id && !k.revoked)
            .count();
        if live >= PERSONALIZE_KEYS_MAX {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("at most {PERSONALIZE_KEYS_MAX} public keys per workspace: revoke one"),
            ));
        }
        let secret = format!("{PUBLIC_KEY_PREFIX}{}", ids::random_secret(24));
        let record = PublicKeyRecord {
            workspace_id: workspace_id.to_string(),
            id: format!(
                "pk_{}",
                ids::random_secret(10)
                    .to_lowercase()
                    .replace(['-', '_'], "x")
            ),
            name: name.to_string(),
            sha256: digest(&secret),
            allowed_origins,
            created_at_ms: time_util::now_ms(),
            created_by: created_by.to_string(),
            revoked: false,
        };
        keys.push(record.clone());
        self.save(keys)?;
        Ok((record, secret))
    }

    pub fn list(&self, workspace_id: &str) -> Vec<PublicKeyRecord> {
        self.keys
            .read()
            .iter()
            .filter(|key| key.workspace_id == workspace_id)
            .cloned()
            .collect()
    }

    pub fn revoke(&self, workspace_id: &str, id: &str) -> Result<PublicKeyRecord, ApiError> {
        let mut keys = self.keys.read().clone();
        let key = keys
            .iter_mut()
            .find(|key| key.workspace_id == workspace_id && key.id == id)
            .ok_or_else(|| ApiError::not_found(format!("public key {id}")))?;
        key.revoked = true;
        let record = key.clone();
        self.save(keys)?;
        Ok(record)
    }

    /// The record of a live key.
    pub fn resolve(&self, secret: &str) -> Option<PublicKeyRecord> {
        let at = *self.by_hash.read().get(&digest(secret))?;
        self.keys.read().get(at).cloned()
    }
}

/// A workspace's policy, swapped whole when it changes.
pub struct WorkspacePersonalization {
    pub policy: RwLock<Arc<Policy>>,
}

fn policy_setting(workspace: &str) -> String {
    format!("personalization:{workspace}")
}

impl WorkspacePersonalization {
    /// The file's policy when it declares one, else the one set through the API, else none.
    pub fn load(
        store: &dyn MetadataStore,
        workspace: &tandem_config::WorkspaceConfig,
    ) -> anyhow::Result<WorkspacePersonalization> {
        let policy = match &workspace.personalization {
            Some(config) => Policy::new(config.clone(), true),
            None => match store.setting(&policy_setting(&workspace.id))? {
                Some(json) => Policy::new(serde_json::from_str(&json)?, false),
                None => Policy::default(),
            },
        };
        Ok(WorkspacePersonalization {
            policy: RwLock::new(Arc::new(policy)),
        })
    }

    pub fn get(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }

    pub fn save(
        &self,
        store: &dyn MetadataStore,
        workspace: &str,
        config: PersonalizationConfig,
    ) -> Result<Arc<Policy>, ApiError> {
        let json = serde_json::to_string(&config).map_err(ApiError::internal)?;
        store.put_setting(&policy_setting(workspace), &json)?;
        let policy = Arc::new(Policy::new(config, false));
        *self.policy.write() = policy.clone();
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let config: PersonalizationConfig = serde_json::from_value(json!({
            "traits": ["plan", "email"],
            "audiences": ["high-value"],
            "rules": [
                {"id": "vip", "slot": "banner", "offer": "vip-banner",
                 "when": {"all": [{"audience": "high-value"}, {"not": {"audience": "churned"}}]}},
                {"id": "pro", "slot": "banner", "offer": "pro-banner",
                 "when": {"trait": "plan", "op": "eq", "value": "pro"}},
                {"id": "default", "slot": "banner", "offer": "welcome", "when": {"not": {"audience": "nobody"}}},
            ]
        }))
        .unwrap();
        Policy::new(config, false)
    }

    fn profile(audiences: &[&str], plan: &str) -> CachedProfile {
        CachedProfile {
            id: 1,
            traits: [
                ("plan".to_string(), json!(plan)),
                ("email".to_string(), json!("a@b.c")),
            ]
            .into(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            generation: 0,
        }
    }

    #[test]
    fn the_first_rule_that_holds_decides_its_slot() {
        let policy = policy();
        let vip = profile(&["high-value"], "pro");
        assert_eq!(
            decide(&policy, Some(&vip)).0,
            json!({"banner": "vip-banner"})
        );
        let churned = profile(&["high-value", "churned"], "pro");
        assert_eq!(
            decide(&policy, Some(&churned)).0,
            json!({"banner": "pro-banner"})
        );
        assert_eq!(decide(&policy, None).0, json!({"banner": "welcome"}));
    }

    #[test]
    fn only_allow_listed_non_personal_fields_are_visible() {
        let policy = policy();
        let seen = visible(&policy, Some(&profile(&["high-value", "churned"], "pro")));
        assert_eq!(
            seen,
            json!({"known": true, "traits": {"plan": "pro"}, "audiences": ["high-value"]}),
            "email is personal data even when listed; churned is not allow-listed"
        );
    }

    #[test]
    fn the_cache_follows_merges_and_is_bounded() {
        let cache = PersonalizeCache::new(100);
        let view = |id, anonymous: &str, audiences: &[&str]| ProfileView {
            id,
            identities: vec![("anonymous_id".into(), anonymous.into())],
            traits: BTreeMap::new(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
        };
        cache.update(&[view(1, "a1", &[]), view(2, "a2", &["x"])], &[]);
        assert_eq!(cache.get("anonymous_id:a2").unwrap().audiences, ["x"]);
        // Profile 2 merged into 1: its identity now leads to the survivor.
        let mut survivor = view(1, "a1", &["x"]);
        survivor
            .identities
            .push(("anonymous_id".into(), "a2".into()));
        cache.update(&[survivor], &[2]);
        assert_eq!(cache.get("anonymous_id:a2").unwrap().id, 1);
        for id in 10..1000 {
            cache.insert(&view(id, &format!("a{id}"), &[]));
        }
        assert!(cache.len() <= 100, "{}", cache.len());
    }
}
