//! What a connection did: counters, a latency histogram, the last errors, and the alerts raised
//! when a destination's error rate jumps or it starts rejecting events. Every counter is also a
//! Prometheus metric (`tandem_delivery_*`, `tandem_alerts_total`).

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use tandem_core::limits::{ALERTS_KEPT, DELIVERY_LAST_ERRORS_KEPT};
use tandem_core::time_util::{format_iso8601_ms, now_ms};

/// The outcomes counted per event (`outcome` label of `tandem_delivery_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Delivered,
    Retried,
    Rejected,
    Dlq,
    Filtered,
    DroppedByTransform,
    /// Not sent: the person's consent does not cover the connection's categories.
    ConsentDenied,
}

impl Counted {
    pub fn as_str(self) -> &'static str {
        match self {
            Counted::Delivered => "delivered",
            Counted::Retried => "retried",
            Counted::Rejected => "rejected",
            Counted::Dlq => "dlq",
            Counted::Filtered => "filtered",
            Counted::DroppedByTransform => "dropped_by_transform",
            Counted::ConsentDenied => "consent_denied",
        }
    }
}

/// One recent error of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub time: String,
    /// `retry`, `reject`, `dlq` or `transform`.
    pub kind: &'static str,
    pub message: String,
}

/// Length of the error-rate window of the alert (attempts are bucketed per window).
const ERROR_WINDOW_MS: i64 = 30_000;
/// Fewest attempts in a window for its error rate to mean anything.
const ERROR_WINDOW_ATTEMPTS_MIN: u64 = 10;

#[derive(Debug, Default)]
struct ErrorWindow {
    started_ms: i64,
    attempts: u64,
    failures: u64,
    rejects: u64,
    previous_rate: f64,
    previous_rejects: u64,
}

/// Counters of one connection (shared by its worker, lanes, replays and backfills).
#[derive(Debug)]
pub struct ConnectionStats {
    labels: [(&'static str, String); 3],
    delivered: AtomicU64,
    retried: AtomicU64,
    rejected: AtomicU64,
    dlq: AtomicU64,
    filtered: AtomicU64,
    consent_denied: AtomicU64,
    dropped_by_transform: AtomicU64,
    /// Events currently waiting for a retry.
    pub retrying: AtomicU64,
    /// When an event was last delivered (ms since the epoch; 0 = not since start): the catalog's
    /// "last seen" of a destination.
    pub last_delivered_ms: AtomicI64,
    latency_ms: Mutex<hdrhistogram::Histogram<u64>>,
    last_errors: Mutex<VecDeque<LastError>>,
    window: Mutex<ErrorWindow>,
}

impl ConnectionStats {
    pub fn new(workspace: &str, connection: &str, destination: &str) -> ConnectionStats {
        ConnectionStats {
            labels: [
                ("workspace", workspace.to_string()),
                ("connection", connection.to_string()),
                ("destination", destination.to_string()),
            ],
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dlq: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            consent_denied: AtomicU64::new(0),
            dropped_by_transform: AtomicU64::new(0),
            retrying: AtomicU64::new(0),
            last_delivered_ms: AtomicI64::new(0),
            latency_ms: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 7 * 24 * 3600 * 1000, 2)
                    .expect("valid bounds"),
            ),
            last_errors: Mutex::new(VecDeque::new()),
            window: Mutex::new(ErrorWindow::default()),
        }
    }

    fn counter(&self, counted: Counted) -> &AtomicU64 {
        match counted {
            Counted::Delivered => &self.delivered,
            Counted::Retried => &self.retried,
            Counted::Rejected => &self.rejected,
            Counted::Dlq => &self.dlq,
            Counted::Filtered => &self.filtered,
            Counted::DroppedByTransform => &self.dropped_by_transform,
            Counted::ConsentDenied => &self.consent_denied,
        }
    }

