//! The unify stage of each workspace, run as a consumer of its log: reads batches from the
//! store's offset, applies them in one store transaction (state and offset together), makes the
//! store durable at least every `UNIFY_DURABLE_COMMIT_MS`, and publishes how far it got so an API
//! call that wrote a control record (a split) can wait for its outcome.

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_config::{ComputedTraitConfig, IdentityConfig};
use tandem_core::envelope::{EventEnvelope, EventType};
use tandem_core::limits::{UNIFY_BATCH_RECORDS_MAX, UNIFY_DURABLE_COMMIT_MS};
use tandem_log::{EventLog, ReadError};
use tandem_unify::computed::ComputedDef;
use tandem_unify::kv::KvRead;
use tandem_unify::{BatchStats, Engine, IdentityRules, RecordSource, UnifyStore};
use tokio::sync::watch;

/// Where a workspace's unify store lives.
pub fn store_path(data_dir: &Path, workspace_id: &str) -> PathBuf {
    data_dir.join("unify").join(format!("{workspace_id}.redb"))
}

/// Everything that decides what the unify state holds for a given log: the identity rules and
/// the computed traits of a workspace (from the config file, or set through the API).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnifyRules {
    pub identity: IdentityConfig,
    pub computed_traits: Vec<ComputedTraitConfig>,
}

impl UnifyRules {
    pub fn of(workspace: &tandem_config::WorkspaceConfig) -> UnifyRules {
        UnifyRules {
            identity: workspace.identity.clone(),
            computed_traits: workspace.computed_traits.clone(),
        }
    }

    /// Whether these are the defaults (a config file that declares no rules).
    pub fn is_default(&self) -> bool {
        *self == UnifyRules::default()
    }

    /// A digest: the store remembers the one it was built with.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(self).expect("rules serialize");
        format!(
            "{:016x}",
            tandem_core::envelope::dedup_key("unify-rules-v1", &text)
        )
    }

    /// Compiles the rules into an engine (without hidden counters).
    pub fn engine(&self) -> Result<Engine, String> {
        self.engine_with(Vec::new())
    }

    /// Compiles the rules into an engine that also keeps `hidden` counters (audiences' event
    /// conditions). Hidden counters are not part of the rules' fingerprint: adding one does not
    /// rebuild the profiles (its job counts it from history instead). tandem's own audience
    /// events are skipped: derived facts never feed identity resolution back.
    pub fn engine_with(&self, hidden: Vec<ComputedDef>) -> Result<Engine, String> {
        let rules = IdentityRules::from_config(&self.identity)?;
        let mut computed = self
            .computed_traits
            .iter()
            .map(ComputedDef::from_config)
            .collect::<Result<Vec<_>, _>>()?;
        computed.extend(hidden);
        let mut engine = Engine::with_computed(rules, computed);
        engine.skip_sources = vec![tandem_core::envelope::AUDIENCES_SOURCE_ID.to_string()];
        Ok(engine)
    }

    /// The names of the computed traits (audience conditions may use them).
    pub fn computed_trait_names(&self) -> Vec<String> {
        self.computed_traits
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }
}

fn rules_setting(workspace_id: &str) -> String {
    format!("unify_rules:{workspace_id}")
}

/// The rules a workspace runs with: its config file's when it declares any (the file is the
/// truth for what it declares), else those last set through the API, else the defaults.
pub fn effective_rules(
    store: &dyn tandem_store::MetadataStore,
    workspace: &tandem_config::WorkspaceConfig,
) -> anyhow::Result<UnifyRules> {
    let declared = UnifyRules::of(workspace);
    if !declared.is_default() {
        return Ok(declared);
    }
    Ok(match store.setting(&rules_setting(&workspace.id))? {
        Some(json) => serde_json::from_str(&json)?,
        None => declared,
    })
}

/// Stores rules set through the API (they apply at once, and after restarts).
pub fn save_rules(
    store: &dyn tandem_store::MetadataStore,
    workspace_id: &str,
    rules: &UnifyRules,
) -> Result<(), tandem_store::StoreError> {
    let json = serde_json::to_string(rules).expect("rules serialize");
    store.put_setting(&rules_setting(workspace_id), &json)
}

