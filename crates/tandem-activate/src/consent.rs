//! The consent gate of a connection: before an event goes to a destination whose connection
//! names consent categories, [`tandem_consent::decide`] is asked with the event's own consent
//! object, else the profile's latest preferences (through a [`ConsentOracle`] the server gives:
//! the unify store), else the workspace's `consent_missing` policy.

use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use tandem_consent::{Decision, Missing, Preferences};

/// What the gate asks outside the event: the person's profile and the workspace's policy.
/// Asked per event, so implementations answer from memory or an embedded store.
pub trait ConsentOracle: Send + Sync + 'static {
    /// The `consent_missing` policy in force now.
    fn missing_policy(&self) -> Missing;
    /// The latest preferences of the profile `userId`/`anonymousId` resolve to, if any.
    fn profile_preferences(
        &self,
        user_id: Option<&str>,
        anonymous_id: Option<&str>,
    ) -> Option<Preferences>;
}

/// An oracle that knows no profile and allows what has no consent (previews, tests, benches).
pub struct NoProfiles(pub Missing);

impl ConsentOracle for NoProfiles {
    fn missing_policy(&self) -> Missing {
        self.0
    }
    fn profile_preferences(&self, _: Option<&str>, _: Option<&str>) -> Option<Preferences> {
        None
    }
}

/// The fields of an event the gate reads; the rest is skipped unparsed.
#[derive(Deserialize)]
struct ConsentFields {
    #[serde(default)]
    context: Option<ContextFields>,
    #[serde(rename = "userId", default)]
    user_id: Option<Value>,
    #[serde(rename = "anonymousId", default)]
    anonymous_id: Option<Value>,
}

#[derive(Deserialize)]
struct ContextFields {
    #[serde(default)]
    consent: Option<Value>,
}

fn id_text(value: &Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    }
}

/// The decision for an event's JSON bytes on a route needing `required`. JSON that does not
/// parse as an object has no consent object and no identifiers.
pub fn decide_bytes(required: &[String], json: &[u8], oracle: &dyn ConsentOracle) -> Decision {
    let fields: Option<ConsentFields> = serde_json::from_slice(json).ok();
    decide_fields(required, fields, oracle)
}

/// The same decision for a parsed event.
pub fn decide_value(required: &[String], event: &Value, oracle: &dyn ConsentOracle) -> Decision {
    let fields = ConsentFields {
        context: event.get("context").map(|context| ContextFields {
            consent: context.get("consent").cloned(),
        }),
        user_id: event.get("userId").cloned(),
        anonymous_id: event.get("anonymousId").cloned(),
    };
    decide_fields(required, Some(fields), oracle)
}

fn decide_fields(
    required: &[String],
    fields: Option<ConsentFields>,
    oracle: &dyn ConsentOracle,
) -> Decision {
    let (event, user_id, anonymous_id) = match &fields {
        Some(fields) => (
            fields
                .context
                .as_ref()
                .and_then(|context| context.consent.as_ref())
                .and_then(tandem_consent::from_consent_object),
            id_text(&fields.user_id),
            id_text(&fields.anonymous_id),
        ),
        None => (None, None, None),
    };
    tandem_consent::decide(
        required,
        event,
        || {
            if user_id.is_none() && anonymous_id.is_none() {
                return None;
            }
            oracle.profile_preferences(user_id.as_deref(), anonymous_id.as_deref())
        },
        || oracle.missing_policy(),
    )
}

/// A connection's gate: the categories it needs and who to ask.
#[derive(Clone)]
pub struct ConsentGate {
    pub required: Vec<String>,
    pub oracle: Arc<dyn ConsentOracle>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    struct Known(BTreeMap<String, Preferences>, Missing);

    impl ConsentOracle for Known {
        fn missing_policy(&self) -> Missing {
            self.1
        }
        fn profile_preferences(
            &self,
            user: Option<&str>,
            anon: Option<&str>,
        ) -> Option<Preferences> {
            user.and_then(|id| self.0.get(id))
                .or_else(|| anon.and_then(|id| self.0.get(id)))
                .cloned()
        }
    }

    #[test]
    fn bytes_and_values_decide_alike() {
        let mut known = BTreeMap::new();
        known.insert("u1".to_string(), [("marketing".to_string(), true)].into());
        let oracle = Known(known, Missing::Deny);
        let required = vec!["marketing".to_string()];
        for (event, allowed) in [
            (json!({"userId": "u1"}), true),
            (json!({"userId": "u2"}), false),
            (
                json!({"userId": "u1", "context": {"consent": {"categoryPreferences": {"marketing": false}}}}),
                false,
            ),
            (
                json!({"anonymousId": "x", "context": {"consent": {"categoryPreferences": {"marketing": true}}}}),
                true,
            ),
            (json!({"userId": 7}), false),
        ] {
            let bytes = serde_json::to_vec(&event).unwrap();
            assert_eq!(
                decide_bytes(&required, &bytes, &oracle).allowed,
                allowed,
                "{event}"
            );
            assert_eq!(
                decide_value(&required, &event, &oracle).allowed,
                allowed,
                "{event}"
            );
        }
        assert!(!decide_bytes(&required, b"not json", &oracle).allowed);
    }
}
