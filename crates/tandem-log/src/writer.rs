//! The writer thread: group commit.
//!
//! It blocks for one append, drains every other append already waiting (up to
//! `GROUP_COMMIT_BYTES_MAX`), encodes them into one buffer, writes it with one `pwrite`, calls
//! `fdatasync` once, publishes the new durable end, and only then resolves the appends. If the
//! write or the sync fails, the file is cut back to its last durable length and the appends of
//! the group fail (`DiskFull` for ENOSPC): nothing is acknowledged that is not stored.

use crate::api::{AppendError, Record};
use crate::file_log::{sync_dir, Shared};
use crate::format;
use crate::segment::{segment_path, Segment};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tandem_core::limits::GROUP_COMMIT_BYTES_MAX;

/// One `append` call on its way to disk.
pub(crate) struct Request {
    pub records: Vec<Record>,
    /// Encoded bytes, counted against the queue bound until the request is answered.
    pub bytes: usize,
    pub done: tokio::sync::oneshot::Sender<Result<Range<u64>, AppendError>>,
    /// Seal the active segment (when it holds records) before anything else of this request:
    /// what `FileLog::roll` asks, so that a rewrite finds every record in a sealed segment.
    pub roll: bool,
}

/// Why a group failed, in a form that can be handed to each of its requests.
#[derive(Clone)]
enum Failure {
    DiskFull,
    Io(io::ErrorKind, String),
}

