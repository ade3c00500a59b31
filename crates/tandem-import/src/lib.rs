//! Bulk import of customer records: CSV or JSON-lines files turned into Segment `identify` events,
//! so that CRM data enters the same log, dedup and (later) identity resolution as live events.
//! Pure except for the files it reads and writes; `tandem import` (in `tandem-cli`) sends the
//! batches over HTTP.
//!
//! Life of an import (see `README.md` beside this crate for the user's view):
//! 1. [`reader::RowReader`] streams rows (CSV with a header, or one JSON object per line) with
//!    every row bounded by `ROW_BYTES_MAX`, so any file size imports in bounded memory.
//! 2. Each column goes where the [`mapping::Mapping`] says; [`event::EventBuilder`] checks each
//!    value ([`value`]) and writes the `identify` event with a `messageId` derived from the
//!    import's id and the row number — or the row is rejected with a [`reject::Reason`].
//! 3. [`chunk::Chunker`] groups rows into chunks within the server's batch limits.
//! 4. The CLI sends each chunk; [`answer::classify`] says whether it is stored, to retry, or
//!    fatal. Rejections go to the [`report::Report`], then the [`checkpoint::Checkpoint`]
//!    advances past the chunk.
//! 5. `--resume` reads the checkpoint, cuts the report back to its recorded length and seeks the
//!    reader to the first unacknowledged row. Rows sent twice have the same messageIds: the
//!    server's dedup index drops them.

pub mod answer;
pub mod checkpoint;
pub mod chunk;
pub mod event;
pub mod limits;
pub mod mapping;
pub mod reader;
pub mod reject;
pub mod report;
pub mod value;

pub use checkpoint::Checkpoint;
pub use chunk::{Chunk, ChunkLimits, Chunker, EventRow};
pub use event::ImportIdentity;
pub use mapping::{Mapping, Target, Unmapped};
pub use reader::{Format, Position, ReadError, Row, RowReader};
pub use reject::{Reason, RejectedRow};
pub use report::Report;
