use std::io;
use std::path::PathBuf;

/// Why a load run could not start or finish. Failed requests are not errors: they are counted
/// in the report.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load options: {0}")]
    InvalidOptions(String),
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: io::Error },
    #[error("cannot record acknowledged messageIds in {path}: {source}")]
    AckedIds { path: PathBuf, source: io::Error },
}
