//! The per-connection delivery consumer: reads the workspace log from its committed offset,
//! filters and shapes each record, spreads the events over lanes (per-user order), and commits
//! only below the lowest event not yet delivered or dead-lettered.

use crate::batcher::Batcher;
use crate::connection::{Connection, RecordView, Skip, StoredRecordView};
use crate::destination::{
    BatchLimits, BatchOutcome, Destination, EventJson, OutboundEvent, Outcome,
};
use crate::dlq::{Dlq, DlqEntry};
use crate::retry::{random_unit, retry_delay, CircuitBreaker, Permit, RetryBudget};
use crate::stats::{AlertKind, Alerts, ConnectionStats, Counted};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_core::limits::{DELIVERY_COMMIT_INTERVAL_MS, DELIVERY_IN_FLIGHT_RECORDS_MAX};
use tandem_core::time_util::now_ms;
use tandem_core::EventEnvelope;
use tandem_log::{Consumer, EventLog};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// Records read from the log per step.
const READ_RECORDS_MAX: usize = 1000;

/// The consumer name of a connection's worker in the log (`:` is not allowed in consumer names).
pub fn consumer_name(connection_id: &str) -> String {
    format!("deliver.{connection_id}")
}

/// Everything a connection's delivery needs, shared by its worker, lanes, replays and backfills.
pub struct Delivery {
    pub connection: Arc<Connection>,
    pub destination: Arc<dyn Destination>,
    pub breaker: Arc<CircuitBreaker>,
    pub stats: Arc<ConnectionStats>,
    pub dlq: Arc<Dlq>,
    pub alerts: Arc<Alerts>,
    pub limits: BatchLimits,
    rate: Mutex<Option<Instant>>,
}

/// One event in flight, with what a dead letter needs.
#[derive(Debug, Clone)]
pub struct Item {
    pub event: OutboundEvent,
    pub index: u32,
    /// The event as logged (what a dead letter keeps).
    pub original: EventJson,
    pub bytes: usize,
}

/// How an item's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    Delivered,
    Dead { error: String, attempts: u32 },
}

impl Delivery {
    pub fn new(
        connection: Arc<Connection>,
        destination: Arc<dyn Destination>,
        breaker: Arc<CircuitBreaker>,
        dlq: Arc<Dlq>,
        alerts: Arc<Alerts>,
    ) -> Delivery {
        let limits = destination.batch_limits().effective(&connection.delivery);
        let stats = Arc::new(ConnectionStats::new(
            &connection.workspace_id,
            &connection.id,
            &connection.destination_id,
        ));
        Delivery {
            connection,
            destination,
            breaker,
            stats,
            dlq,
            alerts,
            limits,
            rate: Mutex::new(None),
        }
    }

    fn alert(&self, kind: AlertKind, message: String) {
        let connection = &self.connection;
        self.alerts.raise(
            kind,
            &connection.workspace_id,
            &connection.id,
            &connection.destination_id,
            message,
        );
    }

    /// Waits for the connection's rate limit to allow `events` more.
    async fn pace(&self, events: usize) {
        let per_second = self.connection.delivery.rate_limit_per_second;
        if per_second == 0 {
            return;
        }
        let wait_until = {
            let mut next = self.rate.lock();
            let now = Instant::now();
            let start = next.map_or(now, |next| next.max(now));
            *next = Some(start + Duration::from_secs_f64(events as f64 / per_second as f64));
            start
        };
        tokio::time::sleep_until(wait_until.into()).await;
    }

