//! Running a data-subject request. Erasure, in this order (each a step of the report):
//!
//! 1. **resolve** the identifier through the identity graph to the profile and every linked
//!    identifier;
//! 2. **suppression**: their salted hashes, so nothing new of the person is stored; then wait
//!    for unify to apply everything already in the log, re-resolve (identifiers it linked
//!    meanwhile are suppressed too);
//! 3. **profiles**: an `erase` control record in the log; unify removes the profile and every
//!    row naming it (identities, links, timeline, consent history, computed traits, audience
//!    memberships) in the transaction that reaches it; the personalization cache forgets it;
//! 4. **log**: the active segment is sealed and every sealed segment rewritten with each of
//!    the person's records (events naming one of the identifiers, splits naming them) replaced
//!    by a tombstone at the same offset; the **quarantine** log likewise;
//! 5. **dead_letters** naming the person are removed;
//! 6. **destinations**: the deletion is forwarded to every destination (the warehouse deletes
//!    rows, files are rewritten, webhooks with a `delete_url` are called); one step each;
//! 7. **exports** of earlier access requests for the person are deleted;
//! 8. **vacuum**: the unify store and the activate store are rewritten with their live rows
//!    only, so no freed page keeps the person's bytes;
//! 9. **verify**: no profile holds any of the identifiers.
//!
//! Then the request forgets the identifier in clear. Every step is idempotent: a request a
//! restart interrupted runs again from the start.

use super::{DsrKind, DsrRequest, DsrStatus, DsrStep, WorkspacePrivacy};
use crate::state::{AppState, Workspace};
use crate::unify::control_record;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_core::envelope::{EventEnvelope, EventType};
use tandem_core::time_util::now_ms;
use tandem_unify::identity::{normalize, Identity};
use tandem_unify::model::{format_profile_id, ProfileRow};
use tandem_unify::query;

/// How long a request waits for unify to apply the log (or the erase record) before failing.
pub const DSR_UNIFY_WAIT: Duration = Duration::from_secs(600);
/// Identifier values at least this long also erase records that carry them anywhere as a
/// JSON string (a referral's `properties.email`), not only as an identifier.
pub const DSR_MATCH_ANYWHERE_CHARS_MIN: usize = 8;
/// Resolution rounds (resolve, suppress, let unify catch up) before the identifier set is
/// taken as complete.
const RESOLVE_ROUNDS_MAX: usize = 3;

/// Who the request is about: every identifier the graph links, and the profiles.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub identities: HashSet<Identity>,
    pub profiles: Vec<ProfileRow>,
}

impl Subject {
    /// The identifiers as (type, value) pairs, for destinations.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self
            .identities
            .iter()
            .map(|identity| (identity.kind.clone(), identity.value.clone()))
            .collect();
        pairs.sort();
        pairs
    }

    /// What the request shows of the subject: how many identifiers, which profiles.
    pub fn record_in(&self, request: &mut DsrRequest) {
        request.identifiers = self.identities.len();
        request.profiles = self
            .profiles
            .iter()
            .map(|profile| format_profile_id(profile.id))
            .collect();
    }

    fn quoted_values(&self) -> Vec<Vec<u8>> {
        self.identities
            .iter()
            .filter(|identity| identity.value.chars().count() >= DSR_MATCH_ANYWHERE_CHARS_MIN)
            .map(|identity| serde_json::to_vec(&identity.value).expect("strings serialize"))
            .collect()
    }
}

/// Decides whether a stored event (its type and JSON) is the subject's.
pub struct Matcher {
    engine: Arc<tandem_unify::Engine>,
    identities: HashSet<Identity>,
    values: HashSet<String>,
    quoted: Vec<Vec<u8>>,
}

impl Matcher {
    pub fn new(engine: Arc<tandem_unify::Engine>, subject: &Subject) -> Matcher {
        Matcher {
            engine,
            identities: subject.identities.clone(),
            values: subject
                .identities
                .iter()
                .map(|identity| identity.value.clone())
                .collect(),
            quoted: subject.quoted_values(),
        }
    }

