//! Committed consumer offsets: one small file per consumer, replaced atomically and fsync'd.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Longest consumer name; names are `[A-Za-z0-9_.-]+` so they are safe file names.
pub const CONSUMER_NAME_CHARS_MAX: usize = 100;

pub(crate) struct OffsetStore {
    dir: PathBuf,
    cache: Mutex<BTreeMap<String, u64>>,
}

impl OffsetStore {
    pub fn open(dir: &Path) -> io::Result<OffsetStore> {
        std::fs::create_dir_all(dir)?;
        let mut cache = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "offset") {
                let name = path
                    .file_stem()
                    .and_then(|stem| stem.to_str())
                    .unwrap_or_default()
                    .to_string();
                let text = std::fs::read_to_string(&path)?;
                match text.trim().parse::<u64>() {
                    Ok(offset) => {
                        cache.insert(name, offset);
                    }
                    Err(_) => {
                        tracing::warn!(path = %path.display(), "ignoring an unreadable consumer offset file")
                    }
                }
            }
        }
        Ok(OffsetStore {
            dir: dir.to_path_buf(),
            cache: Mutex::new(cache),
        })
    }

    pub fn get(&self, name: &str) -> io::Result<Option<u64>> {
        check_name(name)?;
        Ok(self.cache.lock().get(name).copied())
    }

    pub fn commit(&self, name: &str, next_offset: u64) -> io::Result<()> {
        check_name(name)?;
        let mut cache = self.cache.lock();
        let path = self.dir.join(format!("{name}.offset"));
        let temporary = self.dir.join(format!("{name}.offset.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        writeln!(file, "{next_offset}")?;
        file.sync_data()?;
        std::fs::rename(&temporary, &path)?;
        crate::file_log::sync_dir(&self.dir)?;
        cache.insert(name.to_string(), next_offset);
        Ok(())
    }

    pub fn all(&self) -> Vec<(String, u64)> {
        self.cache
            .lock()
            .iter()
            .map(|(name, offset)| (name.clone(), *offset))
            .collect()
    }
}

fn check_name(name: &str) -> io::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= CONSUMER_NAME_CHARS_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
        && !name.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("consumer name {name:?} must be 1-{CONSUMER_NAME_CHARS_MAX} of [A-Za-z0-9_.-]"),
        ))
    }
}
