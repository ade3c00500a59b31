//! The public contract of the log, shared by the file backend and (later) a NATS JetStream one.

use bytes::Bytes;
use futures::future::BoxFuture;
use std::ops::Range;
use std::time::Duration;

/// A record to append: its timestamp (tandem puts `receivedAt` there) and opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// A record read back, with the offset the log gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// Why an append was refused or failed. None of these means the records are stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The writer's bounded queue is full: push back (503 + Retry-After).
    #[error("log queue is full")]
    QueueFull,
    /// The disk is full (ENOSPC, or free space below the configured minimum).
    #[error("disk is full")]
    DiskFull,
    /// A record is larger than `RECORD_BYTES_MAX` or empty.
    #[error("record of {0} bytes is empty or too large")]
    InvalidRecord(usize),
    /// The log is closed or its writer stopped.
    #[error("log is closed")]
    Closed,
    #[error("log i/o error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The offset is before the first retained record (deleted by retention).
    #[error("offset {requested} is below the log start {start}")]
    BelowStart { requested: u64, start: u64 },
    /// A record failed its CRC or offset check when read back.
    #[error("corrupt record in {segment} at byte {position}: {reason}")]
    Corruption {
        segment: String,
        position: u64,
        reason: String,
    },
    #[error("log i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Options of one log. `Default` gives the documented defaults of `tandem_core::limits`.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A name for metrics labels and log lines (the workspace id).
    pub name: String,
    pub segment_bytes_max: u64,
    /// Bytes of appends queued for the writer before `append` answers `QueueFull`.
    pub queue_bytes_max: usize,
    /// Keep at most this many bytes of sealed segments (oldest deleted first). `None`: no size limit.
    pub retention_bytes_max: Option<u64>,
    /// Delete sealed segments whose newest record is older than this. `None`: no age limit.
    pub retention_age: Option<Duration>,
    /// Refuse appends (`DiskFull`) while the filesystem has less free space than this.
    pub disk_free_bytes_min: u64,
    /// When false, skip fdatasync (only for the benchmark's no-persistence reference; never in serve).
    pub fsync: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        use tandem_core::limits::*;
        LogOptions {
            name: "log".into(),
            segment_bytes_max: DEFAULT_SEGMENT_BYTES_MAX,
            queue_bytes_max: DEFAULT_LOG_QUEUE_BYTES_MAX,
            retention_bytes_max: None,
            retention_age: None,
            disk_free_bytes_min: DEFAULT_DISK_FREE_BYTES_MIN,
            fsync: true,
        }
    }
}

/// What recovery found when a log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// First offset of the next append.
    pub next_offset: u64,
    /// Bytes cut from the tail because they were torn or corrupt (0 after a clean shutdown).
    pub truncated_bytes: u64,
    /// Why the tail was truncated, when it was.
    pub truncation_reason: Option<String>,
}

/// A segment file as seen from outside (for retention reports, sidecars and `log verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: std::path::PathBuf,
    pub base_offset: u64,
    /// One past the last offset in the segment.
    pub end_offset: u64,
    pub bytes: u64,
    pub sealed: bool,
    /// Modification time of the file, ms since epoch: an upper bound on its newest record's time.
    pub modified_ms: i64,
}

/// Sizes and positions of a log, for metrics and the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    pub start_offset: u64,
    /// One past the last durable record.
    pub end_offset: u64,
    pub bytes: u64,
    pub segments: usize,
    pub queued_bytes: usize,
}

/// The contract every log backend keeps. Appends resolve only once durable; reads see only
/// durable records; offsets are dense and increase by one per record.
pub trait EventLog: Send + Sync + 'static {
    /// Queues `records` for the writer and returns at once: `Err(QueueFull | DiskFull | InvalidRecord)`
    /// without queueing anything, or a future resolving to the offsets given once all are durable.
    /// The records of one call are contiguous in the log.
    fn append(
        &self,
        records: Vec<Record>,
    ) -> Result<BoxFuture<'static, Result<Range<u64>, AppendError>>, AppendError>;

    /// Up to `max_records` durable records from `from` on (fewer, or none, at the end).
    fn read(&self, from: u64, max_records: usize) -> Result<Vec<StoredRecord>, ReadError>;

    /// Resolves once a durable record exists at or beyond `offset` (or at once if one does).
    fn wait_for(&self, offset: u64) -> BoxFuture<'static, ()>;

    fn stats(&self) -> LogStats;

    fn segments(&self) -> Vec<SegmentInfo>;

    /// The committed offset of consumer `name`: the next offset it should read. `None` if it never committed.
    fn committed_offset(&self, name: &str) -> Result<Option<u64>, std::io::Error>;

    /// Durably records that consumer `name` has processed everything before `next_offset`.
    fn commit_offset(&self, name: &str, next_offset: u64) -> Result<(), std::io::Error>;

    /// Consumer names with their committed offsets (for lag metrics).
    fn consumers(&self) -> Vec<(String, u64)>;
}
