//! Consent: the categories a workspace knows, the preferences a person gave (Segment's consent
//! object, `context.consent.categoryPreferences`), and [`decide`] — the one rule every route
//! asks before data goes somewhere that needs consent (a destination through its connection,
//! audience sync, personalization output).
//!
//! The rule:
//! 1. A route that names no category needs nothing: allowed (the catalog flags such routes).
//!    `necessary` is always granted.
//! 2. The preferences that decide are the event's own consent object when it has one, else the
//!    latest the profile holds (from earlier events, a `Consent Preference Updated` event or the
//!    API), else none.
//! 3. With preferences, every category the route needs must be `true`; a category the
//!    preferences do not mention is not granted.
//! 4. Without any, the workspace's `consent_missing` policy decides: `allow` (the default) or
//!    `deny` (markets where opt-in is required).
//!
//! Every [`Decision`] carries its basis and the categories that were missing, so "why was
//! event X not sent to Y?" is answered from the same value that made the choice.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Categories every workspace has unless the `consent_categories` policy lists others.
pub const DEFAULT_CATEGORIES: &[&str] = &[
    "necessary",
    "analytics",
    "personalization",
    "marketing",
    "advertising",
];

/// The category that is always granted.
pub const NECESSARY: &str = "necessary";

/// The category the personalization API's answers need.
pub const PERSONALIZATION: &str = "personalization";

/// The track event that carries a change of preferences (Segment's consent event).
pub const CONSENT_EVENT: &str = "Consent Preference Updated";

/// The policy naming a workspace's categories (a list of names).
pub const CATEGORIES_POLICY: &str = "consent_categories";
/// The policy deciding for events and profiles without preferences (`"allow"` | `"deny"`).
pub const MISSING_POLICY: &str = "consent_missing";

/// Longest category name.
pub const CATEGORY_CHARS_MAX: usize = 64;
/// Most categories one preferences object may carry (more are ignored, never an error: an
/// event is never refused for its consent object).
pub const PREFERENCES_CATEGORIES_MAX: usize = 64;

/// A person's choices: category → granted.
pub type Preferences = BTreeMap<String, bool>;

/// What happens when no preferences are known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    #[default]
    Allow,
    Deny,
}

impl Missing {
    pub fn parse(text: &str) -> Option<Missing> {
        match text {
            "allow" => Some(Missing::Allow),
            "deny" => Some(Missing::Deny),
            _ => None,
        }
    }
}

/// A workspace's consent settings, as its policies give them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsentPolicy {
    pub categories: Vec<String>,
    pub missing: Missing,
}

impl Default for ConsentPolicy {
    fn default() -> Self {
        ConsentPolicy {
            categories: DEFAULT_CATEGORIES.iter().map(|c| c.to_string()).collect(),
            missing: Missing::Allow,
        }
    }
}

/// Checks a category name: lowercase letters, digits, `_` and `-`, 1..=64 characters.
pub fn check_category(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > CATEGORY_CHARS_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(format!(
            "consent category `{name}`: lowercase letters, digits, `_` and `-`, at most {CATEGORY_CHARS_MAX}"
        ));
    }
    Ok(())
}

/// Whether a route needing `required` needs anyone's consent (`necessary` alone needs none).
pub fn needs_consent(required: &[String]) -> bool {
    required.iter().any(|category| category != NECESSARY)
}

/// The preferences an event carries: `context.consent.categoryPreferences` (booleans; other
/// values are ignored). `None` when the event has no such object.
pub fn from_event(event: &Value) -> Option<Preferences> {
    from_consent_object(event.get("context")?.get("consent")?)
}

/// The preferences of a consent object (`{"categoryPreferences": {...}}`).
pub fn from_consent_object(consent: &Value) -> Option<Preferences> {
    let object = consent.get("categoryPreferences")?.as_object()?;
    Some(
        object
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), value.as_bool()?)))
            .take(PREFERENCES_CATEGORIES_MAX)
            .collect(),
    )
}

/// Where the preferences that decided came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The route names no category.
    NoCategoryRequired,
    /// The event's own consent object.
    Event,
    /// The latest preferences on the person's profile.
    Profile,
    /// No preferences known: the `consent_missing` policy.
    Policy,
}

/// The answer, with its reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub basis: Basis,
    /// The categories the route needs.
    pub required: Vec<String>,
    /// Those not granted (empty when allowed).
    pub missing: Vec<String>,
    /// The preferences that decided, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferences: Option<Preferences>,
    /// One sentence for people.
    pub reason: String,
}

