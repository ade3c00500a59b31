//! Computed traits: aggregates of a profile's events (count, sum, min, max, average, first, last,
//! most frequent, unique count), with property filters, over all time or a sliding window of
//! whole UTC days.
//!
//! State is kept per (profile, trait) as day buckets (one bucket for all-time traits), so an event
//! updates one bucket, two profiles merge by merging buckets, and a window's edge passing drops
//! whole buckets. The value shown is evaluated from the buckets inside the window at a given time.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use tandem_config::{ComputedTraitConfig, PropertyFilterConfig};
use tandem_core::envelope::EventType;
use tandem_core::limits::COMPUTED_DISTINCT_VALUES_MAX;

const DAY_MS: i64 = 86_400_000;
/// The bucket of an all-time trait.
const ALL_TIME: i64 = i64::MIN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Count,
    Sum,
    Min,
    Max,
    Average,
    First,
    Last,
    MostFrequent,
    UniqueCount,
}

impl Function {
    fn parse(name: &str) -> Option<Function> {
        Some(match name {
            "count" => Function::Count,
            "sum" => Function::Sum,
            "min" => Function::Min,
            "max" => Function::Max,
            "average" => Function::Average,
            "first" => Function::First,
            "last" => Function::Last,
            "most_frequent" => Function::MostFrequent,
            "unique_count" => Function::UniqueCount,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Contains,
    Exists,
}

#[derive(Clone, Debug, PartialEq)]
struct Filter {
    path: Vec<String>,
    op: Op,
    value: Value,
}

/// Which events another stage counts with a hidden counter (audiences): its own test, so the
/// comparison rules stay the owner's.
#[derive(Clone)]
pub struct EventPredicate(pub std::sync::Arc<dyn Fn(&Value) -> bool + Send + Sync>);

impl std::fmt::Debug for EventPredicate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EventPredicate")
    }
}

impl PartialEq for EventPredicate {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A computed trait, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct ComputedDef {
    pub name: String,
    pub function: Function,
    event_type: EventType,
    event: Option<String>,
    property: Option<Vec<String>>,
    filters: Vec<Filter>,
    pub window_days: Option<u32>,
    /// A hidden counter another stage reads (audience event conditions): kept, merged, expired
    /// like a computed trait, but not shown on the profile.
    pub hidden: bool,
    /// Only events at or after this time count.
    pub since_ms: Option<i64>,
    /// Replaces `event`/`filters` matching (after the event type check) when set.
    predicate: Option<EventPredicate>,
}

fn toml_to_json(value: &toml::Value) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn path(dotted: &str) -> Vec<String> {
    dotted.split('.').map(str::to_string).collect()
}

impl ComputedDef {
    /// Compiles a validated definition (`tandem_config::validate` checked it).
    pub fn from_config(config: &ComputedTraitConfig) -> Result<ComputedDef, String> {
        let function = Function::parse(&config.function)
            .ok_or_else(|| format!("unknown function `{}`", config.function))?;
        let event_type = match config.event_type.as_deref() {
            None => EventType::Track,
            Some(name) => EventType::parse(name).ok_or_else(|| format!("unknown type `{name}`"))?,
        };
        let filters = config
            .filters
            .iter()
            .map(|filter: &PropertyFilterConfig| {
                let op = match filter.op.as_str() {
                    "eq" => Op::Eq,
                    "ne" => Op::Ne,
                    "gt" => Op::Gt,
                    "gte" => Op::Gte,
                    "lt" => Op::Lt,
                    "lte" => Op::Lte,
                    "contains" => Op::Contains,
                    "exists" => Op::Exists,
                    other => return Err(format!("unknown op `{other}`")),
                };
                Ok(Filter {
                    path: path(&filter.property),
                    op,
                    value: filter
                        .value
                        .as_ref()
                        .map(toml_to_json)
                        .unwrap_or(Value::Null),
                })
            })
            .collect::<Result<_, String>>()?;
        if function != Function::Count && config.property.is_none() {
            return Err(format!("`{}` needs a property", config.function));
        }
        Ok(ComputedDef {
            name: config.name.clone(),
            function,
            event_type,
            event: config.event.clone(),
            property: config.property.as_deref().map(path),
            filters,
            window_days: config.window_days,
            hidden: false,
            since_ms: None,
            predicate: None,
        })
    }

