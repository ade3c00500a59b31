//! Why a row was not imported: a stable reason code (part of the report format) and a message
//! for people.

use serde::Serialize;

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal ),* $(,)?) => {
        /// Why a row was rejected. The codes are stable: scripts filter reports by them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason { $( $(#[$doc])* $variant ),* }

        impl Reason {
            /// Every reason, for documentation and tests.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];
            pub fn as_str(self) -> &'static str { match self { $(Reason::$variant => $code),* } }
        }
    };
}

reasons! {
    /// Neither a `userId` nor an `anonymousId`: Segment refuses such an event.
    MissingIdentity = "missing_identity",
    /// The value for `traits.email` is not an email address.
    MalformedEmail = "malformed_email",
    /// The `identify` event would be larger than Segment's 32 KB per event.
    EventTooLarge = "event_too_large",
    /// A CSV row with more or fewer cells than the header has columns.
    WrongColumnCount = "wrong_column_count",
    /// A JSON line that is not JSON, or not an object.
    InvalidJson = "invalid_json",
    /// The timestamp column holds no date-time of the mapped format.
    InvalidTimestamp = "invalid_timestamp",
    /// A value of the wrong type for its target (a number that is not a number, an identifier
    /// that is an object, control characters in an identifier).
    InvalidValue = "invalid_value",
    /// An identifier longer than `IDENTIFIER_BYTES_MAX`.
    IdentifierTooLong = "identifier_too_long",
    /// A CSV cell that is not UTF-8 (re-save the file as UTF-8).
    InvalidUtf8 = "invalid_utf8",
    /// A JSON line longer than `ROW_BYTES_MAX`.
    RowTooLarge = "row_too_large",
    /// Two members of one JSON line fill the same place (`user_id` and `userId`), or a trait would
    /// be both a value and an object.
    ConflictingColumns = "conflicting_columns",
    /// The server refused the event; the message carries its code and message.
    ServerRejected = "server_rejected",
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row's rejection before the raw row is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// One line of the rejection report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedRow {
    /// The data row's number: 1 is the first row after a CSV header, or the first line of a
    /// JSON-lines file. The messageId of the row is derived from it.
    pub row: u64,
    /// The line of the file where the row starts (CSV cells may hold line breaks).
    pub line: u64,
    pub reason: Reason,
    pub message: String,
    /// The row as read (CSV re-quoted; cut at `REPORT_RAW_BYTES_MAX`).
    pub raw: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for reason in Reason::ALL {
            let code = reason.as_str();
            assert!(seen.insert(code), "duplicate {code}");
            assert!(code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
    }
}
