//! The audiences of each workspace at run time: their definitions (the config file's, read-only
//! through the API, and the API's, kept in the activate store beside destinations so they are
//! versioned and go through change requests), the [`AudienceEngine`] the workspace's unify task
//! drives inside its store transactions, the drain that appends `Audience Entered`/`Exited` to
//! the log, previews, and the personalization cache the unify task keeps up to date.
//!
//! Life of an audience change (ARCHITECTURE.md has it whole): a change applied through
//! `changes::apply` calls [`WorkspaceAudiences::reload`], which compiles the new set and leaves
//! it pending; the unify task takes it between two batches, swaps unify's hidden counters,
//! and plans the job (`AudienceEngine::plan`) that brings the memberships up to date in steps
//! between batches.

pub mod drain;
pub mod preview;
pub mod task;

use crate::error::{ApiError, ApiResult};
use crate::personalize::PersonalizeCache;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tandem_activate::runtime::{Activation, ManagedBy};
use tandem_audiences::{AudienceEngine, AudienceSet, JobView};
use tandem_config::AudienceConfig;
use tandem_core::ErrorCode;

/// The activate store's kind for API-made audience definitions.
pub const AUDIENCE_KIND: &str = "audience";

/// A new set of definitions for the unify task to take.
#[derive(Clone)]
pub struct Pending {
    pub set: Arc<AudienceSet>,
    pub reason: String,
    /// Profiles were rebuilt: evaluate everything again and sweep memberships of vanished ones.
    pub rebuilt: bool,
}

/// What the API shows: the set in force and the job catching up with it.
#[derive(Clone)]
pub struct Published {
    pub set: Arc<AudienceSet>,
    pub definitions: Vec<(AudienceConfig, ManagedBy)>,
    pub job: Option<JobView>,
    /// Names of the counters whose every profile was counted from the start.
    pub complete_counters: Vec<String>,
    pub error: Option<String>,
}

pub struct WorkspaceAudiences {
    pub workspace_id: String,
    declared: Vec<AudienceConfig>,
    pub engine: Arc<Mutex<AudienceEngine>>,
    pending: Mutex<Option<Pending>>,
    pub published: RwLock<Published>,
    /// Woken when the outbox has entries (the drain appends them to the log).
    pub outbox: Arc<tokio::sync::Notify>,
    /// Woken when a job has steps to run.
    pub work: Arc<tokio::sync::Notify>,
    pub cache: Arc<PersonalizeCache>,
    pub previews: preview::Previews,
    /// Until the unify task reaches this offset, profiles are being rebuilt from zero: no
    /// evaluation (it would announce every intermediate state).
    hold_until: AtomicU64,
    /// Sets handed to the unify task, and the last one whose plan it published: while they
    /// differ, the API shows the definitions as `pending`.
    handed: AtomicU64,
    planned: AtomicU64,
}

impl WorkspaceAudiences {
    /// The workspace's audiences: the engine opened on the unify store with the current set,
    /// which the unify task plans when it starts.
    pub fn open(
        workspace: &tandem_config::WorkspaceConfig,
        activation: &Activation,
        store: &tandem_unify::UnifyStore,
        computed_traits: &[String],
        cache: Arc<PersonalizeCache>,
    ) -> anyhow::Result<WorkspaceAudiences> {
        let declared = workspace.audiences.clone();
        let definitions = all_definitions(&declared, activation)
            .map_err(|error| anyhow::anyhow!("audiences of {}: {}", workspace.id, error.message))?;
        let configs: Vec<AudienceConfig> = definitions.iter().map(|(c, _)| c.clone()).collect();
        let names: Vec<&str> = computed_traits.iter().map(String::as_str).collect();
        let set = Arc::new(
            AudienceSet::compile(&configs, &names)
                .map_err(|error| anyhow::anyhow!("audiences of {}: {error}", workspace.id))?,
        );
        let engine = store
            .read(|kv| AudienceEngine::open(kv, set.clone()))
            .map_err(|error| anyhow::anyhow!("audiences of {}: {error}", workspace.id))?;
        let job = engine.job();
        Ok(WorkspaceAudiences {
            workspace_id: workspace.id.clone(),
            declared,
            engine: Arc::new(Mutex::new(engine)),
            pending: Mutex::new(Some(Pending {
                set: set.clone(),
                reason: "start".into(),
                rebuilt: false,
            })),
            published: RwLock::new(Published {
                set,
                definitions,
                job,
                complete_counters: Vec::new(),
                error: None,
            }),
            outbox: Arc::new(tokio::sync::Notify::new()),
            work: Arc::new(tokio::sync::Notify::new()),
            cache,
            previews: preview::Previews::default(),
            hold_until: AtomicU64::new(0),
            handed: AtomicU64::new(1),
            planned: AtomicU64::new(0),
        })
    }

