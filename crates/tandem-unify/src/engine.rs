//! Identity resolution: applies one log record to the unify state.
//!
//! For each event: extract its identifiers (most trusted first), look up the profiles they
//! belong to, and check that joining them keeps every rule (per-type limits, admin splits). If a
//! rule would break, the event's least trusted identifier is dropped — and the refusal recorded —
//! and resolution retried. Then the event creates a profile, joins one, or merges several into
//! the oldest; every identifier it adds and every merge it causes is recorded as a link carrying
//! the event, which is what `explain` walks. Traits are last-write-wins by event time with their
//! provenance. Applying the same record twice changes nothing, and the same log applied from zero
//! gives the same state (profile ids are hashes of the creating offset and identity).

use crate::computed::{ComputedDef, ComputedState};
use crate::identity::{Identity, IdentityRules, ANONYMOUS_ID, GROUP_ID, USER_ID};
use crate::kv::{KvRead, KvResult, KvWrite, Table};
use crate::model::{self, *};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tandem_core::envelope::{EventEnvelope, EventType};
use tandem_core::limits::PROFILE_TRAITS_MAX;

/// Reads records back from the log by offset (a split re-resolves a profile's events).
pub trait RecordSource {
    /// The payload (envelope) of the record at `offset`, if it is still retained.
    fn record(&self, offset: u64) -> Option<Vec<u8>>;
}

/// What applying one record did (for metrics and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub profile: Option<ProfileId>,
    /// Profiles merged into `profile` by this record (they no longer exist).
    pub absorbed: Vec<ProfileId>,
    pub created: bool,
    pub merged: u32,
    pub refused: u32,
    pub ignored_identifiers: u32,
    /// The event was already on the profile's timeline (a redelivery).
    pub duplicate: bool,
    /// No usable identifier: the event belongs to no profile.
    pub unattributed: bool,
    /// The record was not an event tandem can read (bad JSON, unknown envelope).
    pub unreadable: bool,
    pub split: Option<SplitRow>,
    /// Profiles an erase control record removed (they no longer exist).
    pub erased: Vec<ProfileId>,
}

/// Control records tandem writes into a workspace log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum Control {
    /// Separate `identities` from the rest of `profile_id`; re-resolve its events.
    Split {
        #[serde(rename = "profileId")]
        profile_id: String,
        identities: Vec<Identity>,
        #[serde(rename = "requestedBy")]
        requested_by: String,
        reason: String,
    },
    /// Erase these profiles and everything naming them (a data-subject request). Carries
    /// profile ids only: no identifier of the person is written to the log again.
    Erase {
        request: String,
        #[serde(rename = "profileIds")]
        profile_ids: Vec<String>,
        /// Set by retention: erase a profile only if it is still inactive when the record is
        /// applied (its `last_message_ms` before this instant) — one that came back between
        /// the sweep's scan and this record keeps its data. Absent for data-subject requests.
        #[serde(
            rename = "inactiveBeforeMs",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        inactive_before_ms: Option<i64>,
    },
}

/// The outcome of a control record, kept under `Meta` `control/<offset>` for the API to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlOutcome {
    Split(SplitRow),
    Failed(String),
    /// An erasure: the request, the profiles it erased, the rows it removed.
    Erased {
        request: String,
        profiles: Vec<ProfileId>,
        rows: crate::erase::ErasedRows,
    },
}

pub fn control_outcome_key(offset: u64) -> Vec<u8> {
    format!("control/{offset:020}").into_bytes()
}

pub struct Engine {
    pub rules: IdentityRules,
    /// Computed traits, then hidden counters (`ComputedDef::hidden`).
    pub computed: Vec<ComputedDef>,
    /// Records of these sources are skipped (tandem's own derived events, e.g. audience
    /// changes, which must not feed identity resolution back).
    pub skip_sources: Vec<String>,
}

fn new_profile_id(offset: u64, identity: &Identity) -> ProfileId {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&offset.to_le_bytes());
    hasher.update(&identity.key());
    hasher.digest()
}

struct Event<'a> {
    envelope: EventEnvelope<'a>,
    json: Value,
    provenance: Provenance,
}

impl Engine {
    pub fn new(rules: IdentityRules) -> Engine {
        Engine::with_computed(rules, Vec::new())
    }

