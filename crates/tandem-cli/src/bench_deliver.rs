//! `tandem bench deliver`: batched webhook delivery from the durable log to a real HTTP receiver
//! on loopback, in one process on the machine's cores.
//!
//! 1. **Throughput.** `--events` synthetic track events are appended to a fresh log (fsynced, as
//!    collect does); a webhook connection then delivers the whole backlog through the real
//!    delivery path (`tandem_activate::runtime::Activation`: log reads, envelope decoding,
//!    filters, per-user lanes, batching, retries bookkeeping, offset commits) to an axum
//!    receiver that checks every body is JSON and counts its events (`--receiver-parses-values`:
//!    it builds a `serde_json::Value` tree of each body instead, as the first version did; on
//!    the same 2 cores that receiver's CPU is taken from tandem, which a real receiver's is
//!    not). Reference, measured in the same run against the same receiver: the same events
//!    pre-serialized into the same `{"batch": [...]}` bodies, POSTed by as many keep-alive
//!    connections as the connection has lanes — the HTTP and receiver work alone, without
//!    anything tandem does around it.
//! 2. **Outage.** Events keep arriving at `--arrival-rate` while the receiver answers 503 for
//!    `--outage-seconds`; then it heals. Reported: the backlog at recovery, the wait until the
//!    first delivery (the circuit breaker's next probe: at most `DELIVERY_CIRCUIT_OPEN_MS_MAX`),
//!    and the rate at which the backlog drains, as a multiple of the arrival rate (the issue's
//!    target: ≥ 5×).
//!
//! Not a test: it asserts nothing; it prints figures side by side with ratios.

use crate::bench_unify::progress;
use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use clap::Args;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_activate::runtime::Activation;
use tandem_activate::stats::Alerts;
use tandem_config::{ConnectionConfig, DeliveryConfig, DestinationConfig};
use tandem_core::{EventEnvelope, EventType};
use tandem_load::synth::{self, EventKind};
use tandem_log::{EventLog, FileLog, LogOptions, Record};

/// Records per log append while filling the backlog.
const APPEND_CHUNK: usize = 1_000;
/// How often progress is sampled.
const POLL: Duration = Duration::from_millis(50);
/// Longest a phase may take before the benchmark gives up (a stuck delivery is a failure).
const PHASE_TIMEOUT: Duration = Duration::from_secs(1_800);
/// Distinct users the events are spread over (lanes are keyed by user).
const USERS: u64 = 10_000;

#[derive(Args)]
pub struct DeliverArgs {
    /// Events in the backlog of the throughput phase.
    #[arg(long, default_value_t = 500_000)]
    events: u64,
    /// Events per webhook request (`delivery.batch_events_max`).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Lanes (`delivery.concurrency`), and the reference's connections.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Approximate bytes of JSON per event.
    #[arg(long, default_value_t = 600)]
    event_bytes: usize,
    /// Seconds the receiver answers 503 in the outage phase (0 skips the phase).
    #[arg(long, default_value_t = 300)]
    outage_seconds: u64,
    /// Events per second arriving during and after the outage.
    #[arg(long, default_value_t = 2_000)]
    arrival_rate: u64,
    /// Directory for the log and the DLQ (default: a temporary directory, removed afterwards).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Only the JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// The receiver builds a JSON value tree of every body (else it checks the JSON and counts
    /// the events without building one).
    #[arg(long)]
    receiver_parses_values: bool,
}

/// The receiver: counts the events of every accepted request; answers 503 while `down`.
#[derive(Default)]
struct Receiver {
    events: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    down: AtomicBool,
    parses_values: bool,
}

/// A body's events, read without building a tree (every byte is still checked to be JSON).
#[derive(serde::Deserialize)]
struct CountedBody {
    batch: Option<Vec<serde::de::IgnoredAny>>,
}

/// The events in a body (`None`: not JSON).
fn count_events(body: &[u8], parses_values: bool) -> Option<u64> {
    if parses_values {
        let body = serde_json::from_slice::<Value>(body).ok()?;
        return Some(
            body.get("batch")
                .and_then(Value::as_array)
                .map_or(1, |batch| batch.len() as u64),
        );
    }
    let body = serde_json::from_slice::<CountedBody>(body).ok()?;
    Some(body.batch.map_or(1, |batch| batch.len() as u64))
}

