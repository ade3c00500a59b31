//! The files destination's settings as users write them.

use crate::destination::{parse_settings, SettingsProblem};
use serde::{Deserialize, Serialize};
use tandem_core::limits::{DELIVERY_BATCH_BYTES_MAX, DELIVERY_BATCH_EVENTS_MAX};

/// The batch age this destination prefers when the connection sets no `delivery.batch_age_ms`:
/// one object per event type and day per batch, and many small objects make every later reader
/// slow, so files wait longer than the 200 ms other destinations do. The cost of a long age is
/// latency and the in-flight window held back from the committed offset.
pub const FILES_BATCH_AGE_MS_DEFAULT: u64 = 10_000;
/// Most events per batch, hence per object (the connection's `batch_events_max` is capped to it).
pub const FILES_BATCH_EVENTS_MAX: usize = DELIVERY_BATCH_EVENTS_MAX;
/// Most bytes per batch (the whole batch is encoded in memory before it is written).
pub const FILES_BATCH_BYTES_MAX: usize = DELIVERY_BATCH_BYTES_MAX;
/// The placeholders a `prefix` may hold.
pub const PREFIX_PLACEHOLDERS: [&str; 2] = ["{workspace}", "{destination}"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One event JSON object per line (`.jsonl`).
    #[default]
    Jsonl,
    /// Apache Parquet (`.parquet`): fixed columns plus the whole event as JSON text.
    Parquet,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Jsonl => "jsonl",
            FileFormat::Parquet => "parquet",
        }
    }

    /// The format of an object, by its name's extension.
    pub fn of_object(name: &str) -> Option<FileFormat> {
        if name.ends_with(".jsonl") {
            Some(FileFormat::Jsonl)
        } else if name.ends_with(".parquet") {
            Some(FileFormat::Parquet)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSettings {
    #[serde(default)]
    pub format: FileFormat,
    /// Leading part of every object name: `<prefix>/<event type>/dt=YYYY-MM-DD/<batch>.<ext>`.
    /// `{workspace}` and `{destination}` are replaced by the ids.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// A local directory (relative paths are under the server's data directory). Exactly one of
    /// `path` and `s3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An S3-compatible object store (AWS S3, MinIO, Ceph, R2, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Settings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    /// Endpoint of a non-AWS store (`https://minio.example.com:9000`); absent: AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Static credentials; absent: the `AWS_*` environment variables or the instance's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    /// Allow a plain `http://` endpoint (a store on a private network).
    #[serde(default)]
    pub allow_http: bool,
    /// `https://<bucket>.<endpoint>` addressing instead of `https://<endpoint>/<bucket>`.
    #[serde(default)]
    pub virtual_hosted_style: bool,
}

fn default_prefix() -> String {
    "{workspace}".to_string()
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// JSON Schema of [`FilesSettings`].
pub fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "oneOf": [{"required": ["path"]}, {"required": ["s3"]}],
        "properties": {
            "format": {"enum": ["jsonl", "parquet"], "default": "jsonl"},
            "prefix": {"type": "string", "default": "{workspace}", "description": "object names: <prefix>/<event type>/dt=YYYY-MM-DD/<first offset>-<last offset>-<hash>.<ext>; {workspace} and {destination} are replaced"},
            "path": {"type": "string", "description": "local directory (relative: under the server's data directory)"},
            "s3": {
                "type": "object",
                "additionalProperties": false,
                "required": ["bucket"],
                "properties": {
                    "bucket": {"type": "string"},
                    "endpoint": {"type": "string", "format": "uri", "description": "non-AWS endpoint; absent: AWS"},
                    "region": {"type": "string", "default": "us-east-1"},
                    "access_key_id": {"type": "string"},
                    "secret_access_key": {"type": "string"},
                    "session_token": {"type": "string"},
                    "allow_http": {"type": "boolean", "default": false},
                    "virtual_hosted_style": {"type": "boolean", "default": false}
                }
            }
        }
    })
}