    /// Whether an event, as its JSON bytes, is the subject's.
    pub fn event(&self, event_type: EventType, json: &[u8]) -> bool {
        if self.quotes_a_value(json) {
            return true;
        }
        serde_json::from_slice::<Value>(json).is_ok_and(|event| self.names(event_type, &event))
    }

    /// Whether an event already parsed (a dead letter's, a quarantine entry's) is the subject's.
    pub fn value(&self, event_type: EventType, event: &Value) -> bool {
        (!self.quoted.is_empty()
            && self.quotes_a_value(&serde_json::to_vec(event).expect("JSON values serialize")))
            || self.names(event_type, event)
    }

    /// Whether a dead letter's event is the subject's.
    pub fn dead_letter(&self, entry: &tandem_activate::dlq::DlqEntry) -> bool {
        let kind = EventType::parse(&entry.event_type).unwrap_or(EventType::Track);
        self.value(kind, &entry.original)
    }

    /// One of the long identifier values anywhere as a JSON string.
    fn quotes_a_value(&self, json: &[u8]) -> bool {
        self.quoted
            .iter()
            .any(|quoted| memchr::memmem::find(json, quoted).is_some())
    }

    /// The event names one of the identifiers (or, a split, one of their values).
    fn names(&self, event_type: EventType, event: &Value) -> bool {
        if event_type == EventType::Control {
            // A split names identities; an erase or a tombstone names none.
            return event
                .get("identities")
                .and_then(Value::as_array)
                .is_some_and(|identities| {
                    identities.iter().any(|identity| {
                        identity
                            .get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|value| self.values.contains(value))
                    })
                });
        }
        let extracted = self.engine.rules.extract(event_type, event);
        extracted
            .user
            .iter()
            .any(|identity| self.identities.contains(identity))
            || extracted
                .previous_id
                .is_some_and(|previous| self.values.contains(&previous))
    }

    /// A log record (an envelope): the tombstone to store instead, if it is the subject's.
    pub fn tombstone(&self, payload: &[u8], request: &str) -> Option<Vec<u8>> {
        let envelope = EventEnvelope::decode(payload).ok()?;
        if !self.event(envelope.event_type, envelope.json) {
            return None;
        }
        let json = serde_json::to_vec(&json!({"control": "erased", "request": request}))
            .expect("JSON values serialize");
        Some(
            EventEnvelope {
                event_type: EventType::Control,
                dedup_key: envelope.dedup_key,
                event_time_ms: envelope.event_time_ms,
                source_id: crate::unify::CONTROL_SOURCE_ID,
                json: &json,
            }
            .encode(),
        )
    }
}

/// The profile holding each identity, and their identities, until the set stops growing.
pub(super) fn resolve(workspace: &Workspace, seed: &[Identity]) -> anyhow::Result<Subject> {
    let store = workspace.unify.store();
    let mut subject = Subject {
        identities: seed.iter().cloned().collect(),
        profiles: Vec::new(),
    };
    let mut seen_profiles = HashSet::new();
    loop {
        let before = subject.identities.len();
        for identity in subject.identities.clone() {
            let found = store
                .read(|kv| query::profile_by_identity(kv, &identity))
                .map_err(|error| anyhow::anyhow!("unify store: {error}"))?;
            if let Some(profile) = found {
                if seen_profiles.insert(profile.id) {
                    subject.identities.extend(
                        profile
                            .identities
                            .iter()
                            .map(|(identity, _)| identity.clone()),
                    );
                    subject.profiles.push(profile);
                }
            }
        }
        if subject.identities.len() == before {
            return Ok(subject);
        }
    }
}

