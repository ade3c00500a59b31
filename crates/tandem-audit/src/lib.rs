//! The audit log: who changed what, when, from where, with the value before and after.
//!
//! One append-only JSON-lines file, `DATA/audit/audit.jsonl`, one entry per line:
//!
//! ```text
//! {"entry":{"seq":7,"at":"…","actor":{…},"action":"source.create",…,"prev":"<sha256 of entry 6>"},"sha256":"<sha256 of this entry>"}
//! ```
//!
//! `sha256` is the SHA-256 of the exact bytes of `entry` as stored, and every entry carries the
//! previous entry's hash in `prev` (64 zeros for the first). So changing any byte of a past
//! entry breaks its own hash, and rewriting its hash too breaks the next entry's `prev`; removing
//! an entry leaves a gap in `seq` and a broken `prev`. Removing entries *at the end* leaves a
//! valid shorter chain, so the newest `(seq, sha256)` is also kept in `DATA/audit/head.json`;
//! [`verify`] compares the log's end with it. (Whoever can rewrite both files *and* recompute
//! every hash can forge history: anchor the head elsewhere — `GET /api/v1/audit/verify` shows
//! it — to detect that too.)
//!
//! Durability: [`AuditLog::append`] writes the line, `fdatasync`s it, then replaces the head file
//! (write, fsync, rename, fsync of the directory) before returning, so an acknowledged change
//! has its entry on disk. A crash mid-write leaves a torn last line that was never
//! acknowledged: [`AuditLog::open`] cuts it. A log ending *before* its head refuses to open —
//! evidence of tampering is never papered over by new appends.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tandem_core::limits::AUDIT_VALUE_BYTES_MAX;
use tandem_core::{ids, time_util};

/// The file holding the entries, under the audit directory.
pub const LOG_FILE: &str = "audit.jsonl";
/// The file holding the newest entry's sequence number and hash.
pub const HEAD_FILE: &str = "head.json";
/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Bytes read from the end of the log at open to find its last entry.
const TAIL_READ_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log: {0}")]
    Broken(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `admin_token`, `user`, `api_token` or `anonymous` (a failed login: `name` is the email tried).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The workspace the credential is scoped to (`None`: the organization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// What happened, as the caller describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub actor: Actor,
    /// Dotted, stable: `source.create`, `auth.login`, `token.use`, `access.denied`, …
    pub action: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// What was acted on, e.g. `source demo/web`, or the request `GET /api/v1/…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl AuditEvent {
    pub fn new(actor: Actor, action: &str, outcome: &str) -> AuditEvent {
        AuditEvent {
            actor,
            action: action.to_string(),
            outcome: outcome.to_string(),
            workspace: None,
            resource: None,
            ip: None,
            user_agent: None,
            before: None,
            after: None,
            details: None,
        }
    }
}

/// An entry as stored: the event plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    pub at_ms: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    /// SHA-256 (hex) of the previous entry's bytes.
    pub prev: String,
}

/// One stored line, its entry kept as the exact bytes that were hashed.
#[derive(Deserialize)]
struct StoredLine<'a> {
    #[serde(borrow)]
    entry: &'a RawValue,
    sha256: String,
}

/// The chain fields of an entry, all a verifier needs beyond the bytes.
#[derive(Deserialize)]
struct ChainFields {
    seq: u64,
    prev: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub sha256: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    ids::hex(&Sha256::digest(bytes))
}

/// Keeps a JSON value under the size limit, or replaces it by its size and hash.
fn bounded(value: Option<Value>) -> Option<Value> {
    let value = value?;
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    if bytes.len() <= AUDIT_VALUE_BYTES_MAX {
        return Some(value);
    }
    Some(serde_json::json!({
        "omitted": "larger than AUDIT_VALUE_BYTES_MAX",
        "bytes": bytes.len(),
        "sha256": sha256_hex(&bytes),
    }))
}

struct Writer {
    file: File,
    /// Bytes of complete entries: a failed write is cut back to here.
    len: u64,
    next_seq: u64,
    last_sha256: String,
}

/// The audit log of one data directory, open for appending.
pub struct AuditLog {
    dir: PathBuf,
    writer: Mutex<Writer>,
}

