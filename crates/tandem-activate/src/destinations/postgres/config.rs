//! The warehouse's settings as users write them.

use super::tls::{self, SslMode};
use crate::destination::{parse_settings, SettingsProblem};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::Duration;
use tandem_core::limits::{
    DEFAULT_WAREHOUSE_BATCH_AGE_MS, DEFAULT_WAREHOUSE_BATCH_EVENTS_MAX,
    DEFAULT_WAREHOUSE_POOL_SIZE, DELIVERY_BATCH_EVENTS_MAX, WAREHOUSE_POOL_SIZE_MAX,
};

/// Longest table prefix: PostgreSQL names stop at 63 bytes and the event name needs the rest.
pub const TABLE_PREFIX_BYTES_MAX: usize = 20;
/// Longest wait for a new connection, and the default of `connect_timeout_ms`.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const CONNECT_TIMEOUT_MS_HIGHEST: u64 = 60_000;
/// Default server-side limit on one statement (`statement_timeout`): a load stuck behind a lock
/// is cancelled (and retried) instead of holding a connection forever.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 30_000;
pub const STATEMENT_TIMEOUT_MS_HIGHEST: u64 = 600_000;
/// Longest age a batch may wait before it is loaded.
pub const BATCH_AGE_MS_HIGHEST: u64 = 600_000;
/// PostgreSQL's longest identifier (NAMEDATALEN - 1).
pub const IDENTIFIER_BYTES_MAX: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/dbname?options`; or the fields below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
    /// Schema the tables live in (created when missing); default `tandem_<workspace>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Prepended to every table name (`web_` → `web_tracks`, `web_order_completed`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub table_prefix: String,
    /// One table per track event name besides `tracks` (default true).
    #[serde(default = "default_true")]
    pub event_tables: bool,
    /// Most events loaded in one transaction (default 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_events_max: Option<usize>,
    /// A partial batch is loaded once its oldest event waited this long (default 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_age_ms: Option<u64>,
    /// Connections held open (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout_ms: Option<u64>,
    /// TLS as libpq's `sslmode` (see `tls.rs`); also read from the URL's `sslmode` (give it in
    /// one place). Default `prefer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// PEM root certificate(s) `verify-ca`/`verify-full` trust instead of the system's roots
    /// (libpq's `sslrootcert`, inline): a private CA, or the server's self-signed certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert_pem: Option<String>,
}

fn default_true() -> bool {
    true
}

impl PostgresSettings {
    pub fn batch_events_max(&self) -> usize {
        self.batch_events_max
            .unwrap_or(DEFAULT_WAREHOUSE_BATCH_EVENTS_MAX)
    }

    pub fn batch_age_ms(&self) -> u64 {
        self.batch_age_ms.unwrap_or(DEFAULT_WAREHOUSE_BATCH_AGE_MS)
    }

    pub fn pool_size(&self) -> usize {
        self.pool_size.unwrap_or(DEFAULT_WAREHOUSE_POOL_SIZE)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(
            self.connect_timeout_ms
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        )
    }

    /// The schema: the setting, else `tandem_<workspace>` made a valid identifier.
    pub fn schema_name(&self, workspace_id: &str) -> String {
        match &self.schema {
            Some(schema) => schema.clone(),
            None => super::schema::identifier(&format!("tandem_{workspace_id}")),
        }
    }

    /// The TLS mode: the setting, else the URL's `sslmode`, else `prefer`.
    pub fn ssl_mode(&self) -> Result<SslMode, String> {
        let from_url = match &self.url {
            Some(url) => match tls::split_sslmode(url).1 {
                Some(value) => Some(SslMode::parse(&value).ok_or_else(|| {
                    format!("sslmode `{value}`: one of disable, prefer, require, verify-ca, verify-full")
                })?),
                None => None,
            },
            None => None,
        };
        match (self.sslmode, from_url) {
            (Some(setting), Some(url)) if setting != url => {
                Err("sslmode is given both in the URL and as a setting, differently".into())
            }
            (setting, url) => Ok(setting.or(url).unwrap_or_default()),
        }
    }

