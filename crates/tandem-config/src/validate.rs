//! The rules a configuration must follow beyond its TOML shape. Every rule runs on every
//! field, so a file with five mistakes gets five problems in one pass, not five edit-run cycles.

use crate::error::ConfigProblem;
use crate::schema::{
    CollectConfig, ComputedTraitConfig, Config, ConnectionConfig, DeliveryConfig,
    DestinationConfig, IdentityConfig, LogConfig, MappingConfig, PiiConfig, RetentionConfig,
    ServerConfig, SourceConfig, WorkspaceConfig,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use tandem_core::limits::IDENTIFIER_TYPE_BYTES_MAX;
use tandem_core::limits::{
    COMPUTED_TRAITS_MAX, CONNECTIONS_PER_WORKSPACE_MAX, CONNECTION_MAPPINGS_MAX,
    DELIVERY_BATCH_BYTES_MAX, DELIVERY_BATCH_EVENTS_MAX, DELIVERY_LANES_MAX,
    DESTINATIONS_PER_WORKSPACE_MAX,
};

/// Checks a destination type's settings: every problem as (field path inside `settings`,
/// message). tandem-config knows no destination type; the binary passes the activate
/// registry's check in (see [`crate::parse_with`]). Unknown types are reported by it too.
pub type SettingsValidator =
    fn(destination_type: &str, settings: &serde_json::Value) -> Vec<(String, String)>;

/// Longest transformation source accepted (its compiled form lives in memory per connection).
pub const TRANSFORMATION_BYTES_MAX: usize = tandem_core::limits::TRANSFORM_CODE_BYTES_MAX;
/// Longest delivery request timeout (`delivery.request_timeout_ms`): 5 minutes.
pub const DELIVERY_REQUEST_TIMEOUT_MS_HIGHEST: u64 = 300_000;
/// Longest retry budget (`delivery.retry_max_seconds`): a week (the log must retain that long).
pub const DELIVERY_RETRY_MAX_SECONDS_HIGHEST: u64 = 7 * 24 * 3600;
/// Longest `delivery.batch_age_ms` (a minute).
pub const DELIVERY_BATCH_AGE_MS_HIGHEST: u64 = 60_000;
/// The mapping operations.
pub const MAPPING_OPS: [&str; 4] = ["move", "copy", "remove", "set"];

/// Shortest write key accepted: shorter keys are guessable (16 random base64 characters ≈ 96 bits).
pub const WRITE_KEY_CHARS_MIN: usize = 16;
/// Shortest admin token accepted, for the same reason as [`WRITE_KEY_CHARS_MIN`].
pub const ADMIN_TOKEN_CHARS_MIN: usize = 16;
/// Longest slug (workspace and source ids): ids name directories and appear in URLs.
pub const SLUG_CHARS_MAX: usize = 63;
/// Smallest `log.segment_bytes_max`: a segment must hold at least one largest record
/// ([`tandem_core::limits::RECORD_BYTES_MAX`]).
pub const SEGMENT_BYTES_MAX_LOWEST: u64 = 1024 * 1024;
/// Largest `log.segment_bytes_max`: recovery scans the active segment at start, so its size
/// bounds start-up time.
pub const SEGMENT_BYTES_MAX_HIGHEST: u64 = 4 * 1024 * 1024 * 1024;
/// Smallest `log.queue_bytes_max`: the queue must hold at least one largest record.
pub const QUEUE_BYTES_MAX_LOWEST: usize = 1024 * 1024;
/// Longest `collect.dedup_window_hours` (a year); the window is bounded by memory long before.
pub const DEDUP_WINDOW_HOURS_HIGHEST: u64 = 24 * 365;
/// Longest `log.retention_hours` (a century), which keeps hour→second arithmetic far from overflow.
pub const RETENTION_HOURS_HIGHEST: u64 = 24 * 365 * 100;
/// Longest of each `[workspaces.retention]` age (a century, as [`RETENTION_HOURS_HIGHEST`]).
pub const RETENTION_DAYS_HIGHEST: u64 = 365 * 100;

/// Every problem with `config`, without line numbers (see [`crate::parse`] for those).
/// Source ids are expected to be filled in already (see [`fill_derived_ids`]).
pub fn validate(config: &Config) -> Result<(), Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    check_server(&config.server, &mut problems);
    check_admin_token(config.admin.token.as_deref(), &mut problems);
    check_log(&config.log, &mut problems);
    check_collect(&config.collect, &mut problems);
    if config.organization.name.trim().is_empty() {
        problems.push(ConfigProblem::new(
            "organization.name",
            "empty — name the organization or leave the key out",
        ));
    }
    check_workspaces(config, &mut problems);
    crate::policy::check_policies(config, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Gives every source without an `id` the slug of its name.
pub fn fill_derived_ids(config: &mut Config) {
    let sources = config
        .workspaces
        .iter_mut()
        .flat_map(|workspace| workspace.sources.iter_mut());
    for source in sources.filter(|source| source.id.is_empty()) {
        source.id = slug_from_name(&source.name);
    }
}

/// Whether `id` is a slug: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn is_slug(id: &str) -> bool {
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit());
    let rest_ok = chars.all(|char| {
        char.is_ascii_lowercase() || char.is_ascii_digit() || char == '_' || char == '-'
    });
    first_ok && rest_ok && id.len() <= SLUG_CHARS_MAX
}