    /// The definitions in force (file first, then API), with who manages each.
    pub fn definitions(&self) -> Vec<(AudienceConfig, ManagedBy)> {
        self.published.read().definitions.clone()
    }

    pub fn set(&self) -> Arc<AudienceSet> {
        self.published.read().set.clone()
    }

    /// Compiles the definitions as they are now (after a change) and hands them to the unify
    /// task. The change itself was validated against the same rules before it was stored.
    pub fn reload(
        &self,
        activation: &Activation,
        computed_traits: &[String],
        reason: &str,
    ) -> ApiResult<()> {
        let definitions = all_definitions(&self.declared, activation)?;
        let configs: Vec<AudienceConfig> = definitions.iter().map(|(c, _)| c.clone()).collect();
        let names: Vec<&str> = computed_traits.iter().map(String::as_str).collect();
        let set = Arc::new(
            AudienceSet::compile(&configs, &names)
                .map_err(|message| ApiError::new(ErrorCode::InvalidRequest, message))?,
        );
        {
            let mut published = self.published.write();
            published.set = set.clone();
            published.definitions = definitions;
        }
        self.hand_over(Pending {
            set,
            reason: reason.to_string(),
            rebuilt: false,
        });
        Ok(())
    }

    fn hand_over(&self, pending: Pending) {
        let mut slot = self.pending.lock();
        *slot = Some(pending);
        self.handed.fetch_add(1, Ordering::AcqRel);
        drop(slot);
        self.work.notify_one();
    }

    /// After profiles were rebuilt (under new identity rules): re-evaluate everything.
    pub fn rebuilt(&self, reason: &str) {
        self.hand_over(Pending {
            set: self.set(),
            reason: reason.to_string(),
            rebuilt: true,
        });
    }

    /// The set waiting for the unify task, with its hand-over number (for [`Self::planned`]).
    pub fn take_pending(&self) -> Option<(Pending, u64)> {
        let mut slot = self.pending.lock();
        let pending = slot.take()?;
        Some((pending, self.handed.load(Ordering::Acquire)))
    }

    /// A set whose planning failed goes back, unless a newer one is waiting.
    pub fn retry(&self, pending: Pending) {
        let mut slot = self.pending.lock();
        if slot.is_none() {
            *slot = Some(pending);
        }
    }

    /// The unify task published the plan of hand-over `handed`.
    pub fn planned(&self, handed: u64) {
        self.planned.fetch_max(handed, Ordering::AcqRel);
    }

    /// Definitions were changed and the unify task has not planned them yet (it does before its
    /// next batch; while profiles are rebuilt from the log, after that).
    pub fn is_pending(&self) -> bool {
        self.planned.load(Ordering::Acquire) < self.handed.load(Ordering::Acquire)
    }

    /// Holds evaluation until the unify task reaches `offset` (a rebuild from the log's start).
    pub fn hold_until(&self, offset: u64) {
        self.hold_until.store(offset, Ordering::Release);
    }

    pub fn held_at(&self, next: u64) -> bool {
        next < self.hold_until.load(Ordering::Acquire)
    }

    /// Publishes the engine's state for the API.
    pub fn publish(&self, engine: &AudienceEngine) {
        let mut published = self.published.write();
        published.job = engine.job();
        published.complete_counters = engine.complete_counters();
    }

    pub fn set_error(&self, error: Option<String>) {
        self.published.write().error = error;
    }
}

/// Every definition of a workspace: the file's, then the API's.
pub fn all_definitions(
    declared: &[AudienceConfig],
    activation: &Activation,
) -> ApiResult<Vec<(AudienceConfig, ManagedBy)>> {
    let mut all: Vec<(AudienceConfig, ManagedBy)> = declared
        .iter()
        .cloned()
        .map(|config| (config, ManagedBy::Config))
        .collect();
    for json in activation
        .dlq
        .definitions(AUDIENCE_KIND)
        .map_err(ApiError::internal)?
    {
        let config: AudienceConfig = serde_json::from_value(json).map_err(ApiError::internal)?;
        all.push((config, ManagedBy::Api));
    }
    Ok(all)
}

