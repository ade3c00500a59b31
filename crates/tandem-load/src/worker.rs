//! A worker: one connection, one request in flight, looping until the run ends.
//!
//! Life of a request:
//! 1. take the next request number from the shared counter (it fixes the messageIds);
//! 2. open loop: sleep until it is due (or send at once if overdue); closed loop: it is due now;
//! 3. copy a pooled body and patch messageIds, users and `sentAt` in place;
//! 4. send; on 429/503 (if retrying) wait `Retry-After` and resend the same bytes;
//! 5. on 200: count the events, record latency from the due time, hand the request number to
//!    the acknowledged-ids writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tandem_core::time_util::{format_iso8601_ms, now_ms};
use tokio::sync::mpsc;

use crate::body_pool::BodyPool;
use crate::connection::{Connection, Outcome, Target};
use crate::pacing::Schedule;
use crate::report::{LiveCounters, Tally};

/// Pause after a failed connect, so a server that is down is not hammered in a tight loop.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// What all workers of a run share.
pub struct Shared {
    pub target: Target,
    pub pool: Arc<BodyPool>,
    /// `Some` for open-loop pacing.
    pub schedule: Option<Schedule>,
    /// Requests due before this belong to the warm-up.
    pub measure_start: Instant,
    /// No request is started (or retried) after this.
    pub end: Instant,
    pub retry_on_pushback: bool,
    pub next_request: AtomicU64,
    /// Requests actually started; with pacing, those due but not started were left behind.
    pub requests_started: AtomicU64,
    pub live: LiveCounters,
}

pub struct WorkerTallies {
    pub warmup: Tally,
    pub measured: Tally,
}

pub struct Worker {
    shared: Arc<Shared>,
    acked: Option<mpsc::Sender<u64>>,
    connection: Option<Connection>,
    scratch: BytesMut,
    tallies: WorkerTallies,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, acked: Option<mpsc::Sender<u64>>) -> Worker {
        Worker {
            shared,
            acked,
            connection: None,
            scratch: BytesMut::new(),
            tallies: WorkerTallies {
                warmup: Tally::new(),
                measured: Tally::new(),
            },
        }
    }

    pub async fn run(mut self) -> WorkerTallies {
        while let Some((request, due)) = self.next_request().await {
            let measured = due >= self.shared.measure_start;
            let body =
                self.shared
                    .pool
                    .render(request, &format_iso8601_ms(now_ms()), &mut self.scratch);
            let outcome = self.deliver(body, measured).await;
            self.finish(request, due, outcome, measured).await;
        }
        self.tallies
    }

    async fn next_request(&self) -> Option<(u64, Instant)> {
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        // With pacing, requests still overdue at the end are dropped rather than sent late:
        // an overloaded server would otherwise stretch the run far past its duration.
        let due = self
            .shared
            .schedule
            .as_ref()
            .map_or(now, |schedule| schedule.due(request));
        if due >= self.shared.end || now >= self.shared.end {
            return None;
        }
        self.shared.requests_started.fetch_add(1, Ordering::Relaxed);
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        }
        Some((request, due))
    }

    /// Sends until the batch is acknowledged, refused for good, or pushed back with no time
    /// (or no permission) left to retry. Every attempt's failure is counted.
    async fn deliver(&mut self, body: Bytes, measured: bool) -> Outcome {
        loop {
            let outcome = self.send_once(body.clone(), measured).await;
            self.count_failure(&outcome, measured);
            let Outcome::PushedBack { retry_after, .. } = outcome else {
                return outcome;
            };
            if !self.shared.retry_on_pushback || Instant::now() + retry_after >= self.shared.end {
                return outcome;
            }
            self.tally(measured).retries += 1;
            tokio::time::sleep(retry_after).await;
        }
    }

    async fn send_once(&mut self, body: Bytes, measured: bool) -> Outcome {
        if self.connection.as_ref().is_none_or(Connection::is_closed) {
            match Connection::open(&self.shared.target).await {
                Ok(connection) => self.connection = Some(connection),
                Err(error) => {
                    self.connection = None;
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                    return Outcome::Transport(format!("connect: {error}"));
                }
            }
        }
        self.tally(measured).bytes_sent += body.len() as u64;
        let connection = self.connection.as_mut().expect("connected above");
        let outcome = connection.send_batch(&self.shared.target, body).await;
        if matches!(outcome, Outcome::Transport(_)) {
            // The connection's state is unknown after a failure; start afresh.
            self.connection = None;
        }
        outcome
    }

    fn count_failure(&mut self, outcome: &Outcome, measured: bool) {
        let live = &self.shared.live;
        let tally = match measured {
            true => &mut self.tallies.measured,
            false => &mut self.tallies.warmup,
        };
        match outcome {
            Outcome::Acked => {}
            Outcome::PushedBack { status, .. } => {
                *tally.failed_by_status.entry(*status).or_default() += 1;
                live.requests_failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Rejected { status, body } => {
                *tally.failed_by_status.entry(*status).or_default() += 1;
                tally
                    .error_samples
                    .entry(*status)
                    .or_insert_with(|| body.clone());
                live.requests_failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Transport(error) => {
                tally.transport_errors += 1;
                tally
                    .transport_error_sample
                    .get_or_insert_with(|| error.clone());
                live.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn finish(&mut self, request: u64, due: Instant, outcome: Outcome, measured: bool) {
        let now = Instant::now();
        let events = self.shared.pool.batch_events() as u64;
        let tally = self.tally(measured);
        tally.last_completion = Some(now);
        if outcome != Outcome::Acked {
            return;
        }
        tally.events_ok += events;
        tally.requests_ok += 1;
        tally.record_latency(now.saturating_duration_since(due));
        self.shared
            .live
            .events_ok
            .fetch_add(events, Ordering::Relaxed);
        self.shared.live.requests_ok.fetch_add(1, Ordering::Relaxed);
        if let Some(acked) = &self.acked {
            // Fails only if the writer stopped on an I/O error, which `run` then reports.
            let _ = acked.send(request).await;
        }
    }

    fn tally(&mut self, measured: bool) -> &mut Tally {
        match measured {
            true => &mut self.tallies.measured,
            false => &mut self.tallies.warmup,
        }
    }
}
