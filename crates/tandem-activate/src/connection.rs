//! A compiled connection: which events of a workspace go to one destination and how they are
//! shaped on the way (filters, field mappings, the optional transformation).

use std::sync::Arc;

/// The transformation step of a connection (JavaScript run sandboxed by `tandem-transform`).
/// Called once per event after the mappings; may modify the event, drop it (`Ok(vec![])`) or fan
/// it out (several outputs). `Err(message)` (a throw, a CPU/memory limit) sends the original
/// event to the DLQ with that message. Implementations are shared by the lanes of a connection,
/// hence `Send + Sync`.
pub trait Transform: Send + Sync + 'static {
    /// `source_id`: the source the event came through (the code sees it as `context.sourceId`).
    fn run(
        &self,
        event: &serde_json::Value,
        source_id: &str,
    ) -> Result<Vec<serde_json::Value>, String>;
}

/// What a transformation is compiled for (the code sees it as its `context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformTarget {
    pub workspace_id: String,
    pub connection_id: String,
    pub destination_type: String,
}

/// Compiles a connection's transformation source into a [`Transform`] (the server passes
/// `tandem-transform`'s compiler in; `Err` = the code does not compile, with the message).
pub type TransformCompiler =
    fn(code: &str, target: &TransformTarget) -> Result<Arc<dyn Transform>, String>;

use crate::destination::{EventJson, OutboundEvent};
use serde_json::Value;
use std::collections::HashSet;
use tandem_config::{ConnectionConfig, DeliveryConfig, DestinationConfig, MappingConfig};
use tandem_core::EventType;

/// Why an event does not go through a connection (counted as `filtered`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Source,
    EventType,
    EventName,
    /// The event's `integrations` object turned this destination off.
    Integrations,
}

/// One compiled field mapping.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapping {
    Move { from: Vec<String>, to: Vec<String> },
    Copy { from: Vec<String>, to: Vec<String> },
    Remove { from: Vec<String> },
    Set { to: Vec<String>, value: Value },
}

impl Mapping {
    /// Compiles a validated mapping (see `tandem_config::connection_problems`).
    pub fn compile(config: &MappingConfig) -> Result<Mapping, String> {
        let split = |path: &Option<String>, name: &str| -> Result<Vec<String>, String> {
            path.as_deref()
                .map(|path| path.split('.').map(str::to_string).collect())
                .ok_or_else(|| format!("mapping needs `{name}`"))
        };
        let op =
            config
                .op
                .as_deref()
                .unwrap_or(if config.from.is_none() && config.value.is_some() {
                    "set"
                } else {
                    "move"
                });
        Ok(match op {
            "move" => Mapping::Move {
                from: split(&config.from, "from")?,
                to: split(&config.to, "to")?,
            },
            "copy" => Mapping::Copy {
                from: split(&config.from, "from")?,
                to: split(&config.to, "to")?,
            },
            "remove" => Mapping::Remove {
                from: split(&config.from, "from")?,
            },
            "set" => Mapping::Set {
                to: split(&config.to, "to")?,
                value: config.value.clone().ok_or("`set` needs `value`")?,
            },
            other => return Err(format!("unknown mapping op `{other}`")),
        })
    }

    /// Applies the mapping to `event` in place; a missing `from` changes nothing.
    pub fn apply(&self, event: &mut Value) {
        match self {
            Mapping::Move { from, to } => {
                if let Some(value) = remove_path(event, from) {
                    set_path(event, to, value);
                }
            }
            Mapping::Copy { from, to } => {
                if let Some(value) = get_path(event, from).cloned() {
                    set_path(event, to, value);
                }
            }
            Mapping::Remove { from } => {
                remove_path(event, from);
            }
            Mapping::Set { to, value } => set_path(event, to, value.clone()),
        }
    }
}

fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
}

fn remove_path(value: &mut Value, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut current = value;
    for key in parents {
        current = current.get_mut(key)?;
    }
    current.as_object_mut()?.remove(last)
}

