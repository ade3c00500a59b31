//! The durable event log of tandem. See `README.md` beside this file for goals and non-goals.
//!
//! One log per workspace: a directory of segment files, each a sequence of records
//! `[len u32][crc32c u32][offset u64][timestamp_ms i64][payload]`. One writer thread per log
//! does group commit: it drains every append waiting in its bounded queue, writes them with one
//! `write`, calls `fdatasync` once, and only then resolves the appends. Nothing is acknowledged
//! before it is durable.

mod api;
mod consumer;
mod file_log;
mod format;
mod offline;
mod offsets;
mod segment;
mod space;
mod writer;

pub use api::*;
pub use consumer::Consumer;
pub use file_log::{FileLog, OpenError, RetentionReport, RewriteReport};
pub use format::HEADER_BYTES;
pub use offline::{read_dir, verify_dir, Problem, VerifyReport};
pub use offsets::CONSUMER_NAME_CHARS_MAX;
pub use segment::SEGMENT_EXTENSION;
pub use space::{free_bytes, FAULT_ENOSPC_ENV};