    pub fn count(&self, counted: Counted, events: u64) {
        if events == 0 {
            return;
        }
        self.counter(counted).fetch_add(events, Ordering::Relaxed);
        let mut labels = self.labels.to_vec();
        labels.push(("outcome", counted.as_str().to_string()));
        metrics::counter!("tandem_delivery_events_total", &labels).increment(events);
    }

    pub fn get(&self, counted: Counted) -> u64 {
        self.counter(counted).load(Ordering::Relaxed)
    }

    /// Events delivered, with their `receivedAt`: latency from collection to delivery.
    pub fn delivered(&self, received_at_ms: &[i64]) {
        self.count(Counted::Delivered, received_at_ms.len() as u64);
        let now = now_ms();
        if !received_at_ms.is_empty() {
            self.last_delivered_ms.fetch_max(now, Ordering::Relaxed);
        }
        let histogram = metrics::histogram!("tandem_delivery_latency_seconds", &self.labels);
        let mut latency = self.latency_ms.lock();
        for received in received_at_ms {
            let millis = (now - received).max(1) as u64;
            let _ = latency.record(millis);
            histogram.record(millis as f64 / 1000.0);
        }
    }

    /// Latency percentile in ms (0 before any delivery).
    pub fn latency_ms(&self, quantile: f64) -> u64 {
        let latency = self.latency_ms.lock();
        if latency.is_empty() {
            0
        } else {
            latency.value_at_quantile(quantile)
        }
    }

    pub fn error(&self, kind: &'static str, message: &str) {
        let mut errors = self.last_errors.lock();
        if errors.len() >= DELIVERY_LAST_ERRORS_KEPT {
            errors.pop_front();
        }
        errors.push_back(LastError {
            time: format_iso8601_ms(now_ms()),
            kind,
            message: message.to_string(),
        });
    }

    /// Newest first.
    pub fn last_errors(&self) -> Vec<LastError> {
        self.last_errors.lock().iter().rev().cloned().collect()
    }

    /// Feeds the alert windows with one send attempt's result; returns the alert to raise, if any:
    /// the error rate jumped (≥ 50 % after < 10 % in the previous window), or the destination
    /// started rejecting events (rejects after a window without any).
    pub fn attempt(
        &self,
        events: u64,
        failed: bool,
        rejected: bool,
    ) -> Option<(AlertKind, String)> {
        let now = now_ms();
        let mut window = self.window.lock();
        if now - window.started_ms >= ERROR_WINDOW_MS {
            let rate = if window.attempts >= ERROR_WINDOW_ATTEMPTS_MIN {
                window.failures as f64 / window.attempts as f64
            } else {
                window.previous_rate
            };
            *window = ErrorWindow {
                started_ms: now,
                previous_rate: rate,
                previous_rejects: window.rejects,
                ..ErrorWindow::default()
            };
        }
        window.attempts += events;
        let mut alert = None;
        if failed {
            window.failures += events;
            let rate = window.failures as f64 / window.attempts as f64;
            let before_attempts = window.attempts - events;
            let was_alerting = before_attempts >= ERROR_WINDOW_ATTEMPTS_MIN
                && (window.failures - events) as f64 / before_attempts as f64 >= 0.5;
            let crossed = window.attempts >= ERROR_WINDOW_ATTEMPTS_MIN
                && rate >= 0.5
                && !was_alerting
                && window.previous_rate < 0.1;
            if crossed {
                alert = Some((
                    AlertKind::ErrorRateJump,
                    format!(
                        "error rate {:.0}% after {:.0}% in the previous window",
                        rate * 100.0,
                        window.previous_rate * 100.0
                    ),
                ));
            }
        }
        if rejected {
            window.rejects += events;
            if window.rejects == events && window.previous_rejects == 0 {
                alert = Some((
                    AlertKind::SchemaRejects,
                    "the destination started rejecting events".to_string(),
                ));
            }
        }
        alert
    }
}

