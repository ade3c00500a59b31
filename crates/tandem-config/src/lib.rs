//! The tandem configuration file (`tandem.toml`): its schema, its validation with a line number
//! for every problem, and the `TANDEM_*` environment variables and flags that override it.
//!
//! Life of a configuration:
//! 1. [`load`] reads the file and hands the text to [`parse`].
//! 2. [`parse`] deserializes it into [`Config`] (unknown keys and wrong types stop here, with
//!    their line), fills in source ids derived from names, and runs every semantic rule of
//!    [`validate`], collecting all problems rather than stopping at the first.
//! 3. Problems are given lines by looking their field paths up in a span-keeping parse of the
//!    same text; a missing field points at its table's header.
//! 4. `tandem serve` then calls [`apply_env_and_overrides`]: environment beats file, flags beat
//!    environment, and the result is validated again.
//!
//! See `tandem.example.toml` at the repository root for every setting, commented.

mod audiences;
mod env;
mod error;
mod locate;
mod plans;
pub mod policy;
mod schema;
mod validate;

pub use audiences::{
    audience_order, audience_problems, audience_set_problems, canonical_operator, is_pii_trait,
    personalization_problems, since_ms, AudienceConfig, ConditionConfig, ConditionKind,
    FilterConfig, PersonalizationConfig, RuleConfig, AUDIENCE_EVENT_TYPES, AUDIENCE_OPERATORS,
    PII_TRAIT_NAMES,
};
pub use env::{apply_env_and_overrides, Overrides, ENV_VARS};
pub use error::{ConfigProblem, LoadError};
pub use plans::{
    plan_overlaps, tracking_plan_problems, PlanMode, TrackingPlanConfig, UnplannedEvents,
};
pub use policy::{
    change_approval, effective_policies, ChangeApproval, DeclaredIn, EffectivePolicy, PolicyValues,
    ALLOWED_DESTINATION_TYPES_POLICY, CHANGE_APPROVAL_POLICY,
};
pub use schema::{
    AdminConfig, CollectConfig, ComputedTraitConfig, Config, ConnectionConfig, DeliveryConfig,
    DestinationConfig, IdentifierConfig, IdentityConfig, LogConfig, MappingConfig,
    OrganizationConfig, PiiConfig, PolicyConfig, PropertyFilterConfig, RetentionConfig,
    ServerConfig, SourceConfig, WorkspaceConfig, DEFAULT_DATA_DIR, DEFAULT_LISTEN,
    DEFAULT_ORGANIZATION_NAME,
};
pub use validate::{
    check_data_categories, check_destination_settings, connection_problems, destination_problems,
    fill_derived_ids, is_slug, pii_category_problems, slug_from_name, validate,
    validate_unify_rules, SettingsValidator, ADMIN_TOKEN_CHARS_MIN, COMPUTED_FUNCTIONS,
    DATA_CATEGORIES, DEDUP_WINDOW_HOURS_HIGHEST, FILTER_OPERATORS, MAPPING_OPS,
    QUEUE_BYTES_MAX_LOWEST, RETENTION_DAYS_HIGHEST, RETENTION_HOURS_HIGHEST,
    SEGMENT_BYTES_MAX_HIGHEST, SEGMENT_BYTES_MAX_LOWEST, SLUG_CHARS_MAX, TRANSFORMATION_BYTES_MAX,
    WRITE_KEY_CHARS_MIN,
};

use locate::DocumentIndex;
use std::path::Path;

/// Reads, parses and validates the configuration file at `path` (destination settings are
/// checked only by [`load_with`]).
pub fn load(path: &Path) -> Result<Config, LoadError> {
    load_with(path, None)
}

/// [`load`], also checking every destination's settings with `settings_validator` (the activate
/// registry's check, passed in by the binary: this crate knows no destination type).
pub fn load_with(
    path: &Path,
    settings_validator: Option<SettingsValidator>,
) -> Result<Config, LoadError> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        LoadError::new(
            &file_name,
            vec![ConfigProblem::new("", format!("cannot read: {error}"))],
        )
    })?;
    parse_with(&text, &file_name, settings_validator)
}

/// Parses and validates configuration `text`; `file_name` is how problems name the file.
pub fn parse(text: &str, file_name: &str) -> Result<Config, LoadError> {
    parse_with(text, file_name, None)
}

/// [`parse`], also checking destination settings with `settings_validator`.
pub fn parse_with(
    text: &str,
    file_name: &str,
    settings_validator: Option<SettingsValidator>,
) -> Result<Config, LoadError> {
    let index = DocumentIndex::new(text);
    let mut config: Config = toml::from_str(text)
        .map_err(|error| LoadError::new(file_name, vec![shape_problem(&error, &index)]))?;
    fill_derived_ids(&mut config);
    let mut problems = validate(&config).err().unwrap_or_default();
    if let Some(validator) = settings_validator {
        problems.extend(check_destination_settings(&config, validator));
    }
    if !problems.is_empty() {
        return Err(LoadError::new(file_name, locate(problems, &index)));
    }
    Ok(config)
}

/// A syntax error, unknown key or wrong type, as the TOML parser reported it.
fn shape_problem(error: &toml::de::Error, index: &DocumentIndex) -> ConfigProblem {
    let start = error.span().map(|span| span.start);
    ConfigProblem {
        line: start.map(|offset| index.line_of_offset(offset)),
        path: start
            .and_then(|offset| index.path_at_offset(offset))
            .unwrap_or_default()
            .to_string(),
        // The parser's message may span lines ("invalid string\nexpected …"): keep one problem a line.
        message: error.message().trim_end().replace('\n', "; "),
    }
}

/// Gives each problem the line of its field (or of the nearest table present) and sorts them
/// in file order; problems without a line come last.
fn locate(mut problems: Vec<ConfigProblem>, index: &DocumentIndex) -> Vec<ConfigProblem> {
    for problem in &mut problems {
        problem.line = index.line_of_path(&problem.path);
    }
    problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
    problems
}

/// `config` as TOML that [`parse`] reads back to an equal `Config`.
///
/// # Panics
/// If a number exceeds `i64::MAX` or the data directory is not UTF-8: TOML can hold neither,
/// and neither can come from [`parse`] or [`apply_env_and_overrides`].
pub fn to_toml(config: &Config) -> String {
    toml::to_string(config).expect("a configuration always has a TOML form")
}

/// The configuration `tandem serve` uses without a config file: workspace `demo` with one
/// source, `demo-web`, authenticated by `write_key`.
pub fn demo_with_write_key(write_key: &str) -> Config {
    let source = SourceConfig {
        id: "demo-web".to_string(),
        name: "Demo website".to_string(),
        owner: "demo@tandem.local".to_string(),
        write_key: write_key.to_string(),
        write_key_sha256: None,
        purpose: Some("trying tandem out: events sent with the demo write key".to_string()),
        data_categories: vec!["identifiers".to_string(), "behavioral".to_string()],
        enabled: true,
    };
    let workspace = WorkspaceConfig {
        id: "demo".to_string(),
        name: "Demo".to_string(),
        sources: vec![source],
        identity: Default::default(),
        computed_traits: Vec::new(),
        destinations: Vec::new(),
        connections: Vec::new(),
        tracking_plans: Vec::new(),
        policies: Default::default(),
        audiences: Vec::new(),
        personalization: None,
        pii: Default::default(),
        retention: Default::default(),
    };
    Config {
        workspaces: vec![workspace],
        ..Config::default()
    }
}

#[cfg(test)]
mod tests;
