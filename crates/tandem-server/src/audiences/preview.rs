//! Previews: an unsaved definition evaluated over every current profile, from the unify store
//! (profiles, memberships of the audiences it refers to, the counters that exist; event
//! conditions no counter answers yet are counted from each profile's timeline, reading from
//! the log only the candidate events of conditions with property filters). A preview runs in a
//! blocking task, snapshot chunk by snapshot chunk, with its progress readable meanwhile.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tandem_audiences::engine::{preview_chunk, PreviewQuery};
use tandem_audiences::{AudienceSet, Preview};
use tandem_core::limits::{
    AUDIENCE_PREVIEW_CHUNK_PROFILES, AUDIENCE_PREVIEW_JOBS_KEPT, AUDIENCE_PREVIEW_SAMPLES,
};
use tandem_unify::model::ProfileId;
use tandem_unify::{RecordSource, UnifyStore};

/// One preview's state.
pub struct PreviewJob {
    pub id: String,
    pub audience: String,
    pub started_at_ms: i64,
    started: Instant,
    scanned: AtomicU64,
    matched: AtomicU64,
    /// The share of the id space visited (profile ids are uniform hashes).
    progress_millionths: AtomicU64,
    done: AtomicBool,
    result: Mutex<Option<Result<(Preview, u128), String>>>,
    pub counted_from_history: Vec<String>,
}

/// What the API shows of a preview.
#[derive(Clone, Debug, Serialize)]
pub struct PreviewView {
    pub id: String,
    pub audience: String,
    pub status: &'static str,
    pub progress: f64,
    pub profiles_scanned: u64,
    pub size: u64,
    pub took_ms: Option<u128>,
    /// Event conditions no counter answered yet, counted from the profiles' timelines.
    pub counted_from_history: Vec<String>,
    #[serde(skip)]
    pub sample: Vec<ProfileId>,
    pub error: Option<String>,
}

impl PreviewJob {
    pub fn view(&self) -> PreviewView {
        let result = self.result.lock().clone();
        let (status, size, took, sample, error) = match result {
            None => (
                "running",
                self.matched.load(Ordering::Relaxed),
                None,
                Vec::new(),
                None,
            ),
            Some(Ok((preview, took))) => ("done", preview.size, Some(took), preview.sample, None),
            Some(Err(error)) => ("failed", 0, None, Vec::new(), Some(error)),
        };
        PreviewView {
            id: self.id.clone(),
            audience: self.audience.clone(),
            status,
            progress: if self.done.load(Ordering::Acquire) {
                1.0
            } else {
                self.progress_millionths.load(Ordering::Relaxed) as f64 / 1e6
            },
            profiles_scanned: self.scanned.load(Ordering::Relaxed),
            size,
            took_ms: took,
            counted_from_history: self.counted_from_history.clone(),
            sample,
            error,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// The previews of a workspace, the newest kept for polling.
#[derive(Default)]
pub struct Previews {
    jobs: Mutex<VecDeque<Arc<PreviewJob>>>,
    next: AtomicU64,
}

impl Previews {
    pub fn get(&self, id: &str) -> Option<Arc<PreviewJob>> {
        self.jobs.lock().iter().find(|job| job.id == id).cloned()
    }

    /// Starts a preview of `set.audiences[candidate]`; `from_history` says, per counter of `set`,
    /// whether to count it from history (no complete counter exists for it).
    pub fn start(
        &self,
        store: Arc<UnifyStore>,
        history: Arc<dyn RecordSource + Send + Sync>,
        set: Arc<AudienceSet>,
        candidate: usize,
        from_history: Vec<bool>,
    ) -> Arc<PreviewJob> {
        let id = super::next_id(&self.next, "prv");
        let counted_from_history = set
            .counters
            .iter()
            .zip(&from_history)
            .filter(|(_, fresh)| **fresh)
            .filter(|(counter, _)| {
                set.audiences[candidate]
                    .counters
                    .iter()
                    .any(|c| set.counters[*c].name == counter.name)
            })
            .map(|(counter, _)| describe(counter))
            .collect();
        let job = Arc::new(PreviewJob {
            id,
            audience: set.audiences[candidate].id.clone(),
            started_at_ms: tandem_core::time_util::now_ms(),
            started: Instant::now(),
            scanned: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            progress_millionths: AtomicU64::new(0),
            done: AtomicBool::new(false),
            result: Mutex::new(None),
            counted_from_history,
        });
        {
            let mut jobs = self.jobs.lock();
            jobs.push_back(job.clone());
            while jobs.len() > AUDIENCE_PREVIEW_JOBS_KEPT {
                jobs.pop_front();
            }
        }
        let running = job.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = run(
                &store,
                history.as_ref(),
                &set,
                candidate,
                &from_history,
                &running,
            );
            let took = running.started.elapsed().as_millis();
            *running.result.lock() = Some(
                outcome
                    .map(|preview| (preview, took))
                    .map_err(|e| e.to_string()),
            );
            running.done.store(true, Ordering::Release);
        });
        job
    }
}

fn describe(counter: &tandem_audiences::CounterSpec) -> String {
    let name = counter.event.as_deref().unwrap_or("*");
    let mut text = format!("{} `{name}`", counter.event_type);
    if counter.needs_properties() {
        text.push_str(" with property filters (candidate events read from the log)");
    }
    text
}

fn run(
    store: &UnifyStore,
    history: &dyn RecordSource,
    set: &AudienceSet,
    candidate: usize,
    from_history: &[bool],
    job: &PreviewJob,
) -> Result<Preview, tandem_unify::kv::KvError> {
    let mut preview = Preview::default();
    let mut after: Option<ProfileId> = None;
    let query = PreviewQuery {
        set,
        candidate,
        from_history,
        now_ms: tandem_core::time_util::now_ms(),
        samples_max: AUDIENCE_PREVIEW_SAMPLES,
    };
    loop {
        let next = store.read(|kv| {
            preview_chunk(
                kv,
                history,
                &query,
                after,
                AUDIENCE_PREVIEW_CHUNK_PROFILES,
                &mut preview,
            )
        })?;
        job.scanned
            .store(preview.profiles_scanned, Ordering::Relaxed);
        job.matched.store(preview.size, Ordering::Relaxed);
        match next {
            Some(cursor) => {
                job.progress_millionths.store(
                    (cursor as f64 / u64::MAX as f64 * 1e6) as u64,
                    Ordering::Relaxed,
                );
                after = Some(cursor);
            }
            None => return Ok(preview),
        }
    }
}
