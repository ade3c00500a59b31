//! Retention per workspace (`crate::retention`).
//!
//! `GET  /api/v1/workspaces/{ws}/retention` — the policy in force and the last run of each part
//!       (log, dead letters, profiles; the archive reported as not applicable yet), with the
//!       next run;
//! `POST /api/v1/workspaces/{ws}/retention/run` — runs the dead-letter and profile sweep now
//!       (the log's retention runs every maintenance interval anyway) and answers the report.

use crate::auth::{Authorized, ManagePrivacyRequests, ReadPrivacyRequests};
use crate::background::MAINTENANCE_INTERVAL;
use crate::error::ApiResult;
use crate::retention::{
    DeadLetterRun, LogAgeSource, LogRun, ProfileRun, ARCHIVE_NOT_APPLICABLE,
    RETENTION_SWEEP_INTERVAL,
};
use crate::routes::Routes;
use crate::state::{AppState, Workspace};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use tandem_core::time_util::format_iso8601_ms;

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/workspaces/{workspace}/retention", get(show))
        .route("/api/v1/workspaces/{workspace}/retention/run", post(run))
}

async fn show(
    State(state): State<AppState>,
    _auth: Authorized<ReadPrivacyRequests>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    Ok(Json(report(&state, workspace)))
}

async fn run(
    State(state): State<AppState>,
    _auth: Authorized<ManagePrivacyRequests>,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workspace = state.workspace(&workspace_id)?;
    crate::retention::sweep(&state, workspace).await;
    Ok(Json(report(&state, workspace)))
}

fn at(ms: i64) -> Value {
    json!(format_iso8601_ms(ms))
}

fn log_run(run: &LogRun) -> Value {
    json!({
        "at": at(run.at_ms),
        "segments_deleted": run.segments_deleted,
        "bytes_deleted": run.bytes_deleted,
    })
}

fn dead_letter_run(run: &DeadLetterRun) -> Value {
    json!({
        "at": at(run.at_ms),
        "cutoff": at(run.cutoff_ms),
        "removed": run.removed,
        "file_bytes": run.file_bytes,
        "error": run.error,
    })
}

fn profile_run(run: &ProfileRun) -> Value {
    json!({
        "at": at(run.at_ms),
        "cutoff": at(run.cutoff_ms),
        "scanned": run.scanned,
        "selected": run.selected,
        "erased": run.erased,
        "more": run.more,
        "requests": run.requests,
        "error": run.error,
    })
}

/// `enforced` with the policy, or `off` (kept forever).
fn status(days: Option<u64>) -> &'static str {
    if days.is_some() {
        "enforced"
    } else {
        "off: kept forever"
    }
}

pub fn report(state: &AppState, workspace: &Workspace) -> Value {
    let retention = &workspace.retention;
    let policy = &retention.policy;
    let runs = retention.runs();
    let next_sweep_ms = retention
        .next_sweep_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let next_sweep = (next_sweep_ms > 0).then(|| at(next_sweep_ms));
    let log_age = retention.log_max_age;
    json!({
        "workspace": workspace.id,
        "policy": {
            "log_days": policy.log_days,
            "dead_letters_days": policy.dead_letters_days,
            "profiles_inactive_days": policy.profiles_inactive_days,
            "archive_days": policy.archive_days,
        },
        "log": {
            "status": if log_age.is_some() || state.config.log.retention_bytes_max.is_some() { "enforced" } else { "off: kept forever" },
            "max_age_hours": log_age.map(|(age, _)| age.as_secs() / 3600),
            "max_age_from": log_age.map(|(_, source)| match source {
                LogAgeSource::Workspace => "workspaces.retention.log_days",
                LogAgeSource::Log => "log.retention_hours",
            }),
            "bytes_max": state.config.log.retention_bytes_max,
            "last_run": runs.log.as_ref().map(log_run),
            "last_deletion": runs.log_last_deletion.as_ref().map(log_run),
            "segments_deleted_total": runs.log_segments_deleted_total,
            "bytes_deleted_total": runs.log_bytes_deleted_total,
            "next_run": runs.log.as_ref().map(|run| at(run.at_ms + MAINTENANCE_INTERVAL.as_millis() as i64)),
            "interval_seconds": MAINTENANCE_INTERVAL.as_secs(),
        },
        "dead_letters": {
            "status": status(policy.dead_letters_days),
            "max_age_days": policy.dead_letters_days,
            "last_run": runs.dead_letters.as_ref().map(dead_letter_run),
            "removed_total": runs.dead_letters_removed_total,
            "next_run": policy.dead_letters_days.and(next_sweep.clone()),
            "interval_seconds": RETENTION_SWEEP_INTERVAL.as_secs(),
        },
        "profiles": {
            "status": status(policy.profiles_inactive_days),
            "inactive_days": policy.profiles_inactive_days,
            "last_run": runs.profiles.as_ref().map(profile_run),
            "erased_total": runs.profiles_erased_total,
            "next_run": policy.profiles_inactive_days.and(next_sweep),
            "interval_seconds": RETENTION_SWEEP_INTERVAL.as_secs(),
        },
        "archive": {
            "status": if policy.archive_days.is_some() { ARCHIVE_NOT_APPLICABLE } else { "off: kept forever" },
            "max_age_days": policy.archive_days,
        },
    })
}
