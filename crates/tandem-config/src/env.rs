//! `TANDEM_*` environment variables and command-line flags, applied over the file.
//! Precedence, lowest first: built-in default < file < environment < flag.
//!
//! | variable | field |
//! |---|---|
//! | `TANDEM_LISTEN` | `server.listen` |
//! | `TANDEM_DATA` | `server.data_dir` |
//! | `TANDEM_PUBLIC_URL` | `server.public_url` |
//! | `TANDEM_ADMIN_TOKEN` | `admin.token` |
//! | `TANDEM_LOG_SEGMENT_BYTES_MAX` | `log.segment_bytes_max` |
//! | `TANDEM_LOG_QUEUE_BYTES_MAX` | `log.queue_bytes_max` |
//! | `TANDEM_LOG_RETENTION_BYTES_MAX` | `log.retention_bytes_max` |
//! | `TANDEM_LOG_RETENTION_HOURS` | `log.retention_hours` |
//! | `TANDEM_LOG_DISK_FREE_BYTES_MIN` | `log.disk_free_bytes_min` |
//! | `TANDEM_DEDUP_WINDOW_HOURS` | `collect.dedup_window_hours` |
//! | `TANDEM_DEDUP_ENTRIES_MAX` | `collect.dedup_entries_max` |
//! | `TANDEM_RATE_LIMIT_EVENTS_PER_SECOND` | `collect.rate_limit_events_per_second` |
//!
//! A variable set to the empty string counts as unset.

use crate::error::ConfigProblem;
use crate::schema::Config;
use crate::validate::validate;
use std::path::PathBuf;
use std::str::FromStr;

/// Values given on the command line; each `Some` beats both the file and the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`: `server.listen`.
    pub listen: Option<String>,
    /// `--data`: `server.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// An admin token given on the command line: `admin.token`.
    pub admin_token: Option<String>,
}

/// Each environment variable tandem reads and the field it sets, for docs and `--help` texts.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("TANDEM_LISTEN", "server.listen"),
    ("TANDEM_DATA", "server.data_dir"),
    ("TANDEM_PUBLIC_URL", "server.public_url"),
    ("TANDEM_ADMIN_TOKEN", "admin.token"),
    ("TANDEM_LOG_SEGMENT_BYTES_MAX", "log.segment_bytes_max"),
    ("TANDEM_LOG_QUEUE_BYTES_MAX", "log.queue_bytes_max"),
    ("TANDEM_LOG_RETENTION_BYTES_MAX", "log.retention_bytes_max"),
    ("TANDEM_LOG_RETENTION_HOURS", "log.retention_hours"),
    ("TANDEM_LOG_DISK_FREE_BYTES_MIN", "log.disk_free_bytes_min"),
    ("TANDEM_DEDUP_WINDOW_HOURS", "collect.dedup_window_hours"),
    ("TANDEM_DEDUP_ENTRIES_MAX", "collect.dedup_entries_max"),
    (
        "TANDEM_RATE_LIMIT_EVENTS_PER_SECOND",
        "collect.rate_limit_events_per_second",
    ),
];

/// Applies the `TANDEM_*` variables `env` returns, then `overrides`, then validates the result.
/// `env` is a parameter so tests need not touch the process environment; pass
/// `&|name| std::env::var(name).ok()`. A problem caused by a variable or flag names it.
pub fn apply_env_and_overrides(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &Overrides,
) -> Result<(), Vec<ConfigProblem>> {
    let mut origins: Vec<(&'static str, String)> = Vec::new();
    let mut problems = Vec::new();
    let mut reader = EnvReader {
        env,
        origins: &mut origins,
        problems: &mut problems,
    };
    reader.apply_all(config);
    apply_overrides(config, overrides, &mut origins);
    if !problems.is_empty() {
        return Err(problems);
    }
    validate(config).map_err(|problems| {
        problems
            .into_iter()
            .map(|problem| name_origin(problem, &origins))
            .collect()
    })
}

/// Reads variables, remembering which field each one set and every number that did not parse.
struct EnvReader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    origins: &'a mut Vec<(&'static str, String)>,
    problems: &'a mut Vec<ConfigProblem>,
}

