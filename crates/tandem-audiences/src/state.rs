//! The rows audiences keep in the unify store (`Table::Audiences`, keys led by a sub-table
//! byte), so that memberships, the outbox and the bookkeeping commit with the batch that
//! changed them:
//!
//! | sub-table | key | value |
//! |---|---|---|
//! | members | audience id, 0xFF, profile id | [`MemberRow`] |
//! | profile | profile id | [`ProfileAudiences`]: its memberships, sorted |
//! | outbox | sequence number | [`OutboxEntry`]: an `Audience Entered`/`Exited` to append to the log |
//! | meta | name | the sequence, the [`StoreState`] (what memberships reflect, the job) |
//! | sizes | audience id | member count |

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tandem_core::time_util::format_iso8601_ms;
use tandem_unify::kv::{KvError, KvRead, KvResult, KvWrite, Table};
use tandem_unify::model::{format_profile_id, ProfileId, ProfileRow};

const MEMBERS: u8 = 1;
const PROFILE: u8 = 2;
const OUTBOX: u8 = 3;
const META: u8 = 4;
const SIZES: u8 = 5;

const NEXT_SEQUENCE: &[u8] = b"next_sequence";
const STATE: &[u8] = b"state";

fn key(sub: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![sub];
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

fn member_key(audience: &str, profile: ProfileId) -> Vec<u8> {
    key(
        MEMBERS,
        &[audience.as_bytes(), &[0xff], &profile.to_be_bytes()],
    )
}

fn members_prefix(audience: &str) -> Vec<u8> {
    key(MEMBERS, &[audience.as_bytes(), &[0xff]])
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("audience rows serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> KvResult<T> {
    postcard::from_bytes(bytes).map_err(|error| KvError::Corrupt {
        table: Table::Audiences,
        message: error.to_string(),
    })
}

fn get<T: for<'de> Deserialize<'de>>(
    kv: &(impl KvRead + ?Sized),
    key: &[u8],
) -> KvResult<Option<T>> {
    kv.get(Table::Audiences, key)?
        .map(|bytes| decode(&bytes))
        .transpose()
}

/// One profile in one audience.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub entered_at_ms: i64,
}

/// The audiences one profile is in (by id, sorted), with when it entered each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileAudiences {
    pub memberships: Vec<(String, i64)>,
}

impl ProfileAudiences {
    pub fn contains(&self, audience: &str) -> bool {
        self.entered_at(audience).is_some()
    }

    pub fn entered_at(&self, audience: &str) -> Option<i64> {
        self.memberships
            .binary_search_by(|(id, _)| id.as_str().cmp(audience))
            .ok()
            .map(|at| self.memberships[at].1)
    }

    fn insert(&mut self, audience: &str, at_ms: i64) {
        if let Err(at) = self
            .memberships
            .binary_search_by(|(id, _)| id.as_str().cmp(audience))
        {
            self.memberships.insert(at, (audience.to_string(), at_ms));
        }
    }

    fn remove(&mut self, audience: &str) {
        self.memberships.retain(|(id, _)| id != audience);
    }
}

/// Why a membership changed (carried by the event as `context.audience.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// An event (or a trait it set) changed the profile.
    Event,
    /// Profiles merged into this one.
    Merge,
    /// A window's edge passed.
    Window,
    /// A new or changed definition was evaluated over existing profiles.
    Backfill,
    /// The audience was deleted.
    Deleted,
    /// The profile was split (or merged away and no longer exists).
    Split,
    /// Profiles were rebuilt from the log and the memberships reconciled.
    Rebuild,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Event => "event",
            Reason::Merge => "merge",
            Reason::Window => "window",
            Reason::Backfill => "backfill",
            Reason::Deleted => "deleted",
            Reason::Split => "split",
            Reason::Rebuild => "rebuild",
        }
    }
}

/// A membership change waiting to be appended to the log as an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub sequence: u64,
    pub audience: String,
    pub audience_name: String,
    pub entered: bool,
    pub profile: ProfileId,
    pub at_ms: i64,
    pub reason: Reason,
    /// Profiles merged into `profile` whose membership it continues (entered) or that left
    /// with it (exited).
    pub merged: Vec<ProfileId>,
    /// The profile's identifiers when it changed: (type, value), user id and anonymous id first.
    pub identities: Vec<(String, String)>,
}

