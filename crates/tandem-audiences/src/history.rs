//! Counting an event condition from what the store already holds, for a counter that has not
//! been counting since the beginning (a new audience's preview and backfill).
//!
//! A profile's timeline (`Table::Timeline`: profile, event time, dedup key → type, name,
//! offset) holds every event it was resolved from, in time order. A counter without property
//! filters is answered from it alone: a range scan from the window's first day. A counter with
//! `where` filters needs each candidate event's properties: the timeline row names its log
//! offset, and only the candidates (right type and name, inside the window) are read from the
//! log. Events the log no longer retains cannot be checked and do not count (a counter that was
//! counting when they arrived keeps them).

use crate::compile::CounterSpec;
use serde_json::Value;
use tandem_core::envelope::EventEnvelope;
use tandem_unify::computed::ComputedState;
use tandem_unify::kv::{KvRead, KvResult, KvWrite, Table};
use tandem_unify::model::{self, ProfileId, TimelineRow};
use tandem_unify::RecordSource;

const DAY_MS: i64 = 86_400_000;
/// Timeline rows read per scan.
const TIMELINE_PAGE_ROWS: usize = 1024;

/// The earliest event time a counter counts at `now_ms`.
pub fn first_counted_ms(spec: &CounterSpec, now_ms: i64) -> Option<i64> {
    match (spec.window_days, spec.since_ms) {
        (Some(days), _) => Some((now_ms.div_euclid(DAY_MS) - days as i64 + 1) * DAY_MS),
        (None, Some(since)) => Some(since),
        (None, None) => None,
    }
}

fn event_time(key: &[u8]) -> i64 {
    let raw = u64::from_be_bytes(key[8..16].try_into().expect("timeline keys hold a time"));
    (raw ^ (1 << 63)) as i64
}

/// Reads an event's JSON back from the log.
pub fn event_at(history: &dyn RecordSource, offset: u64) -> Option<Value> {
    let payload = history.record(offset)?;
    let envelope = EventEnvelope::decode(&payload).ok()?;
    serde_json::from_slice(envelope.json).ok()
}

/// How many of `profile`'s events `spec` counts at `now_ms`, from its timeline (and the log
/// for property filters). Stops once the count reaches `stop_at`. When `state` is given, every
/// counted event is also added to it (to store the counter).
pub fn count_from_history(
    kv: &(impl KvRead + ?Sized),
    history: &dyn RecordSource,
    profile: ProfileId,
    spec: &CounterSpec,
    now_ms: i64,
    stop_at: Option<u64>,
    mut state: Option<&mut ComputedState>,
) -> KvResult<u64> {
    let prefix = profile.to_be_bytes();
    let mut after: Option<Vec<u8>> =
        first_counted_ms(spec, now_ms).map(|from| model::timeline_key(profile, from - 1, u64::MAX));
    let mut count = 0u64;
    loop {
        let rows = kv.scan(
            Table::Timeline,
            &prefix,
            after.as_deref(),
            false,
            TIMELINE_PAGE_ROWS,
        )?;
        let Some((last, _)) = rows.last() else {
            return Ok(count);
        };
        after = Some(last.clone());
        for (key, value) in &rows {
            let row: TimelineRow = model::decode(Table::Timeline, value)?;
            if row.event_type != spec.event_type || !spec.name_matches(row.name.as_deref()) {
                continue;
            }
            let json = if spec.needs_properties() {
                match event_at(history, row.offset) {
                    Some(json)
                        if crate::compile::event_matches(
                            &spec.event_type,
                            spec.event.as_deref(),
                            &spec.filters,
                            &json,
                        ) =>
                    {
                        json
                    }
                    _ => continue,
                }
            } else {
                Value::Null
            };
            count += 1;
            if let Some(state) = state.as_deref_mut() {
                state.add(&spec.def, &json, event_time(key), row.offset);
            }
            if stop_at.is_some_and(|stop| count >= stop) && state.is_none() {
                return Ok(count);
            }
        }
        if rows.len() < TIMELINE_PAGE_ROWS {
            return Ok(count);
        }
    }
}

/// Replaces `profile`'s stored state of `spec` by one counted from its history, keeping the
/// expiry index in step (the window sweep moves it forward from then on).
pub fn recompute(
    kv: &mut (impl KvWrite + ?Sized),
    history: &dyn RecordSource,
    profile: ProfileId,
    spec: &CounterSpec,
    now_ms: i64,
) -> KvResult<()> {
    let key = model::computed_key(profile, &spec.name);
    let old: Option<ComputedState> = model::get(&crate::ReadRef(&*kv), Table::Computed, &key)?;
    let mut state = ComputedState::default();
    count_from_history(&*kv, history, profile, spec, now_ms, None, Some(&mut state))?;
    state.expire(&spec.def, now_ms);
    let before = old.as_ref().and_then(|old| old.next_expiry_ms(&spec.def));
    let after = state.next_expiry_ms(&spec.def);
    if before != after {
        if let Some(at) = before {
            kv.delete(Table::Expiry, &model::expiry_key(at, profile, &spec.name))?;
        }
        if let Some(at) = after {
            kv.put(
                Table::Expiry,
                &model::expiry_key(at, profile, &spec.name),
                &[],
            )?;
        }
    }
    if state.is_empty() {
        kv.delete(Table::Computed, &key)
    } else {
        kv.put(Table::Computed, &key, &model::encode(&state))
    }
}

/// Deletes `profile`'s state of a counter no audience uses any more.
pub fn retire(
    kv: &mut (impl KvWrite + ?Sized),
    profile: ProfileId,
    spec_def: &tandem_unify::computed::ComputedDef,
) -> KvResult<()> {
    let key = model::computed_key(profile, &spec_def.name);
    if let Some(old) = model::get::<ComputedState>(&crate::ReadRef(&*kv), Table::Computed, &key)? {
        if let Some(at) = old.next_expiry_ms(spec_def) {
            kv.delete(
                Table::Expiry,
                &model::expiry_key(at, profile, &spec_def.name),
            )?;
        }
        kv.delete(Table::Computed, &key)?;
    }
    Ok(())
}

/// The stored count of `spec` for `profile` at `now_ms` (0 without a state).
pub fn stored_count(
    kv: &(impl KvRead + ?Sized),
    profile: ProfileId,
    spec: &CounterSpec,
    now_ms: i64,
) -> KvResult<u64> {
    let key = model::computed_key(profile, &spec.name);
    let state: Option<ComputedState> = model::get(&crate::ReadRef(kv), Table::Computed, &key)?;
    Ok(state
        .map(|state| state.value(&spec.def, now_ms).as_u64().unwrap_or(0))
        .unwrap_or(0))
}
