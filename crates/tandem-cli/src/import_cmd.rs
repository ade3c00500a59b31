//! `tandem import`: customer records from a CSV or JSON-lines file into a running tandem, as
//! `identify` events through `POST /v1/batch`, so they take the same path as live events.
//!
//! A reader thread streams rows into chunks (`tandem_import`); the async side sends up to
//! `--concurrency` chunks at once, retrying with backoff on 429/503/5xx and connection errors, and
//! acknowledges them strictly in file order: rejections go to the report, then the checkpoint
//! advances past the chunk (durably), so `--resume` continues after any interruption.
//!
//! Exit codes: 0 when every row was read (rejected rows are in the report, not failures);
//! 1 when the server refused the import or could not be reached (the checkpoint allows
//! `--resume`); 2 for bad arguments or an unreadable file.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::future::FutureExt;
use futures::stream::{FuturesOrdered, StreamExt};
use std::io::{IsTerminal, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_import::answer::{self, Answer, ServerRejection};
use tandem_import::checkpoint::CHECKPOINT_VERSION;
use tandem_import::limits::{
    BATCH_EVENTS_LIMIT, CONCURRENCY_MAX, DEFAULT_BATCH_EVENTS, DEFAULT_CONCURRENCY,
    DEFAULT_RETRIES, FILE_IDENTITY_HEAD_BYTES, MAPPING_FILE_BYTES_MAX, REQUEST_TIMEOUT_SECONDS,
};
use tandem_import::{
    Checkpoint, Chunk, ChunkLimits, Chunker, Format, ImportIdentity, Mapping, Position, ReadError,
    Reason, RejectedRow, Report, RowReader, Unmapped,
};

#[derive(Args)]
pub struct ImportArgs {
    /// The file: CSV with a header row (.csv, .tsv) or one JSON object per line (.jsonl, .ndjson).
    file: PathBuf,
    /// The tandem server.
    #[arg(long, env = "TANDEM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The write key of the source the records are imported into.
    #[arg(long, env = "TANDEM_WRITE_KEY", hide_env_values = true)]
    write_key: Option<String>,
    /// The file's format; by default from its extension.
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    /// CSV delimiter: one character, or `tab` (default `,`; tab for .tsv files).
    #[arg(long)]
    delimiter: Option<String>,
    /// A mapping file, TOML (or JSON when it ends in .json):
    /// `unmapped = "traits"` and `[columns]` with `customer_no = "userId"` lines.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// COLUMN=TARGET, repeatable. Targets: userId, anonymousId,
    /// traits.NAME[:string|number|boolean], externalId:TYPE,
    /// timestamp[:iso8601|unix_seconds|unix_ms], ignore.
    /// Unnamed columns: user_id → userId, email → traits.email, phone → traits.phone, others →
    /// traits of the same name.
    #[arg(long = "map", value_name = "COLUMN=TARGET")]
    map: Vec<String>,
    /// What columns the mapping does not name become.
    #[arg(long, value_enum)]
    unmapped: Option<UnmappedColumns>,
    /// The id the rows' messageIds are derived from (default: the file's name, size and first
    /// 64 KiB). Importing again with the same id and mapping sends the same messageIds, which the
    /// server drops.
    #[arg(long)]
    import_id: Option<String>,
    /// Where rejected rows are written (default: FILE.rejected.csv, or .jsonl for JSON lines); a
    /// .csv path gives CSV, anything else JSON lines. The checkpoint is written beside it.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Continue an interrupted import from its checkpoint.
    #[arg(long, conflicts_with_all = ["restart", "dry_run"])]
    resume: bool,
    /// Discard the checkpoint of an interrupted import and start at the first row.
    #[arg(long)]
    restart: bool,
    /// Check every row and write the report; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Stop after this many rows (counted in this run); `--resume` continues from there.
    #[arg(long)]
    max_rows: Option<u64>,
    /// Events per request.
    #[arg(long, default_value_t = DEFAULT_BATCH_EVENTS)]
    batch_events: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Retries of one request when the server pushes back or cannot be reached.
    #[arg(long, default_value_t = DEFAULT_RETRIES)]
    retries: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FileFormat {
    Csv,
    Jsonl,
}

#[derive(Clone, Copy, ValueEnum)]
enum UnmappedColumns {
    Traits,
    Ignore,
}

/// Everything decided before the first row is read.
struct Plan {
    file: PathBuf,
    file_bytes: u64,
    format: Format,
    mapping: Mapping,
    /// The mapping and format, as the checkpoint keeps them.
    fingerprint: String,
    identity: ImportIdentity,
    report: PathBuf,
    checkpoint: PathBuf,
}

/// Counts over every run of this import (a resumed run starts from its checkpoint's).
#[derive(Clone, Copy, Default)]
struct Totals {
    rows_read: u64,
    rows_imported: u64,
    rows_rejected: u64,
}

pub fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    check_arguments(&args)?;
    let plan = plan(&args)?;
    // A dry run never reads nor writes a checkpoint.
    let start = if args.dry_run {
        Start::Fresh
    } else {
        decide_start(&args, &plan)?
    };
    let resume_from = match start {
        Start::Fresh => None,
        Start::Resume(checkpoint) => Some(*checkpoint),
        Start::AlreadyComplete(checkpoint) => {
            return already_complete(&plan, &checkpoint, args.json)
        }
    };
    let totals = resume_from
        .as_ref()
        .map_or(Totals::default(), |checkpoint| Totals {
            rows_read: checkpoint.rows_read,
            rows_imported: checkpoint.rows_imported,
            rows_rejected: checkpoint.rows_rejected,
        });
    let start = resume_from.as_ref().map(|checkpoint| checkpoint.next);
    let file = std::fs::File::open(&plan.file)
        .with_context(|| format!("opening {}", plan.file.display()))?;
    let reader = RowReader::open(
        file,
        plan.format,
        plan.mapping.clone(),
        plan.identity.clone(),
        start,
    )
    .map_err(|error| read_error(&plan, error))?;
    let report = match &resume_from {
        Some(checkpoint) => Report::resume(&plan.report, checkpoint.report_bytes),
        None => Report::create(&plan.report),
    }
    .with_context(|| format!("opening the report {}", plan.report.display()))?;
    announce(&args, &plan, &reader, start);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut run = Run::new(&args, plan, report, totals, start)?;
    let outcome = runtime.block_on(run.drive(reader, &args));
    run.finish(outcome, args.json)
}

fn check_arguments(args: &ImportArgs) -> anyhow::Result<()> {
    if !(1..=BATCH_EVENTS_LIMIT).contains(&args.batch_events) {
        bail!("--batch-events must be 1 to {BATCH_EVENTS_LIMIT} (the server's limit per batch)");
    }
    if !(1..=CONCURRENCY_MAX).contains(&args.concurrency) {
        bail!("--concurrency must be 1 to {CONCURRENCY_MAX}");
    }
    if args.dry_run {
        return Ok(());
    }
    if args.write_key.as_deref().is_none_or(str::is_empty) {
        bail!("--write-key (or TANDEM_WRITE_KEY) is needed: the key of the source the records are imported into (or use --dry-run to only check the file)");
    }
    if args.url.starts_with("https://") {
        bail!("tandem import speaks plain HTTP only for now: give the server's http:// address (from its machine, or through an SSH tunnel)");
    }
    if !args.url.starts_with("http://") {
        bail!(
            "--url {} is not an http:// address such as http://127.0.0.1:8080",
            args.url
        );
    }
    Ok(())
}

fn plan(args: &ImportArgs) -> anyhow::Result<Plan> {
    let file = args.file.clone();
    let mut input =
        std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let file_bytes = input.metadata()?.len();
    if !input.metadata()?.is_file() {
        bail!("{} is not a regular file", file.display());
    }
    let mut head = Vec::new();
    (&mut input)
        .take(FILE_IDENTITY_HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", file.display()))?;
    input.rewind()?;
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let format = match (args.format, extension.as_str()) {
        (Some(FileFormat::Jsonl), _) | (None, "jsonl" | "ndjson" | "json") => Format::JsonLines,
        (Some(FileFormat::Csv), _) | (None, "csv" | "tsv" | "tab" | "txt") => Format::Csv {
            delimiter: delimiter(args.delimiter.as_deref(), &extension)?,
        },
        (None, _) => bail!(
            "cannot tell the format of {} from its extension: pass --format csv or --format jsonl",
            file.display()
        ),
    };
    let mapping = mapping(args)?;
    let file_name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string());
    let format_name = match format {
        Format::Csv { delimiter } => format!("csv with delimiter {:?}", char::from(delimiter)),
        Format::JsonLines => "json lines".to_string(),
    };
    let fingerprint = format!("{format_name}, {}", mapping.fingerprint());
    let identity = match &args.import_id {
        Some(id) => ImportIdentity::given(id, &file_name, &fingerprint)
            .map_err(|problem| anyhow::anyhow!("--import-id: {problem}"))?,
        None => ImportIdentity::of_file(&file_name, file_bytes, &head, &fingerprint),
    };
    let report = args.report.clone().unwrap_or_else(|| {
        let mut path = file.clone().into_os_string();
        path.push(match format {
            Format::Csv { .. } => ".rejected.csv",
            Format::JsonLines => ".rejected.jsonl",
        });
        PathBuf::from(path)
    });
    let checkpoint = report
        .parent()
        .unwrap_or(Path::new(""))
        .join(format!("{file_name}.tandem-import.json"));
    for (what, path) in [("report", &report), ("checkpoint", &checkpoint)] {
        if same_file(path, &file) {
            bail!(
                "the {what} would overwrite the file being imported ({}); pass another --report",
                path.display()
            );
        }
    }
    Ok(Plan {
        fingerprint,
        file,
        file_bytes,
        format,
        mapping,
        identity,
        report,
        checkpoint,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn delimiter(given: Option<&str>, extension: &str) -> anyhow::Result<u8> {
    let Some(given) = given else {
        return Ok(if matches!(extension, "tsv" | "tab") {
            b'\t'
        } else {
            b','
        });
    };
    match given {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        text if text.len() == 1 && !matches!(text, "\"" | "\n" | "\r") => Ok(text.as_bytes()[0]),
        _ => bail!("--delimiter must be one ASCII character other than a quote or a line break, or `tab` (got {given:?})"),
    }
}

fn mapping(args: &ImportArgs) -> anyhow::Result<Mapping> {
    let mut mapping = match &args.mapping {
        Some(path) => {
            let size = std::fs::metadata(path)
                .with_context(|| format!("opening the mapping {}", path.display()))?
                .len();
            if size > MAPPING_FILE_BYTES_MAX {
                bail!(
                    "the mapping {} is {size} bytes; a mapping file is at most {MAPPING_FILE_BYTES_MAX}",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the mapping {}", path.display()))?;
            let json = path.extension().is_some_and(|e| e == "json");
            Mapping::from_file_text(&text, json)
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?
        }
        None => Mapping::default(),
    };
    if let Some(unmapped) = args.unmapped {
        mapping.set_unmapped(match unmapped {
            UnmappedColumns::Traits => Unmapped::Traits,
            UnmappedColumns::Ignore => Unmapped::Ignore,
        });
    }
    for flag in &args.map {
        mapping.add_flag(flag)?;
    }
    Ok(mapping)
}

enum Start {
    Fresh,
    Resume(Box<Checkpoint>),
    AlreadyComplete(Checkpoint),
}

/// Whether this run starts at the first row or at a checkpoint, checking that the checkpoint
/// belongs to the same import (same rows, same mapping, same report).
fn decide_start(args: &ImportArgs, plan: &Plan) -> anyhow::Result<Start> {
    let existing = Checkpoint::load(&plan.checkpoint)?;
    let Some(checkpoint) = existing else {
        if args.resume {
            eprintln!(
                "no checkpoint at {}: starting at the first row",
                plan.checkpoint.display()
            );
        }
        return Ok(Start::Fresh);
    };
    if args.restart {
        return Ok(Start::Fresh);
    }
    let same_import =
        checkpoint.import_id == plan.identity.id && checkpoint.mapping == plan.fingerprint;
    if !args.resume {
        if checkpoint.complete && same_import {
            return Ok(Start::AlreadyComplete(checkpoint));
        }
        if checkpoint.complete {
            return Ok(Start::Fresh);
        }
        bail!(
            "an interrupted import of {} stopped before row {} (checkpoint {}): pass --resume to continue it, or --restart to start over",
            checkpoint.file.display(),
            checkpoint.next.row,
            plan.checkpoint.display()
        );
    }
    if checkpoint.import_id != plan.identity.id {
        bail!(
            "the checkpoint {} belongs to import {:?}, but this import's id is {:?}: the file changed since (rows would be numbered differently), or --import-id differs. Pass the same --import-id, or --restart",
            plan.checkpoint.display(),
            checkpoint.import_id,
            plan.identity.id
        );
    }
    if checkpoint.mapping != plan.fingerprint {
        bail!(
            "the mapping differs from the interrupted import's\n  then: {}\n  now:  {}\npass the same --map, --mapping, --unmapped, --format and --delimiter, or --restart",
            checkpoint.mapping,
            plan.fingerprint
        );
    }
    if checkpoint.report != plan.report {
        bail!(
            "the interrupted import wrote its report to {}: pass --report {0}",
            checkpoint.report.display()
        );
    }
    if checkpoint.next.byte > plan.file_bytes {
        bail!(
            "{} is shorter ({} bytes) than where the interrupted import stopped (byte {}): it is not the same file; use --restart",
            plan.file.display(),
            plan.file_bytes,
            checkpoint.next.byte
        );
    }
    if checkpoint.complete {
        return Ok(Start::AlreadyComplete(checkpoint));
    }
    Ok(Start::Resume(Box::new(checkpoint)))
}

fn already_complete(plan: &Plan, checkpoint: &Checkpoint, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "file": plan.file, "import_id": plan.identity.id, "complete": true,
                "rows_read": checkpoint.rows_read, "rows_imported": checkpoint.rows_imported,
                "rows_rejected": checkpoint.rows_rejected, "already_complete": true,
            })
        );
    } else {
        println!(
            "{} was already imported completely with this mapping ({} rows, {} imported, {} rejected; checkpoint {}). Nothing to do: --restart sends it again (the server drops the rows it still remembers).",
            plan.file.display(),
            checkpoint.rows_read,
            checkpoint.rows_imported,
            checkpoint.rows_rejected,
            plan.checkpoint.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_error(plan: &Plan, error: ReadError) -> anyhow::Error {
    anyhow::anyhow!("{}: {error}", plan.file.display())
}

/// The plan, before the first row: what goes where.
fn announce<R: Read + Seek>(
    args: &ImportArgs,
    plan: &Plan,
    reader: &RowReader<R>,
    start: Option<Position>,
) {
    const COLUMNS_SHOWN: usize = 30;
    let target = if args.dry_run {
        "dry run, nothing is sent".to_string()
    } else {
        args.url.clone()
    };
    eprintln!(
        "importing {} ({} bytes) → {target}, import id {:?}",
        plan.file.display(),
        plan.file_bytes,
        plan.identity.id
    );
    if let Some(columns) = reader.columns() {
        let shown: Vec<String> = columns
            .iter()
            .take(COLUMNS_SHOWN)
            .map(|(name, target)| format!("{name} → {target}"))
            .collect();
        let more = columns.len().saturating_sub(COLUMNS_SHOWN);
        eprintln!(
            "columns: {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    if let Some(start) = start {
        eprintln!(
            "resuming at row {} (line {}, byte {})",
            start.row, start.line, start.byte
        );
    }
}

/// What the reader thread tells the progress bar.
#[derive(Default)]
struct ReadProgress {
    rows: AtomicU64,
}

/// How the reader thread ended.
enum ReadEnd {
    /// The end of the file.
    Finished,
    /// `--max-rows` reached.
    StoppedEarly,
    /// The sending side stopped taking chunks (it failed).
    Abandoned,
}

/// Why sending stopped.
#[derive(Debug)]
enum SendFailure {
    /// The server refused a batch in a way retrying cannot fix.
    Refused { rows: String, problem: String },
    /// The server pushed back or was unreachable for every attempt.
    GaveUp {
        rows: String,
        attempts: u32,
        problem: String,
    },
    /// Writing the report or checkpoint failed.
    Local(anyhow::Error),
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendFailure::Refused { rows, problem } => {
                write!(f, "the server refused the batch of rows {rows}: {problem}")
            }
            SendFailure::GaveUp {
                rows,
                attempts,
                problem,
            } => write!(
                f,
                "the batch of rows {rows} failed {attempts} times, the last with: {problem}"
            ),
            SendFailure::Local(error) => write!(f, "{error:#}"),
        }
    }
}

/// The HTTP side: one shared client, the batch URL and the write key.
struct Sender {
    client: reqwest::Client,
    batch_url: String,
    write_key: String,
    retries: u32,
    bar: indicatif::ProgressBar,
}

/// A chunk and the server's answer to it.
struct Acknowledged {
    chunk: Chunk,
    body: Bytes,
    rejected_by_server: Vec<ServerRejection>,
}

impl Sender {
    async fn send(self: Arc<Self>, mut chunk: Chunk) -> Result<Acknowledged, SendFailure> {
        let body = Bytes::from(std::mem::take(&mut chunk.body));
        if body.is_empty() {
            return Ok(Acknowledged {
                chunk,
                body,
                rejected_by_server: Vec::new(),
            });
        }
        let rows = format!("{}–{}", chunk.start.row, chunk.end.row.saturating_sub(1));
        let mut attempt = 0;
        loop {
            let (answer, problem) = self.attempt(body.clone()).await;
            match answer {
                Answer::Stored { rejected } => {
                    return Ok(Acknowledged {
                        chunk,
                        body,
                        rejected_by_server: rejected,
                    })
                }
                Answer::Fail => return Err(SendFailure::Refused { rows, problem }),
                Answer::Retry { after } => {
                    if attempt >= self.retries {
                        return Err(SendFailure::GaveUp {
                            rows,
                            attempts: attempt + 1,
                            problem,
                        });
                    }
                    let wait = answer::backoff(attempt, after, &mut rand::thread_rng());
                    self.bar.suspend(|| {
                        eprintln!(
                            "rows {rows}: {problem}; retrying in {:.1} s (retry {} of {})",
                            wait.as_secs_f64(),
                            attempt + 1,
                            self.retries
                        )
                    });
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One POST; the answer classified, and a description of it for messages.
    async fn attempt(&self, body: Bytes) -> (Answer, String) {
        let sent = self
            .client
            .post(&self.batch_url)
            .basic_auth(&self.write_key, Some(""))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return (Answer::Retry { after: None }, error_chain(&error)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => return (Answer::Retry { after: None }, error_chain(&error)),
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let answer = answer::classify(status.as_u16(), retry_after.as_deref(), &json);
        let mut problem = match json["error"]["code"].as_str() {
            Some(code) => format!(
                "{status} {code}: {}",
                json["error"]["message"].as_str().unwrap_or_default()
            ),
            None => format!("{status} {}", text.chars().take(200).collect::<String>()),
        };
        match status.as_u16() {
            401 => problem.push_str(" (check --write-key)"),
            404 | 405 => problem.push_str(" (is --url a tandem or Segment-compatible server?)"),
            _ => {}
        }
        (answer, problem)
    }
}

/// A reqwest error with its causes ("error sending request: … : connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One run of an import: the report, the checkpoint, the counts and the progress bar.
struct Run {
    plan: Plan,
    report: Report,
    totals: Totals,
    /// The totals when this run started.
    baseline: Totals,
    resumed_at: Option<Position>,
    dry_run: bool,
    started: Instant,
    bar: indicatif::ProgressBar,
    read: Arc<ReadProgress>,
    /// Where the next unacknowledged row starts.
    next: Option<Position>,
    read_end: Option<Result<ReadEnd, ReadError>>,
    concurrency: usize,
    sender: Option<Arc<Sender>>,
}

impl Run {
    fn new(
        args: &ImportArgs,
        plan: Plan,
        report: Report,
        totals: Totals,
        start: Option<Position>,
    ) -> anyhow::Result<Run> {
        let bar = progress_bar(plan.file_bytes, start.map_or(0, |s| s.byte));
        let sender = if args.dry_run {
            None
        } else {
            Some(Arc::new(Sender {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECONDS))
                    .user_agent(format!(
                        "{}/{}",
                        tandem_import::event::LIBRARY_NAME,
                        tandem_import::event::LIBRARY_VERSION
                    ))
                    .build()
                    .context("building the HTTP client")?,
                batch_url: format!("{}/v1/batch", args.url.trim_end_matches('/')),
                write_key: args.write_key.clone().unwrap_or_default(),
                retries: args.retries,
                bar: bar.clone(),
            }))
        };
        Ok(Run {
            plan,
            report,
            totals,
            baseline: totals,
            resumed_at: start,
            dry_run: args.dry_run,
            started: Instant::now(),
            bar,
            read: Arc::new(ReadProgress::default()),
            next: start,
            read_end: None,
            concurrency: args.concurrency,
            sender,
        })
    }

    /// Reads on a thread, sends here, acknowledges in order. Returns why sending stopped early.
    async fn drive<R: Read + Seek + Send + 'static>(
        &mut self,
        reader: RowReader<R>,
        args: &ImportArgs,
    ) -> Result<(), SendFailure> {
        let (chunks, mut received) = tokio::sync::mpsc::channel::<Chunk>(self.concurrency);
        let limits = ChunkLimits {
            events_max: args.batch_events,
            ..ChunkLimits::default()
        };
        let (read, bar, max_rows) = (self.read.clone(), self.bar.clone(), args.max_rows);
        let thread = std::thread::Builder::new()
            .name("import-reader".into())
            .spawn(move || read_chunks(reader, limits, max_rows, chunks, &read, &bar))
            .map_err(|error| SendFailure::Local(error.into()))?;
        let mut in_flight = FuturesOrdered::new();
        let mut reading = true;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let outcome = loop {
            tokio::select! {
                biased;
                Some(sent) = in_flight.next(), if !in_flight.is_empty() => {
                    let acknowledged = match sent {
                        Ok(acknowledged) => acknowledged,
                        Err(failure) => break Err(failure),
                    };
                    if let Err(error) = self.acknowledge(acknowledged) {
                        break Err(SendFailure::Local(error));
                    }
                }
                chunk = received.recv(), if reading && in_flight.len() < self.concurrency => {
                    match (chunk, &self.sender) {
                        (Some(chunk), Some(sender)) => in_flight.push_back(sender.clone().send(chunk).boxed_local()),
                        (Some(chunk), None) => in_flight.push_back(dry_run(chunk).boxed_local()),
                        (None, _) => reading = false,
                    }
                }
                _ = tick.tick() => self.show_progress(),
                else => break Ok(()),
            }
            if !reading && in_flight.is_empty() {
                break Ok(());
            }
        };
        // Unblocks the reader thread if sending stopped first.
        drop(received);
        drop(in_flight);
        self.read_end = Some(thread.join().unwrap_or_else(|_| {
            Err(ReadError::Io(std::io::Error::other(
                "the reader thread panicked",
            )))
        }));
        outcome
    }

    /// A chunk the server stored: its rejections into the report, then the checkpoint past it.
    fn acknowledge(&mut self, acknowledged: Acknowledged) -> anyhow::Result<()> {
        let Acknowledged {
            chunk,
            body,
            rejected_by_server,
        } = acknowledged;
        for rejected in &chunk.rejected {
            self.report.write(rejected)?;
        }
        for rejection in &rejected_by_server {
            self.report
                .write(&server_rejected_row(&chunk, &body, rejection))?;
        }
        let server_rejected = rejected_by_server.len() as u64;
        self.totals.rows_read += chunk.rows;
        self.totals.rows_rejected += chunk.rejected.len() as u64 + server_rejected;
        self.totals.rows_imported += (chunk.events.len() as u64).saturating_sub(server_rejected);
        self.next = Some(chunk.end);
        let report_bytes = self.report.sync()?;
        if !self.dry_run {
            self.checkpoint(chunk.end, report_bytes, false)?;
        }
        self.show_progress();
        Ok(())
    }

    fn checkpoint(&self, next: Position, report_bytes: u64, complete: bool) -> anyhow::Result<()> {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            import_id: self.plan.identity.id.clone(),
            file: self.plan.file.clone(),
            file_bytes: self.plan.file_bytes,
            mapping: self.plan.fingerprint.clone(),
            report: self.plan.report.clone(),
            report_bytes,
            next,
            rows_read: self.totals.rows_read,
            rows_imported: self.totals.rows_imported,
            rows_rejected: self.totals.rows_rejected,
            complete,
            updated_at: tandem_core::time_util::format_iso8601_ms(tandem_core::time_util::now_ms()),
        }
        .store(&self.plan.checkpoint)
        .with_context(|| format!("writing the checkpoint {}", self.plan.checkpoint.display()))
    }

    fn show_progress(&self) {
        let rows = self.totals.rows_read - self.baseline.rows_read;
        let per_second = rows as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{} rows read, {} acknowledged ({per_second:.0}/s), {} rejected",
            self.baseline.rows_read + self.read.rows.load(Ordering::Relaxed),
            self.totals.rows_read,
            self.totals.rows_rejected
        ));
    }

    /// The summary, the final checkpoint and the exit code.
    fn finish(mut self, sending: Result<(), SendFailure>, json: bool) -> anyhow::Result<ExitCode> {
        self.bar.finish_and_clear();
        let read_end = self.read_end.take().unwrap_or(Ok(ReadEnd::Abandoned));
        let complete = sending.is_ok() && matches!(read_end, Ok(ReadEnd::Finished));
        let stopped_early = sending.is_ok() && matches!(read_end, Ok(ReadEnd::StoppedEarly));
        let mut failure: Option<(u8, String)> = match (&sending, &read_end) {
            (Err(failure), _) => Some((1, failure.to_string())),
            (Ok(()), Err(error)) => Some((2, format!("{}: {error}", self.plan.file.display()))),
            _ => None,
        };
        if !self.dry_run && failure.is_none() {
            let next = self.next.unwrap_or(Position {
                byte: 0,
                line: 1,
                row: 1,
            });
            let final_checkpoint = self
                .report
                .sync()
                .map_err(anyhow::Error::from)
                .and_then(|report_bytes| self.checkpoint(next, report_bytes, complete));
            if let Err(error) = final_checkpoint {
                failure = Some((1, format!("{error:#}")));
            }
        }
        self.print_summary(complete, stopped_early, failure.as_ref(), json);
        Ok(match failure {
            None => ExitCode::SUCCESS,
            Some((code, _)) => ExitCode::from(code),
        })
    }

    fn print_summary(
        &self,
        complete: bool,
        stopped_early: bool,
        failure: Option<&(u8, String)>,
        json: bool,
    ) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let this_run = Totals {
            rows_read: self.totals.rows_read - self.baseline.rows_read,
            rows_imported: self.totals.rows_imported - self.baseline.rows_imported,
            rows_rejected: self.totals.rows_rejected - self.baseline.rows_rejected,
        };
        let per_second = this_run.rows_read as f64 / elapsed.max(0.001);
        let next_row = self.next.map_or(1, |next| next.row);
        if json {
            let summary = serde_json::json!({
                "file": self.plan.file,
                "import_id": self.plan.identity.id,
                "dry_run": self.dry_run,
                "complete": complete,
                "stopped_early": stopped_early,
                "rows_read": self.totals.rows_read,
                "rows_imported": self.totals.rows_imported,
                "rows_rejected": self.totals.rows_rejected,
                "next_row": next_row,
                "this_run": {
                    "resumed_at_row": self.resumed_at.map(|p| p.row),
                    "rows_read": this_run.rows_read,
                    "rows_imported": this_run.rows_imported,
                    "rows_rejected": this_run.rows_rejected,
                    "elapsed_seconds": elapsed,
                    "rows_per_second": per_second,
                },
                "report": self.plan.report,
                "checkpoint": (!self.dry_run).then_some(&self.plan.checkpoint),
                "error": failure.map(|(_, message)| message),
            });
            println!("{summary}");
            if let Some((_, message)) = failure {
                eprintln!("error: {message}");
            }
            return;
        }
        let state = match (self.dry_run, complete, stopped_early, failure) {
            (_, _, _, Some(_)) => "stopped by an error",
            (true, true, _, _) => "checked (dry run: nothing was sent)",
            (true, false, _, _) => "partly checked (dry run: nothing was sent)",
            (false, true, _, _) => "complete",
            (false, false, true, _) => "stopped at --max-rows",
            (false, false, false, _) => "incomplete",
        };
        let imported = if self.dry_run { "valid" } else { "imported" };
        println!("import of {}: {state}", self.plan.file.display());
        println!(
            "  rows read {}, {imported} {}, rejected {} (report: {})",
            self.totals.rows_read,
            self.totals.rows_imported,
            self.totals.rows_rejected,
            self.plan.report.display()
        );
        println!(
            "  this run: {} rows in {elapsed:.1} s ({per_second:.0} rows/s){}",
            this_run.rows_read,
            self.resumed_at
                .map(|p| format!(", resumed at row {}", p.row))
                .unwrap_or_default()
        );
        if self.resumed_at.is_some() && !self.dry_run {
            println!("  rows sent again after the interruption keep their messageIds: the server drops the ones it already stored");
        }
        if let Some((_, message)) = failure {
            eprintln!("error: {message}");
            if !self.dry_run && self.totals.rows_read > 0 {
                eprintln!(
                    "the rows before row {next_row} are imported; run the same command with --resume to continue"
                );
            } else if !self.dry_run {
                eprintln!("nothing was imported");
            }
        } else if stopped_early {
            println!("  continue with --resume (next row: {next_row})");
        }
    }
}

fn progress_bar(total_bytes: u64, start_byte: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total_bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} [{wide_bar}] {percent}% ETA {eta} {msg}",
        )
        .expect("a valid template"),
    );
    bar.set_position(start_byte);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Dry run: every chunk is "acknowledged" at once.