/// The subject of a request: resolved, suppressed, and resolved again after unify has applied
/// every record stored before the suppression.
async fn resolve_and_suppress(
    workspace: &Workspace,
    privacy: &WorkspacePrivacy,
    seed: Identity,
    request: &str,
) -> anyhow::Result<Subject> {
    let mut subject = resolve(workspace, std::slice::from_ref(&seed))?;
    for _ in 0..RESOLVE_ROUNDS_MAX {
        let identities: Vec<Identity> = subject.identities.iter().cloned().collect();
        privacy.suppress(&identities, request).await?;
        let end = workspace.log.stats().end_offset;
        if end > 0 && !workspace.unify.wait_applied(end - 1, DSR_UNIFY_WAIT).await {
            anyhow::bail!("unify did not apply the log within {DSR_UNIFY_WAIT:?}");
        }
        let seeds: Vec<Identity> = subject.identities.iter().cloned().collect();
        let again = resolve(workspace, &seeds)?;
        if again.identities == subject.identities {
            return Ok(again);
        }
        subject = again;
    }
    Ok(subject)
}

struct Run<'a> {
    privacy: &'a WorkspacePrivacy,
    request: DsrRequest,
}

impl Run<'_> {
    fn step(&mut self, store: &str, status: &str, detail: String, count: u64, started: Instant) {
        self.request.steps.retain(|step| step.store != store);
        self.request.steps.push(DsrStep {
            store: store.to_string(),
            status: status.to_string(),
            detail,
            count,
            at_ms: now_ms(),
            took_ms: started.elapsed().as_millis() as u64,
        });
        if let Err(error) = self.privacy.save(&self.request) {
            tracing::error!(%error, request = %self.request.id, "saving a DSR request failed");
        }
    }

    fn done(&mut self, store: &str, detail: String, count: u64, started: Instant) {
        self.step(store, "done", detail, count, started);
    }

    fn failed(&mut self, store: &str, detail: String, started: Instant) {
        self.step(store, "failed", detail, 0, started);
    }
}

/// Runs `request` to its end (the caller spawned it); one request at a time per workspace.
pub async fn run(state: AppState, workspace_id: String, request_id: String) {
    let Ok(workspace) = state.workspace(&workspace_id) else {
        return;
    };
    let privacy = workspace.privacy.clone();
    let _one_at_a_time = privacy.runner.lock().await;
    let Some(mut request) = privacy.get(&request_id) else {
        return;
    };
    if !matches!(request.status, DsrStatus::Pending | DsrStatus::Running) {
        return;
    }
    request.status = DsrStatus::Running;
    request.started_at_ms = Some(now_ms());
    request.steps.clear();
    let mut run = Run {
        privacy: &privacy,
        request,
    };
    let _ = privacy.save(&run.request);
    let outcome = match run.request.kind {
        DsrKind::Erasure => erase(&state, workspace, &mut run).await,
        DsrKind::Suppression => suppress_only(workspace, &mut run).await,
        DsrKind::Access => super::export::access(&state, workspace, &mut run.request)
            .await
            .map(|count| {
                let started = Instant::now();
                run.done(
                    "export",
                    "the export document is ready".into(),
                    count,
                    started,
                );
            }),
        DsrKind::Rectification => super::export::rectify(&state, workspace, &mut run.request)
            .await
            .map(|count| {
                let started = Instant::now();
                run.done(
                    "rectification",
                    "identify event with the corrected traits appended to the log".into(),
                    count,
                    started,
                );
            }),
    };
    let mut request = run.request;
    request.completed_at_ms = Some(now_ms());
    match outcome {
        Ok(()) if request.steps.iter().all(|step| step.status != "failed") => {
            request.status = DsrStatus::Completed;
        }
        Ok(()) => request.status = DsrStatus::Failed,
        Err(error) => {
            request.status = DsrStatus::Failed;
            request.error = Some(format!("{error:#}"));
        }
    }
    // The identifier in clear and the traits leave the request once it is done; a failed
    // request keeps them so it can be retried.
    if request.status == DsrStatus::Completed {
        request.subject_value = None;
        request.traits = None;
    }
    if let Err(error) = privacy.save(&request) {
        tracing::error!(%error, request = %request.id, "saving a DSR request failed");
    }
    metrics::counter!("tandem_dsr_requests_total", "workspace" => workspace_id, "type" => format!("{:?}", request.kind).to_lowercase(), "status" => request.status.as_str()).increment(1);
}

/// The identifier a request names, normalized as unify stores it.
pub fn seed_of(request: &DsrRequest) -> anyhow::Result<Identity> {
    let value = request
        .subject_value
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("the request no longer holds its identifier"))?;
    Ok(Identity::new(
        &request.subject_type,
        &normalize(&request.subject_type, value),
    ))
}

