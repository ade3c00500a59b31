//! `FileLog`: the file-backed `EventLog`. Opening recovers; one writer thread group-commits.

use crate::api::*;
use crate::format::{self, Scanner, Step};
use crate::offsets::OffsetStore;
use crate::segment::{list_segments, segment_path, Segment};
use crate::space::DiskSpace;
use crate::writer::{Request, Writer};
use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::{Mutex, RwLock};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tandem_core::limits::RECORD_BYTES_MAX;

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("log directory {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
}

/// What the writer and the readers share.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub options: LogOptions,
    pub segments: RwLock<Vec<Arc<Segment>>>,
    pub start_offset: AtomicU64,
    /// One past the last durable record; readers and `wait_for` watch it.
    pub durable_end: tokio::sync::watch::Sender<u64>,
    pub queued_bytes: AtomicUsize,
    pub space: DiskSpace,
}

/// A segmented, CRC-checked, group-committed log in one directory.
pub struct FileLog {
    shared: Arc<Shared>,
    sender: Mutex<Option<crossbeam_channel::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    offsets: OffsetStore,
    closed: AtomicBool,
}

/// What `rewrite_sealed` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteReport {
    pub segments_scanned: u64,
    pub segments_rewritten: u64,
    pub records_replaced: u64,
}

/// What `enforce_retention` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub new_start_offset: u64,
}

