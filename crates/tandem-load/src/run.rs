//! `run`: builds the bodies, starts the workers, shows progress, merges their tallies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::time_util::{format_iso8601_ms, now_ms};
use tokio::task::JoinSet;

use crate::acked::AckedRecorder;
use crate::body_pool::{BodyPool, PoolSpec};
use crate::connection::{Connection, Target};
use crate::error::LoadError;
use crate::options::LoadOptions;
use crate::pacing::Schedule;
use crate::report::{LiveCounters, LoadReport, Snapshot, Tally};
use crate::worker::{Shared, Worker, WorkerTallies};

/// How often the progress callback is called.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Sends Segment batches to `options.url` for `options.warmup + options.duration` and reports
/// what the server acknowledged. Fails only if the run cannot start (bad options, server not
/// reachable) or the acknowledged-ids file cannot be written; failed requests are counted.
///
/// `progress` is called about once a second from this future itself (not from a spawned task),
/// which makes the future not `Send`: drive it with `block_on` or await it directly.
pub async fn run(
    options: LoadOptions,
    progress: Option<&dyn Fn(&Snapshot)>,
) -> Result<LoadReport, LoadError> {
    options.validate()?;
    let target = Target::parse(&options.url, &options.write_key)?;
    // Fail fast on a wrong address instead of reporting a run of connection errors.
    Connection::open(&target)
        .await
        .map_err(|source| LoadError::Connect {
            url: options.url.clone(),
            source,
        })?;
    let pool = Arc::new(build_pool(&options)?);
    let acked = match &options.record_acked {
        Some(path) => Some(AckedRecorder::start(path, pool.clone())?),
        None => None,
    };
    let start = Instant::now();
    let measure_start = start + options.warmup;
    let shared = Arc::new(Shared {
        target,
        pool: pool.clone(),
        schedule: options
            .rate_events_per_second
            .map(|rate| Schedule::new(start, options.batch_events as u64, rate)),
        measure_start,
        end: measure_start + options.duration,
        retry_on_pushback: options.retry_on_pushback,
        next_request: AtomicU64::new(0),
        requests_started: AtomicU64::new(0),
        live: LiveCounters::default(),
    });
    let mut workers = JoinSet::new();
    for _ in 0..options.concurrency {
        workers.spawn(Worker::new(shared.clone(), acked.as_ref().map(AckedRecorder::sender)).run());
    }
    let (measured, warmup) = collect(workers, &shared, start, progress).await;
    if let Some(acked) = acked {
        acked.finish().await?;
    }
    let mut report = LoadReport::from_tallies(measured, &warmup, measure_start, &options);
    if let Some(schedule) = &shared.schedule {
        let due = schedule.requests_due_within(shared.end - start);
        report.requests_behind_schedule =
            due.saturating_sub(shared.requests_started.load(Ordering::Relaxed));
    }
    Ok(report)
}

fn build_pool(options: &LoadOptions) -> Result<BodyPool, LoadError> {
    let spec = PoolSpec {
        batch_events: options.batch_events,
        event_bytes: options.event_bytes,
        users: options.users,
        seed: options.seed,
        run_prefix: PoolSpec::random_run_prefix(),
        timestamp: format_iso8601_ms(now_ms()),
    };
    BodyPool::build(&spec).map_err(LoadError::InvalidOptions)
}

/// Waits for every worker, calling `progress` on each tick, and merges their tallies.
async fn collect(
    mut workers: JoinSet<WorkerTallies>,
    shared: &Shared,
    start: Instant,
    progress: Option<&dyn Fn(&Snapshot)>,
) -> (Tally, Tally) {
    let (mut measured, mut warmup) = (Tally::new(), Tally::new());
    let mut ticks = tokio::time::interval_at((start + PROGRESS_INTERVAL).into(), PROGRESS_INTERVAL);
    let mut previous: Option<Snapshot> = None;
    loop {
        tokio::select! {
            joined = workers.join_next() => {
                let Some(joined) = joined else { break };
                let tallies = joined.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
                measured.merge(tallies.measured);
                warmup.merge(tallies.warmup);
            }
            _ = ticks.tick(), if progress.is_some() => {
                let now = Instant::now();
                let snapshot = shared.live.snapshot(now - start, now < shared.measure_start, previous.as_ref());
                if let Some(progress) = progress {
                    progress(&snapshot);
                }
                previous = Some(snapshot);
            }
        }
    }
    (measured, warmup)
}
