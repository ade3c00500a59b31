//! `ApiError`: what every handler returns on failure. It renders the one JSON error shape with the
//! status the code table in `tandem_core::error` gives, so handlers just use `?`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tandem_core::limits::RETRY_AFTER_SECONDS;
use tandem_core::{ErrorBody, ErrorCode};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Seconds for `Retry-After` on 429/503 (`RETRY_AFTER_SECONDS` when unset).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        ApiError::new(ErrorCode::Internal, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = ErrorBody::new(self.code, self.message);
        if let Some(details) = self.details {
            body = body.with_details(details);
        }
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(self.retry_after.unwrap_or(RETRY_AFTER_SECONDS)),
            );
        }
        response
    }
}

impl From<tandem_store::StoreError> for ApiError {
    fn from(error: tandem_store::StoreError) -> Self {
        match error {
            tandem_store::StoreError::Conflict(what) => {
                ApiError::new(ErrorCode::Conflict, format!("{what} already exists"))
            }
            tandem_store::StoreError::NotFound(what) => ApiError::not_found(what),
            other => ApiError::internal(other),
        }
    }
}

impl From<tandem_log::AppendError> for ApiError {
    fn from(error: tandem_log::AppendError) -> Self {
        use tandem_log::AppendError::*;
        match error {
            QueueFull => ApiError::new(
                ErrorCode::Overloaded,
                "the event log is busy; nothing was stored, retry later",
            ),
            DiskFull => ApiError::new(
                ErrorCode::DiskFull,
                "the data disk is full; nothing was stored, retry later",
            ),
            Closed => ApiError::new(
                ErrorCode::Unavailable,
                "the server is shutting down; nothing was stored, retry later",
            ),
            InvalidRecord(bytes) => ApiError::new(
                ErrorCode::EventTooLarge,
                format!("a record of {bytes} bytes cannot be stored"),
            ),
            // An I/O failure other than a full disk: the writer truncated back to its last durable
            // point, so nothing of this request is stored and a retry is safe.
            Io(error) => {
                tracing::error!(%error, "log write failed");
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the event log could not write ({error}); nothing was stored, retry later"
                    ),
                )
            }
        }
    }
}

/// Handlers' result type.
pub type ApiResult<T> = Result<T, ApiError>;
