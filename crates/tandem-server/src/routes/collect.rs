//! The Segment HTTP Tracking API: `POST /v1/{track,identify,page,screen,group,alias,batch,import}`,
//! and the short paths analytics-next uses (`/v1/{t,i,p,s,g,a,b}`).
//!
//! Life of a request (see `crates/tandem-collect` for the per-event steps):
//! 1. The body is read up to `REQUEST_BODY_BYTES_MAX` and gzip-decoded if asked.
//! 2. It is parsed; request-level problems (bad JSON, too many events) answer 400 at once.
//! 3. The write key (Basic username, else `writeKey` in the body) is resolved to a source;
//!    unknown or disabled keys answer 401 and are counted per key (shadow IT).
//! 4. Each event is validated and enriched; an invalid event is rejected alone.
//! 5. When a tracking plan governs the source (`crate::plans`), each event is checked against
//!    it: allowed and flagged events go on (flagged ones with `context.violations`), quarantined
//!    ones go to the workspace's quarantine log, blocked ones are dropped; all are counted.
//! 6. Each event to store is checked against the dedup index; duplicates are acknowledged, not stored.
//! 7. The new events are appended to the workspace log as one group (the quarantined ones to the
//!    quarantine log); the answer waits for fsync.
//! 8. 200 `{"success":true}` (with `tracking_plan: {quarantined, blocked}` naming the events a plan
//!    held or dropped, when any) — or 400 naming each rejected event, the others being stored.

use crate::catalog::{KeyLookup, RequestOrigin, SourceEntry};
use crate::error::{ApiError, ApiResult};
use crate::plans::quarantine::{HeldEvent, HoldError};
use crate::plans::{Checked, Verdict};
use crate::routes::Routes;
use crate::state::{AppState, LiveEvent, Workspace};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tandem_collect::{DedupIndex, EnrichContext, Enriched, Rejection, RequestKind, Reservation};
use tandem_core::limits::REQUEST_BODY_BYTES_MAX;
use tandem_core::{time_util, ErrorCode, EventType};
use tandem_log::Record;

pub fn router() -> Routes {
    let mut router = Routes::new();
    for event_type in EventType::ALL {
        let name = event_type.as_str();
        // analytics-next posts to the one-letter paths (`/v1/t`, `/v1/p`, ...) to dodge ad blockers.
        for path in [format!("/v1/{name}"), format!("/v1/{}", &name[..1])] {
            router = router.route(
                path,
                post(move |state, peer, headers, body| {
                    collect(state, peer, headers, body, RequestKind::Single(event_type))
                }),
            );
        }
    }
    // `/v1/b` is analytics-next's batching path.
    for path in ["/v1/batch", "/v1/import", "/v1/b"] {
        router = router.route(
            path,
            post(|state, peer, headers, body| {
                collect(state, peer, headers, body, RequestKind::Batch)
            }),
        );
    }
    router
}

async fn collect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
    kind: RequestKind,
) -> Response {
    match collect_events(&state, peer, &headers, body, kind).await {
        Ok(response) => response,
        Err(error) => {
            metrics::counter!("tandem_collect_requests_failed_total", "code" => error.code.as_str()).increment(1);
            error.into_response()
        }
    }
}

async fn collect_events(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    kind: RequestKind,
) -> ApiResult<Response> {
    let received_at_ms = time_util::now_ms();
    let body = read_body(body).await?;
    metrics::histogram!("tandem_collect_request_bytes").record(body.len() as f64);
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok());
    let decoded = tandem_collect::decode_body(encoding, &body).map_err(request_error)?;
    let parsed = tandem_collect::parse_request(kind, &decoded).map_err(request_error)?;

    let write_key = basic_auth_user(headers)
        .or(parsed.write_key.clone())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingCredentials,
                "send the write key as the HTTP Basic username, or as `writeKey` in the body",
            )
        })?;
    let source = resolve_source(state, &write_key, headers, peer, received_at_ms)?;
    let batch = collect_parsed(state, &source, &parsed, received_at_ms, Some(peer.ip())).await?;
    Ok(answer(batch))
}

