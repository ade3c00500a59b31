//! Identifiers: which values of an event identify a person, how much each is trusted (priority),
//! how many of each a profile may hold (limit), and which values never join anything (blocked).

use regex::RegexSet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use tandem_config::IdentityConfig;
use tandem_core::envelope::EventType;
use tandem_core::limits::{
    DEFAULT_IDENTIFIER_LIMIT, EVENT_IDENTIFIERS_MAX, IDENTIFIER_TYPE_BYTES_MAX,
    IDENTIFIER_VALUE_BYTES_MAX,
};

pub const USER_ID: &str = "user_id";
pub const ANONYMOUS_ID: &str = "anonymous_id";
pub const EMAIL: &str = "email";
pub const PHONE: &str = "phone";
pub const DEVICE_ID: &str = "device_id";
pub const ADVERTISING_ID: &str = "advertising_id";
pub const GROUP_ID: &str = "group_id";

/// The built-in types in default priority order (most trusted first), with their default limits.
/// Segment's defaults: one user_id, five of everything else.
pub const DEFAULT_RULES: [(&str, u32); 6] = [
    (USER_ID, 1),
    (EMAIL, DEFAULT_IDENTIFIER_LIMIT),
    (PHONE, DEFAULT_IDENTIFIER_LIMIT),
    (ADVERTISING_ID, DEFAULT_IDENTIFIER_LIMIT),
    (DEVICE_ID, DEFAULT_IDENTIFIER_LIMIT),
    (ANONYMOUS_ID, DEFAULT_IDENTIFIER_LIMIT),
];

/// Priority given to types with no rule (custom `context.externalIds` types): below every
/// built-in type.
pub const UNLISTED_PRIORITY: u32 = 1000;

/// Values that identify nobody: placeholders SDKs and forms send when they know nothing.
/// Whole-value, case-insensitive.
pub const DEFAULT_BLOCKED_VALUES: [&str; 10] = [
    "^[0-]*$",
    "^-1$",
    "^null$",
    "^nil$",
    "^none$",
    "^undefined$",
    "^anonymous$",
    "^unknown$",
    "^n/?a$",
    "^(test|user)@example\\.com$",
];

/// One identifier: a type and a value (`email` / `ada@example.com`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "id")]
    pub value: String,
}

impl Identity {
    pub fn new(kind: &str, value: &str) -> Identity {
        Identity {
            kind: kind.to_string(),
            value: value.to_string(),
        }
    }

    /// `type:value`, the form the Profile API takes in its path.
    pub fn parse_path(text: &str) -> Option<Identity> {
        let (kind, value) = text.split_once(':')?;
        (!kind.is_empty() && !value.is_empty()).then(|| Identity::new(kind, value))
    }

