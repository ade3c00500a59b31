//! Work the server does besides answering requests: flushing catalog activity, refreshing gauges,
//! keeping dedup sidecars for sealed segments, forgetting old dedup entries, enforcing retention.

use crate::state::{AppState, Workspace};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tandem_collect::DedupIndex;
use tandem_core::EventEnvelope;
use tandem_log::SegmentInfo;

/// How often source activity and unknown-key traffic are written to the metadata store.
pub const CATALOG_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// How often dedup eviction and retention run.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);
/// How often sealed segments get their dedup sidecar. After a crash, recovery scans the segments
/// that have none yet: a short interval bounds that to about one or two segments.
pub const SIDECAR_INTERVAL: Duration = Duration::from_secs(2);
/// Records read per call while scanning a segment to rebuild dedup entries.
const SCAN_BATCH_RECORDS: usize = 4096;

pub fn spawn(state: AppState) {
    every(state.clone(), CATALOG_FLUSH_INTERVAL, |state| {
        if let Err(error) = state.catalog.flush() {
            tracing::warn!(%error, "catalog activity flush failed");
        }
        for workspace in state.workspaces.values() {
            if let Err(error) = workspace.plans.flush() {
                tracing::warn!(workspace = %workspace.id, %error, "tracking plan counters flush failed");
            }
        }
    });
    every(state.clone(), MAINTENANCE_INTERVAL, maintain);
    every(state, SIDECAR_INTERVAL, |state| {
        for workspace in state.workspaces.values() {
            if let Err(error) = write_missing_sidecars(state, workspace) {
                tracing::warn!(workspace = %workspace.id, %error, "dedup sidecar upkeep failed");
            }
        }
    });
}

/// Runs blocking `work` every `interval` (first after one interval), off the async workers.
fn every(state: AppState, interval: Duration, work: fn(&AppState)) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let state = state.clone();
            let _ = tokio::task::spawn_blocking(move || work(&state)).await;
        }
    });
}

fn maintain(state: &AppState) {
    let now_ms = tandem_core::time_util::now_ms();
    state
        .dedup
        .evict_older_than(now_ms - dedup_window_ms(state));
    for workspace in state.workspaces.values() {
        let report = workspace.file_log.enforce_retention();
        workspace.retention.record_log(&report, now_ms);
    }
}

pub fn dedup_window_ms(state: &AppState) -> i64 {
    state.config.collect.dedup_window_hours as i64 * 3_600_000
}

/// Where the dedup sidecar of a segment lives (outside the log directory, which holds only segments).
pub fn sidecar_path(data_dir: &Path, workspace_id: &str, segment: &SegmentInfo) -> PathBuf {
    data_dir
        .join("dedup")
        .join(workspace_id)
        .join(format!("{:020}.dedup", segment.base_offset))
}