/// Everything after authentication, shared by `/v1/*` and the import jobs (`routes::imports`):
/// rate limit, validation and enrichment, dedup, the durable append, and the source's counters,
/// metrics and live stream. The events are stored as `source`'s.
pub(crate) async fn collect_parsed(
    state: &AppState,
    source: &Arc<SourceEntry>,
    parsed: &tandem_collect::ParsedRequest<'_>,
    received_at_ms: i64,
    ip: Option<std::net::IpAddr>,
) -> ApiResult<Batch> {
    let workspace = state
        .workspaces
        .get(&source.record.workspace_id)
        .ok_or_else(|| {
            ApiError::internal(format!(
                "source {} names unknown workspace {}",
                source.record.id, source.record.workspace_id
            ))
        })?;

    if let Err(seconds) = state.rate_limiter.admit(
        &format!("{}/{}", source.record.workspace_id, source.record.id),
        parsed.events.len(),
    ) {
        metrics::counter!("tandem_events_rate_limited_total", "workspace" => source.record.workspace_id.clone(), "source" => source.record.id.clone()).increment(parsed.events.len() as u64);
        let limit = state
            .config
            .collect
            .rate_limit_events_per_second
            .unwrap_or_default();
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "source {} is limited to {limit} events/s; nothing was stored, retry later",
                source.record.id
            ),
        )
        .retry_after(seconds));
    }
    let mut context = EnrichContext::new(&source.record.id, received_at_ms, ip, parsed);
    if workspace.pii.anonymize_ip {
        context = context.anonymizing_ip();
    }
    // Held from the suppression check to the append (see `crate::privacy`): once a
    // data-subject request has suppressed identifiers, nothing carrying them is stored.
    let gate = workspace.privacy.gate.read().await;
    let suppressor = workspace.privacy.suppressor(&workspace.unify);
    // Asked once per request: without a plan for this source, nothing below parses an event.
    let plan = workspace.plans.plan_for(&source.record.id);
    let mut batch = Batch {
        // Only someone watching the live stream needs each event's validation and fate.
        watched: state.live.receiver_count() > 0,
        ..Batch::default()
    };
    for (index, event) in parsed.events.iter().enumerate() {
        match event
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|event| tandem_collect::enrich(index, event, &context))
        {
            Ok(mut enriched) => {
                if suppressor.drops(&enriched) {
                    batch.suppressed += 1;
                    continue;
                }
                let verdict = match &plan {
                    None => Verdict::Store(None),
                    Some(plan) => workspace.plans.enforce(
                        plan,
                        &source.record.id,
                        &mut enriched,
                        received_at_ms,
                    ),
                };
                match verdict {
                    Verdict::Store(checked) => {
                        let validation = if batch.watched {
                            checked.as_ref().map(Checked::live_view)
                        } else {
                            None
                        };
                        if batch.admit(
                            enriched,
                            workspace,
                            &state.dedup,
                            received_at_ms,
                            &source.record.id,
                        ) && batch.watched
                        {
                            batch.accepted_validation.push(validation);
                        }
                    }
                    Verdict::Hold(plan, violations) => {
                        batch.quarantined.push((index, enriched.message_id.clone()));
                        if batch.watched {
                            let checked = Checked {
                                plan: plan.clone(),
                                violations: violations.clone(),
                            };
                            batch
                                .held_live
                                .push(held_live("quarantined", &enriched, &checked));
                        }
                        batch.held.extend(HeldEvent::new(
                            &enriched,
                            &source.record.id,
                            received_at_ms,
                            plan.id(),
                            plan.version,
                            violations,
                        ));
                    }
                    Verdict::Drop(checked) => {
                        if batch.watched {
                            batch
                                .held_live
                                .push(held_live("blocked", &enriched, &checked));
                        }
                        batch.blocked.push((index, enriched.message_id))
                    }
                }
            }
            Err(rejection) => batch.rejected.push(rejection),
        }
    }
    let event_count = parsed.events.len();
    metrics::histogram!("tandem_collect_batch_events").record(event_count as f64);

    if batch.suppressed > 0 {
        metrics::counter!("tandem_events_suppressed_total", "workspace" => workspace.id.clone())
            .increment(batch.suppressed as u64);
    }
    let offsets = store_batch(state, workspace, &mut batch, Some(gate)).await?;
    hold_batch(workspace, &mut batch).await?;
    record_outcome(state, source, &batch, event_count, received_at_ms, offsets);
    Ok(batch)
}

/// An event a plan kept out of the log, as the live stream shows it.
pub(crate) struct HeldLive {
    kind: &'static str,
    event: Option<Box<serde_json::value::RawValue>>,
    validation: serde_json::Value,
}

fn held_live(kind: &'static str, enriched: &Enriched, checked: &Checked) -> HeldLive {
    HeldLive {
        kind,
        event: String::from_utf8(enriched.json.clone())
            .ok()
            .and_then(|json| serde_json::value::RawValue::from_string(json).ok()),
        validation: checked.live_view(),
    }
}