    /// The store key: type, 0x1F, value (0x1F never occurs in a valid type).
    pub fn key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.kind.len() + 1 + self.value.len());
        key.extend_from_slice(self.kind.as_bytes());
        key.push(0x1f);
        key.extend_from_slice(self.value.as_bytes());
        key
    }

    pub fn from_key(key: &[u8]) -> Option<Identity> {
        let split = key.iter().position(|&b| b == 0x1f)?;
        Some(Identity {
            kind: std::str::from_utf8(&key[..split]).ok()?.to_string(),
            value: std::str::from_utf8(&key[split + 1..]).ok()?.to_string(),
        })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The rule of one identifier type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindRule {
    /// Lower is more trusted.
    pub priority: u32,
    pub limit: u32,
    /// Only values first seen within this window count toward `limit`.
    pub window_ms: Option<i64>,
}

/// A workspace's identity rules, compiled.
#[derive(Clone, Debug)]
pub struct IdentityRules {
    kinds: HashMap<String, KindRule>,
    blocked: RegexSet,
    /// The patterns behind `blocked`, for explanations.
    blocked_patterns: Vec<String>,
}

impl Default for IdentityRules {
    fn default() -> Self {
        IdentityRules::from_config(&IdentityConfig::default()).expect("defaults compile")
    }
}

impl IdentityRules {
    /// Compiles the rules of a workspace; the config was validated, so errors are rare (a regex
    /// too large for the engine).
    pub fn from_config(config: &IdentityConfig) -> Result<IdentityRules, String> {
        let mut kinds: HashMap<String, KindRule> = DEFAULT_RULES
            .iter()
            .enumerate()
            .map(|(index, (kind, limit))| {
                let rule = KindRule {
                    priority: (index as u32 + 1) * 10,
                    limit: *limit,
                    window_ms: None,
                };
                (kind.to_string(), rule)
            })
            .collect();
        for identifier in &config.identifiers {
            let current = kinds.get(&identifier.kind).copied().unwrap_or(KindRule {
                priority: UNLISTED_PRIORITY,
                limit: DEFAULT_IDENTIFIER_LIMIT,
                window_ms: None,
            });
            let rule = KindRule {
                priority: identifier.priority.unwrap_or(current.priority),
                limit: identifier.limit.unwrap_or(current.limit).max(1),
                window_ms: identifier
                    .window_days
                    .map(|days| days as i64 * 86_400_000)
                    .or(current.window_ms),
            };
            kinds.insert(identifier.kind.clone(), rule);
        }
        let mut patterns: Vec<String> = Vec::new();
        if config.default_blocked_values {
            patterns.extend(DEFAULT_BLOCKED_VALUES.iter().map(|p| p.to_string()));
        }
        patterns.extend(config.blocked_values.iter().cloned());
        let anchored: Vec<String> = patterns.iter().map(|p| format!("(?i)^(?:{p})$")).collect();
        let blocked = RegexSet::new(&anchored).map_err(|error| error.to_string())?;
        Ok(IdentityRules {
            kinds,
            blocked,
            blocked_patterns: patterns,
        })
    }

    pub fn rule(&self, kind: &str) -> KindRule {
        self.kinds.get(kind).copied().unwrap_or(KindRule {
            priority: UNLISTED_PRIORITY,
            limit: DEFAULT_IDENTIFIER_LIMIT,
            window_ms: None,
        })
    }

    /// The blocked-value patterns, in order.
    pub fn blocked_patterns(&self) -> &[String] {
        &self.blocked_patterns
    }

    /// The blocked-value pattern a value matches, if any.
    pub fn blocked_by(&self, value: &str) -> Option<&str> {
        self.blocked
            .matches(value)
            .iter()
            .next()
            .map(|index| self.blocked_patterns[index].as_str())
    }

    /// Orders identities most trusted first (then by type and value, so the order is total).
    pub fn sort_by_priority(&self, identities: &mut [Identity]) {
        identities.sort_by(|a, b| {
            (self.rule(&a.kind).priority, &a.kind, &a.value).cmp(&(
                self.rule(&b.kind).priority,
                &b.kind,
                &b.value,
            ))
        });
    }
}

/// Why an identifier of an event was not used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    pub identity: Identity,
    pub reason: String,
}

/// The identifiers found in one event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// User identifiers, most trusted first, without duplicates or blocked values.
    pub user: Vec<Identity>,
    /// `previousId` of an alias call (its type is decided against the graph).
    pub previous_id: Option<String>,
    /// `groupId` of a group call, and account-collection `context.externalIds`.
    pub account: Vec<Identity>,
    /// Values found but not used, with why.
    pub ignored: Vec<Ignored>,
}

/// Reads an id the way Segment does: a string, or a number written as its decimal text.
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.trim().to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

pub fn normalize(kind: &str, value: &str) -> String {
    match kind {
        EMAIL => value.trim().to_lowercase(),
        PHONE => {
            let digits: String = value
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect();
            digits
        }
        _ => value.trim().to_string(),
    }
}

impl IdentityRules {
    /// Checks and normalizes one candidate; pushes it to `into` or to `ignored`.
    fn admit(&self, kind: &str, raw: &str, into: &mut Vec<Identity>, ignored: &mut Vec<Ignored>) {
        let value = normalize(kind, raw);
        let identity = Identity::new(kind, &value);
        if kind.is_empty() || kind.len() > IDENTIFIER_TYPE_BYTES_MAX || kind.contains('\u{1f}') {
            ignored.push(Ignored {
                identity,
                reason: "invalid identifier type".into(),
            });
        } else if value.is_empty() {
            // Absent, not an identifier at all: nothing to report.
        } else if value.len() > IDENTIFIER_VALUE_BYTES_MAX {
            ignored.push(Ignored {
                identity,
                reason: format!("longer than {IDENTIFIER_VALUE_BYTES_MAX} bytes"),
            });
        } else if let Some(pattern) = self.blocked_by(&value) {
            ignored.push(Ignored {
                identity,
                reason: format!("blocked value (matches `{pattern}`)"),
            });
        } else if kind == EMAIL && !value.contains('@') {
            ignored.push(Ignored {
                identity,
                reason: "not an email address".into(),
            });
        } else if !into.contains(&identity) {
            into.push(identity);
        }
    }

