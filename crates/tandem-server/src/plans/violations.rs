//! Violation counters by plan, event, field (JSON pointer) and source, each with a few recent
//! samples, and per-plan totals by outcome. Kept in memory, counted in `/metrics`, and flushed to
//! the plan store every few seconds (as the catalog flushes source activity), so they survive a
//! restart; a crash loses at most the last interval's increments.

use super::store::{PlanStore, StoreError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use tandem_config::PlanMode;
use tandem_core::limits::{TRACKING_PLAN_VIOLATION_COUNTERS_MAX, TRACKING_PLAN_VIOLATION_SAMPLES};
use tandem_plans::Violation;

/// Separates the parts of a counter key (plan, event, field, source); never in a plan id.
pub const KEY_SEPARATOR: char = '\u{1f}';

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub message_id: String,
    pub message: String,
    pub at_ms: i64,
    /// What the plan did with the event (`allowed`, `flagged`, `quarantined`, `blocked`).
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ViolationCounter {
    pub plan: String,
    /// The track event's name, or `identify traits` / `group traits`.
    pub event: String,
    pub field: String,
    pub source: String,
    /// The schema keyword that failed most recently.
    pub rule: String,
    pub count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub samples: VecDeque<Sample>,
}

/// Events of one plan by what the plan did with them (only events with violations are counted).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PlanTotals {
    pub allowed: u64,
    pub flagged: u64,
    pub quarantined: u64,
    pub blocked: u64,
    /// Released from the quarantine into the log.
    #[serde(default)]
    pub released: u64,
    #[serde(default)]
    pub discarded: u64,
}

/// What a plan did with one violating event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Flagged,
    Quarantined,
    Blocked,
}

impl Outcome {
    pub fn of(mode: PlanMode) -> Outcome {
        match mode {
            PlanMode::Allow => Outcome::Allowed,
            PlanMode::Flag => Outcome::Flagged,
            PlanMode::Quarantine => Outcome::Quarantined,
            PlanMode::Block => Outcome::Blocked,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Flagged => "flagged",
            Outcome::Quarantined => "quarantined",
            Outcome::Blocked => "blocked",
        }
    }
}

#[derive(Default)]
struct Counters {
    by_key: HashMap<String, ViolationCounter>,
    totals: HashMap<String, PlanTotals>,
    dirty_keys: HashSet<String>,
    dirty_totals: HashSet<String>,
}

pub struct Violations {
    workspace: String,
    counters: Mutex<Counters>,
}

fn key(plan: &str, event: &str, field: &str, source: &str) -> String {
    format!("{plan}{KEY_SEPARATOR}{event}{KEY_SEPARATOR}{field}{KEY_SEPARATOR}{source}")
}

/// What one violating event was.
pub struct Occurrence<'a> {
    pub plan: &'a str,
    pub mode: PlanMode,
    pub source: &'a str,
    pub event: &'a str,
    pub message_id: &'a str,
    pub at_ms: i64,
}

impl Violations {
    pub fn load(workspace: &str, store: &PlanStore) -> Result<Violations, StoreError> {
        let (stored, totals) = store.counters()?;
        let by_key = stored
            .into_iter()
            .map(|counter| {
                (
                    key(
                        &counter.plan,
                        &counter.event,
                        &counter.field,
                        &counter.source,
                    ),
                    counter,
                )
            })
            .collect();
        Ok(Violations {
            workspace: workspace.to_string(),
            counters: Mutex::new(Counters {
                by_key,
                totals,
                ..Counters::default()
            }),
        })
    }

