//! Segment files: naming, listing, and positional reads through a sparse offset index.

use crate::api::{ReadError, SegmentInfo, StoredRecord};
use crate::format::{Scanner, Step};
use bytes::Bytes;
use parking_lot::Mutex;
use std::fs::File;
use std::io::{self, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Extension of segment files; the stem is the base offset, zero-padded to 20 digits.
pub const SEGMENT_EXTENSION: &str = "seg";

/// One index entry per this many bytes of records: a read scans at most this much to find its offset.
const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;

/// Read buffer for sequential scans.
const SCAN_BUFFER_BYTES: usize = 1 << 20;

pub fn segment_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.{SEGMENT_EXTENSION}"))
}

/// `(base offset, path)` of every segment file in `dir`, oldest first. Other files are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == SEGMENT_EXTENSION) {
            if let Some(base) = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| stem.parse::<u64>().ok())
            {
                found.push((base, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A segment as the log keeps it: the durable extent, a read handle and a sparse index.
/// Only the writer thread grows `end_offset`/`bytes`, after fsync.
pub struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    file: File,
    end_offset: AtomicU64,
    bytes: AtomicU64,
    sealed: AtomicBool,
    /// `(offset, byte position)` pairs, ascending; `None` until first needed for a sealed segment.
    index: Mutex<Option<Vec<(u64, u64)>>>,
}

impl Segment {
    pub fn open(
        path: PathBuf,
        base_offset: u64,
        end_offset: u64,
        bytes: u64,
        sealed: bool,
        index: Option<Vec<(u64, u64)>>,
    ) -> io::Result<Segment> {
        let file = File::open(&path)?;
        Ok(Segment {
            base_offset,
            path,
            file,
            end_offset: AtomicU64::new(end_offset),
            bytes: AtomicU64::new(bytes),
            sealed: AtomicBool::new(sealed),
            index: Mutex::new(index),
        })
    }

    pub fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// Makes records up to `end_offset` (ending at byte `bytes`) visible; `marks` are index
    /// entries for the records just written.
    pub fn extend(&self, end_offset: u64, bytes: u64, marks: &[(u64, u64)]) {
        if let Some(index) = self.index.lock().as_mut() {
            let mut last = index.last().map(|&(_, position)| position);
            for &(offset, position) in marks {
                if last.is_none_or(|last| position >= last + INDEX_INTERVAL_BYTES) {
                    index.push((offset, position));
                    last = Some(position);
                }
            }
        }
        self.bytes.store(bytes, Ordering::Release);
        self.end_offset.store(end_offset, Ordering::Release);
    }

    pub fn info(&self) -> SegmentInfo {
        let modified_ms = std::fs::metadata(&self.path)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        SegmentInfo {
            path: self.path.clone(),
            base_offset: self.base_offset,
            end_offset: self.end_offset(),
            bytes: self.bytes(),
            sealed: self.is_sealed(),
            modified_ms,
        }
    }

    /// Reads up to `max` records from `from` (which must lie in this segment), stopping at the
    /// durable end. Any invalid record is corruption: durable bytes were verified when written.
    pub fn read(
        &self,
        from: u64,
        max: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<(), ReadError> {
        let end = self.end_offset();
        if from >= end || max == 0 {
            return Ok(());
        }
        let (mut offset, position) = self.seek(from)?;
        let limit = self.bytes();
        let reader = BufReader::with_capacity(
            SCAN_BUFFER_BYTES.min((limit - position) as usize).max(4096),
            PositionalReader {
                file: &self.file,
                position,
                limit,
            },
        );
        let mut scanner = Scanner::new(reader, position, offset);
        let wanted = max.min((end - from) as usize);
        let mut taken = 0;
        while offset < end && taken < wanted {
            match scanner.step()? {
                Step::Record(record) => {
                    if record.offset >= from {
                        out.push(StoredRecord {
                            offset: record.offset,
                            timestamp_ms: record.timestamp_ms,
                            payload: Bytes::from(record.payload),
                        });
                        taken += 1;
                    }
                    offset = record.offset + 1;
                }
                Step::End => {
                    return Err(self.corruption(
                        scanner.position,
                        format!("segment ends before offset {end}"),
                    ))
                }
                Step::Invalid(invalid) => {
                    return Err(self.corruption(scanner.position, invalid.to_string()))
                }
            }
        }
        Ok(())
    }

    fn corruption(&self, position: u64, reason: String) -> ReadError {
        ReadError::Corruption {
            segment: self.path.display().to_string(),
            position,
            reason,
        }
    }

    /// The last indexed `(offset, position)` at or before `offset`, building the index on first use.
    fn seek(&self, offset: u64) -> Result<(u64, u64), ReadError> {
        let mut guard = self.index.lock();
        if guard.is_none() {
            *guard = Some(self.build_index()?);
        }
        let index = guard.as_ref().expect("index just built");
        let at = index.partition_point(|&(indexed, _)| indexed <= offset);
        Ok(if at == 0 {
            (self.base_offset, 0)
        } else {
            index[at - 1]
        })
    }

    fn build_index(&self) -> Result<Vec<(u64, u64)>, ReadError> {
        let limit = self.bytes();
        let reader = BufReader::with_capacity(
            SCAN_BUFFER_BYTES,
            PositionalReader {
                file: &self.file,
                position: 0,
                limit,
            },
        );
        let mut scanner = Scanner::new(reader, 0, self.base_offset);
        let mut index = Vec::new();
        let mut last_mark: Option<u64> = None;
        loop {
            let position = scanner.position;
            match scanner.step()? {
                Step::Record(record) => {
                    if last_mark.is_none_or(|last| position >= last + INDEX_INTERVAL_BYTES) {
                        index.push((record.offset, position));
                        last_mark = Some(position);
                    }
                }
                Step::End => return Ok(index),
                Step::Invalid(invalid) => {
                    return Err(self.corruption(position, invalid.to_string()))
                }
            }
        }
    }
}

/// `Read` over a file region with `pread`, so readers never disturb each other or the writer.
struct PositionalReader<'a> {
    file: &'a File,
    position: u64,
    limit: u64,
}

impl io::Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = (self.limit.saturating_sub(self.position) as usize).min(buf.len());
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..room], self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}
