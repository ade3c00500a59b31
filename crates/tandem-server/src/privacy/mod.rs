//! Data-subject requests (DSR) of one workspace: access (export), erasure, suppression and
//! rectification, created by any identifier and resolved through the identity graph to every
//! linked one.
//!
//! On disk, under `DATA/privacy/<workspace>/` (plain files, no embedded database: a database
//! keeps freed pages, and an erased person's identifier must not linger anywhere):
//! * `salt` — the workspace's random salt of suppression hashes (created once, fsynced);
//! * `suppressions.jsonl` — one line per suppressed identifier: its salted SHA-256, type,
//!   request and time (never the value), appended and fsynced;
//! * `requests/<id>.json` — each request, written atomically (temporary file, fsync, rename).
//!   The identifier in clear is kept only while the request runs (so a restart can resume it)
//!   and removed when it completes: a finished request holds its hash and the report;
//! * `exports/<id>.json` — an access request's document, removed after
//!   `DSR_EXPORT_RETENTION_MS` or by a later erasure of the same person.
//!
//! Suppression is enforced at collect: when the workspace has suppressed identifiers, every
//! event's identifiers are hashed and a match is acknowledged but not stored. The check and
//! the append happen under `gate` (read); adding hashes takes it for writing, so once
//! [`WorkspacePrivacy::suppress`] returns, every event of the person that will ever be stored
//! is already in the log.

pub mod erase;
pub mod export;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use tandem_unify::identity::{Identity, IdentityRules};

/// How long an access request's export stays downloadable.
pub const DSR_EXPORT_RETENTION_MS: i64 = 7 * 24 * 3_600_000;
/// The time a request must be answered in (GDPR art. 12(3): one month), for the SLA view.
pub const DSR_DUE_MS: i64 = 30 * 24 * 3_600_000;
/// Most requests one workspace keeps (oldest completed ones are dropped beyond).
pub const DSR_REQUESTS_MAX: usize = 100_000;
/// Longest identifier value a request may name.
pub const DSR_IDENTIFIER_CHARS_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DsrKind {
    Access,
    Erasure,
    Suppression,
    Rectification,
}

impl DsrKind {
    pub fn parse(text: &str) -> Option<DsrKind> {
        match text {
            "access" => Some(DsrKind::Access),
            "erasure" => Some(DsrKind::Erasure),
            "suppression" => Some(DsrKind::Suppression),
            "rectification" => Some(DsrKind::Rectification),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DsrStatus {
    Pending,
    Running,
    /// Every store done; destinations that cannot delete are listed in the steps.
    Completed,
    /// Done except for steps that failed (named in the steps); may be retried.
    Failed,
}

impl DsrStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DsrStatus::Pending => "pending",
            DsrStatus::Running => "running",
            DsrStatus::Completed => "completed",
            DsrStatus::Failed => "failed",
        }
    }
}