/// Sets `path`, creating objects on the way (a non-object in the way is replaced).
fn set_path(value: &mut Value, path: &[String], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = value;
    for key in parents {
        if !current.is_object() {
            *current = Value::Object(Default::default());
        }
        current = current
            .as_object_mut()
            .expect("made an object above")
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    if !current.is_object() {
        *current = Value::Object(Default::default());
    }
    current
        .as_object_mut()
        .expect("made an object above")
        .insert(last.clone(), new);
}

/// A connection ready to filter and shape events.
pub struct Connection {
    pub workspace_id: String,
    pub id: String,
    pub destination_id: String,
    pub destination_name: String,
    pub destination_type: String,
    /// `None`: every source of the workspace.
    sources: Option<HashSet<String>>,
    /// `None`: every call type.
    event_types: Option<Vec<EventType>>,
    events: Option<HashSet<String>>,
    exclude_events: HashSet<String>,
    mappings: Vec<Mapping>,
    transform: Option<Arc<dyn Transform>>,
    pub consent_categories: Vec<String>,
    /// Asked for every event when `consent_categories` names a category (see `consent.rs`).
    consent: Option<crate::consent::ConsentGate>,
    pub delivery: DeliveryConfig,
    pub enabled: bool,
    /// The connection's PII policy (`pii = { email = "hash", … }`), applied last.
    pii_policy: tandem_pii::Policy,
    /// The workspace's classification and salt, attached by [`Connection::with_pii`]; without
    /// it (previews) the policy is not applied.
    pii: Option<Arc<tandem_pii::WorkspacePii>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("workspace_id", &self.workspace_id)
            .field("id", &self.id)
            .field("destination_id", &self.destination_id)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Compiles a validated connection. A transformation needs `compiler` (the JS engine).
    pub fn compile(
        workspace_id: &str,
        config: &ConnectionConfig,
        destination: &DestinationConfig,
        compiler: Option<TransformCompiler>,
    ) -> Result<Connection, String> {
        let sources = if config.sources.iter().any(|source| source == "*") {
            None
        } else {
            Some(config.sources.iter().cloned().collect())
        };
        let event_types = if config.event_types.is_empty() {
            None
        } else {
            let parsed = config.event_types.iter().map(|name| {
                EventType::parse(name).ok_or_else(|| format!("unknown event type `{name}`"))
            });
            Some(parsed.collect::<Result<Vec<_>, _>>()?)
        };
        let mappings = config
            .mappings
            .iter()
            .map(Mapping::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let transform = match (&config.transformation, compiler) {
            (None, _) => None,
            (Some(code), Some(compile)) => {
                let target = TransformTarget {
                    workspace_id: workspace_id.to_string(),
                    connection_id: config.id.clone(),
                    destination_type: destination.kind.clone(),
                };
                Some(compile(code, &target).map_err(|error| format!("transformation: {error}"))?)
            }
            (Some(_), None) => {
                return Err(
                    "transformation: this build has no JavaScript engine (tandem-transform)".into(),
                )
            }
        };
        let pii_policy = tandem_pii::Policy::parse(&config.pii).map_err(|problems| {
            let listed: Vec<String> = problems
                .into_iter()
                .map(|(key, message)| format!("pii.{key}: {message}"))
                .collect();
            listed.join("; ")
        })?;
        Ok(Connection {
            workspace_id: workspace_id.to_string(),
            id: config.id.clone(),
            destination_id: destination.id.clone(),
            destination_name: destination.name.clone(),
            destination_type: destination.kind.clone(),
            sources,
            event_types,
            events: (!config.events.is_empty()).then(|| config.events.iter().cloned().collect()),
            exclude_events: config.exclude_events.iter().cloned().collect(),
            mappings,
            transform,
            consent_categories: config.consent_categories.clone(),
            consent: None,
            delivery: config.delivery.clone(),
            enabled: config.enabled && destination.enabled,
            pii_policy,
            pii: None,
        })
    }

    /// Applies the connection's PII policy with the workspace's classification and salt to
    /// every event it sends.
    pub fn with_pii(mut self, workspace: Arc<tandem_pii::WorkspacePii>) -> Connection {
        self.pii = Some(workspace);
        self
    }

    /// The PII step, when it changes anything.
    fn pii_step(&self) -> Option<&tandem_pii::WorkspacePii> {
        self.pii
            .as_deref()
            .filter(|_| !self.pii_policy.allows_all())
    }

    /// Gates the connection on consent: events go only where the person's consent covers
    /// `consent_categories` (without a gate, categories are not enforced: previews).
    pub fn with_consent(mut self, oracle: Arc<dyn crate::consent::ConsentOracle>) -> Connection {
        self.consent = Some(crate::consent::ConsentGate {
            required: self.consent_categories.clone(),
            oracle,
        });
        self
    }

    /// The consent decision for an event's JSON, when the connection is gated and needs a
    /// category (`None`: nothing to decide, the event may go).
    pub fn consent_decision(&self, json: &[u8]) -> Option<tandem_consent::Decision> {
        let gate = self.consent.as_ref()?;
        if !tandem_consent::needs_consent(&gate.required) {
            return None;
        }
        Some(crate::consent::decide_bytes(
            &gate.required,
            json,
            gate.oracle.as_ref(),
        ))
    }

    /// The consent decision for a parsed event, whether or not the connection is gated (the
    /// explain API): with no gate, the profile is unknown and the policy is `missing`.
    pub fn consent_explain(
        &self,
        event: &Value,
        fallback: &dyn crate::consent::ConsentOracle,
    ) -> tandem_consent::Decision {
        let oracle = self
            .consent
            .as_ref()
            .map(|gate| gate.oracle.as_ref())
            .unwrap_or(fallback);
        crate::consent::decide_value(&self.consent_categories, event, oracle)
    }

    /// Whether the header alone (source, type) lets the event through: checked before parsing JSON.
    pub fn accepts_header(&self, source_id: &str, event_type: EventType) -> Result<(), Skip> {
        if event_type == EventType::Control {
            return Err(Skip::EventType);
        }
        if self
            .sources
            .as_ref()
            .is_some_and(|sources| !sources.contains(source_id))
        {
            return Err(Skip::Source);
        }
        if self
            .event_types
            .as_ref()
            .is_some_and(|types| !types.contains(&event_type))
        {
            return Err(Skip::EventType);
        }
        Ok(())
    }

    /// The checks that need the event's JSON: track names and the `integrations` object.
    pub fn accepts_event(&self, event_type: EventType, event: &Value) -> Result<(), Skip> {
        let name = event.get("event").and_then(Value::as_str);
        self.accepts_fields(event_type, name, event.get("integrations"))
    }

    fn accepts_fields(
        &self,
        event_type: EventType,
        name: Option<&str>,
        integrations: Option<&Value>,
    ) -> Result<(), Skip> {
        if event_type == EventType::Track {
            let name = name.unwrap_or_default();
            if self.exclude_events.contains(name)
                || self
                    .events
                    .as_ref()
                    .is_some_and(|events| !events.contains(name))
            {
                return Err(Skip::EventName);
            }
        }
        if !self.integrations_allow(integrations) {
            return Err(Skip::Integrations);
        }
        Ok(())
    }

    /// Whether events go out exactly as the log stored them (no mappings, no transformation):
    /// then [`Connection::outbound_stored`] sends the stored bytes without parsing them into a
    /// tree.
    pub fn sends_as_stored(&self) -> bool {
        self.mappings.is_empty() && self.transform.is_none() && self.pii_step().is_none()
    }

    /// The outbound event of a record sent as stored (see [`Connection::sends_as_stored`]):
    /// only the fields the plumbing needs are read (`messageId`, `userId`, `anonymousId`, and for
    /// the filters `event` and `integrations`), the bytes themselves are shared. `None` when the
    /// JSON is not an object this reader takes (duplicate keys, not UTF-8, not JSON) or has no
    /// string `messageId` (collect always gives one; the parsed way writes one in): the caller
    /// then goes the parsed way, which decides as it always did.
    pub fn outbound_stored(
        &self,
        record: &StoredRecordView,
    ) -> Option<Result<OutboundEvent, Skip>> {
        let json = &record.json;
        let text = std::str::from_utf8(json).ok()?;
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let fields: StoredFields<'_> = serde_json::from_str(text).ok()?;
        let message_id = raw_str(fields.message_id?)?.into_owned();
        let name = match fields.event {
            Some(raw) => raw_str(raw),
            None => None,
        };
        let integrations = match fields.integrations {
            Some(raw) => Some(serde_json::from_str::<Value>(raw.get()).ok()?),
            None => None,
        };
        if let Err(skip) =
            self.accepts_fields(record.event_type, name.as_deref(), integrations.as_ref())
        {
            return Some(Err(skip));
        }
        let user_key = [fields.user_id, fields.anonymous_id]
            .into_iter()
            .flatten()
            .find_map(raw_user_key)
            .unwrap_or_default();
        Some(Ok(OutboundEvent {
            offset: record.offset,
            message_id,
            event_type: record.event_type,
            source_id: record.source_id.to_string(),
            received_at_ms: record.received_at_ms,
            user_key,
            event: EventJson::stored(json.clone()),
        }))
    }

    /// Segment's `integrations`: a key naming this destination (its name, type or id) decides;
    /// otherwise `All: false` turns everything off; otherwise on. Non-boolean values (settings
    /// objects some SDKs send) count as on.
    fn integrations_allow(&self, integrations: Option<&Value>) -> bool {
        let Some(integrations) = integrations.and_then(Value::as_object) else {
            return true;
        };
        for key in [
            &self.destination_name,
            &self.destination_type,
            &self.destination_id,
        ] {
            if let Some(value) = integrations.get(key.as_str()) {
                return value.as_bool().unwrap_or(true);
            }
        }
        integrations
            .get("All")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    /// Mappings then the transformation: zero (dropped), one or several events to send.
    pub fn shape(&self, original: &Value, source_id: &str) -> Result<Vec<Value>, String> {
        let mut event = original.clone();
        for mapping in &self.mappings {
            mapping.apply(&mut event);
        }
        match &self.transform {
            None => Ok(vec![event]),
            Some(transform) => {
                let outputs = transform.run(&event, source_id)?;
                if let Some(bad) = outputs.iter().position(|output| !output.is_object()) {
                    return Err(format!("transformation output {bad} is not an object"));
                }
                Ok(outputs)
            }
        }
    }

    /// The outbound events of one log record: filtered, mapped, transformed, then the PII
    /// policy applied (so each destination gets what its own policy allows). `Ok(vec![])` when
    /// filtered or dropped; `Err` = the transformation failed (→ DLQ with the message).
    pub fn outbound(&self, record: &RecordView<'_>) -> Result<Vec<OutboundEvent>, String> {
        // Without mappings or a transformation the event goes out as it was logged: shared.
        let mut outputs: Vec<Arc<Value>> = if self.mappings.is_empty() && self.transform.is_none() {
            vec![record.event.clone()]
        } else {
            self.shape(record.event, record.source_id)?
                .into_iter()
                .map(Arc::new)
                .collect()
        };
        if let Some(pii) = self.pii_step() {
            for event in &mut outputs {
                pii.apply(Arc::make_mut(event), &self.pii_policy);
            }
        }
        let message_id = record
            .event
            .get("messageId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let fanned_out = outputs.len() > 1;
        Ok(outputs
            .into_iter()
            .enumerate()
            .map(|(index, mut event)| {
                // Fan-out copies need distinct, stable idempotency keys.
                let own_id = event
                    .get("messageId")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let message_id = match own_id {
                    Some(id) if !(fanned_out && index > 0 && id == message_id) => id,
                    _ if fanned_out && index > 0 => format!("{message_id}-{index}"),
                    _ => message_id.to_string(),
                };
                if event.get("messageId").and_then(Value::as_str) != Some(message_id.as_str()) {
                    Arc::make_mut(&mut event)["messageId"] = Value::String(message_id.clone());
                }
                OutboundEvent {
                    offset: record.offset,
                    user_key: user_key(&event),
                    message_id,
                    event_type: record.event_type,
                    source_id: record.source_id.to_string(),
                    received_at_ms: record.received_at_ms,
                    event: event.into(),
                }
            })
            .collect())
    }
}

/// One log record's decoded parts, as the connection needs them.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub received_at_ms: i64,
    pub event_type: EventType,
    pub source_id: &'a str,
    pub event: &'a Arc<Value>,
}

/// A log record to be sent as stored: its decoded header and the event's JSON bytes.
#[derive(Debug, Clone)]
pub struct StoredRecordView<'a> {
    pub offset: u64,
    pub received_at_ms: i64,
    pub event_type: EventType,
    pub source_id: &'a str,
    pub json: bytes::Bytes,
}

/// The fields of a stored event the plumbing reads; everything else is skipped unparsed.
#[derive(serde::Deserialize)]
struct StoredFields<'a> {
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "userId", borrow, default)]
    user_id: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "anonymousId", borrow, default)]
    anonymous_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    integrations: Option<&'a serde_json::value::RawValue>,
}