async fn suppress_only(workspace: &Workspace, run: &mut Run<'_>) -> anyhow::Result<()> {
    let started = Instant::now();
    let seed = seed_of(&run.request)?;
    let subject =
        resolve_and_suppress(workspace, run.privacy, seed, &run.request.id.clone()).await?;
    subject.record_in(&mut run.request);
    run.done(
        "suppression",
        format!(
            "{} identifiers suppressed (salted SHA-256): future events carrying them are acknowledged and dropped",
            subject.identities.len()
        ),
        subject.identities.len() as u64,
        started,
    );
    Ok(())
}

async fn erase(state: &AppState, workspace: &Workspace, run: &mut Run<'_>) -> anyhow::Result<()> {
    let request_id = run.request.id.clone();
    let seed = seed_of(&run.request)?;
    let started = Instant::now();
    let subject = resolve_and_suppress(workspace, run.privacy, seed, &request_id).await?;
    subject.record_in(&mut run.request);
    run.done(
        "suppression",
        format!(
            "{} identifiers linked by the identity graph, suppressed (salted SHA-256)",
            subject.identities.len()
        ),
        subject.identities.len() as u64,
        started,
    );

    // Profiles: the erase control record, applied by unify in order with the events.
    let started = Instant::now();
    let control = json!({
        "control": "erase",
        "request": request_id,
        "profileIds": run.request.profiles,
    });
    let offsets = workspace
        .log
        .append(vec![control_record(&control, now_ms())])?
        .await?;
    if !workspace
        .unify
        .wait_applied(offsets.start, DSR_UNIFY_WAIT)
        .await
    {
        anyhow::bail!("unify did not apply the erase record within {DSR_UNIFY_WAIT:?}");
    }
    let outcome: Option<tandem_unify::ControlOutcome> = workspace
        .unify
        .store()
        .read(|kv| {
            tandem_unify::model::get(
                kv,
                tandem_unify::kv::Table::Meta,
                &tandem_unify::engine::control_outcome_key(offsets.start),
            )
        })
        .map_err(|error| anyhow::anyhow!("unify store: {error}"))?;
    let rows = match outcome {
        Some(tandem_unify::ControlOutcome::Erased { rows, .. }) => rows,
        _ => Default::default(),
    };
    workspace.audiences.cache.clear();
    run.done(
        "profiles",
        format!(
            "profile, identity graph, timeline, consent history, computed traits and audience memberships removed ({} profiles, {} identities, {} links, {} timeline rows, {} consent rows, {} computed traits, {} merges)",
            rows.profiles, rows.identities, rows.links, rows.timeline, rows.consent, rows.computed, rows.merges
        ),
        rows.total(),
        started,
    );

    // The log and the quarantine log: tombstones in place of the person's records.
    let matcher = Arc::new(Matcher::new(workspace.unify.engine(), &subject));
    let started = Instant::now();
    match rewrite_log(&workspace.file_log, &matcher, &request_id).await {
        Ok(report) => run.done(
            "log",
            format!(
                "{} records replaced by tombstones in {} of {} segments (offsets kept)",
                report.records_replaced, report.segments_rewritten, report.segments_scanned
            ),
            report.records_replaced,
            started,
        ),
        Err(error) => run.failed("log", format!("{error:#}"), started),
    }
    let started = Instant::now();
    match erase_quarantine(workspace, &matcher, &request_id).await {
        Ok(count) => run.done(
            "quarantine",
            format!("{count} quarantined events replaced by tombstones"),
            count,
            started,
        ),
        Err(error) => run.failed("quarantine", format!("{error:#}"), started),
    }

    // Dead letters.
    let started = Instant::now();
    let dlq = workspace.activation.dlq.clone();
    let names = matcher.clone();
    let erased =
        tokio::task::spawn_blocking(move || dlq.erase_matching(&|entry| names.dead_letter(entry)))
            .await?;
    match erased {
        Ok(count) => run.done(
            "dead_letters",
            format!("{count} dead letters removed"),
            count,
            started,
        ),
        Err(error) => run.failed("dead_letters", error.to_string(), started),
    }

    // Destinations.
    let pairs = subject.pairs();
    match workspace.activation.forward_deletion(&pairs).await {
        Ok(outcomes) => {
            for (destination, kind, outcome) in outcomes {
                let store = format!("destination:{destination}");
                let started = Instant::now();
                match outcome {
                    tandem_activate::DeleteOutcome::Deleted => run.done(
                        &store,
                        format!("{kind}: the subject's data deleted"),
                        1,
                        started,
                    ),
                    tandem_activate::DeleteOutcome::Unsupported => run.step(
                        &store,
                        "unsupported",
                        format!("{kind} destinations cannot delete: the operator must erase the person there by hand"),
                        0,
                        started,
                    ),
                    tandem_activate::DeleteOutcome::Failed { error, retryable } => run.failed(
                        &store,
                        format!("{kind}: {error}{}", if retryable { " (retry the request)" } else { "" }),
                        started,
                    ),
                }
            }
        }
        Err(error) => run.failed("destinations", error.to_string(), Instant::now()),
    }

    // Exports of earlier access requests for the person.
    let started = Instant::now();
    let hashes: HashSet<String> = subject
        .identities
        .iter()
        .map(|identity| run.privacy.hash(identity))
        .collect();
    let removed = run.privacy.remove_exports(&hashes, now_ms());
    run.done(
        "exports",
        format!("{removed} earlier export documents deleted"),
        removed,
        started,
    );

    // Vacuum: no freed page keeps the person's bytes.
    let started = Instant::now();
    let unify_bytes = workspace.unify.vacuum().await;
    let dlq = workspace.activation.dlq.clone();
    let dlq_bytes = tokio::task::spawn_blocking(move || dlq.vacuum()).await?;
    match (unify_bytes, dlq_bytes) {
        (Ok(unify), Ok(activate)) => run.done(
            "vacuum",
            format!("unify store ({unify} bytes) and activate store ({activate} bytes) rewritten with live rows only"),
            2,
            started,
        ),
        (unify, activate) => run.failed(
            "vacuum",
            format!("unify store: {unify:?}; activate store: {:?}", activate.map_err(|e| e.to_string())),
            started,
        ),
    }

    // Verify.
    let started = Instant::now();
    let seeds: Vec<Identity> = subject.identities.iter().cloned().collect();
    let left = resolve(workspace, &seeds)?;
    if left.profiles.is_empty() {
        run.done(
            "verify",
            "no profile holds any of the identifiers".into(),
            0,
            started,
        );
    } else {
        run.failed(
            "verify",
            format!("{} profiles still hold an identifier", left.profiles.len()),
            started,
        );
    }
    let _ = state;
    Ok(())
}