pub fn validate(settings: &serde_json::Value) -> Result<(), Vec<SettingsProblem>> {
    parse(settings).map(|_| ())
}

/// Parses and checks settings: every problem at once.
pub fn parse(settings: &serde_json::Value) -> Result<FilesSettings, Vec<SettingsProblem>> {
    let parsed: FilesSettings = parse_settings(settings)?;
    let mut problems = Vec::new();
    if let Err(message) = check_prefix(&parsed.prefix) {
        problems.push(SettingsProblem::new("prefix", message));
    }
    match (&parsed.path, &parsed.s3) {
        (Some(_), Some(_)) => problems.push(SettingsProblem::new(
            "",
            "`path` and `s3` both set: choose one",
        )),
        (None, None) => problems.push(SettingsProblem::new(
            "",
            "one of `path` (a local directory) or `s3` is required",
        )),
        (Some(path), None) if path.trim().is_empty() => {
            problems.push(SettingsProblem::new("path", "empty"))
        }
        (Some(path), None) if path.contains('\0') => {
            problems.push(SettingsProblem::new("path", "contains a NUL byte"))
        }
        (None, Some(s3)) => check_s3(s3, &mut problems),
        _ => {}
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// A prefix is `/`-separated segments of letters, digits, `.`, `_`, `-` and the placeholders;
/// no empty, `.` or `..` segment (object names must be the same on every store).
fn check_prefix(prefix: &str) -> Result<(), String> {
    let mut rest = prefix.to_string();
    for placeholder in PREFIX_PLACEHOLDERS {
        rest = rest.replace(placeholder, "x");
    }
    if rest.contains(['{', '}']) {
        return Err(format!(
            "unknown placeholder; known: {}",
            PREFIX_PLACEHOLDERS.join(", ")
        ));
    }
    if rest.is_empty() {
        return Err("empty".into());
    }
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "segment {segment:?} not allowed (no leading, trailing or double `/`, no `.` or `..`)"
            ));
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=')))
        {
            return Err(format!(
                "character {bad:?} not allowed (letters, digits, `.`, `_`, `-`, `=`, `/`)"
            ));
        }
    }
    Ok(())
}

fn check_s3(s3: &S3Settings, problems: &mut Vec<SettingsProblem>) {
    let bucket_ok = (3..=63).contains(&s3.bucket.len())
        && s3
            .bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'));
    if !bucket_ok {
        problems.push(SettingsProblem::new(
            "s3.bucket",
            "3 to 63 lowercase letters, digits, `.` or `-`",
        ));
    }
    if let Some(endpoint) = &s3.endpoint {
        match reqwest::Url::parse(endpoint) {
            Ok(url) if url.host().is_none() => {
                problems.push(SettingsProblem::new("s3.endpoint", "has no host"))
            }
            Ok(url) if url.scheme() == "http" && !s3.allow_http => problems.push(
                SettingsProblem::new("s3.endpoint", "http:// needs `allow_http = true`"),
            ),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => problems.push(
                SettingsProblem::new("s3.endpoint", "must be an http:// or https:// URL"),
            ),
            Ok(_) => {}
            Err(error) => problems.push(SettingsProblem::new(
                "s3.endpoint",
                format!("not a URL: {error}"),
            )),
        }
    }
    if s3.region.trim().is_empty() {
        problems.push(SettingsProblem::new("s3.region", "empty"));
    }
    match (&s3.access_key_id, &s3.secret_access_key) {
        (Some(_), None) => problems.push(SettingsProblem::new(
            "s3.secret_access_key",
            "required with `access_key_id`",
        )),
        (None, Some(_)) => problems.push(SettingsProblem::new(
            "s3.access_key_id",
            "required with `secret_access_key`",
        )),
        _ => {}
    }
    if s3.session_token.is_some() && s3.access_key_id.is_none() {
        problems.push(SettingsProblem::new(
            "s3.session_token",
            "only with `access_key_id` and `secret_access_key`",
        ));
    }
}