/// A JSON string's text (borrowed unless it has escapes); `None` for any other JSON.
fn raw_str(raw: &serde_json::value::RawValue) -> Option<std::borrow::Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(borrowed) => Some(std::borrow::Cow::Borrowed(borrowed)),
        Err(_) => serde_json::from_str::<String>(text)
            .ok()
            .map(std::borrow::Cow::Owned),
    }
}

/// [`user_key`]'s rule for one raw field: a non-empty string or a number.
fn raw_user_key(raw: &serde_json::value::RawValue) -> Option<String> {
    match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::String(value) if !value.is_empty() => Some(value),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// `userId`, else `anonymousId` (strings or numbers), else empty: the ordering lane key.
pub fn user_key(event: &Value) -> String {
    for field in ["userId", "anonymousId"] {
        match event.get(field) {
            Some(Value::String(value)) if !value.is_empty() => return value.clone(),
            Some(Value::Number(number)) => return number.to_string(),
            _ => {}
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn destination() -> DestinationConfig {
        DestinationConfig {
            id: "crm-hook".into(),
            name: "CRM".into(),
            kind: "webhook".into(),
            owner: "o".into(),
            ..Default::default()
        }
    }

    fn connection(config: ConnectionConfig) -> Connection {
        Connection::compile("ws", &config, &destination(), None).unwrap()
    }

    fn record(event: &Arc<Value>) -> RecordView<'_> {
        RecordView {
            offset: 3,
            received_at_ms: 10,
            event_type: EventType::Track,
            source_id: "web",
            event,
        }
    }

    #[test]
    fn header_filters() {
        let all = connection(ConnectionConfig {
            sources: vec!["*".into()],
            ..Default::default()
        });
        assert_eq!(all.accepts_header("any", EventType::Alias), Ok(()));
        assert_eq!(
            all.accepts_header("any", EventType::Control),
            Err(Skip::EventType)
        );
        let some = connection(ConnectionConfig {
            sources: vec!["web".into()],
            event_types: vec!["track".into(), "identify".into()],
            ..Default::default()
        });
        assert_eq!(some.accepts_header("web", EventType::Identify), Ok(()));
        assert_eq!(
            some.accepts_header("ios", EventType::Track),
            Err(Skip::Source)
        );
        assert_eq!(
            some.accepts_header("web", EventType::Page),
            Err(Skip::EventType)
        );
    }

    #[test]
    fn event_name_filters_apply_to_track_only() {
        let only = connection(ConnectionConfig {
            sources: vec!["*".into()],
            events: vec!["Order Completed".into()],
            exclude_events: vec!["Order Completed".into(), "Spam".into()],
            ..Default::default()
        });
        assert_eq!(
            only.accepts_event(EventType::Track, &json!({"event": "Order Completed"})),
            Err(Skip::EventName)
        );
        let include = connection(ConnectionConfig {
            sources: vec!["*".into()],
            events: vec!["Order Completed".into()],
            ..Default::default()
        });
        assert_eq!(
            include.accepts_event(EventType::Track, &json!({"event": "Order Completed"})),
            Ok(())
        );
        assert_eq!(
            include.accepts_event(EventType::Track, &json!({"event": "Viewed"})),
            Err(Skip::EventName)
        );
        assert_eq!(
            include.accepts_event(EventType::Identify, &json!({})),
            Ok(())
        );
    }

    #[test]
    fn integrations_object() {
        let connection = connection(ConnectionConfig {
            sources: vec!["*".into()],
            ..Default::default()
        });
        let check = |integrations: Value| {
            connection.accepts_event(EventType::Page, &json!({"integrations": integrations}))
        };
        assert_eq!(check(json!({})), Ok(()));
        assert_eq!(check(json!({"All": false})), Err(Skip::Integrations));
        assert_eq!(check(json!({"All": false, "CRM": true})), Ok(()), "by name");
        assert_eq!(
            check(json!({"All": false, "webhook": true})),
            Ok(()),
            "by type"
        );
        assert_eq!(
            check(json!({"crm-hook": false})),
            Err(Skip::Integrations),
            "by id"
        );
        assert_eq!(
            check(json!({"CRM": {"apiKey": "x"}})),
            Ok(()),
            "settings objects count as on"
        );
        assert_eq!(check(json!({"Other": false})), Ok(()));
    }

    #[test]
    fn mappings_apply_in_order() {
        let mappings = [
            MappingConfig {
                from: Some("properties.total".into()),
                to: Some("properties.revenue".into()),
                ..Default::default()
            },
            MappingConfig {
                from: Some("properties.revenue".into()),
                to: Some("context.copy.revenue".into()),
                op: Some("copy".into()),
                ..Default::default()
            },
            MappingConfig {
                from: Some("properties.secret".into()),
                op: Some("remove".into()),
                ..Default::default()
            },
            MappingConfig {
                to: Some("context.channel".into()),
                value: Some(json!("tandem")),
                ..Default::default()
            },
            MappingConfig {
                from: Some("properties.absent".into()),
                to: Some("properties.still_absent".into()),
                ..Default::default()
            },
        ];
        let connection = connection(ConnectionConfig {
            sources: vec!["*".into()],
            mappings: mappings.to_vec(),
            ..Default::default()
        });
        let shaped = connection
            .shape(
                &json!({"properties": {"total": 12.5, "secret": "x", "kept": 1}, "context": "not an object"}),
                "web",
            )
            .unwrap();
        assert_eq!(
            shaped,
            vec![json!({
                "properties": {"revenue": 12.5, "kept": 1},
                "context": {"copy": {"revenue": 12.5}, "channel": "tandem"}
            })]
        );
    }

    struct FanOut;
    impl Transform for FanOut {
        fn run(&self, event: &Value, _source_id: &str) -> Result<Vec<Value>, String> {
            if event["event"] == "Boom" {
                return Err("boom".into());
            }
            if event["event"] == "Drop" {
                return Ok(vec![]);
            }
            Ok(vec![event.clone(), event.clone()])
        }
    }

    fn fan_out_compiler(
        _code: &str,
        _target: &TransformTarget,
    ) -> Result<Arc<dyn Transform>, String> {
        Ok(Arc::new(FanOut))
    }

    #[test]
    fn transformation_fan_out_gets_stable_distinct_message_ids() {
        let config = ConnectionConfig {
            sources: vec!["*".into()],
            transformation: Some("function transform(e) { return [e, e] }".into()),
            ..Default::default()
        };
        assert!(
            Connection::compile("ws", &config, &destination(), None).is_err(),
            "no engine, no transformation"
        );
        let connection =
            Connection::compile("ws", &config, &destination(), Some(fan_out_compiler)).unwrap();
        let event = json!({"event": "Viewed", "messageId": "m1", "anonymousId": "a1"});
        let out = connection.outbound(&record(&Arc::new(event))).unwrap();
        let ids: Vec<_> = out.iter().map(|event| event.message_id.as_str()).collect();
        assert_eq!(ids, ["m1", "m1-1"]);
        assert_eq!(out[1].event["messageId"], "m1-1");
        assert_eq!(out[0].user_key, "a1");
        assert_eq!(out[0].offset, 3);
        assert!(connection
            .outbound(&record(&Arc::new(json!({"event": "Drop"}))))
            .unwrap()
            .is_empty());
        assert_eq!(
            connection.outbound(&record(&Arc::new(json!({"event": "Boom"})))),
            Err("boom".to_string())
        );
    }

    fn workspace_pii() -> Arc<tandem_pii::WorkspacePii> {
        Arc::new(tandem_pii::WorkspacePii {
            classifier: tandem_pii::Classifier::default(),
            salt: tandem_pii::Salt::new("salt-of-the-workspace".into()),
            anonymize_ip: false,
        })
    }

    #[test]
    fn pii_policy_applies_after_the_mappings_per_connection() {
        let config = ConnectionConfig {
            sources: vec!["*".into()],
            mappings: vec![MappingConfig {
                from: Some("properties.contact".into()),
                to: Some("traits.email".into()),
                ..Default::default()
            }],
            pii: [("email", "hash"), ("phone", "mask"), ("card", "drop")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let with_policy = connection(config).with_pii(workspace_pii());
        assert!(!with_policy.sends_as_stored(), "the policy needs the value");
        let event = Arc::new(json!({
            "messageId": "m1", "userId": "u1",
            "properties": {"contact": "jane@example.com", "phone": "+33612345689", "cc": "4111111111111111"}
        }));
        let out = with_policy.outbound(&record(&event)).unwrap().remove(0);
        let sent = out.event.to_value();
        let salt = tandem_pii::Salt::new("salt-of-the-workspace".into());
        assert_eq!(
            sent["traits"]["email"],
            tandem_pii::hash(&salt, "jane@example.com"),
            "the mapped field is classified where it lands"
        );
        assert_eq!(sent["properties"]["phone"], "+33*******89");
        assert!(sent["properties"].get("cc").is_none());
        assert_eq!(out.message_id, "m1");
        assert_eq!(
            event["properties"]["cc"], "4111111111111111",
            "the log's copy is untouched"
        );

        let plain = connection(ConnectionConfig {
            sources: vec!["*".into()],
            ..Default::default()
        })
        .with_pii(workspace_pii());
        assert!(plain.sends_as_stored(), "no policy: the stored bytes");
        let bad = ConnectionConfig {
            sources: vec!["*".into()],
            pii: [("email".to_string(), "shred".to_string())].into(),
            ..Default::default()
        };
        let error = Connection::compile("ws", &bad, &destination(), None).unwrap_err();
        assert!(
            error.contains("pii.email: unknown action `shred`"),
            "{error}"
        );
    }

    #[test]
    fn user_key_prefers_user_id() {
        assert_eq!(user_key(&json!({"userId": "u", "anonymousId": "a"})), "u");
        assert_eq!(user_key(&json!({"userId": "", "anonymousId": "a"})), "a");
        assert_eq!(user_key(&json!({"userId": 42})), "42");
        assert_eq!(user_key(&json!({})), "");
    }
}

/// The stored-bytes path against the parsed path (the model): for any event object, both read
/// the same messageId and lane key, make the same filter decision, and send the same JSON.
#[cfg(test)]
mod stored_path_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn connection(config: ConnectionConfig) -> Connection {
        let destination = DestinationConfig {
            id: "crm-hook".into(),
            name: "CRM".into(),
            kind: "webhook".into(),
            owner: "o".into(),
            ..Default::default()
        };
        Connection::compile("ws", &config, &destination, None).unwrap()
    }

    fn filtering() -> Connection {
        connection(ConnectionConfig {
            sources: vec!["*".into()],
            exclude_events: vec!["Spam".into(), "é \"quoted\"".into()],
            ..Default::default()
        })
    }

    /// (message_id, user_key, event JSON) or the skip, by the parsed path.
    fn parsed(
        connection: &Connection,
        event_type: EventType,
        text: &str,
    ) -> Result<(String, String, Value), Skip> {
        let value: Value = serde_json::from_str(text).unwrap();
        connection.accepts_event(event_type, &value)?;
        let event = Arc::new(value);
        let view = RecordView {
            offset: 1,
            received_at_ms: 2,
            event_type,
            source_id: "web",
            event: &event,
        };
        let out = connection.outbound(&view).unwrap().remove(0);
        Ok((out.message_id, out.user_key, out.event.to_value()))
    }

    fn stored(
        connection: &Connection,
        event_type: EventType,
        text: &str,
    ) -> Option<Result<(String, String, Value), Skip>> {
        let view = StoredRecordView {
            offset: 1,
            received_at_ms: 2,
            event_type,
            source_id: "web",
            json: bytes::Bytes::copy_from_slice(text.as_bytes()),
        };
        connection.outbound_stored(&view).map(|result| {
            result.map(|out| {
                assert!(out.event.is_stored());
                assert_eq!(out.event.to_json_bytes(), text.as_bytes(), "sent as stored");
                (out.message_id, out.user_key, out.event.to_value())
            })
        })
    }

    #[test]
    fn cases_the_two_paths_must_agree_on() {
        let connection = filtering();
        for text in [
            r#"{"messageId":"m1","userId":"u1","event":"Viewed"}"#,
            r#"{"messageId":"m\u00e91","anonymousId":"a\"1","event":"Viewed"}"#,
            r#"{"messageId":"m7","userId":42,"event":"Viewed"}"#,
            r#"{"messageId":"m","userId":"","anonymousId":1.5e3,"event":null}"#,
            r#"{"messageId":"m","userId":null,"event":"Spam"}"#,
            r#"{"messageId":"m","event":"\u00e9 \"quoted\""}"#,
            r#"{"messageId":"m","event":"Viewed","integrations":{"All":false,"CRM":true}}"#,
            r#"{"messageId":"m","event":"Viewed","integrations":{"crm-hook":false}}"#,
            r#"{"messageId":"m","event":"Viewed","integrations":"nonsense"}"#,
            r#" { "messageId" : "m2" , "properties" : { "a" : [1, {"b": null}] } } "#,
        ] {
            let model = parsed(&connection, EventType::Track, text);
            assert_eq!(
                stored(&connection, EventType::Track, text),
                Some(model),
                "{text}"
            );
        }
    }

    #[test]
    fn json_the_reader_does_not_take_goes_the_parsed_way() {
        let filter = filtering();
        for text in [
            r#"{"messageId":"a","messageId":"b"}"#,
            r#"["messageId"]"#,
            r#"{"messageId":"a"} trailing"#,
            r#"{"messageId":7}"#,
            r#"{"userId":"u"}"#,
        ] {
            assert_eq!(stored(&filter, EventType::Track, text), None, "{text}");
        }
        let shaped = connection(ConnectionConfig {
            sources: vec!["*".into()],
            mappings: vec![MappingConfig {
                from: Some("a".into()),
                to: Some("b".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(!shaped.sends_as_stored(), "mappings need the value");
        assert!(filtering().sends_as_stored());
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-zA-Z0-9 é\"\\\\\n]{0,8}".prop_map(Value::String),
            Just(json!("Spam")),
            Just(json!({"All": false, "CRM": true})),
            Just(json!({"CRM": false})),
            Just(json!({"nested": {"deep": [1, "x", null]}})),
        ]
    }

    proptest! {
        #[test]
        fn both_paths_agree_on_any_event(
            fields in proptest::collection::btree_map(
                prop_oneof![
                    Just("messageId".to_string()), Just("userId".to_string()),
                    Just("anonymousId".to_string()), Just("event".to_string()),
                    Just("integrations".to_string()), Just("properties".to_string()),
                    "[a-z]{1,6}",
                ],
                scalar(),
                0..8,
            ),
            message_id in "[a-z0-9é\"]{1,8}",
            pretty in any::<bool>(),
            track in any::<bool>(),
        ) {
            let mut object = Value::Object(fields.into_iter().collect());
            // Collect always stores a string messageId; sometimes the generated fields replace it.
            if object.get("messageId").is_none() {
                object["messageId"] = Value::String(message_id);
            }
            let text = if pretty {
                serde_json::to_string_pretty(&object).unwrap()
            } else {
                serde_json::to_string(&object).unwrap()
            };
            let event_type = if track { EventType::Track } else { EventType::Identify };
            let connection = filtering();
            let model = parsed(&connection, event_type, &text);
            match stored(&connection, event_type, &text) {
                Some(result) => prop_assert_eq!(result, model),
                None => prop_assert!(!object["messageId"].is_string(), "only then the parsed way"),
            }
        }
    }
}
