//! Evaluation inside the unify transaction: after a batch, the profiles it changed are
//! evaluated against every audience (in dependency order) and their membership changes written
//! with their outbox entries; a [`Job`] walks every profile when definitions change; a preview
//! evaluates an unsaved definition over every profile of a snapshot.

use crate::compile::{AudienceSet, CounterSpec};
use crate::condition::{lookup, Facts};
use crate::history;
use crate::state::{self, Job, OutboxEntry, ProfileAudiences, Reason, StoreState, Writer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tandem_core::limits::AUDIENCE_EVENT_IDENTIFIERS_MAX;
use tandem_unify::kv::{KvRead, KvResult, KvWrite, Table};
use tandem_unify::model::{self, ProfileId, ProfileRow};
use tandem_unify::{query, Changed, RecordSource};

/// A profile as the personalization cache keeps it after a change.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileView {
    pub id: ProfileId,
    /// Its user ids and anonymous ids (how a browser names the visitor).
    pub identities: Vec<(String, String)>,
    /// The captured traits (and computed traits) that it has.
    pub traits: BTreeMap<String, Value>,
    /// Audience ids it is in, sorted.
    pub audiences: Vec<String>,
}

/// What a batch (or a job step) did to audiences.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    /// The outbox entries written (the commit must be durable before they are drained).
    pub outbox: Vec<OutboxEntry>,
    /// Profiles evaluated, as they now are (for the personalization cache).
    pub profiles: Vec<ProfileView>,
    /// Profiles that no longer exist (merged away, split).
    pub gone: Vec<ProfileId>,
    /// The job ended with this step.
    pub job_finished: bool,
}

/// The progress of a job, for the API.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub job: Job,
    pub progress: f64,
}

/// The audiences of one workspace at work. Owned by the workspace's unify task, which calls
/// it inside its store transactions.
pub struct AudienceEngine {
    pub set: Arc<AudienceSet>,
    state: StoreState,
    /// By audience index: its memberships are being (re)built by the job.
    pending: Vec<bool>,
    /// By counter index: being recomputed by the job.
    pending_counters: Vec<bool>,
    /// Traits a [`ProfileView`] carries.
    pub capture_traits: Vec<String>,
}

impl AudienceEngine {
    /// An engine for `set` with the store's state; call [`AudienceEngine::plan`] before use.
    pub fn open(kv: &(impl KvRead + ?Sized), set: Arc<AudienceSet>) -> KvResult<AudienceEngine> {
        let state = state::state(kv)?;
        let mut engine = AudienceEngine {
            pending: vec![false; set.audiences.len()],
            pending_counters: vec![false; set.counters.len()],
            set,
            state,
            capture_traits: Vec::new(),
        };
        engine.mark_pending();
        Ok(engine)
    }

    pub fn job(&self) -> Option<JobView> {
        self.state.job.clone().map(|job| JobView {
            progress: job.progress(),
            job,
        })
    }

    fn mark_pending(&mut self) {
        self.pending = vec![false; self.set.audiences.len()];
        self.pending_counters = vec![false; self.set.counters.len()];
        if let Some(job) = &self.state.job {
            for id in &job.audiences {
                if let Some(index) = self.set.index_of(id) {
                    self.pending[index] = true;
                }
            }
            for name in &job.counters {
                if let Some(index) = self.set.counter_index(name) {
                    self.pending_counters[index] = true;
                }
            }
        }
    }

