//! When to try again: retry delays (exponential backoff with full jitter, `Retry-After`
//! honoured), the retry budget of an event, and the circuit breaker of a destination.

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tandem_core::limits::{
    DELIVERY_BACKOFF_BASE_MS, DELIVERY_BACKOFF_CAP_MS, DELIVERY_CIRCUIT_FAILURES,
    DELIVERY_CIRCUIT_OPEN_MS_MAX,
};

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in
/// the past means "now"; anything longer than [`DELIVERY_BACKOFF_CAP_MS`] is capped so a bogus
/// value cannot park a connection for days. `None` when the value is neither form.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let cap = Duration::from_millis(DELIVERY_BACKOFF_CAP_MS);
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(cap));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO).min(cap))
}

/// The exponential ceiling of retry `attempt` (0-based): base × 2^attempt, capped.
pub fn backoff_ceiling(attempt: u32) -> Duration {
    let factor = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
    Duration::from_millis(
        DELIVERY_BACKOFF_BASE_MS
            .saturating_mul(factor)
            .min(DELIVERY_BACKOFF_CAP_MS),
    )
}

/// The wait before retry `attempt`: the destination's `Retry-After` when it gave one (capped),
/// else full jitter — uniform in [0, ceiling] — which spreads the retries of many lanes and
/// connections instead of synchronising them into waves.
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, random_unit: f64) -> Duration {
    if let Some(after) = retry_after {
        return after.min(Duration::from_millis(DELIVERY_BACKOFF_CAP_MS));
    }
    backoff_ceiling(attempt).mul_f64(random_unit.clamp(0.0, 1.0))
}

/// A uniform number in [0, 1) for [`retry_delay`].
pub fn random_unit() -> f64 {
    rand::random::<f64>()
}

/// The retry budget of one batch: how long it has been failing against `retry_max`.
#[derive(Debug, Clone, Copy)]
pub struct RetryBudget {
    first_failure: Option<Instant>,
    retry_max: Duration,
}

impl RetryBudget {
    pub fn new(retry_max: Duration) -> RetryBudget {
        RetryBudget {
            first_failure: None,
            retry_max,
        }
    }

    /// Records a failure at `now`; `false` once the budget is spent (→ DLQ with the last error).
    pub fn failed(&mut self, now: Instant) -> bool {
        let first = *self.first_failure.get_or_insert(now);
        now.duration_since(first) < self.retry_max
    }
}

/// What a circuit breaker lets a lane do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send (the circuit is closed).
    Send,
    /// Send as the one probe of a half-open circuit.
    Probe,
    /// Wait this long, then ask again.
    Wait(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, opened: u32 },
    HalfOpen { opened: u32 },
}

/// A circuit breaker per destination: after [`DELIVERY_CIRCUIT_FAILURES`] consecutive transient
/// failures it opens; lanes wait instead of hammering a destination that is down; after the
/// open period one probe batch is let through (half-open): success closes it, failure re-opens
/// it for longer (backoff over successive openings up to [`DELIVERY_CIRCUIT_OPEN_MS_MAX`], or
/// the destination's `Retry-After`). Closing wakes every lane waiting on it ([`Self::wait`]),
/// so a recovered destination is noticed within one open period and drained at full speed
/// instead of after each lane's own backoff (up to a minute).
#[derive(Debug)]
pub struct CircuitBreaker {
    state: Mutex<State>,
    failures_to_open: u32,
    /// Counts the times the circuit closed after being open.
    closings: tokio::sync::watch::Sender<u64>,
}

/// How long a lane waits for the probe of a half-open circuit before asking again.
const HALF_OPEN_POLL: Duration = Duration::from_millis(50);

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker::new(DELIVERY_CIRCUIT_FAILURES)
    }
}