impl FileLog {
    /// Opens (creating if needed) the log in `dir`, verifying and repairing its tail: the last
    /// segment is scanned record by record and cut at the first torn or corrupt record.
    pub fn open(
        dir: &Path,
        options: LogOptions,
    ) -> Result<(Arc<FileLog>, RecoveryReport), OpenError> {
        let wrap = |source| OpenError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(wrap)?;
        let (segments, report, active) = recover(dir).map_err(wrap)?;
        if report.truncated_bytes > 0 {
            tracing::warn!(log = %options.name, bytes = report.truncated_bytes, reason = ?report.truncation_reason, "log tail truncated: torn or corrupt records removed");
            metrics::counter!("tandem_log_truncated_bytes_total", "log" => options.name.clone())
                .increment(report.truncated_bytes);
        }
        let start_offset = segments.first().map_or(0, |segment| segment.base_offset);
        let (durable_end, _) = tokio::sync::watch::channel(report.next_offset);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            space: DiskSpace::new(dir, options.disk_free_bytes_min),
            options,
            segments: RwLock::new(segments),
            start_offset: AtomicU64::new(start_offset),
            durable_end,
            queued_bytes: AtomicUsize::new(0),
        });
        let offsets = OffsetStore::open(&dir.join("consumers")).map_err(wrap)?;
        let (sender, receiver) = crossbeam_channel::unbounded();
        let writer = Writer::new(shared.clone(), active, report.next_offset);
        let name = format!("log-{}", shared.options.name);
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || writer.run(receiver))
            .map_err(wrap)?;
        let log = FileLog {
            shared,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            offsets,
            closed: AtomicBool::new(false),
        };
        Ok((Arc::new(log), report))
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Stops accepting appends, lets the writer finish what is queued, and joins it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(self.sender.lock().take());
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }

    /// Seals the active segment (if it holds records) and starts a new one: afterwards every
    /// record below the returned offset is in a sealed segment. Ordered with appends.
    pub fn roll(&self) -> BoxFuture<'static, Result<u64, AppendError>> {
        if self.closed.load(Ordering::Acquire) {
            return futures::future::ready(Err(AppendError::Closed)).boxed();
        }
        let (done, rolled) = tokio::sync::oneshot::channel();
        let sent = self.sender.lock().as_ref().map(|sender| {
            sender.send(Request {
                records: Vec::new(),
                bytes: 0,
                done,
                roll: true,
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            return futures::future::ready(Err(AppendError::Closed)).boxed();
        }
        async move {
            match rolled.await {
                Ok(Ok(range)) => Ok(range.start),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(AppendError::Closed),
            }
        }
        .boxed()
    }

    /// Rewrites the sealed segments below `below` in place of erased records: `replace` sees
    /// each record's payload and returns the payload to store instead (a tombstone), or `None`
    /// to keep it. Offsets and timestamps stay, so consumers' positions stay valid; a segment
    /// with nothing to replace is not touched. Each rewritten segment is written beside the
    /// original, fsynced, renamed over it and the directory fsynced: a crash leaves either the
    /// old or the new file, never a mix. Readers that opened the old file finish on it.
    /// Blocking (file I/O): call from a blocking thread.
    pub fn rewrite_sealed(
        &self,
        below: u64,
        replace: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
    ) -> io::Result<RewriteReport> {
        let candidates: Vec<Arc<Segment>> = self
            .shared
            .segments
            .read()
            .iter()
            .filter(|segment| segment.is_sealed() && segment.base_offset < below)
            .cloned()
            .collect();
        let mut report = RewriteReport::default();
        for segment in candidates {
            report.segments_scanned += 1;
            let file = std::fs::File::open(&segment.path)?;
            let mut scanner = crate::format::Scanner::new(
                std::io::BufReader::with_capacity(1 << 20, file),
                0,
                segment.base_offset,
            );
            let mut out = Vec::new();
            let mut replaced = 0u64;
            loop {
                match scanner.step()? {
                    crate::format::Step::Record(record) => {
                        let payload = match replace(&record.payload) {
                            Some(new) => {
                                replaced += 1;
                                new
                            }
                            None => record.payload,
                        };
                        crate::format::encode(
                            &mut out,
                            record.offset,
                            &Record {
                                timestamp_ms: record.timestamp_ms,
                                payload: payload.into(),
                            },
                        );
                    }
                    crate::format::Step::End => break,
                    crate::format::Step::Invalid(invalid) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {invalid}", segment.path.display()),
                        ))
                    }
                }
            }
            if replaced == 0 {
                continue;
            }
            let temporary = segment.path.with_extension("rewrite");
            {
                let mut file = std::fs::File::create(&temporary)?;
                std::io::Write::write_all(&mut file, &out)?;
                file.sync_all()?;
            }
            std::fs::rename(&temporary, &segment.path)?;
            sync_dir(&self.shared.dir)?;
            let fresh = Arc::new(Segment::open(
                segment.path.clone(),
                segment.base_offset,
                segment.end_offset(),
                out.len() as u64,
                true,
                None,
            )?);
            let mut segments = self.shared.segments.write();
            if let Some(slot) = segments
                .iter_mut()
                .find(|known| known.base_offset == segment.base_offset)
            {
                *slot = fresh;
            }
            report.segments_rewritten += 1;
            report.records_replaced += replaced;
        }
        Ok(report)
    }

    /// Deletes sealed segments beyond the size limit or older than the age limit, oldest first.
    /// The active segment is never deleted.
    pub fn enforce_retention(&self) -> RetentionReport {
        let options = &self.shared.options;
        let now_ms = tandem_core::time_util::now_ms();
        let age_cutoff_ms = options
            .retention_age
            .map(|age| now_ms - age.as_millis() as i64);
        let mut segments = self.shared.segments.write();
        let mut sealed_bytes: u64 = segments
            .iter()
            .filter(|segment| segment.is_sealed())
            .map(|segment| segment.bytes())
            .sum();
        let mut doomed = Vec::new();
        while segments.len() > 1 && segments[0].is_sealed() {
            let first = &segments[0];
            let over_size = options
                .retention_bytes_max
                .is_some_and(|max| sealed_bytes > max);
            let too_old = age_cutoff_ms.is_some_and(|cutoff| first.info().modified_ms < cutoff);
            if !over_size && !too_old {
                break;
            }
            sealed_bytes -= first.bytes();
            doomed.push(segments.remove(0));
        }
        let new_start_offset = segments.first().map_or(0, |segment| segment.base_offset);
        self.shared
            .start_offset
            .store(new_start_offset, Ordering::Release);
        drop(segments);
        let mut report = RetentionReport {
            new_start_offset,
            ..RetentionReport::default()
        };
        for segment in doomed {
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {
                    report.segments_deleted += 1;
                    report.bytes_deleted += segment.bytes();
                }
                Err(error) => {
                    tracing::warn!(path = %segment.path.display(), %error, "could not delete an expired segment")
                }
            }
        }
        if report.segments_deleted > 0 {
            let _ = sync_dir(&self.shared.dir);
            tracing::info!(log = %options.name, segments = report.segments_deleted, bytes = report.bytes_deleted, start = new_start_offset, "retention deleted old segments");
            metrics::counter!("tandem_log_retention_deleted_bytes_total", "log" => options.name.clone()).increment(report.bytes_deleted);
        }
        report
    }

    fn refuse(&self, reason: &'static str, error: AppendError) -> AppendError {
        metrics::counter!("tandem_log_appends_refused_total", "log" => self.shared.options.name.clone(), "reason" => reason).increment(1);
        error
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl EventLog for FileLog {
    fn append(
        &self,
        records: Vec<Record>,
    ) -> Result<BoxFuture<'static, Result<Range<u64>, AppendError>>, AppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AppendError::Closed);
        }
        if let Some(bad) = records.iter().find(|record| {
            record.payload.is_empty()
                || record.payload.len() > RECORD_BYTES_MAX - format::HEADER_BYTES
        }) {
            return Err(AppendError::InvalidRecord(bad.payload.len()));
        }
        if records.is_empty() {
            let end = *self.shared.durable_end.borrow();
            return Ok(futures::future::ready(Ok(end..end)).boxed());
        }
        if !self.shared.space.available() {
            return Err(self.refuse("disk_full", AppendError::DiskFull));
        }
        let bytes: usize = records
            .iter()
            .map(|record| format::encoded_len(record.payload.len()))
            .sum();
        let queued = self.shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if queued + bytes > self.shared.options.queue_bytes_max && queued > 0 {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(self.refuse("queue_full", AppendError::QueueFull));
        }
        let (done, durable) = tokio::sync::oneshot::channel();
        let sent = self.sender.lock().as_ref().map(|sender| {
            sender.send(Request {
                records,
                bytes,
                done,
                roll: false,
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(AppendError::Closed);
        }
        Ok(async move { durable.await.unwrap_or(Err(AppendError::Closed)) }.boxed())
    }

    fn read(&self, from: u64, max_records: usize) -> Result<Vec<StoredRecord>, ReadError> {
        let start = self.shared.start_offset.load(Ordering::Acquire);
        if from < start {
            return Err(ReadError::BelowStart {
                requested: from,
                start,
            });
        }
        let end = *self.shared.durable_end.borrow();
        let mut out = Vec::new();
        if from >= end || max_records == 0 {
            return Ok(out);
        }
        let segments: Vec<Arc<Segment>> = {
            let all = self.shared.segments.read();
            let first = all
                .partition_point(|segment| segment.base_offset <= from)
                .saturating_sub(1);
            all[first..].to_vec()
        };
        let mut next = from;
        for segment in segments {
            if out.len() >= max_records || next >= end {
                break;
            }
            segment.read(next, max_records - out.len(), &mut out)?;
            next = out
                .last()
                .map_or(next, |record| record.offset + 1)
                .max(segment.end_offset());
        }
        Ok(out)
    }

    fn wait_for(&self, offset: u64) -> BoxFuture<'static, ()> {
        let mut receiver = self.shared.durable_end.subscribe();
        async move {
            let _ = receiver.wait_for(|end| *end > offset).await;
        }
        .boxed()
    }

    fn stats(&self) -> LogStats {
        let segments = self.shared.segments.read();
        LogStats {
            start_offset: self.shared.start_offset.load(Ordering::Acquire),
            end_offset: *self.shared.durable_end.borrow(),
            bytes: segments.iter().map(|segment| segment.bytes()).sum(),
            segments: segments.len(),
            queued_bytes: self.shared.queued_bytes.load(Ordering::Acquire),
        }
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .segments
            .read()
            .iter()
            .map(|segment| segment.info())
            .collect()
    }

    fn committed_offset(&self, name: &str) -> Result<Option<u64>, io::Error> {
        self.offsets.get(name)
    }

    fn commit_offset(&self, name: &str, next_offset: u64) -> Result<(), io::Error> {
        self.offsets.commit(name, next_offset)
    }

    fn consumers(&self) -> Vec<(String, u64)> {
        self.offsets.all()
    }
}

/// Loads the segments of `dir`, scanning only the last one and cutting its invalid tail.
/// Returns the segments, the report and a write handle on the active (last) segment.
fn recover(dir: &Path) -> io::Result<(Vec<Arc<Segment>>, RecoveryReport, File)> {
    let mut listed = list_segments(dir)?;
    if listed.is_empty() {
        let path = segment_path(dir, 0);
        File::create(&path)?.sync_all()?;
        sync_dir(dir)?;
        listed.push((0, path));
    }
    let mut segments = Vec::with_capacity(listed.len());
    for window in listed.windows(2) {
        let ((base, path), (next_base, _)) = (&window[0], &window[1]);
        let bytes = std::fs::metadata(path)?.len();
        segments.push(Arc::new(Segment::open(
            path.clone(),
            *base,
            *next_base,
            bytes,
            true,
            None,
        )?));
    }
    let (base, path) = listed.pop().expect("at least one segment");
    let active = OpenOptions::new().read(true).write(true).open(&path)?;
    let file_bytes = active.metadata()?.len();
    let mut scanner = Scanner::new(BufReader::with_capacity(1 << 20, &active), 0, base);
    let mut index = Vec::new();
    let problem = loop {
        let position = scanner.position;
        match scanner.step()? {
            Step::Record(record) => index.push((record.offset, position)),
            Step::End => break None,
            Step::Invalid(invalid) => {
                break Some(format!(
                    "{} at byte {position} of {}",
                    invalid,
                    path.display()
                ))
            }
        }
    };
    let (valid_bytes, next_offset) = (scanner.position, scanner.next_offset);
    let truncated_bytes = file_bytes - valid_bytes;
    if truncated_bytes > 0 {
        active.set_len(valid_bytes)?;
        active.sync_all()?;
    }
    let segment = Segment::open(
        path,
        base,
        next_offset,
        valid_bytes,
        false,
        Some(Vec::new()),
    )?;
    segment.extend(next_offset, valid_bytes, &index);
    segments.push(Arc::new(segment));
    let report = RecoveryReport {
        segments: segments.len(),
        next_offset,
        truncated_bytes,
        truncation_reason: problem.filter(|_| truncated_bytes > 0),
    };
    Ok((segments, report, active))
}

/// fsyncs a directory so file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
