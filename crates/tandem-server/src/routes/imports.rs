//! The import API, the server-side twin of `tandem import`:
//! `POST /api/v1/workspaces/{workspace}/sources/{source}/imports` takes a CSV or JSON-lines file
//! as the request body; `GET /api/v1/workspaces/{workspace}/imports[/{id}]` shows the jobs.
//!
//! Life of an import:
//! 1. The query names the format (`?format=csv|jsonl`, else from `Content-Type`), the mapping
//!    (repeated `?map=COLUMN=TARGET`, the CLI's `--map` syntax; `?unmapped=traits|ignore`) and
//!    optionally `?import_id=`. Mistakes answer 400 before anything is read.
//! 2. The body is streamed to `DATA/imports/<id>.upload`, at most `IMPORT_UPLOAD_BYTES_MAX` bytes
//!    (more answers 400 and the file is removed: no partial job). The header row is checked
//!    against the mapping (400 if no column gives an identity), then 202 with the job's id.
//! 3. A task reads rows with `tandem_import` (RowReader → Chunker) and feeds every chunk through
//!    `collect::collect_parsed`, the very path `/v1/batch` takes after authentication (rate
//!    limit, validation, enrichment, dedup, durable append, counters), as the source's events.
//!    Overload, full disk and rate limits are retried with backoff.
//! 4. Progress is kept in memory and in `DATA/imports/<id>.json`, rewritten after each chunk; a
//!    finished job's report survives restarts. A job a restart interrupted shows as failed: the
//!    same file posted again is idempotent (messageIds derive from the import id, mapping and
//!    row, so the rows already stored are dropped as duplicates).

use crate::auth::{Authorized, ManageSources};
use crate::error::{ApiError, ApiResult};
use crate::routes::collect::collect_parsed;
use crate::routes::Routes;
use crate::state::AppState;
use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;
use tandem_collect::RequestKind;
use tandem_core::limits::{IMPORT_REJECTIONS_SHOWN, IMPORT_RETRIES_MAX, IMPORT_UPLOAD_BYTES_MAX};
use tandem_core::{ids, time_util, ErrorCode};
use tandem_import::limits::FILE_IDENTITY_HEAD_BYTES;
use tandem_import::{
    Chunk, ChunkLimits, Chunker, Format, ImportIdentity, Mapping, RowReader, Unmapped,
};
use tokio::io::AsyncWriteExt;

pub fn router() -> Routes {
    Routes::new()
        .route(
            "/api/v1/workspaces/{workspace}/sources/{source}/imports",
            post(create_import),
        )
        .route("/api/v1/workspaces/{workspace}/imports", get(list_imports))
        .route(
            "/api/v1/workspaces/{workspace}/imports/{id}",
            get(get_import),
        )
}

/// The file name messageIds derive from when no `?import_id=` is given (with the upload's size
/// and first 64 KiB): the same file posted again gets the same messageIds.
const UPLOAD_FILE_NAME: &str = "upload";

/// A row that was not imported, as the progress shows it (never the row's content).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectionView {
    pub row: u64,
    pub line: u64,
    pub reason: String,
    pub message: String,
}

/// An import job's progress: what the API answers and what `<id>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportStatus {
    pub id: String,
    pub workspace_id: String,
    pub source_id: String,
    /// What the rows' messageIds derive from (with the mapping and row number).
    pub import_id: String,
    pub format: String,
    pub mapping: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub bytes_read: u64,
    pub bytes_total: u64,
    pub rows_read: u64,
    /// Rows accepted as events: newly stored, or already stored (`duplicates`).
    pub rows_imported: u64,
    pub rows_rejected: u64,
    /// Rows whose event was already stored (an earlier import of the same file and mapping).
    pub duplicates: u64,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The first `IMPORT_REJECTIONS_SHOWN` rejected rows.
    pub rejections: Vec<RejectionView>,
    pub progress: String,
}

const RUNNING: &str = "running";
const COMPLETED: &str = "completed";
const FAILED: &str = "failed";

/// The jobs of this server: in memory, each mirrored to `DATA/imports/<id>.json`.
pub struct Imports {
    dir: PathBuf,
    jobs: Mutex<BTreeMap<String, ImportStatus>>,
}