impl AuditLog {
    /// Opens (or creates) `dir/audit.jsonl`: cuts a torn last line, checks the log's end against
    /// the head file, refuses a log that ends before its head.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        let (complete_len, last) = last_entry(&mut file, &path)?;
        let file_len = file.metadata().map_err(io(&path))?.len();
        if complete_len < file_len {
            tracing::warn!(
                bytes = file_len - complete_len,
                "audit log: cutting a torn last line (a write a crash interrupted, never acknowledged)"
            );
            file.set_len(complete_len).map_err(io(&path))?;
            file.sync_data().map_err(io(&path))?;
        }
        let head = read_head(dir)?;
        match (&last, &head) {
            (None, Some(head)) => {
                return Err(AuditError::Broken(format!(
                    "the log is empty but its head records entry {}: entries were removed (run `tandem audit verify`)",
                    head.seq
                )))
            }
            (Some(last), Some(head)) if last.seq < head.seq => {
                return Err(AuditError::Broken(format!(
                    "the log ends at entry {} but its head records entry {}: entries were removed (run `tandem audit verify`)",
                    last.seq, head.seq
                )))
            }
            (Some(last), Some(head)) if last.seq == head.seq && last.sha256 != head.sha256 => {
                return Err(AuditError::Broken(format!(
                    "entry {} differs from the head record: the log was edited (run `tandem audit verify`)",
                    last.seq
                )))
            }
            (Some(last), None) if last.seq > 0 => {
                return Err(AuditError::Broken(format!(
                    "the head file is missing while the log holds {} entries (run `tandem audit verify`)",
                    last.seq + 1
                )))
            }
            _ => {}
        }
        let (next_seq, last_sha256) = match &last {
            Some(last) => (last.seq + 1, last.sha256.clone()),
            None => (0, GENESIS.to_string()),
        };
        if let Some(last) = &last {
            // An entry made durable just before a crash that kept the head from following it.
            if head.as_ref() != Some(last) {
                write_head(dir, last)?;
            }
        }
        Ok(AuditLog {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                file,
                len: complete_len,
                next_seq,
                last_sha256,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one entry and makes it durable (blocking: call it off the async runtime).
    pub fn append(&self, mut event: AuditEvent) -> Result<AuditEntry, AuditError> {
        event.before = bounded(event.before.take());
        event.after = bounded(event.after.take());
        event.details = bounded(event.details.take());
        let path = self.dir.join(LOG_FILE);
        let mut writer = self.writer.lock();
        let at_ms = time_util::now_ms();
        let entry = AuditEntry {
            seq: writer.next_seq,
            at: time_util::format_iso8601_ms(at_ms),
            at_ms,
            event,
            prev: writer.last_sha256.clone(),
        };
        let entry_bytes = serde_json::to_vec(&entry).expect("audit entries serialize");
        let sha256 = sha256_hex(&entry_bytes);
        let mut line = Vec::with_capacity(entry_bytes.len() + 96);
        line.extend_from_slice(b"{\"entry\":");
        line.extend_from_slice(&entry_bytes);
        line.extend_from_slice(b",\"sha256\":\"");
        line.extend_from_slice(sha256.as_bytes());
        line.extend_from_slice(b"\"}\n");
        let written = writer
            .file
            .write_all(&line)
            .and_then(|()| writer.file.sync_data());
        if let Err(error) = written {
            // Nothing half-written may stay in front of the next entry.
            let len = writer.len;
            let _ = writer
                .file
                .set_len(len)
                .and_then(|()| writer.file.sync_data());
            return Err(io(&path)(error));
        }
        let head = Head {
            seq: entry.seq,
            sha256: sha256.clone(),
        };
        write_head(&self.dir, &head)?;
        writer.len += line.len() as u64;
        writer.next_seq += 1;
        writer.last_sha256 = sha256;
        Ok(entry)
    }

    /// Every entry in order (the log is read from disk, not from memory).
    pub fn entries(&self) -> Result<Entries, AuditError> {
        read_entries(&self.dir)
    }

    pub fn head(&self) -> Head {
        let writer = self.writer.lock();
        Head {
            seq: writer.next_seq.saturating_sub(1),
            sha256: writer.last_sha256.clone(),
        }
    }
}

/// Reads the entries of an audit directory in order, with each entry's stored line.
pub fn read_entries(dir: &Path) -> Result<Entries, AuditError> {
    let path = dir.join(LOG_FILE);
    let file = match File::open(&path) {
        Ok(file) => Some(BufReader::new(file)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(io(&path)(error)),
    };
    Ok(Entries { file, path })
}

/// Iterator over `(entry, line)`; an unreadable line ends it with an error.
pub struct Entries {
    file: Option<BufReader<File>>,
    path: PathBuf,
}

impl Iterator for Entries {
    type Item = Result<(AuditEntry, String), AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        let file = self.file.as_mut()?;
        let mut line = String::new();
        match file.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) if !line.ends_with('\n') => None, // a write in progress
            Ok(_) => {
                let parsed = serde_json::from_str::<StoredLine>(&line)
                    .and_then(|stored| serde_json::from_str::<AuditEntry>(stored.entry.get()));
                match parsed {
                    Ok(entry) => Some(Ok((entry, line.trim_end().to_string()))),
                    Err(error) => {
                        self.file = None;
                        Some(Err(AuditError::Broken(format!(
                            "{}: unreadable entry ({error})",
                            self.path.display()
                        ))))
                    }
                }
            }
            Err(error) => {
                self.file = None;
                Some(Err(io(&self.path)(error)))
            }
        }
    }
}