    pub fn with_computed(rules: IdentityRules, computed: Vec<ComputedDef>) -> Engine {
        Engine {
            rules,
            computed,
            skip_sources: Vec::new(),
        }
    }

    /// Applies the record at `offset` (its payload is an envelope).
    pub fn apply(
        &self,
        kv: &mut impl KvWrite,
        source: &dyn RecordSource,
        offset: u64,
        payload: &[u8],
    ) -> KvResult<Applied> {
        let Some(event) = parse(offset, payload) else {
            return Ok(Applied {
                unreadable: true,
                ..Applied::default()
            });
        };
        if event.envelope.event_type == EventType::Control {
            return self.apply_control(kv, source, &event);
        }
        if self
            .skip_sources
            .iter()
            .any(|skipped| skipped == event.envelope.source_id)
        {
            return Ok(Applied::default());
        }
        self.apply_event(kv, &event)
    }

    fn apply_event(&self, kv: &mut impl KvWrite, event: &Event) -> KvResult<Applied> {
        let event_type = event.envelope.event_type;
        // A redelivery (same source and messageId, whatever its receive time) changes nothing.
        let seen_key = event.envelope.dedup_key.to_be_bytes();
        if kv.get(Table::Seen, &seen_key)?.is_some() {
            return Ok(Applied {
                duplicate: true,
                ..Applied::default()
            });
        }
        let found = self.rules.extract(event_type, &event.json);
        let mut applied = Applied {
            ignored_identifiers: found.ignored.len() as u32,
            ..Applied::default()
        };
        let mut ids = found.user;
        if let Some(previous) = found.previous_id {
            // An alias' previousId is whatever the graph knows it as: a user id, else an anonymous id.
            let as_user = Identity::new(USER_ID, &previous);
            let identity =
                if model::get::<IdentityRow>(kv, Table::Identities, &as_user.key())?.is_some() {
                    as_user
                } else {
                    Identity::new(ANONYMOUS_ID, &previous)
                };
            if !ids.contains(&identity) {
                ids.push(identity);
                self.rules.sort_by_priority(&mut ids);
            }
        }
        if ids.is_empty() {
            applied.unattributed = true;
            return Ok(applied);
        }

        // Resolve: drop the least trusted identifier until joining keeps every rule.
        let (known, mut profiles) = loop {
            let mut known: Vec<Option<ProfileId>> = Vec::with_capacity(ids.len());
            let mut profiles: BTreeMap<ProfileId, ProfileRow> = BTreeMap::new();
            for identity in &ids {
                let row: Option<IdentityRow> = model::get(kv, Table::Identities, &identity.key())?;
                let profile = row.map(|row| row.profile);
                if let Some(id) = profile {
                    if let std::collections::btree_map::Entry::Vacant(slot) = profiles.entry(id) {
                        match model::get::<ProfileRow>(kv, Table::Profiles, &id.to_be_bytes())? {
                            Some(row) => {
                                slot.insert(row);
                            }
                            None => {
                                // An identity pointing at a missing profile: treat it as new.
                                known.push(None);
                                continue;
                            }
                        }
                    }
                }
                known.push(profile);
            }
            match self.violation(kv, &ids, &known, &profiles, event.provenance.time_ms)? {
                None => break (known, profiles),
                Some(rule) => {
                    let dropped = ids.pop().expect("a single identifier never violates");
                    let refusal = RefusalRow {
                        provenance: event.provenance.clone(),
                        dropped,
                        rule,
                        profiles: profiles.keys().copied().collect(),
                    };
                    let mut key = event.provenance.offset.to_be_bytes().to_vec();
                    key.extend_from_slice(&applied.refused.to_be_bytes());
                    model::put(kv, Table::Refusals, &key, &refusal)?;
                    applied.refused += 1;
                }
            }
        };

        let event_type_name = event_type.as_str().to_string();
        let mut survivor = match profiles.len() {
            0 => {
                applied.created = true;
                let id = new_profile_id(event.provenance.offset, &ids[0]);
                ProfileRow {
                    id,
                    created: event.provenance.clone(),
                    first_message_ms: event.provenance.time_ms,
                    last_message_ms: event.provenance.time_ms,
                    last_source: event.provenance.source.clone(),
                    last_message_id: event.provenance.message_id.clone(),
                    event_count: 0,
                    identities: Vec::new(),
                    traits: BTreeMap::new(),
                    groups: Vec::new(),
                    splits: Vec::new(),
                    merges: 0,
                    computed: BTreeMap::new(),
                }
            }
            _ => {
                // The oldest profile survives, so ids stay stable as profiles grow.
                let oldest = *profiles
                    .iter()
                    .min_by_key(|(id, row)| (row.created.offset, **id))
                    .expect("not empty")
                    .0;
                profiles.remove(&oldest).expect("present")
            }
        };

        // Merge the others into the survivor, linking the event's identifiers across.
        let anchor_of = |row: &ProfileRow| -> Option<Identity> {
            ids.iter()
                .zip(&known)
                .find(|(_, p)| **p == Some(row.id))
                .map(|(i, _)| i.clone())
        };
        let survivor_anchor = anchor_of(&survivor);
        for (_, absorbed) in std::mem::take(&mut profiles) {
            let through_absorbed = anchor_of(&absorbed).expect("reached through an identifier");
            let through_survivor = survivor_anchor
                .clone()
                .expect("reached through an identifier");
            let link = LinkRow {
                provenance: event.provenance.clone(),
                event_type: event_type_name.clone(),
                rule: "merged profiles".into(),
            };
            put_link(kv, &through_survivor, &through_absorbed, &link)?;
            let merge = MergeRow {
                survivor: survivor.id,
                absorbed: absorbed.id,
                provenance: event.provenance.clone(),
                event_type: event_type_name.clone(),
                through: vec![through_survivor, through_absorbed],
            };
            applied.absorbed.push(absorbed.id);
            self.merge_into(kv, &mut survivor, absorbed, &merge)?;
            applied.merged += 1;
        }

        // Attach the new identifiers.
        let anchor = survivor_anchor.unwrap_or_else(|| ids[0].clone());
        for (identity, profile) in ids.iter().zip(&known) {
            if profile.is_some() && survivor.has_identity(identity) {
                continue;
            }
            let row = IdentityRow {
                profile: survivor.id,
                first_seen: event.provenance.clone(),
            };
            model::put(kv, Table::Identities, &identity.key(), &row)?;
            insert_sorted(
                &mut survivor.identities,
                identity.clone(),
                event.provenance.clone(),
            );
            let separations: Vec<SplitSide> =
                model::get(kv, Table::Separations, &identity.key())?.unwrap_or_default();
            for side in separations {
                if !survivor.splits.contains(&side) {
                    survivor.splits.push(side);
                }
            }
            if *identity != anchor {
                let link = LinkRow {
                    provenance: event.provenance.clone(),
                    event_type: event_type_name.clone(),
                    rule: if applied.created {
                        "created profile".into()
                    } else {
                        "added identifier".into()
                    },
                };
                put_link(kv, &anchor, identity, &link)?;
            }
        }

        // The timeline: a redelivered event (same source and messageId) is already there.
        let timeline_key = model::timeline_key(
            survivor.id,
            event.provenance.time_ms,
            event.envelope.dedup_key,
        );
        {
            kv.put(Table::Seen, &seen_key, &[])?;
            let name = match event_type {
                EventType::Track => event.json.get("event"),
                EventType::Page | EventType::Screen => event.json.get("name"),
                _ => None,
            }
            .and_then(Value::as_str)
            .map(str::to_string);
            let row = TimelineRow {
                offset: event.provenance.offset,
                event_type: event_type_name,
                name,
                source: event.provenance.source.clone(),
                message_id: event.provenance.message_id.clone(),
            };
            model::put(kv, Table::Timeline, &timeline_key, &row)?;
            record_consent(kv, &timeline_key, event, &row)?;
            self.count_computed(kv, &mut survivor, event)?;
            survivor.event_count += 1;
            survivor.first_message_ms = survivor.first_message_ms.min(event.provenance.time_ms);
            if event.provenance.time_ms >= survivor.last_message_ms {
                survivor.last_message_ms = event.provenance.time_ms;
                survivor.last_source = event.provenance.source.clone();
                survivor.last_message_id = event.provenance.message_id.clone();
            }
        }

        if event_type == EventType::Identify {
            if let Some(traits) = event.json.get("traits").and_then(Value::as_object) {
                set_traits(&mut survivor.traits, traits, &event.provenance);
            }
        }
        if event_type == EventType::Group && !found.account.is_empty() {
            self.apply_group(kv, &mut survivor, &found.account, event)?;
        }

        applied.profile = Some(survivor.id);
        model::put(kv, Table::Profiles, &survivor.id.to_be_bytes(), &survivor)?;
        Ok(applied)
    }

