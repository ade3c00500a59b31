//! The load generator behind `tandem load`, and the disk-ceiling reference the benchmark
//! compares against.
//!
//! The generator must cost almost nothing per event: the benchmark runs it on the same two cores
//! as the server. Bodies are therefore serialised once ([`body_pool`]) and each request is a copy
//! with fixed-width digits patched in place; each worker owns one keep-alive HTTP/1.1 connection
//! ([`connection`]) and keeps one request in flight ([`worker`]). With a target rate, requests
//! follow a fixed schedule and latency counts from the scheduled time ([`pacing`]), so a stalled
//! server shows up in the percentiles instead of silently slowing the generator.

mod acked;
mod body_pool;
mod connection;
mod disk;
mod error;
mod options;
mod pacing;
mod report;
mod run;
pub mod synth;
mod worker;

pub use body_pool::POOL_BODIES;
pub use connection::{REQUEST_TIMEOUT, RETRY_AFTER_MAX};
pub use disk::{disk_ceiling, DiskReport};
pub use error::LoadError;
pub use options::{
    LoadOptions, CONCURRENCY_MAX, DEFAULT_BATCH_EVENTS, DEFAULT_CONCURRENCY, DEFAULT_DURATION,
    DEFAULT_EVENT_BYTES, DEFAULT_USERS, DEFAULT_WARMUP,
};
pub use report::{LoadReport, Percentiles, Snapshot};
pub use run::{run, PROGRESS_INTERVAL};