    /// The TLS connector of these settings (used by every mode but `disable`).
    pub fn tls_connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
        tls::connector(self.ssl_mode()?, self.ssl_root_cert_pem.as_deref())
    }

    /// The driver's connection settings (statement timeout, application name and the TLS mode
    /// the driver negotiates included).
    pub fn connection(&self) -> Result<tokio_postgres::Config, String> {
        let mut config = match &self.url {
            Some(url) => tokio_postgres::Config::from_str(&tls::split_sslmode(url).0)
                .map_err(|error| format!("not a PostgreSQL URL: {error}"))?,
            None => {
                let mut config = tokio_postgres::Config::new();
                if let Some(host) = &self.host {
                    config.host(host);
                }
                config.port(self.port.unwrap_or(5432));
                if let Some(user) = &self.user {
                    config.user(user);
                }
                if let Some(password) = &self.password {
                    config.password(password);
                }
                if let Some(dbname) = &self.dbname {
                    config.dbname(dbname);
                }
                config
            }
        };
        let statement_timeout_ms = self
            .statement_timeout_ms
            .unwrap_or(DEFAULT_STATEMENT_TIMEOUT_MS);
        config
            .ssl_mode(self.ssl_mode()?.driver_mode())
            .application_name("tandem")
            .connect_timeout(self.connect_timeout())
            .options(format!(
                "-c statement_timeout={statement_timeout_ms} -c TimeZone=UTC"
            ));
        Ok(config)
    }
}

/// JSON Schema of [`PostgresSettings`].
pub fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "oneOf": [{"required": ["url"]}, {"required": ["host", "user"]}],
        "properties": {
            "url": {"type": "string", "description": "postgres://user:password@host:port/dbname (or host/port/user/password/dbname)", "writeOnly": true},
            "host": {"type": "string", "description": "host name, IP address, or a directory holding the server's Unix socket"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 5432},
            "user": {"type": "string"},
            "password": {"type": "string", "writeOnly": true},
            "dbname": {"type": "string", "description": "default: the user name"},
            "schema": {"type": "string", "pattern": "^[a-z_][a-z0-9_]{0,62}$", "description": "default tandem_<workspace>; created when missing"},
            "table_prefix": {"type": "string", "pattern": "^([a-z_][a-z0-9_]{0,19})?$", "default": ""},
            "event_tables": {"type": "boolean", "default": true, "description": "one table per track event name besides `tracks`"},
            "batch_events_max": {"type": "integer", "minimum": 1, "maximum": DELIVERY_BATCH_EVENTS_MAX, "default": DEFAULT_WAREHOUSE_BATCH_EVENTS_MAX},
            "batch_age_ms": {"type": "integer", "minimum": 1, "maximum": BATCH_AGE_MS_HIGHEST, "default": DEFAULT_WAREHOUSE_BATCH_AGE_MS},
            "pool_size": {"type": "integer", "minimum": 1, "maximum": WAREHOUSE_POOL_SIZE_MAX, "default": DEFAULT_WAREHOUSE_POOL_SIZE},
            "connect_timeout_ms": {"type": "integer", "minimum": 1, "maximum": CONNECT_TIMEOUT_MS_HIGHEST, "default": DEFAULT_CONNECT_TIMEOUT_MS},
            "statement_timeout_ms": {"type": "integer", "minimum": 1, "maximum": STATEMENT_TIMEOUT_MS_HIGHEST, "default": DEFAULT_STATEMENT_TIMEOUT_MS},
            "sslmode": {"enum": ["disable", "prefer", "require", "verify-ca", "verify-full"], "default": "prefer", "description": "as libpq: prefer/require encrypt without checking the certificate; verify-ca checks it is signed by a trusted root; verify-full also that it names the host"},
            "ssl_root_cert_pem": {"type": "string", "description": "PEM root certificate(s) trusted by verify-ca/verify-full instead of the system's roots"}
        }
    })
}

pub fn validate(settings: &serde_json::Value) -> Result<(), Vec<SettingsProblem>> {
    parse(settings).map(|_| ())
}

