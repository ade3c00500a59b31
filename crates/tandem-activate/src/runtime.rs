//! The activation of one workspace: its destinations and connections (declared in the file or
//! created through the API), their running workers, the DLQ, replays and backfills.

use crate::connection::{Connection, RecordView, TransformCompiler};
use crate::destination::{BuildContext, DeleteOutcome, Destination};
use crate::dlq::{parse_entry_id, Dlq, DlqEntry, DlqFilter, StoreError};
use crate::retry::CircuitBreaker;
use crate::stats::{Alerts, Counted, LastError};
use crate::worker::{consumer_name, prepare, Delivery, Final, Item, Worker};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tandem_config::{ConnectionConfig, DestinationConfig};
use tandem_core::time_util::{format_iso8601_ms, now_ms};
use tandem_core::EventType;
use tandem_log::EventLog;

/// A replay gives up on a still-failing entry after this long (it stays in the DLQ with the new
/// error) instead of the connection's full retry budget: an operator is waiting for the answer.
pub const REPLAY_RETRY_MAX_SECONDS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<(String, String)>,
    },
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ActivateError {
    fn from(error: StoreError) -> Self {
        ActivateError::Internal(error.to_string())
    }
}

/// Who owns a definition: the config file (read-only through the API) or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ManagedBy {
    Config,
    Api,
}

/// The status of a connection, for the API.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionStatus {
    /// `running`, `disabled` or `error` (then `error` says why).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub delivered: u64,
    pub failed: u64,
    pub retried: u64,
    pub retrying: u64,
    pub filtered: u64,
    /// Events the person's consent kept from this destination.
    pub consent_denied: u64,
    pub dropped_by_transform: u64,
    pub dlq_size: u64,
    pub lag_records: u64,
    /// When an event was last delivered since the server started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<String>,
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    pub circuit: &'static str,
    pub last_errors: Vec<LastError>,
}

/// Progress of a replay or backfill job.
#[derive(Debug, Default)]
pub struct JobProgress {
    pub id: String,
    pub total: AtomicU64,
    pub scanned: AtomicU64,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub state: Mutex<&'static str>,
    pub started_ms: i64,
    pub finished_ms: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub state: &'static str,
    pub total: u64,
    pub scanned: u64,
    pub sent: u64,
    pub failed: u64,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl JobProgress {
    fn new(id: String) -> Arc<JobProgress> {
        Arc::new(JobProgress {
            id,
            state: Mutex::new("running"),
            started_ms: now_ms(),
            ..Default::default()
        })
    }
    fn finish(&self, state: &'static str) {
        *self.state.lock() = state;
        self.finished_ms.store(now_ms() as u64, Ordering::Relaxed);
    }
    pub fn view(&self) -> JobView {
        let finished = self.finished_ms.load(Ordering::Relaxed);
        JobView {
            id: self.id.clone(),
            state: *self.state.lock(),
            total: self.total.load(Ordering::Relaxed),
            scanned: self.scanned.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            started_at: format_iso8601_ms(self.started_ms),
            finished_at: (finished > 0).then(|| format_iso8601_ms(finished as i64)),
        }
    }
}

/// Which DLQ entries a replay or discard covers.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlqSelection {
    pub ids: Vec<String>,
    pub all: bool,
    pub filter: DlqFilter,
}

struct Running {
    fingerprint: String,
    worker: Option<Worker>,
    delivery: Option<Arc<Delivery>>,
    error: Option<String>,
}

/// What the server plugs into every connection it compiles: the JavaScript engine for
/// transformations and the consent gate's oracle.
#[derive(Clone)]
pub struct ConnectionHooks {
    pub compiler: Option<TransformCompiler>,
    /// What every connection's consent gate asks (profiles, the policy).
    pub consent: Arc<dyn crate::consent::ConsentOracle>,
    /// The workspace's PII classification and salt, for connections with a `pii` policy
    /// (`None`: policies are not applied — only tools that never deliver leave it out).
    pub pii: Option<Arc<tandem_pii::WorkspacePii>>,
}