    /// The rule joining `ids` (and the profiles they reach) would break, if any.
    fn violation(
        &self,
        kv: &impl KvRead,
        ids: &[Identity],
        known: &[Option<ProfileId>],
        profiles: &BTreeMap<ProfileId, ProfileRow>,
        time_ms: i64,
    ) -> KvResult<Option<String>> {
        // Every identity the joined profile would hold, with when it was first seen.
        let mut joined: HashMap<&Identity, i64> = HashMap::new();
        let mut sides: BTreeSet<SplitSide> = BTreeSet::new();
        for row in profiles.values() {
            for (identity, seen) in &row.identities {
                joined.insert(identity, seen.time_ms);
            }
            sides.extend(row.splits.iter().copied());
        }
        for (identity, profile) in ids.iter().zip(known) {
            if profile.is_none() {
                joined.entry(identity).or_insert(time_ms);
                let separations: Vec<SplitSide> =
                    model::get(kv, Table::Separations, &identity.key())?.unwrap_or_default();
                sides.extend(separations);
            }
        }
        if profiles.len() <= 1 && ids.iter().zip(known).all(|(_, p)| p.is_some()) {
            return Ok(None);
        }
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        for (identity, seen_ms) in &joined {
            let rule = self.rules.rule(&identity.kind);
            if rule
                .window_ms
                .is_none_or(|window| *seen_ms >= time_ms - window)
            {
                *counts.entry(identity.kind.as_str()).or_default() += 1;
            }
        }
        for (kind, count) in counts {
            let limit = self.rules.rule(kind).limit;
            if count > limit {
                let window = match self.rules.rule(kind).window_ms {
                    Some(ms) => format!(" per {} days", ms / 86_400_000),
                    None => String::new(),
                };
                return Ok(Some(format!("limit {kind}: {limit}{window}")));
            }
        }
        let mut previous: Option<SplitSide> = None;
        for side in sides {
            if let Some(earlier) = previous {
                if earlier.split == side.split && earlier.side != side.side {
                    return Ok(Some(format!("split {}", side.split)));
                }
            }
            previous = Some(side);
        }
        Ok(None)
    }