    /// The identifiers of an event (the enriched JSON object of a log record).
    pub fn extract(&self, event_type: EventType, event: &Value) -> Extracted {
        let mut out = Extracted::default();
        let mut user = Vec::new();
        let field = |path: &[&str]| -> Option<String> {
            let mut node = event;
            for part in path {
                node = node.get(part)?;
            }
            id_text(node)
        };
        if let Some(id) = field(&["userId"]) {
            self.admit(USER_ID, &id, &mut user, &mut out.ignored);
        }
        if let Some(id) = field(&["anonymousId"]) {
            self.admit(ANONYMOUS_ID, &id, &mut user, &mut out.ignored);
        }
        let trait_roots: &[&str] = if matches!(event_type, EventType::Identify) {
            &["traits", "context"]
        } else {
            &["context"]
        };
        for root in trait_roots {
            let traits = if *root == "traits" {
                event.get("traits")
            } else {
                event.get("context").and_then(|c| c.get("traits"))
            };
            let Some(traits) = traits else { continue };
            if let Some(email) = traits.get("email").and_then(Value::as_str) {
                self.admit(EMAIL, email, &mut user, &mut out.ignored);
            }
            if let Some(phone) = traits.get("phone").and_then(id_text) {
                self.admit(PHONE, &phone, &mut user, &mut out.ignored);
            }
        }
        if let Some(id) = field(&["context", "device", "id"]) {
            self.admit(DEVICE_ID, &id, &mut user, &mut out.ignored);
        }
        if let Some(id) = field(&["context", "device", "advertisingId"]) {
            self.admit(ADVERTISING_ID, &id, &mut user, &mut out.ignored);
        }
        if let Some(external) = event
            .get("context")
            .and_then(|c| c.get("externalIds"))
            .and_then(Value::as_array)
        {
            for entry in external {
                let (Some(kind), Some(id)) = (
                    entry.get("type").and_then(Value::as_str),
                    entry.get("id").and_then(id_text),
                ) else {
                    continue;
                };
                let collection = entry
                    .get("collection")
                    .and_then(Value::as_str)
                    .unwrap_or("users");
                if collection == "accounts" {
                    self.admit(kind, &id, &mut out.account, &mut out.ignored);
                } else {
                    self.admit(kind, &id, &mut user, &mut out.ignored);
                }
            }
        }
        if event_type == EventType::Group {
            if let Some(id) = field(&["groupId"]) {
                self.admit(GROUP_ID, &id, &mut out.account, &mut out.ignored);
            }
        }
        if event_type == EventType::Alias {
            if let Some(previous) = field(&["previousId"]) {
                let mut candidate = Vec::new();
                self.admit(ANONYMOUS_ID, &previous, &mut candidate, &mut out.ignored);
                out.previous_id = candidate.pop().map(|identity| identity.value);
            }
        }
        self.sort_by_priority(&mut user);
        if user.len() > EVENT_IDENTIFIERS_MAX {
            for identity in user.drain(EVENT_IDENTIFIERS_MAX..) {
                out.ignored.push(Ignored {
                    identity,
                    reason: format!("more than {EVENT_IDENTIFIERS_MAX} identifiers in one event"),
                });
            }
        }
        out.user = user;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_every_kind_in_priority_order() {
        let rules = IdentityRules::default();
        let event = json!({
            "userId": 42,
            "anonymousId": "a-1",
            "traits": {"email": " Ada@Example.ORG ", "phone": "+44 (20) 7946-0000"},
            "context": {
                "device": {"id": "dev-1", "advertisingId": "ad-1"},
                "externalIds": [
                    {"id": "crm-7", "type": "crm_id", "collection": "users", "encoding": "none"},
                    {"id": "acct-1", "type": "account_no", "collection": "accounts"}
                ]
            }
        });
        let found = rules.extract(EventType::Identify, &event);
        let kinds: Vec<String> = found.user.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            kinds,
            [
                "user_id:42",
                "email:ada@example.org",
                "phone:+442079460000",
                "advertising_id:ad-1",
                "device_id:dev-1",
                "anonymous_id:a-1",
                "crm_id:crm-7"
            ]
        );
        assert_eq!(found.account, vec![Identity::new("account_no", "acct-1")]);
        assert!(found.ignored.is_empty());
    }

