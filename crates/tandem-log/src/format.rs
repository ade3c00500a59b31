//! The on-disk record format and a streaming scanner that validates it.
//!
//! A record is `[len u32][crc32c u32][offset u64][timestamp_ms i64][payload; len]`, little
//! endian. The CRC covers everything after itself (offset, timestamp, payload), so a flipped bit
//! anywhere in a record, a torn write, or a record at the wrong place (offset mismatch) is caught.
//! A zero `len` is never valid: zero-filled space at the end of a file reads as corrupt.

use crate::api::Record;
use std::io::{self, Read};
use tandem_core::limits::RECORD_BYTES_MAX;

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 24;

/// Bytes a record takes on disk.
pub fn encoded_len(payload_len: usize) -> usize {
    HEADER_BYTES + payload_len
}

/// Appends the encoding of `record` at `offset` to `out`.
pub fn encode(out: &mut Vec<u8>, offset: u64, record: &Record) {
    let start = out.len();
    out.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&record.payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record decoded from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: Vec<u8>,
}

/// Why the bytes at some position are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The file ends inside a header or payload.
    Truncated {
        missing: usize,
    },
    BadLength(u32),
    BadCrc,
    WrongOffset {
        expected: u64,
        found: u64,
    },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Truncated { missing } => write!(
                f,
                "file ends {missing} bytes short of a whole record (torn write)"
            ),
            Invalid::BadLength(len) => {
                write!(f, "record length {len} is zero or above {RECORD_BYTES_MAX}")
            }
            Invalid::BadCrc => write!(f, "CRC mismatch"),
            Invalid::WrongOffset { expected, found } => {
                write!(f, "record carries offset {found}, expected {expected}")
            }
        }
    }
}

/// Reads records one by one from a segment, checking each; stops at the first invalid one.
pub struct Scanner<R> {
    reader: R,
    /// Byte position of the next record.
    pub position: u64,
    /// Offset the next record must carry.
    pub next_offset: u64,
}

/// One step of a scan.
pub enum Step {
    Record(Decoded),
    End,
    Invalid(Invalid),
}

impl<R: Read> Scanner<R> {
    pub fn new(reader: R, position: u64, next_offset: u64) -> Self {
        Scanner {
            reader,
            position,
            next_offset,
        }
    }

    pub fn step(&mut self) -> io::Result<Step> {
        let mut header = [0u8; HEADER_BYTES];
        let got = read_full(&mut self.reader, &mut header)?;
        if got == 0 {
            return Ok(Step::End);
        }
        if got < HEADER_BYTES {
            return Ok(Step::Invalid(Invalid::Truncated {
                missing: HEADER_BYTES - got,
            }));
        }
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        if len == 0 || len as usize > RECORD_BYTES_MAX {
            return Ok(Step::Invalid(Invalid::BadLength(len)));
        }
        let mut payload = vec![0u8; len as usize];
        let got = read_full(&mut self.reader, &mut payload)?;
        if got < payload.len() {
            return Ok(Step::Invalid(Invalid::Truncated {
                missing: payload.len() - got,
            }));
        }
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let mut hasher = crc32c::crc32c(&header[8..]);
        hasher = crc32c::crc32c_append(hasher, &payload);
        if hasher != crc {
            return Ok(Step::Invalid(Invalid::BadCrc));
        }
        let offset = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        if offset != self.next_offset {
            return Ok(Step::Invalid(Invalid::WrongOffset {
                expected: self.next_offset,
                found: offset,
            }));
        }
        let timestamp_ms = i64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        self.position += encoded_len(payload.len()) as u64;
        self.next_offset += 1;
        Ok(Step::Record(Decoded {
            offset,
            timestamp_ms,
            payload,
        }))
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(payload: &[u8]) -> Record {
        Record {
            timestamp_ms: 1_700_000_000_000,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn scan_all(bytes: &[u8], base: u64) -> (Vec<Decoded>, Option<Invalid>, u64) {
        let mut scanner = Scanner::new(bytes, 0, base);
        let mut found = Vec::new();
        loop {
            match scanner.step().unwrap() {
                Step::Record(record) => found.push(record),
                Step::End => return (found, None, scanner.position),
                Step::Invalid(invalid) => return (found, Some(invalid), scanner.position),
            }
        }
    }

    #[test]
    fn round_trip() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 7, &record(b"hello"));
        encode(&mut bytes, 8, &record(b"world!"));
        let (records, problem, position) = scan_all(&bytes, 7);
        assert_eq!(problem, None);
        assert_eq!(position, bytes.len() as u64);
        assert_eq!(
            records
                .iter()
                .map(|r| r.payload.as_slice())
                .collect::<Vec<_>>(),
            vec![&b"hello"[..], b"world!"]
        );
        assert_eq!(records[1].offset, 8);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 0, &record(b"payload bytes"));
        for bit in 0..bytes.len() * 8 {
            let mut copy = bytes.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            let (records, problem, position) = scan_all(&copy, 0);
            assert!(
                records.is_empty() && problem.is_some() && position == 0,
                "bit {bit} undetected"
            );
        }
    }

    #[test]
    fn torn_and_zeroed_tails_stop_the_scan_at_the_last_whole_record() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 0, &record(b"first"));
        let whole = bytes.len() as u64;
        encode(&mut bytes, 1, &record(b"second"));
        for cut in whole as usize + 1..bytes.len() {
            let (records, problem, position) = scan_all(&bytes[..cut], 0);
            assert_eq!((records.len(), position), (1, whole));
            assert!(matches!(problem, Some(Invalid::Truncated { .. })));
        }
        let mut zeroed = bytes[..whole as usize].to_vec();
        zeroed.extend_from_slice(&[0; 100]);
        assert!(matches!(
            scan_all(&zeroed, 0).1,
            Some(Invalid::BadLength(0))
        ));
    }

    #[test]
    fn a_record_at_the_wrong_offset_is_invalid() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 5, &record(b"x"));
        assert_eq!(
            scan_all(&bytes, 4).1,
            Some(Invalid::WrongOffset {
                expected: 4,
                found: 5
            })
        );
    }
}