impl OutboxEntry {
    /// The event's messageId: a digest of the entry, so appending it again after a crash gives
    /// the same id (and the log's dedup drops it).
    pub fn message_id(&self) -> String {
        let text = format!(
            "{}|{}|{}|{}|{}",
            self.sequence, self.audience, self.profile, self.entered, self.at_ms
        );
        format!("aud-{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
    }

    pub fn event_name(&self) -> &'static str {
        if self.entered {
            "Audience Entered"
        } else {
            "Audience Exited"
        }
    }

    fn first(&self, kind: &str) -> Option<&str> {
        self.identities
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| v.as_str())
    }

    /// The event as stored in the log: a Segment track call, like the `Audience Entered` and
    /// `Audience Exited` events of Segment's Engage (`properties.audience_key` and a boolean
    /// property named after the audience), with every identifier in `context.externalIds`.
    pub fn event_json(&self, workspace: &str, received_at_ms: i64) -> Value {
        let mut properties = serde_json::Map::new();
        properties.insert("audience_key".into(), json!(self.audience));
        properties.insert("audience_name".into(), json!(self.audience_name));
        properties.insert(self.audience.clone(), json!(self.entered));
        properties.insert("profile_id".into(), json!(format_profile_id(self.profile)));
        let external: Vec<Value> = self
            .identities
            .iter()
            .map(|(kind, id)| json!({"type": kind, "id": id, "collection": "users", "encoding": "none"}))
            .collect();
        let mut event = json!({
            "type": "track",
            "event": self.event_name(),
            "messageId": self.message_id(),
            "timestamp": format_iso8601_ms(self.at_ms),
            "originalTimestamp": format_iso8601_ms(self.at_ms),
            "receivedAt": format_iso8601_ms(received_at_ms),
            "properties": properties,
            "context": {
                "library": {"name": "tandem-audiences", "version": env!("CARGO_PKG_VERSION")},
                "externalIds": external,
                "audience": {
                    "id": self.audience,
                    "name": self.audience_name,
                    "workspace": workspace,
                    "profile_id": format_profile_id(self.profile),
                    "reason": self.reason.as_str(),
                    "merged_profile_ids": self.merged.iter().map(|p| format_profile_id(*p)).collect::<Vec<_>>(),
                    "sequence": self.sequence,
                },
            },
        });
        if let Some(user_id) = self.first("user_id") {
            event["userId"] = json!(user_id);
        }
        if let Some(anonymous_id) = self.first("anonymous_id") {
            event["anonymousId"] = json!(anonymous_id);
        }
        if event.get("userId").is_none() && event.get("anonymousId").is_none() {
            // Segment requires one of them; the profile id is always there.
            event["anonymousId"] = json!(format_profile_id(self.profile));
        }
        event
    }
}

/// What the memberships reflect and the job making them catch up, kept in `meta`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreState {
    /// (audience id, fingerprint) of every audience whose memberships are complete.
    pub active: Vec<(String, String)>,
    /// Hidden counters counted over every profile's whole history.
    pub complete_counters: Vec<String>,
    pub job: Option<Job>,
}

/// A pass over every profile: re-evaluates audiences, recomputes counters from history,
/// removes deleted audiences' members, sweeps memberships of profiles that no longer exist.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    /// Audiences to evaluate over every profile.
    pub audiences: Vec<String>,
    /// Counters to recompute from each profile's timeline (and the log for property filters).
    pub counters: Vec<String>,
    /// Counters no audience uses any more: their rows are deleted as profiles pass.
    pub retired_counters: Vec<String>,
    /// Deleted audiences (id, name) whose members exit first.
    pub removed: Vec<(String, String)>,
    /// Also exit memberships of profiles that no longer exist (after a rebuild).
    pub sweep_orphans: bool,
    /// The last profile evaluated (profiles are visited in id order).
    pub cursor: Option<ProfileId>,
    /// The last profile whose membership row the orphan sweep checked.
    pub orphan_cursor: Option<ProfileId>,
    pub started_at_ms: i64,
    pub profiles_done: u64,
    pub entered: u64,
    pub exited: u64,
    /// Why it runs (`created audience x`, `start`, `rebuild`), for the API.
    pub reason: String,
}