impl CircuitBreaker {
    pub fn new(failures_to_open: u32) -> CircuitBreaker {
        CircuitBreaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures_to_open: failures_to_open.max(1),
            closings: tokio::sync::watch::channel(0).0,
        }
    }

    /// A watch on the circuit's closings: take it *before* asking [`Self::permit`] or sending,
    /// then [`Self::wait`] with it misses no closing that happened since.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.closings.subscribe()
    }

    /// When the open circuit lets its next probe through (`None` unless open).
    pub fn probe_at(&self) -> Option<Instant> {
        match *self.state.lock() {
            State::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    /// Waits `wait`, or less: until the circuit's next probe if it is open and that comes
    /// sooner, or until the circuit closes (seen through `watch`, taken before the failure).
    pub async fn wait(&self, wait: Duration, watch: &mut tokio::sync::watch::Receiver<u64>) {
        let now = Instant::now();
        let mut until = now + wait;
        if let Some(probe) = self.probe_at() {
            until = until.min(probe.max(now));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            _ = watch.changed() => {}
        }
    }

    pub fn permit(&self, now: Instant) -> Permit {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => Permit::Send,
            State::Open { until, opened } => {
                if now >= until {
                    *state = State::HalfOpen { opened };
                    Permit::Probe
                } else {
                    Permit::Wait(until - now)
                }
            }
            State::HalfOpen { .. } => Permit::Wait(HALF_OPEN_POLL),
        }
    }

    /// The destination answered (delivered, or refused an event permanently: it is up).
    pub fn succeeded(&self) {
        let mut state = self.state.lock();
        let was_open = !matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        drop(state);
        if was_open {
            self.closings.send_modify(|closings| *closings += 1);
        }
    }

    /// A transient failure; returns true when this failure opened the circuit.
    pub fn failed(&self, now: Instant, retry_after: Option<Duration>) -> bool {
        let mut state = self.state.lock();
        let open = |opened: u32| {
            let period = retry_after.unwrap_or_else(|| {
                backoff_ceiling(opened + 3).min(Duration::from_millis(DELIVERY_CIRCUIT_OPEN_MS_MAX))
            });
            State::Open {
                until: now + period,
                opened: opened + 1,
            }
        };
        match *state {
            State::Closed { failures } => {
                if failures + 1 >= self.failures_to_open {
                    *state = open(0);
                    true
                } else {
                    *state = State::Closed {
                        failures: failures + 1,
                    };
                    false
                }
            }
            State::HalfOpen { opened } => {
                *state = open(opened);
                false
            }
            // A lane that was already sending when the circuit opened.
            State::Open { .. } => false,
        }
    }

    /// `closed`, `open` or `half_open`, for the API and metrics.
    pub fn state_name(&self) -> &'static str {
        match *self.state.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let in_ten = httpdate::fmt_http_date(now + Duration::from_secs(10));
        assert_eq!(
            parse_retry_after(&in_ten, now),
            Some(Duration::from_secs(10))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("999999", now),
            Some(Duration::from_millis(DELIVERY_BACKOFF_CAP_MS)),
            "capped"
        );
        for bad in ["", "-1", "soon", "1.5", "Wed, 99 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_jitter_stays_below_the_ceiling() {
        assert_eq!(
            backoff_ceiling(0),
            Duration::from_millis(DELIVERY_BACKOFF_BASE_MS)
        );
        assert_eq!(
            backoff_ceiling(1),
            Duration::from_millis(2 * DELIVERY_BACKOFF_BASE_MS)
        );
        assert_eq!(
            backoff_ceiling(3),
            Duration::from_millis(8 * DELIVERY_BACKOFF_BASE_MS)
        );
        assert_eq!(
            backoff_ceiling(40),
            Duration::from_millis(DELIVERY_BACKOFF_CAP_MS)
        );
        assert_eq!(
            backoff_ceiling(u32::MAX),
            Duration::from_millis(DELIVERY_BACKOFF_CAP_MS)
        );
        for attempt in 0..20 {
            for unit in [0.0, 0.25, 0.999] {
                let delay = retry_delay(attempt, None, unit);
                assert!(delay <= backoff_ceiling(attempt));
            }
        }
        assert_eq!(
            retry_delay(5, None, 0.0),
            Duration::ZERO,
            "full jitter reaches zero"
        );
        assert_eq!(
            retry_delay(0, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7),
            "Retry-After wins over the backoff"
        );
    }

    #[test]
    fn budget_runs_out_after_retry_max() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(Duration::from_secs(10));
        assert!(budget.failed(start));
        assert!(budget.failed(start + Duration::from_secs(9)));
        assert!(!budget.failed(start + Duration::from_secs(10)));
        let mut none = RetryBudget::new(Duration::ZERO);
        assert!(
            !none.failed(start),
            "a zero budget dead-letters at the first failure"
        );
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let breaker = CircuitBreaker::new(3);
        let now = Instant::now();
        assert_eq!(breaker.permit(now), Permit::Send);
        assert!(!breaker.failed(now, None));
        assert!(!breaker.failed(now, None));
        assert!(
            breaker.failed(now, Some(Duration::from_secs(2))),
            "third failure opens"
        );
        assert_eq!(breaker.state_name(), "open");
        assert_eq!(breaker.permit(now), Permit::Wait(Duration::from_secs(2)));
        let later = now + Duration::from_secs(2);
        assert_eq!(breaker.permit(later), Permit::Probe);
        assert_eq!(breaker.state_name(), "half_open");
        assert_eq!(
            breaker.permit(later),
            Permit::Wait(HALF_OPEN_POLL),
            "one probe at a time"
        );
        breaker.failed(later, None);
        assert_eq!(breaker.state_name(), "open", "a failed probe re-opens");
        assert!(matches!(breaker.permit(later), Permit::Wait(wait) if wait > Duration::ZERO));
        let much_later = later + Duration::from_secs(120);
        assert_eq!(breaker.permit(much_later), Permit::Probe);
        breaker.succeeded();
        assert_eq!(breaker.state_name(), "closed");
        assert_eq!(breaker.permit(much_later), Permit::Send);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let breaker = CircuitBreaker::new(2);
        let now = Instant::now();
        breaker.failed(now, None);
        breaker.succeeded();
        assert!(!breaker.failed(now, None));
        assert_eq!(breaker.state_name(), "closed");
    }
}
