//! tandem's HTTP server: the Segment-compatible collect API, the management API under `/api/v1/`,
//! `/metrics`, `/healthz` and `/readyz`. [`start`] brings a server up from a [`Config`]; the
//! `tandem serve` command and the black-box tests both go through it.

pub mod access_tokens;
pub mod audiences;
pub mod auth;
pub mod background;
pub mod catalog;
pub mod changes;
pub mod consent;
pub mod console;
pub mod error;
pub mod inventory;
pub mod personalize;
pub mod pii;
pub mod plans;
pub mod policies;
pub mod privacy;
pub mod processing;
pub mod rate_limit;
pub mod retention;
pub mod routes;
pub mod state;
pub mod telemetry;
pub mod transformations;
pub mod unify;

use anyhow::Context;
use auth::{AdminTokenOrigin, AdminTokens};
use catalog::{sync_config_sources, Catalog};
use state::{AppState, Inner, Workspace};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_collect::DedupIndex;
use tandem_config::Config;
use tandem_core::limits::LIVE_STREAM_BUFFER_EVENTS;
use tandem_core::{ids, time_util};
use tandem_log::{FileLog, LogOptions};
use tandem_store::{ManagedBy, MetadataStore, RedbStore, SourceRecord};

/// How `start` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// False only for the benchmark's no-persistence reference: the request path runs in full but
    /// events are discarded instead of appended. Never for real traffic.
    pub persist: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { persist: true }
    }
}

/// Facts printed at start.
pub struct StartReport {
    pub listen: SocketAddr,
    pub admin_token: AdminTokenOrigin,
    /// The demo source's write key, when no workspace was configured.
    pub demo_write_key: Option<String>,
    /// A Profile API access token of the demo workspace, when no workspace was configured.
    pub demo_access_token: Option<String>,
    pub workspaces: Vec<(String, tandem_log::RecoveryReport)>,
    pub dedup_entries_recovered: usize,
    pub startup: Duration,
}

/// A server running in this process.
pub struct RunningServer {
    pub state: AppState,
    pub report: StartReport,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.report.listen
    }

    /// Resolves when the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await??;
        Ok(())
    }

    /// Stops accepting, finishes requests in flight, flushes the catalog and closes the logs.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await??;
        finish(&self.state);
        Ok(())
    }
}

fn finish(state: &AppState) {
    state.ready.store(false, Ordering::Release);
    if let Err(error) = state.catalog.flush() {
        tracing::warn!(%error, "final catalog flush failed");
    }
    for workspace in state.workspaces.values() {
        if let Err(error) = workspace.plans.flush() {
            tracing::warn!(workspace = %workspace.id, %error, "final tracking plan counters flush failed");
        }
        workspace.plans.quarantine_log.close();
        workspace.file_log.close();
    }
}

const DEMO_WRITE_KEY_SETTING: &str = "demo_write_key";