impl Imports {
    /// Loads the reports of earlier jobs. No job runs yet, so a `running` one was interrupted by
    /// a stop: it becomes `failed` with a hint; every leftover upload is removed.
    pub fn open(data_dir: &FsPath) -> anyhow::Result<Imports> {
        let dir = data_dir.join("imports");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let imports = Imports {
            dir: dir.clone(),
            jobs: Mutex::new(BTreeMap::new()),
        };
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".upload") || name.ends_with(".json.tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let loaded = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ImportStatus>(&bytes).ok());
            let Some(mut status) = loaded else {
                tracing::warn!(path = %path.display(), "unreadable import status file, ignored");
                continue;
            };
            if status.status == RUNNING {
                status.status = FAILED.to_string();
                status.error = Some(format!(
                    "the server stopped after row {} of this import; POST the same file with the same parameters again: rows already stored are dropped as duplicates (same messageIds)",
                    status.rows_read
                ));
                status.finished_at = Some(time_util::format_iso8601_ms(time_util::now_ms()));
                imports
                    .save(&status)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            imports.jobs.lock().insert(status.id.clone(), status);
        }
        Ok(imports)
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.upload"))
    }

    /// Writes the status file (temporary file, fsync, rename: never half a report).
    fn save(&self, status: &ImportStatus) -> std::io::Result<()> {
        let path = self.dir.join(format!("{}.json", status.id));
        let temporary = self.dir.join(format!("{}.json.tmp", status.id));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(status).unwrap_or_default())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    }

    /// Changes a job in memory, then on disk.
    fn update(&self, id: &str, change: impl FnOnce(&mut ImportStatus)) {
        let snapshot = {
            let mut jobs = self.jobs.lock();
            let Some(status) = jobs.get_mut(id) else {
                return;
            };
            change(status);
            status.clone()
        };
        if let Err(error) = self.save(&snapshot) {
            tracing::warn!(%error, id, "writing an import status file failed");
        }
    }

    fn get(&self, workspace_id: &str, id: &str) -> Option<ImportStatus> {
        self.jobs
            .lock()
            .get(id)
            .filter(|status| status.workspace_id == workspace_id)
            .cloned()
    }

    fn list(&self, workspace_id: &str) -> Vec<ImportStatus> {
        let mut jobs: Vec<ImportStatus> = self
            .jobs
            .lock()
            .values()
            .filter(|status| status.workspace_id == workspace_id)
            .cloned()
            .collect();
        jobs.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
        jobs
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

fn require_workspace(state: &AppState, workspace: &str) -> ApiResult<()> {
    if state.workspaces.contains_key(workspace) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("workspace {workspace}")))
    }
}

/// The query of a `POST …/imports`, checked.
struct Request {
    format: Format,
    mapping: Mapping,
    fingerprint: String,
    import_id: Option<String>,
}

fn parse_request(params: &[(String, String)], headers: &HeaderMap) -> ApiResult<Request> {
    let mut format_param = None;
    let mut delimiter = None;
    let mut mapping = Mapping::default();
    let mut import_id = None;
    let mut maps = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "format" => format_param = Some(value.clone()),
            "delimiter" => delimiter = Some(value.clone()),
            "map" => maps.push(value.clone()),
            "import_id" => import_id = Some(value.clone()),
            "unmapped" => mapping.set_unmapped(match value.as_str() {
                "traits" => Unmapped::Traits,
                "ignore" => Unmapped::Ignore,
                other => {
                    return Err(invalid(format!(
                        "unmapped must be traits or ignore, not {other:?}"
                    )))
                }
            }),
            other => {
                return Err(invalid(format!(
                    "unknown query parameter {other:?}: the parameters are format, map, unmapped, delimiter and import_id"
                )))
            }
        }
    }
    for flag in &maps {
        mapping
            .add_flag(flag)
            .map_err(|error| invalid(format!("map={flag}: {error}")))?;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let csv = match (format_param.as_deref(), content_type.as_deref()) {
        (Some("csv"), _) => true,
        (Some("jsonl" | "ndjson"), _) => false,
        (Some(other), _) => {
            return Err(invalid(format!(
                "format must be csv or jsonl, not {other:?}"
            )))
        }
        (None, Some("text/csv" | "application/csv")) => true,
        (None, Some("application/x-ndjson" | "application/jsonl" | "application/x-jsonlines")) => {
            false
        }
        (None, other) => {
            return Err(invalid(format!(
                "cannot tell the file's format from Content-Type {:?}: pass ?format=csv or ?format=jsonl (or Content-Type text/csv or application/x-ndjson)",
                other.unwrap_or("")
            )))
        }
    };
    let format = if csv {
        let delimiter = match delimiter.as_deref() {
            None => b',',
            Some("tab" | "\t") => b'\t',
            Some(text) if text.len() == 1 && !matches!(text, "\"" | "\n" | "\r") => text.as_bytes()[0],
            Some(other) => {
                return Err(invalid(format!(
                    "delimiter must be one ASCII character other than a quote or a line break, or tab (got {other:?})"
                )))
            }
        };
        Format::Csv { delimiter }
    } else {
        if delimiter.is_some() {
            return Err(invalid("delimiter applies to CSV only"));
        }
        Format::JsonLines
    };
    if let Some(encoding) = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidEncoding,
            format!(
                "send the file uncompressed (Content-Encoding {encoding:?} is not accepted here)"
            ),
        ));
    }
    // The same text as the CLI's, so `--import-id X` and `?import_id=X` give the same messageIds.
    let format_name = match format {
        Format::Csv { delimiter } => format!("csv with delimiter {:?}", char::from(delimiter)),
        Format::JsonLines => "json lines".to_string(),
    };
    let fingerprint = format!("{format_name}, {}", mapping.fingerprint());
    Ok(Request {
        format,
        mapping,
        fingerprint,
        import_id,
    })
}

