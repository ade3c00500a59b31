//! Conditions, compiled: the tree of an audience definition with its comparisons resolved, and
//! the comparison rules shared by trait conditions, `where` filters on event properties and the
//! personalization rules.
//!
//! Comparisons are type-aware, led by the value in the definition:
//! * a **number** compares numerically with a number or a numeric string (`"42"`);
//! * a **string** that reads as a date (`2026-01-01`) or an RFC 3339 instant compares as a time
//!   with any found value that does too (ordering operators); otherwise strings compare as text
//!   (`eq` exactly, `contains` ignoring case, ordering operators lexicographically);
//! * a **boolean** equals a boolean or the strings `"true"`/`"false"`;
//! * `in` holds when the found value equals one of the list (or, for a list, shares one);
//! * `contains` looks for a substring in a string, or an equal element in a list;
//! * a missing (or null) value satisfies only `neq` — and `exists` never.

use serde_json::Value;
use tandem_config::{canonical_operator, since_ms};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Contains,
    Exists,
    In,
}

impl Op {
    /// A validated operator name (`tandem_config` checked it).
    pub fn parse(name: &str) -> Option<Op> {
        Some(match canonical_operator(name)? {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "contains" => Op::Contains,
            "exists" => Op::Exists,
            "in" => Op::In,
            _ => return None,
        })
    }
}

/// A comparison with its operand prepared once (a time parsed, a number read).
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub op: Op,
    pub value: Value,
    /// `value` as a time, when it reads as one (ordering operators compare times then).
    time_ms: Option<i64>,
}

impl Comparison {
    pub fn new(op: Op, value: Value) -> Comparison {
        let time_ms = value.as_str().and_then(time_of);
        Comparison { op, value, time_ms }
    }

    /// Whether `found` (absent: the trait or property is missing) satisfies the comparison.
    pub fn holds(&self, found: Option<&Value>) -> bool {
        let found = found.filter(|value| !value.is_null());
        let Some(found) = found else {
            return self.op == Op::Neq;
        };
        match self.op {
            Op::Exists => true,
            Op::Eq => equal(found, &self.value),
            Op::Neq => !equal(found, &self.value),
            Op::In => match (&self.value, found) {
                (Value::Array(wanted), Value::Array(items)) => items
                    .iter()
                    .any(|item| wanted.iter().any(|w| equal(item, w))),
                (Value::Array(wanted), found) => wanted.iter().any(|w| equal(found, w)),
                _ => false,
            },
            Op::Contains => match (found, &self.value) {
                (Value::Array(items), wanted) => items.iter().any(|item| equal(item, wanted)),
                (Value::String(text), Value::String(part)) => {
                    text.to_lowercase().contains(&part.to_lowercase())
                }
                (found, wanted) if !found.is_object() => match (found, wanted) {
                    (Value::Number(n), Value::String(part)) => {
                        n.to_string().contains(part.as_str())
                    }
                    _ => false,
                },
                _ => false,
            },
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => match self.order(found) {
                Some(ordering) => match self.op {
                    Op::Gt => ordering.is_gt(),
                    Op::Gte => ordering.is_ge(),
                    Op::Lt => ordering.is_lt(),
                    _ => ordering.is_le(),
                },
                None => false,
            },
        }
    }

    /// How `found` orders against the operand, when they are comparable.
    fn order(&self, found: &Value) -> Option<std::cmp::Ordering> {
        if let Some(wanted) = self.value.as_f64() {
            return number_of(found)?.partial_cmp(&wanted);
        }
        let wanted = self.value.as_str()?;
        if let Some(wanted_ms) = self.time_ms {
            if let Some(found_ms) = found.as_str().and_then(time_of) {
                return Some(found_ms.cmp(&wanted_ms));
            }
        }
        Some(found.as_str()?.cmp(wanted))
    }
}

/// A date (`2026-01-01`) or an RFC 3339 instant as ms since the epoch.
fn time_of(text: &str) -> Option<i64> {
    let looks_like_a_date = text.len() >= 10
        && text.as_bytes()[4] == b'-'
        && text.as_bytes()[7] == b'-'
        && text.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    looks_like_a_date.then(|| since_ms(text)).flatten()
}

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// Equality led by the operand's type.
fn equal(found: &Value, wanted: &Value) -> bool {
    match wanted {
        Value::Number(number) => number_of(found)
            .zip(number.as_f64())
            .is_some_and(|(a, b)| a == b),
        Value::Bool(flag) => match found {
            Value::Bool(found) => found == flag,
            Value::String(text) => text.eq_ignore_ascii_case(if *flag { "true" } else { "false" }),
            _ => false,
        },
        Value::String(text) => match found {
            Value::String(found) => found == text,
            Value::Number(_) => number_of(wanted)
                .zip(number_of(found))
                .is_some_and(|(a, b)| a == b),
            Value::Bool(found) => text.eq_ignore_ascii_case(if *found { "true" } else { "false" }),
            _ => false,
        },
        other => found == other,
    }
}