/// Parses and checks settings without connecting: every problem at once.
pub fn parse(settings: &serde_json::Value) -> Result<PostgresSettings, Vec<SettingsProblem>> {
    let parsed: PostgresSettings = parse_settings(settings)?;
    let mut problems = Vec::new();
    check_connection(&parsed, &mut problems);
    if let Some(schema) = &parsed.schema {
        if !is_identifier(schema, IDENTIFIER_BYTES_MAX) {
            problems.push(SettingsProblem::new(
                "schema",
                "lowercase letters, digits and `_`, not starting with a digit, at most 63 bytes",
            ));
        }
    }
    if !parsed.table_prefix.is_empty()
        && !is_identifier(&parsed.table_prefix, TABLE_PREFIX_BYTES_MAX)
    {
        problems.push(SettingsProblem::new(
            "table_prefix",
            format!("lowercase letters, digits and `_`, not starting with a digit, at most {TABLE_PREFIX_BYTES_MAX} bytes"),
        ));
    }
    let ranges: [(&str, Option<u64>, u64); 5] = [
        (
            "batch_events_max",
            parsed.batch_events_max.map(|value| value as u64),
            DELIVERY_BATCH_EVENTS_MAX as u64,
        ),
        ("batch_age_ms", parsed.batch_age_ms, BATCH_AGE_MS_HIGHEST),
        (
            "pool_size",
            parsed.pool_size.map(|value| value as u64),
            WAREHOUSE_POOL_SIZE_MAX as u64,
        ),
        (
            "connect_timeout_ms",
            parsed.connect_timeout_ms,
            CONNECT_TIMEOUT_MS_HIGHEST,
        ),
        (
            "statement_timeout_ms",
            parsed.statement_timeout_ms,
            STATEMENT_TIMEOUT_MS_HIGHEST,
        ),
    ];
    for (field, value, highest) in ranges {
        if value.is_some_and(|value| !(1..=highest).contains(&value)) {
            problems.push(SettingsProblem::new(
                field,
                format!("outside 1 ..= {highest}"),
            ));
        }
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

fn check_connection(parsed: &PostgresSettings, problems: &mut Vec<SettingsProblem>) {
    let fields = [
        ("host", parsed.host.is_some()),
        ("port", parsed.port.is_some()),
        ("user", parsed.user.is_some()),
        ("password", parsed.password.is_some()),
        ("dbname", parsed.dbname.is_some()),
    ];
    match &parsed.url {
        Some(_) => {
            for (field, _) in fields.iter().filter(|(_, set)| *set) {
                problems.push(SettingsProblem::new(
                    *field,
                    "give either `url` or the separate connection fields, not both",
                ));
            }
        }
        None => {
            for field in ["host", "user"] {
                if fields.iter().any(|(name, set)| *name == field && !set) {
                    problems.push(SettingsProblem::new(
                        field,
                        "required when `url` is not given",
                    ));
                }
            }
            if parsed.port == Some(0) {
                problems.push(SettingsProblem::new("port", "outside 1 ..= 65535"));
            }
        }
    }
    let ssl_field = if parsed.sslmode.is_some() {
        "sslmode"
    } else {
        "url"
    };
    match parsed.ssl_mode() {
        Err(message) => problems.push(SettingsProblem::new(ssl_field, message)),
        Ok(mode) => {
            if let Some(pem) = &parsed.ssl_root_cert_pem {
                if let Err(message) = tls::parse_roots(pem) {
                    problems.push(SettingsProblem::new("ssl_root_cert_pem", message));
                } else if !matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
                    problems.push(SettingsProblem::new(
                        "ssl_root_cert_pem",
                        "only read with sslmode verify-ca or verify-full",
                    ));
                }
            }
        }
    }
    match parsed.connection() {
        Err(message) if parsed.ssl_mode().is_ok() => {
            problems.push(SettingsProblem::new("url", message))
        }
        Err(_) => {}
        Ok(config) => {
            if parsed.url.is_some() && config.get_hosts().is_empty() {
                problems.push(SettingsProblem::new("url", "names no host"));
            }
            if parsed.url.is_some() && config.get_user().is_none() {
                problems.push(SettingsProblem::new("url", "names no user"));
            }
        }
    }
}

/// `[a-z_][a-z0-9_]*` of at most `bytes_max` bytes.
pub(super) fn is_identifier(name: &str, bytes_max: usize) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && name.len() <= bytes_max
}