/// The decision for a route needing `required`, given the event's preferences, a lookup of
/// the profile's (called only when the event has none) and the policy for neither (read only
/// when neither has preferences: callers on the delivery path pay for it only then).
pub fn decide(
    required: &[String],
    event: Option<Preferences>,
    profile: impl FnOnce() -> Option<Preferences>,
    missing_policy: impl FnOnce() -> Missing,
) -> Decision {
    let needed: Vec<String> = required
        .iter()
        .filter(|category| category.as_str() != NECESSARY)
        .cloned()
        .collect();
    if needed.is_empty() {
        return Decision {
            allowed: true,
            basis: Basis::NoCategoryRequired,
            required: required.to_vec(),
            missing: Vec::new(),
            preferences: None,
            reason: "the route needs no consent category".into(),
        };
    }
    let (basis, preferences) = match event {
        Some(preferences) => (Basis::Event, Some(preferences)),
        None => match profile() {
            Some(preferences) => (Basis::Profile, Some(preferences)),
            None => (Basis::Policy, None),
        },
    };
    match preferences {
        Some(preferences) => {
            let missing: Vec<String> = needed
                .iter()
                .filter(|category| preferences.get(category.as_str()) != Some(&true))
                .cloned()
                .collect();
            let whose = match basis {
                Basis::Event => "the event's consent",
                _ => "the profile's latest consent",
            };
            let reason = if missing.is_empty() {
                format!("{whose} grants {}", needed.join(", "))
            } else {
                format!("{whose} does not grant {}", missing.join(", "))
            };
            Decision {
                allowed: missing.is_empty(),
                basis,
                required: required.to_vec(),
                missing,
                preferences: Some(preferences),
                reason,
            }
        }
        None => {
            let allowed = missing_policy() == Missing::Allow;
            Decision {
                allowed,
                basis,
                required: required.to_vec(),
                missing: if allowed { Vec::new() } else { needed.clone() },
                preferences: None,
                reason: if allowed {
                    "no consent known for this person; the workspace's consent_missing policy is allow".into()
                } else {
                    format!(
                        "no consent known for this person and the workspace's consent_missing policy is deny ({} needed)",
                        needed.join(", ")
                    )
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn prefs(pairs: &[(&str, bool)]) -> Preferences {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn req(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn reads_segments_consent_object() {
        let event = json!({"context": {"consent": {"categoryPreferences": {
            "marketing": true, "advertising": false, "odd": "yes"}}}});
        assert_eq!(
            from_event(&event),
            Some(prefs(&[("marketing", true), ("advertising", false)]))
        );
        assert_eq!(from_event(&json!({"context": {}})), None);
        assert_eq!(from_event(&json!({"context": {"consent": {}}})), None);
    }

    #[test]
    fn the_event_decides_before_the_profile() {
        let decision = decide(
            &req(&["marketing"]),
            Some(prefs(&[("marketing", false)])),
            || panic!("the profile is not asked when the event has consent"),
            || Missing::Allow,
        );
        assert!(!decision.allowed);
        assert_eq!(decision.basis, Basis::Event);
        assert_eq!(decision.missing, ["marketing"]);
        let decision = decide(
            &req(&["marketing"]),
            None,
            || Some(prefs(&[("marketing", true)])),
            || Missing::Deny,
        );
        assert!(decision.allowed);
        assert_eq!(decision.basis, Basis::Profile);
    }

    #[test]
    fn unmentioned_categories_are_not_granted_and_necessary_always_is() {
        let decision = decide(
            &req(&["necessary", "analytics", "marketing"]),
            Some(prefs(&[("analytics", true)])),
            || None,
            || Missing::Allow,
        );
        assert_eq!(decision.missing, ["marketing"]);
        assert!(decide(&req(&["necessary"]), None, || None, || Missing::Deny).allowed);
    }

    #[test]
    fn the_policy_decides_without_preferences() {
        assert!(decide(&req(&["analytics"]), None, || None, || Missing::Allow).allowed);
        let denied = decide(&req(&["analytics"]), None, || None, || Missing::Deny);
        assert!(!denied.allowed);
        assert_eq!(denied.basis, Basis::Policy);
        assert!(denied.reason.contains("deny"));
    }

    #[test]
    fn category_names() {
        assert!(check_category("ad-tracking_2").is_ok());
        assert!(check_category("").is_err());
        assert!(check_category("Marketing").is_err());
    }

    proptest! {
        /// The model: allowed ⇔ every needed category is granted by the first known preferences,
        /// or there are none and the policy allows.
        #[test]
        fn matches_the_model(
            required in proptest::collection::vec(proptest::sample::select(DEFAULT_CATEGORIES.to_vec()), 0..4),
            event in proptest::option::of(proptest::collection::btree_map(proptest::sample::select(DEFAULT_CATEGORIES.to_vec()), any::<bool>(), 0..5)),
            profile in proptest::option::of(proptest::collection::btree_map(proptest::sample::select(DEFAULT_CATEGORIES.to_vec()), any::<bool>(), 0..5)),
            deny in any::<bool>(),
        ) {
            let required: Vec<String> = required.into_iter().map(str::to_string).collect();
            let to_prefs = |map: std::collections::BTreeMap<&str, bool>| -> Preferences {
                map.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            };
            let event = event.map(to_prefs);
            let profile = profile.map(to_prefs);
            let policy = if deny { Missing::Deny } else { Missing::Allow };
            let decision = decide(&required, event.clone(), || profile.clone(), || policy);
            let needed: Vec<&String> = required.iter().filter(|c| c.as_str() != NECESSARY).collect();
            let expected = needed.is_empty() || match event.or(profile) {
                Some(prefs) => needed.iter().all(|c| prefs.get(c.as_str()) == Some(&true)),
                None => !deny,
            };
            prop_assert_eq!(decision.allowed, expected);
            prop_assert_eq!(decision.allowed, decision.missing.is_empty());
        }
    }
}
