//! The shape of `tandem.toml`: one struct per section, every section and every field with a
//! default except the ones a source cannot do without (name, owner, write key), which default
//! to empty so that validation can report every missing one at once instead of serde stopping
//! at the first. Unknown keys are rejected everywhere: a typo must not silently fall back to a
//! default.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tandem_core::limits::{
    DEFAULT_DEDUP_ENTRIES_MAX, DEFAULT_DEDUP_WINDOW_HOURS, DEFAULT_DISK_FREE_BYTES_MIN,
    DEFAULT_LOG_QUEUE_BYTES_MAX, DEFAULT_SEGMENT_BYTES_MAX,
};

/// Address `tandem serve` listens on when neither the file nor `TANDEM_LISTEN` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Data directory used when neither the file nor `TANDEM_DATA` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./tandem-data";
/// Organization name used when the file has no `[organization]` section.
pub const DEFAULT_ORGANIZATION_NAME: &str = "tandem";

/// A whole `tandem.toml`. Every section is optional; `Config::default()` is what an empty file gives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: where to listen and where to keep data.
    pub server: ServerConfig,
    /// `[admin]`: the organization-wide admin credential.
    #[serde(skip_serializing_if = "AdminConfig::is_unset")]
    pub admin: AdminConfig,
    /// `[log]`: the durable event log of each workspace.
    pub log: LogConfig,
    /// `[collect]`: the Segment-compatible tracking API.
    pub collect: CollectConfig,
    /// `[organization]`: the organization every workspace belongs to.
    pub organization: OrganizationConfig,
    /// `[[workspaces]]`: markets, regions or brands, each with its own log and sources.
    pub workspaces: Vec<WorkspaceConfig>,
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` to listen on. Env `TANDEM_LISTEN`, flag `--listen`. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Directory holding the logs and the metadata store. Env `TANDEM_DATA`, flag `--data`.
    /// Default `./tandem-data`.
    pub data_dir: PathBuf,
    /// The URL clients reach this server at (behind a proxy), e.g. `https://cdp.example.com`;
    /// used in the analytics.js settings. Env `TANDEM_PUBLIC_URL`. Default: derived from the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.to_string(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            public_url: None,
        }
    }
}

/// `[admin]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin token (`Authorization: Bearer …`). Env `TANDEM_ADMIN_TOKEN`. Default: one is
    /// generated at first start, printed once and stored hashed. Prefer the env var to keeping
    /// a secret in a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl AdminConfig {
    /// Nothing set: [`crate::to_toml`] then leaves the section out.
    fn is_unset(&self) -> bool {
        self.token.is_none()
    }
}

/// `[log]`: limits of the per-workspace durable log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A segment file is sealed past this size. Env `TANDEM_LOG_SEGMENT_BYTES_MAX`.
    /// Default [`DEFAULT_SEGMENT_BYTES_MAX`]; allowed 1 MiB ..= 4 GiB.
    pub segment_bytes_max: u64,
    /// Bytes of appends queued for the writer before requests get 503. Env
    /// `TANDEM_LOG_QUEUE_BYTES_MAX`. Default [`DEFAULT_LOG_QUEUE_BYTES_MAX`]; at least 1 MiB.
    pub queue_bytes_max: usize,
    /// Sealed segments are deleted oldest first once the log is larger than this. Env
    /// `TANDEM_LOG_RETENTION_BYTES_MAX`. Default: no size limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_bytes_max: Option<u64>,
    /// Sealed segments older than this are deleted. Env `TANDEM_LOG_RETENTION_HOURS`. Default: kept forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_hours: Option<u64>,
    /// Appends are refused with 503 when the data disk has less free space than this. Env
    /// `TANDEM_LOG_DISK_FREE_BYTES_MIN`. Default [`DEFAULT_DISK_FREE_BYTES_MIN`].
    pub disk_free_bytes_min: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: DEFAULT_SEGMENT_BYTES_MAX,
            queue_bytes_max: DEFAULT_LOG_QUEUE_BYTES_MAX,
            retention_bytes_max: None,
            retention_hours: None,
            disk_free_bytes_min: DEFAULT_DISK_FREE_BYTES_MIN,
        }
    }
}

