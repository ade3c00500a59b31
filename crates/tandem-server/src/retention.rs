//! Retention per workspace (`[workspaces.retention]`), enforced continuously and reported at
//! `GET /api/v1/workspaces/{ws}/retention` (`routes::retention`).
//!
//! - **Log**: `log_days` and `[log] retention_hours` give the log's age limit, the stricter
//!   winning ([`log_max_age`]); `FileLog::enforce_retention` applies it every
//!   `background::MAINTENANCE_INTERVAL` and each run is recorded here ([`WorkspaceRetention::record_log`]).
//! - **Dead letters**: every [`RETENTION_SWEEP_INTERVAL`], entries whose last failure is older
//!   than `dead_letters_days` are removed and the store file vacuumed when something went.
//! - **Profiles**: every [`RETENTION_SWEEP_INTERVAL`], profiles whose last event is older than
//!   `profiles_inactive_days` are found by a read-only scan in pages and erased by erase control
//!   records appended to the workspace log (request id `retention-<date>-<n>`, with
//!   `inactiveBeforeMs` so a profile active again by the time unify applies the record is kept):
//!   unify applies them in order with the events, so a replay from zero erases the same.
//! - **Archive**: `archive_days` is accepted and reported as not applicable until the Parquet
//!   archive exists.
//!
//! The last run of each part is kept in the metadata store (setting `retention/<workspace>`),
//! so the report survives a restart.

use crate::state::{AppState, Workspace};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tandem_config::{Config, RetentionConfig};
use tandem_core::time_util::{format_iso8601_ms, now_ms};
use tandem_unify::kv::{KvRead, KvResult, Table};
use tandem_unify::model::{format_profile_id, ProfileId, ProfileRow};

/// How often the dead-letter and profile sweeps run (the log's retention runs at the
/// maintenance interval). The first sweep comes one interval after start.
pub const RETENTION_SWEEP_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// Profiles read per read transaction of the profile scan: short transactions, so unify's
/// writes never wait on the sweep for long.
pub const PROFILE_SCAN_PAGE: usize = 1024;
/// Most profiles one sweep erases; the rest go at the next sweep (bounds memory and the
/// erase records a sweep appends).
pub const PROFILES_ERASED_PER_SWEEP_MAX: usize = 100_000;
/// Most profile ids in one erase control record (about 22 bytes each).
pub const ERASE_RECORD_PROFILES_MAX: usize = 1000;
/// How long a sweep waits for unify to apply its erase records before reporting what it knows.
pub const RETENTION_UNIFY_WAIT: Duration = Duration::from_secs(60);
/// Why the archive policy does nothing yet.
pub const ARCHIVE_NOT_APPLICABLE: &str =
    "not applicable yet: there is no Parquet archive; archive_days applies once it exists";

/// The instant `days` before `now_ms`: anything older is past retention.
pub fn cutoff_ms(now_ms: i64, days: u64) -> i64 {
    now_ms.saturating_sub((days as i64).saturating_mul(DAY_MS))
}

/// Where the log's age limit comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogAgeSource {
    /// `[workspaces.retention] log_days`.
    Workspace,
    /// `[log] retention_hours`.
    Log,
}

/// The log's age limit for a workspace: the stricter of `[log] retention_hours` and the
/// workspace's `log_days` (`None` when neither is set).
pub fn log_max_age(
    config: &Config,
    retention: &RetentionConfig,
) -> Option<(Duration, LogAgeSource)> {
    let from_log = config
        .log
        .retention_hours
        .map(|hours| (Duration::from_secs(hours * 3600), LogAgeSource::Log));
    let from_workspace = retention
        .log_days
        .map(|days| (Duration::from_secs(days * 86_400), LogAgeSource::Workspace));
    match (from_log, from_workspace) {
        (Some(log), Some(workspace)) => Some(if workspace.0 <= log.0 { workspace } else { log }),
        (log, workspace) => log.or(workspace),
    }
}

/// One run of the log's retention.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogRun {
    pub at_ms: i64,
    pub segments_deleted: u64,
    pub bytes_deleted: u64,
}

/// One run of the dead-letter expiry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRun {
    pub at_ms: i64,
    pub cutoff_ms: i64,
    pub removed: u64,
    /// The store file's size after the vacuum, when something was removed.
    pub file_bytes: Option<u64>,
    pub error: Option<String>,
}