/// The events of one request on their way into the log.
#[derive(Default)]
pub(crate) struct Batch {
    records: Vec<Record>,
    /// Someone watches the live stream: keep what it shows (`accepted_validation`, `held_live`).
    watched: bool,
    /// Events kept for the live stream (only when someone watches).
    pub(crate) accepted: Vec<Enriched>,
    /// The plan's verdict on each of `accepted` (when watched; `None`: no plan checked it).
    accepted_validation: Vec<Option<serde_json::Value>>,
    /// Events a plan quarantined or blocked (when watched).
    held_live: Vec<HeldLive>,
    /// Dedup keys reserved by this request: confirmed once durable, released if the append fails.
    reserved_keys: Vec<u64>,
    /// Events already stored (same source and messageId): acknowledged, not stored again.
    pub(crate) duplicates: usize,
    pub(crate) rejected: Vec<Rejection>,
    /// Events a quarantine plan holds, on their way to the quarantine log.
    held: Vec<HeldEvent>,
    /// (index, messageId) of the events a plan quarantined, and of those it blocked.
    pub(crate) quarantined: Vec<(usize, String)>,
    pub(crate) blocked: Vec<(usize, String)>,
    /// Events carrying an identifier a data-subject request suppressed: acknowledged, dropped.
    pub(crate) suppressed: usize,
}

impl Batch {
    fn admit(
        &mut self,
        enriched: Enriched,
        workspace: &Workspace,
        dedup: &DedupIndex,
        received_at_ms: i64,
        source_id: &str,
    ) -> bool {
        let key = enriched.dedup_key ^ workspace.dedup_salt;
        match dedup.reserve(key, received_at_ms) {
            Reservation::Duplicate => {
                self.duplicates += 1;
                return false;
            }
            Reservation::New => self.reserved_keys.push(key),
            // A concurrent request holds this messageId and is not yet durable: storing it again
            // is at-least-once; acknowledging it without storing could lose it if that request fails.
            Reservation::InFlight => {}
        }
        self.records.push(Record {
            timestamp_ms: received_at_ms,
            payload: Bytes::from(enriched.envelope_bytes(source_id)),
        });
        self.accepted.push(enriched);
        true
    }
}