    /// Makes the memberships follow `set`: compares it with what they reflect (and a job in
    /// progress), and stores the job that makes them catch up — new and changed audiences and
    /// those referring to them evaluated over every profile, new counters counted from history,
    /// deleted audiences' members exited. A job in progress restarts from the first profile
    /// with the union of its work (re-evaluating is idempotent). `rebuilt`: the profiles were
    /// rebuilt from the log with every counter of `set` (counted whole): every audience is
    /// evaluated again and memberships of profiles that no longer exist exit. Returns whether
    /// a job runs.
    pub fn plan(
        &mut self,
        kv: &mut (impl KvWrite + ?Sized),
        set: Arc<AudienceSet>,
        reason: &str,
        now_ms: i64,
        rebuilt: bool,
    ) -> KvResult<bool> {
        let mut stored = state::state(&*kv)?;
        if rebuilt {
            stored.active.clear();
            stored.complete_counters = set.counters.iter().map(|c| c.name.clone()).collect();
            if let Some(job) = stored.job.as_mut() {
                job.counters.clear();
            }
        }
        let sweep_orphans = rebuilt;
        let running = stored.job.clone().unwrap_or_default();
        let needed: BTreeSet<String> = set.counters.iter().map(|c| c.name.clone()).collect();
        let complete: BTreeSet<String> = stored
            .complete_counters
            .iter()
            .filter(|name| needed.contains(*name) && !running.counters.contains(name))
            .cloned()
            .collect();
        let new_counters: Vec<String> = needed.difference(&complete).cloned().collect();
        let retired: Vec<String> = stored
            .complete_counters
            .iter()
            .chain(&running.counters)
            .chain(&running.retired_counters)
            .filter(|name| !needed.contains(*name))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let active: BTreeMap<&str, &str> = stored
            .active
            .iter()
            .map(|(id, fingerprint)| (id.as_str(), fingerprint.as_str()))
            .collect();
        let mut changed: Vec<usize> = Vec::new();
        for (index, audience) in set.audiences.iter().enumerate() {
            let up_to_date = active.get(audience.id.as_str())
                == Some(&audience.fingerprint.as_str())
                && !running.audiences.contains(&audience.id);
            let counts_anew = audience
                .counters
                .iter()
                .any(|c| new_counters.contains(&set.counters[*c].name));
            if !up_to_date || counts_anew {
                changed.push(index);
            }
        }
        let evaluate: Vec<String> = set
            .with_dependents(&changed)
            .into_iter()
            .map(|index| set.audiences[index].id.clone())
            .collect();
        let mut removed: Vec<(String, String)> = running
            .removed
            .iter()
            .filter(|(id, _)| set.index_of(id).is_none())
            .cloned()
            .collect();
        for (id, _) in &stored.active {
            if set.index_of(id).is_none() && !removed.iter().any(|(r, _)| r == id) {
                removed.push((id.clone(), id.clone()));
            }
        }
        for id in &running.audiences {
            if set.index_of(id).is_none() && !removed.iter().any(|(r, _)| r == id) {
                removed.push((id.clone(), id.clone()));
            }
        }
        let sweep = sweep_orphans || running.sweep_orphans;
        let job = (!evaluate.is_empty()
            || !new_counters.is_empty()
            || !retired.is_empty()
            || !removed.is_empty()
            || sweep)
            .then(|| Job {
                id: running.id + 1,
                audiences: evaluate.clone(),
                counters: new_counters,
                retired_counters: retired,
                removed,
                sweep_orphans: sweep,
                cursor: None,
                orphan_cursor: None,
                started_at_ms: now_ms,
                profiles_done: 0,
                entered: 0,
                exited: 0,
                reason: reason.to_string(),
            });
        let state = StoreState {
            active: set
                .audiences
                .iter()
                .filter(|a| !evaluate.contains(&a.id))
                .map(|a| (a.id.clone(), a.fingerprint.clone()))
                .collect(),
            complete_counters: complete.into_iter().collect(),
            job,
        };
        state::put_state(kv, &state)?;
        self.set = set;
        self.state = state;
        self.mark_pending();
        Ok(self.state.job.is_some())
    }

