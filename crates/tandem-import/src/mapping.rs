//! Which column of a file becomes which part of an `identify` event.
//!
//! A mapping is a set of `COLUMN=TARGET` pairs (from `--map` flags or a TOML/JSON mapping file)
//! plus a rule for the columns it does not name. Targets:
//!
//! | target | becomes |
//! |---|---|
//! | `userId`, `anonymousId` | the event's identity (at least one is required per row) |
//! | `traits.NAME[.NAME…][:string\|number\|boolean]` | a trait, nested by the dots, optionally converted |
//! | `externalId:TYPE` | `context.externalIds[] = {id, type: TYPE, collection: "users", encoding: "none"}` |
//! | `timestamp[:iso8601\|unix_seconds\|unix_ms]` | the event's `timestamp` (when the record was true) |
//! | `ignore` | nothing |
//!
//! Columns the mapping does not name: `user_id`/`userId` (any case, `_`, `-` or space) is the
//! `userId` and `anonymous_id`/`anonymousId` the `anonymousId` unless another column was mapped
//! there; `email`/`email_address` is `traits.email` and `phone`/`phone_number` `traits.phone`
//! unless taken; every other column is a trait of the same name (or ignored with
//! `unmapped = "ignore"`). A column with no name is ignored.

use crate::limits::{
    COLUMNS_MAX, IDENTIFIER_TYPE_BYTES_MAX, TRAIT_NAME_BYTES_MAX, TRAIT_PATH_DEPTH_MAX,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Where one column's value goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    UserId,
    AnonymousId,
    /// A trait at `path` (`["address", "city"]` is `traits.address.city`).
    Trait {
        path: Vec<String>,
        kind: ValueKind,
    },
    /// An entry of `context.externalIds` with this `type`.
    ExternalId {
        id_type: String,
    },
    Timestamp {
        format: TimeFormat,
    },
    Ignore,
}

/// How a trait's value is converted. A CSV cell is always text; a JSON value keeps its type
/// unless a conversion is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// Text stays text, a JSON value keeps its JSON type.
    AsIs,
    String,
    /// An integer or a decimal number (`42`, `-3.5`, `1e3`).
    Number,
    /// `true`/`false`, `yes`/`no`, `y`/`n`, `1`/`0` in any case.
    Boolean,
}

/// How a timestamp column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeFormat {
    /// `2024-05-01T12:00:00Z`, with an offset, fractions, a space for the `T`, no zone (UTC) or a
    /// date alone (midnight UTC).
    Iso8601,
    UnixSeconds,
    UnixMilliseconds,
}

/// What happens to columns the mapping does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmapped {
    /// They become traits of the same name (well-known names become identities, see the module).
    Traits,
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("--map {0}: expected COLUMN=TARGET, e.g. --map email=traits.email")]
    InvalidFlag(String),
    #[error("column {column:?} → {spec:?}: {reason}")]
    InvalidTarget {
        column: String,
        spec: String,
        reason: String,
    },
    #[error("mapping file: {0}")]
    File(String),
    #[error("the header has column {name:?} twice (columns {first} and {second}); rename one so the mapping is not ambiguous")]
    DuplicateColumn {
        name: String,
        first: usize,
        second: usize,
    },
    #[error(
        "the mapping names column {column:?}, which the header does not have (it has: {available})"
    )]
    MissingColumn { column: String, available: String },
    #[error("columns {first:?} and {second:?} both map to {target}; map one of them elsewhere (e.g. --map {second}=ignore)")]
    TargetTwice {
        target: String,
        first: String,
        second: String,
    },
    #[error("column {first:?} maps to {first_target} and column {second:?} to {second_target}: one trait cannot be both a value and an object")]
    TraitPathConflict {
        first: String,
        first_target: String,
        second: String,
        second_target: String,
    },
    #[error("the header has {count} columns; at most {COLUMNS_MAX} are supported")]
    TooManyColumns { count: usize },
}

impl Target {
    /// Parses a target as written in `--map` and mapping files.
    pub fn parse(spec: &str) -> Result<Target, String> {
        let spec = spec.trim();
        match spec {
            "userId" => return Ok(Target::UserId),
            "anonymousId" => return Ok(Target::AnonymousId),
            "ignore" => return Ok(Target::Ignore),
            "timestamp" | "timestamp:iso8601" => {
                return Ok(Target::Timestamp {
                    format: TimeFormat::Iso8601,
                })
            }
            "timestamp:unix_seconds" => {
                return Ok(Target::Timestamp {
                    format: TimeFormat::UnixSeconds,
                })
            }
            "timestamp:unix_ms" => {
                return Ok(Target::Timestamp {
                    format: TimeFormat::UnixMilliseconds,
                })
            }
            _ => {}
        }
        if let Some(id_type) = spec.strip_prefix("externalId:") {
            return parse_external_id_type(id_type);
        }
        if let Some(rest) = spec.strip_prefix("traits.") {
            return parse_trait(rest);
        }
        Err(format!(
            "unknown target {spec:?}; use userId, anonymousId, traits.NAME[:string|number|boolean], \
             externalId:TYPE, timestamp[:iso8601|unix_seconds|unix_ms] or ignore"
        ))
    }