/// The activation of one workspace.
pub struct Activation {
    pub workspace_id: String,
    log: Arc<dyn EventLog>,
    data_dir: PathBuf,
    pub dlq: Arc<Dlq>,
    pub alerts: Arc<Alerts>,
    pub hooks: ConnectionHooks,
    file_destinations: Vec<DestinationConfig>,
    file_connections: Vec<ConnectionConfig>,
    running: Mutex<HashMap<String, Running>>,
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
    backfills: Mutex<HashMap<String, Arc<JobProgress>>>,
    replays: Mutex<HashMap<String, Arc<JobProgress>>>,
    next_job: AtomicU64,
    /// Serialises definition changes and reconciliation.
    changes: tokio::sync::Mutex<()>,
}

impl Activation {
    /// Opens the workspace's activate store (`DATA/activate/<workspace>.redb`) and starts every
    /// enabled connection. Problems starting one connection are kept in its status.
    pub async fn start(
        workspace_id: &str,
        log: Arc<dyn EventLog>,
        data_dir: PathBuf,
        destinations: Vec<DestinationConfig>,
        connections: Vec<ConnectionConfig>,
        alerts: Arc<Alerts>,
        hooks: ConnectionHooks,
    ) -> Result<Arc<Activation>, ActivateError> {
        let path = data_dir
            .join("activate")
            .join(format!("{workspace_id}.redb"));
        let dlq = Arc::new(
            tokio::task::spawn_blocking(move || Dlq::open(&path))
                .await
                .map_err(|error| ActivateError::Internal(error.to_string()))??,
        );
        let activation = Arc::new(Activation {
            workspace_id: workspace_id.to_string(),
            log,
            data_dir,
            dlq,
            alerts,
            hooks,
            file_destinations: destinations,
            file_connections: connections,
            running: Mutex::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            backfills: Mutex::new(HashMap::new()),
            replays: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(1),
            changes: tokio::sync::Mutex::new(()),
        });
        let _guard = activation.changes.lock().await;
        activation.reconcile()?;
        drop(_guard);
        Ok(activation)
    }

    /// Forwards a data-subject deletion to every destination of the workspace, once each:
    /// through a running connection's destination when one runs (so its writes and the
    /// deletion are ordered, e.g. the files destination's rewrite lock), else a destination
    /// built for the purpose. Answers (destination id, type, outcome) per destination.
    pub async fn forward_deletion(
        &self,
        identifiers: &[(String, String)],
    ) -> Result<Vec<(String, String, DeleteOutcome)>, ActivateError> {
        let destinations = self.destinations()?;
        let running: HashMap<String, Arc<dyn Destination>> = self
            .running
            .lock()
            .values()
            .filter_map(|running| running.delivery.as_ref())
            .map(|delivery| {
                (
                    delivery.connection.destination_id.clone(),
                    delivery.destination.clone(),
                )
            })
            .collect();
        let mut outcomes = Vec::new();
        for (destination, _) in destinations {
            let live = match running.get(&destination.id) {
                Some(live) => Ok(live.clone()),
                None => crate::registry::find(&destination.kind)
                    .ok_or_else(|| format!("unknown destination type `{}`", destination.kind))
                    .and_then(|kind| {
                        (kind.build)(
                            &destination.settings,
                            &BuildContext {
                                workspace_id: self.workspace_id.clone(),
                                destination_id: destination.id.clone(),
                                data_dir: self.data_dir.clone(),
                            },
                        )
                    }),
            };
            let outcome = match live {
                Ok(live) => live.delete_user(identifiers).await,
                Err(error) => DeleteOutcome::Failed {
                    error,
                    retryable: false,
                },
            };
            outcomes.push((destination.id.clone(), destination.kind.clone(), outcome));
        }
        Ok(outcomes)
    }

    /// Every destination with who manages it (file first, then API).
    pub fn destinations(&self) -> Result<Vec<(DestinationConfig, ManagedBy)>, ActivateError> {
        let mut all: Vec<_> = self
            .file_destinations
            .iter()
            .cloned()
            .map(|config| (config, ManagedBy::Config))
            .collect();
        for json in self.dlq.definitions("destination")? {
            let config: DestinationConfig = serde_json::from_value(json)
                .map_err(|error| ActivateError::Internal(error.to_string()))?;
            all.push((config, ManagedBy::Api));
        }
        Ok(all)
    }

    pub fn connections(&self) -> Result<Vec<(ConnectionConfig, ManagedBy)>, ActivateError> {
        let mut all: Vec<_> = self
            .file_connections
            .iter()
            .cloned()
            .map(|config| (config, ManagedBy::Config))
            .collect();
        for json in self.dlq.definitions("connection")? {
            let config: ConnectionConfig = serde_json::from_value(json)
                .map_err(|error| ActivateError::Internal(error.to_string()))?;
            all.push((config, ManagedBy::Api));
        }
        Ok(all)
    }

