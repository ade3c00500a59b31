//! The dedup index: `(source, messageId)` keys seen within the window.
//!
//! A key is first *reserved* by the request that carries it (in flight), then *confirmed* once
//! its event is durable, or *released* if the append failed. A second copy arriving while the
//! first is in flight is stored again (at-least-once) rather than acknowledged on a promise:
//! if the first append then failed, acknowledging the copy would lose the event.
//!
//! Layout: shards, each a map under its own lock plus a queue of its keys in arrival order, from
//! which the oldest are evicted: at the window's edge ([`DedupIndex::evict_older_than`]) and when a
//! shard is full (`tandem_dedup_evicted_total`). Memory: about 40 bytes per key (a 16-byte map slot
//! at a load factor between 7/16 and 7/8, and an 8-byte queue entry).
//!
//! Keys come from client-chosen messageIds, so they are hashed with a per-index random seed:
//! nobody can aim many keys at one bucket or one shard.
//!
//! The arrival queue is approximate in two harmless ways: a key released and reserved again is
//! queued twice (its first queue entry may evict it a little early), and keys recovered at start
//! are queued in the order they are read, which is the log's order.

use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

/// Most shards: enough that 2 to 16 request tasks rarely wait on each other's lock.
const SHARDS_MAX: usize = 64;
/// Fewest keys a shard is sized for: small indexes get fewer shards, so that "the oldest key"
/// stays close to the oldest of the whole index.
const SHARD_ENTRIES_MIN: usize = 1024;

/// What [`DedupIndex::reserve`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Not seen: reserved for this request, which must `confirm` or `release` it.
    New,
    /// Seen and durable: acknowledge without storing.
    Duplicate,
    /// Reserved by a request whose append has not finished.
    InFlight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Seconds since the Unix epoch when the key was first seen (u32: good until 2106).
    seen_secs: u32,
    in_flight: bool,
}

/// The finalizer of MurmurHash3: every input bit affects every output bit.
fn mix(mut value: u64) -> u64 {
    value ^= value >> 33;
    value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^= value >> 33;
    value = value.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    value ^ (value >> 33)
}

/// A random 64-bit seed from the standard library's per-process random keys.
fn random_seed() -> u64 {
    RandomState::new().hash_one(0x7a6e_6465_6d00_u64)
}

/// Hashes a key (already a uniform 64-bit hash) by mixing it with a secret seed: cheaper than
/// SipHash, and as unpredictable to a client.
#[derive(Clone, Copy)]
struct SeededKeyHash {
    seed: u64,
}

impl BuildHasher for SeededKeyHash {
    type Hasher = SeededKeyHasher;
    fn build_hasher(&self) -> SeededKeyHasher {
        SeededKeyHasher {
            seed: self.seed,
            state: 0,
        }
    }
}

struct SeededKeyHasher {
    seed: u64,
    state: u64,
}

impl Hasher for SeededKeyHasher {
    fn finish(&self) -> u64 {
        mix(self.state ^ self.seed)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state = self.state.rotate_left(8) ^ byte as u64;
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.state = value;
    }
}

struct Shard {
    entries: HashMap<u64, Entry, SeededKeyHash>,
    /// Keys in arrival order, for eviction; may hold keys released since.
    arrivals: VecDeque<u64>,
}

impl Shard {
    /// Inserts a key seen now, then evicts the oldest past `capacity`. Returns how many went.
    fn insert(&mut self, key: u64, entry: Entry, capacity: usize) -> usize {
        self.entries.insert(key, entry);
        self.arrivals.push_back(key);
        let mut evicted = 0;
        while self.entries.len() > capacity {
            let Some(oldest) = self.arrivals.pop_front() else {
                break;
            };
            if oldest != key && self.entries.remove(&oldest).is_some() {
                evicted += 1;
            }
        }
        evicted
    }

    /// Drops keys seen before `cutoff_secs` from the front of the arrival queue.
    fn evict_older_than(&mut self, cutoff_secs: u32) -> usize {
        let mut evicted = 0;
        while let Some(&oldest) = self.arrivals.front() {
            match self.entries.get(&oldest) {
                Some(entry) if entry.seen_secs >= cutoff_secs => break,
                Some(_) => {
                    self.entries.remove(&oldest);
                    evicted += 1;
                }
                None => {}
            }
            self.arrivals.pop_front();
        }
        evicted
    }

