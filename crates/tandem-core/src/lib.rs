//! The vocabulary every tandem crate shares: limits ([`limits`]), the error-code table
//! ([`error`]), the envelope in which collected events are stored in the log ([`envelope`]),
//! identifiers and secrets ([`ids`]) and time helpers ([`time_util`]).

pub mod envelope;
pub mod error;
pub mod ids;
pub mod limits;
pub mod time_util;

pub use envelope::{EventEnvelope, EventType};
pub use error::{ErrorBody, ErrorCode};
