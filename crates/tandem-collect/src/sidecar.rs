//! Dedup sidecars: the `(dedup key, seen second)` pairs of a sealed log segment, so a restart
//! rebuilds the dedup index without reading the segment itself.
//!
//! Format: `TDDEDUP1`, count (u64), then `count` × (key u64, second u32), then a CRC32C of all
//! before it; little endian. Written to a temporary file, fsync'd, renamed, directory fsync'd.

use std::io::{self, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"TDDEDUP1";
const ENTRY_BYTES: usize = 12;

pub fn write_sidecar(path: &Path, entries: &[(u64, u32)]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + entries.len() * ENTRY_BYTES + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (key, second) in entries {
        bytes.extend_from_slice(&key.to_le_bytes());
        bytes.extend_from_slice(&second.to_le_bytes());
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_data()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub fn read_sidecar(path: &Path) -> io::Result<Vec<(u64, u32)>> {
    let bytes = std::fs::read(path)?;
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
    if bytes.len() < MAGIC.len() + 12 || &bytes[..8] != MAGIC {
        return Err(invalid("not a dedup sidecar"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(invalid("CRC mismatch"));
    }
    let count = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")) as usize;
    let entries = &body[16..];
    if entries.len() != count.saturating_mul(ENTRY_BYTES) {
        return Err(invalid("wrong length"));
    }
    Ok(entries
        .chunks_exact(ENTRY_BYTES)
        .map(|chunk| (u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes")), u32::from_le_bytes(chunk[8..].try_into().expect("4 bytes"))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.dedup");
        let entries = vec![(1, 2), (u64::MAX, 7)];
        write_sidecar(&path, &entries).unwrap();
        assert_eq!(read_sidecar(&path).unwrap(), entries);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[17] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_sidecar(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
        std::fs::write(&path, b"short").unwrap();
        assert!(read_sidecar(&path).is_err());
    }
}