async fn receive(State(receiver): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    if receiver.down.load(Ordering::Relaxed) {
        receiver.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Some(count) = count_events(&body, receiver.parses_values) else {
        return StatusCode::BAD_REQUEST;
    };
    receiver.requests.fetch_add(1, Ordering::Relaxed);
    receiver.events.fetch_add(count, Ordering::Relaxed);
    StatusCode::OK
}

async fn start_receiver(receiver: Arc<Receiver>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding the receiver")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// Synthetic track event number `n` of about `bytes` bytes of JSON, as the load generator
/// makes them (`tandem_load::synth`), with the `receivedAt` collect stamps. Seeded by `n`, so the
/// reference builds exactly the bodies tandem delivers. Returns the JSON and its messageId.
fn event(n: u64, bytes: usize) -> (Vec<u8>, String) {
    let mut rng = StdRng::seed_from_u64(n);
    let mut event = synth::event(&mut rng, EventKind::Track, n % USERS, bytes);
    event["receivedAt"] = Value::String("2026-11-23T12:00:00.010Z".to_string());
    let message_id = event["messageId"]
        .as_str()
        .expect("synthetic events carry a messageId")
        .to_string();
    (
        serde_json::to_vec(&event).expect("a JSON value serializes"),
        message_id,
    )
}

fn record(n: u64, bytes: usize) -> Record {
    let (json, message_id) = event(n, bytes);
    let payload = EventEnvelope {
        event_type: EventType::Track,
        dedup_key: tandem_core::envelope::dedup_key("bench", &message_id),
        event_time_ms: tandem_core::time_util::now_ms(),
        source_id: "bench",
        json: &json,
    }
    .encode();
    Record {
        timestamp_ms: tandem_core::time_util::now_ms(),
        payload: Bytes::from(payload),
    }
}

/// Appends events `from..to` durably, in chunks, waiting when the writer's queue is full.
async fn append(log: &Arc<FileLog>, from: u64, to: u64, bytes: usize) -> anyhow::Result<()> {
    let mut next = from;
    while next < to {
        let end = (next + APPEND_CHUNK as u64).min(to);
        let records: Vec<Record> = (next..end).map(|n| record(n, bytes)).collect();
        loop {
            match log.append(records.clone()) {
                Ok(durable) => {
                    durable.await.context("appending to the log")?;
                    break;
                }
                Err(tandem_log::AppendError::QueueFull) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(error) => bail!("appending to the log: {error}"),
            }
        }
        next = end;
    }
    Ok(())
}

async fn wait_until(
    what: &str,
    bar: &ProgressBar,
    mut done: impl FnMut() -> (u64, bool),
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (position, finished) = done();
        bar.set_position(position);
        if finished {
            return Ok(());
        }
        if started.elapsed() > PHASE_TIMEOUT {
            bail!("{what}: not done after {} s", PHASE_TIMEOUT.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The reference: the same bodies POSTed over `connections` keep-alive connections.
async fn reference(
    url: &str,
    receiver: &Arc<Receiver>,
    events: u64,
    batch: usize,
    connections: usize,
    bytes: usize,
) -> anyhow::Result<f64> {
    let bodies: Vec<Bytes> = (0..events)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|chunk| {
            let mut body = b"{\"batch\":[".to_vec();
            for (index, n) in chunk.iter().enumerate() {
                if index > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&event(*n, bytes).0);
            }
            body.extend_from_slice(b"]}");
            Bytes::from(body)
        })
        .collect();
    let queue = Arc::new(parking_lot::Mutex::new(bodies));
    let before = receiver.events.load(Ordering::Relaxed);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (queue, client, url) = (queue.clone(), client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().pop() else {
                    return Ok::<(), reqwest::Error>(());
                };
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }));
    }
    for task in tasks {
        task.await?.context("reference request")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let delivered = receiver.events.load(Ordering::Relaxed) - before;
    if delivered != events {
        bail!("the reference delivered {delivered} of {events} events");
    }
    Ok(events as f64 / seconds)
}

pub fn deliver(args: DeliverArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: DeliverArgs) -> anyhow::Result<ExitCode> {
    if args.events == 0 || args.batch == 0 || args.concurrency == 0 {
        bail!("--events, --batch and --concurrency must be at least 1");
    }
    let quiet = args.json;
    let temporary = tempfile::tempdir()?;
    let dir = args
        .data
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let log_dir = dir.join("log");
    if log_dir.exists() {
        bail!(
            "{} exists: give an empty --data directory",
            log_dir.display()
        );
    }
    let (log, _) = FileLog::open(
        &log_dir,
        LogOptions {
            name: "bench".into(),
            ..LogOptions::default()
        },
    )
    .map_err(|error| anyhow::anyhow!("opening the log: {error}"))?;
    let receiver = Arc::new(Receiver {
        parses_values: args.receiver_parses_values,
        ..Receiver::default()
    });
    let url = start_receiver(receiver.clone()).await?;

    // 1. Throughput: a backlog of `events`, delivered from the first offset.
    let filling = progress(args.events, "filling the log", quiet);
    let started = Instant::now();
    append(&log, 0, args.events, args.event_bytes).await?;
    filling.finish_and_clear();
    let append_seconds = started.elapsed().as_secs_f64();
    let connection_id = "bench";
    log.commit_offset(
        &tandem_activate::worker::consumer_name(connection_id),
        log.stats().start_offset,
    )?;
    let destination = DestinationConfig {
        id: "receiver".into(),
        name: "Receiver".into(),
        kind: "webhook".into(),
        owner: "bench@tandem.local".into(),
        settings: json!({"url": url, "batch": true}),
        ..DestinationConfig::default()
    };
    let connection = ConnectionConfig {
        id: connection_id.into(),
        sources: vec!["*".into()],
        destination: "receiver".into(),
        delivery: DeliveryConfig {
            batch_events_max: Some(args.batch),
            concurrency: args.concurrency,
            ..DeliveryConfig::default()
        },
        ..ConnectionConfig::default()
    };
    let shared_log: Arc<dyn EventLog> = log.clone();
    let delivering = progress(args.events, "delivering the backlog", quiet);
    let started = Instant::now();
    let activation = Activation::start(
        "bench",
        shared_log,
        dir.clone(),
        vec![destination],
        vec![connection],
        Arc::new(Alerts::default()),
        tandem_activate::runtime::ConnectionHooks {
            compiler: None,
            consent: Arc::new(tandem_activate::consent::NoProfiles(
                tandem_consent::Missing::Allow,
            )),
            pii: None,
        },
    )
    .await
    .map_err(|error| anyhow::anyhow!("starting delivery: {error}"))?;
    wait_until("delivering the backlog", &delivering, || {
        let delivered = receiver.events.load(Ordering::Relaxed);
        (delivered, delivered >= args.events)
    })
    .await?;
    let deliver_seconds = started.elapsed().as_secs_f64();
    delivering.finish_and_clear();
    let tandem_rate = args.events as f64 / deliver_seconds;
    let requests = receiver.requests.load(Ordering::Relaxed);
    let duplicates = receiver.events.load(Ordering::Relaxed) - args.events;

    if !quiet {
        eprintln!("reference: the same bodies POSTed directly…");
    }
    let reference_rate = reference(
        &url,
        &receiver,
        args.events,
        args.batch,
        args.concurrency,
        args.event_bytes,
    )
    .await?;

    // 2. Outage under steady input, then recovery.
    let mut outage = Value::Null;
    if args.outage_seconds > 0 {
        let baseline = receiver.events.load(Ordering::Relaxed);
        receiver.down.store(true, Ordering::Relaxed);
        let appended = Arc::new(AtomicU64::new(args.events));
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = {
            let (log, appended, stop) = (log.clone(), appended.clone(), stop.clone());
            let (rate, bytes) = (args.arrival_rate.max(1), args.event_bytes);
            tokio::spawn(async move {
                let tick = Duration::from_millis(10);
                let started = Instant::now();
                let first = appended.load(Ordering::Relaxed);
                let mut ticks = tokio::time::interval(tick);
                while !stop.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    let due = first + (started.elapsed().as_secs_f64() * rate as f64) as u64;
                    let from = appended.load(Ordering::Relaxed);
                    if due > from {
                        append(&log, from, due, bytes).await?;
                        appended.store(due, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(())
            })
        };
        let down = progress(args.outage_seconds, "receiver down (s)", quiet);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(args.outage_seconds) {
            down.set_position(started.elapsed().as_secs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        down.finish_and_clear();
        let backlog = appended.load(Ordering::Relaxed) - args.events;
        let refused = receiver.refused.load(Ordering::Relaxed);
        receiver.down.store(false, Ordering::Relaxed);
        let recovered = Instant::now();
        let draining = progress(backlog, "draining the backlog", quiet);
        let mut first_delivery: Option<f64> = None;
        wait_until("draining the backlog", &draining, || {
            let delivered = receiver.events.load(Ordering::Relaxed) - baseline;
            if delivered > 0 && first_delivery.is_none() {
                first_delivery = Some(recovered.elapsed().as_secs_f64());
            }
            (delivered.min(backlog), delivered >= backlog)
        })
        .await?;
        let drain_seconds = recovered.elapsed().as_secs_f64();
        draining.finish_and_clear();
        stop.store(true, Ordering::Relaxed);
        arrivals.await??;
        let delivered = receiver.events.load(Ordering::Relaxed) - baseline;
        let first = first_delivery.unwrap_or(drain_seconds);
        let drain_rate = delivered as f64 / drain_seconds;
        let drain_rate_after_first = delivered as f64 / (drain_seconds - first).max(0.001);
        outage = json!({
            "outage_seconds": args.outage_seconds,
            "arrival_rate": args.arrival_rate,
            "backlog_at_recovery": backlog,
            "requests_refused_during_outage": refused,
            "first_delivery_after_recovery_seconds": first,
            "drain_seconds": drain_seconds,
            "delivered_while_draining": delivered,
            "drain_events_per_second": drain_rate,
            "drain_ratio": drain_rate / args.arrival_rate.max(1) as f64,
            "drain_events_per_second_after_first_delivery": drain_rate_after_first,
            "drain_ratio_after_first_delivery": drain_rate_after_first / args.arrival_rate.max(1) as f64,
        });
    }
    activation.stop();
    let status = serde_json::to_value(activation.status(connection_id).ok()).unwrap_or_default();
    let summary = json!({
        "events": args.events,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "event_bytes": args.event_bytes,
        "receiver_parses_values": args.receiver_parses_values,
        "append_events_per_second": args.events as f64 / append_seconds,
        "events_per_second": tandem_rate,
        "reference_events_per_second": reference_rate,
        "ratio": tandem_rate / reference_rate,
        "deliver_seconds": deliver_seconds,
        "requests": requests,
        "duplicates": duplicates,
        "outage": outage,
        "final_status": status,
    });
    if !quiet {
        print_table(&summary);
    }
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn print_table(summary: &Value) {
    let number = |value: &Value| value.as_f64().unwrap_or(0.0);
    println!(
        "tandem delivery benchmark: {} events of ~{} B, batches of {}, {} lanes, webhook on loopback (receiver {})",
        summary["events"], summary["event_bytes"], summary["batch"], summary["concurrency"],
        if summary["receiver_parses_values"] == true { "builds a JSON tree per body" } else { "checks the JSON and counts events" }
    );
    println!(
        "{:<46}{:>12}{:>12}{:>8}",
        "figure", "tandem", "reference", "ratio"
    );
    println!(
        "{:<46}{:>12.0}{:>12.0}{:>8.2}   (target ≥ 50,000; reference: the same bodies POSTed directly)",
        "delivered events/s from a backlog",
        number(&summary["events_per_second"]),
        number(&summary["reference_events_per_second"]),
        number(&summary["ratio"])
    );
    println!(
        "requests {}, duplicates {}; log filled at {:.0} events/s (fsynced)",
        summary["requests"],
        summary["duplicates"],
        number(&summary["append_events_per_second"])
    );
    let outage = &summary["outage"];
    if outage.is_object() {
        println!(
            "outage: receiver down {} s under {} events/s → backlog {} at recovery; first delivery {:.1} s after recovery (the circuit's next probe)",
            outage["outage_seconds"],
            outage["arrival_rate"],
            outage["backlog_at_recovery"],
            number(&outage["first_delivery_after_recovery_seconds"])
        );
        println!(
            "{:<46}{:>12.0}{:>12.0}{:>8.2}   (target ≥ 5× the arrival rate)",
            "backlog drain events/s (from recovery)",
            number(&outage["drain_events_per_second"]),
            number(&outage["arrival_rate"]),
            number(&outage["drain_ratio"])
        );
        println!(
            "{:<46}{:>12.0}{:>12.0}{:>8.2}",
            "backlog drain events/s (from first delivery)",
            number(&outage["drain_events_per_second_after_first_delivery"]),
            number(&outage["arrival_rate"]),
            number(&outage["drain_ratio_after_first_delivery"])
        );
    }
}