impl Failure {
    fn from_io(error: &io::Error) -> Failure {
        match error.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Failure::DiskFull,
            _ => Failure::Io(error.kind(), error.to_string()),
        }
    }

    fn to_error(&self) -> AppendError {
        match self {
            Failure::DiskFull => AppendError::DiskFull,
            Failure::Io(kind, message) => AppendError::Io(io::Error::new(*kind, message.clone())),
        }
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    file: File,
    segment: Arc<Segment>,
    /// Durable length of the active segment.
    position: u64,
    /// Next offset to give (durable end while no group is in progress).
    next_offset: u64,
    buffer: Vec<u8>,
    marks: Vec<(u64, u64)>,
    /// Requests encoded into `buffer`, with their offsets.
    pending: Vec<(Request, Range<u64>)>,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, file: File, next_offset: u64) -> Writer {
        let segment = shared
            .segments
            .read()
            .last()
            .expect("an active segment")
            .clone();
        let position = segment.bytes();
        Writer {
            shared,
            file,
            segment,
            position,
            next_offset,
            buffer: Vec::with_capacity(1 << 20),
            marks: Vec::new(),
            pending: Vec::new(),
        }
    }

    pub fn run(mut self, receiver: crossbeam_channel::Receiver<Request>) {
        while let Ok(first) = receiver.recv() {
            let mut group_bytes = first.bytes;
            let mut group = vec![first];
            while group_bytes < GROUP_COMMIT_BYTES_MAX {
                match receiver.try_recv() {
                    Ok(request) => {
                        group_bytes += request.bytes;
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    fn commit(&mut self, group: Vec<Request>) {
        let name = self.shared.options.name.clone();
        metrics::histogram!("tandem_log_group_commit_requests", "log" => name.clone())
            .record(group.len() as f64);
        if !self.shared.space.enough_free() {
            self.shared.space.mark(true);
            return self.fail_all(group.into_iter(), Failure::DiskFull);
        }
        let mut requests = group.into_iter();
        while let Some(request) = requests.next() {
            if request.roll {
                let segment_empty = self.position == 0 && self.buffer.is_empty();
                let rolled = if segment_empty {
                    Ok(())
                } else {
                    self.flush().and_then(|()| self.roll())
                };
                if let Err(failure) = rolled {
                    self.fail_all(std::iter::once(request).chain(requests), failure);
                    return;
                }
                let end = self.next_offset;
                let _ = request.done.send(Ok(end..end));
                continue;
            }
            let fits = self.position + (self.buffer.len() + request.bytes) as u64
                <= self.shared.options.segment_bytes_max;
            let segment_empty = self.position == 0 && self.buffer.is_empty();
            if !fits && !segment_empty {
                if let Err(failure) = self.flush().and_then(|()| self.roll()) {
                    self.fail_all(std::iter::once(request).chain(requests), failure);
                    return;
                }
            }
            self.encode(request);
        }
        if let Err(failure) = self.flush() {
            self.fail_all(std::iter::empty(), failure);
        }
    }

    fn encode(&mut self, request: Request) {
        let first = self.next_offset;
        for record in &request.records {
            let position = self.position + self.buffer.len() as u64;
            self.marks.push((self.next_offset, position));
            format::encode(&mut self.buffer, self.next_offset, record);
            self.next_offset += 1;
        }
        self.pending.push((request, first..self.next_offset));
    }

    /// Writes and syncs the buffer, then publishes and answers the pending requests.
    fn flush(&mut self) -> Result<(), Failure> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        if let Err(error) = self.write_and_sync() {
            let failure = Failure::from_io(&error);
            tracing::error!(log = %self.shared.options.name, %error, "log write failed; cutting back to the last durable record");
            let _ = self.file.set_len(self.position);
            let _ = self.file.sync_data();
            self.next_offset = self.segment.end_offset();
            self.buffer.clear();
            self.marks.clear();
            if matches!(failure, Failure::DiskFull) {
                self.shared.space.mark(true);
            }
            let label = if matches!(failure, Failure::DiskFull) {
                "disk_full"
            } else {
                "io"
            };
            metrics::counter!("tandem_log_write_errors_total", "log" => self.shared.options.name.clone(), "kind" => label).increment(1);
            return Err(failure);
        }
        let name = self.shared.options.name.clone();
        metrics::histogram!("tandem_log_fsync_seconds", "log" => name.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("tandem_log_group_commit_bytes", "log" => name.clone())
            .record(self.buffer.len() as f64);
        let records = self.next_offset - self.segment.end_offset();
        metrics::counter!("tandem_log_records_appended_total", "log" => name).increment(records);
        self.position += self.buffer.len() as u64;
        self.segment
            .extend(self.next_offset, self.position, &self.marks);
        self.shared.durable_end.send_replace(self.next_offset);
        self.buffer.clear();
        self.marks.clear();
        for (request, range) in self.pending.drain(..) {
            self.shared
                .queued_bytes
                .fetch_sub(request.bytes, Ordering::AcqRel);
            let _ = request.done.send(Ok(range));
        }
        Ok(())
    }

    fn write_and_sync(&mut self) -> io::Result<()> {
        if self.shared.space.fault_injected() {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.file.write_all_at(&self.buffer, self.position)?;
        if self.shared.options.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one at `next_offset`.
    fn roll(&mut self) -> Result<(), Failure> {
        let path = segment_path(&self.shared.dir, self.next_offset);
        let create = || -> io::Result<(File, Segment)> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            sync_dir(&self.shared.dir)?;
            let segment = Segment::open(
                path.clone(),
                self.next_offset,
                self.next_offset,
                0,
                false,
                Some(Vec::new()),
            )?;
            Ok((file, segment))
        };
        let (file, segment) = create().map_err(|error| {
            tracing::error!(log = %self.shared.options.name, %error, "could not start a new segment");
            Failure::from_io(&error)
        })?;
        self.segment.seal();
        let segment = Arc::new(segment);
        self.shared.segments.write().push(segment.clone());
        self.file = file;
        self.segment = segment;
        self.position = 0;
        tracing::debug!(log = %self.shared.options.name, base = self.next_offset, "new segment");
        Ok(())
    }

    /// Fails the pending requests and `rest`.
    fn fail_all(&mut self, rest: impl Iterator<Item = Request>, failure: Failure) {
        let pending: Vec<Request> = self.pending.drain(..).map(|(request, _)| request).collect();
        for request in pending.into_iter().chain(rest) {
            self.shared
                .queued_bytes
                .fetch_sub(request.bytes, Ordering::AcqRel);
            let _ = request.done.send(Err(failure.to_error()));
        }
    }
}
