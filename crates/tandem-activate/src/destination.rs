//! THE CONTRACT every destination type implements. The plumbing (filters, mappings,
//! transformation, lanes, batching, retries, circuit breaker, DLQ, offsets) is written once in
//! this crate; a destination only turns a batch into requests/rows/messages and classifies the
//! answer into an [`Outcome`].
//!
//! Adding a destination type = a folder under `src/destinations/<type>/` (`mod.rs` with
//! `pub static TYPE: DestinationType`, `config.rs`, `request.rs`, `service.rs`, `tests.rs`) and
//! one line in [`crate::registry::REGISTRY`].

use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tandem_core::EventType;

/// One event on its way out, after filters, mappings and the transformation.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundEvent {
    /// Log offset it came from (replays: the DLQ entry's original offset).
    pub offset: u64,
    /// Sent as the idempotency key: redeliveries of one event always carry the same value.
    pub message_id: String,
    pub event_type: EventType,
    pub source_id: String,
    /// `receivedAt` in ms since the epoch (the log record's timestamp).
    pub received_at_ms: i64,
    /// `userId`, else `anonymousId`: the key of the ordering lane.
    pub user_key: String,
    /// The Segment-shaped JSON object to send. Shared, not copied: retries and bisection clone
    /// the event for every attempt. An unshaped event is the log record's bytes themselves,
    /// parsed only if a destination asks for the value.
    pub event: EventJson,
}

/// The JSON of an outbound event, cheap to clone. Either the bytes the log stored (an event no
/// mapping or transformation touched: a webhook or NATS writes them as they are, never building
/// a tree) or a value that mappings or a transformation made. [`EventJson::value`] (and `Deref`)
/// give the value either way, parsing stored bytes once on first use.
#[derive(Clone)]
pub struct EventJson(Repr);

#[derive(Clone)]
enum Repr {
    Stored(Arc<StoredJson>),
    Value(Arc<serde_json::Value>),
}

struct StoredJson {
    bytes: bytes::Bytes,
    parsed: std::sync::OnceLock<serde_json::Value>,
}

impl EventJson {
    /// An event as the log stored it. `bytes` must be one JSON object (collect validated it);
    /// should it not parse after all, [`EventJson::value`] is `null`.
    pub fn stored(bytes: bytes::Bytes) -> EventJson {
        EventJson(Repr::Stored(Arc::new(StoredJson {
            bytes,
            parsed: std::sync::OnceLock::new(),
        })))
    }

    /// The event as a JSON value (stored bytes are parsed on first use, then kept).
    pub fn value(&self) -> &serde_json::Value {
        match &self.0 {
            Repr::Value(value) => value,
            Repr::Stored(stored) => stored.parsed.get_or_init(|| {
                serde_json::from_slice(&stored.bytes).unwrap_or(serde_json::Value::Null)
            }),
        }
    }

    /// Appends the event's JSON to `out`: stored bytes as they are, a value serialized.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match &self.0 {
            Repr::Stored(stored) => out.extend_from_slice(&stored.bytes),
            Repr::Value(value) => {
                serde_json::to_writer(out, value.as_ref()).expect("JSON values serialize")
            }
        }
    }

    /// The event's JSON bytes (see [`EventJson::write_json`]).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json_len_hint());
        self.write_json(&mut out);
        out
    }

    /// The stored JSON's length, or a guess for a value (to size buffers).
    pub fn json_len_hint(&self) -> usize {
        match &self.0 {
            Repr::Stored(stored) => stored.bytes.len(),
            Repr::Value(_) => 512,
        }
    }

    /// Whether this is the log's bytes, unparsed so far (for tests and benchmarks).
    pub fn is_stored(&self) -> bool {
        matches!(self.0, Repr::Stored(_))
    }

    /// A copy of the value that can be changed (for mappings and dead letters).
    pub fn to_value(&self) -> serde_json::Value {
        self.value().clone()
    }
}

impl std::ops::Deref for EventJson {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        self.value()
    }
}