/// Seals the active segment, then rewrites every sealed segment of `log` with the subject's
/// records tombstoned.
async fn rewrite_log(
    log: &Arc<tandem_log::FileLog>,
    matcher: &Arc<Matcher>,
    request: &str,
) -> anyhow::Result<tandem_log::RewriteReport> {
    let below = log.roll().await?;
    let (log, matcher, request) = (log.clone(), matcher.clone(), request.to_string());
    Ok(tokio::task::spawn_blocking(move || {
        log.rewrite_sealed(below, &|payload| matcher.tombstone(payload, &request))
    })
    .await??)
}

/// The quarantine log holds `{…, "type", "event"}` entries: the subject's are tombstoned and
/// leave the pending index.
async fn erase_quarantine(
    workspace: &Workspace,
    matcher: &Arc<Matcher>,
    request: &str,
) -> anyhow::Result<u64> {
    let log = workspace.plans.quarantine_log.clone();
    let below = log.roll().await?;
    let names = {
        let matcher = matcher.clone();
        move |payload: &[u8]| -> bool {
            let Ok(entry) = serde_json::from_slice::<Value>(payload) else {
                return false;
            };
            let kind = entry
                .get("type")
                .and_then(Value::as_str)
                .and_then(EventType::parse)
                .unwrap_or(EventType::Track);
            entry
                .get("event")
                .is_some_and(|event| matcher.value(kind, event))
        }
    };
    // The ids (offsets) of the entries to forget, read before they become tombstones.
    let mut ids = Vec::new();
    let mut next = tandem_log::EventLog::stats(log.as_ref()).start_offset;
    loop {
        let records = tandem_log::EventLog::read(log.as_ref(), next, 1024)?;
        let Some(last) = records.last().map(|r| r.offset) else {
            break;
        };
        for record in &records {
            if record.offset < below && names(&record.payload) {
                ids.push(record.offset);
            }
        }
        next = last + 1;
        if next >= below {
            break;
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    let request = request.to_string();
    let tombstone = serde_json::to_vec(&json!({"erased": true, "request": request}))?;
    let rewrite_log = log.clone();
    let report = tokio::task::spawn_blocking(move || {
        rewrite_log.rewrite_sealed(below, &|payload| names(payload).then(|| tombstone.clone()))
    })
    .await??;
    workspace.plans.quarantine.forget(&ids);
    Ok(report.records_replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(event_type: EventType, json: Value) -> Vec<u8> {
        let json = serde_json::to_vec(&json).unwrap();
        EventEnvelope {
            event_type,
            dedup_key: 7,
            event_time_ms: 1_700_000_000_000,
            source_id: "web",
            json: &json,
        }
        .encode()
    }

    fn matcher() -> Matcher {
        let subject = Subject {
            identities: HashSet::from([
                Identity::new("user_id", "ada-42"),
                Identity::new("anonymous_id", "device-phone-1"),
                Identity::new("email", "ada@example.org"),
            ]),
            profiles: Vec::new(),
        };
        let engine = tandem_unify::Engine::new(tandem_unify::IdentityRules::default());
        Matcher::new(Arc::new(engine), &subject)
    }

    #[test]
    fn the_persons_records_become_tombstones_with_the_same_key_and_time() {
        let matcher = matcher();
        let theirs = [
            envelope(
                EventType::Track,
                json!({"userId": "ada-42", "event": "Viewed"}),
            ),
            envelope(EventType::Page, json!({"anonymousId": "device-phone-1"})),
            envelope(
                EventType::Identify,
                json!({"anonymousId": "x", "traits": {"email": "Ada@Example.org"}}),
            ),
            envelope(
                EventType::Alias,
                json!({"userId": "new-id", "previousId": "device-phone-1"}),
            ),
            // Named anywhere as a string (a referral): erased too.
            envelope(
                EventType::Track,
                json!({"userId": "bob", "event": "Referred", "properties": {"friend": "ada@example.org"}}),
            ),
            envelope(
                EventType::Control,
                json!({"control": "split", "identities": [{"type": "user_id", "id": "ada-42"}]}),
            ),
        ];
        for record in &theirs {
            let tombstone = matcher
                .tombstone(record, "dsr_1")
                .expect("the person's record");
            let decoded = EventEnvelope::decode(&tombstone).unwrap();
            let original = EventEnvelope::decode(record).unwrap();
            assert_eq!(decoded.event_type, EventType::Control);
            assert_eq!(decoded.dedup_key, original.dedup_key);
            assert_eq!(decoded.event_time_ms, original.event_time_ms);
            let text = String::from_utf8_lossy(&tombstone);
            assert!(
                !text.contains("ada") && !text.contains("device-phone"),
                "{text}"
            );
            // A tombstone is not matched again.
            assert!(matcher.tombstone(&tombstone, "dsr_1").is_none());
        }
        let others = [
            envelope(
                EventType::Track,
                json!({"userId": "bob", "event": "Viewed"}),
            ),
            envelope(
                EventType::Track,
                json!({"userId": "ada-4", "event": "Viewed"}),
            ),
            // A short value elsewhere is not a match (only identifiers are).
            envelope(
                EventType::Track,
                json!({"userId": "bob", "properties": {"code": "ada-42x"}}),
            ),
        ];
        for record in &others {
            assert!(matcher.tombstone(record, "dsr_1").is_none());
        }
    }
}