/// Opens the stores and logs, recovers, binds and starts serving.
pub async fn start(mut config: Config, options: ServeOptions) -> anyhow::Result<RunningServer> {
    let started = Instant::now();
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let store: Arc<dyn MetadataStore> = Arc::new(
        RedbStore::open(&data_dir.join("metadata.redb")).context("opening the metadata store")?,
    );

    let demo_write_key = if config.workspaces.is_empty() {
        let key = match store.setting(DEMO_WRITE_KEY_SETTING)? {
            Some(key) => key,
            None => {
                let key = ids::random_secret(24);
                store.put_setting(DEMO_WRITE_KEY_SETTING, &key)?;
                key
            }
        };
        let demo = tandem_config::demo_with_write_key(&key);
        config.workspaces = demo.workspaces;
        Some(key)
    } else {
        None
    };
    let now = time_util::now_ms();
    sync_config_sources(store.as_ref(), &declared_sources(&config, now), now)?;
    let (admin_tokens, admin_origin) =
        AdminTokens::initialize(store.as_ref(), config.admin.token.as_deref())?;

    let policies = Arc::new(policies::Policies::open(&config, store.clone())?);
    let mut workspaces = BTreeMap::new();
    let mut recoveries = Vec::new();
    let alerts = Arc::new(tandem_activate::stats::Alerts::default());
    for workspace in &config.workspaces {
        let options = log_options(&config, &workspace.id, options.persist);
        let (file_log, recovery) =
            FileLog::open(&data_dir.join("logs").join(&workspace.id), options.clone())
                .with_context(|| format!("opening the log of workspace {}", workspace.id))?;
        if recovery.truncated_bytes > 0 {
            tracing::warn!(workspace = %workspace.id, bytes = recovery.truncated_bytes, reason = ?recovery.truncation_reason, "log tail truncated at recovery");
        }
        recoveries.push((workspace.id.clone(), recovery));
        let dedup_salt = xxhash_salt(&workspace.id);
        let log: Arc<dyn tandem_log::EventLog> = file_log.clone();
        let rules = unify::effective_rules(store.as_ref(), workspace)?;
        let (unify, unify_open) = unify::Unify::open(&data_dir, &workspace.id, rules)?;
        if let unify::UnifyOpen::Rebuilding { previous_next } = &unify_open {
            tracing::warn!(workspace = %workspace.id, previous_next, "profiles are being rebuilt from the log");
        }
        let unify = Arc::new(unify);
        let pii = pii::load(store.as_ref(), workspace)
            .with_context(|| format!("loading the PII settings of workspace {}", workspace.id))?;
        let activation = tandem_activate::runtime::Activation::start(
            &workspace.id,
            log.clone(),
            data_dir.clone(),
            workspace.destinations.clone(),
            workspace.connections.clone(),
            alerts.clone(),
            tandem_activate::runtime::ConnectionHooks {
                compiler: Some(transformations::compile),
                consent: Arc::new(consent::WorkspaceConsent {
                    workspace_id: workspace.id.clone(),
                    policies: policies.clone(),
                    unify: unify.clone(),
                }),
                pii: Some(pii.clone()),
            },
        )
        .await
        .map_err(|error| {
            anyhow::anyhow!("starting delivery of workspace {}: {error}", workspace.id)
        })?;
        let plans = Arc::new(
            plans::WorkspacePlans::open(&data_dir, workspace, options.clone()).with_context(
                || format!("opening the tracking plans of workspace {}", workspace.id),
            )?,
        );
        let personalization = Arc::new(
            personalize::WorkspacePersonalization::load(store.as_ref(), workspace).with_context(
                || format!("loading the personalization of workspace {}", workspace.id),
            )?,
        );
        let privacy = Arc::new(
            privacy::WorkspacePrivacy::open(&data_dir, &workspace.id).with_context(|| {
                format!("opening the privacy requests of workspace {}", workspace.id)
            })?,
        );
        let audiences = Arc::new(audiences::WorkspaceAudiences::open(
            workspace,
            &activation,
            &unify.store(),
            &unify.rules().computed_trait_names(),
            Arc::new(personalize::PersonalizeCache::default()),
        )?);
        audiences.engine.lock().capture_traits = personalization.get().captured_traits();
        if let unify::UnifyOpen::Rebuilding { previous_next } = unify_open {
            audiences.hold_until(previous_next);
        }
        workspaces.insert(
            workspace.id.clone(),
            Workspace {
                id: workspace.id.clone(),
                name: workspace.name.clone(),
                log,
                file_log,
                dedup_salt,
                unify,
                activation,
                plans,
                retention: Arc::new(
                    retention::WorkspaceRetention::load(&config, workspace, store.clone())
                        .with_context(|| {
                            format!("loading the retention report of workspace {}", workspace.id)
                        })?,
                ),
                audiences,
                personalization,
                privacy,
                pii,
            },
        );
    }

    let dedup = Arc::new(DedupIndex::new(config.collect.dedup_entries_max));
    let window_ms = config.collect.dedup_window_hours as i64 * 3_600_000;
    let dedup_recovered = {
        let list: Vec<&Workspace> = workspaces.values().collect();
        background::recover_dedup(&dedup, &list, &data_dir, window_ms)
            .context("rebuilding the dedup index from the log")?
    };

    let audit = Arc::new(
        tandem_audit::AuditLog::open(&data_dir.join("audit")).context("opening the audit log")?,
    );
    let catalog = Catalog::load(store.clone())?;
    let access_tokens = Arc::new(access_tokens::AccessTokens::load(store.clone())?);
    let public_keys = Arc::new(personalize::PublicKeys::load(store.clone())?);
    let demo_access_token = match &demo_write_key {
        Some(_) => Some(access_tokens.demo_token("demo")?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let listen = listener.local_addr()?;
    let (live, _) = tokio::sync::broadcast::channel(LIVE_STREAM_BUFFER_EVENTS);
    let rate_limiter = rate_limit::RateLimiter::new(config.collect.rate_limit_events_per_second);
    let state = AppState(Arc::new(Inner {
        config,
        policies,
        store: store.clone(),
        catalog,
        workspaces,
        dedup,
        rate_limiter,
        live,
        admin_tokens,
        access_tokens,
        public_keys,
        audit,
        metrics: telemetry::prometheus(),
        imports: Arc::new(routes::imports::Imports::open(&data_dir)?),
        alerts,
        persist: options.persist,
        ready: AtomicBool::new(false),
        started_at: started,
    }));
    background::spawn(state.clone());
    retention::spawn(state.clone());
    for workspace in state.workspaces.values() {
        tokio::spawn(unify::run(
            workspace.id.clone(),
            workspace.log.clone(),
            workspace.unify.clone(),
            workspace.audiences.clone(),
        ));
        tokio::spawn(audiences::drain::run(state.clone(), workspace.id.clone()));
        // Requests a stop interrupted run again from the start (every step is idempotent).
        for request in workspace.privacy.unfinished() {
            tokio::spawn(privacy::erase::run(
                state.clone(),
                workspace.id.clone(),
                request.id,
            ));
        }
    }

    let app = routes::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (shutdown, shutdown_signal) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown_signal.await;
            })
            .await
    });
    state.ready.store(true, Ordering::Release);
    let report = StartReport {
        listen,
        admin_token: admin_origin,
        demo_write_key,
        demo_access_token,
        workspaces: recoveries,
        dedup_entries_recovered: dedup_recovered,
        startup: started.elapsed(),
    };
    Ok(RunningServer {
        state,
        report,
        shutdown,
        task,
    })
}