fn write_missing_sidecars(state: &AppState, workspace: &Workspace) -> std::io::Result<()> {
    let data_dir = &state.config.server.data_dir;
    let segments = workspace.log.segments();
    let sidecar_dir = data_dir.join("dedup").join(&workspace.id);
    std::fs::create_dir_all(&sidecar_dir)?;
    for segment in segments.iter().filter(|segment| segment.sealed) {
        let path = sidecar_path(data_dir, &workspace.id, segment);
        if !path.exists() {
            let entries = scan_segment(workspace, segment)?;
            tandem_collect::write_sidecar(&path, &entries)?;
        }
    }
    // Sidecars of segments removed by retention go too.
    let live: Vec<PathBuf> = segments
        .iter()
        .map(|segment| sidecar_path(data_dir, &workspace.id, segment))
        .collect();
    for entry in std::fs::read_dir(&sidecar_dir)? {
        let path = entry?.path();
        if !live.contains(&path) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// (dedup key, seen second) of every record of a segment.
fn scan_segment(workspace: &Workspace, segment: &SegmentInfo) -> std::io::Result<Vec<(u64, u32)>> {
    let mut entries = Vec::new();
    let mut next = segment.base_offset;
    while next < segment.end_offset {
        let batch = workspace
            .log
            .read(
                next,
                SCAN_BATCH_RECORDS.min((segment.end_offset - next) as usize),
            )
            .map_err(std::io::Error::other)?;
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        for record in &batch {
            if let Ok(envelope) = EventEnvelope::decode(&record.payload) {
                entries.push((
                    envelope.dedup_key,
                    (record.timestamp_ms / 1000).max(0) as u32,
                ));
            }
        }
    }
    Ok(entries)
}

/// Rebuilds the dedup index from the logs at start: sidecars for sealed segments, a scan for the
/// rest. Only segments modified within the dedup window are read; the index is sized up front
/// from the sidecars' lengths and the segments are read on every core at once.
pub fn recover_dedup(
    dedup: &DedupIndex,
    workspaces: &[&Workspace],
    data_dir: &Path,
    window_ms: i64,
) -> std::io::Result<usize> {
    let cutoff_ms = tandem_core::time_util::now_ms() - window_ms;
    let jobs: Vec<(&Workspace, SegmentInfo, PathBuf)> = workspaces
        .iter()
        .flat_map(|workspace| {
            workspace
                .log
                .segments()
                .into_iter()
                .filter(|segment| segment.modified_ms >= cutoff_ms)
                .map(move |segment| (*workspace, segment))
        })
        .map(|(workspace, segment)| {
            let path = sidecar_path(data_dir, &workspace.id, &segment);
            (workspace, segment, path)
        })
        .collect();
    let expected: u64 = jobs
        .iter()
        .filter_map(|(_, _, path)| std::fs::metadata(path).ok())
        .map(|metadata| metadata.len() / 12)
        .sum();
    dedup.reserve_capacity(expected as usize);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len().max(1));
    let next_job = std::sync::atomic::AtomicUsize::new(0);
    let recovered = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> std::io::Result<()> {
                    loop {
                        let index = next_job.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((workspace, segment, path)) = jobs.get(index) else {
                            return Ok(());
                        };
                        let entries =
                            match segment.sealed.then(|| tandem_collect::read_sidecar(path)) {
                                Some(Ok(entries)) => entries,
                                _ => scan_segment(workspace, segment)?,
                            };
                        let mut count = 0;
                        for (key, seen_secs) in entries {
                            if seen_secs as i64 * 1000 >= cutoff_ms {
                                dedup.insert_durable(
                                    key ^ workspace.dedup_salt,
                                    seen_secs as i64 * 1000,
                                );
                                count += 1;
                            }
                        }
                        recovered.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().expect("dedup recovery worker panicked"))
    })?;
    Ok(recovered.into_inner())
}

/// Gauges that are cheaper to read when scraped than to keep current.
pub fn refresh_gauges(state: &AppState) {
    for workspace in state.workspaces.values() {
        let stats = workspace.log.stats();
        let label = [("log", workspace.id.clone())];
        metrics::gauge!("tandem_log_bytes", &label).set(stats.bytes as f64);
        metrics::gauge!("tandem_log_segments", &label).set(stats.segments as f64);
        metrics::gauge!("tandem_log_end_offset", &label).set(stats.end_offset as f64);
        let applied = *workspace.unify.applied.borrow();
        let labels = [
            ("log", workspace.id.clone()),
            ("consumer", "unify".to_string()),
        ];
        metrics::gauge!("tandem_consumer_lag_records", &labels)
            .set(stats.end_offset.saturating_sub(applied) as f64);
        for (consumer, offset) in workspace.log.consumers() {
            let labels = [("log", workspace.id.clone()), ("consumer", consumer)];
            metrics::gauge!("tandem_consumer_lag_records", &labels)
                .set(stats.end_offset.saturating_sub(offset) as f64);
        }
    }
    metrics::gauge!("tandem_dedup_entries").set(state.dedup.len() as f64);
    if let Some(oldest_ms) = state.dedup.oldest_seen_ms() {
        metrics::gauge!("tandem_dedup_window_seconds")
            .set(((tandem_core::time_util::now_ms() - oldest_ms) / 1000) as f64);
    }
    metrics::gauge!("tandem_uptime_seconds").set(state.started_at.elapsed().as_secs_f64());
}