/// Most windowed computed traits moved forward per sweep transaction.
pub const WINDOW_SWEEP_BATCH: usize = 10_000;

/// The source id tandem's own control records carry.
pub const CONTROL_SOURCE_ID: &str = "tandem";

/// A rebuild in progress: profiles are being rebuilt from the log under new rules while the
/// previous state keeps answering.
#[derive(Clone, Debug, Serialize)]
pub struct RebuildProgress {
    pub applied: u64,
    pub target: u64,
    pub started_at_ms: i64,
}

/// One workspace's unify state and its progress.
pub struct Unify {
    path: PathBuf,
    current: RwLock<(Arc<UnifyStore>, Arc<Engine>, UnifyRules)>,
    /// The audiences' hidden counters the engine keeps besides the rules' computed traits.
    hidden: RwLock<Vec<ComputedDef>>,
    /// Rules waiting to be applied by a rebuild (set by the API, taken by the consumer).
    pending: Mutex<Option<UnifyRules>>,
    pub rebuild: RwLock<Option<RebuildProgress>>,
    /// The next offset to apply (everything before it is in the store).
    pub applied: watch::Sender<u64>,
    /// Callers waiting for the store to be rewritten with its live rows only (after an
    /// erasure), answered by the consumer between batches with the new file's size.
    vacuums: Mutex<Vec<tokio::sync::oneshot::Sender<Result<u64, String>>>>,
}

/// What opening did, for the start report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnifyOpen {
    /// The store matches the rules: resume at `next`.
    Resumed { next: u64 },
    /// The rules changed since the store was built: it was emptied and is being rebuilt from
    /// the start of the log.
    Rebuilding { previous_next: u64 },
}

fn store_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("unify store: {error}")
}

impl Unify {
    /// Opens the workspace's unify store. When its rules differ from those the store was built
    /// with, the store is rebuilt from the log (which holds every event), since profiles built
    /// under other rules would mix two answers.
    pub fn open(
        data_dir: &Path,
        workspace_id: &str,
        rules: UnifyRules,
    ) -> anyhow::Result<(Unify, UnifyOpen)> {
        let engine = rules
            .engine()
            .map_err(|error| anyhow::anyhow!("unify rules of workspace {workspace_id}: {error}"))?;
        let fingerprint = rules.fingerprint();
        let path = store_path(data_dir, workspace_id);
        let mut store = UnifyStore::open(&path).map_err(store_error)?;
        let mut next = store.next_offset().map_err(store_error)?;
        let stored = store.fingerprint().map_err(store_error)?;
        let mut opened = UnifyOpen::Resumed { next };
        if next > 0 && stored.as_deref() != Some(fingerprint.as_str()) {
            tracing::warn!(workspace = %workspace_id, "identity rules or computed traits changed: rebuilding profiles from the log");
            // The new state starts empty but takes the audience memberships and outbox over:
            // what was announced stays announced, and the rebuild's reconciliation announces
            // only real differences.
            let fresh = path.with_extension("redb.fresh");
            let _ = std::fs::remove_file(&fresh);
            {
                let new = UnifyStore::open(&fresh).map_err(store_error)?;
                new.write(true, |kv| {
                    store.read(|old| tandem_audiences::state::carry_over(old, kv))
                })
                .map_err(store_error)?;
            }
            drop(store);
            std::fs::rename(&fresh, &path)?;
            store = UnifyStore::open(&path).map_err(store_error)?;
            opened = UnifyOpen::Rebuilding {
                previous_next: next,
            };
            next = 0;
        }
        store.set_fingerprint(&fingerprint).map_err(store_error)?;
        Ok((
            Unify {
                path,
                current: RwLock::new((Arc::new(store), Arc::new(engine), rules)),
                hidden: RwLock::new(Vec::new()),
                pending: Mutex::new(None),
                rebuild: RwLock::new(None),
                applied: watch::channel(next).0,
                vacuums: Mutex::new(Vec::new()),
            },
            opened,
        ))
    }