    /// When the oldest key still held was seen; drops released keys from the queue's front.
    fn oldest_seen_secs(&mut self) -> Option<u32> {
        while let Some(&oldest) = self.arrivals.front() {
            if let Some(entry) = self.entries.get(&oldest) {
                return Some(entry.seen_secs);
            }
            self.arrivals.pop_front();
        }
        None
    }
}

/// The `(source, messageId)` keys seen within the dedup window, shared by every request task.
pub struct DedupIndex {
    shards: Vec<Mutex<Shard>>,
    shard_seed: u64,
    shard_capacity: usize,
}

fn seconds(ms: i64) -> u32 {
    (ms.div_euclid(1000)).clamp(0, u32::MAX as i64) as u32
}

impl DedupIndex {
    /// An index holding at most about `entries_max` keys (at least one per shard).
    pub fn new(entries_max: usize) -> DedupIndex {
        let wanted = (entries_max / SHARD_ENTRIES_MIN).clamp(1, SHARDS_MAX);
        let shard_count = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        let map_hash = SeededKeyHash {
            seed: random_seed(),
        };
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::with_hasher(map_hash),
                    arrivals: VecDeque::new(),
                })
            })
            .collect();
        DedupIndex {
            shards,
            shard_seed: random_seed(),
            shard_capacity: entries_max.div_ceil(shard_count).max(1),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        let index = (mix(key ^ self.shard_seed) >> 32) as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    /// Looks `key` up and, when it is new, reserves it for the caller as seen at `now_ms`.
    pub fn reserve(&self, key: u64, now_ms: i64) -> Reservation {
        let mut shard = self.shard(key).lock();
        match shard.entries.get(&key) {
            Some(entry) if entry.in_flight => Reservation::InFlight,
            Some(_) => Reservation::Duplicate,
            None => {
                let evicted = shard.insert(
                    key,
                    Entry {
                        seen_secs: seconds(now_ms),
                        in_flight: true,
                    },
                    self.shard_capacity,
                );
                drop(shard);
                count_evicted("capacity", evicted);
                Reservation::New
            }
        }
    }

    /// Marks reserved keys durable: later copies are duplicates.
    pub fn confirm(&self, keys: &[u64]) {
        for &key in keys {
            if let Some(entry) = self.shard(key).lock().entries.get_mut(&key) {
                entry.in_flight = false;
            }
        }
    }

    /// Forgets reservations whose append failed, so a retry is stored. Durable keys stay.
    pub fn release(&self, keys: &[u64]) {
        for &key in keys {
            let mut shard = self.shard(key).lock();
            if shard.entries.get(&key).is_some_and(|entry| entry.in_flight) {
                shard.entries.remove(&key);
            }
        }
    }

    /// Makes room for about `additional` more keys at once, so rebuilding the index at start does
    /// not grow every shard's table step by step.
    pub fn reserve_capacity(&self, additional: usize) {
        let per_shard = additional
            .div_ceil(self.shards.len())
            .min(self.shard_capacity);
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard.entries.reserve(per_shard);
            shard.arrivals.reserve(per_shard);
        }
    }

    /// Adds a key known to be durable (rebuilding the index from the log at start). A key already
    /// held keeps its first-seen time.
    pub fn insert_durable(&self, key: u64, seen_ms: i64) {
        let mut shard = self.shard(key).lock();
        if let Some(entry) = shard.entries.get_mut(&key) {
            entry.in_flight = false;
            return;
        }
        let evicted = shard.insert(
            key,
            Entry {
                seen_secs: seconds(seen_ms),
                in_flight: false,
            },
            self.shard_capacity,
        );
        drop(shard);
        count_evicted("capacity", evicted);
    }

    /// Drops keys first seen before `cutoff_ms` (the window's edge). Returns how many.
    pub fn evict_older_than(&self, cutoff_ms: i64) -> usize {
        let cutoff_secs = seconds(cutoff_ms);
        let evicted = self
            .shards
            .iter()
            .map(|shard| shard.lock().evict_older_than(cutoff_secs))
            .sum();
        count_evicted("age", evicted);
        evicted
    }

    /// Keys held, durable or in flight.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().entries.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the oldest key still held was seen (ms, to the second), if any: the dedup window
    /// actually covered.
    pub fn oldest_seen_ms(&self) -> Option<i64> {
        self.shards
            .iter()
            .filter_map(|shard| shard.lock().oldest_seen_secs())
            .min()
            .map(|secs| secs as i64 * 1000)
    }
}