/// The length of the complete lines of the log and its last entry's head.
fn last_entry(file: &mut File, path: &Path) -> Result<(u64, Option<Head>), AuditError> {
    let len = file.metadata().map_err(io(path))?.len();
    let start = len.saturating_sub(TAIL_READ_BYTES);
    file.seek(SeekFrom::Start(start)).map_err(io(path))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(io(path))?;
    let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
        if start > 0 {
            return Err(AuditError::Broken(format!(
                "{}: no line end in its last {TAIL_READ_BYTES} bytes",
                path.display()
            )));
        }
        return Ok((0, None));
    };
    let complete_len = start + end as u64 + 1;
    let begin = tail[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    if begin == 0 && start > 0 {
        return Err(AuditError::Broken(format!(
            "{}: its last entry is longer than {TAIL_READ_BYTES} bytes",
            path.display()
        )));
    }
    let line = &tail[begin..end];
    let stored: StoredLine = serde_json::from_slice(line).map_err(|error| {
        AuditError::Broken(format!(
            "{}: the last entry is unreadable ({error}); run `tandem audit verify`",
            path.display()
        ))
    })?;
    let chain: ChainFields = serde_json::from_str(stored.entry.get()).map_err(|error| {
        AuditError::Broken(format!(
            "{}: the last entry is unreadable ({error})",
            path.display()
        ))
    })?;
    Ok((
        complete_len,
        Some(Head {
            seq: chain.seq,
            sha256: stored.sha256,
        }),
    ))
}

fn read_head(dir: &Path) -> Result<Option<Head>, AuditError> {
    let path = dir.join(HEAD_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            AuditError::Broken(format!("{}: unreadable ({error})", path.display()))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io(&path)(error)),
    }
}

fn write_head(dir: &Path, head: &Head) -> Result<(), AuditError> {
    let path = dir.join(HEAD_FILE);
    let temporary = dir.join("head.json.tmp");
    let bytes = serde_json::to_vec(head).expect("heads serialize");
    let mut file = File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_data())
        .map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io(dir))
}

/// The first entry that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The sequence number of the first bad (or missing) entry.
    pub seq: u64,
    /// Its line in the file (1-based; for removed entries at the end, the line it would be on).
    pub line: u64,
    pub reason: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    /// Entries read and checked before the first problem (all of them when `ok`).
    pub entries: u64,
    pub head: Option<Head>,
    pub problem: Option<Problem>,
}

