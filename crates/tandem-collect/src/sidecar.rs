//! Dedup sidecars: the `(dedup key, seen second)` pairs of a sealed log segment, so a restart
//! rebuilds the dedup index without reading the segment itself.
//!
//! Format: `TDDEDUP1`, count (u64), then `count` × (key u64, second u32), then a CRC32C of all
//! before it; little endian. Written to a temporary file, fsync'd, renamed, directory fsync'd.

use std::io::{self, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"TDDEDUP1";
/// Magic + entry count.
const HEADER_BYTES: usize = 16;
/// Key (u64) + seen second (u32).
const ENTRY_BYTES: usize = 12;
const CRC_BYTES: usize = 4;

/// Writes the `(dedup key, seen second)` pairs of a segment to `path`, atomically: a crash leaves
/// either no sidecar or a complete one (plus perhaps a stray `.tmp` file).
pub fn write_sidecar(path: &Path, entries: &[(u64, u32)]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + entries.len() * ENTRY_BYTES + CRC_BYTES);
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

/// Reads a sidecar written by [`write_sidecar`]. A file that is not one, is cut short or fails its
/// CRC is an `InvalidData` error: the caller rebuilds the entries from the segment.
pub fn read_sidecar(path: &Path) -> io::Result<Vec<(u64, u32)>> {
    let bytes = std::fs::read(path)?;
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    if bytes.len() < HEADER_BYTES + CRC_BYTES || &bytes[..MAGIC.len()] != MAGIC {
        return Err(invalid("not a dedup sidecar"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(invalid("CRC mismatch"));
    }
    let count = u64::from_le_bytes(body[MAGIC.len()..HEADER_BYTES].try_into().expect("8 bytes"));
    let entries = &body[HEADER_BYTES..];
    if entries.len() as u64 != count.saturating_mul(ENTRY_BYTES as u64) {
        return Err(invalid("wrong length"));
    }
    Ok(entries
        .chunks_exact(ENTRY_BYTES)
        .map(|chunk| {
            (
                u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes")),
                u32::from_le_bytes(chunk[8..].try_into().expect("4 bytes")),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.dedup");
        let entries = vec![(1, 2), (u64::MAX, 7), (0, u32::MAX)];
        write_sidecar(&path, &entries).unwrap();
        assert_eq!(read_sidecar(&path).unwrap(), entries);
        write_sidecar(&path, &[]).unwrap();
        assert_eq!(read_sidecar(&path).unwrap(), vec![], "rewriting replaces");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.dedup");
        write_sidecar(&path, &[(42, 1), (43, 2)]).unwrap();
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(
                read_sidecar(&path).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "flip at {at}"
            );
            std::fs::write(&path, &good[..at]).unwrap();
            assert_eq!(
                read_sidecar(&path).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "cut at {at}"
            );
        }
    }

    #[test]
    fn a_wrong_count_with_a_valid_crc_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2.dedup");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read_sidecar(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            read_sidecar(&dir.path().join("missing"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