/// One run of the inactive-profile sweep.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileRun {
    pub at_ms: i64,
    pub cutoff_ms: i64,
    pub scanned: u64,
    /// Profiles found inactive (at most [`PROFILES_ERASED_PER_SWEEP_MAX`]).
    pub selected: u64,
    /// Profiles unify erased (fewer than selected when one came back meanwhile).
    pub erased: u64,
    /// Whether more inactive profiles remain for the next sweep.
    pub more: bool,
    /// The request ids of the erase records appended.
    pub requests: Vec<String>,
    pub error: Option<String>,
}

/// The last run of each part, and totals since they were first recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Runs {
    pub log: Option<LogRun>,
    /// The last log run that deleted something.
    pub log_last_deletion: Option<LogRun>,
    pub log_segments_deleted_total: u64,
    pub log_bytes_deleted_total: u64,
    pub dead_letters: Option<DeadLetterRun>,
    pub dead_letters_removed_total: u64,
    pub profiles: Option<ProfileRun>,
    pub profiles_erased_total: u64,
}

/// A workspace's retention policy and what enforcing it did.
pub struct WorkspaceRetention {
    pub workspace_id: String,
    pub policy: RetentionConfig,
    pub log_max_age: Option<(Duration, LogAgeSource)>,
    runs: Mutex<Runs>,
    /// Held by a sweep (background or `POST …/retention/run`): never two at once.
    pub sweeping: tokio::sync::Mutex<()>,
    /// When the background sweep runs next (ms; 0 before it is scheduled).
    pub next_sweep_ms: std::sync::atomic::AtomicI64,
    store: std::sync::Arc<dyn tandem_store::MetadataStore>,
}

fn setting_name(workspace_id: &str) -> String {
    format!("retention/{workspace_id}")
}

impl WorkspaceRetention {
    /// The policy of `workspace_id` from the config, with the runs the metadata store kept.
    pub fn load(
        config: &Config,
        workspace: &tandem_config::WorkspaceConfig,
        store: std::sync::Arc<dyn tandem_store::MetadataStore>,
    ) -> anyhow::Result<WorkspaceRetention> {
        let runs = match store.setting(&setting_name(&workspace.id))? {
            Some(json) => serde_json::from_str(&json).unwrap_or_else(|error| {
                tracing::warn!(workspace = %workspace.id, %error, "unreadable retention report; starting a new one");
                Runs::default()
            }),
            None => Runs::default(),
        };
        Ok(WorkspaceRetention {
            workspace_id: workspace.id.clone(),
            policy: workspace.retention.clone(),
            log_max_age: log_max_age(config, &workspace.retention),
            runs: Mutex::new(runs),
            sweeping: tokio::sync::Mutex::new(()),
            next_sweep_ms: std::sync::atomic::AtomicI64::new(0),
            store,
        })
    }

    pub fn runs(&self) -> Runs {
        self.runs.lock().clone()
    }

    fn update(&self, change: impl FnOnce(&mut Runs)) {
        let json = {
            let mut runs = self.runs.lock();
            change(&mut runs);
            serde_json::to_string(&*runs).expect("runs serialize")
        };
        if let Err(error) = self
            .store
            .put_setting(&setting_name(&self.workspace_id), &json)
        {
            tracing::warn!(workspace = %self.workspace_id, %error, "could not keep the retention report");
        }
    }

    /// Records a run of the log's retention (kept in the store only when it deleted something:
    /// the log runs every maintenance interval).
    pub fn record_log(&self, report: &tandem_log::RetentionReport, at_ms: i64) {
        let run = LogRun {
            at_ms,
            segments_deleted: report.segments_deleted as u64,
            bytes_deleted: report.bytes_deleted,
        };
        if run.segments_deleted == 0 {
            self.runs.lock().log = Some(run);
            return;
        }
        metrics::counter!("tandem_retention_log_segments_deleted_total", "workspace" => self.workspace_id.clone())
            .increment(run.segments_deleted);
        self.update(|runs| {
            runs.log_segments_deleted_total += run.segments_deleted;
            runs.log_bytes_deleted_total += run.bytes_deleted;
            runs.log_last_deletion = Some(run.clone());
            runs.log = Some(run);
        });
    }
}

/// One page of the profile scan.
#[derive(Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// The inactive profiles found.
    pub found: Vec<ProfileId>,
    /// Profile rows read.
    pub scanned: usize,
    /// The last profile read; `None` when the table ended.
    pub last: Option<ProfileId>,
}