    fn merge_into(
        &self,
        kv: &mut impl KvWrite,
        survivor: &mut ProfileRow,
        absorbed: ProfileRow,
        merge: &MergeRow,
    ) -> KvResult<()> {
        for (identity, seen) in &absorbed.identities {
            let row = IdentityRow {
                profile: survivor.id,
                first_seen: seen.clone(),
            };
            model::put(kv, Table::Identities, &identity.key(), &row)?;
            insert_sorted(&mut survivor.identities, identity.clone(), seen.clone());
        }
        for (name, value) in absorbed.traits {
            match survivor.traits.get(&name) {
                Some(current) if !value.provenance.is_newer_than(&current.provenance) => {}
                _ => {
                    survivor.traits.insert(name, value);
                }
            }
        }
        let from = absorbed.id.to_be_bytes();
        move_prefixed(kv, Table::Timeline, &from, survivor.id)?;
        move_prefixed(kv, Table::Merges, &from, survivor.id)?;
        move_prefixed(kv, Table::Consent, &from, survivor.id)?;
        self.merge_computed(kv, survivor, absorbed.id)?;
        for group in &absorbed.groups {
            kv.delete(Table::Members, &member_key(group, absorbed.id))?;
            if survivor.groups.contains(group) {
                if let Some(mut account) =
                    model::get::<AccountRow>(kv, Table::Accounts, group.as_bytes())?
                {
                    account.members = account.members.saturating_sub(1);
                    model::put(kv, Table::Accounts, group.as_bytes(), &account)?;
                }
            } else {
                kv.put(Table::Members, &member_key(group, survivor.id), &[])?;
                survivor.groups.push(group.clone());
                survivor.groups.sort();
            }
        }
        for side in absorbed.splits {
            if !survivor.splits.contains(&side) {
                survivor.splits.push(side);
            }
        }
        survivor.event_count += absorbed.event_count;
        survivor.first_message_ms = survivor.first_message_ms.min(absorbed.first_message_ms);
        if absorbed.last_message_ms > survivor.last_message_ms {
            survivor.last_message_ms = absorbed.last_message_ms;
            survivor.last_source = absorbed.last_source;
            survivor.last_message_id = absorbed.last_message_id;
        }
        survivor.merges += absorbed.merges + 1;
        kv.delete(Table::Profiles, &from)?;
        kv.put(Table::Redirects, &from, &survivor.id.to_be_bytes())?;
        model::put(
            kv,
            Table::Merges,
            &merge_key(survivor.id, merge.provenance.offset, absorbed.id),
            merge,
        )
    }