    /// Starts, restarts (changed definition) and stops workers to match the definitions.
    fn reconcile(&self) -> Result<(), ActivateError> {
        let destinations = self.destinations()?;
        let connections = self.connections()?;
        let mut running = self.running.lock();
        let wanted: Vec<String> = connections
            .iter()
            .map(|(config, _)| config.id.clone())
            .collect();
        let stale: Vec<String> = running
            .keys()
            .filter(|id| !wanted.contains(id))
            .cloned()
            .collect();
        for id in stale {
            if let Some(Running {
                worker: Some(worker),
                ..
            }) = running.remove(&id)
            {
                worker.stop();
            }
        }
        for (config, _) in &connections {
            let destination = destinations
                .iter()
                .find(|(destination, _)| destination.id == config.destination)
                .map(|(destination, _)| destination);
            let fingerprint = serde_json::to_string(&(config, destination)).unwrap_or_default();
            if running
                .get(&config.id)
                .is_some_and(|current| current.fingerprint == fingerprint)
            {
                continue;
            }
            if let Some(Running {
                worker: Some(worker),
                ..
            }) = running.remove(&config.id)
            {
                worker.stop();
            }
            let started = match destination {
                None => Err(format!("no destination `{}`", config.destination)),
                Some(destination) => self.start_connection(config, destination),
            };
            let entry = match started {
                Ok((worker, delivery)) => Running {
                    fingerprint,
                    worker,
                    delivery: Some(delivery),
                    error: None,
                },
                Err(error) => {
                    tracing::error!(workspace = %self.workspace_id, connection = %config.id, %error, "connection not started");
                    Running {
                        fingerprint,
                        worker: None,
                        delivery: None,
                        error: Some(error),
                    }
                }
            };
            running.insert(config.id.clone(), entry);
        }
        Ok(())
    }

    fn start_connection(
        &self,
        config: &ConnectionConfig,
        destination: &DestinationConfig,
    ) -> Result<(Option<Worker>, Arc<Delivery>), String> {
        let kind = crate::registry::find(&destination.kind)
            .ok_or_else(|| format!("unknown destination type `{}`", destination.kind))?;
        (kind.validate)(&destination.settings)
            .map_err(|problems| crate::destination::describe_problems(&problems))?;
        let context = BuildContext {
            workspace_id: self.workspace_id.clone(),
            destination_id: destination.id.clone(),
            data_dir: self.data_dir.clone(),
        };
        let built = (kind.build)(&destination.settings, &context)?;
        let mut compiled =
            Connection::compile(&self.workspace_id, config, destination, self.hooks.compiler)?
                .with_consent(self.hooks.consent.clone());
        if let Some(pii) = &self.hooks.pii {
            compiled = compiled.with_pii(pii.clone());
        }
        let connection = Arc::new(compiled);
        let breaker = self
            .breakers
            .lock()
            .entry(destination.id.clone())
            .or_default()
            .clone();
        let delivery = Arc::new(Delivery::new(
            connection.clone(),
            built,
            breaker,
            self.dlq.clone(),
            self.alerts.clone(),
        ));
        if !connection.enabled {
            return Ok((None, delivery));
        }
        let worker =
            Worker::start(self.log.clone(), delivery.clone()).map_err(|error| error.to_string())?;
        Ok((Some(worker), delivery))
    }

    /// Stops every worker, committing what is done.
    pub fn stop(&self) {
        for (_, running) in self.running.lock().drain() {
            if let Some(worker) = running.worker {
                worker.stop();
            }
        }
    }

    fn delivery(&self, connection: &str) -> Result<Arc<Delivery>, ActivateError> {
        let running = self.running.lock();
        let entry = running.get(connection).ok_or_else(|| {
            ActivateError::NotFound(format!(
                "no connection `{connection}` in workspace `{}`",
                self.workspace_id
            ))
        })?;
        entry.delivery.clone().ok_or_else(|| {
            ActivateError::Conflict(format!(
                "connection `{connection}` is not running: {}",
                entry.error.clone().unwrap_or_default()
            ))
        })
    }

