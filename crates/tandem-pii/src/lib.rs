//! PII, pure: which fields of an event hold personal data (a **category** per field), and what a
//! connection's **policy** does with each category on the way to its destination (allow, hash,
//! mask, drop). No I/O: the server gives the salt, the config gives the rules.
//!
//! Classification of one scalar leaf of an event (at a dotted path of object keys; array
//! elements add no segment):
//! 1. **Path rules** of the workspace (`[[workspaces.pii.rules]] path = "properties.loyalty_id",
//!    category = "national_id"`) win: the most specific rule naming the leaf or an object above
//!    it gives the category; the category `none` marks a field as not personal data, whatever
//!    its value looks like.
//! 2. **Names by field path**: a string under `traits` or `context.traits` named like a
//!    person's name ([`detect::NAME_TRAIT_KEYS`]: `name`, `firstName`, `lastName`, …; not in a
//!    `group` call, whose traits describe the account), or under `properties` named so (but
//!    `properties.name`, which Segment's page and screen calls use for the page's name).
//! 3. **Detectors by value**, on strings of at most [`detect::DETECT_VALUE_BYTES_MAX`] bytes,
//!    each on the whole value: `email`; `ip` (IPv4 or IPv6); `card` (13–19 digits, spaces or
//!    dashes allowed, Luhn-checked); `national_id` (US SSN `ddd-dd-dddd` in the assigned ranges,
//!    UK National Insurance number, French NIR with its key checked); `phone` (`+` and 8–15
//!    digits; in a field named like a phone field, national formats of 7–15 digits).
//!
//! Everything else is not personal data and is never changed. The envelope members tandem
//! routes by ([`EXEMPT_MEMBERS`]: `messageId`, `type`, the timestamps, `event`, `integrations`)
//! are not classified; `userId`, `anonymousId` and the rest are.
//!
//! Actions ([`Action`]): `allow` sends the value; `hash` sends the lowercase hex SHA-256 of
//! the workspace's salt followed by the value (a string's UTF-8, another scalar's JSON text);
//! `mask` keeps a hint ([`mask`]: `j***@example.com`, `+33*******89`, a card's last four, an IP
//! with its last IPv4 octet or last 80 IPv6 bits zeroed, `J*** D***`, a national id's last
//! four); `drop` removes the field.

pub mod detect;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const EMAIL: &str = "email";
pub const PHONE: &str = "phone";
pub const IP: &str = "ip";
pub const NAME: &str = "name";
pub const CARD: &str = "card";
pub const NATIONAL_ID: &str = "national_id";
/// The category of a path rule that marks a field as not personal data.
pub const NONE: &str = "none";
/// The policy key naming the action of every category the policy does not list.
pub const DEFAULT_KEY: &str = "default";
/// The categories the built-in detectors give.
pub const BUILT_IN_CATEGORIES: &[&str] = &[EMAIL, PHONE, IP, NAME, CARD, NATIONAL_ID];

/// Longest category name (custom ones are slugs).
pub const CATEGORY_CHARS_MAX: usize = 64;
/// Most path rules per workspace (each leaf is matched against every rule).
pub const RULES_MAX: usize = 256;
/// Shortest salt accepted from the environment (a generated one has 32 random bytes).
pub const SALT_CHARS_MIN: usize = 16;
/// Longest rule path.
pub const RULE_PATH_CHARS_MAX: usize = 256;
/// Object/array nesting walked below the event's root. Deeper values cannot be classified: a
/// policy that changes anything removes them rather than send them unchecked (collect already
/// refuses JSON nested deeper than `tandem_core::limits::JSON_DEPTH_MAX`).
pub const WALK_DEPTH_MAX: usize = 32;
/// The hint a mask keeps of a value it cannot shape by category.
const MASKED: &str = "***";

/// Top-level members never classified: the plumbing reads them (ids, times, the track name,
/// routing).
pub const EXEMPT_MEMBERS: &[&str] = &[
    "messageId",
    "type",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "event",
    "integrations",
    "channel",
    "version",
];

