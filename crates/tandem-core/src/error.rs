//! One table of error codes, each mapped to its HTTP status in one place. Every JSON error tandem
//! answers has the shape `{"error": {"code": "...", "message": "...", "details": ...}}`.

use serde::Serialize;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal) ),* $(,)?) => {
        /// A stable, documented error code. The string form is part of the public API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $( $(#[$doc])* $variant ),* }

        impl ErrorCode {
            /// All codes, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];
            pub fn as_str(self) -> &'static str { match self { $(ErrorCode::$variant => $code),* } }
            pub fn http_status(self) -> u16 { match self { $(ErrorCode::$variant => $status),* } }
        }
    };
}

error_codes! {
    /// The body is not valid JSON (or not UTF-8, or nested too deep).
    InvalidJson = ("invalid_json", 400),
    /// The body is larger than the documented limit.
    BodyTooLarge = ("body_too_large", 400),
    /// A single event is larger than 32 KB.
    EventTooLarge = ("event_too_large", 400),
    /// A batch holds more than 2500 events.
    BatchTooManyEvents = ("batch_too_many_events", 400),
    /// `Content-Encoding` is not gzip/identity, or the gzip stream is broken.
    InvalidEncoding = ("invalid_encoding", 400),
    /// One or more events of the request were rejected; the others were stored.
    InvalidEvents = ("invalid_events", 400),
    /// A request parameter or body field is invalid (management API).
    InvalidRequest = ("invalid_request", 400),
    /// No credentials were given.
    MissingCredentials = ("missing_credentials", 401),
    /// The write key is unknown.
    UnknownWriteKey = ("unknown_write_key", 401),
    /// The write key belongs to a disabled source.
    DisabledSource = ("disabled_source", 401),
    /// The admin or access token is wrong, revoked or expired.
    InvalidToken = ("invalid_token", 401),
    /// Authenticated, but not allowed to do this.
    Forbidden = ("forbidden", 403),
    /// A state-changing request authenticated by the session cookie lacked the session's CSRF
    /// token (`X-Tandem-CSRF`) or came from another origin: never applied.
    CsrfRejected = ("csrf_rejected", 403),
    /// No such resource.
    NotFound = ("not_found", 404),
    /// The method is not allowed on this route.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// The resource already exists.
    Conflict = ("conflict", 409),
    /// Too many requests for this key: retry after `Retry-After` seconds.
    RateLimited = ("rate_limited", 429),
    /// The server is overloaded (queues full): retry after `Retry-After` seconds. Nothing was stored.
    Overloaded = ("overloaded", 503),
    /// The data disk is full: retry after `Retry-After` seconds. Nothing was stored.
    DiskFull = ("disk_full", 503),
    /// The server is starting or shutting down.
    Unavailable = ("unavailable", 503),
    /// A bug or an unexpected I/O failure; the message says which.
    Internal = ("internal", 500),
}

/// The JSON error body.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.as_str(),
                message: message.into(),
                details: None,
            },
        }
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.error.details = Some(details);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_statuses_are_errors() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(
                seen.insert(code.as_str()),
                "duplicate code {}",
                code.as_str()
            );
            assert!((400..600).contains(&code.http_status()));
        }
    }
}