/// Up to `limit` profiles inactive since before `cutoff_ms`, scanning at most `page` profile
/// rows after `after`.
pub fn inactive_page(
    kv: &impl KvRead,
    after: Option<ProfileId>,
    cutoff_ms: i64,
    page: usize,
    limit: usize,
) -> KvResult<ScanPage> {
    let after_key = after.map(u64::to_be_bytes);
    let rows = kv.scan(
        Table::Profiles,
        &[],
        after_key.as_ref().map(|key| key.as_slice()),
        false,
        page,
    )?;
    let mut found = Vec::new();
    let mut last = None;
    for (index, (key, value)) in rows.iter().enumerate() {
        let row: ProfileRow = tandem_unify::model::decode(Table::Profiles, value)?;
        last = key.as_slice().try_into().ok().map(u64::from_be_bytes);
        if row.last_message_ms < cutoff_ms {
            found.push(row.id);
            if found.len() == limit {
                return Ok(ScanPage {
                    found,
                    scanned: index + 1,
                    last,
                });
            }
        }
    }
    let scanned = rows.len();
    Ok(ScanPage {
        found,
        scanned,
        last: if scanned < page { None } else { last },
    })
}

/// The inactive profiles of a store: pages of [`PROFILE_SCAN_PAGE`], each in its own read
/// transaction, at most `limit`. Answers (ids, profiles scanned, whether more may remain).
pub fn select_inactive(
    read_page: &dyn Fn(Option<ProfileId>) -> KvResult<ScanPage>,
    limit: usize,
) -> KvResult<(Vec<ProfileId>, u64, bool)> {
    let mut selected = Vec::new();
    let mut scanned = 0u64;
    let mut after = None;
    loop {
        let ScanPage {
            found,
            scanned: count,
            last,
        } = read_page(after)?;
        scanned += count as u64;
        selected.extend(found);
        if selected.len() >= limit {
            selected.truncate(limit);
            return Ok((selected, scanned, last.is_some()));
        }
        match last {
            Some(last) => after = Some(last),
            None => return Ok((selected, scanned, false)),
        }
    }
}

/// The erase control records for `profiles`, [`ERASE_RECORD_PROFILES_MAX`] ids each, with
/// their request ids `retention-<date>-<n>`.
pub fn erase_controls(
    profiles: &[ProfileId],
    cutoff_ms: i64,
    now_ms: i64,
) -> Vec<(String, serde_json::Value)> {
    let date = &format_iso8601_ms(now_ms)[..10];
    profiles
        .chunks(ERASE_RECORD_PROFILES_MAX)
        .enumerate()
        .map(|(index, chunk)| {
            let request = format!("retention-{date}-{}", index + 1);
            let ids: Vec<String> = chunk.iter().map(|id| format_profile_id(*id)).collect();
            let body = serde_json::json!({
                "control": "erase",
                "request": request,
                "profileIds": ids,
                "inactiveBeforeMs": cutoff_ms,
            });
            (request, body)
        })
        .collect()
}

/// Runs every workspace's sweep each [`RETENTION_SWEEP_INTERVAL`].
pub fn spawn(state: AppState) {
    let schedule = |state: &AppState| {
        let next = now_ms() + RETENTION_SWEEP_INTERVAL.as_millis() as i64;
        for workspace in state.workspaces.values() {
            workspace
                .retention
                .next_sweep_ms
                .store(next, std::sync::atomic::Ordering::Relaxed);
        }
    };
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(RETENTION_SWEEP_INTERVAL);
        ticker.tick().await;
        schedule(&state);
        loop {
            ticker.tick().await;
            for workspace in state.workspaces.values() {
                sweep(&state, workspace).await;
            }
            schedule(&state);
        }
    });
}

/// The dead-letter and profile parts of a workspace's retention, now.
pub async fn sweep(_state: &AppState, workspace: &Workspace) {
    let retention = workspace.retention.clone();
    let _sweeping = retention.sweeping.lock().await;
    if let Some(days) = retention.policy.dead_letters_days {
        let run = expire_dead_letters(workspace, days).await;
        metrics::counter!("tandem_retention_dead_letters_removed_total", "workspace" => workspace.id.clone())
            .increment(run.removed);
        retention.update(|runs| {
            runs.dead_letters_removed_total += run.removed;
            runs.dead_letters = Some(run);
        });
    }
    if let Some(days) = retention.policy.profiles_inactive_days {
        let run = erase_inactive_profiles(workspace, days).await;
        metrics::counter!("tandem_retention_profiles_erased_total", "workspace" => workspace.id.clone())
            .increment(run.erased);
        retention.update(|runs| {
            runs.profiles_erased_total += run.erased;
            runs.profiles = Some(run);
        });
    }
}