/// `Ok` when `name` may be a category: a built-in one or a custom slug (`[a-z][a-z0-9_]*`).
pub fn check_category(name: &str) -> Result<(), String> {
    let valid = name.len() <= CATEGORY_CHARS_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a category name: lowercase letters, digits and `_`, starting with a letter, at most {CATEGORY_CHARS_MAX} characters (built in: {})",
            BUILT_IN_CATEGORIES.join(", ")
        ))
    }
}

/// `[[workspaces.pii.rules]]`: a field path and the category its values get.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathRule {
    /// Dotted object keys from the event's root (`properties.loyalty_id`, `context.traits`);
    /// a rule naming an object covers every value under it.
    pub path: String,
    /// A built-in category, a custom one, or `none` (not personal data).
    pub category: String,
}

/// `Ok` when `path` may be a rule's path.
pub fn check_rule_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("missing — a dotted field path such as `properties.loyalty_id`".into());
    }
    if path.len() > RULE_PATH_CHARS_MAX {
        return Err(format!("longer than {RULE_PATH_CHARS_MAX} characters"));
    }
    if path.split('.').any(str::is_empty) {
        return Err(format!("`{path}` has an empty segment"));
    }
    Ok(())
}

/// A workspace's classification, compiled once per configuration.
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    /// (path segments, category), most specific (longest) first.
    rules: Vec<(Vec<String>, String)>,
}

impl Classifier {
    /// Compiles validated rules (see [`check_rule_path`], [`check_category`]).
    pub fn new(rules: &[PathRule]) -> Classifier {
        let mut rules: Vec<(Vec<String>, String)> = rules
            .iter()
            .map(|rule| {
                (
                    rule.path.split('.').map(str::to_string).collect(),
                    rule.category.clone(),
                )
            })
            .collect();
        rules.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Classifier { rules }
    }

    /// The custom categories the rules name (neither built in nor `none`).
    pub fn custom_categories(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .rules
            .iter()
            .map(|(_, category)| category.as_str())
            .filter(|name| *name != NONE && !BUILT_IN_CATEGORIES.contains(name))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The category of the scalar `leaf` at `path` in an event of call type `event_type`, or
    /// `None` when it is not personal data (see the crate's documentation for the order).
    pub fn classify(&self, path: &[&str], leaf: &Value, event_type: Option<&str>) -> Option<&str> {
        if let Some((_, category)) = self.rules.iter().find(|(rule, _)| {
            rule.len() <= path.len() && rule.iter().zip(path).all(|(a, b)| a == b)
        }) {
            return (category != NONE).then_some(category.as_str());
        }
        let text = leaf.as_str()?;
        if text.is_empty() || text.len() > detect::DETECT_VALUE_BYTES_MAX {
            return None;
        }
        let (key, parent) = path.split_last()?;
        if is_name_field(parent, key, event_type) {
            return Some(NAME);
        }
        classify_value(text, detect::PHONE_KEYS.contains(key))
    }

    /// The category of an identity's value in a profile (`email` and `phone` by type, any other
    /// type by its value).
    pub fn classify_identity<'a>(&self, kind: &'a str, value: &str) -> Option<&'a str> {
        match kind {
            EMAIL => Some(EMAIL),
            PHONE => Some(PHONE),
            _ if value.len() <= detect::DETECT_VALUE_BYTES_MAX => classify_value(value, false),
            _ => None,
        }
    }

    /// Every classified leaf of `event`: (dotted path, category), in document order.
    pub fn fields(&self, event: &Value) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let event_type = event.get("type").and_then(Value::as_str);
        let mut path = Vec::new();
        if let Value::Object(members) = event {
            for (key, value) in members {
                if EXEMPT_MEMBERS.contains(&key.as_str()) {
                    continue;
                }
                path.push(key.as_str());
                self.collect_fields(value, &mut path, event_type, &mut found);
                path.pop();
            }
        }
        found
    }

    fn collect_fields<'v>(
        &self,
        value: &'v Value,
        path: &mut Vec<&'v str>,
        event_type: Option<&str>,
        found: &mut Vec<(String, String)>,
    ) {
        match value {
            Value::Object(members) => {
                for (key, child) in members {
                    path.push(key.as_str());
                    self.collect_fields(child, path, event_type, found);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.collect_fields(item, path, event_type, found);
                }
            }
            leaf => {
                if let Some(category) = self.classify(path, leaf, event_type) {
                    found.push((path.join("."), category.to_string()));
                }
            }
        }
    }
}

