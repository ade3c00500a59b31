use std::path::PathBuf;
use std::time::Duration;

use tandem_core::limits::{BATCH_EVENTS_MAX, EVENT_BYTES_MAX};

use crate::error::LoadError;
use crate::synth::USER_INDEX_MAX;

/// Concurrent requests (one keep-alive connection each). Enough to keep a group-commit log
/// busy while one fsync is in flight, few enough not to cost the 2-core machine in scheduling.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Events per `/v1/batch` request; Segment's own libraries flush at about this size.
pub const DEFAULT_BATCH_EVENTS: usize = 100;
/// Bytes of compact JSON per event, about what analytics.js sends for a track with a few properties.
pub const DEFAULT_EVENT_BYTES: usize = 1000;
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(1);
pub const DEFAULT_USERS: u64 = 100_000;
/// Most concurrent requests: each pins one body (≤ 500 KB) and one socket.
pub const CONCURRENCY_MAX: usize = 4096;

/// What `tandem load` does. `duration` is the measured part; `warmup` runs before it and is
/// reported separately (its events are still sent, acknowledged and recorded).
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080` (plain HTTP only).
    pub url: String,
    /// Sent as the HTTP Basic username with an empty password.
    pub write_key: String,
    pub concurrency: usize,
    pub batch_events: usize,
    /// Approximate size of each event's JSON.
    pub event_bytes: usize,
    /// `None`: every worker sends as fast as the server answers (closed loop).
    /// `Some(rate)`: requests are due on a fixed schedule and latency counts from the due time.
    pub rate_events_per_second: Option<u64>,
    pub duration: Duration,
    pub warmup: Duration,
    /// Distinct users the events are spread over.
    pub users: u64,
    /// Drives the event content; the messageIds differ on every run regardless.
    pub seed: u64,
    /// On 429/503, wait `Retry-After` and resend the same batch (same messageIds) instead of
    /// dropping it.
    pub retry_on_pushback: bool,
    /// Append the messageId of every event acknowledged with 200 to this file, one per line.
    pub record_acked: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            url: "http://127.0.0.1:8080".into(),
            write_key: String::new(),
            concurrency: DEFAULT_CONCURRENCY,
            batch_events: DEFAULT_BATCH_EVENTS,
            event_bytes: DEFAULT_EVENT_BYTES,
            rate_events_per_second: None,
            duration: DEFAULT_DURATION,
            warmup: DEFAULT_WARMUP,
            users: DEFAULT_USERS,
            seed: 1,
            retry_on_pushback: true,
            record_acked: None,
        }
    }
}

impl LoadOptions {
    /// Rejects options the run could not honour. Batch byte size is checked when bodies are built.
    pub fn validate(&self) -> Result<(), LoadError> {
        let invalid = |reason: String| Err(LoadError::InvalidOptions(reason));
        if self.concurrency == 0 || self.concurrency > CONCURRENCY_MAX {
            return invalid(format!(
                "concurrency must be 1..={CONCURRENCY_MAX}, got {}",
                self.concurrency
            ));
        }
        if self.batch_events == 0 || self.batch_events > BATCH_EVENTS_MAX {
            return invalid(format!(
                "batch_events must be 1..={BATCH_EVENTS_MAX}, got {}",
                self.batch_events
            ));
        }
        if self.event_bytes > EVENT_BYTES_MAX {
            return invalid(format!(
                "event_bytes must be at most {EVENT_BYTES_MAX}, got {}",
                self.event_bytes
            ));
        }
        if self.users == 0 || self.users > USER_INDEX_MAX + 1 {
            return invalid(format!(
                "users must be 1..={}, got {}",
                USER_INDEX_MAX + 1,
                self.users
            ));
        }
        if self.rate_events_per_second == Some(0) {
            return invalid("rate_events_per_second must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_rejected() {
        assert!(LoadOptions::default().validate().is_ok());
        assert!(LoadOptions {
            concurrency: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(LoadOptions {
            batch_events: 2501,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(LoadOptions {
            event_bytes: 40_000,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(LoadOptions {
            users: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(LoadOptions {
            rate_events_per_second: Some(0),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
