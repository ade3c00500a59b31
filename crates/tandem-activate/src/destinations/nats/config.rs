//! The NATS destination's settings as users write them.

use crate::destination::{parse_settings, SettingsProblem};
use serde::{Deserialize, Serialize};

/// Default wait for JetStream's acknowledgement of one publish.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 5_000;
/// Longest ack wait a connection may ask for: a batch holds its lane this long at worst.
pub const ACK_TIMEOUT_MS_HIGHEST: u64 = 120_000;
/// Default duplicate window of a stream this destination creates (JetStream's own default):
/// a redelivery later than this after the first publish is stored again. Longer windows cost
/// server memory (one entry per message id in the window).
pub const DEFAULT_DUPLICATE_WINDOW_SECONDS: u64 = 120;
/// Most servers listed (the client tries them in turn).
pub const SERVERS_MAX: usize = 16;
/// The placeholders a subject template may hold.
pub const SUBJECT_PLACEHOLDERS: [&str; 5] = [
    "{workspace}",
    "{source}",
    "{type}",
    "{event}",
    "{destination}",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// `nats://host:port` URLs of the cluster's servers (one is enough; more for failover).
    pub servers: Vec<String>,
    /// Subject template: `{workspace}`, `{source}`, `{type}`, `{event}` (track event name, page
    /// or screen name, else the type), `{destination}`; values are sanitized into one token.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The JetStream stream the subjects belong to: publishes must land in it
    /// (`Nats-Expected-Stream`). Absent: whatever stream captures the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Create `stream` when absent (subjects: the template with its placeholders as `*`).
    #[serde(default)]
    pub create_stream: bool,
    /// Duplicate window of a created stream.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum NatsAuth {
    #[serde(rename = "user_password")]
    UserPassword {
        username: String,
        password: String,
    },
    Token {
        token: String,
    },
}

fn default_subject() -> String {
    "tandem.{workspace}.{type}".to_string()
}

fn default_duplicate_window() -> u64 {
    DEFAULT_DUPLICATE_WINDOW_SECONDS
}

fn default_ack_timeout() -> u64 {
    DEFAULT_ACK_TIMEOUT_MS
}

/// JSON Schema of [`NatsSettings`].
pub fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["servers"],
        "properties": {
            "servers": {"type": "array", "minItems": 1, "maxItems": SERVERS_MAX, "items": {"type": "string"}, "description": "nats://host:port"},
            "subject": {"type": "string", "default": "tandem.{workspace}.{type}", "description": "placeholders: {workspace} {source} {type} {event} {destination}"},
            "stream": {"type": "string", "description": "JetStream stream the publishes must land in"},
            "create_stream": {"type": "boolean", "default": false},
            "duplicate_window_seconds": {"type": "integer", "minimum": 1, "default": DEFAULT_DUPLICATE_WINDOW_SECONDS},
            "auth": {"oneOf": [
                {"type": "object", "required": ["type", "username", "password"], "properties": {"type": {"const": "user_password"}, "username": {"type": "string"}, "password": {"type": "string"}}},
                {"type": "object", "required": ["type", "token"], "properties": {"type": {"const": "token"}, "token": {"type": "string"}}}
            ]},
            "ack_timeout_ms": {"type": "integer", "minimum": 1, "maximum": ACK_TIMEOUT_MS_HIGHEST, "default": DEFAULT_ACK_TIMEOUT_MS}
        }
    })
}

pub fn validate(settings: &serde_json::Value) -> Result<(), Vec<SettingsProblem>> {
    parse(settings).map(|_| ())
}

/// Parses and checks settings: every problem at once.
pub fn parse(settings: &serde_json::Value) -> Result<NatsSettings, Vec<SettingsProblem>> {
    let parsed: NatsSettings = parse_settings(settings)?;
    let mut problems = Vec::new();
    if parsed.servers.is_empty() || parsed.servers.len() > SERVERS_MAX {
        problems.push(SettingsProblem::new(
            "servers",
            format!("1 to {SERVERS_MAX} server URLs"),
        ));
    }
    for (index, server) in parsed.servers.iter().enumerate() {
        if let Err(error) = server.parse::<async_nats::ServerAddr>() {
            problems.push(SettingsProblem::new(
                format!("servers.{index}"),
                format!("not a NATS server URL: {error}"),
            ));
        }
    }
    if let Err(message) = check_subject(&parsed.subject) {
        problems.push(SettingsProblem::new("subject", message));
    }
    match &parsed.stream {
        Some(stream) if !valid_stream_name(stream) => problems.push(SettingsProblem::new(
            "stream",
            "letters, digits, `_` and `-` only",
        )),
        None if parsed.create_stream => problems.push(SettingsProblem::new(
            "create_stream",
            "needs `stream` (the name of the stream to create)",
        )),
        _ => {}
    }
    if parsed.duplicate_window_seconds == 0 {
        problems.push(SettingsProblem::new(
            "duplicate_window_seconds",
            "at least 1",
        ));
    }
    if !(1..=ACK_TIMEOUT_MS_HIGHEST).contains(&parsed.ack_timeout_ms) {
        problems.push(SettingsProblem::new(
            "ack_timeout_ms",
            format!("outside 1 ..= {ACK_TIMEOUT_MS_HIGHEST}"),
        ));
    }
    match &parsed.auth {
        Some(NatsAuth::Token { token }) if token.is_empty() => {
            problems.push(SettingsProblem::new("auth.token", "empty"))
        }
        Some(NatsAuth::UserPassword { username, .. }) if username.is_empty() => {
            problems.push(SettingsProblem::new("auth.username", "empty"))
        }
        _ => {}
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// A subject template is `.`-separated tokens, none empty, none holding whitespace or the
/// wildcards `*` and `>` (a publish subject must be literal), placeholders known.
fn check_subject(subject: &str) -> Result<(), String> {
    let mut literal = subject.to_string();
    for placeholder in SUBJECT_PLACEHOLDERS {
        literal = literal.replace(placeholder, "x");
    }
    if literal.contains(['{', '}']) {
        return Err(format!(
            "unknown placeholder; known: {}",
            SUBJECT_PLACEHOLDERS.join(" ")
        ));
    }
    for token in literal.split('.') {
        if token.is_empty() {
            return Err("empty token (leading, trailing or double `.`)".into());
        }
        if token.contains(['*', '>']) || token.chars().any(char::is_whitespace) {
            return Err(format!("token {token:?}: no wildcards or whitespace"));
        }
    }
    Ok(())
}

fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}
