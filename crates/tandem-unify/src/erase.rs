//! Erasure of a person (a data-subject request): every row of the unify state that belongs to
//! or names a profile — the profile, its identities and their links, timeline, consent history,
//! computed traits and their window entries, merges and the redirects they left, memberships of
//! accounts, refusals and splits naming its identifiers, the events it applied (`Seen`).
//!
//! Called when unify reaches an `erase` control record, so it is ordered with the events: the
//! person's events all lie before the record (collect suppressed their identifiers first), and a
//! replay of the same log erases at the same point. The log rewrite that follows replaces those
//! events by tombstones, after which a replay from zero never creates the profile at all.

use crate::identity::Identity;
use crate::kv::{KvRead, KvResult, KvWrite, Table};
use crate::model::{self, *};
use crate::query;
use std::collections::BTreeSet;

/// What one erasure removed, by kind (counts only: the report must not name the person).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasedRows {
    pub profiles: u64,
    pub identities: u64,
    pub links: u64,
    pub timeline: u64,
    pub consent: u64,
    pub computed: u64,
    pub merges: u64,
    pub redirects: u64,
    pub memberships: u64,
    pub refusals: u64,
    pub splits: u64,
}

impl ErasedRows {
    pub fn add(&mut self, other: &ErasedRows) {
        self.profiles += other.profiles;
        self.identities += other.identities;
        self.links += other.links;
        self.timeline += other.timeline;
        self.consent += other.consent;
        self.computed += other.computed;
        self.merges += other.merges;
        self.redirects += other.redirects;
        self.memberships += other.memberships;
        self.refusals += other.refusals;
        self.splits += other.splits;
    }

    pub fn total(&self) -> u64 {
        self.profiles
            + self.identities
            + self.links
            + self.timeline
            + self.consent
            + self.computed
            + self.merges
            + self.redirects
            + self.memberships
            + self.refusals
            + self.splits
    }
}

/// Rows read per scan while erasing.
const ERASE_SCAN_ROWS: usize = 4096;

/// Every key of `table` under `prefix`.
fn keys_under(kv: &impl KvRead, table: Table, prefix: &[u8]) -> KvResult<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = kv.scan(table, prefix, after.as_deref(), false, ERASE_SCAN_ROWS)?;
        let full = rows.len() == ERASE_SCAN_ROWS;
        after = rows.last().map(|(key, _)| key.clone());
        keys.extend(rows.into_iter().map(|(key, _)| key));
        if !full {
            return Ok(keys);
        }
    }
}

/// Every (key, value) of `table`, for the small tables erasure must filter by content.
fn rows_of(kv: &impl KvRead, table: Table, prefix: &[u8]) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = kv.scan(table, prefix, after.as_deref(), false, ERASE_SCAN_ROWS)?;
        let full = rows.len() == ERASE_SCAN_ROWS;
        after = rows.last().map(|(key, _)| key.clone());
        out.extend(rows);
        if !full {
            return Ok(out);
        }
    }
}

fn delete_all(kv: &mut impl KvWrite, table: Table, keys: &[Vec<u8>]) -> KvResult<u64> {
    for key in keys {
        kv.delete(table, key)?;
    }
    Ok(keys.len() as u64)
}

