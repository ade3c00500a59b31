//! The dedup index: `(source, messageId)` keys seen within the window.
//!
//! A key is first *reserved* by the request that carries it (in flight), then *confirmed* once
//! its event is durable, or *released* if the append failed. A second copy arriving while the
//! first is in flight is stored again (at-least-once) rather than acknowledged on a promise:
//! if the first append then failed, acknowledging the copy would lose the event.
//!
//! Memory: about 36 bytes per key (a map entry and an age-queue entry), 64 shards each under its
//! own lock. When full, the oldest keys go first (`tandem_dedup_evicted_total`).

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

const SHARDS: usize = 64;
/// High bit of an entry: the key is still in flight.
const IN_FLIGHT: u32 = 1 << 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Not seen: reserved for this request, which must `confirm` or `release` it.
    New,
    /// Seen and durable: acknowledge without storing.
    Duplicate,
    /// Reserved by a request whose append has not finished.
    InFlight,
}

/// Keys are already uniform hashes: use them as they are.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ byte as u64;
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[derive(Default)]
struct Shard {
    /// key → seen second, with `IN_FLIGHT` set while reserved.
    entries: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    /// (key, seen second) in arrival order, for eviction; may hold stale pairs.
    ages: VecDeque<(u64, u32)>,
}

impl Shard {
    fn insert(&mut self, key: u64, value: u32, capacity: usize) -> usize {
        self.entries.insert(key, value);
        self.ages.push_back((key, value & !IN_FLIGHT));
        let mut evicted = 0;
        while self.entries.len() > capacity {
            let Some((old, seen)) = self.ages.pop_front() else { break };
            if self.entries.get(&old).is_some_and(|value| value & !IN_FLIGHT == seen) {
                self.entries.remove(&old);
                evicted += 1;
            }
        }
        evicted
    }
}

pub struct DedupIndex {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
}

fn seconds(ms: i64) -> u32 {
    (ms / 1000).clamp(0, (IN_FLIGHT - 1) as i64) as u32
}

impl DedupIndex {
    /// An index holding at most about `entries_max` keys.
    pub fn new(entries_max: usize) -> DedupIndex {
        DedupIndex { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), shard_capacity: (entries_max / SHARDS).max(1) }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[(key >> 58) as usize % SHARDS]
    }

    pub fn reserve(&self, key: u64, now_ms: i64) -> Reservation {
        let mut shard = self.shard(key).lock();
        match shard.entries.get(&key) {
            Some(value) if value & IN_FLIGHT != 0 => Reservation::InFlight,
            Some(_) => Reservation::Duplicate,
            None => {
                let evicted = shard.insert(key, seconds(now_ms) | IN_FLIGHT, self.shard_capacity);
                drop(shard);
                if evicted > 0 {
                    metrics::counter!("tandem_dedup_evicted_total").increment(evicted as u64);
                }
                Reservation::New
            }
        }
    }

    /// Marks reserved keys durable: later copies are duplicates.
    pub fn confirm(&self, keys: &[u64]) {
        for &key in keys {
            if let Some(value) = self.shard(key).lock().entries.get_mut(&key) {
                *value &= !IN_FLIGHT;
            }
        }
    }

    /// Forgets reservations whose append failed, so a retry is stored.
    pub fn release(&self, keys: &[u64]) {
        for &key in keys {
            let mut shard = self.shard(key).lock();
            if shard.entries.get(&key).is_some_and(|value| value & IN_FLIGHT != 0) {
                shard.entries.remove(&key);
            }
        }
    }

    /// Adds a key known to be durable (rebuilding the index from the log at start).
    pub fn insert_durable(&self, key: u64, seen_ms: i64) {
        let mut shard = self.shard(key).lock();
        let seen = seconds(seen_ms);
        if shard.entries.get(&key).is_some_and(|value| value & !IN_FLIGHT >= seen) {
            return;
        }
        shard.insert(key, seen, self.shard_capacity);
    }

    /// Drops keys first seen before `cutoff_ms` (the window's edge). Returns how many.
    pub fn evict_older_than(&self, cutoff_ms: i64) -> usize {
        let cutoff = seconds(cutoff_ms);
        let mut evicted = 0;
        for shard in &self.shards {
            let mut shard = shard.lock();
            while let Some(&(key, seen)) = shard.ages.front() {
                if seen >= cutoff {
                    break;
                }
                shard.ages.pop_front();
                if shard.entries.get(&key).is_some_and(|value| *value == seen) {
                    shard.entries.remove(&key);
                    evicted += 1;
                }
            }
        }
        evicted
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the oldest key still held was seen (ms), if any.
    pub fn oldest_seen_ms(&self) -> Option<i64> {
        self.shards
            .iter()
            .filter_map(|shard| {
                let shard = shard.lock();
                shard.ages.iter().find(|(key, seen)| shard.entries.get(key).is_some_and(|value| value & !IN_FLIGHT == *seen)).map(|(_, seen)| *seen as i64 * 1000)
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reserve_confirm_release() {
        let index = DedupIndex::new(1000);
        assert_eq!(index.reserve(1, 5_000), Reservation::New);
        assert_eq!(index.reserve(1, 5_000), Reservation::InFlight);
        index.release(&[1]);
        assert_eq!(index.reserve(1, 6_000), Reservation::New);
        index.confirm(&[1]);
        assert_eq!(index.reserve(1, 7_000), Reservation::Duplicate);
        index.release(&[1]);
        assert_eq!(index.reserve(1, 7_000), Reservation::Duplicate, "release never forgets a durable key");
    }

    #[test]
    fn the_window_edge_and_the_capacity_evict_the_oldest() {
        let index = DedupIndex::new(SHARDS * 2);
        index.insert_durable(10, 1_000);
        index.insert_durable(20, 9_000);
        assert_eq!(index.oldest_seen_ms(), Some(1_000));
        assert_eq!(index.evict_older_than(5_000), 1);
        assert_eq!(index.reserve(10, 10_000), Reservation::New);
        assert_eq!(index.reserve(20, 10_000), Reservation::Duplicate);

        let small = DedupIndex::new(SHARDS);
        for second in 0..3 {
            small.insert_durable(7 + (second << 1), second as i64 * 1000); // same shard (high bits 0)
        }
        assert_eq!(small.len(), 1);
        assert_eq!(small.reserve(7 + (2 << 1), 0), Reservation::Duplicate, "the newest stays");
    }

    #[test]
    fn concurrent_reservations_give_each_key_to_one_request() {
        let index = Arc::new(DedupIndex::new(1_000_000));
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| (0..10_000u64).filter(|&key| index.reserve(key.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0) == Reservation::New).count())).collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).sum()
        });
        assert_eq!(winners, 10_000);
        assert_eq!(index.len(), 10_000);
    }
}