impl EnvReader<'_> {
    fn apply_all(&mut self, config: &mut Config) {
        let (server, log, collect) = (&mut config.server, &mut config.log, &mut config.collect);
        self.text("TANDEM_LISTEN", &mut server.listen);
        if let Some(dir) = self.value("TANDEM_DATA") {
            server.data_dir = PathBuf::from(dir);
        }
        self.optional_text("TANDEM_PUBLIC_URL", &mut server.public_url);
        self.optional_text("TANDEM_ADMIN_TOKEN", &mut config.admin.token);
        self.number("TANDEM_LOG_SEGMENT_BYTES_MAX", &mut log.segment_bytes_max);
        self.number("TANDEM_LOG_QUEUE_BYTES_MAX", &mut log.queue_bytes_max);
        self.optional_number(
            "TANDEM_LOG_RETENTION_BYTES_MAX",
            &mut log.retention_bytes_max,
        );
        self.optional_number("TANDEM_LOG_RETENTION_HOURS", &mut log.retention_hours);
        self.number(
            "TANDEM_LOG_DISK_FREE_BYTES_MIN",
            &mut log.disk_free_bytes_min,
        );
        self.number("TANDEM_DEDUP_WINDOW_HOURS", &mut collect.dedup_window_hours);
        self.number("TANDEM_DEDUP_ENTRIES_MAX", &mut collect.dedup_entries_max);
        self.optional_number(
            "TANDEM_RATE_LIMIT_EVENTS_PER_SECOND",
            &mut collect.rate_limit_events_per_second,
        );
    }

    /// The variable's value when set and non-empty, recording that it set its field.
    fn value(&mut self, name: &'static str) -> Option<String> {
        let value = (self.env)(name).filter(|value| !value.is_empty())?;
        self.origins.push((field_of(name), name.to_string()));
        Some(value)
    }

    fn text(&mut self, name: &'static str, field: &mut String) {
        if let Some(value) = self.value(name) {
            *field = value;
        }
    }

    fn optional_text(&mut self, name: &'static str, field: &mut Option<String>) {
        if let Some(value) = self.value(name) {
            *field = Some(value);
        }
    }

    fn number<T: FromStr + TryInto<i64> + Copy>(&mut self, name: &'static str, field: &mut T) {
        if let Some(value) = self.value(name) {
            if let Some(number) = self.parse(name, &value) {
                *field = number;
            }
        }
    }

    fn optional_number<T: FromStr + TryInto<i64> + Copy>(
        &mut self,
        name: &'static str,
        field: &mut Option<T>,
    ) {
        if let Some(value) = self.value(name) {
            if let Some(number) = self.parse(name, &value) {
                *field = Some(number);
            }
        }
    }

    /// A whole non-negative number that TOML can also hold (≤ i64::MAX), so the result stays
    /// printable by [`crate::to_toml`]. Underscores are allowed as in TOML: `134_217_728`.
    fn parse<T: FromStr + TryInto<i64> + Copy>(
        &mut self,
        name: &'static str,
        value: &str,
    ) -> Option<T> {
        let parsed = value
            .trim()
            .replace('_', "")
            .parse::<T>()
            .ok()
            .filter(|number| (*number).try_into().is_ok());
        if parsed.is_none() {
            let message = format!(
                "`{value}` is not a whole number in range for {}",
                field_of(name)
            );
            self.problems.push(ConfigProblem::new(name, message));
        }
        parsed
    }
}

fn field_of(name: &str) -> &'static str {
    ENV_VARS
        .iter()
        .find(|(variable, _)| *variable == name)
        .map_or("", |(_, field)| field)
}