    pub fn status(&self, connection: &str) -> Result<ConnectionStatus, ActivateError> {
        let running = self.running.lock();
        let entry = running
            .get(connection)
            .ok_or_else(|| ActivateError::NotFound(format!("no connection `{connection}`")))?;
        let committed = self
            .log
            .committed_offset(&consumer_name(connection))
            .ok()
            .flatten()
            .unwrap_or(0);
        let lag_records = self.log.stats().end_offset.saturating_sub(committed);
        let dlq_size = self.dlq.count(connection);
        let state = if entry.error.is_some() {
            "error"
        } else if entry.worker.is_some() {
            "running"
        } else {
            "disabled"
        };
        let status = match &entry.delivery {
            Some(delivery) => {
                let stats = &delivery.stats;
                ConnectionStatus {
                    state,
                    error: entry.error.clone(),
                    delivered: stats.get(Counted::Delivered),
                    failed: stats.get(Counted::Dlq),
                    retried: stats.get(Counted::Retried),
                    retrying: stats.retrying.load(Ordering::Relaxed),
                    filtered: stats.get(Counted::Filtered),
                    consent_denied: stats.get(Counted::ConsentDenied),
                    dropped_by_transform: stats.get(Counted::DroppedByTransform),
                    dlq_size,
                    lag_records,
                    last_delivered_at: match stats.last_delivered_ms.load(Ordering::Relaxed) {
                        0 => None,
                        at_ms => Some(tandem_core::time_util::format_iso8601_ms(at_ms)),
                    },
                    latency_p50_ms: stats.latency_ms(0.5),
                    latency_p99_ms: stats.latency_ms(0.99),
                    circuit: delivery.breaker.state_name(),
                    last_errors: stats.last_errors(),
                }
            }
            None => ConnectionStatus {
                state,
                error: entry.error.clone(),
                delivered: 0,
                failed: 0,
                retried: 0,
                retrying: 0,
                filtered: 0,
                consent_denied: 0,
                dropped_by_transform: 0,
                dlq_size,
                lag_records,
                last_delivered_at: None,
                latency_p50_ms: 0,
                latency_p99_ms: 0,
                circuit: "closed",
                last_errors: Vec::new(),
            },
        };
        Ok(status)
    }

    fn check_connection_exists(&self, connection: &str) -> Result<(), ActivateError> {
        if self.running.lock().contains_key(connection) {
            Ok(())
        } else {
            Err(ActivateError::NotFound(format!(
                "no connection `{connection}` in workspace `{}`",
                self.workspace_id
            )))
        }
    }

    pub async fn dlq_list(
        &self,
        connection: &str,
        filter: DlqFilter,
        limit: usize,
    ) -> Result<Vec<DlqEntry>, ActivateError> {
        self.check_connection_exists(connection)?;
        let dlq = self.dlq.clone();
        let connection = connection.to_string();
        Ok(
            tokio::task::spawn_blocking(move || dlq.list(&connection, &filter, limit))
                .await
                .map_err(|error| ActivateError::Internal(error.to_string()))??,
        )
    }

    pub fn dlq_get(&self, connection: &str, id: &str) -> Result<DlqEntry, ActivateError> {
        self.check_connection_exists(connection)?;
        let (offset, index) = parse_entry_id(id)
            .ok_or_else(|| ActivateError::NotFound(format!("no DLQ entry `{id}`")))?;
        self.dlq
            .get(connection, offset, index)?
            .ok_or_else(|| ActivateError::NotFound(format!("no DLQ entry `{id}`")))
    }

    fn select(
        &self,
        connection: &str,
        selection: &DlqSelection,
    ) -> Result<Vec<DlqEntry>, ActivateError> {
        if selection.all {
            Ok(self.dlq.list(connection, &selection.filter, usize::MAX)?)
        } else {
            let mut entries = Vec::new();
            for id in &selection.ids {
                if let Some((offset, index)) = parse_entry_id(id) {
                    if let Some(entry) = self.dlq.get(connection, offset, index)? {
                        entries.push(entry);
                    }
                }
            }
            Ok(entries)
        }
    }

    /// Removes the selected entries; returns how many.
    pub fn dlq_discard(
        &self,
        connection: &str,
        selection: &DlqSelection,
    ) -> Result<u64, ActivateError> {
        self.check_connection_exists(connection)?;
        let keys: Vec<(u64, u32)> = self
            .select(connection, selection)?
            .iter()
            .map(|entry| (entry.offset, entry.index))
            .collect();
        Ok(self.dlq.remove(connection, &keys)?)
    }