async fn expire_dead_letters(workspace: &Workspace, days: u64) -> DeadLetterRun {
    let at_ms = now_ms();
    let cutoff = cutoff_ms(at_ms, days);
    let dlq = workspace.activation.dlq.clone();
    let outcome = tokio::task::spawn_blocking(move || -> Result<(u64, Option<u64>), String> {
        let removed = dlq
            .expire_older_than(cutoff)
            .map_err(|error| error.to_string())?;
        let file_bytes = if removed > 0 {
            Some(dlq.vacuum().map_err(|error| error.to_string())?)
        } else {
            None
        };
        Ok((removed, file_bytes))
    })
    .await
    .unwrap_or_else(|error| Err(format!("dead-letter expiry panicked: {error}")));
    let mut run = DeadLetterRun {
        at_ms,
        cutoff_ms: cutoff,
        ..DeadLetterRun::default()
    };
    match outcome {
        Ok((removed, file_bytes)) => {
            run.removed = removed;
            run.file_bytes = file_bytes;
            if removed > 0 {
                tracing::info!(workspace = %workspace.id, removed, "retention removed old dead letters");
            }
        }
        Err(error) => {
            tracing::warn!(workspace = %workspace.id, %error, "dead-letter retention failed");
            run.error = Some(error);
        }
    }
    run
}

async fn erase_inactive_profiles(workspace: &Workspace, days: u64) -> ProfileRun {
    let at_ms = now_ms();
    let cutoff = cutoff_ms(at_ms, days);
    let mut run = ProfileRun {
        at_ms,
        cutoff_ms: cutoff,
        ..ProfileRun::default()
    };
    if let Err(error) = erase_inactive_into(workspace, cutoff, &mut run).await {
        tracing::warn!(workspace = %workspace.id, %error, "profile retention failed");
        run.error = Some(error.to_string());
    }
    run
}