    /// Evaluates what `changed` touched, in the batch's transaction: moves the memberships of
    /// merged-away profiles to their survivors, evaluates every changed profile, exits the
    /// memberships of profiles that no longer exist.
    pub fn after_batch(
        &self,
        kv: &mut (impl KvWrite + ?Sized),
        changed: &Changed,
        history: &dyn RecordSource,
        now_ms: i64,
        reason: Reason,
    ) -> KvResult<Effects> {
        let mut effects = Effects::default();
        // Erased people leave every audience silently: an exit event would carry their
        // identifiers into the log again.
        for erased in &changed.erased {
            state::erase_profile(kv, *erased)?;
            effects.gone.push(*erased);
        }
        if self.set.audiences.is_empty()
            && state::profiles_with_memberships(&*kv, None, 1)?.is_empty()
        {
            return Ok(effects);
        }
        let mut writer = Writer::new(kv)?;
        // Merged-away profiles: their memberships go with them to the survivor, which decides.
        let mut inherited: BTreeMap<ProfileId, BTreeMap<String, Vec<ProfileId>>> = BTreeMap::new();
        let mut survivors: BTreeSet<ProfileId> = BTreeSet::new();
        for (absorbed, _) in &changed.merged {
            effects.gone.push(*absorbed);
            let Some(survivor) = query::resolve_profile(&crate::ReadRef(&*writer.kv), *absorbed)?
            else {
                continue;
            };
            survivors.insert(survivor.id);
            let mut row = state::profile_audiences(&*writer.kv, *absorbed)?;
            let moved = inherited.entry(survivor.id).or_default();
            for (audience, _) in row.memberships.clone() {
                moved.entry(audience.clone()).or_default().push(*absorbed);
                writer.forget(&mut row, *absorbed, &audience)?;
            }
            writer.save_profile(*absorbed, &row)?;
            // A survivor the job has passed holds the absorbed profile's partial counters: count
            // them again from the merged history.
            if let Some(job) = &self.state.job {
                if job.covers(survivor.id) && !job.covers(*absorbed) {
                    for (index, spec) in self.set.counters.iter().enumerate() {
                        if self.pending_counters[index] {
                            history::recompute(
                                &mut *writer.kv,
                                history,
                                survivor.id,
                                spec,
                                now_ms,
                            )?;
                        }
                    }
                }
            }
        }
        let mut targets: BTreeSet<ProfileId> = changed.profiles.clone();
        targets.extend(&survivors);
        targets.extend(changed.split.iter().copied());
        for profile_id in targets {
            let Some(profile) = model::get::<ProfileRow>(
                &crate::ReadRef(&*writer.kv),
                Table::Profiles,
                &profile_id.to_be_bytes(),
            )?
            else {
                // Gone (split away, or merged later in the batch and handled above).
                if !changed
                    .merged
                    .iter()
                    .any(|(absorbed, _)| *absorbed == profile_id)
                {
                    self.exit_all(&mut writer, profile_id, now_ms, Reason::Split)?;
                    effects.gone.push(profile_id);
                }
                continue;
            };
            let moved = inherited.remove(&profile_id).unwrap_or_default();
            let reason = if survivors.contains(&profile_id) {
                Reason::Merge
            } else {
                reason
            };
            let view =
                self.evaluate_and_write(&mut writer, &profile, now_ms, reason, &moved, None)?;
            effects.profiles.push(view);
        }
        effects.outbox = writer.finish()?;
        Ok(effects)
    }

    /// Evaluates every audience of `profile` (those the job has not reached skipped, unless
    /// `only` names the audiences to evaluate), writes the changes; returns the profile's view.
    #[allow(clippy::too_many_arguments)]
    fn evaluate_and_write<K: KvWrite + ?Sized>(
        &self,
        writer: &mut Writer<'_, K>,
        profile: &ProfileRow,
        now_ms: i64,
        reason: Reason,
        inherited: &BTreeMap<String, Vec<ProfileId>>,
        only: Option<&[bool]>,
    ) -> KvResult<ProfileView> {
        let mut row = state::profile_audiences(&*writer.kv, profile.id)?;
        let covered = self
            .state
            .job
            .as_ref()
            .is_none_or(|job| job.covers(profile.id));
        let selected: Vec<bool> = match only {
            Some(mask) => mask.to_vec(),
            None => self
                .pending
                .iter()
                .map(|pending| !pending || covered)
                .collect(),
        };
        let members = {
            let kv = crate::ReadRef(&*writer.kv);
            let mut read_counter = |index: usize| -> KvResult<u64> {
                history::stored_count(&kv, profile.id, &self.set.counters[index], now_ms)
            };
            evaluate(&self.set, profile, &row, &selected, &mut read_counter)?
        };
        let identities = || state::identities_of(profile, AUDIENCE_EVENT_IDENTIFIERS_MAX);
        for (index, audience) in self.set.audiences.iter().enumerate() {
            if !selected[index] {
                continue;
            }
            let before = row.contains(&audience.id);
            let after = members[index];
            let merged = inherited.get(&audience.id).cloned().unwrap_or_default();
            if after && !before {
                writer.change(
                    &mut row,
                    profile.id,
                    (&audience.id, &audience.name),
                    true,
                    now_ms,
                    reason,
                    merged.clone(),
                    identities(),
                )?;
            } else if !after && before {
                writer.change(
                    &mut row,
                    profile.id,
                    (&audience.id, &audience.name),
                    false,
                    now_ms,
                    reason,
                    Vec::new(),
                    identities(),
                )?;
            }
            if !after {
                // The merged-away profiles' membership ends with this one's (their rows went
                // with the merge; only the event is left to write).
                for gone in merged {
                    writer.announce(
                        gone,
                        (&audience.id, &audience.name),
                        false,
                        now_ms,
                        Reason::Merge,
                        vec![profile.id],
                        identities(),
                    )?;
                }
            }
        }
        writer.save_profile(profile.id, &row)?;
        Ok(self.view(profile, &row))
    }

