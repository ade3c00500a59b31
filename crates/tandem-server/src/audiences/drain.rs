//! The outbox drain of one workspace: appends the `Audience Entered`/`Exited` events the unify
//! task wrote to the outbox into the workspace log, as the built-in source `tandem-audiences`,
//! then trims the outbox.
//!
//! Why nothing is lost or announced twice:
//! * an outbox entry exists only in a durable commit (a batch, job step or sweep that writes one
//!   commits with fsync), so a crash cannot take back a membership whose event was appended;
//! * the event's messageId is a digest of the entry, and appends go through the dedup index
//!   (rebuilt from the log at start): entries appended but not yet trimmed when the process
//!   died are appended again after the restart with the same messageId, and dropped;
//! * the trim commits without fsync: a crash may bring entries back, never lose one.

use crate::state::AppState;
use std::time::Duration;
use tandem_audiences::state::{self, OutboxEntry};
use tandem_collect::Enriched;
use tandem_core::envelope::{dedup_key, AUDIENCES_SOURCE_ID};
use tandem_core::limits::AUDIENCE_OUTBOX_DRAIN_EVENTS_MAX;
use tandem_core::EventType;

/// The log record of an outbox entry.
pub fn enriched(entry: &OutboxEntry, workspace: &str, now_ms: i64) -> Enriched {
    let json = entry.event_json(workspace, now_ms);
    let message_id = entry.message_id();
    Enriched {
        event_type: EventType::Track,
        dedup_key: dedup_key(AUDIENCES_SOURCE_ID, &message_id),
        message_id,
        event_time_ms: entry.at_ms,
        user_id: json["userId"].as_str().map(str::to_string),
        anonymous_id: json["anonymousId"].as_str().map(str::to_string),
        json: serde_json::to_vec(&json).expect("JSON values serialize"),
    }
}

/// Runs until the process ends.
pub async fn run(state: AppState, workspace_id: String) {
    let Some(workspace) = state.workspaces.get(&workspace_id) else {
        return;
    };
    let audiences = workspace.audiences.clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = audiences.outbox.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        loop {
            let store = workspace.unify.store();
            let read = store.clone();
            let entries = match tokio::task::spawn_blocking(move || {
                read.read(|kv| state::outbox(kv, AUDIENCE_OUTBOX_DRAIN_EVENTS_MAX))
            })
            .await
            {
                Ok(Ok(entries)) => entries,
                Ok(Err(error)) => {
                    tracing::error!(workspace = %workspace_id, %error, "reading the audience outbox failed");
                    break;
                }
                Err(_) => break,
            };
            let Some(last) = entries.last().map(|entry| entry.sequence) else {
                backoff = Duration::from_millis(100);
                break;
            };
            let now = tandem_core::time_util::now_ms();
            let events: Vec<Enriched> = entries
                .iter()
                .map(|entry| enriched(entry, &workspace_id, now))
                .collect();
            match crate::routes::collect::append_enriched(
                &state,
                workspace,
                AUDIENCES_SOURCE_ID,
                events,
                now,
            )
            .await
            {
                Ok((stored, duplicates)) => {
                    backoff = Duration::from_millis(100);
                    record_metrics(&workspace_id, &entries, now);
                    if duplicates > 0 {
                        tracing::info!(workspace = %workspace_id, duplicates, stored, "audience events appended again after a restart were dropped as duplicates");
                    }
                    let trimmed = tokio::task::spawn_blocking(move || {
                        store.write(false, |kv| state::trim_outbox(kv, last))
                    })
                    .await;
                    if let Ok(Err(error)) = trimmed {
                        tracing::warn!(workspace = %workspace_id, %error, "trimming the audience outbox failed; its events will be deduplicated");
                    }
                    if entries.len() < AUDIENCE_OUTBOX_DRAIN_EVENTS_MAX {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(workspace = %workspace_id, error = %error.message, "appending audience events failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

fn record_metrics(workspace: &str, entries: &[OutboxEntry], now_ms: i64) {
    for entry in entries {
        let labels = [
            ("workspace", workspace.to_string()),
            ("audience", entry.audience.clone()),
        ];
        if entry.entered {
            metrics::counter!("tandem_audience_entered_total", &labels).increment(1);
        } else {
            metrics::counter!("tandem_audience_exited_total", &labels).increment(1);
        }
        metrics::histogram!("tandem_audience_change_to_log_seconds", &labels)
            .record((now_ms - entry.at_ms).max(0) as f64 / 1000.0);
    }
}
