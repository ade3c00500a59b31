//! Every limit of an import as a named constant, with what it costs. Units last in names.
//! The server's own limits come from `tandem_core::limits`; an import stays inside them so that
//! no batch it sends can be refused for its size.

use tandem_core::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX};

// ---- reading the file

/// Longest raw row (a CSV record or a JSON line) read into memory. Bounds the memory one row can
/// pin, so a file of any size imports in bounded memory. A JSON line past it is rejected alone
/// (`row_too_large`); a CSV record past it stops the import, since a CSV parser cannot find the
/// next record reliably after one that long (it is nearly always an unclosed quote).
pub const ROW_BYTES_MAX: usize = 1024 * 1024;
/// Read buffer of the CSV and JSON-lines readers: larger reads fewer times, but every byte of it
/// may belong to the next row, so it is also the slack of the `ROW_BYTES_MAX` check.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Most columns of a CSV header. Each column costs a mapping entry per import and a trait per
/// row; a profile keeps at most 1000 traits anyway.
pub const COLUMNS_MAX: usize = 4096;
/// Bytes at the start of the file hashed into its default import id (with its name and size), so
/// two different files with the same name and size still get different messageIds.
pub const FILE_IDENTITY_HEAD_BYTES: usize = 64 * 1024;
/// Largest mapping file (`--mapping`); a mapping is a few lines.
pub const MAPPING_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Largest checkpoint file read back; a checkpoint is a few hundred bytes.
pub const CHECKPOINT_FILE_BYTES_MAX: u64 = 64 * 1024;

// ---- validating a row

/// Longest `--import-id`: it is written into every event's `context.import.id`.
pub const IMPORT_ID_BYTES_MAX: usize = 200;

/// Longest `userId`, `anonymousId` or external id value. No real identifier is that long; such a
/// value is usually a whole note pasted into the wrong column. (Identity resolution ignores longer
/// values as well, so importing them would create profiles nothing can find.)
pub const IDENTIFIER_BYTES_MAX: usize = 256;
/// Longest external id type (`crm_id`, `salesforce_id`), as identity resolution allows.
pub const IDENTIFIER_TYPE_BYTES_MAX: usize = 64;
/// Longest email address (RFC 5321: 254 octets for a path, 64 for the local part).
pub const EMAIL_BYTES_MAX: usize = 254;
pub const EMAIL_LOCAL_BYTES_MAX: usize = 64;
/// Longest trait name segment in a mapping (`traits.address.city` has two).
pub const TRAIT_NAME_BYTES_MAX: usize = 256;
/// Deepest trait path in a mapping (`traits.a.b.c` is 3).
pub const TRAIT_PATH_DEPTH_MAX: usize = 8;
/// Bytes of a rejected row quoted in the report; the rest is cut (and the cut is marked), so a
/// report stays readable when a row is huge.
pub const REPORT_RAW_BYTES_MAX: usize = 16 * 1024;

// ---- sending

/// Events per `/v1/batch` request by default (`--batch-events`); the body also stays under
/// `BATCH_BODY_BYTES_MAX`, which binds first for rows over ~250 bytes. Each request costs the
/// server a parse, a dedup pass and an fsync wait, so larger batches import faster: 1M rows of
/// seven columns on the 2-core machine took 12 s at 500 events per request and 7.5 s at 2,000
/// (~130,000 rows/s, server and importer on the same cores). Kept under the
/// server's `BATCH_EVENTS_MAX` (2,500) so a batch is never refused for its count.
pub const DEFAULT_BATCH_EVENTS: usize = 2_000;
/// Most events per request a user may ask for: the server's own limit.
pub const BATCH_EVENTS_LIMIT: usize = BATCH_EVENTS_MAX;
/// Largest request body: the server's `BATCH_BYTES_MAX`, counted exactly (`{"batch":[…]}`).
pub const BATCH_BODY_BYTES_MAX: usize = BATCH_BYTES_MAX;
/// Most rows in one chunk, the unit of progress and of checkpointing, even when none of them
/// becomes an event: bounds the rejections held in memory between two checkpoints.
pub const CHUNK_ROWS_MAX: usize = 5_000;
/// Requests in flight at once by default (`--concurrency`): enough to keep the server's group
/// commit busy while one request waits for its fsync. Each holds one batch body in memory.
pub const DEFAULT_CONCURRENCY: usize = 4;
pub const CONCURRENCY_MAX: usize = 32;
/// Seconds one request may take before it is abandoned and retried.
pub const REQUEST_TIMEOUT_SECONDS: u64 = 60;
/// Attempts after the first for one batch by default (`--retries`) when the server pushes back
/// (429, 503), fails (5xx) or cannot be reached. With the backoff below, about five minutes.
pub const DEFAULT_RETRIES: u32 = 12;
/// Backoff between attempts: doubling from the first value up to the second, with jitter.
pub const RETRY_BACKOFF_MS_FIRST: u64 = 200;
pub const RETRY_BACKOFF_MS_MAX: u64 = 30_000;
/// Longest `Retry-After` honoured; a longer one is cut to it, so a confused server cannot park an
/// import for hours.
pub const RETRY_AFTER_SECONDS_MAX: u64 = 300;