/// Streams `body` into `path`, refusing more than `max` bytes. The caller removes the file when
/// this fails.
async fn stream_to_file(body: Body, path: &FsPath, max: u64) -> ApiResult<u64> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|error| ApiError::internal(format!("creating {}: {error}", path.display())))?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let write_error = |error: std::io::Error| {
        if error.raw_os_error() == Some(28) {
            ApiError::new(
                ErrorCode::DiskFull,
                "the data disk is full; the upload was not kept, retry later",
            )
        } else {
            ApiError::internal(format!("writing the upload: {error}"))
        }
    };
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|error| {
            invalid(format!(
                "the upload was cut off after {total} bytes: {error}"
            ))
        })?;
        total += piece.len() as u64;
        if total > max {
            return Err(too_large(max));
        }
        file.write_all(&piece).await.map_err(write_error)?;
    }
    file.sync_all().await.map_err(write_error)?;
    Ok(total)
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("an import file is at most {max} bytes; split it, or use `tandem import`, which streams any size"),
    )
}

async fn create_import(
    State(state): State<AppState>,
    auth: Authorized<ManageSources>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((workspace, source_id)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_workspace(&state, &workspace)?;
    let source = state
        .catalog
        .source_by_id(&workspace, &source_id)
        .ok_or_else(|| {
            ApiError::not_found(format!("source {source_id} in workspace {workspace}"))
        })?;
    if !source.record.enabled {
        return Err(invalid(format!(
            "source {source_id} is disabled: enable it before importing into it"
        )));
    }
    let request = parse_request(&params, &headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > IMPORT_UPLOAD_BYTES_MAX) {
        return Err(too_large(IMPORT_UPLOAD_BYTES_MAX));
    }
    let id = ids::random_id("imp");
    let upload = state.imports.upload_path(&id);
    let prepared = async {
        let bytes_total = stream_to_file(body, &upload, IMPORT_UPLOAD_BYTES_MAX).await?;
        if bytes_total == 0 {
            return Err(invalid(
                "the request body is empty: send the file as the body",
            ));
        }
        open_upload(&upload, bytes_total, &request)
            .map(|(reader, identity)| (reader, identity, bytes_total))
    }
    .await;
    let (reader, identity, bytes_total) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            let _ = std::fs::remove_file(&upload);
            return Err(error);
        }
    };
    let progress = format!("/api/v1/workspaces/{workspace}/imports/{id}");
    let status = ImportStatus {
        id: id.clone(),
        workspace_id: workspace.clone(),
        source_id: source_id.clone(),
        import_id: identity.id.clone(),
        format: match request.format {
            Format::Csv { .. } => "csv".to_string(),
            Format::JsonLines => "jsonl".to_string(),
        },
        mapping: request.fingerprint.clone(),
        status: RUNNING.to_string(),
        error: None,
        bytes_read: 0,
        bytes_total,
        rows_read: 0,
        rows_imported: 0,
        rows_rejected: 0,
        duplicates: 0,
        started_at: time_util::format_iso8601_ms(time_util::now_ms()),
        finished_at: None,
        rejections: Vec::new(),
        progress: progress.clone(),
    };
    if let Err(error) = state.imports.save(&status) {
        let _ = std::fs::remove_file(&upload);
        return Err(ApiError::internal(format!(
            "writing the import's status: {error}"
        )));
    }
    let audited = auth
        .audit(
            &state,
            "import.create",
            Some(&workspace),
            format!("import {id} into source {workspace}/{source_id}"),
            None,
            serde_json::to_value(&status).ok(),
        )
        .await;
    if let Err(error) = audited {
        let _ = std::fs::remove_file(&upload);
        return Err(error);
    }
    state.imports.jobs.lock().insert(id.clone(), status);
    tracing::info!(
        id,
        workspace,
        source = source_id,
        bytes_total,
        "import started"
    );
    tokio::spawn(run_job(
        state.clone(),
        id.clone(),
        workspace,
        source_id,
        reader,
        peer.ip(),
    ));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": RUNNING, "progress": progress})),
    ))
}