    fn apply_group(
        &self,
        kv: &mut impl KvWrite,
        profile: &mut ProfileRow,
        account_ids: &[Identity],
        event: &Event,
    ) -> KvResult<()> {
        let Some(group_id) = account_ids
            .iter()
            .find(|identity| identity.kind == GROUP_ID)
            .map(|identity| identity.value.clone())
        else {
            return Ok(());
        };
        let mut account: AccountRow = model::get(kv, Table::Accounts, group_id.as_bytes())?
            .unwrap_or_else(|| AccountRow {
                group_id: group_id.clone(),
                ..AccountRow::default()
            });
        if account.created.is_none() {
            account.created = Some(event.provenance.clone());
        }
        account.last_message_ms = account.last_message_ms.max(event.provenance.time_ms);
        for identity in account_ids.iter().filter(|i| i.kind != GROUP_ID) {
            if !account
                .identities
                .iter()
                .any(|(known, _)| known == identity)
            {
                insert_sorted(
                    &mut account.identities,
                    identity.clone(),
                    event.provenance.clone(),
                );
            }
        }
        if let Some(traits) = event.json.get("traits").and_then(Value::as_object) {
            set_traits(&mut account.traits, traits, &event.provenance);
        }
        if !profile.groups.contains(&group_id) {
            profile.groups.push(group_id.clone());
            profile.groups.sort();
            kv.put(Table::Members, &member_key(&group_id, profile.id), &[])?;
            account.members += 1;
        }
        model::put(kv, Table::Accounts, group_id.as_bytes(), &account)
    }

    fn apply_control(
        &self,
        kv: &mut impl KvWrite,
        source: &dyn RecordSource,
        event: &Event,
    ) -> KvResult<Applied> {
        let outcome = match serde_json::from_value::<Control>(event.json.clone()) {
            Err(error) => ControlOutcome::Failed(format!("unreadable control record: {error}")),
            Ok(Control::Split {
                profile_id,
                identities,
                requested_by,
                reason,
            }) => match self.split(
                kv,
                source,
                event,
                &profile_id,
                identities,
                requested_by,
                reason,
            )? {
                Ok(split) => ControlOutcome::Split(split),
                Err(message) => ControlOutcome::Failed(message),
            },
            Ok(Control::Erase {
                request,
                profile_ids,
                inactive_before_ms,
            }) => {
                let mut rows = crate::erase::ErasedRows::default();
                let mut profiles = Vec::new();
                for text in &profile_ids {
                    let Some(id) = parse_profile_id(text) else {
                        continue;
                    };
                    if let Some(cutoff_ms) = inactive_before_ms {
                        let row: Option<ProfileRow> =
                            model::get(kv, Table::Profiles, &id.to_be_bytes())?;
                        if row.is_none_or(|row| row.last_message_ms >= cutoff_ms) {
                            continue;
                        }
                    }
                    let (removed, erased) = crate::erase::erase_profile(kv, id)?;
                    rows.add(&removed);
                    profiles.extend(erased);
                }
                ControlOutcome::Erased {
                    request,
                    profiles,
                    rows,
                }
            }
        };
        model::put(
            kv,
            Table::Meta,
            &control_outcome_key(event.provenance.offset),
            &outcome,
        )?;
        Ok(match outcome {
            ControlOutcome::Split(split) => Applied {
                split: Some(split),
                ..Applied::default()
            },
            ControlOutcome::Erased { profiles, .. } => Applied {
                erased: profiles,
                ..Applied::default()
            },
            ControlOutcome::Failed(_) => Applied::default(),
        })
    }