impl From<serde_json::Value> for EventJson {
    fn from(value: serde_json::Value) -> EventJson {
        EventJson(Repr::Value(Arc::new(value)))
    }
}

impl From<Arc<serde_json::Value>> for EventJson {
    fn from(value: Arc<serde_json::Value>) -> EventJson {
        EventJson(Repr::Value(value))
    }
}

impl PartialEq for EventJson {
    fn eq(&self, other: &EventJson) -> bool {
        self.value() == other.value()
    }
}

impl std::fmt::Debug for EventJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Stored(stored) => write!(f, "Stored({})", String::from_utf8_lossy(&stored.bytes)),
            Repr::Value(value) => write!(f, "Value({value})"),
        }
    }
}

impl serde::Serialize for EventJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

/// What happened to one event or one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Transient (429, 5xx, timeouts, connection refused): try again later, after `after` if the
    /// destination said so (`Retry-After`).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Permanent (other 4xx, schema refused): this event/batch will never be accepted as is → DLQ
    /// (a rejected batch of several events is bisected first, so only the poisonous one goes).
    Reject {
        error: String,
    },
}

impl Outcome {
    pub fn retry(error: impl Into<String>) -> Outcome {
        Outcome::Retry {
            error: error.into(),
            after: None,
        }
    }
    pub fn reject(error: impl Into<String>) -> Outcome {
        Outcome::Reject {
            error: error.into(),
        }
    }
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered)
    }
}

/// The answer to a batch: one outcome for all of it, or one per event (aligned with the batch)
/// when the destination knows which event failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    All(Outcome),
    PerEvent(Vec<Outcome>),
}

/// How this destination prefers its batches, and the most events it takes in one. A connection's
/// `delivery.batch_*` settings, when given, replace the preferences (the event count still capped
/// by `events_cap`); when absent, these apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Preferred most events per batch.
    pub events_max: usize,
    /// Preferred most bytes of events per batch.
    pub bytes_max: usize,
    /// A batch is sent once its oldest event waited this long, full or not.
    pub age_ms: u64,
    /// The most events one batch may hold whatever the connection asks.
    pub events_cap: usize,
}

impl BatchLimits {
    /// The limits a connection's worker uses: the connection's settings where given, else this
    /// destination's preferences.
    pub fn effective(self, delivery: &tandem_config::DeliveryConfig) -> BatchLimits {
        BatchLimits {
            events_max: delivery
                .batch_events_max
                .unwrap_or(self.events_max)
                .min(self.events_cap)
                .max(1),
            bytes_max: delivery.batch_bytes_max.unwrap_or(self.bytes_max).max(1),
            age_ms: delivery.batch_age_ms.unwrap_or(self.age_ms),
            events_cap: self.events_cap,
        }
    }
}

impl Default for BatchLimits {
    fn default() -> Self {
        use tandem_core::limits::*;
        BatchLimits {
            events_max: DEFAULT_DELIVERY_BATCH_EVENTS_MAX,
            bytes_max: DEFAULT_DELIVERY_BATCH_BYTES_MAX,
            age_ms: DEFAULT_DELIVERY_BATCH_AGE_MS,
            events_cap: DELIVERY_BATCH_EVENTS_MAX,
        }
    }
}

/// The answer to a data-subject deletion forwarded to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The destination deleted (or scheduled deletion of) the subject's data.
    Deleted,
    /// This destination type cannot delete; the operator must do it by hand (the DSR report says so).
    Unsupported,
    /// The deletion failed; `retryable` tells whether trying again may help.
    Failed { error: String, retryable: bool },
}

