//! The Segment HTTP Tracking API, request by request and event by event, without I/O:
//!
//! 1. [`decode_body`]: `Content-Encoding` (gzip, deflate), bounded so a bomb cannot grow past the limit.
//! 2. [`parse_request`]: the JSON of one call or a batch, borrowing raw slices of the body;
//!    request-level problems answer 400 at once, per-event problems become [`Rejection`]s.
//! 3. [`enrich`]: validation by the spec, then `receivedAt`, the corrected `timestamp`,
//!    `messageId`, `context.ip`; the stored JSON copies the client's bytes for untouched fields.
//! 4. [`DedupIndex`]: (source, messageId) seen within the window, with reservations so a
//!    duplicate is acknowledged only once the first copy is durable.
//! 5. [`write_sidecar`] / [`read_sidecar`]: the dedup keys of a sealed log segment, so a restart
//!    rebuilds the index without rescanning the segment.
//!
//! The rules and limits are listed in this crate's README.md.
//!
//! The server (`tandem-server`, `routes/collect.rs`) strings these together with the log.

mod decode;
mod dedup;
mod enrich;
mod parse;
mod raw;
mod sidecar;

pub use decode::decode_body;
pub use dedup::{DedupIndex, Reservation};
pub use enrich::{enrich, event_time_ms, EnrichContext, Enriched};
pub use parse::{
    codes, parse_request, ParsedRequest, RawEvent, Rejection, RequestError, RequestKind,
    BATCH_SHARED_BYTES_MAX,
};
pub use sidecar::{read_sidecar, write_sidecar};
