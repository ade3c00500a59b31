//! Every destination type tandem ships: one line each.

use crate::destination::DestinationType;

/// The destination types, by name. Adding a type = one line here (and its folder under `destinations/`).
pub static REGISTRY: &[&DestinationType] = &[
    &crate::destinations::webhook::TYPE, // one line per type
    &crate::destinations::postgres::TYPE,
    &crate::destinations::files::TYPE,
    &crate::destinations::nats::TYPE,
];

/// The type called `name`, if any.
pub fn find(name: &str) -> Option<&'static DestinationType> {
    REGISTRY.iter().copied().find(|kind| kind.name == name)
}

/// Validates `settings` for the type called `name`: unknown type or every settings problem.
pub fn validate(
    name: &str,
    settings: &serde_json::Value,
) -> Result<(), Vec<crate::destination::SettingsProblem>> {
    match find(name) {
        Some(kind) => (kind.validate)(settings),
        None => Err(vec![crate::destination::SettingsProblem::new(
            "type",
            format!(
                "unknown destination type {name:?}; known: {}",
                REGISTRY
                    .iter()
                    .map(|kind| kind.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )]),
    }
}

/// [`validate`] in the shape `tandem_config::load_with` takes: (field, message) pairs.
pub fn config_validator(name: &str, settings: &serde_json::Value) -> Vec<(String, String)> {
    match validate(name, settings) {
        Ok(()) => Vec::new(),
        Err(problems) => problems
            .into_iter()
            .map(|problem| (problem.field, problem.message))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = REGISTRY.iter().map(|kind| kind.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn webhook_is_registered() {
        assert_eq!(find("webhook").map(|kind| kind.name), Some("webhook"));
        assert!(config_validator(
            "webhook",
            &serde_json::json!({"url": "http://127.0.0.1:1/x"})
        )
        .is_empty());
        assert_eq!(config_validator("webhook", &serde_json::json!({}))[0].0, "");
    }

    #[test]
    fn unknown_type_is_a_problem() {
        let problems = validate("no-such-type", &serde_json::json!({})).unwrap_err();
        assert_eq!(problems[0].field, "type");
    }
}
