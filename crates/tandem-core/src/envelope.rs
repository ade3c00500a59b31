//! The envelope in which a collected event is stored as one log record.
//!
//! A small binary header lets every later stage (unify, activate, govern, the archive) route and
//! filter without parsing JSON; the body is the enriched event exactly as Segment's spec shapes it.
//!
//! ```text
//! offset size  field
//! 0      1     format version (1)
//! 1      1     event type code (EventType as u8)
//! 2      8     dedup key: xxh3-64 of (source id, 0x00, messageId), little endian
//! 10     8     event time in ms since the Unix epoch (the corrected `timestamp`), little endian i64
//! 18     1     source id length n (1..=64)
//! 19     n     source id, UTF-8
//! 19+n   ..    the enriched event, UTF-8 JSON object
//! ```
//! The log record around it carries its offset, `receivedAt` and a CRC.

use serde::{Deserialize, Serialize};

/// Version byte of the envelope format written today.
pub const ENVELOPE_VERSION: u8 = 1;
/// Longest source id an envelope can carry.
pub const SOURCE_ID_BYTES_MAX: usize = 64;
const HEADER_FIXED_BYTES: usize = 19;

/// The six Segment call types, and `Control`: a record tandem itself writes into a workspace log
/// (an admin's profile split, later erasure and suppression requests) so every consumer sees it
/// at the same position in the stream, and a replay from zero reproduces its effect in order.
/// Collect never produces `Control`; only the six Segment types are in [`EventType::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Track = 1,
    Identify = 2,
    Page = 3,
    Screen = 4,
    Group = 5,
    Alias = 6,
    Control = 7,
}

impl EventType {
    /// The Segment call types (what clients may send).
    pub const ALL: [EventType; 6] = [
        EventType::Track,
        EventType::Identify,
        EventType::Page,
        EventType::Screen,
        EventType::Group,
        EventType::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Track => "track",
            EventType::Identify => "identify",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
            EventType::Alias => "alias",
            EventType::Control => "control",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    fn from_code(code: u8) -> Option<EventType> {
        if code == EventType::Control as u8 {
            return Some(EventType::Control);
        }
        EventType::ALL.into_iter().find(|t| *t as u8 == code)
    }
}

/// A decoded envelope borrowing the record's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope<'a> {
    pub event_type: EventType,
    pub dedup_key: u64,
    pub event_time_ms: i64,
    pub source_id: &'a str,
    pub json: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("envelope shorter than its header")]
    Truncated,
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    #[error("unknown event type code {0}")]
    UnknownEventType(u8),
    #[error("source id is not UTF-8 or is too long")]
    BadSourceId,
}

/// The source id of the events tandem itself writes into a workspace log for its audiences
/// (`Audience Entered`, `Audience Exited`): a built-in source of every workspace, which
/// connections may name (and `"*"` includes) like any other.
pub const AUDIENCES_SOURCE_ID: &str = "tandem-audiences";

/// The source id of the events tandem writes on a person's behalf through the privacy API
/// (`Consent Preference Updated` recorded by a privacy officer): built in like the audiences'.
pub const PRIVACY_SOURCE_ID: &str = "tandem-privacy";

/// The sources every workspace has without declaring them.
pub const BUILT_IN_SOURCE_IDS: &[&str] = &[AUDIENCES_SOURCE_ID, PRIVACY_SOURCE_ID];

/// The dedup key of a (source, messageId) pair.
pub fn dedup_key(source_id: &str, message_id: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(source_id.as_bytes());
    hasher.update(&[0]);
    hasher.update(message_id.as_bytes());
    hasher.digest()
}

impl<'a> EventEnvelope<'a> {
    /// Appends the encoded envelope to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            !self.source_id.is_empty() && self.source_id.len() <= SOURCE_ID_BYTES_MAX,
            "source id length"
        );
        out.reserve(HEADER_FIXED_BYTES + self.source_id.len() + self.json.len());
        out.push(ENVELOPE_VERSION);
        out.push(self.event_type as u8);
        out.extend_from_slice(&self.dedup_key.to_le_bytes());
        out.extend_from_slice(&self.event_time_ms.to_le_bytes());
        out.push(self.source_id.len() as u8);
        out.extend_from_slice(self.source_id.as_bytes());
        out.extend_from_slice(self.json);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes an envelope; the JSON body is not parsed here.
    pub fn decode(bytes: &'a [u8]) -> Result<EventEnvelope<'a>, EnvelopeError> {
        if bytes.len() < HEADER_FIXED_BYTES {
            return Err(EnvelopeError::Truncated);
        }
        if bytes[0] != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnknownVersion(bytes[0]));
        }
        let event_type =
            EventType::from_code(bytes[1]).ok_or(EnvelopeError::UnknownEventType(bytes[1]))?;
        let dedup_key = u64::from_le_bytes(bytes[2..10].try_into().expect("8 bytes"));
        let event_time_ms = i64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes"));
        let source_len = bytes[18] as usize;
        if source_len == 0 || source_len > SOURCE_ID_BYTES_MAX {
            return Err(EnvelopeError::BadSourceId);
        }
        let source_end = HEADER_FIXED_BYTES + source_len;
        if bytes.len() < source_end {
            return Err(EnvelopeError::Truncated);
        }
        let source_id = std::str::from_utf8(&bytes[HEADER_FIXED_BYTES..source_end])
            .map_err(|_| EnvelopeError::BadSourceId)?;
        Ok(EventEnvelope {
            event_type,
            dedup_key,
            event_time_ms,
            source_id,
            json: &bytes[source_end..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            type_index in 0usize..6, key: u64, time: i64,
            source in "[a-z0-9_]{1,64}", json in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            let envelope = EventEnvelope { event_type: EventType::ALL[type_index], dedup_key: key, event_time_ms: time, source_id: &source, json: &json };
            let bytes = envelope.encode();
            prop_assert_eq!(EventEnvelope::decode(&bytes).unwrap(), envelope);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = EventEnvelope::decode(&bytes);
        }
    }

    #[test]
    fn dedup_key_separates_source_and_message() {
        assert_ne!(dedup_key("ab", "c"), dedup_key("a", "bc"));
        assert_eq!(dedup_key("src", "m1"), dedup_key("src", "m1"));
    }
}