/// A new id for a preview job.
pub fn next_id(counter: &AtomicU64, prefix: &str) -> String {
    format!("{prefix}_{}", counter.fetch_add(1, Ordering::Relaxed) + 1)
}

/// The problems of `definitions` as a workspace's set (each audience alone, then references
/// and cycles), as `(field, message)`; `label` names each audience in the field
/// (`audience high-value`).
pub fn set_problems(
    definitions: &[AudienceConfig],
    computed_traits: &[String],
    label: &dyn Fn(&AudienceConfig) -> String,
) -> Vec<(String, String)> {
    let names: Vec<&str> = computed_traits.iter().map(String::as_str).collect();
    let mut problems = Vec::new();
    for config in definitions {
        for problem in tandem_config::audience_problems(config, &names) {
            problems.push((
                format!("{}.{}", label(config), problem.path),
                problem.message,
            ));
        }
    }
    for problem in tandem_config::audience_set_problems(
        definitions.iter().map(|config| (label(config), config)),
    ) {
        problems.push((problem.path, problem.message));
    }
    problems
}

/// Starts a preview of `candidate` as if it were saved beside the workspace's other audiences
/// (replacing the one with its id): 400 naming every problem of the definition.
pub fn start_preview(
    workspace: &crate::state::Workspace,
    candidate: AudienceConfig,
) -> ApiResult<Arc<preview::PreviewJob>> {
    let mut configs: Vec<AudienceConfig> = workspace
        .audiences
        .definitions()
        .into_iter()
        .map(|(config, _)| config)
        .filter(|config| config.id != candidate.id)
        .collect();
    configs.push(candidate.clone());
    let computed = workspace.unify.rules().computed_trait_names();
    let problems = set_problems(&configs, &computed, &|config| {
        if config.id == candidate.id {
            "definition".to_string()
        } else {
            format!("audience {}", config.id)
        }
    });
    if !problems.is_empty() {
        return Err(problems_error(problems));
    }
    let names: Vec<&str> = computed.iter().map(String::as_str).collect();
    let set = Arc::new(
        AudienceSet::compile(&configs, &names)
            .map_err(|message| ApiError::new(ErrorCode::InvalidRequest, message))?,
    );
    let index = set
        .index_of(&candidate.id)
        .expect("the candidate was compiled");
    let complete = workspace
        .audiences
        .published
        .read()
        .complete_counters
        .clone();
    let from_history: Vec<bool> = set
        .counters
        .iter()
        .map(|counter| !complete.contains(&counter.name))
        .collect();
    Ok(workspace.audiences.previews.start(
        workspace.unify.store(),
        Arc::new(crate::unify::LogRecords(workspace.log.clone())),
        set,
        index,
        from_history,
    ))
}

/// 400 `invalid_request` listing `problems` (`field`, `message`).
pub fn problems_error(problems: Vec<(String, String)>) -> ApiError {
    let message = problems
        .iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect::<Vec<_>>()
        .join("; ");
    let details: Vec<serde_json::Value> = problems
        .into_iter()
        .map(|(field, message)| serde_json::json!({"field": field, "message": message}))
        .collect();
    ApiError::new(ErrorCode::InvalidRequest, message)
        .with_details(serde_json::json!({ "problems": details }))
}

/// Waits for a preview up to `AUDIENCE_PREVIEW_WAIT_MS`.
pub async fn wait_preview(job: &preview::PreviewJob) -> bool {
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_millis(tandem_core::limits::AUDIENCE_PREVIEW_WAIT_MS);
    while !job.is_done() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    true
}

/// Creates or replaces an API-managed audience as an administrative change (no principal, no
/// approval): what the benchmark and tools use; versioned like every change.
pub async fn save_api_definition(
    state: &crate::state::AppState,
    workspace: &str,
    config: &AudienceConfig,
) -> ApiResult<()> {
    let operation = crate::changes::prepare(
        state,
        workspace,
        crate::changes::Kind::Audience,
        &config.id,
        Some(serde_json::to_value(config).map_err(ApiError::internal)?),
    )?;
    let provenance = tandem_activate::history::Provenance {
        by: "tandem".into(),
        change_request: None,
        at_ms: tandem_core::time_util::now_ms(),
    };
    crate::changes::apply(state, workspace, &[operation], &provenance).await?;
    Ok(())
}