/// A live destination, built from validated settings.
pub trait Destination: Send + Sync + 'static {
    fn batch_limits(&self) -> BatchLimits;

    /// Whether events of one user must arrive in order (then lanes are keyed by `user_key`).
    fn ordered(&self) -> bool {
        true
    }

    /// Sends one batch (never empty). Must not panic; every failure is an [`Outcome`]. The
    /// plumbing applies the connection's timeout around this future too.
    fn send<'a>(&'a self, batch: &'a [OutboundEvent]) -> BoxFuture<'a, BatchOutcome>;

    /// Data-subject deletion forwarded to the destination (the privacy issue calls this), with
    /// the subject's identifiers as (type, value) pairs. Default: unsupported.
    fn delete_user<'a>(
        &'a self,
        _identifiers: &'a [(String, String)],
    ) -> BoxFuture<'a, DeleteOutcome> {
        Box::pin(async { DeleteOutcome::Unsupported })
    }
}

/// One problem with a destination's settings: the dotted field path (`""` for the whole object)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SettingsProblem {
    pub field: String,
    pub message: String,
}

impl SettingsProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> SettingsProblem {
        SettingsProblem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SettingsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// What a destination may need when it is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContext {
    pub workspace_id: String,
    pub destination_id: String,
    /// The server's data directory (a destination keeps local state under
    /// `data_dir/activate/<workspace>/<destination>/` if it needs any).
    pub data_dir: PathBuf,
}

/// Builds a live destination from validated settings (may connect lazily; must not block).
pub type BuildFn = fn(&serde_json::Value, &BuildContext) -> Result<Arc<dyn Destination>, String>;

/// A destination type: its name, settings schema, validation and constructor. One static per
/// type, listed in [`crate::registry::REGISTRY`].
pub struct DestinationType {
    /// `"webhook"`, `"postgres"`, `"files"`, `"nats"`.
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the settings (the console generates forms from it).
    pub settings_schema: fn() -> serde_json::Value,
    /// Checks settings without connecting: every problem, as field path + message.
    pub validate: fn(&serde_json::Value) -> Result<(), Vec<SettingsProblem>>,
    /// Builds a live destination (may connect lazily; must not block).
    pub build: BuildFn,
}

impl std::fmt::Debug for DestinationType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationType")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Parses settings into a type's `#[serde(deny_unknown_fields)]` struct, turning the serde error
/// into a [`SettingsProblem`] (shared by every destination's `validate` and `build`).
/// Every problem of a settings object on one line (`field: message; …`), as a build error.
pub fn describe_problems(problems: &[SettingsProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn parse_settings<T: serde::de::DeserializeOwned>(
    settings: &serde_json::Value,
) -> Result<T, Vec<SettingsProblem>> {
    serde_json::from_value(settings.clone())
        .map_err(|error| vec![SettingsProblem::new("", error.to_string())])
}

#[cfg(test)]
mod batch_limit_tests {
    use super::BatchLimits;
    use tandem_config::DeliveryConfig;

    #[test]
    fn the_destination_prefers_unless_the_connection_says() {
        let warehouse = BatchLimits {
            events_max: 1_000,
            age_ms: 5_000,
            ..BatchLimits::default()
        };
        let unset = DeliveryConfig::default();
        assert_eq!(warehouse.effective(&unset), warehouse);
        let set = DeliveryConfig {
            batch_events_max: Some(50),
            batch_age_ms: Some(20),
            ..DeliveryConfig::default()
        };
        let effective = warehouse.effective(&set);
        assert_eq!((effective.events_max, effective.age_ms), (50, 20));
        assert_eq!(effective.bytes_max, warehouse.bytes_max);
    }

    #[test]
    fn the_event_count_never_passes_the_cap() {
        let capped = BatchLimits {
            events_cap: 2_000,
            ..BatchLimits::default()
        };
        let asks = DeliveryConfig {
            batch_events_max: Some(9_000),
            ..DeliveryConfig::default()
        };
        assert_eq!(capped.effective(&asks).events_max, 2_000);
        let zero = DeliveryConfig {
            batch_events_max: Some(0),
            batch_bytes_max: Some(0),
            ..DeliveryConfig::default()
        };
        let floor = BatchLimits::default().effective(&zero);
        assert_eq!((floor.events_max, floor.bytes_max), (1, 1));
    }
}