async fn dry_run(mut chunk: Chunk) -> Result<Acknowledged, SendFailure> {
    chunk.body.clear();
    Ok(Acknowledged {
        chunk,
        body: Bytes::new(),
        rejected_by_server: Vec::new(),
    })
}

/// The reader thread: rows into chunks into the channel, until the end, `max_rows`, an error, or
/// the sending side hanging up. The last chunk is sent even when a read error ends the file early.
fn read_chunks<R: Read + Seek>(
    mut reader: RowReader<R>,
    limits: ChunkLimits,
    max_rows: Option<u64>,
    chunks: tokio::sync::mpsc::Sender<Chunk>,
    progress: &ReadProgress,
    bar: &indicatif::ProgressBar,
) -> Result<ReadEnd, ReadError> {
    let mut chunker = Chunker::new(limits);
    let mut rows = 0u64;
    let ended = loop {
        if max_rows.is_some_and(|max| rows >= max) {
            break Ok(ReadEnd::StoppedEarly);
        }
        let row = match reader.next_row() {
            Ok(Some(row)) => row,
            Ok(None) => break Ok(ReadEnd::Finished),
            Err(error) => break Err(error),
        };
        rows += 1;
        progress.rows.store(rows, Ordering::Relaxed);
        bar.set_position(row.end.byte);
        if let Some(chunk) = chunker.push(row) {
            if chunks.blocking_send(chunk).is_err() {
                return Ok(ReadEnd::Abandoned);
            }
        }
    };
    if let Some(chunk) = chunker.finish() {
        if chunks.blocking_send(chunk).is_err() {
            return Ok(ReadEnd::Abandoned);
        }
    }
    ended
}

/// A report line for an event the server refused: the event itself stands for the raw row.
fn server_rejected_row(chunk: &Chunk, body: &[u8], rejection: &ServerRejection) -> RejectedRow {
    let (row, line) = chunk
        .events
        .get(rejection.index)
        .map_or((0, 0), |event| (event.row, event.line));
    let raw = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|batch| batch["batch"].get(rejection.index).map(ToString::to_string))
        .unwrap_or_default();
    RejectedRow {
        row,
        line,
        reason: Reason::ServerRejected,
        message: format!("{}: {}", rejection.code, rejection.message),
        raw,
    }
}