    fn view(&self, profile: &ProfileRow, row: &ProfileAudiences) -> ProfileView {
        profile_view(profile, row, &self.capture_traits)
    }

    /// Exits every membership of a profile that no longer exists.
    fn exit_all<K: KvWrite + ?Sized>(
        &self,
        writer: &mut Writer<'_, K>,
        profile: ProfileId,
        now_ms: i64,
        reason: Reason,
    ) -> KvResult<()> {
        let mut row = state::profile_audiences(&*writer.kv, profile)?;
        for (audience, _) in row.memberships.clone() {
            let name = self
                .set
                .get(&audience)
                .map(|a| a.name.clone())
                .unwrap_or_else(|| audience.clone());
            writer.change(
                &mut row,
                profile,
                (&audience, &name),
                false,
                now_ms,
                reason,
                Vec::new(),
                Vec::new(),
            )?;
        }
        writer.save_profile(profile, &row)
    }

    /// One step of the job: at most `limit` profiles (or members of a deleted audience, or
    /// membership rows checked for orphans). The job's cursor is stored with the step, so a
    /// restart resumes where it was.
    pub fn step(
        &mut self,
        kv: &mut (impl KvWrite + ?Sized),
        history: &dyn RecordSource,
        now_ms: i64,
        limit: usize,
    ) -> KvResult<Effects> {
        let mut effects = Effects::default();
        let Some(mut job) = self.state.job.clone() else {
            return Ok(effects);
        };
        let mut writer = Writer::new(kv)?;
        if let Some((id, name)) = job.removed.first().cloned() {
            let members = state::members(&*writer.kv, &id, None, limit)?;
            for (profile, _) in &members {
                let mut row = state::profile_audiences(&*writer.kv, *profile)?;
                let identities = model::get::<ProfileRow>(
                    &crate::ReadRef(&*writer.kv),
                    Table::Profiles,
                    &profile.to_be_bytes(),
                )?
                .map(|p| state::identities_of(&p, AUDIENCE_EVENT_IDENTIFIERS_MAX))
                .unwrap_or_default();
                writer.change(
                    &mut row,
                    *profile,
                    (&id, &name),
                    false,
                    now_ms,
                    Reason::Deleted,
                    Vec::new(),
                    identities,
                )?;
                writer.save_profile(*profile, &row)?;
                job.exited += 1;
            }
            if members.len() < limit {
                job.removed.remove(0);
            }
        } else if job.cursor != Some(u64::MAX) && self.job_has_profile_work(&job) {
            let after = job.cursor.map(|c| c.to_be_bytes());
            let rows = writer.kv.scan(
                Table::Profiles,
                &[],
                after.as_ref().map(|a| a.as_slice()),
                false,
                limit,
            )?;
            let only: Vec<bool> = self.pending.clone();
            for (key, value) in &rows {
                let profile: ProfileRow = model::decode(Table::Profiles, value)?;
                for (index, spec) in self.set.counters.iter().enumerate() {
                    if self.pending_counters[index] {
                        history::recompute(&mut *writer.kv, history, profile.id, spec, now_ms)?;
                    }
                }
                for name in &job.retired_counters {
                    retire_named(&mut *writer.kv, profile.id, name)?;
                }
                let before = writer.written.len();
                let view = self.evaluate_and_write(
                    &mut writer,
                    &profile,
                    now_ms,
                    Reason::Backfill,
                    &BTreeMap::new(),
                    Some(&only),
                )?;
                for entry in &writer.written[before..] {
                    if entry.entered {
                        job.entered += 1;
                    } else {
                        job.exited += 1;
                    }
                }
                effects.profiles.push(view);
                job.profiles_done += 1;
                job.cursor = Some(u64::from_be_bytes(
                    key[..8].try_into().expect("profile keys"),
                ));
            }
            if rows.len() < limit {
                job.cursor = Some(u64::MAX);
            }
        } else if job.sweep_orphans {
            let rows = state::profiles_with_memberships(&*writer.kv, job.orphan_cursor, limit)?;
            for (profile, _) in &rows {
                let exists = writer
                    .kv
                    .get(Table::Profiles, &profile.to_be_bytes())?
                    .is_some();
                if !exists {
                    let before = writer.written.len();
                    self.exit_all(&mut writer, *profile, now_ms, Reason::Rebuild)?;
                    job.exited += (writer.written.len() - before) as u64;
                    effects.gone.push(*profile);
                }
                job.orphan_cursor = Some(*profile);
            }
            if rows.len() < limit {
                job.sweep_orphans = false;
            }
        } else {
            job.cursor = Some(u64::MAX);
        }
        let finished = job.removed.is_empty()
            && !job.sweep_orphans
            && (job.cursor == Some(u64::MAX) || !self.job_has_profile_work(&job));
        effects.outbox = writer.finish()?;
        if finished {
            self.state = StoreState {
                active: self
                    .set
                    .audiences
                    .iter()
                    .map(|a| (a.id.clone(), a.fingerprint.clone()))
                    .collect(),
                complete_counters: self.set.counters.iter().map(|c| c.name.clone()).collect(),
                job: None,
            };
            effects.job_finished = true;
        } else {
            self.state.job = Some(job);
        }
        state::put_state(kv, &self.state)?;
        self.mark_pending();
        Ok(effects)
    }