fn apply_overrides(
    config: &mut Config,
    overrides: &Overrides,
    origins: &mut Vec<(&'static str, String)>,
) {
    if let Some(listen) = &overrides.listen {
        config.server.listen = listen.clone();
        origins.push(("server.listen", "the command line".to_string()));
    }
    if let Some(data_dir) = &overrides.data_dir {
        config.server.data_dir = data_dir.clone();
        origins.push(("server.data_dir", "the command line".to_string()));
    }
    if let Some(token) = &overrides.admin_token {
        config.admin.token = Some(token.clone());
        origins.push(("admin.token", "the command line".to_string()));
    }
}

/// Appends `(set by TANDEM_X)` to a problem whose field was last set by a variable or flag.
fn name_origin(mut problem: ConfigProblem, origins: &[(&str, String)]) -> ConfigProblem {
    if let Some((_, origin)) = origins
        .iter()
        .rev()
        .find(|(field, _)| *field == problem.path)
    {
        problem.message = format!("{} (set by {origin})", problem.message);
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn apply(
        config: &mut Config,
        vars: &[(&str, &str)],
        overrides: &Overrides,
    ) -> Result<(), Vec<String>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        apply_env_and_overrides(config, &|name| vars.get(name).cloned(), overrides)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect())
    }

    fn from_file() -> Config {
        let mut config = Config::default();
        config.server.listen = "10.0.0.1:9000".into();
        config.server.data_dir = "/file/data".into();
        config.admin.token = Some("token-from-file-0123456789".into());
        config
    }

    #[test]
    fn file_values_stay_without_env_or_flags() {
        let mut config = from_file();
        apply(&mut config, &[], &Overrides::default()).unwrap();
        assert_eq!(config, from_file());
    }

    #[test]
    fn env_beats_file_and_flags_beat_env() {
        let mut config = from_file();
        let vars = [
            ("TANDEM_LISTEN", "10.0.0.2:9001"),
            ("TANDEM_DATA", "/env/data"),
            ("TANDEM_ADMIN_TOKEN", "token-from-env-0123456789"),
        ];
        let overrides = Overrides {
            listen: Some("10.0.0.3:9002".into()),
            data_dir: None,
            admin_token: None,
        };
        apply(&mut config, &vars, &overrides).unwrap();
        assert_eq!(config.server.listen, "10.0.0.3:9002", "flag beats env");
        assert_eq!(
            config.server.data_dir,
            PathBuf::from("/env/data"),
            "env beats file"
        );
        assert_eq!(
            config.admin.token.as_deref(),
            Some("token-from-env-0123456789")
        );

        let overrides = Overrides {
            listen: None,
            data_dir: Some("/flag/data".into()),
            admin_token: Some("token-from-flag-0123456789".into()),
        };
        apply(&mut config, &vars, &overrides).unwrap();
        assert_eq!(config.server.data_dir, PathBuf::from("/flag/data"));
        assert_eq!(
            config.admin.token.as_deref(),
            Some("token-from-flag-0123456789")
        );
    }

    #[test]
    fn every_numeric_variable_sets_its_field() {
        let mut config = Config::default();
        let vars = [
            ("TANDEM_PUBLIC_URL", "https://cdp.example.com"),
            ("TANDEM_LOG_SEGMENT_BYTES_MAX", "2097152"),
            ("TANDEM_LOG_QUEUE_BYTES_MAX", "4_194_304"),
            ("TANDEM_LOG_RETENTION_BYTES_MAX", "1073741824"),
            ("TANDEM_LOG_RETENTION_HOURS", "720"),
            ("TANDEM_LOG_DISK_FREE_BYTES_MIN", "0"),
            ("TANDEM_DEDUP_WINDOW_HOURS", "48"),
            ("TANDEM_DEDUP_ENTRIES_MAX", "1000"),
            ("TANDEM_RATE_LIMIT_EVENTS_PER_SECOND", "250"),
        ];
        apply(&mut config, &vars, &Overrides::default()).unwrap();
        assert_eq!(
            config.server.public_url.as_deref(),
            Some("https://cdp.example.com")
        );
        let log = &config.log;
        assert_eq!(
            (
                log.segment_bytes_max,
                log.queue_bytes_max,
                log.disk_free_bytes_min
            ),
            (2_097_152, 4_194_304, 0)
        );
        assert_eq!(
            (log.retention_bytes_max, log.retention_hours),
            (Some(1_073_741_824), Some(720))
        );
        let collect = &config.collect;
        assert_eq!(
            (collect.dedup_window_hours, collect.dedup_entries_max),
            (48, 1000)
        );
        assert_eq!(collect.rate_limit_events_per_second, Some(250));
    }

    #[test]
    fn bad_numbers_name_their_variable() {
        let mut config = Config::default();
        let vars = [
            ("TANDEM_LOG_SEGMENT_BYTES_MAX", "128MiB"),
            ("TANDEM_DEDUP_WINDOW_HOURS", "-1"),
            ("TANDEM_RATE_LIMIT_EVENTS_PER_SECOND", "5000000000"),
        ];
        let problems = apply(&mut config, &vars, &Overrides::default()).unwrap_err();
        assert_eq!(
            problems,
            [
                "TANDEM_LOG_SEGMENT_BYTES_MAX: `128MiB` is not a whole number in range for log.segment_bytes_max",
                "TANDEM_DEDUP_WINDOW_HOURS: `-1` is not a whole number in range for collect.dedup_window_hours",
                "TANDEM_RATE_LIMIT_EVENTS_PER_SECOND: `5000000000` is not a whole number in range for collect.rate_limit_events_per_second",
            ]
        );
        assert_eq!(
            config.log.segment_bytes_max,
            Config::default().log.segment_bytes_max,
            "a bad value leaves the field alone"
        );
    }

    #[test]
    fn numbers_beyond_toml_integers_are_refused() {
        let mut config = Config::default();
        let problems = apply(
            &mut config,
            &[("TANDEM_LOG_DISK_FREE_BYTES_MIN", "18446744073709551615")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn invalid_values_after_overrides_name_their_origin() {
        let mut config = Config::default();
        let vars = [
            ("TANDEM_LOG_SEGMENT_BYTES_MAX", "1000"),
            ("TANDEM_LISTEN", "127.0.0.1:1"),
        ];
        let overrides = Overrides {
            listen: Some("nowhere".into()),
            ..Overrides::default()
        };
        let problems = apply(&mut config, &vars, &overrides).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0].starts_with("server.listen: `nowhere`")
                && problems[0].ends_with("(set by the command line)"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].ends_with("(set by TANDEM_LOG_SEGMENT_BYTES_MAX)"),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let mut config = from_file();
        apply(
            &mut config,
            &[
                ("TANDEM_LISTEN", ""),
                ("TANDEM_ADMIN_TOKEN", ""),
                ("TANDEM_DEDUP_WINDOW_HOURS", ""),
            ],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config, from_file());
    }

    #[test]
    fn every_variable_is_documented_in_the_readme() {
        let readme = include_str!("../README.md");
        for (name, field) in ENV_VARS {
            assert!(
                readme.contains(&format!("`{name}` | `{field}`")),
                "README lacks a row for {name}"
            );
        }
    }
}
