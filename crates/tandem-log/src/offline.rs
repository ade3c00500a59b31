//! Reading and checking a log directory without opening it for writing (`tandem log export`
//! and `tandem log verify`, safe to run while the server is down or after a crash).

use crate::api::{ReadError, StoredRecord};
use crate::format::{Scanner, Step};
use crate::segment::list_segments;
use bytes::Bytes;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

const READ_BUFFER_BYTES: usize = 1 << 20;

/// Every valid record of the log in `dir`, in offset order. A torn or corrupt tail of the last
/// segment ends the stream (the next start truncates it); an invalid record in a sealed segment
/// is an error.
pub fn read_dir(dir: &Path) -> io::Result<impl Iterator<Item = Result<StoredRecord, ReadError>>> {
    let segments = list_segments(dir)?;
    Ok(DirReader {
        segments,
        next: 0,
        current: None,
        done: false,
    })
}

struct DirReader {
    segments: Vec<(u64, PathBuf)>,
    next: usize,
    current: Option<(Scanner<BufReader<File>>, PathBuf, bool)>,
    done: bool,
}

impl Iterator for DirReader {
    type Item = Result<StoredRecord, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if self.current.is_none() {
                let (base, path) = self.segments.get(self.next)?.clone();
                self.next += 1;
                let is_last = self.next == self.segments.len();
                match File::open(&path) {
                    Ok(file) => {
                        self.current = Some((
                            Scanner::new(
                                BufReader::with_capacity(READ_BUFFER_BYTES, file),
                                0,
                                base,
                            ),
                            path,
                            is_last,
                        ))
                    }
                    Err(error) => {
                        self.done = true;
                        return Some(Err(error.into()));
                    }
                }
            }
            let (scanner, path, is_last) = self.current.as_mut().expect("current segment");
            match scanner.step() {
                Ok(Step::Record(record)) => {
                    return Some(Ok(StoredRecord {
                        offset: record.offset,
                        timestamp_ms: record.timestamp_ms,
                        payload: Bytes::from(record.payload),
                    }))
                }
                Ok(Step::End) => self.current = None,
                Ok(Step::Invalid(invalid)) => {
                    self.done = true;
                    if *is_last {
                        return None;
                    }
                    return Some(Err(ReadError::Corruption {
                        segment: path.display().to_string(),
                        position: scanner.position,
                        reason: invalid.to_string(),
                    }));
                }
                Err(error) => {
                    self.done = true;
                    return Some(Err(error.into()));
                }
            }
        }
        None
    }
}

/// What `verify_dir` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub records: u64,
    pub bytes: u64,
    pub segments: usize,
    pub problems: Vec<Problem>,
}

/// An invalid record, or a gap between segments.
#[derive(Debug, Clone)]
pub struct Problem {
    pub segment: PathBuf,
    pub position: u64,
    pub reason: String,
    /// In the last segment: the next start cuts the log there (a crash mid-write looks like this).
    pub in_last_segment: bool,
}

impl Problem {
    /// A torn or corrupt tail of the active segment, which recovery truncates at next start.
    pub fn is_torn_tail(&self) -> bool {
        self.in_last_segment
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.segment.display(),
            self.position,
            self.reason
        )
    }
}

/// Reads every record of every segment in `dir`, checking length, CRC and offset continuity.
pub fn verify_dir(dir: &Path) -> io::Result<VerifyReport> {
    let segments = list_segments(dir)?;
    let mut report = VerifyReport {
        segments: segments.len(),
        ..VerifyReport::default()
    };
    let mut expected_base: Option<u64> = None;
    for (index, (base, path)) in segments.iter().enumerate() {
        let in_last_segment = index + 1 == segments.len();
        let problem = |position, reason: String| Problem {
            segment: path.clone(),
            position,
            reason,
            in_last_segment,
        };
        if let Some(expected) = expected_base.filter(|expected| expected != base) {
            report.problems.push(problem(
                0,
                format!("segment starts at offset {base}, the previous one ends at {expected}"),
            ));
        }
        let file = File::open(path)?;
        report.bytes += file.metadata()?.len();
        let mut scanner = Scanner::new(BufReader::with_capacity(READ_BUFFER_BYTES, file), 0, *base);
        let mut intact = true;
        loop {
            match scanner.step()? {
                Step::Record(_) => report.records += 1,
                Step::End => break,
                Step::Invalid(invalid) => {
                    report
                        .problems
                        .push(problem(scanner.position, invalid.to_string()));
                    intact = false;
                    break;
                }
            }
        }
        // After a corrupt record the segment's true end is unknown: don't also report a gap.
        expected_base = intact.then_some(scanner.next_offset);
    }
    Ok(report)
}
