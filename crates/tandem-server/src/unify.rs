//! The unify stage of each workspace, run as a consumer of its log: reads batches from the
//! store's offset, applies them in one store transaction (state and offset together), makes the
//! store durable at least every `UNIFY_DURABLE_COMMIT_MS`, and publishes how far it got so an API
//! call that wrote a control record (a split) can wait for its outcome.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_core::envelope::{EventEnvelope, EventType};
use tandem_core::limits::{UNIFY_BATCH_RECORDS_MAX, UNIFY_DURABLE_COMMIT_MS};
use tandem_log::{EventLog, ReadError};
use tandem_unify::computed::ComputedDef;
use tandem_unify::{BatchStats, Engine, IdentityRules, RecordSource, UnifyStore};

/// Where a workspace's unify store lives.
pub fn store_path(data_dir: &Path, workspace_id: &str) -> std::path::PathBuf {
    data_dir.join("unify").join(format!("{workspace_id}.redb"))
}

/// A digest of everything that decides what the unify state holds for the same log.
pub fn rules_fingerprint(workspace: &tandem_config::WorkspaceConfig) -> String {
    let text = serde_json::to_string(&(&workspace.identity, &workspace.computed_traits))
        .expect("config serializes");
    format!(
        "{:016x}",
        tandem_core::envelope::dedup_key("unify-rules-v1", &text)
    )
}

/// How often windowed computed traits are moved forward.
pub const WINDOW_SWEEP_SECONDS: u64 = 60;
/// Most windowed computed traits moved forward per sweep transaction.
pub const WINDOW_SWEEP_BATCH: usize = 10_000;
use tokio::sync::watch;

/// The source id tandem's own control records carry.
pub const CONTROL_SOURCE_ID: &str = "tandem";

/// One workspace's unify state and its progress.
pub struct Unify {
    pub store: Arc<UnifyStore>,
    pub engine: Arc<Engine>,
    /// The next offset to apply (everything before it is in the store).
    pub applied: watch::Sender<u64>,
}

/// What a rebuild at open did, for the start report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnifyOpen {
    /// The store matches the workspace's rules: resume at `next`.
    Resumed { next: u64 },
    /// The identity rules or computed traits changed since the store was built: it was emptied
    /// and is being rebuilt from the start of the log.
    Rebuilding { previous_next: u64 },
}

impl Unify {
    /// Opens the workspace's unify store. When its rules differ from those the store was built
    /// with, the store is rebuilt from the log (which holds every event), since profiles built
    /// under other rules would mix two answers.
    pub fn open(
        data_dir: &Path,
        workspace: &tandem_config::WorkspaceConfig,
    ) -> anyhow::Result<(Unify, UnifyOpen)> {
        let rules = IdentityRules::from_config(&workspace.identity).map_err(|error| {
            anyhow::anyhow!("identity rules of workspace {}: {error}", workspace.id)
        })?;
        let computed = workspace
            .computed_traits
            .iter()
            .map(ComputedDef::from_config)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                anyhow::anyhow!("computed traits of workspace {}: {error}", workspace.id)
            })?;
        let fingerprint = rules_fingerprint(workspace);
        let path = store_path(data_dir, &workspace.id);
        let mut store = UnifyStore::open(&path)
            .map_err(|error| anyhow::anyhow!("opening {}: {error}", path.display()))?;
        let mut next = store
            .next_offset()
            .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
        let stored = store
            .fingerprint()
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let mut opened = UnifyOpen::Resumed { next };
        if next > 0 && stored.as_deref() != Some(fingerprint.as_str()) {
            tracing::warn!(workspace = %workspace.id, "identity rules or computed traits changed: rebuilding profiles from the log");
            drop(store);
            std::fs::remove_file(&path)?;
            store = UnifyStore::open(&path)
                .map_err(|error| anyhow::anyhow!("opening {}: {error}", path.display()))?;
            opened = UnifyOpen::Rebuilding {
                previous_next: next,
            };
            next = 0;
        }
        store
            .set_fingerprint(&fingerprint)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        Ok((
            Unify {
                store: Arc::new(store),
                engine: Arc::new(Engine::with_computed(rules, computed)),
                applied: watch::channel(next).0,
            },
            opened,
        ))
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

/// Runs the consumer of one workspace until the process ends.
pub async fn run(workspace_id: String, log: Arc<dyn EventLog>, unify: Arc<Unify>) {
    let mut next = *unify.applied.borrow();
    let mut last_durable = Instant::now();
    let mut last_sweep = Instant::now();
    let mut dirty = false;
    let durable_every = Duration::from_millis(UNIFY_DURABLE_COMMIT_MS);
    loop {
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
        if last_sweep.elapsed() >= Duration::from_secs(WINDOW_SWEEP_SECONDS)
            && !unify.engine.computed.is_empty()
        {
            last_sweep = Instant::now();
            let (store, engine) = (unify.store.clone(), unify.engine.clone());
            let now = tandem_core::time_util::now_ms();
            match tokio::task::spawn_blocking(move || {
                store.expire_windows(&engine, now, WINDOW_SWEEP_BATCH)
            })
            .await
            {
                Ok(Ok(changed)) => {
                    metrics::counter!("tandem_unify_window_updates_total", "workspace" => workspace_id.clone())
                        .increment(changed as u64);
                    if changed == WINDOW_SWEEP_BATCH {
                        last_sweep -= Duration::from_secs(WINDOW_SWEEP_SECONDS);
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
            if dirty {
                let store = unify.store.clone();
                if let Ok(Err(error)) = tokio::task::spawn_blocking(move || store.sync()).await {
                    tracing::error!(workspace = %workspace_id, %error, "unify store sync failed");
                }
                dirty = false;
                last_durable = Instant::now();
            }
            tokio::select! {
                _ = log.wait_for(next) => {}
                _ = tokio::time::sleep(durable_every) => {}
            }
            continue;
        };
        let durable = last_durable.elapsed() >= durable_every;
        let batch: Vec<(u64, Vec<u8>)> = records
            .into_iter()
            .map(|record| (record.offset, record.payload.to_vec()))
            .collect();
        let (store, engine, source) = (
            unify.store.clone(),
            unify.engine.clone(),
            LogRecords(log.clone()),
        );
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            store.apply_batch(&engine, &source, &batch, durable)
        })
        .await;
        match result {
            Ok(Ok(stats)) => {
                record_metrics(&workspace_id, &stats, started.elapsed());
                next = last + 1;
                unify.applied.send_replace(next);
                if durable {
                    last_durable = Instant::now();
                    dirty = false;
                } else {
                    dirty = true;
                }
            }
            Ok(Err(error)) => {
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
