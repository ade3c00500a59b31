//! Rows grouped into chunks: a chunk is one `POST /v1/batch` request (when any of its rows became
//! an event) and the step a checkpoint advances by. A chunk closes before the row that would take
//! it past the event count, the body size or the row count.

use crate::limits::{BATCH_BODY_BYTES_MAX, CHUNK_ROWS_MAX, DEFAULT_BATCH_EVENTS};
use crate::reader::{Position, Row};
use crate::reject::RejectedRow;

const BODY_OPEN: &[u8] = b"{\"batch\":[";
const BODY_CLOSE: &[u8] = b"]}";

/// How big a chunk may grow.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    pub events_max: usize,
    pub body_bytes_max: usize,
    pub rows_max: usize,
}

impl Default for ChunkLimits {
    fn default() -> ChunkLimits {
        ChunkLimits {
            events_max: DEFAULT_BATCH_EVENTS,
            body_bytes_max: BATCH_BODY_BYTES_MAX,
            rows_max: CHUNK_ROWS_MAX,
        }
    }
}

/// Where an event of a chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRow {
    pub row: u64,
    pub line: u64,
}

/// Consecutive rows: their events as one request body, their rejections, and their span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// `{"batch":[…]}`; empty when no row of the chunk became an event.
    pub body: Vec<u8>,
    /// The row of each event of the body, in order: the server names rejected events by index.
    pub events: Vec<EventRow>,
    pub rejected: Vec<RejectedRow>,
    /// Where the chunk's first row starts, and where the row after its last starts.
    pub start: Position,
    pub end: Position,
    pub rows: u64,
}

impl Chunk {
    fn starting_at(start: Position) -> Chunk {
        Chunk {
            body: Vec::new(),
            events: Vec::new(),
            rejected: Vec::new(),
            start,
            end: start,
            rows: 0,
        }
    }

    /// The body's size once `event` is in it and it is closed.
    fn body_bytes_with(&self, event: &[u8]) -> usize {
        let opened = if self.body.is_empty() {
            BODY_OPEN.len()
        } else {
            self.body.len() + 1
        };
        opened + event.len() + BODY_CLOSE.len()
    }

    fn add(&mut self, row: Row) {
        match row.outcome {
            Ok(event) => {
                if self.body.is_empty() {
                    self.body.extend_from_slice(BODY_OPEN);
                } else {
                    self.body.push(b',');
                }
                self.body.extend_from_slice(&event);
                self.events.push(EventRow {
                    row: row.row,
                    line: row.line,
                });
            }
            Err(rejected) => self.rejected.push(rejected),
        }
        self.rows += 1;
        self.end = row.end;
    }

    fn close(mut self) -> Chunk {
        if !self.body.is_empty() {
            self.body.extend_from_slice(BODY_CLOSE);
        }
        self
    }
}

/// Groups rows into chunks as they are read.
pub struct Chunker {
    limits: ChunkLimits,
    current: Option<Chunk>,
}

impl Chunker {
    pub fn new(limits: ChunkLimits) -> Chunker {
        Chunker {
            limits,
            current: None,
        }
    }

    /// Adds a row; returns the previous chunk when this row did not fit in it.
    pub fn push(&mut self, row: Row) -> Option<Chunk> {
        let full = self.current.as_ref().is_some_and(|chunk| {
            chunk.rows as usize >= self.limits.rows_max
                || row.outcome.as_ref().is_ok_and(|event| {
                    chunk.events.len() >= self.limits.events_max
                        || chunk.body_bytes_with(event) > self.limits.body_bytes_max
                })
        });
        let closed = if full {
            self.current.take().map(Chunk::close)
        } else {
            None
        };
        self.current
            .get_or_insert_with(|| Chunk::starting_at(row.start))
            .add(row);
        closed
    }

    /// The last chunk, if any row is waiting.
    pub fn finish(&mut self) -> Option<Chunk> {
        self.current.take().map(Chunk::close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::Reason;

    fn position(row: u64) -> Position {
        Position {
            byte: row * 100,
            line: row + 1,
            row,
        }
    }

    fn row(number: u64, outcome: Result<Vec<u8>, RejectedRow>) -> Row {
        Row {
            row: number,
            line: number + 1,
            outcome,
            start: position(number),
            end: position(number + 1),
        }
    }

    fn event(number: u64, bytes: usize) -> Row {
        let mut json = format!("{{\"n\":{number},\"pad\":\"").into_bytes();
        json.resize(bytes - 2, b'x');
        json.extend_from_slice(b"\"}");
        row(number, Ok(json))
    }

    fn rejected(number: u64) -> Row {
        row(
            number,
            Err(RejectedRow {
                row: number,
                line: number + 1,
                reason: Reason::MissingIdentity,
                message: "m".into(),
                raw: "r".into(),
            }),
        )
    }

    fn run(limits: ChunkLimits, rows: Vec<Row>) -> Vec<Chunk> {
        let mut chunker = Chunker::new(limits);
        let mut chunks: Vec<Chunk> = rows.into_iter().filter_map(|r| chunker.push(r)).collect();
        chunks.extend(chunker.finish());
        chunks
    }

    #[test]
    fn chunks_respect_every_limit_and_cover_every_row_once() {
        let limits = ChunkLimits {
            events_max: 3,
            body_bytes_max: 400,
            rows_max: 5,
        };
        let rows: Vec<Row> = (1..=40)
            .map(|n| match n % 7 {
                0 | 3 => rejected(n),
                5 => event(n, 150),
                _ => event(n, 60),
            })
            .collect();
        let chunks = run(limits, rows);
        let mut next = position(1);
        let mut rows_seen = 0;
        for chunk in &chunks {
            assert_eq!(chunk.start, next, "chunks are contiguous");
            next = chunk.end;
            rows_seen += chunk.rows;
            assert!(chunk.rows as usize <= limits.rows_max);
            assert!(chunk.events.len() <= limits.events_max);
            assert!(
                chunk.body.len() <= limits.body_bytes_max,
                "{}",
                chunk.body.len()
            );
            assert_eq!(
                chunk.rows as usize,
                chunk.events.len() + chunk.rejected.len()
            );
            if !chunk.body.is_empty() {
                let body: serde_json::Value = serde_json::from_slice(&chunk.body).unwrap();
                let numbers: Vec<u64> = body["batch"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["n"].as_u64().unwrap())
                    .collect();
                let rows: Vec<u64> = chunk.events.iter().map(|e| e.row).collect();
                assert_eq!(numbers, rows);
            }
        }
        assert_eq!(rows_seen, 40);
        assert_eq!(next, position(41));
    }

    #[test]
    fn a_body_is_filled_to_the_byte() {
        // Two events of 100 bytes: `{"batch":[` + 100 + `,` + 100 + `]}` = 213 bytes.
        let fits = ChunkLimits {
            events_max: 10,
            body_bytes_max: 213,
            rows_max: 10,
        };
        assert_eq!(run(fits, vec![event(1, 100), event(2, 100)]).len(), 1);
        let short = ChunkLimits {
            body_bytes_max: 212,
            ..fits
        };
        assert_eq!(run(short, vec![event(1, 100), event(2, 100)]).len(), 2);
    }

    #[test]
    fn only_rejections_make_chunks_without_a_body() {
        let limits = ChunkLimits {
            rows_max: 2,
            ..ChunkLimits::default()
        };
        let chunks = run(limits, (1..=5).map(rejected).collect());
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.body.is_empty()));
        assert!(run(limits, Vec::new()).is_empty());
    }
}
