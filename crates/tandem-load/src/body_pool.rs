//! Request bodies built once and re-used: serialising ~100 KB of JSON per request would cost the
//! generator more CPU than the server spends storing it, and the benchmark runs both on the same
//! two cores. Instead a few dozen `/v1/batch` bodies are serialised at start, the byte positions
//! of every field that must vary are remembered, and each request is a copy of one body with
//! those fixed-width digits overwritten:
//!
//! - `messageId` = `<run prefix><request number, 10 digits>-<event index, 4 digits>`, unique
//!   across the run because the request number is, and across runs because of the random prefix;
//! - the user number inside `userId`, `anonymousId` and trait emails, so the run touches
//!   `users` distinct users rather than only the few thousand in the pool;
//! - `sentAt`.

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tandem_core::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX, EVENT_BYTES_MAX};

use crate::synth::{self, EventKind, USER_DIGITS, USER_INDEX_MAX};

/// Distinct bodies generated. Enough variety that the server cannot benefit from repetition
/// (the compressor or a cache), few enough to build in milliseconds: 64 × 100 KB = 6.4 MB.
pub const POOL_BODIES: usize = 64;
/// Width of the request number inside a `messageId`: 10^10 requests before ids repeat.
const REQUEST_DIGITS: usize = 10;
/// Width of the event index inside a `messageId`; covers Segment's 2500 events per batch.
const EVENT_INDEX_DIGITS: usize = 4;
/// Letters of the random per-run `messageId` prefix: 26^10 ≈ 10^14 runs before two may collide
/// (a collision would make the server drop the second run's events as duplicates).
const RUN_PREFIX_LETTERS: usize = 10;
/// Width of `sentAt` and `timestamp` as `2024-01-02T03:04:05.678Z`.
pub const TIMESTAMP_CHARS: usize = 24;

/// Where to write the varying digits of one event in a body.
struct EventPatch {
    /// Offset of the request-number digits inside the `messageId`.
    request_digits_at: usize,
    /// Offsets of the user-number digits (userId, anonymousId, email).
    user_digits_at: Vec<usize>,
}

struct Template {
    bytes: Vec<u8>,
    events: Vec<EventPatch>,
    sent_at_at: usize,
}

pub struct BodyPool {
    templates: Vec<Template>,
    message_id_prefix: String,
    batch_events: usize,
    users: u64,
}

/// What the pool is built from; a subset of the load options.
pub struct PoolSpec {
    pub batch_events: usize,
    pub event_bytes: usize,
    pub users: u64,
    pub seed: u64,
    /// Random letters making this run's messageIds differ from every other run's.
    pub run_prefix: String,
    /// Written as every event's `timestamp`.
    pub timestamp: String,
}

impl PoolSpec {
    /// A fresh run prefix, drawn from the OS rather than the seed: two runs with the same seed
    /// must still send different messageIds.
    pub fn random_run_prefix() -> String {
        let mut rng = StdRng::from_entropy();
        (0..RUN_PREFIX_LETTERS)
            .map(|_| rng.gen_range(b'a'..=b'z') as char)
            .collect::<String>()
            + "-"
    }
}

impl BodyPool {
    /// Builds [`POOL_BODIES`] bodies, or explains which Segment limit the options would break.
    pub fn build(spec: &PoolSpec) -> Result<BodyPool, String> {
        if spec.batch_events == 0 || spec.batch_events > BATCH_EVENTS_MAX {
            return Err(format!(
                "batch_events must be 1..={BATCH_EVENTS_MAX}, got {}",
                spec.batch_events
            ));
        }
        assert_eq!(
            spec.timestamp.len(),
            TIMESTAMP_CHARS,
            "timestamp must be fixed width"
        );
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let templates = (0..POOL_BODIES)
            .map(|_| build_template(&mut rng, spec))
            .collect::<Result<_, _>>()?;
        Ok(BodyPool {
            templates,
            message_id_prefix: spec.run_prefix.clone(),
            batch_events: spec.batch_events,
            users: spec.users.clamp(1, USER_INDEX_MAX + 1),
        })
    }

    pub fn batch_events(&self) -> usize {
        self.batch_events
    }