    /// Counts one event's violations (in memory and in `/metrics`).
    pub fn record(&self, occurrence: &Occurrence<'_>, violations: &[Violation]) {
        let outcome = Outcome::of(occurrence.mode);
        let labels = [
            ("workspace", self.workspace.clone()),
            ("source", occurrence.source.to_string()),
            ("event", occurrence.event.to_string()),
            ("mode", occurrence.mode.as_str().to_string()),
        ];
        metrics::counter!("tandem_tracking_plan_violations_total", &labels).increment(1);
        let labels = &labels[..3];
        match outcome {
            Outcome::Blocked => {
                metrics::counter!("tandem_tracking_plan_events_blocked_total", labels).increment(1)
            }
            Outcome::Quarantined => {
                metrics::counter!("tandem_tracking_plan_events_quarantined_total", labels)
                    .increment(1)
            }
            _ => {}
        }
        let mut counters = self.counters.lock();
        let totals = counters
            .totals
            .entry(occurrence.plan.to_string())
            .or_default();
        match outcome {
            Outcome::Allowed => totals.allowed += 1,
            Outcome::Flagged => totals.flagged += 1,
            Outcome::Quarantined => totals.quarantined += 1,
            Outcome::Blocked => totals.blocked += 1,
        }
        counters.dirty_totals.insert(occurrence.plan.to_string());
        for violation in violations {
            let key = key(
                occurrence.plan,
                occurrence.event,
                &violation.field,
                occurrence.source,
            );
            if !counters.by_key.contains_key(&key)
                && counters.by_key.len() >= TRACKING_PLAN_VIOLATION_COUNTERS_MAX
            {
                continue;
            }
            let counter = counters
                .by_key
                .entry(key.clone())
                .or_insert_with(|| ViolationCounter {
                    plan: occurrence.plan.to_string(),
                    event: occurrence.event.to_string(),
                    field: violation.field.clone(),
                    source: occurrence.source.to_string(),
                    rule: violation.rule.clone(),
                    count: 0,
                    first_seen_ms: occurrence.at_ms,
                    last_seen_ms: occurrence.at_ms,
                    samples: VecDeque::new(),
                });
            counter.count += 1;
            counter.rule.clone_from(&violation.rule);
            counter.last_seen_ms = occurrence.at_ms;
            if counter.samples.len() >= TRACKING_PLAN_VIOLATION_SAMPLES {
                counter.samples.pop_front();
            }
            counter.samples.push_back(Sample {
                message_id: occurrence.message_id.to_string(),
                message: violation.message.clone(),
                at_ms: occurrence.at_ms,
                outcome: outcome.as_str().to_string(),
            });
            counters.dirty_keys.insert(key);
        }
    }

    /// Counts quarantined events released or discarded.
    pub fn settled(&self, plan: &str, released: u64, discarded: u64) {
        let mut counters = self.counters.lock();
        let totals = counters.totals.entry(plan.to_string()).or_default();
        totals.released += released;
        totals.discarded += discarded;
        counters.dirty_totals.insert(plan.to_string());
    }

    /// The counters of `plan` (highest count first) and its totals.
    pub fn of_plan(&self, plan: &str) -> (Vec<ViolationCounter>, PlanTotals) {
        let counters = self.counters.lock();
        let mut found: Vec<ViolationCounter> = counters
            .by_key
            .values()
            .filter(|counter| counter.plan == plan)
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.event.cmp(&b.event))
                .then_with(|| a.field.cmp(&b.field))
        });
        (
            found,
            counters.totals.get(plan).cloned().unwrap_or_default(),
        )
    }

    pub fn totals(&self, plan: &str) -> PlanTotals {
        self.counters
            .lock()
            .totals
            .get(plan)
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets a deleted plan's counters (the store drops its rows in the same change).
    pub fn forget(&self, plan: &str) {
        let mut counters = self.counters.lock();
        counters.by_key.retain(|_, counter| counter.plan != plan);
        counters.totals.remove(plan);
        counters
            .dirty_keys
            .retain(|key| !key.starts_with(&format!("{plan}{KEY_SEPARATOR}")));
        counters.dirty_totals.remove(plan);
    }

    /// Writes what changed since the last flush to the store.
    pub fn flush(&self, store: &PlanStore) -> Result<(), StoreError> {
        let (changed, totals) = {
            let mut counters = self.counters.lock();
            let keys: Vec<String> = counters.dirty_keys.drain().collect();
            let changed: Vec<(String, ViolationCounter)> = keys
                .into_iter()
                .filter_map(|key| {
                    counters
                        .by_key
                        .get(&key)
                        .cloned()
                        .map(|counter| (key, counter))
                })
                .collect();
            let plans: Vec<String> = counters.dirty_totals.drain().collect();
            let totals: Vec<(String, PlanTotals)> = plans
                .into_iter()
                .filter_map(|plan| {
                    counters
                        .totals
                        .get(&plan)
                        .cloned()
                        .map(|totals| (plan, totals))
                })
                .collect();
            (changed, totals)
        };
        let result = store.put_counters(&changed, &totals);
        if result.is_err() {
            // Try again at the next flush.
            let mut counters = self.counters.lock();
            counters
                .dirty_keys
                .extend(changed.into_iter().map(|(key, _)| key));
            counters
                .dirty_totals
                .extend(totals.into_iter().map(|(plan, _)| plan));
        }
        result
    }
}