/// The import's identity (from `import_id` or the upload itself) and its reader, the header
/// checked against the mapping.
fn open_upload(
    path: &FsPath,
    bytes_total: u64,
    request: &Request,
) -> ApiResult<(RowReader<std::fs::File>, ImportIdentity)> {
    let mut file = std::fs::File::open(path)
        .map_err(|error| ApiError::internal(format!("opening the upload: {error}")))?;
    let identity = match &request.import_id {
        Some(id) => ImportIdentity::given(id, UPLOAD_FILE_NAME, &request.fingerprint)
            .map_err(|problem| invalid(format!("import_id: {problem}")))?,
        None => {
            let mut head = Vec::new();
            (&mut file)
                .take(FILE_IDENTITY_HEAD_BYTES as u64)
                .read_to_end(&mut head)
                .and_then(|_| file.rewind())
                .map_err(|error| ApiError::internal(format!("reading the upload: {error}")))?;
            ImportIdentity::of_file(UPLOAD_FILE_NAME, bytes_total, &head, &request.fingerprint)
        }
    };
    let reader = RowReader::open(
        file,
        request.format,
        request.mapping.clone(),
        identity.clone(),
        None,
    )
    .map_err(|error| invalid(format!("the file cannot be imported: {error}")))?;
    Ok((reader, identity))
}

/// The job: rows read on a blocking thread, chunks fed to the collect path in file order.
async fn run_job(
    state: AppState,
    id: String,
    workspace: String,
    source_id: String,
    mut reader: RowReader<std::fs::File>,
    ip: IpAddr,
) {
    let (chunks, mut receiver) = tokio::sync::mpsc::channel::<Result<Chunk, String>>(2);
    let reading = tokio::task::spawn_blocking(move || {
        let mut chunker = Chunker::new(ChunkLimits::default());
        loop {
            match reader.next_row() {
                Ok(Some(row)) => {
                    if let Some(chunk) = chunker.push(row) {
                        if chunks.blocking_send(Ok(chunk)).is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    if let Some(chunk) = chunker.finish() {
                        let _ = chunks.blocking_send(Ok(chunk));
                    }
                    return;
                }
                Err(error) => {
                    if let Some(chunk) = chunker.finish() {
                        let _ = chunks.blocking_send(Ok(chunk));
                    }
                    let position = reader.position();
                    let _ = chunks.blocking_send(Err(format!(
                        "reading the file stopped at line {} (byte {}): {error}",
                        position.line, position.byte
                    )));
                    return;
                }
            }
        }
    });
    let mut failure = None;
    while let Some(item) = receiver.recv().await {
        let outcome = match item {
            Ok(chunk) => send_chunk(&state, &id, &workspace, &source_id, chunk, ip).await,
            Err(problem) => Err(problem),
        };
        if let Err(problem) = outcome {
            failure = Some(problem);
            break;
        }
    }
    drop(receiver);
    let _ = reading.await;
    let finished_at = time_util::format_iso8601_ms(time_util::now_ms());
    state.imports.update(&id, |status| {
        status.finished_at = Some(finished_at);
        match &failure {
            None => {
                status.status = COMPLETED.to_string();
                status.bytes_read = status.bytes_total;
            }
            Some(problem) => {
                status.status = FAILED.to_string();
                status.error = Some(format!(
                    "{problem}; the rows before were stored: POST the same file with the same parameters again to finish (rows already stored are dropped as duplicates)"
                ));
            }
        }
    });
    let _ = std::fs::remove_file(state.imports.upload_path(&id));
    match &failure {
        None => tracing::info!(id, "import completed"),
        Some(problem) => tracing::warn!(id, problem, "import failed"),
    }
}

fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::RateLimited
            | ErrorCode::Overloaded
            | ErrorCode::DiskFull
            | ErrorCode::Unavailable
    )
}

