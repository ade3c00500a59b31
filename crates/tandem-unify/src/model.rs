//! The rows of the unify state and their encoding (postcard; JSON values kept as JSON text).

use crate::identity::Identity;
use crate::kv::{KvError, KvRead, KvResult, KvWrite, Table};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;

/// A profile id: deterministic (a hash of the offset and identity that created the profile), so
/// a replay of the same log gives the same ids. Shown as `prof_` and 16 hex digits.
pub type ProfileId = u64;

pub fn format_profile_id(id: ProfileId) -> String {
    format!("prof_{id:016x}")
}

pub fn parse_profile_id(text: &str) -> Option<ProfileId> {
    let hex = text.strip_prefix("prof_")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

/// Where a fact came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub source: String,
    pub message_id: String,
    /// The event's corrected timestamp, ms.
    pub time_ms: i64,
    /// Its log offset (breaks ties between equal timestamps: the later record wins).
    pub offset: u64,
}

impl Provenance {
    /// Last-write-wins order: later event time, then later offset.
    pub fn is_newer_than(&self, other: &Provenance) -> bool {
        (self.time_ms, self.offset) > (other.time_ms, other.offset)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRow {
    pub profile: ProfileId,
    pub first_seen: Provenance,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraitRow {
    /// The value as JSON text.
    pub json: String,
    pub provenance: Provenance,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRow {
    pub id: ProfileId,
    /// The event that created it.
    pub created: Provenance,
    pub first_message_ms: i64,
    pub last_message_ms: i64,
    pub last_source: String,
    pub last_message_id: String,
    pub event_count: u64,
    /// With the provenance of their first sighting; sorted by (type, value).
    pub identities: Vec<(Identity, Provenance)>,
    pub traits: BTreeMap<String, TraitRow>,
    /// Group ids of the accounts this profile belongs to, sorted.
    pub groups: Vec<String>,
    /// The sides of admin splits its identities are on (see `SplitSide`).
    pub splits: Vec<SplitSide>,
    /// How many profiles were merged into this one.
    pub merges: u64,
    /// Computed traits as of their last update: name → value as JSON text.
    pub computed: BTreeMap<String, String>,
}

impl ProfileRow {
    pub fn has_identity(&self, identity: &Identity) -> bool {
        self.identities.iter().any(|(known, _)| known == identity)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineRow {
    pub offset: u64,
    pub event_type: String,
    /// `event` of a track call, `name` of a page or screen call.
    pub name: Option<String>,
    pub source: String,
    pub message_id: String,
}

/// Why two identities are linked: the event that brought them together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRow {
    pub provenance: Provenance,
    pub event_type: String,
    /// What the link did: `"created profile"`, `"added identifier"`, `"merged profiles"`.
    pub rule: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRow {
    pub survivor: ProfileId,
    pub absorbed: ProfileId,
    pub provenance: Provenance,
    pub event_type: String,
    /// The identifiers of the event that were in each profile.
    pub through: Vec<Identity>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalRow {
    pub provenance: Provenance,
    pub dropped: Identity,
    /// The rule that would have broken: e.g. `limit user_id: 1`.
    pub rule: String,
    /// The profiles the event would have merged.
    pub profiles: Vec<ProfileId>,
}

/// An identity's membership in one side of an admin split: profiles may not hold identities from
/// both sides of the same split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SplitSide {
    pub split: u64,
    pub side: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRow {
    pub id: u64,
    pub profile: ProfileId,
    /// The identities separated from the rest, and the rest.
    pub separated: Vec<Identity>,
    pub rest: Vec<Identity>,
    pub requested_by: String,
    pub reason: String,
    pub at_ms: i64,
    /// The profiles the events were re-resolved into.
    pub result: Vec<ProfileId>,
    /// Events re-applied.
    pub events: u64,
}

/// A person's consent preferences as one event stated them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRow {
    /// category → granted, as `context.consent.categoryPreferences` said.
    pub preferences: std::collections::BTreeMap<String, bool>,
    pub provenance: Provenance,
    pub event_type: String,
    /// `event` of a track call (`Consent Preference Updated` for a change of mind).
    pub event: Option<String>,
}

pub fn consent_key(profile: ProfileId, time_ms: i64, dedup_key: u64) -> Vec<u8> {
    timeline_key(profile, time_ms, dedup_key)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRow {
    pub group_id: String,
    pub created: Option<Provenance>,
    pub last_message_ms: i64,
    pub traits: BTreeMap<String, TraitRow>,
    /// Other identifiers of the account (account-collection `context.externalIds`).
    pub identities: Vec<(Identity, Provenance)>,
    pub members: u64,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("unify rows always serialize")
}

pub fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> KvResult<T> {
    postcard::from_bytes(bytes).map_err(|error| KvError::Corrupt {
        table,
        message: error.to_string(),
    })
}

pub fn get<T: DeserializeOwned>(kv: &impl KvRead, table: Table, key: &[u8]) -> KvResult<Option<T>> {
    kv.get(table, key)?
        .map(|bytes| decode(table, &bytes))
        .transpose()
}

pub fn put<T: Serialize>(
    kv: &mut impl KvWrite,
    table: Table,
    key: &[u8],
    value: &T,
) -> KvResult<()> {
    kv.put(table, key, &encode(value))
}

/// Event times as sortable bytes (i64 with the sign bit flipped, big endian).
pub fn time_key(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn timeline_key(profile: ProfileId, time_ms: i64, dedup_key: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&profile.to_be_bytes());
    key.extend_from_slice(&time_key(time_ms));
    key.extend_from_slice(&dedup_key.to_be_bytes());
    key
}

pub fn link_key(a: &Identity, b: &Identity) -> Vec<u8> {
    let mut key = a.key();
    key.push(0xff);
    key.extend_from_slice(&b.key());
    key
}

pub fn link_prefix(a: &Identity) -> Vec<u8> {
    let mut key = a.key();
    key.push(0xff);
    key
}

pub fn member_key(group_id: &str, profile: ProfileId) -> Vec<u8> {
    let mut key = group_id.as_bytes().to_vec();
    key.push(0xff);
    key.extend_from_slice(&profile.to_be_bytes());
    key
}

pub fn merge_key(survivor: ProfileId, offset: u64, absorbed: ProfileId) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&survivor.to_be_bytes());
    key.extend_from_slice(&offset.to_be_bytes());
    key.extend_from_slice(&absorbed.to_be_bytes());
    key
}

pub fn computed_key(profile: ProfileId, name: &str) -> Vec<u8> {
    let mut key = profile.to_be_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn expiry_key(expires_ms: i64, profile: ProfileId, name: &str) -> Vec<u8> {
    let mut key = time_key(expires_ms).to_vec();
    key.extend_from_slice(&profile.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_ids_round_trip() {
        for id in [0, 1, u64::MAX, 0x1234_5678_9abc_def0] {
            assert_eq!(parse_profile_id(&format_profile_id(id)), Some(id));
        }
        assert_eq!(parse_profile_id("prof_xyz"), None);
        assert_eq!(parse_profile_id("user_0000000000000001"), None);
    }

    #[test]
    fn time_keys_sort_like_times() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for pair in times.windows(2) {
            assert!(time_key(pair[0]) < time_key(pair[1]));
        }
    }
}