    /// The body of request number `request`, stamped with `sent_at`. Reuses `scratch`'s
    /// allocation once the previous body it handed out has been dropped.
    pub fn render(&self, request: u64, sent_at: &str, scratch: &mut BytesMut) -> Bytes {
        let template = &self.templates[(request % self.templates.len() as u64) as usize];
        scratch.clear();
        scratch.reserve(template.bytes.len());
        scratch.extend_from_slice(&template.bytes);
        let mut request_digits = [0u8; REQUEST_DIGITS];
        write_digits(&mut request_digits, request);
        for (index, patch) in template.events.iter().enumerate() {
            scratch[patch.request_digits_at..][..REQUEST_DIGITS].copy_from_slice(&request_digits);
            let mut user_digits = [0u8; USER_DIGITS];
            write_digits(&mut user_digits, self.user_of(request, index));
            for &offset in &patch.user_digits_at {
                scratch[offset..][..USER_DIGITS].copy_from_slice(&user_digits);
            }
        }
        assert_eq!(sent_at.len(), TIMESTAMP_CHARS, "sentAt must be fixed width");
        scratch[template.sent_at_at..][..TIMESTAMP_CHARS].copy_from_slice(sent_at.as_bytes());
        scratch.split().freeze()
    }

    /// Appends the messageIds of request `request`, one per line, exactly as `render` wrote them.
    pub fn write_message_ids(&self, request: u64, out: &mut Vec<u8>) {
        for index in 0..self.batch_events {
            push_message_id(out, &self.message_id_prefix, request, index);
            out.push(b'\n');
        }
    }

    /// Spreads events over users with a hash rather than round-robin, so consecutive events of
    /// one batch belong to unrelated users as they would in real traffic.
    fn user_of(&self, request: u64, index: usize) -> u64 {
        splitmix64(
            request
                .wrapping_mul(self.batch_events as u64)
                .wrapping_add(index as u64),
        ) % self.users
    }
}

fn build_template(rng: &mut StdRng, spec: &PoolSpec) -> Result<Template, String> {
    let mut bytes = Vec::with_capacity(spec.batch_events * (spec.event_bytes + 64) + 64);
    bytes.extend_from_slice(b"{\"batch\":[");
    let mut events = Vec::with_capacity(spec.batch_events);
    for index in 0..spec.batch_events {
        if index > 0 {
            bytes.push(b',');
        }
        let start = bytes.len();
        let kind = EventKind::pick(rng);
        let mut event = synth::event(rng, kind, USER_INDEX_MAX, spec.event_bytes);
        let mut message_id = Vec::new();
        push_message_id(&mut message_id, &spec.run_prefix, 0, index);
        event["messageId"] = json!(String::from_utf8(message_id.clone()).expect("ascii"));
        event["timestamp"] = json!(spec.timestamp);
        serde_json::to_writer(&mut bytes, &event).expect("values serialise");
        let written = &bytes[start..];
        if written.len() > EVENT_BYTES_MAX {
            return Err(format!(
                "an event of {} bytes exceeds the {EVENT_BYTES_MAX}-byte Segment limit",
                written.len()
            ));
        }
        events.push(locate_patches(
            written,
            start,
            &message_id,
            spec.run_prefix.len(),
        ));
    }
    bytes.extend_from_slice(b"],\"sentAt\":\"");
    let sent_at_at = bytes.len();
    bytes.extend_from_slice(spec.timestamp.as_bytes());
    bytes.extend_from_slice(b"\"}");
    if bytes.len() > BATCH_BYTES_MAX {
        return Err(format!(
            "a batch of {} events of ~{} bytes is {} bytes, over the {BATCH_BYTES_MAX}-byte Segment limit",
            spec.batch_events,
            spec.event_bytes,
            bytes.len()
        ));
    }
    Ok(Template {
        bytes,
        events,
        sent_at_at,
    })
}

/// Finds the digits to patch in one serialised event that starts at `start` in its body.
fn locate_patches(event: &[u8], start: usize, message_id: &[u8], prefix_len: usize) -> EventPatch {
    let found = find_all(event, message_id);
    assert_eq!(
        found.len(),
        1,
        "the messageId placeholder appears exactly once"
    );
    let user_sentinel = USER_INDEX_MAX.to_string();
    let user_digits_at: Vec<usize> = find_all(event, user_sentinel.as_bytes())
        .into_iter()
        .map(|at| start + at)
        .collect();
    assert!(!user_digits_at.is_empty(), "every event names its user");
    EventPatch {
        request_digits_at: start + found[0] + prefix_len,
        user_digits_at,
    }
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(position) = haystack[at..]
        .windows(needle.len())
        .position(|window| window == needle)
    {
        found.push(at + position);
        at += position + needle.len();
    }
    found
}

fn push_message_id(out: &mut Vec<u8>, prefix: &str, request: u64, index: usize) {
    out.extend_from_slice(prefix.as_bytes());
    let mut request_digits = [0u8; REQUEST_DIGITS];
    write_digits(&mut request_digits, request);
    out.extend_from_slice(&request_digits);
    out.push(b'-');
    let mut index_digits = [0u8; EVENT_INDEX_DIGITS];
    write_digits(&mut index_digits, index as u64);
    out.extend_from_slice(&index_digits);
}