    /// A hidden counter: counts the events of `event_type` (call type name) that `predicate`
    /// accepts, at or after `since_ms`, over the last `window_days` whole days (or all time).
    pub fn hidden_counter(
        name: &str,
        event_type: &str,
        predicate: EventPredicate,
        window_days: Option<u32>,
        since_ms: Option<i64>,
    ) -> Result<ComputedDef, String> {
        Ok(ComputedDef {
            name: name.to_string(),
            function: Function::Count,
            event_type: EventType::parse(event_type)
                .ok_or_else(|| format!("unknown type `{event_type}`"))?,
            event: None,
            property: None,
            filters: Vec::new(),
            window_days,
            hidden: true,
            since_ms,
            predicate: Some(predicate),
        })
    }

    /// Whether an event of `event_type` at `time_ms` counts toward this trait.
    pub fn counts(&self, event_type: EventType, event: &Value, time_ms: i64) -> bool {
        self.since_ms.is_none_or(|since| time_ms >= since) && self.matches(event_type, event)
    }

    fn payload<'a>(&self, event: &'a Value) -> Option<&'a Value> {
        match self.event_type {
            EventType::Identify | EventType::Group => event.get("traits"),
            _ => event.get("properties"),
        }
    }

    /// Whether an event counts toward this trait.
    pub fn matches(&self, event_type: EventType, event: &Value) -> bool {
        if event_type != self.event_type {
            return false;
        }
        if let Some(predicate) = &self.predicate {
            return (predicate.0)(event);
        }
        if let Some(wanted) = &self.event {
            let field = if event_type == EventType::Track {
                "event"
            } else {
                "name"
            };
            if event.get(field).and_then(Value::as_str) != Some(wanted.as_str()) {
                return false;
            }
        }
        let payload = self.payload(event);
        self.filters.iter().all(|filter| {
            let found = payload.and_then(|p| lookup(p, &filter.path));
            compare(found, &filter.op, &filter.value)
        })
    }

    fn bucket_of(&self, time_ms: i64) -> i64 {
        match self.window_days {
            Some(_) => time_ms.div_euclid(DAY_MS),
            None => ALL_TIME,
        }
    }

    /// The first day still inside the window at `now_ms`.
    fn first_day(&self, now_ms: i64) -> Option<i64> {
        self.window_days
            .map(|days| now_ms.div_euclid(DAY_MS) - days as i64 + 1)
    }
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.get(key))
}

fn compare(found: Option<&Value>, op: &Op, wanted: &Value) -> bool {
    let Some(found) = found else {
        return matches!(op, Op::Ne);
    };
    let numbers = found.as_f64().zip(wanted.as_f64());
    match op {
        Op::Exists => !found.is_null(),
        Op::Eq => numbers.map_or(found == wanted, |(a, b)| a == b),
        Op::Ne => numbers.map_or(found != wanted, |(a, b)| a != b),
        Op::Gt => numbers.is_some_and(|(a, b)| a > b),
        Op::Gte => numbers.is_some_and(|(a, b)| a >= b),
        Op::Lt => numbers.is_some_and(|(a, b)| a < b),
        Op::Lte => numbers.is_some_and(|(a, b)| a <= b),
        Op::Contains => match (found, wanted) {
            (Value::String(text), Value::String(part)) => text.contains(part.as_str()),
            (Value::Array(items), item) => items.contains(item),
            _ => false,
        },
    }
}