    /// The state that answers reads now.
    pub fn store(&self) -> Arc<UnifyStore> {
        self.current.read().0.clone()
    }

    pub fn engine(&self) -> Arc<Engine> {
        self.current.read().1.clone()
    }

    pub fn rules(&self) -> UnifyRules {
        self.current.read().2.clone()
    }

    /// Makes the engine keep `hidden` counters (audiences' event conditions) from the next
    /// batch on; called by the unify task between batches.
    pub fn set_hidden_counters(&self, hidden: Vec<ComputedDef>) -> Result<(), String> {
        let mut current = self.current.write();
        let engine = current.2.engine_with(hidden.clone())?;
        current.1 = Arc::new(engine);
        *self.hidden.write() = hidden;
        Ok(())
    }

    /// Asks the consumer to rebuild the profiles under `rules` (online: the current state keeps
    /// answering until the new one has caught up, then they swap).
    pub fn request_rebuild(&self, rules: UnifyRules) -> Result<(), String> {
        rules.engine()?;
        *self.pending.lock() = Some(rules);
        Ok(())
    }

    /// Rewrites the store with its live rows only, so the bytes of erased rows leave the disk
    /// (redb reuses freed pages but never clears them). Done by the consumer between batches;
    /// resolves with the new file's size.
    pub async fn vacuum(&self) -> Result<u64, String> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.vacuums.lock().push(done);
        answer
            .await
            .unwrap_or_else(|_| Err("the unify consumer stopped".into()))
    }

    /// Copies the store into a side file, renames it over the store and swaps it in. Only the
    /// consumer calls this (no batch writes meanwhile).
    fn vacuum_now(&self) -> anyhow::Result<u64> {
        let side = self.path.with_extension("redb.vacuum");
        let _ = std::fs::remove_file(&side);
        let copy = self.store().copy_to(&side).map_err(store_error)?;
        std::fs::rename(&side, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.current.write().0 = Arc::new(copy);
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Resolves once the record at `offset` has been applied (or after `timeout`: false).
    pub async fn wait_applied(&self, offset: u64, timeout: Duration) -> bool {
        let mut receiver = self.applied.subscribe();
        tokio::time::timeout(timeout, receiver.wait_for(|next| *next > offset))
            .await
            .is_ok_and(|result| result.is_ok())
    }
}

/// Reads single records back from a log (for splits).
pub struct LogRecords(pub Arc<dyn EventLog>);

impl RecordSource for LogRecords {
    fn record(&self, offset: u64) -> Option<Vec<u8>> {
        let records = self.0.read(offset, 1).ok()?;
        records
            .into_iter()
            .next()
            .filter(|record| record.offset == offset)
            .map(|record| record.payload.to_vec())
    }
}

/// Encodes a control record (its JSON body) for the log.
pub fn control_record(body: &serde_json::Value, now_ms: i64) -> tandem_log::Record {
    let json = serde_json::to_vec(body).expect("JSON values serialize");
    let dedup_key =
        tandem_core::envelope::dedup_key(CONTROL_SOURCE_ID, &tandem_core::ids::random_secret(16));
    let payload = EventEnvelope {
        event_type: EventType::Control,
        dedup_key,
        event_time_ms: now_ms,
        source_id: CONTROL_SOURCE_ID,
        json: &json,
    }
    .encode();
    tandem_log::Record {
        timestamp_ms: now_ms,
        payload: payload.into(),
    }
}

/// Applies every record of `log` from its start under `rules` into a side store, reporting
/// progress; the caller swaps it in. Records appended meanwhile are caught up too.
async fn rebuild_online(
    unify: &Arc<Unify>,
    log: &Arc<dyn EventLog>,
    rules: UnifyRules,
) -> anyhow::Result<(Arc<UnifyStore>, Arc<Engine>, UnifyRules, u64)> {
    let hidden = unify.hidden.read().clone();
    let engine = Arc::new(
        rules
            .engine_with(hidden)
            .map_err(|error| anyhow::anyhow!(error))?,
    );
    let side = unify.path.with_extension("redb.rebuild");
    let _ = std::fs::remove_file(&side);
    let store = Arc::new(UnifyStore::open(&side).map_err(store_error)?);
    let mut next = log.stats().start_offset;
    *unify.rebuild.write() = Some(RebuildProgress {
        applied: 0,
        target: log.stats().end_offset,
        started_at_ms: tandem_core::time_util::now_ms(),
    });
    loop {
        let records = log.read(next, UNIFY_BATCH_RECORDS_MAX)?;
        let Some(last) = records.last().map(|record| record.offset) else {
            break;
        };
        let batch: Vec<(u64, Vec<u8>)> = records
            .into_iter()
            .map(|record| (record.offset, record.payload.to_vec()))
            .collect();
        let (work_store, work_engine, source) =
            (store.clone(), engine.clone(), LogRecords(log.clone()));
        tokio::task::spawn_blocking(move || {
            work_store.apply_batch(&work_engine, &source, &batch, false)
        })
        .await?
        .map_err(store_error)?;
        next = last + 1;
        if let Some(progress) = unify.rebuild.write().as_mut() {
            progress.applied = next;
            progress.target = log.stats().end_offset;
        }
    }
    store
        .set_fingerprint(&rules.fingerprint())
        .map_err(store_error)?;
    // The audience memberships and outbox go over to the new state (the reconciliation after
    // the swap announces only real differences). No batch runs meanwhile: this task is the
    // one that applies them.
    let current = unify.store();
    store
        .write(true, |kv| {
            current.read(|old| tandem_audiences::state::carry_over(old, kv))
        })
        .map_err(store_error)?;
    store.sync().map_err(store_error)?;
    std::fs::rename(&side, &unify.path)?;
    if let Some(dir) = unify.path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok((store, engine, rules, next))
}

/// How often, at most, the task looks whether a window edge is due (one read of the first
/// key of the expiry index): time-based audience exits come within about this long.
pub const EXPIRY_CHECK_MS: u64 = 1000;

/// Whether the oldest entry of the expiry index is due at `now_ms`.
fn window_edge_due(store: &UnifyStore, now_ms: i64) -> bool {
    store
        .read(|kv| {
            Ok(kv
                .scan(tandem_unify::kv::Table::Expiry, &[], None, false, 1)?
                .first()
                .is_some_and(|(key, _)| {
                    key.len() >= 8 && key[..8] <= tandem_unify::model::time_key(now_ms)[..]
                }))
        })
        .unwrap_or(false)
}

/// Runs the consumer of one workspace until the process ends: batches from the log, each with
/// its audience evaluation in the same transaction; between batches, definitions taken, job
/// steps and window sweeps (this task owns every write to the unify store).
pub async fn run(
    workspace_id: String,
    log: Arc<dyn EventLog>,
    unify: Arc<Unify>,
    audiences: Arc<crate::audiences::WorkspaceAudiences>,
) {
    use crate::audiences::task;
    // The counters of the audiences in force count from the first batch on, even while the
    // profiles are being rebuilt from the log (their job waits until that is done).
    if let Err(error) = unify.set_hidden_counters(audiences.set().counter_defs()) {
        tracing::error!(workspace = %workspace_id, %error, "audience counters refused");
    }
    let mut next = *unify.applied.borrow();
    let mut last_durable = Instant::now();
    let mut last_expiry_check = Instant::now();
    let mut dirty = false;
    let durable_every = Duration::from_millis(UNIFY_DURABLE_COMMIT_MS);
    let source = LogRecords(log.clone());
    loop {
        let pending = unify.pending.lock().take();
        if let Some(rules) = pending {
            tracing::info!(workspace = %workspace_id, "rebuilding profiles under new rules");
            match rebuild_online(&unify, &log, rules).await {
                Ok((store, engine, rules, rebuilt_next)) => {
                    *unify.current.write() = (store, engine, rules);
                    next = rebuilt_next;
                    unify.applied.send_replace(next);
                    audiences.cache.clear();
                    audiences.rebuilt("profiles rebuilt under new rules");
                    tracing::info!(workspace = %workspace_id, next, "profiles rebuilt");
                }
                Err(error) => {
                    tracing::error!(workspace = %workspace_id, %error, "rebuilding profiles failed; the previous state stays");
                }
            }
            *unify.rebuild.write() = None;
            continue;
        }
        let vacuums = std::mem::take(&mut *unify.vacuums.lock());
        if !vacuums.is_empty() {
            let work = unify.clone();
            let result = tokio::task::spawn_blocking(move || work.vacuum_now())
                .await
                .map_err(|error| error.to_string())
                .and_then(|result| result.map_err(|error| format!("{error:#}")));
            if let Err(error) = &result {
                tracing::error!(workspace = %workspace_id, %error, "rewriting the unify store failed");
            }
            for done in vacuums {
                let _ = done.send(result.clone());
            }
            continue;
        }
        let held = audiences.held_at(next);
        if !held {
            task::take_definitions(&workspace_id, &unify, &audiences).await;
        }
        let records = match log.read(next, UNIFY_BATCH_RECORDS_MAX) {
            Ok(records) => records,
            Err(ReadError::BelowStart { start, .. }) => {
                tracing::warn!(workspace = %workspace_id, skipped_to = start, "records expired by retention before unify applied them");
                next = start;
                continue;
            }
            Err(error) => {
                tracing::error!(workspace = %workspace_id, %error, "unify cannot read the log; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (store, engine) = (unify.store(), unify.engine());
        if last_expiry_check.elapsed() >= Duration::from_millis(EXPIRY_CHECK_MS)
            && !engine.computed.is_empty()
        {
            last_expiry_check = Instant::now();
            let (store, engine, audiences, source) = (
                store.clone(),
                engine.clone(),
                audiences.clone(),
                LogRecords(log.clone()),
            );
            let workspace = workspace_id.clone();
            let swept = tokio::task::spawn_blocking(move || {
                let now = tandem_core::time_util::now_ms();
                if !window_edge_due(&store, now) {
                    return Ok(0);
                }
                if held {
                    return store.expire_windows(&engine, now, WINDOW_SWEEP_BATCH);
                }
                let (moved, effects) =
                    task::sweep(&store, &engine, &audiences, &source, WINDOW_SWEEP_BATCH)?;
                task::publish(&workspace, &store, &audiences, &effects);
                Ok(moved)
            })
            .await;
            match swept {
                Ok(Ok(changed)) => {
                    metrics::counter!("tandem_unify_window_updates_total", "workspace" => workspace_id.clone())
                        .increment(changed as u64);
                    if changed == WINDOW_SWEEP_BATCH {
                        last_expiry_check -= Duration::from_millis(EXPIRY_CHECK_MS);
                    }
                }
                Ok(Err(error)) => {
                    tracing::error!(workspace = %workspace_id, %error, "moving computed-trait windows failed")
                }
                Err(error) => {
                    tracing::error!(workspace = %workspace_id, %error, "window sweep failed")
                }
            }
        }
        let Some(last) = records.last().map(|record| record.offset) else {
            if !held && audiences.engine.lock().busy() {
                run_job_step(&workspace_id, &store, &audiences, &source).await;
                continue;
            }
            if dirty {
                if let Ok(Err(error)) = tokio::task::spawn_blocking(move || store.sync()).await {
                    tracing::error!(workspace = %workspace_id, %error, "unify store sync failed");
                }
                dirty = false;
                last_durable = Instant::now();
            }
            tokio::select! {
                _ = log.wait_for(next) => {}
                _ = audiences.work.notified() => {}
                _ = tokio::time::sleep(durable_every) => {}
            }
            continue;
        };
        let durable = last_durable.elapsed() >= durable_every;
        let batch: Vec<(u64, Vec<u8>)> = records
            .into_iter()
            .map(|record| (record.offset, record.payload.to_vec()))
            .collect();
        let started = Instant::now();
        let (work_store, work_audiences, work_source, workspace) = (
            store.clone(),
            audiences.clone(),
            LogRecords(log.clone()),
            workspace_id.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            if held {
                let stats = work_store.apply_batch(&engine, &work_source, &batch, durable)?;
                return Ok((stats, durable));
            }
            let (stats, durable, effects) = task::apply_batch(
                &work_store,
                &engine,
                &work_audiences,
                &work_source,
                &batch,
                durable,
            )?;
            task::publish(&workspace, &work_store, &work_audiences, &effects);
            Ok((stats, durable))
        })
        .await;
        match result {
            Ok(Ok((stats, committed_durably))) => {
                record_metrics(&workspace_id, &stats, started.elapsed());
                next = last + 1;
                unify.applied.send_replace(next);
                if committed_durably {
                    last_durable = Instant::now();
                    dirty = false;
                } else {
                    dirty = true;
                }
                if held && !audiences.held_at(next) {
                    tracing::info!(workspace = %workspace_id, "profiles rebuilt from the log: reconciling audience memberships");
                    audiences.cache.clear();
                    audiences.rebuilt("profiles rebuilt from the log");
                } else if !held && audiences.engine.lock().busy() {
                    run_job_step(&workspace_id, &store, &audiences, &source).await;
                }
            }
            Ok(Err(error)) => {
                let error: tandem_unify::kv::KvError = error;
                tracing::error!(workspace = %workspace_id, %error, offset = next, "unify could not apply a batch; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                tracing::error!(workspace = %workspace_id, %error, "unify worker failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn run_job_step(
    workspace_id: &str,
    store: &Arc<UnifyStore>,
    audiences: &Arc<crate::audiences::WorkspaceAudiences>,
    source: &LogRecords,
) {
    let (store, audiences, source, workspace) = (
        store.clone(),
        audiences.clone(),
        LogRecords(source.0.clone()),
        workspace_id.to_string(),
    );
    let stepped = tokio::task::spawn_blocking(move || {
        let effects = crate::audiences::task::job_step(&store, &audiences, &source)?;
        if let Some(effects) = &effects {
            crate::audiences::task::publish(&workspace, &store, &audiences, effects);
        }
        Ok::<_, tandem_unify::kv::KvError>(effects.is_some_and(|e| e.job_finished))
    })
    .await;
    match stepped {
        Ok(Ok(true)) => {
            tracing::info!(workspace = %workspace_id, "audience memberships caught up (job done)")
        }
        Ok(Ok(false)) => {}
        Ok(Err(error)) => {
            tracing::error!(workspace = %workspace_id, %error, "audience job step failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(error) => {
            tracing::error!(workspace = %workspace_id, %error, "audience job step failed")
        }
    }
}

fn record_metrics(workspace_id: &str, stats: &BatchStats, took: Duration) {
    let label = [("workspace", workspace_id.to_string())];
    metrics::counter!("tandem_unify_records_total", &label).increment(stats.records);
    metrics::counter!("tandem_unify_profiles_created_total", &label).increment(stats.created);
    metrics::counter!("tandem_unify_merges_total", &label).increment(stats.merged);
    metrics::counter!("tandem_unify_merges_refused_total", &label).increment(stats.refused);
    metrics::counter!("tandem_unify_duplicates_total", &label).increment(stats.duplicates);
    metrics::counter!("tandem_unify_unattributed_total", &label).increment(stats.unattributed);
    metrics::counter!("tandem_unify_unreadable_total", &label).increment(stats.unreadable);
    metrics::counter!("tandem_unify_identifiers_ignored_total", &label)
        .increment(stats.ignored_identifiers);
    metrics::counter!("tandem_unify_splits_total", &label).increment(stats.splits);
    metrics::histogram!("tandem_unify_batch_seconds", &label).record(took.as_secs_f64());
}