impl Job {
    /// The share of profiles visited: ids are uniform hashes, so the cursor's place in the id
    /// space is the fraction done.
    pub fn progress(&self) -> f64 {
        if !self.removed.is_empty() {
            return 0.0;
        }
        match self.cursor {
            None => 0.0,
            Some(cursor) => cursor as f64 / u64::MAX as f64,
        }
    }

    /// Whether real-time evaluation may already use the job's audiences and counters for
    /// `profile` (the job has been past it).
    pub fn covers(&self, profile: ProfileId) -> bool {
        self.removed.is_empty() && self.cursor.is_some_and(|cursor| profile <= cursor)
    }
}

pub fn state(kv: &(impl KvRead + ?Sized)) -> KvResult<StoreState> {
    Ok(get::<Vec<u8>>(kv, &key(META, &[STATE]))?
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default())
}

pub fn put_state(kv: &mut (impl KvWrite + ?Sized), state: &StoreState) -> KvResult<()> {
    let json = serde_json::to_vec(state).expect("state serializes");
    kv.put(Table::Audiences, &key(META, &[STATE]), &encode(&json))
}

pub fn profile_audiences(
    kv: &(impl KvRead + ?Sized),
    profile: ProfileId,
) -> KvResult<ProfileAudiences> {
    Ok(get(kv, &key(PROFILE, &[&profile.to_be_bytes()]))?.unwrap_or_default())
}

fn put_profile_audiences(
    kv: &mut (impl KvWrite + ?Sized),
    profile: ProfileId,
    row: &ProfileAudiences,
) -> KvResult<()> {
    let key = key(PROFILE, &[&profile.to_be_bytes()]);
    if row.memberships.is_empty() {
        kv.delete(Table::Audiences, &key)
    } else {
        kv.put(Table::Audiences, &key, &encode(row))
    }
}

/// Profiles with membership rows after `after`, up to `limit`, in id order.
pub fn profiles_with_memberships(
    kv: &(impl KvRead + ?Sized),
    after: Option<ProfileId>,
    limit: usize,
) -> KvResult<Vec<(ProfileId, ProfileAudiences)>> {
    let after_key = after.map(|p| key(PROFILE, &[&p.to_be_bytes()]));
    kv.scan(
        Table::Audiences,
        &[PROFILE],
        after_key.as_deref(),
        false,
        limit,
    )?
    .into_iter()
    .filter_map(|(k, v)| Some((u64::from_be_bytes(k.get(1..9)?.try_into().ok()?), v)))
    .map(|(profile, value)| Ok((profile, decode(&value)?)))
    .collect()
}

/// A page of an audience's members (profile id, entered at), in profile id order.
pub fn members(
    kv: &(impl KvRead + ?Sized),
    audience: &str,
    after: Option<ProfileId>,
    limit: usize,
) -> KvResult<Vec<(ProfileId, i64)>> {
    let prefix = members_prefix(audience);
    let after_key = after.map(|p| member_key(audience, p));
    kv.scan(
        Table::Audiences,
        &prefix,
        after_key.as_deref(),
        false,
        limit,
    )?
    .into_iter()
    .map(|(k, v)| {
        let id = k
            .get(prefix.len()..)
            .and_then(|tail| tail.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| KvError::Corrupt {
                table: Table::Audiences,
                message: "member key".into(),
            })?;
        Ok((id, decode::<MemberRow>(&v)?.entered_at_ms))
    })
    .collect()
}

/// The member count of an audience.
pub fn size(kv: &(impl KvRead + ?Sized), audience: &str) -> KvResult<u64> {
    Ok(get(kv, &key(SIZES, &[audience.as_bytes()]))?.unwrap_or(0))
}