async fn store_batch(
    state: &AppState,
    workspace: &Workspace,
    batch: &mut Batch,
    gate: Option<tokio::sync::RwLockReadGuard<'_, ()>>,
) -> ApiResult<Option<std::ops::Range<u64>>> {
    if batch.records.is_empty() {
        return Ok(None);
    }
    if !state.persist {
        state.dedup.confirm(&batch.reserved_keys);
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let records = std::mem::take(&mut batch.records);
    let appended = workspace.log.append(records);
    // The records are in the log's order now: a suppression may proceed.
    drop(gate);
    let durable = match appended {
        Ok(durable) => durable,
        Err(error) => {
            state.dedup.release(&batch.reserved_keys);
            metrics::counter!("tandem_collect_events_refused_total", "reason" => refusal_reason(&error)).increment(batch.accepted.len() as u64);
            return Err(error.into());
        }
    };
    // The wait for durability and the dedup bookkeeping after it run in their own task: if the
    // client disconnects, this handler is dropped, but the reserved keys must still be confirmed
    // (or released), else they would stay "in flight" and every retry would be stored again.
    let dedup = state.dedup.clone();
    let keys = batch.reserved_keys.clone();
    let accepted = batch.accepted.len() as u64;
    let settle = tokio::spawn(async move {
        let outcome = durable.await;
        match &outcome {
            Ok(_) => dedup.confirm(&keys),
            Err(error) => {
                dedup.release(&keys);
                metrics::counter!("tandem_collect_events_refused_total", "reason" => refusal_reason(error)).increment(accepted);
            }
        }
        outcome
    });
    let outcome = settle
        .await
        .map_err(|error| ApiError::internal(format!("append task failed: {error}")))?;
    match outcome {
        Ok(offsets) => {
            metrics::histogram!("tandem_collect_ack_seconds")
                .record(started.elapsed().as_secs_f64());
            Ok(Some(offsets))
        }
        Err(error) => Err(error.into()),
    }
}

/// Appends the batch's quarantined events to the quarantine log and waits for their fsync. Like
/// `store_batch`, the wait runs in its own task so a disconnecting client cannot leave the index
/// behind the log.
async fn hold_batch(workspace: &Workspace, batch: &mut Batch) -> ApiResult<()> {
    if batch.held.is_empty() {
        return Ok(());
    }
    let held = std::mem::take(&mut batch.held);
    let plans = workspace.plans.clone();
    let outcome = tokio::spawn(async move { plans.quarantine.hold(held).await })
        .await
        .map_err(|error| ApiError::internal(format!("quarantine task failed: {error}")))?;
    match outcome {
        Ok(_) => Ok(()),
        Err(HoldError::Full) => Err(ApiError::new(
            ErrorCode::Overloaded,
            format!("{}; nothing more can be held until then", HoldError::Full),
        )),
        Err(HoldError::Append(error)) => Err(error.into()),
    }
}

/// Events released from the quarantine (already enriched and re-checked) through the rest of the
/// pipeline: dedup (a second release of an event already stored is dropped as a duplicate),
/// the durable append, the live stream. Answers (stored, duplicates).
pub(crate) async fn append_released(
    state: &AppState,
    source: &Arc<SourceEntry>,
    events: Vec<Enriched>,
    now_ms: i64,
) -> ApiResult<(usize, usize)> {
    let workspace = state
        .workspaces
        .get(&source.record.workspace_id)
        .ok_or_else(|| ApiError::not_found(format!("workspace {}", source.record.workspace_id)))?;
    append_enriched(state, workspace, &source.record.id, events, now_ms).await
}

/// Events tandem made itself (or released) as `source_id`'s, through dedup, the durable append
/// and the live stream: what `append_released` and the audience outbox drain share. Answers
/// (stored, duplicates); an event whose (source, messageId) the log already holds within the
/// dedup window is a duplicate, not stored again.
pub(crate) async fn append_enriched(
    state: &AppState,
    workspace: &Workspace,
    source_id: &str,
    events: Vec<Enriched>,
    now_ms: i64,
) -> ApiResult<(usize, usize)> {
    let mut batch = Batch::default();
    let gate = workspace.privacy.gate.read().await;
    let suppressor = workspace.privacy.suppressor(&workspace.unify);
    for enriched in events {
        if suppressor.drops(&enriched) {
            batch.suppressed += 1;
            continue;
        }
        batch.admit(enriched, workspace, &state.dedup, now_ms, source_id);
    }
    batch.accepted_validation =
        vec![
            Some(json!({"outcome": "released", "note": "released from the quarantine"}));
            batch.accepted.len()
        ];
    let offsets = store_batch(state, workspace, &mut batch, Some(gate)).await?;
    if state.live.receiver_count() > 0 {
        publish_live(state, &workspace.id, source_id, &batch, now_ms, offsets);
    }
    Ok((batch.accepted.len(), batch.duplicates))
}

fn refusal_reason(error: &tandem_log::AppendError) -> &'static str {
    match error {
        tandem_log::AppendError::QueueFull => "overloaded",
        tandem_log::AppendError::DiskFull => "disk_full",
        _ => "log_error",
    }
}

fn record_outcome(
    state: &AppState,
    source: &SourceEntry,
    batch: &Batch,
    event_count: usize,
    received_at_ms: i64,
    offsets: Option<std::ops::Range<u64>>,
) {
    let workspace_id = source.record.workspace_id.clone();
    let source_id = source.record.id.clone();
    let accepted = (event_count - batch.rejected.len()) as u64;
    source.note_events(accepted, batch.rejected.len() as u64, received_at_ms);
    let labels = [
        ("workspace", workspace_id.clone()),
        ("source", source_id.clone()),
    ];
    metrics::counter!("tandem_events_accepted_total", &labels).increment(accepted);
    metrics::counter!("tandem_events_duplicate_total", &labels).increment(batch.duplicates as u64);
    for rejection in &batch.rejected {
        let labels = [
            ("workspace", workspace_id.clone()),
            ("source", source_id.clone()),
            ("reason", rejection.code.to_string()),
        ];
        metrics::counter!("tandem_events_rejected_total", &labels).increment(1);
    }
    if state.live.receiver_count() > 0 {
        publish_live(
            state,
            &workspace_id,
            &source_id,
            batch,
            received_at_ms,
            offsets,
        );
    }
}

