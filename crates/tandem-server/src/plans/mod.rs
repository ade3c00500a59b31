//! Tracking plans of one workspace, as the collect path and the API use them.
//!
//! * `store.rs`: `DATA/plans/<workspace>.redb` — API-managed plans, settled quarantine entries,
//!   violation counters.
//! * `quarantine.rs`: the quarantine log (`DATA/quarantine/<workspace>/`) and its pending index.
//! * `violations.rs`: counters by plan, event, field and source with recent samples, flushed to
//!   the store.
//!
//! The plans in force are a [`PlanSet`] behind a lock, swapped whole on every change; each plan
//! in it was compiled once for its version (`tandem_plans::CompiledPlan`). Collect asks
//! [`WorkspacePlans::plan_for`] once per request: with no plan for the source, nothing else runs.

pub mod quarantine;
pub mod store;
pub mod violations;

use parking_lot::RwLock;
use quarantine::Quarantine;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use store::{PlanStore, StoredPlan};
use tandem_collect::Enriched;
use tandem_config::{PlanMode, TrackingPlanConfig};
use tandem_log::{FileLog, LogOptions};
use tandem_plans::{CompiledPlan, SchemaProblem, Violation};
use tandem_store::ManagedBy;
use violations::{Occurrence, Violations};

/// A plan as the API shows it.
pub struct PlanEntry {
    pub plan: Arc<CompiledPlan>,
    pub managed_by: ManagedBy,
    /// Who created and last changed it (API-managed plans).
    pub stored: Option<StoredPlan>,
}

/// The plans of a workspace, and which one governs each source.
#[derive(Default)]
pub struct PlanSet {
    by_source: HashMap<String, Arc<CompiledPlan>>,
    workspace_wide: Option<Arc<CompiledPlan>>,
    pub entries: Vec<PlanEntry>,
}

impl PlanSet {
    fn build(entries: Vec<PlanEntry>) -> PlanSet {
        let mut set = PlanSet::default();
        for entry in &entries {
            let plan = &entry.plan;
            if plan.config.draft {
                continue;
            }
            if plan.config.sources.is_empty() {
                set.workspace_wide = Some(plan.clone());
            }
            for source in &plan.config.sources {
                set.by_source.insert(source.clone(), plan.clone());
            }
        }
        set.entries = entries;
        set
    }

    pub fn get(&self, id: &str) -> Option<&PlanEntry> {
        self.entries.iter().find(|entry| entry.plan.id() == id)
    }
}

/// What the collect path does with one event.
pub enum Verdict {
    /// Into the log (possibly annotated with its violations); `Some` when a plan checked it.
    Store(Option<Checked>),
    /// Into the quarantine, with why.
    Hold(Arc<CompiledPlan>, Vec<Violation>),
    /// Dropped (counted).
    Drop(Checked),
}

/// The plan that checked an event and what it found (empty: the event passed). The live
/// debugger shows it; nothing is computed for it that enforcement did not already compute.
pub struct Checked {
    pub plan: Arc<CompiledPlan>,
    pub violations: Vec<Violation>,
}

impl Checked {
    /// `{plan, version, mode, outcome, violations}` for the live stream, `outcome` being what
    /// became of the event: passed, allowed, flagged, quarantined or blocked.
    pub fn live_view(&self) -> serde_json::Value {
        let outcome = if self.violations.is_empty() {
            "passed"
        } else {
            match self.plan.mode() {
                PlanMode::Allow => "allowed",
                PlanMode::Flag => "flagged",
                PlanMode::Quarantine => "quarantined",
                PlanMode::Block => "blocked",
            }
        };
        serde_json::json!({
            "plan": self.plan.id(), "version": self.plan.version, "mode": self.plan.mode().as_str(),
            "outcome": outcome, "violations": self.violations,
        })
    }
}

/// Why a plan change was refused.
#[derive(Debug)]
pub enum PlanError {
    NotFound(String),
    Conflict(String),
    /// Field problems (path, message).
    Invalid(Vec<(String, String)>),
    /// Schemas that do not compile.
    Schemas(Vec<SchemaProblem>),
    Internal(String),
}

impl From<store::StoreError> for PlanError {
    fn from(error: store::StoreError) -> Self {
        PlanError::Internal(error.to_string())
    }
}

