//! The disk's ceiling for a durable log: how fast it can append records when every write is
//! followed by `fdatasync`, as the log's group commit does. The benchmark prints the server's
//! throughput as a fraction of this, which says how much of the hardware the server leaves unused.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::report::Percentiles;

/// Size at which the test file is emptied and refilled, like a log rolling to a new segment;
/// also bounds the disk space the measurement borrows.
const CEILING_FILE_BYTES_MAX: u64 = tandem_core::limits::DEFAULT_SEGMENT_BYTES_MAX;
/// Largest single write accepted (records × record size), so a typo cannot allocate gigabytes.
const CEILING_WRITE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// What [`disk_ceiling`] measured.
#[derive(Clone, Debug)]
pub struct DiskReport {
    pub record_bytes: usize,
    pub records_per_write: usize,
    pub writes: u64,
    pub bytes_written: u64,
    pub elapsed: Duration,
    /// Millions of bytes per second, made durable.
    pub megabytes_per_second: f64,
    pub writes_per_second: f64,
    pub records_per_second: f64,
    /// Time spent in each `fdatasync`, in µs.
    pub fsync_latency_us: Percentiles,
}

/// Appends `records_per_write × record_bytes` per `write()`, each followed by `fdatasync()`, to a
/// temporary file in `dir` for `duration` (at least one write), then deletes the file.
/// Blocking: from async code call it through `spawn_blocking`.
pub fn disk_ceiling(
    dir: &Path,
    record_bytes: usize,
    records_per_write: usize,
    duration: Duration,
) -> io::Result<DiskReport> {
    let write_bytes = record_bytes
        .checked_mul(records_per_write)
        .filter(|bytes| (1..=CEILING_WRITE_BYTES_MAX).contains(bytes));
    let write_bytes = write_bytes.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("record_bytes × records_per_write must be 1..={CEILING_WRITE_BYTES_MAX}"),
        )
    })?;
    let scratch = ScratchFile::create(dir)?;
    let buffer = incompressible_bytes(write_bytes);
    let mut file = &scratch.file;
    let mut fsync_latency_us =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let (mut writes, mut file_bytes) = (0u64, 0u64);
    let started = Instant::now();
    while writes == 0 || started.elapsed() < duration {
        if file_bytes + write_bytes as u64 > CEILING_FILE_BYTES_MAX {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file_bytes = 0;
        }
        file.write_all(&buffer)?;
        let before_sync = Instant::now();
        file.sync_data()?;
        fsync_latency_us.saturating_record((before_sync.elapsed().as_micros() as u64).max(1));
        writes += 1;
        file_bytes += write_bytes as u64;
    }
    let elapsed = started.elapsed();
    Ok(DiskReport::new(
        record_bytes,
        records_per_write,
        writes,
        elapsed,
        &fsync_latency_us,
    ))
}

impl DiskReport {
    fn new(
        record_bytes: usize,
        records_per_write: usize,
        writes: u64,
        elapsed: Duration,
        fsync_latency_us: &Histogram<u64>,
    ) -> DiskReport {
        let seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let bytes_written = writes * (record_bytes * records_per_write) as u64;
        DiskReport {
            record_bytes,
            records_per_write,
            writes,
            bytes_written,
            elapsed,
            megabytes_per_second: bytes_written as f64 / 1e6 / seconds,
            writes_per_second: writes as f64 / seconds,
            records_per_second: (writes * records_per_write as u64) as f64 / seconds,
            fsync_latency_us: Percentiles::of(fsync_latency_us),
        }
    }

    pub fn to_json(&self) -> Value {
        let latency = self.fsync_latency_us;
        json!({
            "record_bytes": self.record_bytes,
            "records_per_write": self.records_per_write,
            "writes": self.writes,
            "bytes_written": self.bytes_written,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "megabytes_per_second": self.megabytes_per_second,
            "writes_per_second": self.writes_per_second,
            "records_per_second": self.records_per_second,
            "fsync_latency_us": { "p50": latency.p50, "p90": latency.p90, "p99": latency.p99, "p999": latency.p999, "max": latency.max },
        })
    }
}

impl fmt::Display for DiskReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "disk      {} records × {} bytes per write+fdatasync, {:.2} s",
            self.records_per_write,
            self.record_bytes,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            formatter,
            "durable   {:>10.1} MB/s  {:>10.0} writes/s  {:>12.0} records/s",
            self.megabytes_per_second, self.writes_per_second, self.records_per_second
        )?;
        let latency = self.fsync_latency_us;
        write!(
            formatter,
            "fdatasync p50 {} µs  p99 {} µs  max {} µs",
            latency.p50, latency.p99, latency.max
        )
    }
}

/// The measurement file, removed when dropped so an error midway leaves nothing behind.
struct ScratchFile {
    file: File,
    path: PathBuf,
}

impl ScratchFile {
    fn create(dir: &Path) -> io::Result<ScratchFile> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let path = dir.join(format!(
            ".tandem-disk-ceiling-{}-{nanos}.tmp",
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(ScratchFile { file, path })
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Pseudo-random bytes, so filesystems that compress or deduplicate cannot flatter the figure.
fn incompressible_bytes(length: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let report = disk_ceiling(dir.path(), 1000, 100, Duration::from_millis(500)).unwrap();
        println!("{report}");
        assert!(report.writes >= 1);
        assert_eq!(report.bytes_written, report.writes * 100_000);
        assert!(report.elapsed >= Duration::from_millis(500));
        assert!(report.megabytes_per_second > 0.0 && report.megabytes_per_second.is_finite());
        assert!((report.records_per_second / report.writes_per_second - 100.0).abs() < 1e-6);
        assert!(
            report.fsync_latency_us.p50 >= 1
                && report.fsync_latency_us.p50 <= report.fsync_latency_us.p99
        );
        assert_eq!(report.to_json()["records_per_write"], 100);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the measurement file is removed"
        );
    }

    #[test]
    fn rejects_empty_or_huge_writes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(disk_ceiling(dir.path(), 0, 100, Duration::ZERO).is_err());
        assert!(disk_ceiling(dir.path(), 1 << 20, 1 << 20, Duration::ZERO).is_err());
        assert!(disk_ceiling(&dir.path().join("missing"), 100, 1, Duration::ZERO).is_err());
    }

    #[test]
    fn at_least_one_write_even_with_zero_duration() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            disk_ceiling(dir.path(), 10, 10, Duration::ZERO)
                .unwrap()
                .writes,
            1
        );
    }
}