fn publish_live(
    state: &AppState,
    workspace_id: &str,
    source_id: &str,
    batch: &Batch,
    received_at_ms: i64,
    offsets: Option<std::ops::Range<u64>>,
) {
    let first_offset = offsets.map(|range| range.start);
    let live_event = |kind: &'static str,
                      offset: Option<u64>,
                      event: Option<Box<serde_json::value::RawValue>>,
                      rejection: Option<serde_json::Value>,
                      validation: Option<serde_json::Value>| {
        Arc::new(LiveEvent {
            kind,
            workspace_id: workspace_id.to_string(),
            source_id: source_id.to_string(),
            received_at_ms,
            offset,
            event,
            rejection,
            validation,
        })
    };
    for (index, enriched) in batch.accepted.iter().enumerate() {
        let raw = String::from_utf8(enriched.json.clone())
            .ok()
            .and_then(|json| serde_json::value::RawValue::from_string(json).ok());
        let validation = batch.accepted_validation.get(index).cloned().flatten();
        let _ = state.live.send(live_event(
            "accepted",
            first_offset.map(|first| first + index as u64),
            raw,
            None,
            validation,
        ));
    }
    for held in &batch.held_live {
        let _ = state.live.send(live_event(
            held.kind,
            None,
            held.event.clone(),
            None,
            Some(held.validation.clone()),
        ));
    }
    for rejection in &batch.rejected {
        let _ = state.live.send(live_event(
            "rejected",
            None,
            None,
            serde_json::to_value(rejection).ok(),
            None,
        ));
    }
}

/// `{quarantined: [{index, messageId}], blocked: [...]}` when a plan held or dropped events.
fn plan_report(batch: &Batch) -> Option<serde_json::Value> {
    if batch.quarantined.is_empty() && batch.blocked.is_empty() {
        return None;
    }
    let list = |events: &[(usize, String)]| -> Vec<serde_json::Value> {
        events
            .iter()
            .map(|(index, message_id)| json!({"index": index, "messageId": message_id}))
            .collect()
    };
    Some(json!({"quarantined": list(&batch.quarantined), "blocked": list(&batch.blocked)}))
}

fn answer(batch: Batch) -> Response {
    let report = plan_report(&batch);
    if batch.rejected.is_empty() {
        return match report {
            None => Json(json!({"success": true})).into_response(),
            Some(report) => Json(json!({"success": true, "tracking_plan": report})).into_response(),
        };
    }
    let stored = batch.accepted.len() + batch.duplicates;
    let message = format!(
        "{} event(s) rejected; the other {} were accepted",
        batch.rejected.len(),
        stored
    );
    ApiError::new(ErrorCode::InvalidEvents, message)
        .with_details(
            json!({"accepted": stored, "rejected": batch.rejected, "tracking_plan": report}),
        )
        .into_response()
}

fn resolve_source(
    state: &AppState,
    write_key: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
    now_ms: i64,
) -> ApiResult<Arc<SourceEntry>> {
    let origin = || RequestOrigin {
        ip: Some(peer.ip().to_string()),
        user_agent: header_text(headers, header::USER_AGENT),
        origin: header_text(headers, header::ORIGIN),
    };
    match state.catalog.lookup(write_key) {
        KeyLookup::Enabled(source) => Ok(source),
        KeyLookup::Disabled(source) => {
            state.catalog.note_refused_key(
                write_key,
                ErrorCode::DisabledSource.as_str(),
                Some(source.record.key()),
                &origin(),
                now_ms,
            );
            Err(ApiError::new(
                ErrorCode::DisabledSource,
                "this write key belongs to a disabled source",
            ))
        }
        KeyLookup::Unknown => {
            state.catalog.note_refused_key(
                write_key,
                ErrorCode::UnknownWriteKey.as_str(),
                None,
                &origin(),
                now_ms,
            );
            Err(ApiError::new(
                ErrorCode::UnknownWriteKey,
                "the write key is not known",
            ))
        }
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// The write key from `Authorization: Basic base64(key:)` (the password is empty and ignored).
fn basic_auth_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text
        .split_once(':')
        .map_or(text.as_str(), |(user, _password)| user);
    (!user.is_empty()).then(|| user.to_string())
}

async fn read_body(body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, REQUEST_BODY_BYTES_MAX).await.map_err(|_| {
        ApiError::new(ErrorCode::BodyTooLarge, format!("the request body is larger than {REQUEST_BODY_BYTES_MAX} bytes (or was cut off)"))
    })
}

fn request_error(error: tandem_collect::RequestError) -> ApiError {
    ApiError::new(error.code, error.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_auth_user_is_the_write_key() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("key123:");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        assert_eq!(basic_auth_user(&headers).as_deref(), Some("key123"));
        let no_colon = base64::engine::general_purpose::STANDARD.encode("key456");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {no_colon}")).unwrap(),
        );
        assert_eq!(basic_auth_user(&headers).as_deref(), Some("key456"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_auth_user(&headers), None);
    }
}