fn add_size(kv: &mut (impl KvWrite + ?Sized), audience: &str, delta: i64) -> KvResult<()> {
    let key = key(SIZES, &[audience.as_bytes()]);
    let current: u64 = get(kv, &key)?.unwrap_or(0);
    let next = (current as i64 + delta).max(0) as u64;
    if next == 0 {
        kv.delete(Table::Audiences, &key)
    } else {
        kv.put(Table::Audiences, &key, &encode(&next))
    }
}

/// Outbox entries from the oldest, up to `limit`.
pub fn outbox(kv: &(impl KvRead + ?Sized), limit: usize) -> KvResult<Vec<OutboxEntry>> {
    kv.scan(Table::Audiences, &[OUTBOX], None, false, limit)?
        .into_iter()
        .map(|(_, value)| decode(&value))
        .collect()
}

/// Removes outbox entries up to and including `sequence` (they are in the log).
pub fn trim_outbox(kv: &mut (impl KvWrite + ?Sized), through: u64) -> KvResult<usize> {
    let mut removed = 0;
    loop {
        let rows = kv.scan(Table::Audiences, &[OUTBOX], None, false, 1024)?;
        let mut more = !rows.is_empty();
        for (k, _) in &rows {
            let sequence = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
            if sequence > through {
                more = false;
                break;
            }
            kv.delete(Table::Audiences, k)?;
            removed += 1;
        }
        if !more || rows.len() < 1024 {
            return Ok(removed);
        }
    }
}

/// Identifiers of a profile for its events: user ids, then anonymous ids, then the rest.
pub fn identities_of(profile: &ProfileRow, limit: usize) -> Vec<(String, String)> {
    let rank = |kind: &str| match kind {
        "user_id" => 0,
        "anonymous_id" => 1,
        _ => 2,
    };
    let mut identities: Vec<(&str, &str, i64)> = profile
        .identities
        .iter()
        .map(|(identity, seen)| {
            (
                identity.kind.as_str(),
                identity.value.as_str(),
                seen.time_ms,
            )
        })
        .collect();
    // Within a type, the most recently seen first (the anonymous id of the current device).
    identities.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then(b.2.cmp(&a.2)));
    identities
        .into_iter()
        .take(limit)
        .map(|(kind, value, _)| (kind.to_string(), value.to_string()))
        .collect()
}

/// Writes membership changes: member rows, sizes, the profile's row, and outbox entries.
pub struct Writer<'a, K: KvWrite + ?Sized> {
    pub kv: &'a mut K,
    next_sequence: u64,
    pub written: Vec<OutboxEntry>,
}