/// `"CRM import (nightly)"` → `"crm-import-nightly"`; empty when the name has no ASCII letter or digit.
pub fn slug_from_name(name: &str) -> String {
    let mut slug = String::new();
    for char in name.chars() {
        if char.is_ascii_alphanumeric() {
            slug.push(char.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(SLUG_CHARS_MAX);
    slug.trim_end_matches('-').to_string()
}

fn check_server(server: &ServerConfig, problems: &mut Vec<ConfigProblem>) {
    if !is_listen_address(&server.listen) {
        let message = format!(
            "`{}` is not an address to listen on — write host:port, e.g. 127.0.0.1:8080",
            server.listen
        );
        problems.push(ConfigProblem::new("server.listen", message));
    }
    if server.data_dir.as_os_str().is_empty() {
        problems.push(ConfigProblem::new(
            "server.data_dir",
            "empty — name a directory, e.g. ./tandem-data",
        ));
    }
    if let Some(url) = &server.public_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.push(ConfigProblem::new(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
    }
}

/// A socket address, or `host:port` with a non-empty host (resolved when binding).
fn is_listen_address(listen: &str) -> bool {
    if listen.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match listen.rsplit_once(':') {
        Some((host, port)) => {
            let host_ok = !host.is_empty() && !host.contains([':', '/', ' ', '[', ']']);
            host_ok && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

fn check_admin_token(token: Option<&str>, problems: &mut Vec<ConfigProblem>) {
    if token.is_some_and(|token| token.chars().count() < ADMIN_TOKEN_CHARS_MIN) {
        let message =
            format!("shorter than {ADMIN_TOKEN_CHARS_MIN} characters — use a long random secret");
        problems.push(ConfigProblem::new("admin.token", message));
    }
}

fn check_log(log: &LogConfig, problems: &mut Vec<ConfigProblem>) {
    if !(SEGMENT_BYTES_MAX_LOWEST..=SEGMENT_BYTES_MAX_HIGHEST).contains(&log.segment_bytes_max) {
        let message = format!(
            "{} is outside {SEGMENT_BYTES_MAX_LOWEST} (1 MiB) ..= {SEGMENT_BYTES_MAX_HIGHEST} (4 GiB)",
            log.segment_bytes_max
        );
        problems.push(ConfigProblem::new("log.segment_bytes_max", message));
    }
    if log.queue_bytes_max < QUEUE_BYTES_MAX_LOWEST {
        let message = format!(
            "{} is below {QUEUE_BYTES_MAX_LOWEST} (1 MiB)",
            log.queue_bytes_max
        );
        problems.push(ConfigProblem::new("log.queue_bytes_max", message));
    }
    if log
        .retention_bytes_max
        .is_some_and(|bytes| bytes < log.segment_bytes_max)
    {
        let message = "smaller than log.segment_bytes_max — retention deletes whole segments, so it must hold at least one";
        problems.push(ConfigProblem::new("log.retention_bytes_max", message));
    }
    if log
        .retention_hours
        .is_some_and(|hours| !(1..=RETENTION_HOURS_HIGHEST).contains(&hours))
    {
        let message = format!(
            "must be within 1 ..= {RETENTION_HOURS_HIGHEST}; leave it out to keep events forever"
        );
        problems.push(ConfigProblem::new("log.retention_hours", message));
    }
}

fn check_collect(collect: &CollectConfig, problems: &mut Vec<ConfigProblem>) {
    if !(1..=DEDUP_WINDOW_HOURS_HIGHEST).contains(&collect.dedup_window_hours) {
        let message = format!(
            "{} is outside 1 ..= {DEDUP_WINDOW_HOURS_HIGHEST} (a year)",
            collect.dedup_window_hours
        );
        problems.push(ConfigProblem::new("collect.dedup_window_hours", message));
    }
    if collect.dedup_entries_max == 0 {
        problems.push(ConfigProblem::new(
            "collect.dedup_entries_max",
            "must be at least 1",
        ));
    }
    if collect.rate_limit_events_per_second == Some(0) {
        let message = "must be at least 1; leave it out for no limit";
        problems.push(ConfigProblem::new(
            "collect.rate_limit_events_per_second",
            message,
        ));
    }
}

fn check_workspaces(config: &Config, problems: &mut Vec<ConfigProblem>) {
    let workspaces = &config.workspaces;
    let policies = crate::policy::PolicyValues::from_config(config);
    let mut workspace_ids: HashMap<&str, usize> = HashMap::new();
    // Write keys are unique across the organization: a key alone says which source sent an event.
    let mut write_keys: HashMap<&str, String> = HashMap::new();
    for (index, workspace) in workspaces.iter().enumerate() {
        let path = format!("workspaces[{index}]");
        check_id(&workspace.id, &format!("{path}.id"), "workspace", problems);
        if let Some(first) = earlier_index(&mut workspace_ids, &workspace.id, index) {
            let message = format!(
                "`{}` is already the id of workspaces[{first}]",
                workspace.id
            );
            problems.push(ConfigProblem::new(format!("{path}.id"), message));
        }
        require(
            &workspace.name,
            &format!("{path}.name"),
            "every workspace needs a name",
            problems,
        );
        check_sources(&workspace.sources, &path, &mut write_keys, problems);
        check_identity(&workspace.identity, &format!("{path}.identity"), problems);
        check_computed_traits(&workspace.computed_traits, &path, problems);
        check_destinations(&workspace.destinations, &path, problems);
        check_pii(&workspace.pii, &format!("{path}.pii"), problems);
        check_retention(&workspace.retention, &format!("{path}.retention"), problems);
        check_connections(workspace, &policies.consent(&workspace.id), &path, problems);
        crate::plans::check_tracking_plans(workspace, &path, problems);
        crate::audiences::check_audiences(workspace, &path, problems);
    }
}

/// Runs `validator` on the settings of every destination in `config` (paths
/// `workspaces[i].destinations[j].settings.<field>`).
pub fn check_destination_settings(
    config: &Config,
    validator: SettingsValidator,
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    for (workspace_index, workspace) in config.workspaces.iter().enumerate() {
        for (index, destination) in workspace.destinations.iter().enumerate() {
            let path = format!("workspaces[{workspace_index}].destinations[{index}]");
            for (field, message) in validator(&destination.kind, &destination.settings) {
                let field_path = match field.as_str() {
                    "type" => format!("{path}.type"),
                    "" => format!("{path}.settings"),
                    field => format!("{path}.settings.{field}"),
                };
                problems.push(ConfigProblem::new(field_path, message));
            }
        }
    }
    problems
}

fn check_destinations(
    destinations: &[DestinationConfig],
    workspace_path: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    if destinations.len() > DESTINATIONS_PER_WORKSPACE_MAX {
        let message =
            format!("at most {DESTINATIONS_PER_WORKSPACE_MAX} destinations per workspace");
        problems.push(ConfigProblem::new(
            format!("{workspace_path}.destinations"),
            message,
        ));
    }
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (index, destination) in destinations.iter().enumerate() {
        let path = format!("{workspace_path}.destinations[{index}]");
        problems.extend(
            destination_problems(destination)
                .into_iter()
                .map(|problem| {
                    ConfigProblem::new(format!("{path}.{}", problem.path), problem.message)
                }),
        );
        if let Some(first) = earlier_index(&mut ids, &destination.id, index) {
            let message = format!(
                "`{}` is already the id of destinations[{first}]",
                destination.id
            );
            problems.push(ConfigProblem::new(format!("{path}.id"), message));
        }
    }
}

/// The categories of personal data a source collects or a destination receives, as the
/// catalog and the record of processing (GDPR Art. 30 (1)(c)) name them. A closed list, so the
/// record groups the same data under the same word in every workspace.
pub const DATA_CATEGORIES: &[(&str, &str)] = &[
    (
        "identifiers",
        "user ids, anonymous ids, device and advertising ids",
    ),
    (
        "contact",
        "email addresses, phone numbers, postal addresses",
    ),
    ("demographic", "name, age, gender, language"),
    (
        "behavioral",
        "pages viewed, events performed, products browsed",
    ),
    ("transactions", "orders, payments, revenue"),
    ("device", "device, browser, operating system, IP address"),
    ("location", "country, city, coordinates"),
    ("preferences", "consent choices, interests, settings"),
    (
        "special",
        "GDPR Art. 9 special categories (health, beliefs, …)",
    ),
];

/// Each entry must be one of [`DATA_CATEGORIES`], named once.
pub fn check_data_categories(categories: &[String], path: &str, problems: &mut Vec<ConfigProblem>) {
    for (index, category) in categories.iter().enumerate() {
        if !DATA_CATEGORIES.iter().any(|(known, _)| known == category) {
            let known: Vec<&str> = DATA_CATEGORIES.iter().map(|(name, _)| *name).collect();
            let message = format!(
                "unknown data category `{category}`: use one of {}",
                known.join(", ")
            );
            problems.push(ConfigProblem::new(format!("{path}[{index}]"), message));
        } else if categories[..index].contains(category) {
            let message = format!("`{category}` is listed twice");
            problems.push(ConfigProblem::new(format!("{path}[{index}]"), message));
        }
    }
}

/// Problems of one destination on its own (paths relative to it: `owner`, `settings`); the
/// management API uses this for API-created destinations.
pub fn destination_problems(destination: &DestinationConfig) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    check_id(&destination.id, "id", "destination", &mut problems);
    require(
        &destination.name,
        "name",
        "every destination needs a name",
        &mut problems,
    );
    require(
        &destination.kind,
        "type",
        "every destination needs a type (webhook, postgres, files, nats)",
        &mut problems,
    );
    require(
        &destination.owner,
        "owner",
        "every destination needs an owner who answers for the data sent there",
        &mut problems,
    );
    check_data_categories(
        &destination.data_categories,
        "data_categories",
        &mut problems,
    );
    if !destination.settings.is_object() {
        problems.push(ConfigProblem::new(
            "settings",
            "must be a table of the type's settings",
        ));
    }
    problems
}

fn check_connections(
    workspace: &WorkspaceConfig,
    consent: &tandem_consent::ConsentPolicy,
    workspace_path: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    if workspace.connections.len() > CONNECTIONS_PER_WORKSPACE_MAX {
        let message = format!("at most {CONNECTIONS_PER_WORKSPACE_MAX} connections per workspace");
        problems.push(ConfigProblem::new(
            format!("{workspace_path}.connections"),
            message,
        ));
    }
    let source_ids: Vec<&str> = workspace
        .sources
        .iter()
        .map(|source| source.id.as_str())
        .collect();
    let destination_ids: Vec<&str> = workspace
        .destinations
        .iter()
        .map(|destination| destination.id.as_str())
        .collect();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (index, connection) in workspace.connections.iter().enumerate() {
        let path = format!("{workspace_path}.connections[{index}]");
        let found = connection_problems(connection, &source_ids, &destination_ids);
        problems.extend(found.into_iter().map(|problem| {
            ConfigProblem::new(format!("{path}.{}", problem.path), problem.message)
        }));
        for (at, category) in connection.consent_categories.iter().enumerate() {
            if tandem_consent::check_category(category).is_ok()
                && !consent.categories.contains(category)
            {
                let message = format!(
                    "no consent category `{category}` in this workspace (policy consent_categories: {})",
                    consent.categories.join(", ")
                );
                problems.push(ConfigProblem::new(
                    format!("{path}.consent_categories[{at}]"),
                    message,
                ));
            }
        }
        problems.extend(
            pii_category_problems(connection, &workspace.pii)
                .into_iter()
                .map(|problem| {
                    ConfigProblem::new(format!("{path}.{}", problem.path), problem.message)
                }),
        );
        if let Some(first) = earlier_index(&mut ids, &connection.id, index) {
            let message = format!(
                "`{}` is already the id of connections[{first}]",
                connection.id
            );
            problems.push(ConfigProblem::new(format!("{path}.id"), message));
        }
    }
}

/// Problems of one connection on its own (paths relative to it), given the ids of the
/// workspace's sources and destinations; the management API uses this too.
pub fn connection_problems(
    connection: &ConnectionConfig,
    source_ids: &[&str],
    destination_ids: &[&str],
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    check_id(&connection.id, "id", "connection", &mut problems);
    if connection.sources.is_empty() {
        problems.push(ConfigProblem::new(
            "sources",
            "missing — list source ids, or [\"*\"] for every source of the workspace",
        ));
    }
    for (index, source) in connection.sources.iter().enumerate() {
        let built_in = tandem_core::envelope::BUILT_IN_SOURCE_IDS.contains(&source.as_str());
        if source != "*" && !built_in && !source_ids.contains(&source.as_str()) {
            let message = format!("no source `{source}` in this workspace");
            problems.push(ConfigProblem::new(format!("sources[{index}]"), message));
        }
    }
    if connection.destination.is_empty() {
        problems.push(ConfigProblem::new(
            "destination",
            "missing — name a destination id",
        ));
    } else if !destination_ids.contains(&connection.destination.as_str()) {
        let message = format!(
            "no destination `{}` in this workspace",
            connection.destination
        );
        problems.push(ConfigProblem::new("destination", message));
    }
    for (index, category) in connection.consent_categories.iter().enumerate() {
        if let Err(message) = tandem_consent::check_category(category) {
            problems.push(ConfigProblem::new(
                format!("consent_categories[{index}]"),
                message,
            ));
        }
    }
    const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];
    for (index, kind) in connection.event_types.iter().enumerate() {
        if !TYPES.contains(&kind.as_str()) {
            let message = format!("unknown event type `{kind}`; one of {}", TYPES.join(", "));
            problems.push(ConfigProblem::new(format!("event_types[{index}]"), message));
        }
    }
    if let Some(code) = &connection.transformation {
        if code.trim().is_empty() {
            problems.push(ConfigProblem::new(
                "transformation",
                "empty — leave the key out for none",
            ));
        } else if code.len() > TRANSFORMATION_BYTES_MAX {
            let message = format!("longer than {TRANSFORMATION_BYTES_MAX} bytes");
            problems.push(ConfigProblem::new("transformation", message));
        }
    }
    if connection.mappings.len() > CONNECTION_MAPPINGS_MAX {
        let message = format!("at most {CONNECTION_MAPPINGS_MAX} mappings per connection");
        problems.push(ConfigProblem::new("mappings", message));
    }
    for (index, mapping) in connection.mappings.iter().enumerate() {
        check_mapping(mapping, &format!("mappings[{index}]"), &mut problems);
    }
    check_delivery(&connection.delivery, &mut problems);
    if let Err(found) = tandem_pii::Policy::parse(&connection.pii) {
        for (key, message) in found {
            problems.push(ConfigProblem::new(format!("pii.{key}"), message));
        }
    }
    problems
}

/// `[workspaces.retention]`: every age given lies within 1 ..= [`RETENTION_DAYS_HIGHEST`].
fn check_retention(retention: &RetentionConfig, path: &str, problems: &mut Vec<ConfigProblem>) {
    let ages = [
        ("log_days", retention.log_days),
        ("dead_letters_days", retention.dead_letters_days),
        ("profiles_inactive_days", retention.profiles_inactive_days),
        ("archive_days", retention.archive_days),
    ];
    for (key, days) in ages {
        if days.is_some_and(|days| !(1..=RETENTION_DAYS_HIGHEST).contains(&days)) {
            let message = format!(
                "must be within 1 ..= {RETENTION_DAYS_HIGHEST} days; leave it out to keep forever"
            );
            problems.push(ConfigProblem::new(format!("{path}.{key}"), message));
        }
    }
}

/// `[workspaces.pii]`: rules (bounded, each path and category well formed) and the salt's
/// environment variable name.
fn check_pii(pii: &PiiConfig, path: &str, problems: &mut Vec<ConfigProblem>) {
    if pii.rules.len() > tandem_pii::RULES_MAX {
        let message = format!("at most {} rules per workspace", tandem_pii::RULES_MAX);
        problems.push(ConfigProblem::new(format!("{path}.rules"), message));
    }
    for (index, rule) in pii.rules.iter().enumerate() {
        let at = format!("{path}.rules[{index}]");
        if let Err(message) = tandem_pii::check_rule_path(&rule.path) {
            problems.push(ConfigProblem::new(format!("{at}.path"), message));
        } else if pii.rules[..index]
            .iter()
            .any(|earlier| earlier.path == rule.path)
        {
            let message = format!("`{}` has a rule already", rule.path);
            problems.push(ConfigProblem::new(format!("{at}.path"), message));
        }
        if rule.category.is_empty() {
            problems.push(ConfigProblem::new(
                format!("{at}.category"),
                "missing — a built-in category, a custom name, or `none`",
            ));
        } else if let Err(message) = tandem_pii::check_category(&rule.category) {
            problems.push(ConfigProblem::new(format!("{at}.category"), message));
        }
    }
    if let Some(name) = &pii.salt_env {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            let message = format!(
                "`{name}` is not an environment variable name (upper-case letters, digits, `_`)"
            );
            problems.push(ConfigProblem::new(format!("{path}.salt_env"), message));
        }
    }
}

/// The categories a connection's `pii` policy names that the workspace does not know: neither
/// built in nor given by one of its `[[workspaces.pii.rules]]` (paths `pii.<category>`).
pub fn pii_category_problems(connection: &ConnectionConfig, pii: &PiiConfig) -> Vec<ConfigProblem> {
    let custom: Vec<&str> = pii
        .rules
        .iter()
        .map(|rule| rule.category.as_str())
        .collect();
    connection
        .pii
        .keys()
        .filter(|key| {
            key.as_str() != tandem_pii::DEFAULT_KEY
                && key.as_str() != tandem_pii::NONE
                && tandem_pii::check_category(key).is_ok()
                && !tandem_pii::BUILT_IN_CATEGORIES.contains(&key.as_str())
                && !custom.contains(&key.as_str())
        })
        .map(|key| {
            let mut known: Vec<&str> = tandem_pii::BUILT_IN_CATEGORIES.to_vec();
            known.extend(custom.iter().filter(|c| **c != tandem_pii::NONE));
            known.dedup();
            ConfigProblem::new(
                format!("pii.{key}"),
                format!(
                    "no PII category `{key}` in this workspace (known: {}; custom ones come from [[workspaces.pii.rules]])",
                    known.join(", ")
                ),
            )
        })
        .collect()
}

fn check_mapping(mapping: &MappingConfig, path: &str, problems: &mut Vec<ConfigProblem>) {
    let op =
        mapping
            .op
            .as_deref()
            .unwrap_or(if mapping.from.is_none() && mapping.value.is_some() {
                "set"
            } else {
                "move"
            });
    if !MAPPING_OPS.contains(&op) {
        let message = format!("unknown op `{op}`; one of {}", MAPPING_OPS.join(", "));
        problems.push(ConfigProblem::new(format!("{path}.op"), message));
        return;
    }
    let bad_path = |field: &Option<String>| {
        field
            .as_deref()
            .is_some_and(|path| path.is_empty() || path.split('.').any(str::is_empty))
    };
    for (name, field) in [("from", &mapping.from), ("to", &mapping.to)] {
        if bad_path(field) {
            let message = "a dotted path like `properties.total`, without empty parts";
            problems.push(ConfigProblem::new(format!("{path}.{name}"), message));
        }
    }
    let missing = |name: &str, problems: &mut Vec<ConfigProblem>| {
        let message = format!("`{op}` needs `{name}`");
        problems.push(ConfigProblem::new(format!("{path}.{name}"), message));
    };
    match op {
        "move" | "copy" => {
            if mapping.from.is_none() {
                missing("from", problems);
            }
            if mapping.to.is_none() {
                missing("to", problems);
            }
        }
        "remove" => {
            if mapping.from.is_none() {
                missing("from", problems);
            }
        }
        _ => {
            if mapping.to.is_none() {
                missing("to", problems);
            }
            if mapping.value.is_none() {
                missing("value", problems);
            }
        }
    }
}

fn check_delivery(delivery: &DeliveryConfig, problems: &mut Vec<ConfigProblem>) {
    let mut out_of_range = |field: &str, value: u64, low: u64, high: u64| {
        if !(low..=high).contains(&value) {
            let message = format!("{value} is outside {low} ..= {high}");
            problems.push(ConfigProblem::new(format!("delivery.{field}"), message));
        }
    };
    if let Some(events) = delivery.batch_events_max {
        out_of_range(
            "batch_events_max",
            events as u64,
            1,
            DELIVERY_BATCH_EVENTS_MAX as u64,
        );
    }
    if let Some(bytes) = delivery.batch_bytes_max {
        out_of_range(
            "batch_bytes_max",
            bytes as u64,
            1024,
            DELIVERY_BATCH_BYTES_MAX as u64,
        );
    }
    if let Some(age) = delivery.batch_age_ms {
        out_of_range("batch_age_ms", age, 0, DELIVERY_BATCH_AGE_MS_HIGHEST);
    }
    out_of_range(
        "concurrency",
        delivery.concurrency as u64,
        1,
        DELIVERY_LANES_MAX as u64,
    );
    out_of_range(
        "retry_max_seconds",
        delivery.retry_max_seconds,
        0,
        DELIVERY_RETRY_MAX_SECONDS_HIGHEST,
    );
    out_of_range(
        "request_timeout_ms",
        delivery.request_timeout_ms,
        1,
        DELIVERY_REQUEST_TIMEOUT_MS_HIGHEST,
    );
}

/// The functions a computed trait may use.
pub const COMPUTED_FUNCTIONS: [&str; 9] = [
    "count",
    "sum",
    "min",
    "max",
    "average",
    "first",
    "last",
    "most_frequent",
    "unique_count",
];
/// The comparison operators of computed-trait filters.
pub const FILTER_OPERATORS: [&str; 8] =
    ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "exists"];

fn check_computed_traits(
    traits: &[ComputedTraitConfig],
    workspace_path: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    if traits.len() > COMPUTED_TRAITS_MAX {
        let message = format!("at most {COMPUTED_TRAITS_MAX} computed traits per workspace");
        problems.push(ConfigProblem::new(
            format!("{workspace_path}.computed_traits"),
            message,
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (index, definition) in traits.iter().enumerate() {
        let path = format!("{workspace_path}.computed_traits[{index}]");
        check_id(
            &definition.name,
            &format!("{path}.name"),
            "computed trait",
            problems,
        );
        if let Some(first) = earlier_index(&mut names, &definition.name, index) {
            let message = format!("`{}` is already computed_traits[{first}]", definition.name);
            problems.push(ConfigProblem::new(format!("{path}.name"), message));
        }
        if !COMPUTED_FUNCTIONS.contains(&definition.function.as_str()) {
            let message = format!(
                "unknown function `{}`; one of {}",
                definition.function,
                COMPUTED_FUNCTIONS.join(", ")
            );
            problems.push(ConfigProblem::new(format!("{path}.function"), message));
        } else if definition.function != "count" && definition.property.is_none() {
            let message = format!("`{}` needs a `property` to aggregate", definition.function);
            problems.push(ConfigProblem::new(format!("{path}.property"), message));
        }
        if let Some(kind) = &definition.event_type {
            if !["track", "page", "screen", "identify", "group"].contains(&kind.as_str()) {
                let message = "one of track, page, screen, identify, group";
                problems.push(ConfigProblem::new(format!("{path}.type"), message));
            }
        }
        if definition.window_days == Some(0) {
            let message = "window_days is at least 1; leave it out for all time";
            problems.push(ConfigProblem::new(format!("{path}.window_days"), message));
        }
        for (filter_index, filter) in definition.filters.iter().enumerate() {
            let filter_path = format!("{path}.where[{filter_index}]");
            if filter.property.is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{filter_path}.property"),
                    "name the property to compare",
                ));
            }
            if !FILTER_OPERATORS.contains(&filter.op.as_str()) {
                let message = format!(
                    "unknown op `{}`; one of {}",
                    filter.op,
                    FILTER_OPERATORS.join(", ")
                );
                problems.push(ConfigProblem::new(format!("{filter_path}.op"), message));
            } else if filter.op != "exists" && filter.value.is_none() {
                problems.push(ConfigProblem::new(
                    format!("{filter_path}.value"),
                    "this op needs a `value`",
                ));
            }
        }
    }
}

/// Checks identity rules and computed traits given outside a file (the management API); paths
/// are relative to the workspace (`identity.identifiers[0].limit`).
pub fn validate_unify_rules(
    identity: &IdentityConfig,
    computed_traits: &[ComputedTraitConfig],
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    check_identity(identity, "identity", &mut problems);
    check_computed_traits(computed_traits, "", &mut problems);
    for problem in &mut problems {
        problem.path = problem.path.trim_start_matches('.').to_string();
    }
    problems
}

fn check_identity(identity: &IdentityConfig, path: &str, problems: &mut Vec<ConfigProblem>) {
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for (index, identifier) in identity.identifiers.iter().enumerate() {
        let path = format!("{path}.identifiers[{index}]");
        let kind = identifier.kind.as_str();
        if kind.is_empty()
            || kind.len() > IDENTIFIER_TYPE_BYTES_MAX
            || !kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            let message = format!(
                "an identifier type is 1 to {IDENTIFIER_TYPE_BYTES_MAX} characters of a-z, 0-9, `_`, `.`, `-`"
            );
            problems.push(ConfigProblem::new(format!("{path}.type"), message));
        }
        if let Some(first) = earlier_index(&mut kinds, kind, index) {
            let message = format!("`{kind}` already has a rule at identifiers[{first}]");
            problems.push(ConfigProblem::new(format!("{path}.type"), message));
        }
        if identifier.limit == Some(0) {
            let message = "a limit is at least 1 (to ignore a type, block its values instead)";
            problems.push(ConfigProblem::new(format!("{path}.limit"), message));
        }
        if identifier.window_days == Some(0) {
            let message = "window_days is at least 1; leave it out to count over all time";
            problems.push(ConfigProblem::new(format!("{path}.window_days"), message));
        }
    }
    for (index, pattern) in identity.blocked_values.iter().enumerate() {
        if let Err(error) = regex::Regex::new(pattern) {
            // The regex crate draws a multi-line picture; one line per problem reads better.
            let text = error.to_string();
            let reason = text
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            let message = format!("not a regular expression: {reason}");
            problems.push(ConfigProblem::new(
                format!("{path}.blocked_values[{index}]"),
                message,
            ));
        }
    }
}

fn check_sources<'a>(
    sources: &'a [SourceConfig],
    workspace_path: &str,
    write_keys: &mut HashMap<&'a str, String>,
    problems: &mut Vec<ConfigProblem>,
) {
    let mut source_ids: HashMap<&str, usize> = HashMap::new();
    for (index, source) in sources.iter().enumerate() {
        let path = format!("{workspace_path}.sources[{index}]");
        check_id(&source.id, &format!("{path}.id"), "source", problems);
        if tandem_core::envelope::BUILT_IN_SOURCE_IDS.contains(&source.id.as_str()) {
            problems.push(ConfigProblem::new(
                format!("{path}.id"),
                format!("`{}` is a built-in source id (audience events, privacy records); choose another id", source.id),
            ));
        }
        if let Some(first) = earlier_index(&mut source_ids, &source.id, index) {
            let message = format!(
                "`{}` is already the id of sources[{first}] in this workspace",
                source.id
            );
            problems.push(ConfigProblem::new(format!("{path}.id"), message));
        }
        require(
            &source.name,
            &format!("{path}.name"),
            "every source needs a name",
            problems,
        );
        require(
            &source.owner,
            &format!("{path}.owner"),
            "every source needs an owner",
            problems,
        );
        check_data_categories(
            &source.data_categories,
            &format!("{path}.data_categories"),
            problems,
        );
        match &source.write_key_sha256 {
            None => check_write_key(&source.write_key, &path, write_keys, problems),
            Some(_) if !source.write_key.is_empty() => problems.push(ConfigProblem::new(
                format!("{path}.write_key_sha256"),
                "give either `write_key` or `write_key_sha256`, not both",
            )),
            Some(hash) => check_write_key_hash(hash, &path, write_keys, problems),
        }
    }
}

/// `write_key_sha256`: 64 lowercase hex digits, unique like the keys themselves.
fn check_write_key_hash<'a>(
    hash: &'a str,
    source_path: &str,
    write_keys: &mut HashMap<&'a str, String>,
    problems: &mut Vec<ConfigProblem>,
) {
    let path = format!("{source_path}.write_key_sha256");
    if hash.len() != 64
        || !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        problems.push(ConfigProblem::new(
            path,
            "not a SHA-256: 64 lowercase hex digits",
        ));
        return;
    }
    match write_keys.get(hash) {
        Some(first) => problems.push(ConfigProblem::new(
            &path,
            format!("same write key as {first} — every source needs its own"),
        )),
        None => {
            write_keys.insert(hash, source_path.to_string());
        }
    }
}