pub struct WorkspacePlans {
    pub workspace: String,
    store: PlanStore,
    config_plans: Vec<TrackingPlanConfig>,
    set: RwLock<Arc<PlanSet>>,
    /// One plan change at a time (each rebuilds the set from the store).
    changes: parking_lot::Mutex<()>,
    pub violations: Violations,
    pub quarantine: Quarantine,
    /// The quarantine log, closed at shutdown.
    pub quarantine_log: Arc<FileLog>,
}

impl WorkspacePlans {
    /// Opens the workspace's plan store and quarantine; compiles the config file's plans (a bad
    /// schema there stops the start, naming the plan and event) and the API-managed ones.
    pub fn open(
        data_dir: &Path,
        workspace: &tandem_config::WorkspaceConfig,
        log_options: LogOptions,
    ) -> anyhow::Result<WorkspacePlans> {
        let store = PlanStore::open(
            &data_dir
                .join("plans")
                .join(format!("{}.redb", workspace.id)),
        )?;
        let settled = store.settled()?;
        let (quarantine_log, recovery) = FileLog::open(
            &data_dir.join("quarantine").join(&workspace.id),
            LogOptions {
                name: format!("quarantine.{}", workspace.id),
                // Held events wait for a person: never deleted by age or size.
                retention_age: None,
                retention_bytes_max: None,
                ..log_options
            },
        )?;
        if recovery.truncated_bytes > 0 {
            tracing::warn!(workspace = %workspace.id, bytes = recovery.truncated_bytes, "quarantine log tail truncated at recovery");
        }
        let quarantine = Quarantine::open(quarantine_log.clone(), &settled)?;
        let violations = Violations::load(&workspace.id, &store)?;
        let plans = WorkspacePlans {
            workspace: workspace.id.clone(),
            store,
            config_plans: workspace.tracking_plans.clone(),
            set: RwLock::new(Arc::new(PlanSet::default())),
            changes: parking_lot::Mutex::new(()),
            violations,
            quarantine,
            quarantine_log,
        };
        let entries = plans
            .load_entries(&HashMap::new())
            .map_err(|error| match error {
                PlanError::Schemas(problems) => anyhow::anyhow!(
                    "workspace {}: tracking plan schemas do not compile: {}",
                    workspace.id,
                    problems
                        .iter()
                        .map(|problem| format!("{}: {}", problem.schema, problem.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                other => anyhow::anyhow!("workspace {}: tracking plans: {other:?}", workspace.id),
            })?;
        *plans.set.write() = Arc::new(PlanSet::build(entries));
        Ok(plans)
    }

    /// Every plan, compiled: the config file's, then the store's. Plans whose (id, version) is in
    /// `compiled` are reused as they are, so a change compiles only the changed plan.
    fn load_entries(
        &self,
        compiled: &HashMap<(String, u64), Arc<CompiledPlan>>,
    ) -> Result<Vec<PlanEntry>, PlanError> {
        let compile =
            |config: &TrackingPlanConfig, version: u64| -> Result<Arc<CompiledPlan>, PlanError> {
                if let Some(plan) = compiled.get(&(config.id.clone(), version)) {
                    return Ok(plan.clone());
                }
                CompiledPlan::compile(config.clone(), version)
                    .map(Arc::new)
                    .map_err(PlanError::Schemas)
            };
        let mut entries = Vec::new();
        for config in &self.config_plans {
            entries.push(PlanEntry {
                plan: compile(config, 1)?,
                managed_by: ManagedBy::Config,
                stored: None,
            });
        }
        for stored in self.store.plans()? {
            if entries
                .iter()
                .any(|entry| entry.plan.id() == stored.config.id)
            {
                tracing::warn!(workspace = %self.workspace, plan = %stored.config.id, "an API-managed plan has the id of a config file plan: the file's wins");
                continue;
            }
            match compile(&stored.config, stored.version) {
                Ok(plan) => entries.push(PlanEntry {
                    plan,
                    managed_by: ManagedBy::Api,
                    stored: Some(stored),
                }),
                Err(error) => {
                    tracing::error!(workspace = %self.workspace, plan = %stored.config.id, ?error, "a stored tracking plan does not compile; it is not enforced")
                }
            }
        }
        Ok(entries)
    }

    pub fn set(&self) -> Arc<PlanSet> {
        self.set.read().clone()
    }

    /// The enforced plan governing `source`, if any.
    pub fn plan_for(&self, source: &str) -> Option<Arc<CompiledPlan>> {
        let set = self.set.read();
        set.by_source
            .get(source)
            .or(set.workspace_wide.as_ref())
            .cloned()
    }

    /// Checks one event against `plan`, counts its violations, and says what becomes of it. In
    /// `flag` mode the event's JSON gets `context.violations`.
    pub fn enforce(
        &self,
        plan: &Arc<CompiledPlan>,
        source: &str,
        enriched: &mut Enriched,
        now_ms: i64,
    ) -> Verdict {
        if !plan.governs(enriched.event_type) {
            return Verdict::Store(None);
        }
        let Ok(mut event) = serde_json::from_slice::<Value>(&enriched.json) else {
            return Verdict::Store(None);
        };
        let violations = plan.check(enriched.event_type, &event);
        if violations.is_empty() {
            return Verdict::Store(Some(Checked {
                plan: plan.clone(),
                violations,
            }));
        }
        if plan.mode() == PlanMode::Quarantine && self.quarantine.holds_key(enriched.dedup_key) {
            // A retry of an event already held: held (and acknowledged) again, not counted again.
            return Verdict::Hold(plan.clone(), violations);
        }
        let label = match enriched.event_type {
            tandem_core::EventType::Track => event
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            other => quarantine::event_label(other, ""),
        };
        self.violations.record(
            &Occurrence {
                plan: plan.id(),
                mode: plan.mode(),
                source,
                event: &label,
                message_id: &enriched.message_id,
                at_ms: now_ms,
            },
            &violations,
        );
        let checked = Checked {
            plan: plan.clone(),
            violations,
        };
        match plan.mode() {
            PlanMode::Allow => Verdict::Store(Some(checked)),
            PlanMode::Flag => {
                annotate(&mut event, &checked.violations);
                if let Ok(json) = serde_json::to_vec(&event) {
                    enriched.json = json;
                }
                Verdict::Store(Some(checked))
            }
            PlanMode::Quarantine => Verdict::Hold(checked.plan, checked.violations),
            PlanMode::Block => Verdict::Drop(checked),
        }
    }

    /// Whether `config` may be stored as it is: its own problems, a create of an existing plan
    /// or an update of a missing or config-file one, the per-workspace limit, and overlaps with
    /// the other enforced plans (`others_after`: the plans there would be besides it, default
    /// the live ones). Returns the stored plan it replaces.
    pub fn check(
        &self,
        config: &TrackingPlanConfig,
        source_ids: &[&str],
        create: bool,
        others_after: Option<&[TrackingPlanConfig]>,
    ) -> Result<Option<StoredPlan>, PlanError> {
        let problems: Vec<(String, String)> =
            tandem_config::tracking_plan_problems(config, source_ids)
                .into_iter()
                .map(|problem| (problem.path, problem.message))
                .collect();
        if !problems.is_empty() {
            return Err(PlanError::Invalid(problems));
        }
        let current = self.set();
        let previous = match (current.get(&config.id), create) {
            (Some(_), true) => {
                return Err(PlanError::Conflict(format!(
                    "tracking plan {} already exists",
                    config.id
                )))
            }
            (None, false) => {
                return Err(PlanError::NotFound(format!(
                    "tracking plan {}/{}",
                    self.workspace, config.id
                )))
            }
            (Some(entry), false) if entry.managed_by == ManagedBy::Config => {
                return Err(PlanError::Conflict(format!(
                    "tracking plan {} is declared in the config file; change it there",
                    config.id
                )))
            }
            (Some(entry), false) => entry.stored.clone(),
            (None, true) => None,
        };
        if current.entries.len() >= tandem_core::limits::TRACKING_PLANS_PER_WORKSPACE_MAX && create
        {
            return Err(PlanError::Invalid(vec![(
                String::new(),
                format!(
                    "at most {} tracking plans per workspace",
                    tandem_core::limits::TRACKING_PLANS_PER_WORKSPACE_MAX
                ),
            )]));
        }
        let live: Vec<TrackingPlanConfig>;
        let others: &[TrackingPlanConfig] = match others_after {
            Some(others) => others,
            None => {
                live = current
                    .entries
                    .iter()
                    .map(|entry| entry.plan.config.clone())
                    .collect();
                &live
            }
        };
        let overlaps = tandem_config::plan_overlaps(
            others
                .iter()
                .filter(|other| other.id != config.id)
                .map(|other| (format!("plan {}", other.id), other))
                .chain([("this plan".to_string(), config)]),
        );
        if let Some(problem) = overlaps
            .into_iter()
            .find(|problem| problem.path.starts_with("this plan"))
        {
            return Err(PlanError::Conflict(problem.message));
        }
        CompiledPlan::compile(config.clone(), 0).map_err(PlanError::Schemas)?;
        Ok(previous)
    }

    /// Adds an API-managed plan (`version` 1), or replaces one (`version` + 1), after
    /// [`Self::check`]. The plan is compiled here, once.
    pub fn put(
        &self,
        config: TrackingPlanConfig,
        source_ids: &[&str],
        by: &str,
        create: bool,
    ) -> Result<Arc<CompiledPlan>, PlanError> {
        let _change = self.changes.lock();
        let previous = self.check(&config, source_ids, create, None)?;
        let version = previous.as_ref().map_or(1, |stored| stored.version + 1);
        let plan =
            Arc::new(CompiledPlan::compile(config.clone(), version).map_err(PlanError::Schemas)?);
        let now = tandem_core::time_util::now_ms();
        let stored = StoredPlan {
            config,
            version,
            created_at_ms: previous.as_ref().map_or(now, |stored| stored.created_at_ms),
            created_by: previous
                .as_ref()
                .map_or_else(|| by.to_string(), |stored| stored.created_by.clone()),
            updated_at_ms: now,
            updated_by: by.to_string(),
        };
        self.store.put_plan(&stored)?;
        self.reload(&self.set(), Some(plan.clone()))?;
        Ok(plan)
    }

    /// Removes an API-managed plan (and its counters).
    pub fn delete(&self, id: &str) -> Result<Arc<CompiledPlan>, PlanError> {
        let _change = self.changes.lock();
        let current = self.set();
        let entry = current
            .get(id)
            .ok_or_else(|| PlanError::NotFound(format!("tracking plan {}/{id}", self.workspace)))?;
        if entry.managed_by == ManagedBy::Config {
            return Err(PlanError::Conflict(format!(
                "tracking plan {id} is declared in the config file; change it there"
            )));
        }
        let plan = entry.plan.clone();
        self.store.delete_plan(id)?;
        self.violations.forget(id);
        self.reload(&current, None)?;
        Ok(plan)
    }

    /// Rebuilds the set from the store, reusing every compiled plan whose version did not change.
    fn reload(&self, current: &PlanSet, fresh: Option<Arc<CompiledPlan>>) -> Result<(), PlanError> {
        let mut compiled: HashMap<(String, u64), Arc<CompiledPlan>> = current
            .entries
            .iter()
            .map(|entry| {
                (
                    (entry.plan.id().to_string(), entry.plan.version),
                    entry.plan.clone(),
                )
            })
            .collect();
        if let Some(plan) = fresh {
            compiled.insert((plan.id().to_string(), plan.version), plan);
        }
        let entries = self.load_entries(&compiled)?;
        *self.set.write() = Arc::new(PlanSet::build(entries));
        Ok(())
    }

    pub fn settle(&self, entries: &[(u64, store::Settled)]) -> Result<(), store::StoreError> {
        self.store.settle(entries)
    }

    pub fn settled_one(&self, id: u64) -> Result<Option<store::Settled>, store::StoreError> {
        self.store.settled_one(id)
    }

    /// Writes the violation counters to the store (background flush and shutdown).
    pub fn flush(&self) -> Result<(), store::StoreError> {
        self.violations.flush(&self.store)
    }
}

/// `context.violations: [{field, rule, message}]` on a flagged event.
pub fn annotate(event: &mut Value, violations: &[Violation]) {
    let Some(object) = event.as_object_mut() else {
        return;
    };
    let context = object
        .entry("context")
        .or_insert_with(|| Value::Object(Default::default()));
    if !context.is_object() {
        *context = Value::Object(Default::default());
    }
    if let Some(context) = context.as_object_mut() {
        context.insert(
            "violations".into(),
            serde_json::to_value(violations).unwrap_or_default(),
        );
    }
}