/// One chunk through the collect path (retrying while the server pushes back), then its counts
/// and rejections into the job's status.
async fn send_chunk(
    state: &AppState,
    id: &str,
    workspace: &str,
    source_id: &str,
    chunk: Chunk,
    ip: IpAddr,
) -> Result<(), String> {
    let rows = format!(
        "rows {}–{}",
        chunk.start.row,
        chunk.end.row.saturating_sub(1)
    );
    let mut server_rejected = Vec::new();
    let mut duplicates = 0u64;
    if !chunk.body.is_empty() {
        let parsed = tandem_collect::parse_request(RequestKind::Batch, &chunk.body)
            .map_err(|error| format!("{rows}: {}", error.message))?;
        let mut attempt = 0u32;
        loop {
            // Checked before every attempt, as `/v1` checks the write key on every request.
            let source = match state.catalog.source_by_id(workspace, source_id) {
                Some(source) if source.record.enabled => source,
                Some(_) => return Err(format!("{rows}: source {source_id} was disabled")),
                None => return Err(format!("{rows}: source {source_id} no longer exists")),
            };
            match collect_parsed(state, &source, &parsed, time_util::now_ms(), Some(ip)).await {
                Ok(batch) => {
                    duplicates = batch.duplicates as u64;
                    server_rejected = batch.rejected;
                    break;
                }
                Err(error) if retryable(error.code) && attempt < IMPORT_RETRIES_MAX => {
                    let wait = tandem_import::answer::backoff(
                        attempt,
                        error.retry_after.map(Duration::from_secs),
                        &mut rand::thread_rng(),
                    );
                    tracing::debug!(
                        id,
                        attempt,
                        code = error.code.as_str(),
                        "import chunk retried"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(format!(
                        "{rows}: {} ({}){}",
                        error.message,
                        error.code.as_str(),
                        if retryable(error.code) {
                            format!(" after {} attempts", attempt + 1)
                        } else {
                            String::new()
                        }
                    ))
                }
            }
        }
    }
    let mut rejections: Vec<RejectionView> = chunk
        .rejected
        .iter()
        .map(|rejected| RejectionView {
            row: rejected.row,
            line: rejected.line,
            reason: rejected.reason.as_str().to_string(),
            message: rejected.message.clone(),
        })
        .collect();
    for rejection in &server_rejected {
        let origin = chunk.events.get(rejection.index);
        rejections.push(RejectionView {
            row: origin.map_or(0, |origin| origin.row),
            line: origin.map_or(0, |origin| origin.line),
            reason: rejection.code.to_string(),
            message: rejection.message.clone(),
        });
    }
    rejections.sort_by_key(|rejection| rejection.row);
    let rejected = rejections.len() as u64;
    let imported = (chunk.events.len() as u64).saturating_sub(server_rejected.len() as u64);
    state.imports.update(id, |status| {
        status.rows_read += chunk.rows;
        status.rows_rejected += rejected;
        status.rows_imported += imported;
        status.duplicates += duplicates;
        status.bytes_read = chunk.end.byte;
        let room = IMPORT_REJECTIONS_SHOWN.saturating_sub(status.rejections.len());
        status.rejections.extend(rejections.into_iter().take(room));
    });
    Ok(())
}

async fn get_import(
    State(state): State<AppState>,
    _auth: Authorized<ManageSources>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<Json<ImportStatus>> {
    require_workspace(&state, &workspace)?;
    state
        .imports
        .get(&workspace, &id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("import {id} in workspace {workspace}")))
}

async fn list_imports(
    State(state): State<AppState>,
    _auth: Authorized<ManageSources>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    require_workspace(&state, &workspace)?;
    Ok(Json(json!({"imports": state.imports.list(&workspace)})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_upload_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.upload");
        let error = stream_to_file(Body::from(vec![b'a'; 11]), &path, 10)
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::BodyTooLarge);
        let written = stream_to_file(Body::from(vec![b'a'; 10]), &path, 10)
            .await
            .unwrap();
        assert_eq!(written, 10);
        assert_eq!(std::fs::read(&path).unwrap().len(), 10);
    }

    #[test]
    fn the_query_names_format_and_mapping() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "text/csv; charset=utf-8".parse().unwrap(),
        );
        let params = vec![("map".to_string(), "customer_no=userId".to_string())];
        let request = parse_request(&params, &headers).unwrap();
        assert!(matches!(request.format, Format::Csv { delimiter: b',' }));
        assert!(
            request.fingerprint.contains("customer_no"),
            "{}",
            request.fingerprint
        );
        let bad = vec![("map".to_string(), "x=nowhere".to_string())];
        assert_eq!(
            parse_request(&bad, &headers).err().unwrap().code,
            ErrorCode::InvalidRequest
        );
        let unknown = vec![("colour".to_string(), "red".to_string())];
        assert!(parse_request(&unknown, &headers).is_err());
        assert!(parse_request(&[], &HeaderMap::new()).is_err());
    }
}