    /// Separates `identities` from the rest of a profile and re-resolves its events from the log.
    #[allow(clippy::too_many_arguments)]
    fn split(
        &self,
        kv: &mut impl KvWrite,
        source: &dyn RecordSource,
        event: &Event,
        profile_id: &str,
        identities: Vec<Identity>,
        requested_by: String,
        reason: String,
    ) -> KvResult<Result<SplitRow, String>> {
        let Some(id) = parse_profile_id(profile_id) else {
            return Ok(Err(format!("`{profile_id}` is not a profile id")));
        };
        let Some(profile) = model::get::<ProfileRow>(kv, Table::Profiles, &id.to_be_bytes())?
        else {
            return Ok(Err(format!(
                "no profile {profile_id} (merged or split since?)"
            )));
        };
        let separated: Vec<Identity> = identities
            .into_iter()
            .filter(|identity| profile.has_identity(identity))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let rest: Vec<Identity> = profile
            .identities
            .iter()
            .map(|(identity, _)| identity.clone())
            .filter(|identity| !separated.contains(identity))
            .collect();
        if separated.is_empty() || rest.is_empty() {
            return Ok(Err(
                "a split names some, not all, of the profile's identifiers".to_string(),
            ));
        }
        let split_id = event.provenance.offset;
        for (side, group) in [(0u8, &separated), (1u8, &rest)] {
            for identity in group {
                let mut sides: Vec<SplitSide> =
                    model::get(kv, Table::Separations, &identity.key())?.unwrap_or_default();
                sides.push(SplitSide {
                    split: split_id,
                    side,
                });
                model::put(kv, Table::Separations, &identity.key(), &sides)?;
            }
        }
        // Forget the profile, then apply its events again in log order under the new rule.
        let prefix = id.to_be_bytes();
        let mut offsets = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = kv.scan(Table::Timeline, &prefix, after.as_deref(), false, 1024)?;
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            for (key, value) in &rows {
                let row: TimelineRow = model::decode(Table::Timeline, value)?;
                offsets.push(row.offset);
                kv.delete(Table::Timeline, key)?;
                kv.delete(Table::Seen, &key[16..24])?;
            }
        }
        offsets.sort_unstable();
        for (identity, _) in &profile.identities {
            kv.delete(Table::Identities, &identity.key())?;
            for (key, _) in kv.scan(
                Table::Links,
                &link_prefix(identity),
                None,
                false,
                usize::MAX,
            )? {
                kv.delete(Table::Links, &key)?;
                if let Some(other) = Identity::from_key(&key[identity.key().len() + 1..]) {
                    kv.delete(Table::Links, &link_key(&other, identity))?;
                }
            }
        }
        for (key, _) in kv.scan(Table::Merges, &prefix, None, false, usize::MAX)? {
            kv.delete(Table::Merges, &key)?;
        }
        for (key, _) in kv.scan(Table::Computed, &prefix, None, false, usize::MAX)? {
            kv.delete(Table::Computed, &key)?;
        }
        for (key, _) in kv.scan(Table::Consent, &prefix, None, false, usize::MAX)? {
            kv.delete(Table::Consent, &key)?;
        }
        for group in &profile.groups {
            kv.delete(Table::Members, &member_key(group, id))?;
            if let Some(mut account) =
                model::get::<AccountRow>(kv, Table::Accounts, group.as_bytes())?
            {
                account.members = account.members.saturating_sub(1);
                model::put(kv, Table::Accounts, group.as_bytes(), &account)?;
            }
        }
        kv.delete(Table::Profiles, &prefix)?;
        let mut events = 0;
        for offset in offsets {
            let Some(payload) = source.record(offset) else {
                continue;
            };
            let Some(event) = parse(offset, &payload) else {
                continue;
            };
            if event.envelope.event_type != EventType::Control {
                self.apply_event(kv, &event)?;
                events += 1;
            }
        }
        let mut result = BTreeSet::new();
        for (identity, _) in &profile.identities {
            if let Some(row) = model::get::<IdentityRow>(kv, Table::Identities, &identity.key())? {
                result.insert(row.profile);
            }
        }
        let split = SplitRow {
            id: split_id,
            profile: id,
            separated,
            rest,
            requested_by,
            reason,
            at_ms: event.envelope.event_time_ms,
            result: result.into_iter().collect(),
            events,
        };
        model::put(kv, Table::Splits, &split_id.to_be_bytes(), &split)?;
        Ok(Ok(split))
    }
}