fn count_evicted(reason: &'static str, evicted: usize) {
    if evicted > 0 {
        metrics::counter!("tandem_dedup_evicted_total", "reason" => reason)
            .increment(evicted as u64);
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
        assert_eq!(
            index.reserve(1, 7_000),
            Reservation::Duplicate,
            "release never forgets a durable key"
        );
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn confirming_or_releasing_unknown_keys_is_harmless() {
        let index = DedupIndex::new(10);
        index.confirm(&[5, 6]);
        index.release(&[7]);
        assert!(index.is_empty());
        assert_eq!(index.oldest_seen_ms(), None);
    }

    #[test]
    fn the_window_edge_evicts_the_oldest() {
        let index = DedupIndex::new(1000);
        index.insert_durable(10, 1_000);
        index.insert_durable(20, 9_000);
        assert_eq!(index.oldest_seen_ms(), Some(1_000));
        assert_eq!(index.evict_older_than(5_000), 1);
        assert_eq!(index.oldest_seen_ms(), Some(9_000));
        assert_eq!(index.reserve(10, 10_000), Reservation::New);
        assert_eq!(index.reserve(20, 10_000), Reservation::Duplicate);
        assert_eq!(
            index.evict_older_than(100_000),
            2,
            "in-flight keys age out too"
        );
        assert!(index.is_empty());
    }

    #[test]
    fn capacity_evicts_the_oldest_never_the_newest() {
        let index = DedupIndex::new(3);
        for key in 1..=5u64 {
            assert_eq!(index.reserve(key, key as i64 * 1000), Reservation::New);
            index.confirm(&[key]);
        }
        assert_eq!(index.len(), 3);
        assert_eq!(
            index.reserve(1, 9_000),
            Reservation::New,
            "the oldest were forgotten"
        );
        assert_eq!(index.reserve(5, 9_000), Reservation::Duplicate);
        let single = DedupIndex::new(0);
        assert_eq!(single.reserve(1, 0), Reservation::New);
        assert_eq!(single.reserve(2, 0), Reservation::New);
        assert_eq!(
            single.reserve(2, 0),
            Reservation::InFlight,
            "the key just reserved is kept"
        );
    }

    #[test]
    fn released_keys_do_not_confuse_the_age_queue() {
        let index = DedupIndex::new(1000);
        assert_eq!(index.reserve(1, 1_000), Reservation::New);
        index.release(&[1]);
        index.insert_durable(2, 2_000);
        assert_eq!(index.oldest_seen_ms(), Some(2_000));
        assert_eq!(index.evict_older_than(1_500), 0);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn recovery_keeps_the_first_seen_time_and_makes_reservations_durable() {
        let index = DedupIndex::new(1000);
        assert_eq!(index.reserve(1, 1_000), Reservation::New);
        index.insert_durable(1, 5_000);
        assert_eq!(index.reserve(1, 6_000), Reservation::Duplicate);
        assert_eq!(index.oldest_seen_ms(), Some(1_000));
        let recovered = DedupIndex::new(10);
        recovered.insert_durable(3, -5);
        assert_eq!(
            recovered.oldest_seen_ms(),
            Some(0),
            "times before the epoch clamp to it"
        );
    }

    #[test]
    fn large_indexes_are_sharded_small_ones_exact() {
        assert_eq!(DedupIndex::new(10).shards.len(), 1);
        assert_eq!(DedupIndex::new(5 * SHARD_ENTRIES_MIN).shards.len(), 4);
        assert_eq!(
            DedupIndex::new(tandem_core::limits::DEFAULT_DEDUP_ENTRIES_MAX)
                .shards
                .len(),
            SHARDS_MAX
        );
    }

    #[test]
    fn concurrent_reservations_give_each_key_to_one_request() {
        let index = Arc::new(DedupIndex::new(1_000_000));
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut won = Vec::new();
                        for key in 0..10_000u64 {
                            if index.reserve(key.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0)
                                == Reservation::New
                            {
                                won.push(key.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                            }
                        }
                        index.confirm(&won);
                        won.len()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .sum()
        });
        assert_eq!(winners, 10_000);
        assert_eq!(index.len(), 10_000);
        assert!((0..10_000u64).all(|key| index
            .reserve(key.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0)
            == Reservation::Duplicate));
    }
}