    /// A trait of this one name, value as is.
    pub fn trait_named(name: &str) -> Target {
        Target::Trait {
            path: vec![name.to_string()],
            kind: ValueKind::AsIs,
        }
    }

    /// Targets a row can fill only once (a second column there is a conflict).
    fn is_single(&self) -> bool {
        matches!(
            self,
            Target::UserId | Target::AnonymousId | Target::Timestamp { .. } | Target::Trait { .. }
        )
    }

    /// Where single targets collide: two formats of `timestamp` or two conversions of one trait
    /// are still one slot.
    fn slot(&self) -> Option<String> {
        match self {
            Target::UserId => Some("userId".into()),
            Target::AnonymousId => Some("anonymousId".into()),
            Target::Timestamp { .. } => Some("timestamp".into()),
            Target::Trait { path, .. } => Some(format!("traits.{}", path.join("."))),
            _ => None,
        }
    }
}

fn parse_external_id_type(id_type: &str) -> Result<Target, String> {
    let valid = !id_type.is_empty()
        && id_type.len() <= IDENTIFIER_TYPE_BYTES_MAX
        && id_type
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
    if valid {
        Ok(Target::ExternalId {
            id_type: id_type.to_string(),
        })
    } else {
        Err(format!(
            "external id type {id_type:?} must be 1 to {IDENTIFIER_TYPE_BYTES_MAX} letters, digits, `_`, `-` or `.`"
        ))
    }
}

fn parse_trait(rest: &str) -> Result<Target, String> {
    let (path, kind) = match rest.rsplit_once(':') {
        Some((path, "string")) => (path, ValueKind::String),
        Some((path, "number")) => (path, ValueKind::Number),
        Some((path, "boolean")) => (path, ValueKind::Boolean),
        Some((_, other)) => {
            return Err(format!(
                "unknown trait type {other:?}; use string, number or boolean"
            ))
        }
        None => (rest, ValueKind::AsIs),
    };
    let segments: Vec<String> = path.split('.').map(str::to_string).collect();
    if segments.len() > TRAIT_PATH_DEPTH_MAX {
        return Err(format!(
            "a trait path has at most {TRAIT_PATH_DEPTH_MAX} levels"
        ));
    }
    if segments
        .iter()
        .any(|segment| segment.is_empty() || segment.len() > TRAIT_NAME_BYTES_MAX)
    {
        return Err(format!(
            "a trait name is 1 to {TRAIT_NAME_BYTES_MAX} bytes, with no empty part between dots"
        ));
    }
    Ok(Target::Trait {
        path: segments,
        kind,
    })
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::UserId => f.write_str("userId"),
            Target::AnonymousId => f.write_str("anonymousId"),
            Target::Ignore => f.write_str("ignore"),
            Target::ExternalId { id_type } => write!(f, "externalId:{id_type}"),
            Target::Timestamp { format } => f.write_str(match format {
                TimeFormat::Iso8601 => "timestamp",
                TimeFormat::UnixSeconds => "timestamp:unix_seconds",
                TimeFormat::UnixMilliseconds => "timestamp:unix_ms",
            }),
            Target::Trait { path, kind } => {
                write!(f, "traits.{}", path.join("."))?;
                match kind {
                    ValueKind::AsIs => Ok(()),
                    ValueKind::String => f.write_str(":string"),
                    ValueKind::Number => f.write_str(":number"),
                    ValueKind::Boolean => f.write_str(":boolean"),
                }
            }
        }
    }
}

/// A mapping file: `columns` (column → target) and `unmapped` (`traits` or `ignore`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(default)]
    columns: BTreeMap<String, String>,
    unmapped: Option<Unmapped>,
}

/// The column mapping of one import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    columns: BTreeMap<String, Target>,
    unmapped: Unmapped,
}

impl Default for Mapping {
    /// No column named: well-known names become identities, the rest traits.
    fn default() -> Mapping {
        Mapping {
            columns: BTreeMap::new(),
            unmapped: Unmapped::Traits,
        }
    }
}