impl Engine {
    /// Updates the computed traits an event counts toward.
    fn count_computed(
        &self,
        kv: &mut impl KvWrite,
        profile: &mut ProfileRow,
        event: &Event,
    ) -> KvResult<()> {
        for def in &self.computed {
            if !def.counts(
                event.envelope.event_type,
                &event.json,
                event.provenance.time_ms,
            ) {
                continue;
            }
            let key = computed_key(profile.id, &def.name);
            let mut state: ComputedState =
                model::get(kv, Table::Computed, &key)?.unwrap_or_default();
            let expiry_before = state.next_expiry_ms(def);
            state.add(
                def,
                &event.json,
                event.provenance.time_ms,
                event.provenance.offset,
            );
            self.store_computed(kv, profile, def, &state, expiry_before)?;
        }
        Ok(())
    }

    /// Saves a computed state, its value on the profile, and its place in the expiry index.
    fn store_computed(
        &self,
        kv: &mut impl KvWrite,
        profile: &mut ProfileRow,
        def: &ComputedDef,
        state: &ComputedState,
        expiry_before: Option<i64>,
    ) -> KvResult<()> {
        let key = computed_key(profile.id, &def.name);
        let expiry_after = state.next_expiry_ms(def);
        if expiry_before != expiry_after {
            if let Some(at) = expiry_before {
                kv.delete(Table::Expiry, &expiry_key(at, profile.id, &def.name))?;
            }
            if let Some(at) = expiry_after {
                kv.put(Table::Expiry, &expiry_key(at, profile.id, &def.name), &[])?;
            }
        }
        if state.is_empty() {
            kv.delete(Table::Computed, &key)?;
            profile.computed.remove(&def.name);
        } else if def.hidden {
            model::put(kv, Table::Computed, &key, state)?;
        } else {
            model::put(kv, Table::Computed, &key, state)?;
            let now = tandem_core::time_util::now_ms();
            profile
                .computed
                .insert(def.name.clone(), state.value(def, now).to_string());
        }
        Ok(())
    }

    fn merge_computed(
        &self,
        kv: &mut impl KvWrite,
        survivor: &mut ProfileRow,
        absorbed: ProfileId,
    ) -> KvResult<()> {
        for def in &self.computed {
            let absorbed_key = computed_key(absorbed, &def.name);
            let Some(theirs) = model::get::<ComputedState>(kv, Table::Computed, &absorbed_key)?
            else {
                continue;
            };
            if let Some(at) = theirs.next_expiry_ms(def) {
                kv.delete(Table::Expiry, &expiry_key(at, absorbed, &def.name))?;
            }
            kv.delete(Table::Computed, &absorbed_key)?;
            let key = computed_key(survivor.id, &def.name);
            let mut state: ComputedState =
                model::get(kv, Table::Computed, &key)?.unwrap_or_default();
            let expiry_before = state.next_expiry_ms(def);
            state.merge(theirs);
            self.store_computed(kv, survivor, def, &state, expiry_before)?;
        }
        Ok(())
    }

    /// Moves windowed computed traits whose oldest day left the window by `now_ms` forward:
    /// drops the expired days and updates the value on the profile. Returns how many changed.
    /// The server calls it periodically; at most `limit` entries per call.
    pub fn expire_windows(
        &self,
        kv: &mut impl KvWrite,
        now_ms: i64,
        limit: usize,
    ) -> KvResult<usize> {
        self.expire_windows_into(kv, now_ms, limit, &mut Vec::new())
    }

