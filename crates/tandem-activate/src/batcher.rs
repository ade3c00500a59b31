//! Batching by count, bytes and age: a lane collects events until the batch is full or its
//! oldest event waited `age_ms`, then sends it.

use crate::destination::BatchLimits;
use std::time::{Duration, Instant};

/// A batch being filled.
#[derive(Debug)]
pub struct Batcher<T> {
    limits: BatchLimits,
    items: Vec<T>,
    bytes: usize,
    opened: Option<Instant>,
}

impl<T> Batcher<T> {
    pub fn new(limits: BatchLimits) -> Batcher<T> {
        Batcher {
            limits: BatchLimits {
                events_max: limits.events_max.max(1),
                ..limits
            },
            items: Vec::new(),
            bytes: 0,
            opened: None,
        }
    }

    /// Whether an item of `bytes` would overflow the batch (then send the batch first). An item
    /// alone larger than `bytes_max` still goes, alone.
    pub fn would_overflow(&self, bytes: usize) -> bool {
        !self.items.is_empty() && self.bytes + bytes > self.limits.bytes_max
    }

    pub fn push(&mut self, item: T, bytes: usize, now: Instant) {
        self.opened.get_or_insert(now);
        self.items.push(item);
        self.bytes += bytes;
    }

    /// Full by count or bytes: send now.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.limits.events_max || self.bytes >= self.limits.bytes_max
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the batch must leave even if not full (none while empty).
    pub fn deadline(&self) -> Option<Instant> {
        self.opened
            .map(|opened| opened + Duration::from_millis(self.limits.age_ms))
    }

    pub fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        self.opened = None;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(events_max: usize, bytes_max: usize, age_ms: u64) -> BatchLimits {
        BatchLimits {
            events_max,
            bytes_max,
            age_ms,
            ..BatchLimits::default()
        }
    }

    #[test]
    fn full_by_count() {
        let now = Instant::now();
        let mut batcher = Batcher::new(limits(3, 1000, 100));
        assert_eq!(batcher.deadline(), None);
        for item in 0..3 {
            assert!(!batcher.is_full());
            batcher.push(item, 10, now);
        }
        assert!(batcher.is_full());
        assert_eq!(batcher.take(), vec![0, 1, 2]);
        assert!(batcher.is_empty() && batcher.deadline().is_none());
    }

    #[test]
    fn full_by_bytes_and_oversized_items_go_alone() {
        let now = Instant::now();
        let mut batcher = Batcher::new(limits(100, 100, 100));
        batcher.push("a", 60, now);
        assert!(!batcher.is_full());
        assert!(
            batcher.would_overflow(50),
            "60 + 50 > 100: send the batch first"
        );
        assert!(!batcher.would_overflow(40));
        batcher.push("b", 40, now);
        assert!(batcher.is_full());
        batcher.take();
        assert!(
            !batcher.would_overflow(500),
            "an empty batch takes even an oversized item"
        );
        batcher.push("huge", 500, now);
        assert!(batcher.is_full());
    }

    #[test]
    fn deadline_is_the_first_item_plus_age() {
        let now = Instant::now();
        let mut batcher = Batcher::new(limits(10, 1000, 200));
        batcher.push(1, 1, now);
        batcher.push(2, 1, now + Duration::from_millis(150));
        assert_eq!(batcher.deadline(), Some(now + Duration::from_millis(200)));
        let mut zero = Batcher::new(limits(0, 1000, 0));
        zero.push(1, 1, now);
        assert!(zero.is_full(), "events_max 0 is treated as 1");
    }
}