impl Mapping {
    /// A mapping file's text: TOML, or JSON when `json` (same shape:
    /// `{"columns": {"customer_no": "userId"}, "unmapped": "traits"}`).
    pub fn from_file_text(text: &str, json: bool) -> Result<Mapping, MappingError> {
        let file: MappingFile = if json {
            serde_json::from_str(text).map_err(|error| MappingError::File(error.to_string()))?
        } else {
            toml::from_str(text).map_err(|error| MappingError::File(error.to_string()))?
        };
        let mut mapping = Mapping::default();
        if let Some(unmapped) = file.unmapped {
            mapping.unmapped = unmapped;
        }
        for (column, spec) in file.columns {
            let target = Target::parse(&spec).map_err(|reason| MappingError::InvalidTarget {
                column: column.clone(),
                spec: spec.clone(),
                reason,
            })?;
            mapping.columns.insert(column, target);
        }
        mapping.check()?;
        Ok(mapping)
    }

    /// Adds (or replaces) one `COLUMN=TARGET` pair, as `--map` gives it. The last `=` splits, so
    /// a column name may itself contain `=`.
    pub fn add_flag(&mut self, flag: &str) -> Result<(), MappingError> {
        let Some((column, spec)) = flag.rsplit_once('=') else {
            return Err(MappingError::InvalidFlag(flag.to_string()));
        };
        if column.is_empty() {
            return Err(MappingError::InvalidFlag(flag.to_string()));
        }
        let target = Target::parse(spec).map_err(|reason| MappingError::InvalidTarget {
            column: column.to_string(),
            spec: spec.to_string(),
            reason,
        })?;
        self.columns.insert(column.to_string(), target);
        self.check()
    }

    pub fn set_unmapped(&mut self, unmapped: Unmapped) {
        self.unmapped = unmapped;
    }

    /// The named columns must not fill one slot twice or make a trait both a value and an object.
    pub fn check(&self) -> Result<(), MappingError> {
        check_targets(
            self.columns
                .iter()
                .map(|(column, target)| (column.as_str(), target)),
        )
    }

    /// Where a column goes. Used per key for JSON lines; CSV uses [`Mapping::plan_header`].
    pub fn target_for(&self, column: &str) -> Target {
        if let Some(target) = self.columns.get(column) {
            return target.clone();
        }
        if column.is_empty() {
            return Target::Ignore;
        }
        if let Some(target) = self.well_known(column) {
            return target;
        }
        match self.unmapped {
            Unmapped::Traits => Target::trait_named(column),
            Unmapped::Ignore => Target::Ignore,
        }
    }

    /// The default target of a well-known column name, unless a named column already has it.
    fn well_known(&self, column: &str) -> Option<Target> {
        let normalized: String = column
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        let target = match normalized.as_str() {
            "userid" => Target::UserId,
            "anonymousid" => Target::AnonymousId,
            "email" | "emailaddress" => Target::trait_named("email"),
            "phone" | "phonenumber" => Target::trait_named("phone"),
            _ => return None,
        };
        let slot = target.slot();
        let taken = self.columns.values().any(|named| named.slot() == slot);
        if taken {
            return None;
        }
        // Identities follow the unmapped rule only for traits: `unmapped = "ignore"` still
        // recognises a `user_id` column, since without it no row could be imported.
        match (&target, self.unmapped) {
            (Target::Trait { .. }, Unmapped::Ignore) => None,
            _ => Some(target),
        }
    }

    /// The target of every column of a CSV header, checked: no column name twice, every named
    /// column present, no slot filled twice, no trait both a value and an object.
    pub fn plan_header(&self, header: &[String]) -> Result<Vec<Target>, MappingError> {
        if header.len() > COLUMNS_MAX {
            return Err(MappingError::TooManyColumns {
                count: header.len(),
            });
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, name) in header.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            if let Some(first) = seen.insert(name, index) {
                return Err(MappingError::DuplicateColumn {
                    name: name.clone(),
                    first: first + 1,
                    second: index + 1,
                });
            }
        }
        if let Some(column) = self
            .columns
            .keys()
            .find(|column| !seen.contains_key(column.as_str()))
        {
            return Err(MappingError::MissingColumn {
                column: column.clone(),
                available: shown_columns(header),
            });
        }
        let plan: Vec<Target> = header.iter().map(|name| self.target_for(name)).collect();
        check_targets(
            header
                .iter()
                .map(String::as_str)
                .zip(plan.iter())
                .filter(|(name, _)| !name.is_empty()),
        )?;
        Ok(plan)
    }

    /// A stable text naming everything that decides what a row becomes; a checkpoint keeps it so
    /// that a resumed import cannot silently map rows differently.
    pub fn fingerprint(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|(column, target)| format!("{column:?}={target}"))
            .collect();
        let unmapped = match self.unmapped {
            Unmapped::Traits => "traits",
            Unmapped::Ignore => "ignore",
        };
        format!("columns [{}], unmapped {unmapped}", columns.join(", "))
    }
}

