//! Per-source (per write key) rate limit: a token bucket holding one second of events.
//!
//! `collect.rate_limit_events_per_second` (config) or `TANDEM_RATE_LIMIT_EVENTS_PER_SECOND` sets
//! the rate; unset means unlimited. A request whose events do not fit in the bucket is refused
//! whole with 429 `rate_limited` and `Retry-After`, so one runaway source cannot starve the others
//! of the log's queue. A batch larger than one second's worth is admitted when the bucket is
//! full (and drains it), so a limit below the batch size never blocks a source for good.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Instant;

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

pub struct RateLimiter {
    events_per_second: Option<f64>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(events_per_second: Option<u32>) -> RateLimiter {
        RateLimiter {
            events_per_second: events_per_second.map(f64::from),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `events` tokens from `source`'s bucket, or answers how many seconds until they fit.
    pub fn admit(&self, source: &str, events: usize) -> Result<(), u64> {
        let Some(rate) = self.events_per_second else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let bucket = buckets.entry(source.to_string()).or_insert(Bucket {
            tokens: rate,
            refilled_at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.refilled_at).as_secs_f64() * rate).min(rate);
        bucket.refilled_at = now;
        let wanted = (events as f64).min(rate);
        if bucket.tokens >= wanted {
            bucket.tokens -= events as f64;
            return Ok(());
        }
        Err(((wanted - bucket.tokens) / rate).ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_when_unset() {
        assert!(RateLimiter::new(None).admit("s", 1_000_000).is_ok());
    }

    #[test]
    fn a_second_of_events_then_refusal_per_source() {
        let limiter = RateLimiter::new(Some(100));
        assert!(limiter.admit("web", 60).is_ok());
        assert!(limiter.admit("web", 40).is_ok());
        assert_eq!(limiter.admit("web", 50), Err(1));
        assert!(limiter.admit("ios", 100).is_ok(), "buckets are per source");
    }

    #[test]
    fn an_oversized_batch_fits_a_full_bucket() {
        let limiter = RateLimiter::new(Some(10));
        assert!(limiter.admit("web", 500).is_ok());
        assert!(limiter.admit("web", 1).is_err());
    }
}
