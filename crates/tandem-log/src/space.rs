//! Free-space checks: the statvfs floor, ENOSPC seen by the writer, and fault injection.
//!
//! Setting `TANDEM_FAULT_ENOSPC_FILE=/some/path` makes every write of every log fail with ENOSPC
//! while that file exists: the fault tests use it to drive the real write path into a full disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Environment variable naming the fault-injection flag file.
pub const FAULT_ENOSPC_ENV: &str = "TANDEM_FAULT_ENOSPC_FILE";

pub(crate) struct DiskSpace {
    dir: PathBuf,
    free_bytes_min: u64,
    fault_file: Option<PathBuf>,
    full: AtomicBool,
}

impl DiskSpace {
    pub fn new(dir: &Path, free_bytes_min: u64) -> DiskSpace {
        DiskSpace {
            dir: dir.to_path_buf(),
            free_bytes_min,
            fault_file: std::env::var_os(FAULT_ENOSPC_ENV).map(PathBuf::from),
            full: AtomicBool::new(false),
        }
    }

    /// Cheap check on the append path: true unless the disk was seen full and still is. While
    /// marked full, every append re-checks (one `statvfs`), so the first request after space
    /// returns is accepted.
    pub fn available(&self) -> bool {
        if !self.full.load(Ordering::Acquire) {
            return true;
        }
        if self.enough_free() {
            self.mark(false);
            return true;
        }
        false
    }

    /// The writer's check before each group commit.
    pub fn enough_free(&self) -> bool {
        if self.fault_injected() {
            return false;
        }
        match free_bytes(&self.dir) {
            Ok(free) => free >= self.free_bytes_min,
            Err(_) => true,
        }
    }

    pub fn fault_injected(&self) -> bool {
        self.fault_file.as_ref().is_some_and(|path| path.exists())
    }

    pub fn mark(&self, full: bool) {
        let was = self.full.swap(full, Ordering::AcqRel);
        if was != full {
            if full {
                tracing::warn!(dir = %self.dir.display(), "disk full: refusing appends until space returns");
            } else {
                tracing::info!(dir = %self.dir.display(), "disk space is back: accepting appends again");
            }
            metrics::gauge!("tandem_log_disk_full").set(if full { 1.0 } else { 0.0 });
        }
    }
}

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs.
    let result = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}