/// Up to 20 column names, for an error message.
fn shown_columns(header: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut text = header
        .iter()
        .take(SHOWN)
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if header.len() > SHOWN {
        text.push_str(&format!(" and {} more", header.len() - SHOWN));
    }
    text
}

fn check_targets<'a>(
    columns: impl Iterator<Item = (&'a str, &'a Target)>,
) -> Result<(), MappingError> {
    let mut slots: HashMap<String, &str> = HashMap::new();
    let mut traits: Vec<(&[String], &str, &Target)> = Vec::new();
    for (column, target) in columns {
        if !target.is_single() {
            continue;
        }
        if let Some(slot) = target.slot() {
            if let Some(first) = slots.insert(slot.clone(), column) {
                return Err(MappingError::TargetTwice {
                    target: slot,
                    first: first.to_string(),
                    second: column.to_string(),
                });
            }
        }
        if let Target::Trait { path, .. } = target {
            traits.push((path, column, target));
        }
    }
    // Sorted, a path that is a prefix of another sorts right before its extensions.
    traits.sort_by(|a, b| a.0.cmp(b.0));
    for pair in traits.windows(2) {
        let (shorter, longer) = (&pair[0], &pair[1]);
        if longer.0.starts_with(shorter.0) {
            return Err(MappingError::TraitPathConflict {
                first: shorter.1.to_string(),
                first_target: shorter.2.to_string(),
                second: longer.1.to_string(),
                second_target: longer.2.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn targets_parse_and_print_back() {
        for spec in [
            "userId",
            "anonymousId",
            "ignore",
            "timestamp",
            "timestamp:unix_seconds",
            "timestamp:unix_ms",
            "externalId:crm_id",
            "traits.email",
            "traits.address.city",
            "traits.age:number",
            "traits.vip:boolean",
            "traits.zip:string",
        ] {
            assert_eq!(Target::parse(spec).unwrap().to_string(), spec);
        }
        assert_eq!(
            Target::parse(" timestamp:iso8601 ").unwrap(),
            Target::Timestamp {
                format: TimeFormat::Iso8601
            }
        );
    }

    #[test]
    fn bad_targets_say_what_is_accepted() {
        for (spec, expected) in [
            ("user", "unknown target"),
            ("traits.", "no empty part"),
            ("traits.a..b", "no empty part"),
            ("traits.age:integer", "unknown trait type"),
            ("externalId:", "external id type"),
            ("externalId:crm id", "external id type"),
            ("traits.a.b.c.d.e.f.g.h.i", "levels"),
        ] {
            let error = Target::parse(spec).unwrap_err();
            assert!(error.contains(expected), "{spec}: {error}");
        }
    }

    #[test]
    fn default_mapping_recognises_identities_and_keeps_the_rest_as_traits() {
        let mapping = Mapping::default();
        let plan = mapping
            .plan_header(&header(&[
                "user_id",
                "Email",
                "phone",
                "plan",
                "",
                "Anonymous ID",
            ]))
            .unwrap();
        assert_eq!(
            plan,
            vec![
                Target::UserId,
                Target::trait_named("email"),
                Target::trait_named("phone"),
                Target::trait_named("plan"),
                Target::Ignore,
                Target::AnonymousId,
            ]
        );
        assert_eq!(mapping.target_for("userId"), Target::UserId);
    }

    #[test]
    fn flags_override_defaults_and_free_well_known_names() {
        let mut mapping = Mapping::default();
        mapping.add_flag("customer_no=userId").unwrap();
        mapping.add_flag("crm_id=externalId:crm_id").unwrap();
        mapping.add_flag("work_email=traits.email").unwrap();
        mapping.add_flag("a=b=traits.odd").unwrap();
        let plan = mapping
            .plan_header(&header(&[
                "customer_no",
                "user_id",
                "crm_id",
                "work_email",
                "a=b",
            ]))
            .unwrap();
        assert_eq!(
            plan,
            vec![
                Target::UserId,
                // userId is taken by customer_no, so `user_id` is an ordinary trait.
                Target::trait_named("user_id"),
                Target::ExternalId {
                    id_type: "crm_id".into()
                },
                Target::trait_named("email"),
                Target::trait_named("odd"),
            ]
        );
    }

    #[test]
    fn two_columns_for_one_slot_are_refused_with_both_names() {
        let mut mapping = Mapping::default();
        mapping.add_flag("work_email=traits.email").unwrap();
        // `email` is not named, and traits.email is taken: it keeps its own name, the same slot.
        let error = mapping
            .plan_header(&header(&["id", "work_email", "email"]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "columns \"work_email\" and \"email\" both map to traits.email; map one of them elsewhere (e.g. --map email=ignore)"
        );
        let error = Mapping::default()
            .plan_header(&header(&["user_id", "userId"]))
            .unwrap_err();
        assert!(matches!(error, MappingError::TargetTwice { .. }), "{error}");
        let mut twice = Mapping::default();
        twice.add_flag("a=userId").unwrap();
        assert!(twice.add_flag("b=userId").is_err());
    }

    #[test]
    fn a_trait_cannot_be_a_value_and_an_object() {
        let mut mapping = Mapping::default();
        mapping.add_flag("addr=traits.address").unwrap();
        let error = mapping.add_flag("city=traits.address.city").unwrap_err();
        assert!(
            matches!(error, MappingError::TraitPathConflict { .. }),
            "{error}"
        );
        // Through the unmapped rule too: a column named `address` next to `traits.address.city`.
        let mut mapping = Mapping::default();
        mapping.add_flag("city=traits.address.city").unwrap();
        assert!(mapping
            .plan_header(&header(&["user_id", "city", "address"]))
            .is_err());
        // Siblings are fine.
        mapping.add_flag("zip=traits.address.zip").unwrap();
        assert!(mapping
            .plan_header(&header(&["user_id", "city", "zip"]))
            .is_ok());
    }

    #[test]
    fn header_problems_are_named() {
        let error = Mapping::default()
            .plan_header(&header(&["id", "email", "id"]))
            .unwrap_err();
        assert_eq!(
            error,
            MappingError::DuplicateColumn {
                name: "id".into(),
                first: 1,
                second: 3
            }
        );
        let mut mapping = Mapping::default();
        mapping.add_flag("customer_no=userId").unwrap();
        let error = mapping.plan_header(&header(&["id", "email"])).unwrap_err();
        assert!(error.to_string().contains("\"customer_no\""), "{error}");
        assert!(error.to_string().contains("\"email\""), "{error}");
        let wide: Vec<String> = (0..COLUMNS_MAX + 1).map(|i| format!("c{i}")).collect();
        assert!(matches!(
            Mapping::default().plan_header(&wide),
            Err(MappingError::TooManyColumns { .. })
        ));
        assert!(matches!(
            Mapping::default().add_flag("no-equals-sign"),
            Err(MappingError::InvalidFlag(_))
        ));
    }

    #[test]
    fn unmapped_ignore_keeps_identities_but_drops_other_columns() {
        let mut mapping = Mapping::default();
        mapping.set_unmapped(Unmapped::Ignore);
        mapping.add_flag("plan=traits.plan").unwrap();
        let plan = mapping
            .plan_header(&header(&["user_id", "email", "plan", "notes"]))
            .unwrap();
        assert_eq!(
            plan,
            vec![
                Target::UserId,
                Target::Ignore,
                Target::trait_named("plan"),
                Target::Ignore
            ]
        );
    }

    #[test]
    fn mapping_files_in_toml_and_json_are_the_same_mapping() {
        let toml = r#"
unmapped = "ignore"
[columns]
customer_no = "userId"
crm_id = "externalId:crm_id"
signup = "timestamp"
"#;
        let json = r#"{"unmapped": "ignore", "columns": {"customer_no": "userId",
            "crm_id": "externalId:crm_id", "signup": "timestamp"}}"#;
        let from_toml = Mapping::from_file_text(toml, false).unwrap();
        let from_json = Mapping::from_file_text(json, true).unwrap();
        assert_eq!(from_toml, from_json);
        assert_eq!(from_toml.fingerprint(), from_json.fingerprint());
        assert_ne!(from_toml.fingerprint(), Mapping::default().fingerprint());
        let error = Mapping::from_file_text("[columns]\nx = \"nope\"\n", false).unwrap_err();
        assert!(error.to_string().contains("unknown target"), "{error}");
        let error = Mapping::from_file_text("colums = {}\n", false).unwrap_err();
        assert!(error.to_string().contains("colums"), "{error}");
    }
}
