//! Access (export) and rectification requests.
//!
//! An access request writes one JSON document — every profile the identifier resolves to (the
//! 360° view: identities, traits with provenance, computed traits, accounts, audiences,
//! consent history), every event of those profiles as stored in the log, the dead letters
//! naming the person, and the connections their data may have gone to — to
//! `DATA/privacy/<ws>/exports/<id>.json`, downloadable for `DSR_EXPORT_RETENTION_MS`.
//!
//! A rectification appends an `identify` event with the corrected traits (source
//! `tandem-privacy`, under the person's userId or anonymousId), so the profile, every
//! destination and the archive learn it the way they learn an SDK's.

use super::erase::{seed_of, Matcher, Subject};
use super::DsrRequest;
use crate::state::{AppState, Workspace};
use crate::unify::LogRecords;
use serde_json::{json, Value};
use tandem_core::envelope::{dedup_key, EventEnvelope, EventType, PRIVACY_SOURCE_ID};
use tandem_core::time_util::{format_iso8601_ms, now_ms};
use tandem_core::{ids, limits::PROFILE_TRAITS_MAX};
use tandem_unify::engine::RecordSource;
use tandem_unify::query;

/// Most events an export lists per profile (newest first); the document says when it stopped.
pub const DSR_EXPORT_EVENTS_MAX: usize = 100_000;

fn subject_of(workspace: &Workspace, request: &DsrRequest) -> anyhow::Result<Subject> {
    super::erase::resolve(workspace, &[seed_of(request)?])
}

/// Builds and stores the export document; answers how many events it holds.
pub async fn access(
    _state: &AppState,
    workspace: &Workspace,
    request: &mut DsrRequest,
) -> anyhow::Result<u64> {
    let subject = subject_of(workspace, request)?;
    subject.record_in(request);
    let store = workspace.unify.store();
    let source = LogRecords(workspace.log.clone());
    let mut profiles = Vec::new();
    let mut events = Vec::new();
    let mut truncated = false;
    for profile in &subject.profiles {
        profiles.push(
            crate::routes::profiles::profile_view_json(workspace, profile)
                .map_err(|error| anyhow::anyhow!("{}", error.message))?,
        );
        let timeline = store
            .read(|kv| query::timeline(kv, profile.id, None, DSR_EXPORT_EVENTS_MAX + 1))
            .map_err(|error| anyhow::anyhow!("unify store: {error}"))?;
        truncated |= timeline.len() > DSR_EXPORT_EVENTS_MAX;
        for (_, row) in timeline.iter().take(DSR_EXPORT_EVENTS_MAX) {
            let stored = source.record(row.offset).and_then(|payload| {
                let envelope = EventEnvelope::decode(&payload).ok()?;
                serde_json::from_slice::<Value>(envelope.json).ok()
            });
            events.push(json!({
                "offset": row.offset,
                "type": row.event_type,
                "event": row.name,
                "message_id": row.message_id,
                "source_id": row.source,
                "stored": stored,
            }));
        }
    }
    let matcher = Matcher::new(workspace.unify.engine(), &subject);
    let dead_letters: Vec<Value> = workspace
        .activation
        .dlq
        .find_matching(&|entry| matcher.dead_letter(entry))
        .map_err(|error| anyhow::anyhow!("activate store: {error}"))?
        .into_iter()
        .map(|entry| {
            json!({
                "connection": entry.connection,
                "message_id": entry.message_id,
                "error": entry.error,
                "attempts": entry.attempts,
                "first_failure_at": format_iso8601_ms(entry.first_failure_ms),
                "event": entry.original,
            })
        })
        .collect();
    let connections: Vec<Value> = workspace
        .activation
        .connections()
        .map_err(|error| anyhow::anyhow!("{error}"))?
        .into_iter()
        .map(|(connection, _)| {
            json!({
                "connection": connection.id,
                "destination": connection.destination,
                "enabled": connection.enabled,
                "consent_categories": connection.consent_categories,
            })
        })
        .collect();
    let count = events.len() as u64;
    let document = json!({
        "request": request.id,
        "workspace": workspace.id,
        "generated_at": format_iso8601_ms(now_ms()),
        "identifiers": subject.pairs().into_iter().map(|(kind, value)| json!({"type": kind, "id": value})).collect::<Vec<_>>(),
        "profiles": profiles,
        "events": events,
        "events_truncated": truncated,
        "dead_letters": dead_letters,
        "connections": connections,
    });
    let path = workspace.privacy.export_path(&request.id);
    let bytes = serde_json::to_vec_pretty(&document)?;
    tokio::task::spawn_blocking(move || super::write_atomically(&path, &bytes)).await??;
    Ok(count)
}

/// Appends the identify event of a rectification; answers 1.
pub async fn rectify(
    state: &AppState,
    workspace: &Workspace,
    request: &mut DsrRequest,
) -> anyhow::Result<u64> {
    let subject = subject_of(workspace, request)?;
    let Some(profile) = subject.profiles.first() else {
        anyhow::bail!("no profile holds this identifier");
    };
    subject.record_in(request);
    let traits = request.traits.clone().unwrap_or_default();
    if traits.len() > PROFILE_TRAITS_MAX {
        anyhow::bail!("at most {PROFILE_TRAITS_MAX} traits");
    }
    let (user_id, anonymous_id) = crate::routes::consent::event_ids(profile);
    if user_id.is_none() && anonymous_id.is_none() {
        anyhow::bail!("the profile has no userId or anonymousId to rectify under");
    }
    let now = now_ms();
    let message_id = format!("rectify-{}", ids::random_secret(12));
    let mut event = json!({
        "type": "identify",
        "messageId": message_id,
        "timestamp": format_iso8601_ms(now),
        "receivedAt": format_iso8601_ms(now),
        "traits": traits,
        "context": {"dsr": {"request": request.id}},
    });
    if let Some(user_id) = &user_id {
        event["userId"] = json!(user_id);
    }
    if let Some(anonymous_id) = &anonymous_id {
        event["anonymousId"] = json!(anonymous_id);
    }
    let enriched = tandem_collect::Enriched {
        event_type: EventType::Identify,
        dedup_key: dedup_key(PRIVACY_SOURCE_ID, &message_id),
        message_id,
        event_time_ms: now,
        user_id,
        anonymous_id,
        json: serde_json::to_vec(&event)?,
    };
    crate::routes::collect::append_enriched(
        state,
        workspace,
        PRIVACY_SOURCE_ID,
        vec![enriched],
        now,
    )
    .await
    .map_err(|error| anyhow::anyhow!("{}", error.message))?;
    Ok(1)
}