/// An occurrence kept for `first`/`last`: when, and the value as JSON text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Stamped {
    time_ms: i64,
    offset: u64,
    json: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Bucket {
    count: u64,
    /// Events whose property was numeric (sum, min, max, average use them).
    numeric: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    first: Option<Stamped>,
    last: Option<Stamped>,
    /// Value (JSON text) → occurrences, for most_frequent and unique_count.
    frequencies: BTreeMap<String, u64>,
    /// Distinct values seen beyond `COMPUTED_DISTINCT_VALUES_MAX` were not tracked.
    overflowed: bool,
}

impl Bucket {
    fn add(&mut self, function: Function, value: Option<&Value>, time_ms: i64, offset: u64) {
        self.count += 1;
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return;
        };
        if let Some(number) = value.as_f64() {
            self.numeric += 1;
            self.sum += number;
            self.min = Some(self.min.map_or(number, |m| m.min(number)));
            self.max = Some(self.max.map_or(number, |m| m.max(number)));
        }
        let stamped = || Stamped {
            time_ms,
            offset,
            json: value.to_string(),
        };
        match function {
            Function::First
                if self
                    .first
                    .as_ref()
                    .is_none_or(|f| (time_ms, offset) < (f.time_ms, f.offset)) =>
            {
                self.first = Some(stamped());
            }
            Function::Last
                if self
                    .last
                    .as_ref()
                    .is_none_or(|l| (time_ms, offset) > (l.time_ms, l.offset)) =>
            {
                self.last = Some(stamped());
            }
            Function::MostFrequent | Function::UniqueCount => {
                let key = value.to_string();
                if let Some(count) = self.frequencies.get_mut(&key) {
                    *count += 1;
                } else if self.frequencies.len() < COMPUTED_DISTINCT_VALUES_MAX {
                    self.frequencies.insert(key, 1);
                } else {
                    self.overflowed = true;
                }
            }
            _ => {}
        }
    }

    fn merge(&mut self, other: Bucket) {
        self.count += other.count;
        self.numeric += other.numeric;
        self.sum += other.sum;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(first) = other.first {
            if self
                .first
                .as_ref()
                .is_none_or(|f| (first.time_ms, first.offset) < (f.time_ms, f.offset))
            {
                self.first = Some(first);
            }
        }
        if let Some(last) = other.last {
            if self
                .last
                .as_ref()
                .is_none_or(|l| (last.time_ms, last.offset) > (l.time_ms, l.offset))
            {
                self.last = Some(last);
            }
        }
        for (key, count) in other.frequencies {
            if let Some(mine) = self.frequencies.get_mut(&key) {
                *mine += count;
            } else if self.frequencies.len() < COMPUTED_DISTINCT_VALUES_MAX {
                self.frequencies.insert(key, count);
            } else {
                self.overflowed = true;
            }
        }
        self.overflowed |= other.overflowed;
    }
}

/// The state of one computed trait of one profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputedState {
    buckets: BTreeMap<i64, Bucket>,
}

impl ComputedState {
    /// Counts an event (already known to match) at `time_ms`.
    pub fn add(&mut self, def: &ComputedDef, event: &Value, time_ms: i64, offset: u64) {
        let value = def
            .property
            .as_ref()
            .and_then(|path| def.payload(event).and_then(|p| lookup(p, path)));
        self.buckets.entry(def.bucket_of(time_ms)).or_default().add(
            def.function,
            value,
            time_ms,
            offset,
        );
    }

    /// Folds another profile's state into this one (a merge).
    pub fn merge(&mut self, other: ComputedState) {
        for (day, bucket) in other.buckets {
            self.buckets.entry(day).or_default().merge(bucket);
        }
    }

    /// Drops buckets that left the window at `now_ms`; true when any did.
    pub fn expire(&mut self, def: &ComputedDef, now_ms: i64) -> bool {
        let Some(first_day) = def.first_day(now_ms) else {
            return false;
        };
        let before = self.buckets.len();
        self.buckets.retain(|day, _| *day >= first_day);
        self.buckets.len() != before
    }

