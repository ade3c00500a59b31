//! The checkpoint of an import: where the first row not yet acknowledged by the server starts,
//! the counts so far and the report's length, written durably after each acknowledged chunk
//! (temporary file, fsync, rename, directory fsync), so `--resume` continues from it after any
//! interruption, `kill -9` included. Rows after the checkpoint may have reached the server already;
//! sent again, they carry the same messageIds and the server's dedup index drops them.

use crate::limits::CHECKPOINT_FILE_BYTES_MAX;
use crate::reader::Position;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The checkpoint format's version; a file of another version is refused, not misread.
pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    /// The import id (`--import-id`, or derived from the file): the messageIds depend on it.
    pub import_id: String,
    /// The imported file, as given, and its size when the import started.
    pub file: PathBuf,
    pub file_bytes: u64,
    /// `Mapping::fingerprint` plus the format: a resumed run must turn rows into the same events.
    pub mapping: String,
    pub report: PathBuf,
    /// The report's durable length at this checkpoint.
    pub report_bytes: u64,
    /// The first row not yet acknowledged.
    pub next: Position,
    /// Totals over every run of this import so far.
    pub rows_read: u64,
    pub rows_imported: u64,
    pub rows_rejected: u64,
    /// True once the last row was acknowledged.
    pub complete: bool,
    /// When this checkpoint was written (ISO-8601).
    pub updated_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading checkpoint {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint {path} is larger than {CHECKPOINT_FILE_BYTES_MAX} bytes: not a tandem import checkpoint")]
    TooLarge { path: PathBuf },
    #[error("checkpoint {path} is not a tandem import checkpoint ({message}); delete it or pass --restart")]
    Invalid { path: PathBuf, message: String },
}

impl Checkpoint {
    /// The checkpoint at `path`, `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        let io_error = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(error)),
        };
        let mut text = String::new();
        file.take(CHECKPOINT_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(io_error)?;
        if text.len() as u64 > CHECKPOINT_FILE_BYTES_MAX {
            return Err(CheckpointError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let checkpoint: Checkpoint =
            serde_json::from_str(&text).map_err(|error| CheckpointError::Invalid {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "version {} where this tandem writes {CHECKPOINT_VERSION}",
                    checkpoint.version
                ),
            });
        }
        Ok(Some(checkpoint))
    }

    /// Writes the checkpoint durably: a reader (or a crash) sees the old one or the new one whole.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut text = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        text.push(b'\n');
        let mut file = File::create(&temporary)?;
        file.write_all(&text)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        sync_parent_dir(path)
    }
}

/// fsyncs the directory holding `path`, so a file created or renamed there survives a crash.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            import_id: "crm.csv:10:abcd".into(),
            file: "data/crm.csv".into(),
            file_bytes: 10,
            mapping: "{}".into(),
            report: "data/crm.csv.rejected.csv".into(),
            report_bytes: 28,
            next: Position {
                byte: 5,
                line: 2,
                row: 1,
            },
            rows_read: 0,
            rows_imported: 0,
            rows_rejected: 0,
            complete: false,
            updated_at: "2024-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn stores_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.csv.tandem-import.json");
        assert_eq!(Checkpoint::load(&path).unwrap(), None);
        let mut saved = checkpoint();
        saved.store(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(saved.clone()));
        saved.next.row = 501;
        saved.store(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap().unwrap().next.row, 501);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn a_foreign_file_is_refused_with_a_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, "{\"hello\": 1}").unwrap();
        let error = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(error.contains("--restart"), "{error}");
        let mut future = serde_json::to_value(checkpoint()).unwrap();
        future["version"] = 2.into();
        std::fs::write(&path, future.to_string()).unwrap();
        assert!(Checkpoint::load(&path).is_err());
        std::fs::write(&path, vec![b' '; CHECKPOINT_FILE_BYTES_MAX as usize + 1]).unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::TooLarge { .. })
        ));
    }
}