    async fn send_once(&self, batch: &[OutboundEvent]) -> BatchOutcome {
        let timeout = Duration::from_millis(self.connection.delivery.request_timeout_ms);
        match tokio::time::timeout(timeout, self.destination.send(batch)).await {
            Ok(outcome) => outcome,
            Err(_) => BatchOutcome::All(Outcome::retry(format!(
                "timeout after {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// Delivers `items` in order until each is delivered or dead: retries transient failures
    /// within the retry budget (backoff with full jitter, `Retry-After`, circuit breaker), and
    /// bisects a batch refused as a whole until the refused event is alone.
    pub async fn deliver(&self, items: Vec<Item>, retry_max: Duration) -> Vec<(Item, Final)> {
        let mut results = Vec::with_capacity(items.len());
        let mut groups = VecDeque::from([items]);
        while let Some(group) = groups.pop_front() {
            match self.send_with_retries(&group, retry_max).await {
                GroupResult::RejectedWhole(_) if group.len() > 1 => {
                    // Halves in order, left first: per-user order survives the bisection.
                    let mut left = group;
                    let right = left.split_off(left.len() / 2);
                    groups.push_front(right);
                    groups.push_front(left);
                }
                GroupResult::RejectedWhole(error) => {
                    results.extend(group.into_iter().map(|item| {
                        (
                            item,
                            Final::Dead {
                                error: error.clone(),
                                attempts: 1,
                            },
                        )
                    }));
                }
                GroupResult::Each(finals) => results.extend(group.into_iter().zip(finals)),
            }
        }
        results
    }

    async fn send_with_retries(&self, group: &[Item], retry_max: Duration) -> GroupResult {
        let mut finals: Vec<Option<Final>> = vec![None; group.len()];
        let mut open: Vec<usize> = (0..group.len()).collect();
        let mut budget = RetryBudget::new(retry_max);
        let mut attempt = 0u32;
        loop {
            // Taken before asking and sending, so a closing by another lane meanwhile is seen.
            let mut closings = self.breaker.watch();
            loop {
                match self.breaker.permit(Instant::now()) {
                    Permit::Send | Permit::Probe => break,
                    Permit::Wait(wait) => self.breaker.wait(wait, &mut closings).await,
                }
            }
            self.pace(open.len()).await;
            let batch: Vec<OutboundEvent> = open
                .iter()
                .map(|&index| group[index].event.clone())
                .collect();
            let outcome = self.send_once(&batch).await;
            attempt += 1;
            let outcomes: Vec<Outcome> = match outcome {
                BatchOutcome::All(Outcome::Reject { error }) if open.len() == group.len() => {
                    self.breaker.succeeded();
                    self.note_attempt(open.len(), false, true);
                    self.stats.count(Counted::Rejected, open.len() as u64);
                    self.stats.error("reject", &error);
                    return GroupResult::RejectedWhole(error);
                }
                BatchOutcome::All(outcome) => vec![outcome; open.len()],
                BatchOutcome::PerEvent(outcomes) if outcomes.len() == open.len() => outcomes,
                BatchOutcome::PerEvent(outcomes) => {
                    let error = format!(
                        "destination answered {} outcomes for {} events",
                        outcomes.len(),
                        open.len()
                    );
                    vec![Outcome::retry(error); open.len()]
                }
            };
            let mut retry_error = None;
            let mut retry_after = None;
            let mut still_open = Vec::new();
            let mut delivered_times = Vec::new();
            for (&index, outcome) in open.iter().zip(outcomes) {
                match outcome {
                    Outcome::Delivered => {
                        delivered_times.push(group[index].event.received_at_ms);
                        finals[index] = Some(Final::Delivered);
                    }
                    Outcome::Reject { error } => {
                        self.stats.count(Counted::Rejected, 1);
                        self.stats.error("reject", &error);
                        finals[index] = Some(Final::Dead {
                            error,
                            attempts: attempt,
                        });
                    }
                    Outcome::Retry { error, after } => {
                        retry_after = retry_after.max(after);
                        retry_error = Some(error);
                        still_open.push(index);
                    }
                }
            }
            self.stats.delivered(&delivered_times);
            let Some(error) = retry_error else {
                self.breaker.succeeded();
                let rejected = finals
                    .iter()
                    .any(|final_| matches!(final_, Some(Final::Dead { .. })));
                self.note_attempt(open.len(), false, rejected);
                break;
            };
            self.note_attempt(open.len(), true, false);
            self.stats.count(Counted::Retried, still_open.len() as u64);
            self.stats.error("retry", &error);
            if self.breaker.failed(Instant::now(), retry_after) {
                self.alert(
                    AlertKind::CircuitOpen,
                    format!("circuit opened after repeated failures: {error}"),
                );
            }
            open = still_open;
            if !budget.failed(Instant::now()) {
                let message = format!(
                    "retry budget of {} s spent; last error: {error}",
                    retry_max.as_secs()
                );
                self.stats.error("dlq", &message);
                for &index in &open {
                    finals[index] = Some(Final::Dead {
                        error: message.clone(),
                        attempts: attempt,
                    });
                }
                break;
            }
            let waiting = open.len() as u64;
            self.stats
                .retrying
                .fetch_add(waiting, std::sync::atomic::Ordering::Relaxed);
            // The own backoff, cut short by the circuit: its next probe when it is open (one
            // lane probes, the others wait on it), or its closing.
            let delay = retry_delay(attempt - 1, retry_after, random_unit());
            self.breaker.wait(delay, &mut closings).await;
            self.stats
                .retrying
                .fetch_sub(waiting, std::sync::atomic::Ordering::Relaxed);
        }
        GroupResult::Each(
            finals
                .into_iter()
                .map(|final_| final_.expect("every event settled"))
                .collect(),
        )
    }

    fn note_attempt(&self, events: usize, failed: bool, rejected: bool) {
        if let Some((kind, message)) = self.stats.attempt(events as u64, failed, rejected) {
            self.alert(kind, message);
        }
    }

    /// Dead letters for `dead` items (durable when this returns).
    pub async fn bury(&self, dead: Vec<(Item, String, u32)>) -> Result<(), String> {
        if dead.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let entries: Vec<DlqEntry> = dead
            .into_iter()
            .map(|(item, error, attempts)| DlqEntry {
                connection: self.connection.id.clone(),
                offset: item.event.offset,
                index: item.index,
                message_id: item.event.message_id.clone(),
                event_type: item.event.event_type.as_str().to_string(),
                source_id: item.event.source_id.clone(),
                received_at_ms: item.event.received_at_ms,
                original: item.original.to_value(),
                error,
                attempts,
                first_failure_ms: now,
                last_failure_ms: now,
            })
            .collect();
        let count = entries.len() as u64;
        let dlq = self.dlq.clone();
        tokio::task::spawn_blocking(move || dlq.insert(&entries))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| error.to_string())?;
        self.stats.count(Counted::Dlq, count);
        metrics::gauge!("tandem_delivery_dlq_events", "workspace" => self.connection.workspace_id.clone(), "connection" => self.connection.id.clone(), "destination" => self.connection.destination_id.clone())
            .set(self.dlq.count(&self.connection.id) as f64);
        Ok(())
    }
}

enum GroupResult {
    RejectedWhole(String),
    Each(Vec<Final>),
}

/// Offsets read but not finished: the worker commits below the lowest.
#[derive(Debug, Default)]
pub struct Tracker {
    /// offset → events of that record still in flight.
    pending: BTreeMap<u64, u32>,
    /// One past the last record fully dispatched.
    position: u64,
}

impl Tracker {
    pub fn new(position: u64) -> Tracker {
        Tracker {
            pending: BTreeMap::new(),
            position,
        }
    }
    pub fn add(&mut self, offset: u64, events: u32) {
        if events > 0 {
            *self.pending.entry(offset).or_default() += events;
        }
    }
    pub fn done(&mut self, offset: u64) {
        if let Some(count) = self.pending.get_mut(&offset) {
            *count -= 1;
            if *count == 0 {
                self.pending.remove(&offset);
            }
        }
    }
    pub fn dispatched(&mut self, next: u64) {
        self.position = self.position.max(next);
    }
    /// The offset safe to commit: everything before it is delivered or dead-lettered.
    pub fn committable(&self) -> u64 {
        self.pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.position)
            .min(self.position)
    }
    pub fn records_in_flight(&self) -> usize {
        self.pending.len()
    }
}

/// A running connection worker; dropping or [`Worker::stop`] ends it (in-flight events are
/// redelivered by the next worker: at-least-once).
pub struct Worker {
    pub delivery: Arc<Delivery>,
    tasks: Vec<JoinHandle<()>>,
    tracker: Arc<Mutex<Tracker>>,
    log: Arc<dyn EventLog>,
}

impl Worker {
    /// Starts the worker: a new connection starts at the log's end (backfill sends history), an
    /// existing one resumes at its committed offset.
    pub fn start(log: Arc<dyn EventLog>, delivery: Arc<Delivery>) -> std::io::Result<Worker> {
        let name = consumer_name(&delivery.connection.id);
        let consumer = Consumer::new(log.clone(), &name, log.stats().end_offset)?;
        if log.committed_offset(&name)?.is_none() {
            log.commit_offset(&name, consumer.position())?;
        }
        let tracker = Arc::new(Mutex::new(Tracker::new(consumer.position())));
        let progress = Arc::new(Notify::new());
        let lanes = delivery.connection.delivery.concurrency.max(1);
        let mut senders = Vec::with_capacity(lanes);
        let mut tasks = Vec::new();
        for _ in 0..lanes {
            let (sender, receiver) = mpsc::channel(delivery.limits.events_max * 2);
            senders.push(sender);
            tasks.push(tokio::spawn(run_lane(
                delivery.clone(),
                receiver,
                tracker.clone(),
                progress.clone(),
            )));
        }
        tasks.push(tokio::spawn(run_reader(
            consumer,
            delivery.clone(),
            senders,
            tracker.clone(),
            progress,
        )));
        tasks.push(tokio::spawn(run_committer(
            log.clone(),
            name,
            delivery.clone(),
            tracker.clone(),
        )));
        Ok(Worker {
            delivery,
            tasks,
            tracker,
            log,
        })
    }

    /// The committed position the worker has reached (records before it are done).
    pub fn committable(&self) -> u64 {
        self.tracker.lock().committable()
    }

    /// Stops every task and commits what is done.
    pub fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        let committable = self.tracker.lock().committable();
        let name = consumer_name(&self.delivery.connection.id);
        if self
            .log
            .committed_offset(&name)
            .ok()
            .flatten()
            .is_some_and(|committed| committable > committed)
        {
            let _ = self.log.commit_offset(&name, committable);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn run_committer(
    log: Arc<dyn EventLog>,
    name: String,
    delivery: Arc<Delivery>,
    tracker: Arc<Mutex<Tracker>>,
) {
    let mut committed = log.committed_offset(&name).ok().flatten().unwrap_or(0);
    let labels = [
        ("workspace", delivery.connection.workspace_id.clone()),
        ("connection", delivery.connection.id.clone()),
        ("destination", delivery.connection.destination_id.clone()),
    ];
    loop {
        tokio::time::sleep(Duration::from_millis(DELIVERY_COMMIT_INTERVAL_MS)).await;
        let next = tracker.lock().committable();
        if next > committed {
            let log = log.clone();
            let consumer = name.clone();
            match tokio::task::spawn_blocking(move || log.commit_offset(&consumer, next)).await {
                Ok(Ok(())) => committed = next,
                Ok(Err(error)) => {
                    tracing::error!(consumer = %name, %error, "cannot commit the delivery offset")
                }
                Err(_) => return,
            }
        }
        let lag = log.stats().end_offset.saturating_sub(committed);
        metrics::gauge!("tandem_delivery_lag_records", &labels).set(lag as f64);
        let open = delivery.breaker.state_name() != "closed";
        metrics::gauge!("tandem_delivery_circuit_open", &labels).set(if open { 1.0 } else { 0.0 });
    }
}

async fn run_reader(
    mut consumer: Consumer,
    delivery: Arc<Delivery>,
    lanes: Vec<mpsc::Sender<Item>>,
    tracker: Arc<Mutex<Tracker>>,
    progress: Arc<Notify>,
) {
    let ordered = delivery.destination.ordered();
    let mut round_robin = 0usize;
    loop {
        loop {
            let notified = progress.notified();
            if tracker.lock().records_in_flight() < DELIVERY_IN_FLIGHT_RECORDS_MAX {
                break;
            }
            notified.await;
        }
        let records = match consumer.next_batch(READ_RECORDS_MAX).await {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(connection = %delivery.connection.id, %error, "delivery cannot read the log");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for record in records {
            let items = loop {
                let prepared = prepare(
                    &delivery,
                    record.offset,
                    record.timestamp_ms,
                    &record.payload,
                );
                match prepared.await {
                    Ok(items) => break items,
                    Err(error) => {
                        tracing::error!(connection = %delivery.connection.id, %error, "cannot dead-letter a failed transformation; retrying the record");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            tracker.lock().add(record.offset, items.len() as u32);
            for item in items {
                let lane = if ordered {
                    (xxhash_rust::xxh3::xxh3_64(item.event.user_key.as_bytes())
                        % lanes.len() as u64) as usize
                } else {
                    round_robin = (round_robin + 1) % lanes.len();
                    round_robin
                };
                if lanes[lane].send(item).await.is_err() {
                    return;
                }
            }
            tracker.lock().dispatched(record.offset + 1);
        }
    }
}

/// The items of one log record for `delivery`: none when filtered or dropped; a failed
/// transformation is dead-lettered here (durably) and gives none.
pub async fn prepare(
    delivery: &Delivery,
    offset: u64,
    received_at_ms: i64,
    payload: &bytes::Bytes,
) -> Result<Vec<Item>, String> {
    let connection = &delivery.connection;
    let Ok(envelope) = EventEnvelope::decode(payload) else {
        tracing::warn!(connection = %connection.id, offset, "skipping a record that is not an event envelope");
        return Ok(Vec::new());
    };
    if connection
        .accepts_header(envelope.source_id, envelope.event_type)
        .is_err()
    {
        delivery.stats.count(Counted::Filtered, 1);
        return Ok(Vec::new());
    }
    if let Some(decision) = connection.consent_decision(envelope.json) {
        if !decision.allowed {
            delivery.stats.count(Counted::ConsentDenied, 1);
            return Ok(Vec::new());
        }
    }
    let bytes = envelope.json.len();
    if connection.sends_as_stored() {
        let stored = StoredRecordView {
            offset,
            received_at_ms,
            event_type: envelope.event_type,
            source_id: envelope.source_id,
            json: payload.slice_ref(envelope.json),
        };
        match connection.outbound_stored(&stored) {
            Some(Ok(event)) => {
                let original = event.event.clone();
                return Ok(vec![Item {
                    event,
                    index: 0,
                    original,
                    bytes,
                }]);
            }
            Some(Err(_)) => {
                delivery.stats.count(Counted::Filtered, 1);
                return Ok(Vec::new());
            }
            None => {}
        }
    }
    let Ok(original) = serde_json::from_slice::<serde_json::Value>(envelope.json) else {
        tracing::warn!(connection = %connection.id, offset, "skipping a record whose JSON does not parse");
        return Ok(Vec::new());
    };
    if let Err(skip) = connection.accepts_event(envelope.event_type, &original) {
        let _: Skip = skip;
        delivery.stats.count(Counted::Filtered, 1);
        return Ok(Vec::new());
    }
    // Shared by the outbound event (when unmapped) and the dead letter, if it comes to that.
    let original = Arc::new(original);
    let view = RecordView {
        offset,
        received_at_ms,
        event_type: envelope.event_type,
        source_id: envelope.source_id,
        event: &original,
    };
    match connection.outbound(&view) {
        Ok(events) if events.is_empty() => {
            delivery.stats.count(Counted::DroppedByTransform, 1);
            Ok(Vec::new())
        }
        Ok(events) => {
            let original = EventJson::from(original);
            Ok(events
                .into_iter()
                .enumerate()
                .map(|(index, event)| Item {
                    event,
                    index: index as u32,
                    original: original.clone(),
                    bytes,
                })
                .collect())
        }
        Err(error) => {
            let message = format!("transformation failed: {error}");
            delivery.stats.error("transform", &message);
            let event = OutboundEvent {
                offset,
                message_id: original
                    .get("messageId")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                event_type: envelope.event_type,
                source_id: envelope.source_id.to_string(),
                received_at_ms,
                user_key: crate::connection::user_key(&original),
                event: serde_json::Value::Null.into(),
            };
            delivery
                .bury(vec![(
                    Item {
                        event,
                        index: 0,
                        original: original.into(),
                        bytes,
                    },
                    message,
                    1,
                )])
                .await?;
            Ok(Vec::new())
        }
    }
}

async fn run_lane(
    delivery: Arc<Delivery>,
    mut receiver: mpsc::Receiver<Item>,
    tracker: Arc<Mutex<Tracker>>,
    progress: Arc<Notify>,
) {
    let retry_max = Duration::from_secs(delivery.connection.delivery.retry_max_seconds);
    let mut batcher = Batcher::new(delivery.limits);
    let mut carried: Option<Item> = None;
    loop {
        if let Some(item) = carried.take() {
            batcher.push(item.clone(), item.bytes, Instant::now());
        }
        while !batcher.is_full() {
            let next = match batcher.deadline() {
                None => receiver.recv().await,
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline.into(), receiver.recv()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
            };
            let Some(item) = next else { return };
            if batcher.would_overflow(item.bytes) {
                carried = Some(item);
                break;
            }
            let bytes = item.bytes;
            batcher.push(item, bytes, Instant::now());
        }
        let items = batcher.take();
        if items.is_empty() {
            continue;
        }
        let results = delivery.deliver(items, retry_max).await;
        let mut dead = Vec::new();
        let mut offsets = Vec::with_capacity(results.len());
        for (item, final_) in results {
            offsets.push(item.event.offset);
            if let Final::Dead { error, attempts } = final_ {
                dead.push((item, error, attempts));
            }
        }
        // The offset may pass a dead letter only once it is durable.
        while let Err(error) = delivery.bury(dead.clone()).await {
            tracing::error!(connection = %delivery.connection.id, %error, "cannot write the DLQ; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut tracker = tracker.lock();
        for offset in offsets {
            tracker.done(offset);
        }
        drop(tracker);
        progress.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_commits_below_the_lowest_unfinished_offset() {
        let mut tracker = Tracker::new(10);
        assert_eq!(tracker.committable(), 10);
        tracker.add(10, 1);
        tracker.add(11, 2);
        tracker.dispatched(12);
        tracker.add(12, 0); // filtered
        tracker.dispatched(13);
        assert_eq!(tracker.committable(), 10);
        tracker.done(11);
        assert_eq!(tracker.committable(), 10);
        tracker.done(10);
        assert_eq!(
            tracker.committable(),
            11,
            "one of 11's two events is still in flight"
        );
        tracker.done(11);
        assert_eq!(tracker.committable(), 13);
        tracker.add(13, 1);
        assert_eq!(
            tracker.committable(),
            13,
            "not dispatched yet: never past the position"
        );
    }
}