/// Erases the profile `id` (following merge redirects) and everything naming it. Returns what
/// was removed and the profile id it erased (none if no such profile exists any more).
pub fn erase_profile(
    kv: &mut impl KvWrite,
    id: ProfileId,
) -> KvResult<(ErasedRows, Option<ProfileId>)> {
    let mut erased = ErasedRows::default();
    let Some(profile) = query::resolve_profile(kv, id)? else {
        return Ok((erased, None));
    };
    let pid = profile.id;
    let identities: BTreeSet<Identity> = profile
        .identities
        .iter()
        .map(|(identity, _)| identity.clone())
        .collect();
    for identity in &identities {
        let key = identity.key();
        if kv.get(Table::Identities, &key)?.is_some() {
            kv.delete(Table::Identities, &key)?;
            erased.identities += 1;
        }
        kv.delete(Table::Separations, &key)?;
        for link in keys_under(kv, Table::Links, &link_prefix(identity))? {
            let other = &link[key.len() + 1..];
            let mut reverse = other.to_vec();
            reverse.push(0xff);
            reverse.extend_from_slice(&key);
            kv.delete(Table::Links, &reverse)?;
            kv.delete(Table::Links, &link)?;
            erased.links += 1;
        }
    }
    let own = pid.to_be_bytes();
    // Profiles merged (directly or through others) into this one: their redirects, and any row
    // still keyed by their ids.
    let mut gone: BTreeSet<ProfileId> = BTreeSet::from([pid]);
    let redirects = rows_of(kv, Table::Redirects, &[])?;
    loop {
        let before = gone.len();
        for (key, value) in &redirects {
            if let (Ok(from), Ok(to)) = (
                <[u8; 8]>::try_from(key.as_slice()),
                <[u8; 8]>::try_from(value.as_slice()),
            ) {
                if gone.contains(&u64::from_be_bytes(to)) {
                    gone.insert(u64::from_be_bytes(from));
                }
            }
        }
        if gone.len() == before {
            break;
        }
    }
    for absorbed in gone.iter().filter(|absorbed| **absorbed != pid) {
        kv.delete(Table::Redirects, &absorbed.to_be_bytes())?;
        erased.redirects += 1;
    }
    for profile_id in &gone {
        let id_bytes = profile_id.to_be_bytes();
        // The timeline key ends with the event's dedup key: the `Seen` entry of the same event.
        for key in keys_under(kv, Table::Timeline, &id_bytes)? {
            if let Some(dedup) = key.get(16..24) {
                kv.delete(Table::Seen, dedup)?;
            }
            kv.delete(Table::Timeline, &key)?;
            erased.timeline += 1;
        }
        let consent = keys_under(kv, Table::Consent, &id_bytes)?;
        erased.consent += delete_all(kv, Table::Consent, &consent)?;
        let computed = keys_under(kv, Table::Computed, &id_bytes)?;
        erased.computed += delete_all(kv, Table::Computed, &computed)?;
        let merges = keys_under(kv, Table::Merges, &id_bytes)?;
        erased.merges += delete_all(kv, Table::Merges, &merges)?;
    }
    let expiring: Vec<Vec<u8>> = keys_under(kv, Table::Expiry, &[])?
        .into_iter()
        .filter(|key| {
            key.get(8..16)
                .and_then(|id| <[u8; 8]>::try_from(id).ok())
                .is_some_and(|id| gone.contains(&u64::from_be_bytes(id)))
        })
        .collect();
    delete_all(kv, Table::Expiry, &expiring)?;
    for group in &profile.groups {
        let member = member_key(group, pid);
        if kv.get(Table::Members, &member)?.is_some() {
            kv.delete(Table::Members, &member)?;
            erased.memberships += 1;
            if let Some(mut account) =
                model::get::<AccountRow>(kv, Table::Accounts, group.as_bytes())?
            {
                account.members = account.members.saturating_sub(1);
                model::put(kv, Table::Accounts, group.as_bytes(), &account)?;
            }
        }
    }
    for (key, value) in rows_of(kv, Table::Refusals, &[])? {
        let refusal: RefusalRow = model::decode(Table::Refusals, &value)?;
        if identities.contains(&refusal.dropped)
            || refusal
                .profiles
                .iter()
                .any(|profile| gone.contains(profile))
        {
            kv.delete(Table::Refusals, &key)?;
            erased.refusals += 1;
        }
    }
    let names_person = |split: &SplitRow| {
        gone.contains(&split.profile)
            || split.result.iter().any(|profile| gone.contains(profile))
            || split
                .separated
                .iter()
                .chain(&split.rest)
                .any(|identity| identities.contains(identity))
    };
    let mut split_ids = BTreeSet::new();
    for (key, value) in rows_of(kv, Table::Splits, &[])? {
        let split: SplitRow = model::decode(Table::Splits, &value)?;
        if names_person(&split) {
            split_ids.insert(split.id);
            kv.delete(Table::Splits, &key)?;
            erased.splits += 1;
        }
    }
    // The outcomes of those splits' control records (they carry the split row).
    for (key, value) in rows_of(kv, Table::Meta, b"control/")? {
        if let Ok(crate::engine::ControlOutcome::Split(split)) = model::decode(Table::Meta, &value)
        {
            if split_ids.contains(&split.id) || names_person(&split) {
                kv.delete(Table::Meta, &key)?;
            }
        }
    }
    kv.delete(Table::Profiles, &own)?;
    erased.profiles += 1;
    Ok((erased, Some(pid)))
}