    /// The day the oldest bucket leaves the window (ms), for windowed traits.
    pub fn next_expiry_ms(&self, def: &ComputedDef) -> Option<i64> {
        let days = def.window_days? as i64;
        let oldest = *self.buckets.keys().next()?;
        Some((oldest + days) * DAY_MS)
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The trait's value at `now_ms` (null when no event counts).
    pub fn value(&self, def: &ComputedDef, now_ms: i64) -> Value {
        let first_day = def.first_day(now_ms).unwrap_or(ALL_TIME);
        let mut total = Bucket::default();
        for (_, bucket) in self.buckets.range(first_day..) {
            total.merge(bucket.clone());
        }
        let number = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
        let parse = |s: &Stamped| serde_json::from_str(&s.json).unwrap_or(Value::Null);
        match def.function {
            Function::Count => Value::from(total.count),
            Function::Sum => number(total.sum),
            Function::Min => total.min.map_or(Value::Null, number),
            Function::Max => total.max.map_or(Value::Null, number),
            Function::Average if total.numeric > 0 => number(total.sum / total.numeric as f64),
            Function::Average => Value::Null,
            Function::First => total.first.as_ref().map_or(Value::Null, parse),
            Function::Last => total.last.as_ref().map_or(Value::Null, parse),
            Function::MostFrequent => total
                .frequencies
                .iter()
                // Highest count; on a tie, the smallest value, so the answer is deterministic.
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map_or(Value::Null, |(json, _)| {
                    serde_json::from_str(json).unwrap_or(Value::Null)
                }),
            Function::UniqueCount => Value::from(total.frequencies.len() as u64),
        }
    }

    /// Distinct values were dropped for lack of room: `unique_count` is a lower bound.
    pub fn overflowed(&self) -> bool {
        self.buckets.values().any(|b| b.overflowed)
    }

    pub fn distinct_days(&self) -> BTreeSet<i64> {
        self.buckets.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(toml_text: &str) -> ComputedDef {
        let config: ComputedTraitConfig = toml::from_str(toml_text).unwrap();
        ComputedDef::from_config(&config).unwrap()
    }

    fn run(def: &ComputedDef, events: &[(Value, i64)], now: i64) -> Value {
        let mut state = ComputedState::default();
        for (offset, (event, time)) in events.iter().enumerate() {
            if def.matches(EventType::Track, event) {
                state.add(def, event, *time, offset as u64);
            }
        }
        state.value(def, now)
    }

    fn order(revenue: f64, currency: &str, product: &str) -> Value {
        json!({"event": "Order Completed", "properties": {"revenue": revenue, "currency": currency, "product": {"sku": product}}})
    }

    #[test]
    fn every_function_over_all_time() {
        let events = [
            (order(10.0, "EUR", "a"), 1000),
            (order(30.0, "EUR", "b"), 3000),
            (order(20.0, "USD", "a"), 2000),
            (
                json!({"event": "Viewed", "properties": {"revenue": 99}}),
                4000,
            ),
        ];
        let base = "name = \"t\"\nevent = \"Order Completed\"\n";
        let value = |extra: &str| run(&def(&format!("{base}{extra}")), &events, 10_000);
        assert_eq!(value("function = \"count\""), json!(3));
        assert_eq!(
            value("function = \"sum\"\nproperty = \"revenue\""),
            json!(60.0)
        );
        assert_eq!(
            value("function = \"min\"\nproperty = \"revenue\""),
            json!(10.0)
        );
        assert_eq!(
            value("function = \"max\"\nproperty = \"revenue\""),
            json!(30.0)
        );
        assert_eq!(
            value("function = \"average\"\nproperty = \"revenue\""),
            json!(20.0)
        );
        assert_eq!(
            value("function = \"first\"\nproperty = \"product.sku\""),
            json!("a"),
            "by event time"
        );
        assert_eq!(
            value("function = \"last\"\nproperty = \"product.sku\""),
            json!("b")
        );
        assert_eq!(
            value("function = \"most_frequent\"\nproperty = \"product.sku\""),
            json!("a")
        );
        assert_eq!(
            value("function = \"unique_count\"\nproperty = \"currency\""),
            json!(2)
        );
        let filtered = "function = \"sum\"\nproperty = \"revenue\"\n[[where]]\nproperty = \"currency\"\nop = \"eq\"\nvalue = \"EUR\"";
        assert_eq!(value(filtered), json!(40.0));
        let greater =
            "function = \"count\"\n[[where]]\nproperty = \"revenue\"\nop = \"gt\"\nvalue = 15";
        assert_eq!(value(greater), json!(2));
    }

    #[test]
    fn windows_slide_by_whole_days() {
        let day = DAY_MS;
        let d = def("name = \"t\"\nfunction = \"count\"\nwindow_days = 7");
        let events = [
            (order(1.0, "EUR", "a"), 0),
            (order(1.0, "EUR", "a"), 5 * day),
            (order(1.0, "EUR", "a"), 9 * day),
        ];
        assert_eq!(
            run(&d, &events, 9 * day),
            json!(2),
            "day 0 left the 7-day window on day 7"
        );
        assert_eq!(run(&d, &events, 11 * day + 1), json!(2));
        assert_eq!(run(&d, &events, 12 * day), json!(1));
        let mut state = ComputedState::default();
        for (offset, (event, time)) in events.iter().enumerate() {
            state.add(&d, event, *time, offset as u64);
        }
        assert_eq!(state.next_expiry_ms(&d), Some(7 * day));
        assert!(state.expire(&d, 9 * day));
        assert!(!state.expire(&d, 9 * day));
        assert_eq!(state.next_expiry_ms(&d), Some(12 * day));
    }

    #[test]
    fn merging_states_equals_counting_together() {
        let d = def(
            "name = \"t\"\nfunction = \"unique_count\"\nproperty = \"currency\"\nwindow_days = 30",
        );
        let (mut a, mut b, mut both) = (
            ComputedState::default(),
            ComputedState::default(),
            ComputedState::default(),
        );
        for (i, currency) in ["EUR", "USD", "EUR", "GBP"].iter().enumerate() {
            let event = order(1.0, currency, "x");
            let target = if i % 2 == 0 { &mut a } else { &mut b };
            target.add(&d, &event, i as i64 * DAY_MS, i as u64);
            both.add(&d, &event, i as i64 * DAY_MS, i as u64);
        }
        a.merge(b);
        assert_eq!(a, both);
        assert_eq!(a.value(&d, 5 * DAY_MS), json!(3));
    }

    #[test]
    fn distinct_values_are_bounded() {
        let d = def("name = \"t\"\nfunction = \"unique_count\"\nproperty = \"sku\"");
        let mut state = ComputedState::default();
        for i in 0..COMPUTED_DISTINCT_VALUES_MAX + 10 {
            state.add(&d, &json!({"properties": {"sku": i}}), 0, i as u64);
        }
        assert_eq!(state.value(&d, 0), json!(COMPUTED_DISTINCT_VALUES_MAX));
        assert!(state.overflowed());
    }

    #[test]
    fn filters_on_missing_properties() {
        let d = def(
            "name = \"t\"\nfunction = \"count\"\n[[where]]\nproperty = \"coupon\"\nop = \"exists\"",
        );
        assert!(!d.matches(EventType::Track, &json!({"properties": {}})));
        assert!(d.matches(EventType::Track, &json!({"properties": {"coupon": "X"}})));
        let d = def("name = \"t\"\nfunction = \"count\"\n[[where]]\nproperty = \"coupon\"\nop = \"ne\"\nvalue = \"X\"");
        assert!(d.matches(EventType::Track, &json!({"properties": {}})));
        assert!(
            !d.matches(EventType::Page, &json!({"properties": {}})),
            "wrong call type"
        );
    }
}
