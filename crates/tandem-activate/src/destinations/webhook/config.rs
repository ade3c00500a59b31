//! The webhook's settings as users write them.

use crate::destination::{parse_settings, SettingsProblem};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Shortest signing secret accepted (a guessable secret signs nothing).
pub const SIGNING_SECRET_CHARS_MIN: usize = 16;
/// Longest request timeout a webhook may ask for.
pub const TIMEOUT_MS_HIGHEST: u64 = 300_000;
/// Headers tandem sets itself and a user may not override.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "idempotency-key",
    "x-tandem-signature",
    "x-tandem-timestamp",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// One `{"batch": [...]}` request per batch (default), or one request per event.
    #[serde(default = "default_true")]
    pub batch: bool,
    /// Most events per request when batching (default: the connection's `batch_events_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_events_max: Option<usize>,
    /// Extra headers sent with every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<WebhookAuth>,
    /// Secret of the HMAC-SHA256 signature header; no signature without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Timeout of one request (default: the connection's `request_timeout_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// PEM certificates trusted for an `https://` URL besides the system's roots: for a
    /// receiver whose certificate comes from a private (company) CA, or is self-signed. There is
    /// deliberately no way to turn verification off: a trusted CA is the safe form of that wish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_pem: Option<String>,
    /// Where data-subject deletions are POSTed (`{"type": "delete", "identifiers": [{"type",
    /// "id"}…]}`, signed and authenticated like events). Without it the destination cannot
    /// delete, and the DSR report says the operator must.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_url: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum WebhookAuth {
    Basic { username: String, password: String },
    Bearer { token: String },
}

/// JSON Schema of [`WebhookSettings`].
pub fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "http(s) URL the events are POSTed to"},
            "batch": {"type": "boolean", "default": true, "description": "one {\"batch\": [...]} request per batch; false: one request per event"},
            "batch_events_max": {"type": "integer", "minimum": 1, "description": "most events per request"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "auth": {"oneOf": [
                {"type": "object", "required": ["type", "username", "password"], "properties": {"type": {"const": "basic"}, "username": {"type": "string"}, "password": {"type": "string"}}},
                {"type": "object", "required": ["type", "token"], "properties": {"type": {"const": "bearer"}, "token": {"type": "string"}}}
            ]},
            "signing_secret": {"type": "string", "minLength": SIGNING_SECRET_CHARS_MIN, "description": "adds X-Tandem-Timestamp and X-Tandem-Signature: v1=<hex HMAC-SHA256 of \"timestamp.body\">"},
            "timeout_ms": {"type": "integer", "minimum": 1, "maximum": TIMEOUT_MS_HIGHEST},
            "tls_ca_pem": {"type": "string", "description": "PEM certificate(s) trusted for an https:// URL besides the system's roots (a private CA, or a self-signed receiver)"},
            "delete_url": {"type": "string", "format": "uri", "description": "http(s) URL data-subject deletions are POSTed to: {\"type\": \"delete\", \"identifiers\": [{\"type\", \"id\"}]}"}
        }
    })
}

pub fn validate(settings: &serde_json::Value) -> Result<(), Vec<SettingsProblem>> {
    parse(settings).map(|_| ())
}

/// Parses and checks settings: every problem at once.
pub fn parse(settings: &serde_json::Value) -> Result<WebhookSettings, Vec<SettingsProblem>> {
    let parsed: WebhookSettings = parse_settings(settings)?;
    let mut problems = Vec::new();
    match reqwest::Url::parse(&parsed.url) {
        Ok(url) if url.scheme() == "http" && parsed.tls_ca_pem.is_some() => problems.push(
            SettingsProblem::new("tls_ca_pem", "only for an https:// URL"),
        ),
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        Ok(_) => problems.push(SettingsProblem::new(
            "url",
            "must be an http:// or https:// URL with a host",
        )),
        Err(error) => problems.push(SettingsProblem::new("url", format!("not a URL: {error}"))),
    }
    if let Some(delete_url) = &parsed.delete_url {
        match reqwest::Url::parse(delete_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(_) => problems.push(SettingsProblem::new(
                "delete_url",
                "must be an http:// or https:// URL with a host",
            )),
            Err(error) => problems.push(SettingsProblem::new(
                "delete_url",
                format!("not a URL: {error}"),
            )),
        }
    }
    if parsed.batch_events_max == Some(0) {
        problems.push(SettingsProblem::new("batch_events_max", "at least 1"));
    }
    for (name, value) in &parsed.headers {
        let path = format!("headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(SettingsProblem::new(&path, "not a valid header name"));
        } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            problems.push(SettingsProblem::new(&path, "set by tandem itself"));
        } else if name.eq_ignore_ascii_case("authorization") && parsed.auth.is_some() {
            problems.push(SettingsProblem::new(&path, "conflicts with `auth`"));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            problems.push(SettingsProblem::new(&path, "not a valid header value"));
        }
    }
    if let Some(secret) = &parsed.signing_secret {
        if secret.chars().count() < SIGNING_SECRET_CHARS_MIN {
            let message = format!("shorter than {SIGNING_SECRET_CHARS_MIN} characters");
            problems.push(SettingsProblem::new("signing_secret", message));
        }
    }
    match &parsed.auth {
        Some(WebhookAuth::Bearer { token }) if token.is_empty() => {
            problems.push(SettingsProblem::new("auth.token", "empty"))
        }
        Some(WebhookAuth::Basic { username, .. })
            if username.is_empty() || username.contains(':') =>
        {
            problems.push(SettingsProblem::new(
                "auth.username",
                "empty or contains `:`",
            ))
        }
        _ => {}
    }
    if parsed
        .timeout_ms
        .is_some_and(|timeout| !(1..=TIMEOUT_MS_HIGHEST).contains(&timeout))
    {
        let message = format!("outside 1 ..= {TIMEOUT_MS_HIGHEST}");
        problems.push(SettingsProblem::new("timeout_ms", message));
    }
    if let Some(pem) = &parsed.tls_ca_pem {
        if let Err(message) = trusted_certificates(pem) {
            problems.push(SettingsProblem::new("tls_ca_pem", message));
        }
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// The certificates of a `tls_ca_pem` setting (at least one).
pub fn trusted_certificates(pem: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|error| format!("not PEM certificates: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no `-----BEGIN CERTIFICATE-----` block".into());
    }
    Ok(certificates)
}
