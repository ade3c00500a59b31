//! Files: events written as JSON lines or Parquet objects to a local directory or an
//! S3-compatible object store (through the `object_store` crate).
//!
//! Objects are partitioned by workspace (the default `prefix`), event type and UTC day of
//! `receivedAt`: `<prefix>/<type>/dt=YYYY-MM-DD/<first offset>-<last offset>-<hash>.<ext>`. The
//! name derives from the events' offsets and a hash of their messageIds, so a redelivered batch
//! overwrites its own object instead of adding a duplicate.
//!
//! Durability: a batch is delivered only once each of its objects is completely written. On S3
//! a PUT is atomic and durable when answered. Locally, `object_store`'s `LocalFileSystem` renames
//! a staging file without fsync, so this destination writes the staging file itself, fsyncs it,
//! renames it and fsyncs the directory (see `service::write_durably`).
//!
//! Classification: a denied permission, an invalid path, a missing bucket or bad credentials are
//! permanent (reject → DLQ); a full disk and other I/O or network errors are transient (retry).
//! `delete_user` rewrites every object holding the subject's events without them.

mod config;
mod request;
mod service;
#[cfg(test)]
mod tests;

pub use config::{FileFormat, FilesSettings, S3Settings};
pub use request::{decode_parquet, FileRow, PARQUET_SCHEMA};

use crate::destination::DestinationType;

pub static TYPE: DestinationType = DestinationType {
    name: "files",
    description: "JSON lines or Parquet objects, partitioned by event type and day, in a local directory or an S3-compatible store",
    settings_schema: config::schema,
    validate: config::validate,
    build: service::build,
};