/// The index an id was first seen at, or none when `id` is new (an empty id is never a duplicate:
/// it is reported as missing instead).
fn earlier_index<'a>(
    seen: &mut HashMap<&'a str, usize>,
    id: &'a str,
    index: usize,
) -> Option<usize> {
    if id.is_empty() {
        return None;
    }
    let first = *seen.entry(id).or_insert(index);
    (first != index).then_some(first)
}

fn check_id(id: &str, path: &str, what: &str, problems: &mut Vec<ConfigProblem>) {
    if id.is_empty() {
        let message = format!("missing — every {what} needs an id, a slug like `web`");
        problems.push(ConfigProblem::new(path, message));
    } else if !is_slug(id) {
        let message = format!("`{id}` is not a slug — use a-z, 0-9, `-` and `_`, starting with a letter or digit, at most {SLUG_CHARS_MAX} characters");
        problems.push(ConfigProblem::new(path, message));
    }
}

fn require(value: &str, path: &str, why: &str, problems: &mut Vec<ConfigProblem>) {
    if value.trim().is_empty() {
        problems.push(ConfigProblem::new(path, format!("missing — {why}")));
    }
}

fn check_write_key<'a>(
    key: &'a str,
    source_path: &str,
    write_keys: &mut HashMap<&'a str, String>,
    problems: &mut Vec<ConfigProblem>,
) {
    let path = format!("{source_path}.write_key");
    if key.is_empty() {
        problems.push(ConfigProblem::new(
            path,
            "missing — every source needs a write key",
        ));
        return;
    }
    if key.chars().count() < WRITE_KEY_CHARS_MIN {
        let message =
            format!("shorter than {WRITE_KEY_CHARS_MIN} characters — use a long random secret");
        problems.push(ConfigProblem::new(&path, message));
    }
    if key.contains(|char: char| char == ':' || char.is_whitespace() || char.is_control()) {
        let message =
            "contains `:`, a space or a control character — it is sent as the Basic-auth user name";
        problems.push(ConfigProblem::new(&path, message));
    }
    // The key itself is a secret: name the other source, never the key.
    match write_keys.get(key) {
        Some(first) => problems.push(ConfigProblem::new(
            &path,
            format!("same write key as {first} — every source needs its own"),
        )),
        None => {
            write_keys.insert(key, source_path.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for good in ["web", "de", "crm-import", "a_b", "0", &"a".repeat(63)] {
            assert!(is_slug(good), "{good}");
        }
        for bad in ["", "Web", "-web", "_web", "we b", "wéb", &"a".repeat(64)] {
            assert!(!is_slug(bad), "{bad}");
        }
    }

    #[test]
    fn slug_from_names() {
        assert_eq!(slug_from_name("Demo website"), "demo-website");
        assert_eq!(
            slug_from_name("  CRM import (nightly) "),
            "crm-import-nightly"
        );
        assert_eq!(slug_from_name("iOS app"), "ios-app");
        assert_eq!(slug_from_name("ÉÉ"), "");
        assert!(is_slug(&slug_from_name(&"Ab ".repeat(40))));
    }

    #[test]
    fn listen_addresses() {
        for good in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "[::1]:80",
            "localhost:8080",
            "cdp.internal:443",
        ] {
            assert!(is_listen_address(good), "{good}");
        }
        for bad in [
            "",
            "8080",
            "localhost",
            "127.0.0.1:http",
            ":8080",
            "host:99999",
            "::1:80",
        ] {
            assert!(!is_listen_address(bad), "{bad}");
        }
    }

    #[test]
    fn default_config_is_valid() {
        assert_eq!(validate(&Config::default()), Ok(()));
    }
}