/// Writes the low `out.len()` decimal digits of `value`, zero-padded.
pub fn write_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn splitmix64(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::HashSet;

    fn spec(batch_events: usize, event_bytes: usize) -> PoolSpec {
        PoolSpec {
            batch_events,
            event_bytes,
            users: 1000,
            seed: 9,
            run_prefix: "abcdefghij-".into(),
            timestamp: "2024-06-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn bodies_are_valid_segment_batches() {
        let pool = BodyPool::build(&spec(100, 1000)).unwrap();
        let mut scratch = BytesMut::new();
        for request in 0..POOL_BODIES as u64 {
            let body = pool.render(request, "2025-01-02T03:04:05.678Z", &mut scratch);
            assert!(body.len() <= BATCH_BYTES_MAX);
            let parsed: Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(parsed["sentAt"], "2025-01-02T03:04:05.678Z");
            let batch = parsed["batch"].as_array().unwrap();
            assert_eq!(batch.len(), 100);
            for event in batch {
                let event_bytes = serde_json::to_vec(event).unwrap().len();
                assert!(event_bytes <= EVENT_BYTES_MAX);
                assert!(
                    event_bytes.abs_diff(1000) <= 100,
                    "event of {event_bytes} bytes"
                );
                let user = event["anonymousId"].as_str().unwrap();
                assert!(user.starts_with("anon-") && user[5..].parse::<u64>().unwrap() < 1000);
            }
        }
    }

    #[test]
    fn message_ids_are_unique_across_requests_and_match_the_ids_file() {
        let pool = BodyPool::build(&spec(50, 700)).unwrap();
        let mut scratch = BytesMut::new();
        let mut seen = HashSet::new();
        for request in (0..500u64).chain([9_999_999_998, 9_999_999_999]) {
            let body = pool.render(request, "2025-01-02T03:04:05.678Z", &mut scratch);
            let parsed: Value = serde_json::from_slice(&body).unwrap();
            let ids: Vec<String> = parsed["batch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| event["messageId"].as_str().unwrap().to_owned())
                .collect();
            let mut listed = Vec::new();
            pool.write_message_ids(request, &mut listed);
            assert_eq!(
                String::from_utf8(listed).unwrap(),
                ids.iter().map(|id| format!("{id}\n")).collect::<String>()
            );
            for id in ids {
                assert!(id.len() <= tandem_core::limits::MESSAGE_ID_CHARS_MAX);
                assert!(seen.insert(id), "duplicate messageId");
            }
        }
    }

    #[test]
    fn users_spread_over_the_requested_cardinality() {
        let pool = BodyPool::build(&PoolSpec {
            users: 50_000,
            ..spec(100, 700)
        })
        .unwrap();
        let mut scratch = BytesMut::new();
        let mut users = HashSet::new();
        for request in 0..200u64 {
            let parsed: Value = serde_json::from_slice(&pool.render(
                request,
                "2025-01-02T03:04:05.678Z",
                &mut scratch,
            ))
            .unwrap();
            for event in parsed["batch"].as_array().unwrap() {
                users.insert(event["anonymousId"].as_str().unwrap().to_owned());
                if let Some(user_id) = event["userId"].as_str() {
                    assert_eq!(
                        user_id[5..],
                        event["anonymousId"].as_str().unwrap()[5..],
                        "one user per event"
                    );
                }
            }
        }
        // 20,000 draws from 50,000 users: about 16,500 distinct, far more than the pool's 6,400 events.
        assert!(users.len() > 10_000, "{} distinct users", users.len());
    }

    #[test]
    fn render_reuses_the_scratch_allocation() {
        let pool = BodyPool::build(&spec(10, 700)).unwrap();
        let mut scratch = BytesMut::new();
        let first = pool.render(0, "2025-01-02T03:04:05.678Z", &mut scratch);
        let first_address = first.as_ptr();
        drop(first);
        let second = pool.render(0, "2025-01-02T03:04:05.678Z", &mut scratch);
        assert_eq!(second.as_ptr(), first_address);
    }

    #[test]
    fn limits_are_enforced() {
        assert!(BodyPool::build(&spec(2501, 700)).is_err());
        assert!(BodyPool::build(&spec(0, 700)).is_err());
        assert!(
            BodyPool::build(&spec(1000, 1000)).is_err(),
            "1 MB batch is over 500 KB"
        );
        let pool = BodyPool::build(&spec(500, 900)).unwrap();
        assert!(pool
            .templates
            .iter()
            .all(|template| template.bytes.len() <= BATCH_BYTES_MAX));
    }
}