/// One store or destination a request reached: what was done there, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DsrStep {
    /// `suppression`, `profiles`, `log`, `quarantine`, `dead_letters`, `exports`,
    /// `personalization_cache`, `vacuum`, `destination:<id>`, `export`, `rectification`.
    pub store: String,
    /// `done`, `failed`, `unsupported` (the operator must act; the detail says where).
    pub status: String,
    pub detail: String,
    /// How many items it removed, rewrote or wrote (rows, records, objects, events).
    pub count: u64,
    pub at_ms: i64,
    pub took_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DsrRequest {
    pub id: String,
    pub workspace_id: String,
    #[serde(rename = "type")]
    pub kind: DsrKind,
    pub status: DsrStatus,
    pub subject_type: String,
    /// Salted SHA-256 of the normalized identifier (what stays once the request is done).
    pub subject_hash: String,
    /// The identifier in clear: only while the request is pending or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_value: Option<String>,
    /// Rectification: the corrected traits (removed once applied, like the identifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<serde_json::Map<String, serde_json::Value>>,
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub created_at_ms: i64,
    pub due_at_ms: i64,
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    #[serde(default)]
    pub completed_at_ms: Option<i64>,
    /// Identifiers the graph linked to the subject (count only).
    #[serde(default)]
    pub identifiers: usize,
    /// Profile ids the request concerned.
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub steps: Vec<DsrStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DsrRequest {
    /// The API's view: everything but the identifier in clear and the traits.
    pub fn view(&self) -> serde_json::Value {
        let time = tandem_core::time_util::format_iso8601_ms;
        serde_json::json!({
            "id": self.id,
            "workspace": self.workspace_id,
            "type": self.kind,
            "status": self.status,
            "subject": {"type": self.subject_type, "hash": self.subject_hash},
            "requested_by": self.requested_by,
            "note": self.note,
            "created_at": time(self.created_at_ms),
            "due_at": time(self.due_at_ms),
            "overdue": self.completed_at_ms.is_none() && tandem_core::time_util::now_ms() > self.due_at_ms,
            "started_at": self.started_at_ms.map(time),
            "completed_at": self.completed_at_ms.map(time),
            "took_ms": self.started_at_ms.zip(self.completed_at_ms).map(|(start, end)| end - start),
            "identifiers": self.identifiers,
            "profiles": self.profiles,
            "steps": self.steps.iter().map(|step| serde_json::json!({
                "store": step.store,
                "status": step.status,
                "detail": step.detail,
                "count": step.count,
                "at": time(step.at_ms),
                "took_ms": step.took_ms,
            })).collect::<Vec<_>>(),
            "error": self.error,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct SuppressionLine {
    hash: String,
    #[serde(rename = "type")]
    kind: String,
    request: String,
    at_ms: i64,
}

/// See [`WorkspacePrivacy::suppressor`].
pub struct Suppressor<'a> {
    privacy: &'a WorkspacePrivacy,
    engine: Option<std::sync::Arc<tandem_unify::Engine>>,
}

impl Suppressor<'_> {
    /// Whether this event carries a suppressed identifier (then it is acknowledged, not stored).
    pub fn drops(&self, enriched: &tandem_collect::Enriched) -> bool {
        self.engine.as_ref().is_some_and(|engine| {
            self.privacy
                .suppresses(&engine.rules, enriched.event_type, &enriched.json)
        })
    }
}

/// The privacy state of one workspace.
pub struct WorkspacePrivacy {
    dir: PathBuf,
    salt: String,
    suppressed: RwLock<HashSet<String>>,
    /// Collect holds it (read) from the suppression check to the append; `suppress` (write).
    pub gate: tokio::sync::RwLock<()>,
    requests: Mutex<BTreeMap<String, DsrRequest>>,
    /// One erasure or suppression at a time per workspace.
    pub runner: tokio::sync::Mutex<()>,
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl WorkspacePrivacy {
    pub fn open(data_dir: &Path, workspace_id: &str) -> anyhow::Result<WorkspacePrivacy> {
        let dir = data_dir.join("privacy").join(workspace_id);
        std::fs::create_dir_all(dir.join("requests"))?;
        std::fs::create_dir_all(dir.join("exports"))?;
        let salt_path = dir.join("salt");
        let salt = match std::fs::read_to_string(&salt_path) {
            Ok(salt) if !salt.trim().is_empty() => salt.trim().to_string(),
            _ => {
                let salt = tandem_core::ids::random_secret(32);
                write_atomically(&salt_path, salt.as_bytes())?;
                salt
            }
        };
        let mut suppressed = HashSet::new();
        if let Ok(text) = std::fs::read_to_string(dir.join("suppressions.jsonl")) {
            for line in text.lines() {
                // A torn last line (a crash mid-append, never acknowledged) is skipped.
                if let Ok(line) = serde_json::from_str::<SuppressionLine>(line) {
                    suppressed.insert(line.hash);
                }
            }
        }
        let mut requests = BTreeMap::new();
        for entry in std::fs::read_dir(dir.join("requests"))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<DsrRequest>(&bytes).ok())
            {
                Some(request) => {
                    requests.insert(request.id.clone(), request);
                }
                None => {
                    tracing::warn!(path = %path.display(), "unreadable DSR request file, ignored")
                }
            }
        }
        Ok(WorkspacePrivacy {
            dir,
            salt,
            suppressed: RwLock::new(suppressed),
            gate: tokio::sync::RwLock::new(()),
            requests: Mutex::new(requests),
            runner: tokio::sync::Mutex::new(()),
        })
    }

    /// The salted hash of an identity (type and normalized value).
    pub fn hash(&self, identity: &Identity) -> String {
        let mut digest = Sha256::new();
        digest.update(self.salt.as_bytes());
        digest.update([0]);
        digest.update(identity.key());
        digest
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    pub fn has_suppressions(&self) -> bool {
        !self.suppressed.read().is_empty()
    }

    pub fn suppressed_count(&self) -> usize {
        self.suppressed.read().len()
    }

    /// The check collect makes per event, set up once per request: nothing at all (not even a
    /// parse) while the workspace suppresses no one.
    pub fn suppressor(&self, unify: &crate::unify::Unify) -> Suppressor<'_> {
        Suppressor {
            privacy: self,
            engine: self.has_suppressions().then(|| unify.engine()),
        }
    }

    /// Whether an event (its type and JSON) carries a suppressed identifier.
    pub fn suppresses(
        &self,
        rules: &IdentityRules,
        event_type: tandem_core::EventType,
        json: &[u8],
    ) -> bool {
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(json) else {
            return false;
        };
        let extracted = rules.extract(event_type, &event);
        let suppressed = self.suppressed.read();
        let previous = extracted.previous_id.iter().flat_map(|value| {
            [
                Identity::new(tandem_unify::identity::USER_ID, value),
                Identity::new(tandem_unify::identity::ANONYMOUS_ID, value),
            ]
        });
        extracted
            .user
            .iter()
            .cloned()
            .chain(previous)
            .any(|identity| suppressed.contains(&self.hash(&identity)))
    }

    /// Adds the identities' hashes to the suppression list (durably) under the write gate:
    /// when this returns, no event carrying them will be stored again. Answers how many were new.
    pub async fn suppress(&self, identities: &[Identity], request: &str) -> std::io::Result<usize> {
        let _exclusive = self.gate.write().await;
        let now = tandem_core::time_util::now_ms();
        let mut lines = Vec::new();
        let mut fresh = Vec::new();
        {
            let known = self.suppressed.read();
            for identity in identities {
                let hash = self.hash(identity);
                if !known.contains(&hash) && !fresh.contains(&hash) {
                    let line = SuppressionLine {
                        hash: hash.clone(),
                        kind: identity.kind.clone(),
                        request: request.to_string(),
                        at_ms: now,
                    };
                    lines.extend(serde_json::to_vec(&line).expect("serializes"));
                    lines.push(b'\n');
                    fresh.push(hash);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        let path = self.dir.join("suppressions.jsonl");
        let lines = std::sync::Arc::new(lines);
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(&lines)?;
            file.sync_all()
        })
        .await
        .map_err(std::io::Error::other)??;
        let count = fresh.len();
        self.suppressed.write().extend(fresh);
        Ok(count)
    }

    /// Stores a request (atomically) and keeps it in memory.
    pub fn save(&self, request: &DsrRequest) -> std::io::Result<()> {
        let path = self
            .dir
            .join("requests")
            .join(format!("{}.json", request.id));
        write_atomically(
            &path,
            &serde_json::to_vec_pretty(request).expect("requests serialize"),
        )?;
        let mut requests = self.requests.lock();
        requests.insert(request.id.clone(), request.clone());
        if requests.len() > DSR_REQUESTS_MAX {
            let oldest = requests
                .values()
                .filter(|r| r.completed_at_ms.is_some())
                .min_by_key(|r| r.created_at_ms)
                .map(|r| r.id.clone());
            if let Some(oldest) = oldest {
                requests.remove(&oldest);
                let _ =
                    std::fs::remove_file(self.dir.join("requests").join(format!("{oldest}.json")));
            }
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<DsrRequest> {
        self.requests.lock().get(id).cloned()
    }

    /// Requests, newest first, optionally of one status.
    pub fn list(&self, status: Option<DsrStatus>) -> Vec<DsrRequest> {
        let mut list: Vec<DsrRequest> = self
            .requests
            .lock()
            .values()
            .filter(|request| status.is_none_or(|status| request.status == status))
            .cloned()
            .collect();
        list.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.id.cmp(&a.id)));
        list
    }

    /// Requests a restart interrupted (pending or running), to resume.
    pub fn unfinished(&self) -> Vec<DsrRequest> {
        self.requests
            .lock()
            .values()
            .filter(|r| matches!(r.status, DsrStatus::Pending | DsrStatus::Running))
            .cloned()
            .collect()
    }

    pub fn export_path(&self, id: &str) -> PathBuf {
        self.dir.join("exports").join(format!("{id}.json"))
    }

    /// Deletes exports older than the retention, or of requests whose subject hash is in
    /// `hashes` (an erasure of the same person). Answers how many were removed.
    pub fn remove_exports(&self, hashes: &HashSet<String>, now_ms: i64) -> u64 {
        let doomed: Vec<String> = self
            .requests
            .lock()
            .values()
            .filter(|r| r.kind == DsrKind::Access)
            .filter(|r| {
                hashes.contains(&r.subject_hash)
                    || r.completed_at_ms
                        .is_some_and(|done| now_ms - done > DSR_EXPORT_RETENTION_MS)
            })
            .map(|r| r.id.clone())
            .collect();
        let mut removed = 0;
        for id in doomed {
            if std::fs::remove_file(self.export_path(&id)).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            if let Ok(dir) = std::fs::File::open(self.dir.join("exports")) {
                let _ = dir.sync_all();
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::EventType;

    fn rules() -> IdentityRules {
        IdentityRules::default()
    }

    #[tokio::test]
    async fn suppression_is_durable_hashed_and_matches_events_by_any_identifier() {
        let dir = tempfile::tempdir().unwrap();
        let privacy = WorkspacePrivacy::open(dir.path(), "ws").unwrap();
        assert!(!privacy.has_suppressions());
        let ada = [
            Identity::new("user_id", "ada-42"),
            Identity::new("email", "ada@example.org"),
        ];
        assert_eq!(privacy.suppress(&ada, "dsr_1").await.unwrap(), 2);
        assert_eq!(
            privacy.suppress(&ada, "dsr_2").await.unwrap(),
            0,
            "known hashes are not added twice"
        );
        let event = |json: serde_json::Value| serde_json::to_vec(&json).unwrap();
        assert!(privacy.suppresses(
            &rules(),
            EventType::Track,
            &event(serde_json::json!({"userId": "ada-42", "event": "x"}))
        ));
        assert!(privacy.suppresses(
            &rules(),
            EventType::Identify,
            &event(
                serde_json::json!({"anonymousId": "a9", "traits": {"email": "ADA@example.org"}})
            )
        ));
        assert!(!privacy.suppresses(
            &rules(),
            EventType::Track,
            &event(serde_json::json!({"userId": "bob", "event": "x"}))
        ));
        // Only hashes on disk, and they survive a restart; a torn last line is skipped.
        let stored =
            std::fs::read_to_string(dir.path().join("privacy/ws/suppressions.jsonl")).unwrap();
        assert!(!stored.contains("ada"), "{stored}");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("privacy/ws/suppressions.jsonl"))
            .unwrap();
        file.write_all(b"{\"hash\": \"torn").unwrap();
        let reopened = WorkspacePrivacy::open(dir.path(), "ws").unwrap();
        assert_eq!(reopened.suppressed_count(), 2);
        assert_eq!(
            reopened.hash(&ada[0]),
            privacy.hash(&ada[0]),
            "the salt is kept"
        );
        assert!(reopened.suppresses(
            &rules(),
            EventType::Track,
            &event(serde_json::json!({"userId": "ada-42", "event": "x"}))
        ));
        // Another workspace salts differently.
        let other = WorkspacePrivacy::open(dir.path(), "other").unwrap();
        assert_ne!(other.hash(&ada[0]), privacy.hash(&ada[0]));
    }

    #[test]
    fn a_request_is_kept_atomically_and_its_view_never_shows_the_identifier() {
        let dir = tempfile::tempdir().unwrap();
        let privacy = WorkspacePrivacy::open(dir.path(), "ws").unwrap();
        let request = DsrRequest {
            id: "dsr_a".into(),
            workspace_id: "ws".into(),
            kind: DsrKind::Erasure,
            status: DsrStatus::Pending,
            subject_type: "email".into(),
            subject_hash: privacy.hash(&Identity::new("email", "ada@example.org")),
            subject_value: Some("ada@example.org".into()),
            traits: None,
            requested_by: "officer".into(),
            note: None,
            created_at_ms: 1,
            due_at_ms: 1 + DSR_DUE_MS,
            started_at_ms: None,
            completed_at_ms: None,
            identifiers: 0,
            profiles: Vec::new(),
            steps: Vec::new(),
            error: None,
        };
        privacy.save(&request).unwrap();
        assert!(!request.view().to_string().contains("ada@"));
        let reopened = WorkspacePrivacy::open(dir.path(), "ws").unwrap();
        assert_eq!(
            reopened.unfinished().len(),
            1,
            "a pending request is resumed at start"
        );
        assert_eq!(
            reopened.get("dsr_a").unwrap().subject_value.as_deref(),
            Some("ada@example.org")
        );
    }
}