/// `path` (dotted) inside `value`.
pub fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.get(key))
}

/// A dotted path split into its keys.
pub fn split_path(dotted: &str) -> Vec<String> {
    dotted.split('.').map(str::to_string).collect()
}

/// A compiled condition tree. Event conditions name their hidden counter by index into the
/// set's counters; audience conditions name an audience by index into the set's order.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// A profile trait (`path[0]` the trait's name, the rest inside its JSON value).
    Trait {
        path: Vec<String>,
        comparison: Comparison,
    },
    /// A computed trait's current value.
    Computed {
        name: String,
        comparison: Comparison,
    },
    /// The count of a hidden counter, at least (`at_most: false`) or at most `times`.
    Event {
        counter: usize,
        times: u64,
        at_most: bool,
    },
    Audience(usize),
}

/// What a condition asks of a profile; evaluation asks only for what it needs (an `all` stops
/// at its first false branch), so counters are read lazily.
pub trait Facts {
    fn trait_value(&mut self, path: &[String]) -> Option<Value>;
    fn computed_value(&mut self, name: &str) -> Option<Value>;
    fn counter(&mut self, counter: usize) -> u64;
    fn member_of(&mut self, audience: usize) -> bool;
}

impl Condition {
    pub fn holds(&self, facts: &mut dyn Facts) -> bool {
        match self {
            Condition::All(children) => children.iter().all(|child| child.holds(facts)),
            Condition::Any(children) => children.iter().any(|child| child.holds(facts)),
            Condition::Not(child) => !child.holds(facts),
            Condition::Trait { path, comparison } => {
                comparison.holds(facts.trait_value(path).as_ref())
            }
            Condition::Computed { name, comparison } => {
                comparison.holds(facts.computed_value(name).as_ref())
            }
            Condition::Event {
                counter,
                times,
                at_most,
            } => {
                let count = facts.counter(*counter);
                if *at_most {
                    count <= *times
                } else {
                    count >= *times
                }
            }
            Condition::Audience(index) => facts.member_of(*index),
        }
    }

    /// Calls `visit` on every node.
    pub fn visit(&self, visit: &mut dyn FnMut(&Condition)) {
        visit(self);
        match self {
            Condition::All(children) | Condition::Any(children) => {
                for child in children {
                    child.visit(visit);
                }
            }
            Condition::Not(child) => child.visit(visit),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holds(op: &str, value: Value, found: Option<Value>) -> bool {
        Comparison::new(Op::parse(op).unwrap(), value).holds(found.as_ref())
    }

    #[test]
    fn numbers_compare_numerically_with_numeric_strings() {
        assert!(holds("gt", json!(100), Some(json!(150.5))));
        assert!(holds("gt", json!(100), Some(json!("150"))));
        assert!(!holds("gt", json!(100), Some(json!("a lot"))));
        assert!(holds("eq", json!(3), Some(json!(3.0))));
        assert!(holds("lte", json!(3), Some(json!(3))));
        assert!(!holds("lt", json!(3), Some(json!(3))));
        assert!(holds("eq", json!("42"), Some(json!(42))));
    }

    #[test]
    fn dates_compare_as_times_and_text_as_text() {
        assert!(holds(
            "gt",
            json!("2026-01-01"),
            Some(json!("2026-01-01T00:00:01Z"))
        ));
        assert!(holds(
            "gt",
            json!("2026-01-01T12:00:00+02:00"),
            Some(json!("2026-01-01T11:00:00Z"))
        ));
        assert!(holds("gt", json!("b"), Some(json!("c"))));
        assert!(holds(
            "contains",
            json!("GMAIL"),
            Some(json!("ann@gmail.com"))
        ));
        assert!(
            !holds("eq", json!("Pro"), Some(json!("pro"))),
            "eq is exact"
        );
    }

    #[test]
    fn lists_booleans_and_missing_values() {
        assert!(holds(
            "in",
            json!(["pro", "enterprise"]),
            Some(json!("pro"))
        ));
        assert!(!holds("in", json!(["pro"]), Some(json!("free"))));
        assert!(holds("in", json!(["a", "b"]), Some(json!(["x", "b"]))));
        assert!(holds("contains", json!("vip"), Some(json!(["new", "vip"]))));
        assert!(holds("eq", json!(true), Some(json!("true"))));
        assert!(!holds("eq", json!(true), Some(json!(1))));
        assert!(
            holds("neq", json!("pro"), None),
            "a missing value is not equal"
        );
        assert!(holds("ne", json!("pro"), Some(json!(null))));
        assert!(!holds("exists", Value::Null, None));
        assert!(!holds("exists", Value::Null, Some(json!(null))));
        assert!(holds("exists", Value::Null, Some(json!(false))));
        assert!(!holds("gt", json!(1), None));
    }
}