fn is_name_field(parent: &[&str], key: &str, event_type: Option<&str>) -> bool {
    match parent {
        ["traits"] | ["context", "traits"] => {
            event_type != Some("group") && detect::NAME_TRAIT_KEYS.contains(&key)
        }
        ["properties"] => key != "name" && detect::NAME_TRAIT_KEYS.contains(&key),
        _ => false,
    }
}

/// The value detectors in order: email, ip, card, national id, phone.
fn classify_value(text: &str, phone_key: bool) -> Option<&'static str> {
    if detect::is_email(text) {
        Some(EMAIL)
    } else if detect::ip_address(text).is_some() {
        Some(IP)
    } else if detect::is_card(text) {
        Some(CARD)
    } else if detect::national_id(text).is_some() {
        Some(NATIONAL_ID)
    } else if detect::is_phone(text, phone_key) {
        Some(PHONE)
    } else {
        None
    }
}

/// What a policy does with the values of one category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Hash,
    Mask,
    Drop,
}

impl Action {
    pub const NAMES: &'static [&'static str] = &["allow", "hash", "mask", "drop"];

    pub fn parse(name: &str) -> Option<Action> {
        match name {
            "allow" => Some(Action::Allow),
            "hash" => Some(Action::Hash),
            "mask" => Some(Action::Mask),
            "drop" => Some(Action::Drop),
            _ => None,
        }
    }
}

/// A connection's policy: an action per category, and one for the categories it does not name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    actions: BTreeMap<String, Action>,
    default: Action,
}

impl Policy {
    /// Everything allowed (a connection without `pii`).
    pub fn allow_all() -> Policy {
        Policy {
            actions: BTreeMap::new(),
            default: Action::Allow,
        }
    }

    /// Every category masked (what a reader without the `ReadPii` permission sees).
    pub fn mask_all() -> Policy {
        Policy {
            actions: BTreeMap::new(),
            default: Action::Mask,
        }
    }

    /// Parses `{category = action, default = action}`; every problem as (key, message).
    pub fn parse(table: &BTreeMap<String, String>) -> Result<Policy, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut policy = Policy::allow_all();
        for (key, name) in table {
            let Some(action) = Action::parse(name) else {
                problems.push((
                    key.clone(),
                    format!(
                        "unknown action `{name}`: one of {}",
                        Action::NAMES.join(", ")
                    ),
                ));
                continue;
            };
            if key == DEFAULT_KEY {
                policy.default = action;
            } else if key == NONE {
                problems.push((
                    key.clone(),
                    "`none` marks fields that are not personal data: it has no action".into(),
                ));
            } else if let Err(message) = check_category(key) {
                problems.push((key.clone(), message));
            } else {
                policy.actions.insert(key.clone(), action);
            }
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    pub fn action(&self, category: &str) -> Action {
        self.actions.get(category).copied().unwrap_or(self.default)
    }

    /// Whether the policy changes nothing (then events need not even be parsed).
    pub fn allows_all(&self) -> bool {
        self.default == Action::Allow && self.actions.values().all(|a| *a == Action::Allow)
    }

    /// The categories the policy names (for checking them against the workspace's).
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }
}