    /// Starts replaying the selected entries through the connection's current mappings,
    /// transformation and destination; delivered entries leave the DLQ, failing ones stay with
    /// the new error.
    pub fn dlq_replay(
        self: &Arc<Self>,
        connection: &str,
        selection: &DlqSelection,
    ) -> Result<Arc<JobProgress>, ActivateError> {
        let delivery = self.delivery(connection)?;
        let entries = self.select(connection, selection)?;
        let job = JobProgress::new(format!(
            "replay-{}",
            self.next_job.fetch_add(1, Ordering::Relaxed)
        ));
        job.total.store(entries.len() as u64, Ordering::Relaxed);
        self.replays.lock().insert(job.id.clone(), job.clone());
        let progress = job.clone();
        tokio::spawn(async move {
            for chunk in entries.chunks(delivery.limits.events_max.max(1)) {
                replay_chunk(&delivery, chunk, &progress).await;
            }
            progress.finish("done");
        });
        Ok(job)
    }

    pub fn replay_progress(&self, job: &str) -> Option<JobView> {
        self.replays.lock().get(job).map(|job| job.view())
    }

    /// Sends the log records received in `[from_ms, to_ms]` through the connection (a separate
    /// task with the same plumbing); one backfill per connection at a time.
    pub fn backfill(
        &self,
        connection: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Arc<JobProgress>, ActivateError> {
        let delivery = self.delivery(connection)?;
        let mut backfills = self.backfills.lock();
        if backfills
            .get(connection)
            .is_some_and(|job| *job.state.lock() == "running")
        {
            return Err(ActivateError::Conflict(format!(
                "a backfill of `{connection}` is running"
            )));
        }
        let job = JobProgress::new(format!(
            "backfill-{}",
            self.next_job.fetch_add(1, Ordering::Relaxed)
        ));
        let stats = self.log.stats();
        job.total
            .store(stats.end_offset - stats.start_offset, Ordering::Relaxed);
        backfills.insert(connection.to_string(), job.clone());
        let log = self.log.clone();
        let progress = job.clone();
        tokio::spawn(async move {
            let state = match run_backfill(
                log,
                delivery,
                from_ms,
                to_ms,
                stats.start_offset,
                stats.end_offset,
                &progress,
            )
            .await
            {
                Ok(()) => "done",
                Err(error) => {
                    tracing::error!(%error, "backfill failed");
                    "failed"
                }
            };
            progress.finish(state);
        });
        Ok(job)
    }

    pub fn backfill_progress(&self, connection: &str) -> Option<JobView> {
        self.backfills.lock().get(connection).map(|job| job.view())
    }

    /// Adds or replaces an API-managed destination or connection (`kind`), then reconciles.
    pub async fn put_definition(
        &self,
        kind: &str,
        id: &str,
        json: serde_json::Value,
    ) -> Result<(), ActivateError> {
        let _guard = self.changes.lock().await;
        self.dlq.put_definition(kind, id, &json)?;
        self.reconcile()
    }

    /// Applies a change of several objects atomically (see [`Dlq::apply_writes`]): every
    /// version checked, every definition and version record written in one transaction, then
    /// the workers reconciled. A stale write is [`ActivateError::Conflict`]; nothing is applied.
    pub async fn apply_writes(
        &self,
        writes: &[crate::history::DefinitionWrite],
        provenance: &crate::history::Provenance,
        before_commit: impl FnOnce() -> Result<(), String>,
    ) -> Result<Vec<crate::history::Version>, ActivateError> {
        use crate::history::ApplyError;
        let _guard = self.changes.lock().await;
        let versions = self
            .dlq
            .apply_writes(writes, provenance, before_commit)
            .map_err(|error| match error {
                ApplyError::Conflict(message) => ActivateError::Conflict(message),
                ApplyError::Refused(message) => ActivateError::Internal(message),
                ApplyError::Store(error) => ActivateError::from(error),
            })?;
        self.reconcile()?;
        Ok(versions)
    }

    pub async fn delete_definition(&self, kind: &str, id: &str) -> Result<bool, ActivateError> {
        let _guard = self.changes.lock().await;
        let existed = self.dlq.delete_definition(kind, id)?;
        self.reconcile()?;
        Ok(existed)
    }
}

impl Drop for Activation {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn replay_chunk(delivery: &Delivery, entries: &[DlqEntry], progress: &JobProgress) {
    let mut items = Vec::new();
    let mut owners = Vec::new();
    let mut updates = Vec::new();
    let mut removals = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        progress.scanned.fetch_add(1, Ordering::Relaxed);
        let event_type = EventType::parse(&entry.event_type).unwrap_or(EventType::Track);
        let original = Arc::new(entry.original.clone());
        let view = RecordView {
            offset: entry.offset,
            received_at_ms: entry.received_at_ms,
            event_type,
            source_id: &entry.source_id,
            event: &original,
        };
        match delivery.connection.outbound(&view) {
            Ok(events) if events.is_empty() => removals.push((entry.offset, entry.index)),
            Ok(events) => {
                for event in events {
                    items.push(Item {
                        event,
                        index: entry.index,
                        original: original.clone().into(),
                        bytes: 0,
                    });
                    owners.push(position);
                }
            }
            Err(error) => updates.push(failed_again(
                entry,
                format!("transformation failed: {error}"),
            )),
        }
    }
    let results = delivery
        .deliver(items, Duration::from_secs(REPLAY_RETRY_MAX_SECONDS))
        .await;
    let mut failures: HashMap<usize, String> = HashMap::new();
    let mut delivered_positions = Vec::new();
    for (owner, (_, final_)) in owners.into_iter().zip(results) {
        match final_ {
            Final::Delivered => delivered_positions.push(owner),
            Final::Dead { error, .. } => {
                failures.insert(owner, error);
            }
        }
    }
    for position in delivered_positions {
        if !failures.contains_key(&position) {
            removals.push((entries[position].offset, entries[position].index));
        }
    }
    removals.sort_unstable();
    removals.dedup();
    for (position, error) in failures {
        updates.push(failed_again(&entries[position], error));
    }
    progress
        .sent
        .fetch_add(removals.len() as u64, Ordering::Relaxed);
    progress
        .failed
        .fetch_add(updates.len() as u64, Ordering::Relaxed);
    let connection = delivery.connection.id.clone();
    if let Err(error) = delivery
        .dlq
        .insert(&updates)
        .and_then(|()| delivery.dlq.remove(&connection, &removals).map(|_| ()))
    {
        tracing::error!(%error, "replay could not update the DLQ");
    }
}

fn failed_again(entry: &DlqEntry, error: String) -> DlqEntry {
    DlqEntry {
        error,
        attempts: 1,
        last_failure_ms: now_ms(),
        ..entry.clone()
    }
}

/// Records read per backfill step.
const BACKFILL_READ_RECORDS: usize = 1000;

async fn run_backfill(
    log: Arc<dyn EventLog>,
    delivery: Arc<Delivery>,
    from_ms: i64,
    to_ms: i64,
    start: u64,
    end: u64,
    progress: &JobProgress,
) -> Result<(), String> {
    let retry_max = Duration::from_secs(delivery.connection.delivery.retry_max_seconds);
    let mut next = start;
    let mut pending: Vec<Item> = Vec::new();
    while next < end {
        let records = log
            .read(next, BACKFILL_READ_RECORDS.min((end - next) as usize))
            .map_err(|error| error.to_string())?;
        let Some(last) = records.last() else { break };
        next = last.offset + 1;
        for record in records {
            progress.scanned.fetch_add(1, Ordering::Relaxed);
            if record.timestamp_ms < from_ms || record.timestamp_ms > to_ms {
                continue;
            }
            pending.extend(
                prepare(
                    &delivery,
                    record.offset,
                    record.timestamp_ms,
                    &record.payload,
                )
                .await?,
            );
            if pending.len() >= delivery.limits.events_max {
                send_backfill(&delivery, std::mem::take(&mut pending), retry_max, progress).await?;
            }
        }
    }
    send_backfill(&delivery, pending, retry_max, progress).await
}

async fn send_backfill(
    delivery: &Delivery,
    items: Vec<Item>,
    retry_max: Duration,
    progress: &JobProgress,
) -> Result<(), String> {
    if items.is_empty() {
        return Ok(());
    }
    let mut dead = Vec::new();
    for (item, final_) in delivery.deliver(items, retry_max).await {
        match final_ {
            Final::Delivered => {
                progress.sent.fetch_add(1, Ordering::Relaxed);
            }
            Final::Dead { error, attempts } => {
                progress.failed.fetch_add(1, Ordering::Relaxed);
                dead.push((item, error, attempts));
            }
        }
    }
    delivery.bury(dead).await
}