/// `[collect]`: the tracking API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectConfig {
    /// How long a `(source, messageId)` pair is remembered to drop retried duplicates. Env
    /// `TANDEM_DEDUP_WINDOW_HOURS`. Default [`DEFAULT_DEDUP_WINDOW_HOURS`].
    pub dedup_window_hours: u64,
    /// Most pairs remembered (~16 B each). Env `TANDEM_DEDUP_ENTRIES_MAX`. Default [`DEFAULT_DEDUP_ENTRIES_MAX`].
    pub dedup_entries_max: usize,
    /// Events per second accepted per write key before 429; `None` is unlimited. Env
    /// `TANDEM_RATE_LIMIT_EVENTS_PER_SECOND`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_events_per_second: Option<u32>,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            dedup_window_hours: DEFAULT_DEDUP_WINDOW_HOURS,
            dedup_entries_max: DEFAULT_DEDUP_ENTRIES_MAX,
            rate_limit_events_per_second: None,
        }
    }
}

/// `[organization]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrganizationConfig {
    /// Display name. Default `tandem`.
    pub name: String,
    /// `[organization.policies.NAME]`: values every workspace inherits; a workspace may override
    /// one (`[workspaces.policies]`) only when it is `overridable`.
    pub policies: std::collections::BTreeMap<String, PolicyConfig>,
}

impl Default for OrganizationConfig {
    fn default() -> Self {
        OrganizationConfig {
            name: DEFAULT_ORGANIZATION_NAME.to_string(),
            policies: Default::default(),
        }
    }
}

/// `[organization.policies.NAME]`: an organization-wide policy value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub value: toml::Value,
    /// Whether a workspace may set its own value (of the same type). Default false.
    #[serde(default)]
    pub overridable: bool,
}

/// `[[workspaces]]`: a market, region or brand with its own log, sources and (later) policies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Stable id, a slug (`[a-z0-9][a-z0-9_-]{0,62}`): it names the log directory and appears in URLs.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `[[workspaces.sources]]`: where events come from.
    pub sources: Vec<SourceConfig>,
    /// `[workspaces.identity]`: how identity resolution joins identifiers into profiles.
    pub identity: IdentityConfig,
    /// `[[workspaces.computed_traits]]`: traits computed from each profile's events.
    pub computed_traits: Vec<ComputedTraitConfig>,
    /// `[[workspaces.destinations]]`: where events may be sent (a webhook, a warehouse, files, NATS).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationConfig>,
    /// `[[workspaces.connections]]`: which sources' events go to which destination, and how.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionConfig>,
    /// `[[workspaces.tracking_plans]]`: JSON Schemas of the events of the workspace or of some
    /// sources, and what happens to an event that breaks them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracking_plans: Vec<crate::plans::TrackingPlanConfig>,
    /// `[workspaces.policies]`: overrides of overridable organization policies.
    pub policies: std::collections::BTreeMap<String, toml::Value>,
    /// `[[workspaces.audiences]]`: sets of profiles kept up to date as events arrive.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<crate::audiences::AudienceConfig>,
    /// `[workspaces.personalization]`: what the browser-facing personalization API may answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personalization: Option<crate::audiences::PersonalizationConfig>,
    /// `[workspaces.pii]`: which fields hold personal data, the hashing salt, IP anonymization.
    #[serde(skip_serializing_if = "PiiConfig::is_unset")]
    pub pii: PiiConfig,
    /// `[workspaces.retention]`: how long the workspace keeps events, dead letters and
    /// inactive profiles.
    #[serde(skip_serializing_if = "RetentionConfig::is_unset")]
    pub retention: RetentionConfig,
}

/// `[workspaces.retention]`: maximum ages, in days, each enforced continuously by the server
/// and reported at `GET /api/v1/workspaces/{ws}/retention`. Every one is optional: absent means
/// kept forever. Each lies within 1 ..= [`crate::RETENTION_DAYS_HIGHEST`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Sealed log segments whose newest record is older than this are deleted. It combines
    /// with `[log] retention_hours` (organization-wide): the stricter (shorter) wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_days: Option<u64>,
    /// Dead letters whose last failure is older than this are removed (and the store file
    /// rewritten so their bytes go too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters_days: Option<u64>,
    /// Profiles whose last event (its corrected event time) is older than this are erased,
    /// with every row naming them (identity graph, traits, timeline, consent, audiences).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles_inactive_days: Option<u64>,
    /// Maximum age of the Parquet archive. There is no archive yet: the value is accepted,
    /// validated and reported as not applicable until the archive exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_days: Option<u64>,
}

impl RetentionConfig {
    fn is_unset(&self) -> bool {
        self == &RetentionConfig::default()
    }
}