async fn erase_inactive_into(
    workspace: &Workspace,
    cutoff: i64,
    run: &mut ProfileRun,
) -> anyhow::Result<()> {
    let store = workspace.unify.store();
    let (selected, scanned, more) = tokio::task::spawn_blocking(move || {
        select_inactive(
            &|after| {
                store.read(|kv| {
                    inactive_page(
                        kv,
                        after,
                        cutoff,
                        PROFILE_SCAN_PAGE,
                        PROFILES_ERASED_PER_SWEEP_MAX,
                    )
                })
            },
            PROFILES_ERASED_PER_SWEEP_MAX,
        )
    })
    .await??;
    run.scanned = scanned;
    run.selected = selected.len() as u64;
    run.more = more;
    if selected.is_empty() {
        return Ok(());
    }
    let controls = erase_controls(&selected, cutoff, run.at_ms);
    run.requests = controls
        .iter()
        .map(|(request, _)| request.clone())
        .collect();
    let records = controls
        .iter()
        .map(|(_, body)| crate::unify::control_record(body, run.at_ms))
        .collect();
    let offsets = workspace.log.append(records)?.await?;
    if !workspace
        .unify
        .wait_applied(offsets.end - 1, RETENTION_UNIFY_WAIT)
        .await
    {
        anyhow::bail!("unify did not apply the erase records within {RETENTION_UNIFY_WAIT:?}");
    }
    let store = workspace.unify.store();
    let erased = store
        .read(|kv| {
            let mut erased = 0u64;
            for offset in offsets.clone() {
                let outcome: Option<tandem_unify::ControlOutcome> = tandem_unify::model::get(
                    kv,
                    Table::Meta,
                    &tandem_unify::engine::control_outcome_key(offset),
                )?;
                if let Some(tandem_unify::ControlOutcome::Erased { profiles, .. }) = outcome {
                    erased += profiles.len() as u64;
                }
            }
            Ok(erased)
        })
        .map_err(|error| anyhow::anyhow!("unify store: {error}"))?;
    run.erased = erased;
    workspace.audiences.cache.clear();
    tracing::info!(workspace = %workspace.id, erased, selected = run.selected, "retention erased inactive profiles");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_unify::kv::MemoryKv;
    use tandem_unify::model::Provenance;

    fn profile(id: ProfileId, last_message_ms: i64) -> ProfileRow {
        let provenance = Provenance {
            source: "web".into(),
            message_id: format!("m{id}"),
            time_ms: last_message_ms,
            offset: id,
        };
        ProfileRow {
            id,
            created: provenance,
            first_message_ms: last_message_ms,
            last_message_ms,
            last_source: "web".into(),
            last_message_id: format!("m{id}"),
            event_count: 1,
            identities: Vec::new(),
            traits: Default::default(),
            groups: Vec::new(),
            splits: Vec::new(),
            merges: 0,
            computed: Default::default(),
        }
    }

    fn store(last_messages: &[(ProfileId, i64)]) -> MemoryKv {
        let mut kv = MemoryKv::default();
        for (id, last) in last_messages {
            tandem_unify::model::put(
                &mut kv,
                Table::Profiles,
                &id.to_be_bytes(),
                &profile(*id, *last),
            )
            .unwrap();
        }
        kv
    }

    #[test]
    fn cutoffs_count_whole_days_back() {
        let now = 1_800_000_000_000;
        assert_eq!(cutoff_ms(now, 1), now - DAY_MS);
        assert_eq!(cutoff_ms(now, 30), now - 30 * DAY_MS);
        // Far beyond any configurable value: saturates instead of wrapping.
        assert_eq!(cutoff_ms(i64::MIN + 5, 36_500), i64::MIN);
    }

    #[test]
    fn the_stricter_log_age_wins() {
        let mut config = Config::default();
        let mut retention = RetentionConfig::default();
        assert_eq!(log_max_age(&config, &retention), None);
        config.log.retention_hours = Some(48);
        assert_eq!(
            log_max_age(&config, &retention),
            Some((Duration::from_secs(48 * 3600), LogAgeSource::Log))
        );
        retention.log_days = Some(1);
        assert_eq!(
            log_max_age(&config, &retention),
            Some((Duration::from_secs(86_400), LogAgeSource::Workspace))
        );
        retention.log_days = Some(7);
        assert_eq!(
            log_max_age(&config, &retention).map(|(_, source)| source),
            Some(LogAgeSource::Log)
        );
        config.log.retention_hours = None;
        assert_eq!(
            log_max_age(&config, &retention),
            Some((Duration::from_secs(7 * 86_400), LogAgeSource::Workspace))
        );
    }

    #[test]
    fn profiles_are_selected_by_last_activity_across_pages() {
        let cutoff = 1_000;
        // Ids 1..=10; the even ones last seen before the cutoff, id 10 exactly at it (kept).
        let rows: Vec<(ProfileId, i64)> = (1..=10)
            .map(|id| match id {
                10 => (id, cutoff),
                _ if id % 2 == 0 => (id, cutoff - 1),
                _ => (id, cutoff + id as i64),
            })
            .collect();
        let kv = store(&rows);
        let page = |after| inactive_page(&kv, after, cutoff, 3, usize::MAX);
        let (selected, scanned, more) = select_inactive(&page, 100).unwrap();
        assert_eq!(selected, vec![2, 4, 6, 8]);
        assert_eq!((scanned, more), (10, false));
        // A limit stops the scan and says more remain.
        let (selected, _, more) = select_inactive(&page, 2).unwrap();
        assert_eq!((selected, more), (vec![2, 4], true));
    }

    #[test]
    fn erase_records_are_chunked_with_dated_request_ids() {
        let ids: Vec<ProfileId> = (0..(ERASE_RECORD_PROFILES_MAX as u64 * 2 + 1)).collect();
        // 2026-12-08T00:00:00Z.
        let now = 1_796_688_000_000;
        let controls = erase_controls(&ids, 42, now);
        assert_eq!(controls.len(), 3);
        assert_eq!(controls[0].0, "retention-2026-12-08-1");
        assert_eq!(controls[2].0, "retention-2026-12-08-3");
        let body = &controls[0].1;
        assert_eq!(body["control"], "erase");
        assert_eq!(body["inactiveBeforeMs"], 42);
        assert_eq!(
            body["profileIds"].as_array().unwrap().len(),
            ERASE_RECORD_PROFILES_MAX
        );
        assert_eq!(
            controls[2].1["profileIds"],
            serde_json::json!([format_profile_id(2000)])
        );
    }
}
