//! The shared state of a running server.

use crate::auth::AdminTokens;
use crate::catalog::Catalog;
use crate::rate_limit::RateLimiter;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tandem_collect::DedupIndex;
use tandem_config::Config;
use tandem_log::{EventLog, FileLog};
use tokio::sync::broadcast;

/// One workspace (a market, region or brand) and its log.
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub log: Arc<dyn EventLog>,
    /// The same log as its file backend, for operations only files have (sidecars, retention).
    pub file_log: Arc<FileLog>,
    /// Mixed into dedup keys so equal source ids in two workspaces never collide.
    pub dedup_salt: u64,
    /// Identity resolution and profiles: a consumer of `log`.
    pub unify: Arc<crate::unify::Unify>,
    /// Destinations, connections and their delivery workers (consumers of `log`).
    pub activation: Arc<tandem_activate::runtime::Activation>,
    /// Tracking plans, their violation counters and the quarantine (`crate::plans`).
    pub plans: Arc<crate::plans::WorkspacePlans>,
    /// Audiences: definitions, the engine the unify task drives, previews, the outbox drain's
    /// signal and the personalization cache (`crate::audiences`).
    pub audiences: Arc<crate::audiences::WorkspaceAudiences>,
    /// What the personalization API may answer and its rules (`crate::personalize`).
    pub personalization: Arc<crate::personalize::WorkspacePersonalization>,
    /// Data-subject requests and the suppression list (`crate::privacy`).
    pub privacy: Arc<crate::privacy::WorkspacePrivacy>,
    /// PII classification, salt and collect options (`crate::pii`).
    pub pii: Arc<tandem_pii::WorkspacePii>,
    /// The retention policy and its last runs (`crate::retention`).
    pub retention: Arc<crate::retention::WorkspaceRetention>,
}

/// An event as the live debugger shows it: accepted (with its offset) or rejected (with why).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveEvent {
    /// `accepted` (stored), `quarantined` or `blocked` (by a tracking plan), `rejected` (invalid).
    #[serde(skip)]
    pub kind: &'static str,
    pub workspace_id: String,
    pub source_id: String,
    pub received_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The enriched event when accepted, the raw event when rejected (when it parsed).
    pub event: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<serde_json::Value>,
    /// The tracking plan's verdict `{plan, version, mode, outcome, violations}`, when a plan
    /// checked the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<serde_json::Value>,
}

pub struct Inner {
    pub config: Config,
    /// The policies in force: the config file's and those set through the API (`policies.rs`).
    pub policies: Arc<crate::policies::Policies>,
    /// The metadata store (catalog, settings, tokens).
    pub store: Arc<dyn tandem_store::MetadataStore>,
    pub catalog: Catalog,
    pub workspaces: BTreeMap<String, Workspace>,
    pub dedup: Arc<DedupIndex>,
    pub rate_limiter: RateLimiter,
    pub live: broadcast::Sender<Arc<LiveEvent>>,
    pub admin_tokens: Arc<AdminTokens>,
    /// Workspace access tokens of the Profile API.
    pub access_tokens: Arc<crate::access_tokens::AccessTokens>,
    /// Public (browser) keys of the personalization API.
    pub public_keys: Arc<crate::personalize::PublicKeys>,
    /// The hash-chained audit log (`DATA/audit/`).
    pub audit: Arc<tandem_audit::AuditLog>,
    pub metrics: PrometheusHandle,
    /// Import jobs of the import API (`routes::imports`).
    pub imports: Arc<crate::routes::imports::Imports>,
    /// Delivery alerts of every workspace (`/api/v1/alerts`).
    pub alerts: Arc<tandem_activate::stats::Alerts>,
    /// False only for the benchmark's no-persistence reference (`serve --discard`).
    pub persist: bool,
    pub ready: AtomicBool,
    pub started_at: Instant,
}

/// Cheap to clone: every handler gets one.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl Inner {
    /// The workspace of a path, or 404.
    pub fn workspace(&self, id: &str) -> crate::error::ApiResult<&Workspace> {
        self.workspaces
            .get(id)
            .ok_or_else(|| crate::error::ApiError::not_found(format!("workspace {id}")))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