/// Checks every entry's hash, the chain of `prev`, dense sequence numbers, and the end of the log
/// against the head file; names the first bad entry. Reads only: safe while the server runs.
pub fn verify(dir: &Path) -> Result<Verification, AuditError> {
    // The head first: the log is always at least as long as the head read before it.
    let head = match read_head(dir) {
        Ok(head) => head,
        Err(AuditError::Broken(reason)) => {
            return Ok(Verification {
                ok: false,
                entries: 0,
                head: None,
                problem: Some(Problem {
                    seq: 0,
                    line: 0,
                    reason,
                }),
            })
        }
        Err(error) => return Err(error),
    };
    let path = dir.join(LOG_FILE);
    let mut reader = match File::open(&path) {
        Ok(file) => Some(BufReader::new(file)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(io(&path)(error)),
    };
    let mut expected_seq = 0u64;
    let mut prev = GENESIS.to_string();
    let mut line_number = 0u64;
    let fail = |entries: u64, seq: u64, line: u64, reason: String| Verification {
        ok: false,
        entries,
        head: None,
        problem: Some(Problem { seq, line, reason }),
    };
    let mut buffer = Vec::new();
    while let Some(reader) = reader.as_mut() {
        buffer.clear();
        let read = reader.read_until(b'\n', &mut buffer).map_err(io(&path))?;
        if read == 0 {
            break;
        }
        line_number += 1;
        if buffer.last() != Some(&b'\n') {
            let covered_by_head = head.as_ref().is_some_and(|h| h.seq >= expected_seq);
            if covered_by_head {
                return Ok(fail(
                    expected_seq,
                    expected_seq,
                    line_number,
                    format!("entry {expected_seq} is incomplete (the file was cut inside it)"),
                ));
            }
            break; // a write in progress, or one a crash interrupted before it was acknowledged
        }
        let bytes = &buffer[..buffer.len() - 1];
        let stored: StoredLine = match serde_json::from_slice(bytes) {
            Ok(stored) => stored,
            Err(error) => {
                return Ok(fail(
                    expected_seq,
                    expected_seq,
                    line_number,
                    format!("entry {expected_seq} is not a valid audit line ({error}): edited"),
                ))
            }
        };
        let sha256 = sha256_hex(stored.entry.get().as_bytes());
        let chain: Option<ChainFields> = serde_json::from_str(stored.entry.get()).ok();
        let seq = chain.as_ref().map_or(expected_seq, |c| c.seq);
        if sha256 != stored.sha256 {
            return Ok(fail(
                expected_seq,
                seq,
                line_number,
                format!("entry {seq}: its content does not match its hash (edited)"),
            ));
        }
        let Some(chain) = chain else {
            return Ok(fail(
                expected_seq,
                expected_seq,
                line_number,
                format!("entry {expected_seq} has no `seq`/`prev`: not an audit entry"),
            ));
        };
        if chain.seq > expected_seq {
            return Ok(fail(
                expected_seq,
                expected_seq,
                line_number,
                format!(
                    "entry {expected_seq} is missing: entry {} follows entry {} (deleted)",
                    chain.seq,
                    expected_seq as i64 - 1
                ),
            ));
        }
        if chain.seq < expected_seq {
            return Ok(fail(
                expected_seq,
                chain.seq,
                line_number,
                format!(
                    "entry {} appears again after entry {} (duplicated or reordered)",
                    chain.seq,
                    expected_seq - 1
                ),
            ));
        }
        if chain.prev != prev {
            let reason = if expected_seq == 0 {
                format!("entry 0 does not start the chain (prev {})", chain.prev)
            } else {
                format!(
                    "entry {} does not chain to entry {}: entry {} was changed and re-hashed, or replaced",
                    chain.seq,
                    chain.seq - 1,
                    chain.seq - 1
                )
            };
            return Ok(fail(expected_seq, chain.seq, line_number, reason));
        }
        prev = sha256;
        expected_seq += 1;
    }
    if let Some(head) = &head {
        if expected_seq <= head.seq {
            let last = if expected_seq == 0 {
                "the log is empty".to_string()
            } else {
                format!("the log ends at entry {}", expected_seq - 1)
            };
            return Ok(fail(
                expected_seq,
                expected_seq,
                line_number + 1,
                format!(
                    "entries {expected_seq}..={} are missing: {last} but the head records entry {} (truncated)",
                    head.seq, head.seq
                ),
            ));
        }
        // The entry the head names must be the one in the log.
        if let Some(problem) = check_head_entry(dir, head)? {
            return Ok(fail(expected_seq, head.seq, head.seq + 1, problem));
        }
    } else if expected_seq > 0 {
        return Ok(fail(
            expected_seq,
            expected_seq,
            line_number + 1,
            format!(
                "the head file {HEAD_FILE} is missing: entries after entry {} may have been removed",
                expected_seq - 1
            ),
        ));
    }
    Ok(Verification {
        ok: true,
        entries: expected_seq,
        head,
        problem: None,
    })
}

/// `Some(why)` when the log's entry `head.seq` does not have the head's hash.
fn check_head_entry(dir: &Path, head: &Head) -> Result<Option<String>, AuditError> {
    let path = dir.join(LOG_FILE);
    let reader = BufReader::new(File::open(&path).map_err(io(&path))?);
    for (index, line) in reader.split(b'\n').enumerate() {
        if index as u64 != head.seq {
            continue;
        }
        let line = line.map_err(io(&path))?;
        let stored: StoredLine = serde_json::from_slice(&line)
            .map_err(|error| AuditError::Broken(format!("entry {}: {error}", head.seq)))?;
        if stored.sha256 != head.sha256 {
            return Ok(Some(format!(
                "entry {} differs from the head record (the log was rewritten after it)",
                head.seq
            )));
        }
        return Ok(None);
    }
    Ok(Some(format!("entry {} is missing", head.seq)))
}

#[cfg(test)]
mod tests;