    #[test]
    fn blocked_and_malformed_values_are_ignored_with_a_reason() {
        let rules = IdentityRules::default();
        for placeholder in [
            "0",
            "000-000",
            "-1",
            "null",
            "NULL",
            "undefined",
            "anonymous",
            "N/A",
        ] {
            let found = rules.extract(
                EventType::Track,
                &json!({"userId": placeholder, "anonymousId": "real"}),
            );
            assert_eq!(
                found.user,
                vec![Identity::new(ANONYMOUS_ID, "real")],
                "{placeholder}"
            );
            assert!(
                found.ignored[0].reason.starts_with("blocked value"),
                "{placeholder}"
            );
        }
        let found = rules.extract(
            EventType::Identify,
            &json!({"userId": "u", "traits": {"email": "not-an-email"}}),
        );
        assert_eq!(found.ignored[0].reason, "not an email address");
        let long = "x".repeat(IDENTIFIER_VALUE_BYTES_MAX + 1);
        let found = rules.extract(
            EventType::Track,
            &json!({"userId": long, "anonymousId": "a"}),
        );
        assert_eq!(found.user.len(), 1);
    }

    #[test]
    fn traits_email_counts_only_on_identify_but_context_traits_always() {
        let rules = IdentityRules::default();
        let found = rules.extract(
            EventType::Track,
            &json!({"userId": "u", "traits": {"email": "a@b.c"}}),
        );
        assert_eq!(found.user.len(), 1);
        let found = rules.extract(
            EventType::Track,
            &json!({"userId": "u", "context": {"traits": {"email": "a@b.c"}}}),
        );
        assert_eq!(found.user.len(), 2);
    }

    #[test]
    fn custom_rules_and_blocked_values_apply() {
        let config = IdentityConfig {
            identifiers: vec![tandem_config::IdentifierConfig {
                kind: "crm_id".into(),
                priority: Some(1),
                limit: Some(1),
                window_days: None,
            }],
            blocked_values: vec!["test-.*".into()],
            default_blocked_values: false,
        };
        let rules = IdentityRules::from_config(&config).unwrap();
        assert_eq!(rules.rule("crm_id").limit, 1);
        assert_eq!(rules.rule("unheard_of").priority, UNLISTED_PRIORITY);
        assert!(rules.blocked_by("TEST-123").is_some());
        assert!(rules.blocked_by("null").is_none(), "defaults switched off");
        let mut ids = vec![Identity::new(USER_ID, "u"), Identity::new("crm_id", "c")];
        rules.sort_by_priority(&mut ids);
        assert_eq!(ids[0].kind, "crm_id");
    }

    #[test]
    fn alias_previous_id_and_group_id() {
        let rules = IdentityRules::default();
        let found = rules.extract(
            EventType::Alias,
            &json!({"userId": "u", "previousId": "old"}),
        );
        assert_eq!(found.previous_id.as_deref(), Some("old"));
        let found = rules.extract(EventType::Group, &json!({"userId": "u", "groupId": 7}));
        assert_eq!(found.account, vec![Identity::new(GROUP_ID, "7")]);
        assert_eq!(
            found.user,
            vec![Identity::new(USER_ID, "u")],
            "a group id never joins users"
        );
    }

    #[test]
    fn keys_round_trip() {
        let identity = Identity::new("email", "a:b@c");
        assert_eq!(Identity::from_key(&identity.key()), Some(identity.clone()));
        assert_eq!(Identity::parse_path("email:a:b@c"), Some(identity));
        assert_eq!(Identity::parse_path("nocolon"), None);
    }
}