fn xxhash_salt(workspace_id: &str) -> u64 {
    // Any stable 64-bit mix of the id works; the envelope's dedup key hashing is reused.
    tandem_core::envelope::dedup_key(workspace_id, "")
}

/// The log options of a workspace as the config gives them.
pub fn log_options(config: &Config, workspace_id: &str, persist: bool) -> LogOptions {
    let log = &config.log;
    LogOptions {
        name: workspace_id.to_string(),
        segment_bytes_max: log.segment_bytes_max,
        queue_bytes_max: log.queue_bytes_max,
        retention_bytes_max: log.retention_bytes_max,
        // The stricter of `[log] retention_hours` and the workspace's `log_days`.
        retention_age: config
            .workspaces
            .iter()
            .find(|workspace| workspace.id == workspace_id)
            .map_or_else(
                || {
                    log.retention_hours
                        .map(|hours| Duration::from_secs(hours * 3600))
                },
                |workspace| {
                    retention::log_max_age(config, &workspace.retention).map(|(age, _)| age)
                },
            ),
        disk_free_bytes_min: log.disk_free_bytes_min,
        fsync: persist,
    }
}

/// The sources the config file declares, as catalog records.
fn declared_sources(config: &Config, now_ms: i64) -> Vec<SourceRecord> {
    config
        .workspaces
        .iter()
        .flat_map(|workspace| {
            workspace.sources.iter().map(move |source| SourceRecord {
                workspace_id: workspace.id.clone(),
                id: source.id.clone(),
                name: source.name.clone(),
                owner: source.owner.clone(),
                purpose: source.purpose.clone(),
                data_categories: source.data_categories.clone(),
                write_key_hash: source
                    .write_key_sha256
                    .clone()
                    .unwrap_or_else(|| ids::write_key_hash(&source.write_key)),
                enabled: source.enabled,
                managed_by: ManagedBy::Config,
                created_at_ms: now_ms,
                created_by: "config".into(),
                updated_at_ms: now_ms,
            })
        })
        .collect()
}

/// Runs until SIGINT/SIGTERM, then shuts down cleanly.
pub async fn serve_until_signal(server: RunningServer) -> anyhow::Result<()> {
    let mut server = server;
    let signal = async {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    };
    tokio::select! {
        _ = signal => {
            tracing::info!("shutting down");
            server.shutdown().await
        }
        result = server.wait() => result,
    }
}