/// Why an alert was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    ErrorRateJump,
    SchemaRejects,
    CircuitOpen,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ErrorRateJump => "error_rate_jump",
            AlertKind::SchemaRejects => "schema_rejects",
            AlertKind::CircuitOpen => "circuit_open",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub id: u64,
    pub time: String,
    pub kind: AlertKind,
    pub workspace: String,
    pub connection: String,
    pub destination: String,
    pub message: String,
}

/// The alerts of the process, newest last, at most [`ALERTS_KEPT`].
#[derive(Debug, Default)]
pub struct Alerts {
    kept: Mutex<VecDeque<Alert>>,
    next_id: AtomicU64,
}

impl Alerts {
    pub fn raise(
        &self,
        kind: AlertKind,
        workspace: &str,
        connection: &str,
        destination: &str,
        message: String,
    ) {
        tracing::warn!(kind = kind.as_str(), workspace, connection, destination, message = %message, "delivery alert");
        metrics::counter!("tandem_alerts_total", "kind" => kind.as_str()).increment(1);
        let alert = Alert {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            time: format_iso8601_ms(now_ms()),
            kind,
            workspace: workspace.to_string(),
            connection: connection.to_string(),
            destination: destination.to_string(),
            message,
        };
        let mut kept = self.kept.lock();
        if kept.len() >= ALERTS_KEPT {
            kept.pop_front();
        }
        kept.push_back(alert);
    }

    /// Newest first, optionally of one workspace.
    pub fn list(&self, workspace: Option<&str>) -> Vec<Alert> {
        let kept = self.kept.lock();
        kept.iter()
            .rev()
            .filter(|alert| workspace.is_none_or(|workspace| alert.workspace == workspace))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_latency_and_last_errors() {
        let stats = ConnectionStats::new("ws", "c", "d");
        stats.delivered(&[now_ms() - 250, now_ms() - 10]);
        stats.count(Counted::Filtered, 3);
        assert_eq!(stats.get(Counted::Delivered), 2);
        assert_eq!(stats.get(Counted::Filtered), 3);
        assert!(stats.latency_ms(0.99) >= 250 && stats.latency_ms(0.5) >= 10);
        for index in 0..(DELIVERY_LAST_ERRORS_KEPT + 5) {
            stats.error("retry", &format!("e{index}"));
        }
        let errors = stats.last_errors();
        assert_eq!(errors.len(), DELIVERY_LAST_ERRORS_KEPT);
        assert_eq!(
            errors[0].message,
            format!("e{}", DELIVERY_LAST_ERRORS_KEPT + 4),
            "newest first"
        );
    }

    #[test]
    fn first_rejects_and_error_jumps_raise_alerts() {
        let stats = ConnectionStats::new("ws", "c", "d");
        assert_eq!(stats.attempt(20, false, false), None);
        let (kind, _) = stats.attempt(1, false, true).expect("first reject");
        assert_eq!(kind, AlertKind::SchemaRejects);
        assert_eq!(
            stats.attempt(1, false, true),
            None,
            "raised once per window"
        );
        let jump = (0..40).find_map(|_| stats.attempt(1, true, false));
        assert_eq!(jump.map(|(kind, _)| kind), Some(AlertKind::ErrorRateJump));
    }

    #[test]
    fn alerts_are_bounded_and_filtered() {
        let alerts = Alerts::default();
        for index in 0..(ALERTS_KEPT + 3) {
            let workspace = if index % 2 == 0 { "a" } else { "b" };
            alerts.raise(
                AlertKind::CircuitOpen,
                workspace,
                "c",
                "d",
                format!("{index}"),
            );
        }
        assert_eq!(alerts.list(None).len(), ALERTS_KEPT);
        assert!(alerts
            .list(Some("a"))
            .iter()
            .all(|alert| alert.workspace == "a"));
        assert_eq!(alerts.list(None)[0].message, format!("{}", ALERTS_KEPT + 2));
    }
}