/// `[workspaces.pii]`: the workspace's PII classification (see `tandem_pii`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PiiConfig {
    /// Store `context.ip` with the last IPv4 octet or the last 80 bits of IPv6 zeroed, at
    /// collect (the full address never reaches the log). Default false.
    pub anonymize_ip: bool,
    /// The name of an environment variable holding the salt connections hash with (at least
    /// [`tandem_pii::SALT_CHARS_MIN`] characters). Absent: a random salt is generated at first start and kept
    /// in the metadata store. The salt itself never goes in this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salt_env: Option<String>,
    /// `[[workspaces.pii.rules]]`: categories by field path; they win over the built-in
    /// detectors (`category = "none"`: not personal data).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<tandem_pii::PathRule>,
}

impl PiiConfig {
    fn is_unset(&self) -> bool {
        self == &PiiConfig::default()
    }
}

/// `[[workspaces.destinations]]`: one place events are delivered to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationConfig {
    /// Slug, unique within the workspace.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The destination type: a name of the activate registry (`webhook`, `postgres`, `files`, `nats`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Who answers for the data sent there (a team address): required, so no destination is shadow IT.
    pub owner: String,
    /// Why data goes there (the catalog, the record of processing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Categories of personal data sent (`contact`, `behavioral`, …), for the catalog.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_categories: Vec<String>,
    /// A disabled destination receives nothing; its connections keep their offsets. Default true.
    pub enabled: bool,
    /// `[workspaces.destinations.settings]`: the type's own settings, checked by the type.
    pub settings: serde_json::Value,
}

impl Default for DestinationConfig {
    fn default() -> Self {
        DestinationConfig {
            id: String::new(),
            name: String::new(),
            kind: String::new(),
            owner: String::new(),
            purpose: None,
            data_categories: Vec::new(),
            enabled: true,
            settings: serde_json::Value::Object(Default::default()),
        }
    }
}

/// `[[workspaces.connections]]`: events of some sources flowing to one destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Slug, unique within the workspace (it names the connection's log consumer and DLQ).
    pub id: String,
    /// Source ids of the workspace; `["*"]` = every source.
    pub sources: Vec<String>,
    /// The destination id (of this workspace).
    pub destination: String,
    /// Call types sent (`track`, `identify`, `page`, `screen`, `group`, `alias`). Empty: all six.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Track event names sent. Empty: all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Track event names never sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_events: Vec<String>,
    /// Consent categories the destination needs (carried now, enforced by the privacy layer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consent_categories: Vec<String>,
    /// Who answers for this flow, when not the destination's owner (the catalog).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Why these events go there, when narrower than the destination's purpose (the catalog, the
    /// record of processing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// JavaScript `function transform(event, ctx) { … }` run per event after the mappings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transformation: Option<String>,
    /// A disabled connection sends nothing and keeps its offset. Default true.
    pub enabled: bool,
    /// `[[workspaces.connections.mappings]]`: field mappings, applied in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mappings: Vec<MappingConfig>,
    /// `[workspaces.connections.delivery]`: batching, concurrency, retries.
    pub delivery: DeliveryConfig,
    /// PII policy: category → `allow`, `hash`, `mask` or `drop`, and `default` for the
    /// categories not named (default `allow`), applied to each event after the mappings and the
    /// transformation, just before the destination gets it:
    /// `pii = { email = "hash", phone = "mask", card = "drop", default = "allow" }`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pii: std::collections::BTreeMap<String, String>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            id: String::new(),
            sources: Vec::new(),
            destination: String::new(),
            event_types: Vec::new(),
            events: Vec::new(),
            exclude_events: Vec::new(),
            consent_categories: Vec::new(),
            owner: None,
            purpose: None,
            transformation: None,
            enabled: true,
            mappings: Vec::new(),
            delivery: DeliveryConfig::default(),
            pii: Default::default(),
        }
    }
}

/// `[[workspaces.connections.mappings]]`: one field mapping.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MappingConfig {
    /// Dotted path read (`properties.total`). Absent with `value`: set a constant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Dotted path written (`properties.revenue`); absent for `remove`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `move` (default), `copy`, `remove`, `set`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The constant written by `set`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// `[workspaces.connections.delivery]`: every field optional, defaults from `tandem_core::limits`;
