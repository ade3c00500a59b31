//! Reads of the unify state: profiles by identifier, timelines, accounts, explanations.

use crate::identity::{Identity, GROUP_ID};
use crate::kv::{KvRead, KvResult, Table};
use crate::model::{self, *};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};

/// Follows merge redirects to the profile an old id now lives in.
pub fn resolve_profile(kv: &impl KvRead, mut id: ProfileId) -> KvResult<Option<ProfileRow>> {
    for _ in 0..64 {
        if let Some(row) = model::get::<ProfileRow>(kv, Table::Profiles, &id.to_be_bytes())? {
            return Ok(Some(row));
        }
        match kv.get(Table::Redirects, &id.to_be_bytes())? {
            Some(next) if next.len() == 8 => {
                id = u64::from_be_bytes(next.as_slice().try_into().expect("8 bytes"))
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The profile holding `identity`.
pub fn profile_by_identity(kv: &impl KvRead, identity: &Identity) -> KvResult<Option<ProfileRow>> {
    match model::get::<IdentityRow>(kv, Table::Identities, &identity.key())? {
        Some(row) => resolve_profile(kv, row.profile),
        None => Ok(None),
    }
}

pub fn account(kv: &impl KvRead, group_id: &str) -> KvResult<Option<AccountRow>> {
    model::get(kv, Table::Accounts, group_id.as_bytes())
}

/// Members of an account, after `after` (a profile id), up to `limit`.
pub fn account_members(
    kv: &impl KvRead,
    group_id: &str,
    after: Option<ProfileId>,
    limit: usize,
) -> KvResult<Vec<ProfileId>> {
    let mut prefix = group_id.as_bytes().to_vec();
    prefix.push(0xff);
    let after_key = after.map(|id| member_key(group_id, id));
    Ok(kv
        .scan(Table::Members, &prefix, after_key.as_deref(), false, limit)?
        .into_iter()
        .filter_map(|(key, _)| {
            key.get(prefix.len()..)?
                .try_into()
                .ok()
                .map(u64::from_be_bytes)
        })
        .collect())
}

/// A page of a profile's timeline, newest first, before the cursor `before` (a timeline key).
pub fn timeline(
    kv: &impl KvRead,
    profile: ProfileId,
    before: Option<&[u8]>,
    limit: usize,
) -> KvResult<Vec<(Vec<u8>, TimelineRow)>> {
    kv.scan(Table::Timeline, &profile.to_be_bytes(), before, true, limit)?
        .into_iter()
        .map(|(key, value)| Ok((key, model::decode(Table::Timeline, &value)?)))
        .collect()
}

/// The merges into a profile, oldest first.
/// The profile's consent history, newest first (at most `limit` rows).
pub fn consent_history(
    kv: &impl KvRead,
    profile: ProfileId,
    limit: usize,
) -> KvResult<Vec<crate::model::ConsentRow>> {
    kv.scan(Table::Consent, &profile.to_be_bytes(), None, true, limit)?
        .iter()
        .map(|(_, value)| model::decode(Table::Consent, value))
        .collect()
}

/// The profile's latest consent preferences, if it ever stated any.
pub fn latest_consent(
    kv: &impl KvRead,
    profile: ProfileId,
) -> KvResult<Option<tandem_consent::Preferences>> {
    Ok(consent_history(kv, profile, 1)?
        .into_iter()
        .next()
        .map(|row| row.preferences))
}

pub fn merges(kv: &impl KvRead, profile: ProfileId, limit: usize) -> KvResult<Vec<MergeRow>> {
    kv.scan(Table::Merges, &profile.to_be_bytes(), None, false, limit)?
        .into_iter()
        .map(|(_, value)| model::decode(Table::Merges, &value))
        .collect()
}

/// Merges refused (an identifier dropped to keep a rule), newest first.
pub fn refusals(kv: &impl KvRead, limit: usize) -> KvResult<Vec<RefusalRow>> {
    kv.scan(Table::Refusals, &[], None, true, limit)?
        .into_iter()
        .map(|(_, value)| model::decode(Table::Refusals, &value))
        .collect()
}

pub fn splits(kv: &impl KvRead, limit: usize) -> KvResult<Vec<SplitRow>> {
    kv.scan(Table::Splits, &[], None, true, limit)?
        .into_iter()
        .map(|(_, value)| model::decode(Table::Splits, &value))
        .collect()
}

/// One hop of an explanation: `from` and `to` were linked by this event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub from: Identity,
    pub to: Identity,
    pub rule: String,
    pub event_type: String,
    pub message_id: String,
    pub source: String,
    pub offset: u64,
    pub timestamp: String,
}

/// Why two identifiers are (or are not) in one profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub same_profile: bool,
    pub profile_a: Option<String>,
    pub profile_b: Option<String>,
    /// The chain of events linking `a` to `b`, when they are in one profile.
    pub path: Vec<Hop>,
    pub summary: String,
}

/// Most identities an explanation walks (a profile holds far fewer under the default limits).
pub const EXPLAIN_IDENTITIES_MAX: usize = 10_000;

pub fn explain(kv: &impl KvRead, a: &Identity, b: &Identity) -> KvResult<Explanation> {
    let profile_a = profile_by_identity(kv, a)?;
    let profile_b = profile_by_identity(kv, b)?;
    let mut explanation = Explanation {
        same_profile: false,
        profile_a: profile_a.as_ref().map(|p| format_profile_id(p.id)),
        profile_b: profile_b.as_ref().map(|p| format_profile_id(p.id)),
        path: Vec::new(),
        summary: String::new(),
    };
    let (Some(pa), Some(pb)) = (profile_a, profile_b) else {
        explanation.summary = format!(
            "{} is {}known; {} is {}known",
            a,
            if explanation.profile_a.is_some() {
                ""
            } else {
                "not "
            },
            b,
            if explanation.profile_b.is_some() {
                ""
            } else {
                "not "
            }
        );
        return Ok(explanation);
    };
    if pa.id != pb.id {
        explanation.summary = format!("{a} and {b} are in different profiles");
        return Ok(explanation);
    }
    explanation.same_profile = true;
    if a == b {
        explanation.summary = "the same identifier".into();
        return Ok(explanation);
    }
    // Breadth-first over the links: each link is the event that joined two identifiers.
    let mut came_from: HashMap<Identity, (Identity, LinkRow)> = HashMap::new();
    let mut queue = VecDeque::from([a.clone()]);
    let mut seen = 1;
    while let Some(current) = queue.pop_front() {
        if current == *b {
            break;
        }
        let prefix = link_prefix(&current);
        for (key, value) in kv.scan(Table::Links, &prefix, None, false, usize::MAX)? {
            let Some(next) = Identity::from_key(&key[prefix.len()..]) else {
                continue;
            };
            if next == *a || came_from.contains_key(&next) {
                continue;
            }
            let link: LinkRow = model::decode(Table::Links, &value)?;
            came_from.insert(next.clone(), (current.clone(), link));
            queue.push_back(next);
            seen += 1;
        }
        if seen > EXPLAIN_IDENTITIES_MAX {
            break;
        }
    }
    let mut at = b.clone();
    while let Some((previous, link)) = came_from.get(&at) {
        explanation.path.push(Hop {
            from: previous.clone(),
            to: at.clone(),
            rule: link.rule.clone(),
            event_type: link.event_type.clone(),
            message_id: link.provenance.message_id.clone(),
            source: link.provenance.source.clone(),
            offset: link.provenance.offset,
            timestamp: tandem_core::time_util::format_iso8601_ms(link.provenance.time_ms),
        });
        at = previous.clone();
    }
    explanation.path.reverse();
    explanation.summary = if explanation.path.is_empty() {
        format!("{a} and {b} share a profile but no recorded link joins them")
    } else {
        format!(
            "{a} and {b} are one profile through {} event(s): {}",
            explanation.path.len(),
            explanation
                .path
                .iter()
                .map(|hop| format!(
                    "{} {} ({}: {} → {})",
                    hop.event_type, hop.message_id, hop.rule, hop.from, hop.to
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    Ok(explanation)
}

/// Profiles whose trait `name` equals `value` (JSON), scanning at most `scan_max` profiles from
/// the cursor `after`. Returns the matches and where the scan stopped.
pub fn search_by_trait(
    kv: &impl KvRead,
    name: &str,
    value: &serde_json::Value,
    after: Option<ProfileId>,
    limit: usize,
    scan_max: usize,
) -> KvResult<(Vec<ProfileRow>, Option<ProfileId>)> {
    let after_key = after.map(|id| id.to_be_bytes());
    let rows = kv.scan(
        Table::Profiles,
        &[],
        after_key.as_ref().map(|k| k.as_slice()),
        false,
        scan_max,
    )?;
    let mut found = Vec::new();
    let mut last = None;
    for (key, bytes) in rows {
        last = key.as_slice().try_into().ok().map(u64::from_be_bytes);
        let row: ProfileRow = model::decode(Table::Profiles, &bytes)?;
        let matches = row.traits.get(name).is_some_and(|t| {
            serde_json::from_str::<serde_json::Value>(&t.json).is_ok_and(|v| v == *value)
        });
        if matches {
            found.push(row);
            if found.len() >= limit {
                return Ok((found, last));
            }
        }
    }
    Ok((found, last))
}

/// The account identity of a group id.
pub fn group_identity(group_id: &str) -> Identity {
    Identity::new(GROUP_ID, group_id)
}
