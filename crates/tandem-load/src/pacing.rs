//! Open-loop pacing. Request `n` is due at `start + n × batch / rate`, whatever happened to the
//! requests before it; latency is measured from that due time, not from when a worker got round
//! to sending. A closed-loop generator (or one measuring from the actual send) waits politely
//! while the server stalls and so never records the stall: "coordinated omission".

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    events_per_request: u64,
    events_per_second: u64,
}

impl Schedule {
    pub fn new(start: Instant, events_per_request: u64, events_per_second: u64) -> Schedule {
        assert!(
            events_per_request > 0 && events_per_second > 0,
            "pacing needs a positive rate"
        );
        Schedule {
            start,
            events_per_request,
            events_per_second,
        }
    }

    /// When request number `request` is due.
    pub fn due(&self, request: u64) -> Instant {
        self.start + self.offset(request)
    }

    /// Time from the start to request `request`, computed from the request number rather than
    /// accumulated, so rounding never drifts over a long run.
    pub fn offset(&self, request: u64) -> Duration {
        let nanos = request as u128 * self.events_per_request as u128 * 1_000_000_000
            / self.events_per_second as u128;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many requests fall due in the first `elapsed` of the run (those due strictly before it).
    pub fn requests_due_within(&self, elapsed: Duration) -> u64 {
        let numerator = elapsed.as_nanos() * self.events_per_second as u128;
        let denominator = self.events_per_request as u128 * 1_000_000_000;
        u64::try_from(numerator.div_ceil(denominator)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced() {
        let schedule = Schedule::new(Instant::now(), 100, 1000);
        assert_eq!(schedule.offset(0), Duration::ZERO);
        assert_eq!(schedule.offset(1), Duration::from_millis(100));
        assert_eq!(schedule.offset(10), Duration::from_secs(1));
        assert_eq!(
            schedule.due(3) - schedule.due(2),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn no_drift_with_rates_that_do_not_divide() {
        // 3 requests per second: 333,333,333.3 ns apart; request 3,000,000 is due at exactly 1e6 s.
        let schedule = Schedule::new(Instant::now(), 1, 3);
        assert_eq!(schedule.offset(3_000_000), Duration::from_secs(1_000_000));
        assert_eq!(schedule.offset(1), Duration::from_nanos(333_333_333));
    }

    #[test]
    fn counts_requests_due_within_a_window() {
        let schedule = Schedule::new(Instant::now(), 100, 1000);
        assert_eq!(schedule.requests_due_within(Duration::ZERO), 0);
        assert_eq!(schedule.requests_due_within(Duration::from_secs(1)), 10);
        assert_eq!(
            schedule.requests_due_within(Duration::from_millis(1001)),
            11
        );
        for request in 0..50 {
            assert_eq!(
                schedule.requests_due_within(schedule.offset(request)),
                request,
                "request {request} is not due before its own time"
            );
        }
    }
}