    fn job_has_profile_work(&self, job: &Job) -> bool {
        !job.audiences.is_empty() || !job.counters.is_empty() || !job.retired_counters.is_empty()
    }

    /// Counters counted over every profile's whole history (a preview may read them).
    pub fn complete_counters(&self) -> Vec<String> {
        self.set
            .counters
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.pending_counters[*index])
            .map(|(_, counter)| counter.name.clone())
            .collect()
    }

    /// Whether a job is running.
    pub fn busy(&self) -> bool {
        self.state.job.is_some()
    }
}

fn retire_named(kv: &mut (impl KvWrite + ?Sized), profile: ProfileId, name: &str) -> KvResult<()> {
    let key = model::computed_key(profile, name);
    kv.delete(Table::Computed, &key)
}

/// A profile as the personalization cache keeps it: user and anonymous ids, the `capture`d
/// traits (or computed traits) it has, its memberships.
pub fn profile_view(
    profile: &ProfileRow,
    row: &ProfileAudiences,
    capture: &[String],
) -> ProfileView {
    let mut traits = BTreeMap::new();
    for name in capture {
        let value = profile
            .traits
            .get(name)
            .map(|t| t.json.as_str())
            .or_else(|| profile.computed.get(name).map(String::as_str))
            .and_then(|json| serde_json::from_str::<Value>(json).ok());
        if let Some(value) = value {
            traits.insert(name.clone(), value);
        }
    }
    ProfileView {
        id: profile.id,
        identities: profile
            .identities
            .iter()
            .filter(|(i, _)| i.kind == "user_id" || i.kind == "anonymous_id")
            .map(|(i, _)| (i.kind.clone(), i.value.clone()))
            .collect(),
        traits,
        audiences: row.memberships.iter().map(|(id, _)| id.clone()).collect(),
    }
}

/// The memberships of `profile` after evaluating the audiences `selected` (by index; the
/// others keep their stored membership), in dependency order.
pub fn evaluate(
    set: &AudienceSet,
    profile: &ProfileRow,
    stored: &ProfileAudiences,
    selected: &[bool],
    counter: &mut dyn FnMut(usize) -> KvResult<u64>,
) -> KvResult<Vec<bool>> {
    let mut members: Vec<bool> = set
        .audiences
        .iter()
        .map(|audience| stored.contains(&audience.id))
        .collect();
    let mut facts = ProfileFacts {
        profile,
        counters: vec![None; set.counters.len()],
        counter,
        members: Vec::new(),
        error: None,
    };
    for (index, audience) in set.audiences.iter().enumerate() {
        if !selected[index] {
            continue;
        }
        facts.members = members.clone();
        members[index] = audience.condition.holds(&mut facts);
        if let Some(error) = facts.error.take() {
            return Err(error);
        }
    }
    Ok(members)
}

struct ProfileFacts<'a> {
    profile: &'a ProfileRow,
    counters: Vec<Option<u64>>,
    counter: &'a mut dyn FnMut(usize) -> KvResult<u64>,
    members: Vec<bool>,
    error: Option<tandem_unify::kv::KvError>,
}