/// A workspace's hashing salt. Its `Debug` hides it: it must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt(String);

impl Salt {
    pub fn new(secret: String) -> Salt {
        Salt(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt(…)")
    }
}

/// Lowercase hex SHA-256 of the salt's bytes followed by the value's.
pub fn hash(salt: &Salt, value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.0.as_bytes());
    hasher.update(value.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The text a scalar is hashed or masked as: a string's own text, another scalar's JSON.
fn scalar_text(leaf: &Value) -> String {
    match leaf {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The masked form of a value of `category` (null stays null: it holds nothing):
/// * email: the local part's first character, `***@`, the domain (`j***@example.com`);
/// * phone: `+` when given, the first two and last two digits, a `*` per digit between
///   (`+33*******89` for `+33612345689`);
/// * card: a `*` per digit but the last four (`************1111`);
/// * ip: the last IPv4 octet, or the last 80 bits of an IPv6 address, zeroed ([`anonymize_ip`]);
/// * name: each word's first character and `***` (`J*** D***`);
/// * national_id: separators kept, every letter or digit but the last four a `*` (`***-**-6789`);
/// * any other category, or a value too short to keep a hint of: its first character and `***`
///   (`***` when shorter than four characters).
pub fn mask(category: &str, leaf: &Value) -> Value {
    if leaf.is_null() {
        return Value::Null;
    }
    let text = scalar_text(leaf);
    let shaped = match category {
        EMAIL => mask_email(&text),
        PHONE => mask_phone(&text),
        CARD => mask_card(&text),
        IP => detect::ip_address(&text).map(|ip| anonymize_ip(ip).to_string()),
        NAME => Some(
            text.split_whitespace()
                .map(|word| format!("{}{MASKED}", word.chars().next().unwrap_or('*')))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        NATIONAL_ID => mask_keeping_last(&text, 4, 8),
        _ => None,
    };
    Value::String(shaped.unwrap_or_else(|| mask_generic(&text)))
}

fn mask_generic(text: &str) -> String {
    match text.chars().next() {
        Some(first) if text.chars().count() >= 4 => format!("{first}{MASKED}"),
        _ => MASKED.to_string(),
    }
}

fn mask_email(text: &str) -> Option<String> {
    let (local, domain) = text.rsplit_once('@')?;
    let first = local.chars().next()?;
    Some(format!("{first}{MASKED}@{domain}"))
}

fn mask_phone(text: &str) -> Option<String> {
    let digits: Vec<char> = text.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return None;
    }
    let plus = if text.trim_start().starts_with('+') {
        "+"
    } else {
        ""
    };
    let head: String = digits[..2].iter().collect();
    let tail: String = digits[digits.len() - 2..].iter().collect();
    Some(format!(
        "{plus}{head}{}{tail}",
        "*".repeat(digits.len() - 4)
    ))
}

fn mask_card(text: &str) -> Option<String> {
    let digits: Vec<char> = text.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 8 {
        return None;
    }
    let tail: String = digits[digits.len() - 4..].iter().collect();
    Some(format!("{}{tail}", "*".repeat(digits.len() - 4)))
}

/// Every letter or digit but the last `keep` becomes `*`, other characters stay; `None` when
/// the value has fewer than `min` letters and digits.
fn mask_keeping_last(text: &str, keep: usize, min: usize) -> Option<String> {
    let total = text.chars().filter(|c| c.is_alphanumeric()).count();
    if total < min {
        return None;
    }
    let mut seen = 0;
    Some(
        text.chars()
            .map(|c| {
                if c.is_alphanumeric() {
                    seen += 1;
                    if seen <= total - keep {
                        return '*';
                    }
                }
                c
            })
            .collect(),
    )
}

/// An address with its host part zeroed: the last octet of IPv4 (`/24`), the last 80 bits of
/// IPv6 (`/48`); an IPv4-mapped IPv6 address is anonymized as the IPv4 address it maps.
pub fn anonymize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => anonymize_ip(IpAddr::V4(v4)),
            None => {
                let bits = u128::from(v6) & !((1u128 << 80) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// What every connection and reader of one workspace shares: its classification, its salt and
/// whether collect anonymizes IP addresses.
#[derive(Clone, Debug)]
pub struct WorkspacePii {
    pub classifier: Classifier,
    pub salt: Salt,
    pub anonymize_ip: bool,
}

impl WorkspacePii {
    /// Applies `policy` to `event` with this workspace's classification and salt.
    pub fn apply(&self, event: &mut Value, policy: &Policy) -> Applied {
        apply(event, &self.classifier, policy, &self.salt)
    }
}

/// What one application of a policy changed, for counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub hashed: usize,
    pub masked: usize,
    pub dropped: usize,
}

impl Applied {
    pub fn changed(&self) -> usize {
        self.hashed + self.masked + self.dropped
    }
}

/// Applies `policy` to every classified leaf of `event` in place.
pub fn apply(event: &mut Value, classifier: &Classifier, policy: &Policy, salt: &Salt) -> Applied {
    let mut applied = Applied::default();
    if policy.allows_all() {
        return applied;
    }
    let event_type = event
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string);
    let walker = Walker {
        classifier,
        policy,
        salt,
        event_type: event_type.as_deref(),
    };
    if let Value::Object(members) = event {
        let mut path = Vec::new();
        members.retain(|key, value| {
            if EXEMPT_MEMBERS.contains(&key.as_str()) {
                return true;
            }
            path.push(key.clone());
            let keep = walker.visit(value, &mut path, 1, &mut applied);
            path.pop();
            keep
        });
    }
    applied
}

/// Applies `policy` to `value` as if it sat at `base` in an event (a profile's trait at
/// `["traits", name]`).
pub fn apply_at(
    value: &mut Value,
    base: &[&str],
    classifier: &Classifier,
    policy: &Policy,
    salt: &Salt,
) -> Applied {
    let mut applied = Applied::default();
    if policy.allows_all() {
        return applied;
    }
    let walker = Walker {
        classifier,
        policy,
        salt,
        event_type: None,
    };
    let mut path: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    if !walker.visit(value, &mut path, 1, &mut applied) {
        *value = Value::Null;
    }
    applied
}

struct Walker<'a> {
    classifier: &'a Classifier,
    policy: &'a Policy,
    salt: &'a Salt,
    event_type: Option<&'a str>,
}

impl Walker<'_> {
    /// Applies the policy under `value`; `false` = remove `value` from its parent.
    fn visit(
        &self,
        value: &mut Value,
        path: &mut Vec<String>,
        depth: usize,
        applied: &mut Applied,
    ) -> bool {
        if depth > WALK_DEPTH_MAX && (value.is_object() || value.is_array()) {
            applied.dropped += 1;
            return false;
        }
        match value {
            Value::Object(members) => {
                members.retain(|key, child| {
                    path.push(key.clone());
                    let keep = self.visit(child, path, depth + 1, applied);
                    path.pop();
                    keep
                });
                true
            }
            Value::Array(items) => {
                items.retain_mut(|item| self.visit(item, path, depth + 1, applied));
                true
            }
            leaf => {
                let segments: Vec<&str> = path.iter().map(String::as_str).collect();
                let Some(category) = self.classifier.classify(&segments, leaf, self.event_type)
                else {
                    return true;
                };
                match self.policy.action(category) {
                    Action::Allow => true,
                    Action::Hash => {
                        if !leaf.is_null() {
                            *leaf = Value::String(hash(self.salt, &scalar_text(leaf)));
                            applied.hashed += 1;
                        }
                        true
                    }
                    Action::Mask => {
                        *leaf = mask(category, leaf);
                        applied.masked += 1;
                        true
                    }
                    Action::Drop => {
                        applied.dropped += 1;
                        false
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