/// the batch settings default to what the destination type prefers (a warehouse batches larger
/// and longer than a webhook).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Most events per batch (never above what the destination takes). Default: the destination's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_events_max: Option<usize>,
    /// Most bytes of events per batch. Default: the destination's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_bytes_max: Option<usize>,
    /// A batch is sent once its oldest event waited this long. Default: the destination's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_age_ms: Option<u64>,
    /// Lanes in flight (per-user order is kept within a lane).
    pub concurrency: usize,
    /// Retry budget per event: past it the event goes to the DLQ with its last error.
    pub retry_max_seconds: u64,
    /// Timeout of one request to the destination.
    pub request_timeout_ms: u64,
    /// Events per second sent at most; 0 = unlimited.
    pub rate_limit_per_second: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        use tandem_core::limits::*;
        DeliveryConfig {
            batch_events_max: None,
            batch_bytes_max: None,
            batch_age_ms: None,
            concurrency: DEFAULT_DELIVERY_LANES,
            retry_max_seconds: DEFAULT_DELIVERY_RETRY_MAX_SECONDS,
            request_timeout_ms: DEFAULT_DELIVERY_REQUEST_TIMEOUT_MS,
            rate_limit_per_second: 0,
        }
    }
}

/// `[[workspaces.computed_traits]]`: an aggregate of a profile's events kept up to date as events
/// arrive (and as a window's edge passes), shown with the profile's traits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputedTraitConfig {
    /// The trait's name (a slug: `orders_last_30_days`).
    pub name: String,
    /// `count`, `sum`, `min`, `max`, `average`, `first`, `last`, `most_frequent`, `unique_count`.
    pub function: String,
    /// Which calls count: `track` (default), `page`, `screen`, `identify`, `group`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The `event` name of a track call (or `name` of a page/screen call). Absent: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Dotted path of the value aggregated, in `properties` (in `traits` for identify/group).
    /// Required by every function but `count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// Conditions on the event's properties, all of which must hold.
    #[serde(rename = "where")]
    pub filters: Vec<PropertyFilterConfig>,
    /// Only events of the last this-many days count (whole days, UTC). Absent: all time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
}

/// One condition of a computed trait: `property` `op` `value`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PropertyFilterConfig {
    /// Dotted path in `properties` (in `traits` for identify/group).
    pub property: String,
    /// `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `contains`, `exists`.
    pub op: String,
    /// The value compared with (any TOML value; ignored by `exists`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<toml::Value>,
}

/// `[workspaces.identity]`: the identity resolution rules of a workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// `[[workspaces.identity.identifiers]]`: priority and limit per identifier type. Types not
    /// listed keep their defaults (user_id 1 per profile, every other type 5); a custom
    /// `context.externalIds` type not listed gets the lowest priority and a limit of 5.
    pub identifiers: Vec<IdentifierConfig>,
    /// Regular expressions (whole value) of identifier values never used to join profiles, on top
    /// of the defaults (`^[0-]*$`, `-1`, `null`, `undefined`, `anonymous`, `unknown`, `none`, …).
    pub blocked_values: Vec<String>,
    /// Keep the default blocked values. Default true.
    pub default_blocked_values: bool,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            identifiers: Vec::new(),
            blocked_values: Vec::new(),
            default_blocked_values: true,
        }
    }
}

/// `[[workspaces.identity.identifiers]]`: one identifier type's rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentifierConfig {
    /// The type: `user_id`, `anonymous_id`, `email`, `phone`, `device_id`, `advertising_id`, or a
    /// custom `context.externalIds[].type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Lower is more trusted. When a merge would break a limit, the event's identifier with the
    /// highest number is dropped first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Most values of this type one profile may hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Count only values first seen within this many days toward `limit` (e.g. 5 anonymous ids
    /// per 30 days). Absent: over all time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
}

/// `[[workspaces.sources]]`: one sender of events (a website, an app, a CRM import) and its write key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Slug, unique within the workspace. Optional in the file: derived from `name` when absent.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Who answers for this source's data (a team address): required, so every event has someone to ask.
    pub owner: String,
    /// The secret senders authenticate with (Basic auth user name); at least 16 characters,
    /// unique across all workspaces. Leave it out when `write_key_sha256` is given.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub write_key: String,
    /// Instead of `write_key`: the lowercase hex SHA-256 of the key, so the file holds no
    /// secret (what `GET .../config/export` writes; tandem only ever keeps the hash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_key_sha256: Option<String>,
    /// Why this source collects data — shown in the catalog, the basis of a processing record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Categories of personal data the source collects (`contact`, `behavioral`, `device`, …):
    /// the catalog and the record of processing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_categories: Vec<String>,
    /// A disabled source's write key is refused with 401. Default true.
    pub enabled: bool,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            id: String::new(),
            name: String::new(),
            owner: String::new(),
            write_key: String::new(),
            write_key_sha256: None,
            purpose: None,
            data_categories: Vec::new(),
            enabled: true,
        }
    }
}