impl Facts for ProfileFacts<'_> {
    fn trait_value(&mut self, path: &[String]) -> Option<Value> {
        trait_of(&self.profile.traits, path)
    }

    fn computed_value(&mut self, name: &str) -> Option<Value> {
        self.profile
            .computed
            .get(name)
            .and_then(|json| serde_json::from_str(json).ok())
    }

    fn counter(&mut self, counter: usize) -> u64 {
        if let Some(known) = self.counters[counter] {
            return known;
        }
        match (self.counter)(counter) {
            Ok(count) => {
                self.counters[counter] = Some(count);
                count
            }
            Err(error) => {
                self.error.get_or_insert(error);
                0
            }
        }
    }

    fn member_of(&mut self, audience: usize) -> bool {
        self.members.get(audience).copied().unwrap_or(false)
    }
}

/// A trait by dotted path: the whole path as a trait name first, else its first segment's
/// value navigated by the rest.
pub fn trait_of(
    traits: &BTreeMap<String, tandem_unify::model::TraitRow>,
    path: &[String],
) -> Option<Value> {
    if path.len() > 1 {
        if let Some(row) = traits.get(&path.join(".")) {
            return serde_json::from_str(&row.json).ok();
        }
    }
    let row = traits.get(path.first()?)?;
    let value: Value = serde_json::from_str(&row.json).ok()?;
    lookup(&value, &path[1..]).cloned()
}

/// The result of a preview: how many profiles the definition holds, and a few of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Preview {
    pub size: u64,
    pub profiles_scanned: u64,
    pub sample: Vec<ProfileId>,
    /// Counters counted from history for it (not yet counting), by name.
    pub counted_from_history: Vec<String>,
}

/// What a preview evaluates: audience `candidate` of `set` at `now_ms`, counting from history
/// the counters `from_history` marks (those the running engine does not keep complete), with up
/// to `samples_max` sample members.
pub struct PreviewQuery<'a> {
    pub set: &'a AudienceSet,
    pub candidate: usize,
    pub from_history: &'a [bool],
    pub now_ms: i64,
    pub samples_max: usize,
}

/// Evaluates `query` over the next `limit` profiles after `after`, adding to `preview`; the
/// cursor to go on from, or `None` when every profile was seen.
pub fn preview_chunk(
    kv: &(impl KvRead + ?Sized),
    history: &dyn RecordSource,
    query: &PreviewQuery<'_>,
    after: Option<ProfileId>,
    limit: usize,
    preview: &mut Preview,
) -> KvResult<Option<ProfileId>> {
    let PreviewQuery {
        set,
        candidate,
        from_history,
        now_ms,
        samples_max,
    } = *query;
    let after_key = after.map(|p| p.to_be_bytes());
    let rows = kv.scan(
        Table::Profiles,
        &[],
        after_key.as_ref().map(|a| a.as_slice()),
        false,
        limit,
    )?;
    let mut selected = vec![false; set.audiences.len()];
    selected[candidate] = true;
    let mut last = None;
    for (key, value) in &rows {
        let profile: ProfileRow = model::decode(Table::Profiles, value)?;
        let stored = state::profile_audiences(kv, profile.id)?;
        let times = times_needed(set, candidate);
        let mut read_counter = |index: usize| -> KvResult<u64> {
            let spec: &CounterSpec = &set.counters[index];
            if from_history[index] {
                history::count_from_history(
                    kv,
                    history,
                    profile.id,
                    spec,
                    now_ms,
                    times[index],
                    None,
                )
            } else {
                history::stored_count(kv, profile.id, spec, now_ms)
            }
        };
        let members = evaluate(set, &profile, &stored, &selected, &mut read_counter)?;
        if members[candidate] {
            preview.size += 1;
            if preview.sample.len() < samples_max {
                preview.sample.push(profile.id);
            }
        }
        preview.profiles_scanned += 1;
        last = Some(u64::from_be_bytes(
            key[..8].try_into().expect("profile keys"),
        ));
    }
    Ok(if rows.len() < limit { None } else { last })
}

/// For each counter, how far counting must go to decide the candidate's conditions on it (one
/// more than the largest threshold), or `None` to count everything.
fn times_needed(set: &AudienceSet, candidate: usize) -> Vec<Option<u64>> {
    let mut needed: Vec<Option<u64>> = vec![Some(0); set.counters.len()];
    set.audiences[candidate].condition.visit(&mut |node| {
        if let crate::condition::Condition::Event { counter, times, .. } = node {
            if let Some(current) = needed[*counter] {
                needed[*counter] = Some(current.max(times + 1));
            }
        }
    });
    needed
}