    /// [`Engine::expire_windows`], also listing the profiles it changed in `changed`.
    pub fn expire_windows_into(
        &self,
        kv: &mut impl KvWrite,
        now_ms: i64,
        limit: usize,
        changed_profiles: &mut Vec<ProfileId>,
    ) -> KvResult<usize> {
        let due = kv.scan(Table::Expiry, &[], None, false, limit)?;
        let mut changed = 0;
        for (key, _) in due {
            if key.len() < 16 || key[..8] > model::time_key(now_ms)[..] {
                break;
            }
            kv.delete(Table::Expiry, &key)?;
            let profile_id = u64::from_be_bytes(key[8..16].try_into().expect("8 bytes"));
            let name = String::from_utf8_lossy(&key[16..]).to_string();
            let Some(def) = self.computed.iter().find(|def| def.name == name) else {
                continue;
            };
            let Some(mut profile) =
                model::get::<ProfileRow>(kv, Table::Profiles, &profile_id.to_be_bytes())?
            else {
                continue;
            };
            let Some(mut state) =
                model::get::<ComputedState>(kv, Table::Computed, &computed_key(profile_id, &name))?
            else {
                continue;
            };
            state.expire(def, now_ms);
            // The old index entry is gone already: store as if there was none.
            self.store_computed(kv, &mut profile, def, &state, None)?;
            model::put(kv, Table::Profiles, &profile_id.to_be_bytes(), &profile)?;
            changed_profiles.push(profile_id);
            changed += 1;
        }
        Ok(changed)
    }
}

fn parse(offset: u64, payload: &[u8]) -> Option<Event<'_>> {
    let envelope = EventEnvelope::decode(payload).ok()?;
    let json: Value = serde_json::from_slice(envelope.json).ok()?;
    let message_id = json
        .get("messageId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let provenance = Provenance {
        source: envelope.source_id.to_string(),
        message_id,
        time_ms: envelope.event_time_ms,
        offset,
    };
    Some(Event {
        envelope,
        json,
        provenance,
    })
}

fn insert_sorted(list: &mut Vec<(Identity, Provenance)>, identity: Identity, seen: Provenance) {
    if let Err(at) = list.binary_search_by(|(known, _)| known.cmp(&identity)) {
        list.insert(at, (identity, seen));
    }
}

fn set_traits(
    traits: &mut BTreeMap<String, TraitRow>,
    incoming: &serde_json::Map<String, Value>,
    provenance: &Provenance,
) {
    for (name, value) in incoming {
        let newer = match traits.get(name) {
            // The same event again (a redelivery at a later offset) changes nothing.
            Some(current)
                if current.provenance.message_id == provenance.message_id
                    && current.provenance.source == provenance.source =>
            {
                false
            }
            Some(current) => provenance.is_newer_than(&current.provenance),
            None => traits.len() < PROFILE_TRAITS_MAX,
        };
        if newer {
            let row = TraitRow {
                json: value.to_string(),
                provenance: provenance.clone(),
            };
            traits.insert(name.clone(), row);
        }
    }
}

fn put_link(kv: &mut impl KvWrite, a: &Identity, b: &Identity, link: &LinkRow) -> KvResult<()> {
    model::put(kv, Table::Links, &link_key(a, b), link)?;
    model::put(kv, Table::Links, &link_key(b, a), link)
}

/// Re-keys every row of `table` under the 8-byte profile prefix `from` to profile `to`.
/// Adds the event's consent preferences to the profile's history when they differ from the
/// preferences stated just before it in event time (so a late event lands in its place).
fn record_consent(
    kv: &mut impl KvWrite,
    key: &[u8],
    event: &Event,
    timeline: &TimelineRow,
) -> KvResult<()> {
    let Some(preferences) = tandem_consent::from_event(&event.json) else {
        return Ok(());
    };
    let before = kv.scan(Table::Consent, &key[..8], Some(key), true, 1)?;
    if let Some((_, value)) = before.first() {
        let previous: model::ConsentRow = model::decode(Table::Consent, value)?;
        if previous.preferences == preferences {
            return Ok(());
        }
    }
    let row = model::ConsentRow {
        preferences,
        provenance: event.provenance.clone(),
        event_type: timeline.event_type.clone(),
        event: (timeline.event_type == "track")
            .then(|| timeline.name.clone())
            .flatten(),
    };
    model::put(kv, Table::Consent, key, &row)
}

fn move_prefixed(kv: &mut impl KvWrite, table: Table, from: &[u8], to: ProfileId) -> KvResult<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = kv.scan(table, from, after.as_deref(), false, 1024)?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (key, value) in rows {
            let mut moved = to.to_be_bytes().to_vec();
            moved.extend_from_slice(&key[8..]);
            kv.put(table, &moved, &value)?;
            kv.delete(table, &key)?;
        }
    }
}