impl<'a, K: KvWrite + ?Sized> Writer<'a, K> {
    pub fn new(kv: &'a mut K) -> KvResult<Writer<'a, K>> {
        let next_sequence = get(&*kv, &key(META, &[NEXT_SEQUENCE]))?.unwrap_or(1);
        Ok(Writer {
            kv,
            next_sequence,
            written: Vec::new(),
        })
    }

    /// Records the change (`entered`) of `profile` in `audience` and its outbox entry.
    #[allow(clippy::too_many_arguments)]
    pub fn change(
        &mut self,
        row: &mut ProfileAudiences,
        profile: ProfileId,
        audience: (&str, &str),
        entered: bool,
        at_ms: i64,
        reason: Reason,
        merged: Vec<ProfileId>,
        identities: Vec<(String, String)>,
    ) -> KvResult<()> {
        let (id, _) = audience;
        if entered {
            row.insert(id, at_ms);
            self.kv.put(
                Table::Audiences,
                &member_key(id, profile),
                &encode(&MemberRow {
                    entered_at_ms: at_ms,
                }),
            )?;
            add_size(self.kv, id, 1)?;
        } else {
            row.remove(id);
            self.kv.delete(Table::Audiences, &member_key(id, profile))?;
            add_size(self.kv, id, -1)?;
        }
        self.announce(
            profile, audience, entered, at_ms, reason, merged, identities,
        )
    }

    /// Writes the outbox entry of a change whose rows are already as they should be.
    #[allow(clippy::too_many_arguments)]
    pub fn announce(
        &mut self,
        profile: ProfileId,
        audience: (&str, &str),
        entered: bool,
        at_ms: i64,
        reason: Reason,
        merged: Vec<ProfileId>,
        identities: Vec<(String, String)>,
    ) -> KvResult<()> {
        let (id, name) = audience;
        let entry = OutboxEntry {
            sequence: self.next_sequence,
            audience: id.to_string(),
            audience_name: name.to_string(),
            entered,
            profile,
            at_ms,
            reason,
            merged,
            identities,
        };
        self.next_sequence += 1;
        self.kv.put(
            Table::Audiences,
            &key(OUTBOX, &[&entry.sequence.to_be_bytes()]),
            &encode(&entry),
        )?;
        self.written.push(entry);
        Ok(())
    }

    /// Drops a membership without an event (it continues in another profile).
    pub fn forget(
        &mut self,
        row: &mut ProfileAudiences,
        profile: ProfileId,
        audience: &str,
    ) -> KvResult<()> {
        row.remove(audience);
        self.kv
            .delete(Table::Audiences, &member_key(audience, profile))?;
        add_size(self.kv, audience, -1)
    }

    pub fn save_profile(&mut self, profile: ProfileId, row: &ProfileAudiences) -> KvResult<()> {
        put_profile_audiences(self.kv, profile, row)
    }

    /// Stores the next sequence number; call once at the end.
    pub fn finish(self) -> KvResult<Vec<OutboxEntry>> {
        self.kv.put(
            Table::Audiences,
            &key(META, &[NEXT_SEQUENCE]),
            &encode(&self.next_sequence),
        )?;
        Ok(self.written)
    }
}

/// Removes every audience row of an erased profile — its memberships (sizes follow) and its
/// pending outbox entries — without announcing anything. Returns the memberships removed.
pub fn erase_profile(kv: &mut (impl KvWrite + ?Sized), profile: ProfileId) -> KvResult<u64> {
    let row = profile_audiences(&*kv, profile)?;
    for (audience, _) in &row.memberships {
        kv.delete(Table::Audiences, &member_key(audience, profile))?;
        add_size(kv, audience, -1)?;
    }
    kv.delete(Table::Audiences, &key(PROFILE, &[&profile.to_be_bytes()]))?;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = kv.scan(Table::Audiences, &[OUTBOX], after.as_deref(), false, 1024)?;
        let full = rows.len() == 1024;
        after = rows.last().map(|(k, _)| k.clone());
        for (k, v) in &rows {
            if decode::<OutboxEntry>(v)?.profile == profile {
                kv.delete(Table::Audiences, k)?;
            }
        }
        if !full {
            return Ok(row.memberships.len() as u64);
        }
    }
}

/// Marks memberships as needing reconciliation after the profiles were rebuilt offline (`tandem
/// rebuild`) with `counted` hidden counters: the next plan evaluates every audience again,
/// sweeps memberships of profiles that no longer exist, and trusts only those counters.
pub fn mark_rebuilt(kv: &mut (impl KvWrite + ?Sized), counted: &[String]) -> KvResult<()> {
    let mut state = state(&*kv)?;
    state.active.clear();
    state.complete_counters = counted.to_vec();
    let mut job = state.job.take().unwrap_or_default();
    job.counters.retain(|name| !counted.contains(name));
    job.sweep_orphans = true;
    job.reason = "profiles rebuilt".into();
    state.job = Some(job);
    put_state(kv, &state)
}

/// Copies every audience row of `from` into `to` (a store rebuilt from the log takes over the
/// memberships, the outbox and its sequence, so nothing announced is announced again).
pub fn carry_over(
    from: &(impl KvRead + ?Sized),
    to: &mut (impl KvWrite + ?Sized),
) -> KvResult<u64> {
    let mut after: Option<Vec<u8>> = None;
    let mut copied = 0;
    loop {
        let rows = from.scan(Table::Audiences, &[], after.as_deref(), false, 4096)?;
        let Some((last, _)) = rows.last() else {
            return Ok(copied);
        };
        after = Some(last.clone());
        for (k, v) in &rows {
            to.put(Table::Audiences, k, v)?;
            copied += 1;
        }
    }
}
