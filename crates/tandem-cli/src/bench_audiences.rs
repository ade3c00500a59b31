//! `tandem bench audiences`: a real tandem server started in this process (fresh data
//! directory, fsync on), driven over loopback HTTP.
//!
//! 1. **Real time.** Batches of track events at `--rate` events/s (open loop, one request per
//!    millisecond); in the measured phase each request carries one `Signed Up` of a new user, who
//!    enters audience `signed-up`. Measured: from the request's acknowledgement (its 200) to the
//!    user's `Audience Entered` being in the log (a task tails the log in this process). Beside it,
//!    in the same run: the ack latency of the same load (the reference — what collect costs), and
//!    the same measurement at `--low-rate`.
//! 2. **Counting.** `--profiles` profiles with traits, orders and page views; then an audience of
//!    five conditions (two traits, an event condition whose counter exists, one no counter
//!    answers yet — counted from the timelines —, a reference to another audience) previewed over
//!    every profile; the same with a property filter on the new condition (candidate events read
//!    from the log); the audience saved (its backfill timed) and previewed again (every condition
//!    from stored state). Reference: one pass over the same profiles decoding each row.
//!
//! Not a test: it asserts nothing; it prints figures side by side with ratios.

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_core::envelope::{EventEnvelope, AUDIENCES_SOURCE_ID};
use tandem_server::state::Workspace;

const WRITE_KEY: &str = "bench-audiences-write-key-0123";
const WORKSPACE: &str = "bench";
const DAY_MS: i64 = 86_400_000;
/// Longest wait for stragglers (entries announced after the load stopped).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests in flight at most (beyond it a due request waits, and its wait counts).
const IN_FLIGHT_MAX: usize = 512;

#[derive(Args)]
pub struct AudiencesArgs {
    /// Events per second of the real-time phase (the issue's figure: 10,000).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// A second real-time run at this rate, for the latency when unify keeps up easily.
    #[arg(long, default_value_t = 2_000)]
    low_rate: u64,
    /// Measured seconds per real-time phase (after 2 s of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Profiles of the counting phase.
    #[arg(long, default_value_t = 20_000)]
    profiles: u64,
    /// Data directory (default: a temporary one, removed after).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
}

fn config_text(port: u16, data: &std::path::Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data}"

[[workspaces]]
id = "{WORKSPACE}"
name = "Bench"

[[workspaces.sources]]
id = "load"
name = "Load"
owner = "bench@tandem.local"
write_key = "{WRITE_KEY}"

[[workspaces.audiences]]
id = "signed-up"
name = "Signed up"
condition = {{ event = "Signed Up" }}

[[workspaces.audiences]]
id = "buyers"
name = "Buyers"
condition = {{ event = "Order Completed", within_days = 30, where = [{{ property = "total", op = "gt", value = 50 }}] }}
"#,
        data = data.display()
    )
}

/// The five-condition audience of the counting phase; `filtered` adds a property filter to the
/// condition no counter answers yet.
fn five_conditions(filtered: bool) -> tandem_config::AudienceConfig {
    let mut views = json!({"event": "Viewed Pricing", "at_least": 2, "within_days": 14});
    if filtered {
        views["where"] = json!([{"property": "plan_shown", "op": "eq", "value": "pro"}]);
    }
    serde_json::from_value(json!({
        "id": "target", "name": "Target accounts",
        "condition": {"all": [
            {"trait": "plan", "op": "in", "value": ["pro", "enterprise"]},
            {"trait": "seats", "op": "gte", "value": 5},
            {"event": "Order Completed", "within_days": 30, "where": [{"property": "total", "op": "gt", "value": 50}]},
            views,
            {"not": {"audience": "signed-up"}},
        ]}
    }))
    .expect("a valid definition")
}

struct Load {
    client: reqwest::Client,
    url: String,
}

impl Load {
    async fn post(&self, events: Vec<Value>) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({"batch": events}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ))
        }
    }
}

fn filler(rng: &mut impl Rng, n: u64) -> Value {
    json!({"type": "track", "userId": format!("visitor-{}", rng.gen_range(0..50_000)), "event": "Page Viewed",
           "properties": {"path": format!("/p/{n}"), "referrer": "https://search.example/"}})
}

/// What a real-time phase measured.
struct RealTime {
    rate: u64,
    ack_us: Histogram<u64>,
    entered_us: Histogram<u64>,
    qualifying: u64,
    missing: u64,
    errors: u64,
    error_sample: Option<String>,
    seconds: f64,
    unify_lag_records: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Tails the log from `from`, noting when each audience entry (by userId) arrives.
fn tail(
    workspace: &Workspace,
    from: u64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
) -> tokio::task::JoinHandle<()> {
    let log = workspace.log.clone();
    tokio::spawn(async move {
        let mut next = from;
        while !stop.load(Ordering::Relaxed) {
            let records = log.read(next, 10_000).unwrap_or_default();
            if records.is_empty() {
                tokio::select! {
                    _ = log.wait_for(next) => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                continue;
            }
            let now = Instant::now();
            for record in &records {
                next = record.offset + 1;
                let Ok(envelope) = EventEnvelope::decode(&record.payload) else {
                    continue;
                };
                if envelope.source_id != AUDIENCES_SOURCE_ID {
                    continue;
                }
                if let Ok(event) = serde_json::from_slice::<Value>(envelope.json) {
                    if let Some(user) = event["userId"].as_str() {
                        seen.lock().entry(user.to_string()).or_insert(now);
                    }
                }
            }
        }
    })
}

async fn real_time(
    workspace: &Workspace,
    load: Arc<Load>,
    rate: u64,
    seconds: u64,
    phase: &str,
) -> RealTime {
    let per_request = (rate / 1000).max(1) as usize;
    let warmup = Duration::from_secs(2);
    let measured = Duration::from_secs(seconds);
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let acks: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tailer = tail(
        workspace,
        workspace.log.stats().end_offset,
        stop.clone(),
        seen.clone(),
    );
    let ack_us = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let error_sample: Arc<Mutex<Option<String>>> = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rng = rand::rngs::StdRng::seed_from_u64(rate);
    let mut n = 0u64;
    let mut tasks = Vec::new();
    loop {
        let due = ticker.tick().await.into_std();
        let elapsed = due.duration_since(start);
        if elapsed >= warmup + measured {
            break;
        }
        let measuring = elapsed >= warmup;
        n += 1;
        let mut events: Vec<Value> = (0..per_request)
            .map(|i| filler(&mut rng, n * 100 + i as u64))
            .collect();
        let qualifying = measuring.then(|| format!("{phase}-{n}"));
        if let Some(user) = &qualifying {
            events[0] = json!({"type": "track", "userId": user, "event": "Signed Up", "properties": {"plan": "pro"}});
        }
        let permit = slots.clone().acquire_owned().await.expect("open semaphore");
        let (load, acks, ack_us, errors, error_sample) = (
            load.clone(),
            acks.clone(),
            ack_us.clone(),
            errors.clone(),
            error_sample.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let outcome = load.post(events).await;
            let done = Instant::now();
            drop(permit);
            match outcome {
                Ok(()) => {
                    if measuring {
                        ack_us
                            .lock()
                            .record((done - due).as_micros().max(1) as u64)
                            .ok();
                    }
                    if let Some(user) = qualifying {
                        acks.lock().insert(user, done);
                    }
                }
                Err(error) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    error_sample.lock().get_or_insert(error);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let load_seconds = start.elapsed().saturating_sub(warmup).as_secs_f64();
    let expected = acks.lock().len() as u64;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let arrived = {
            let seen = seen.lock();
            acks.lock()
                .keys()
                .filter(|user| seen.contains_key(*user))
                .count() as u64
        };
        if arrived >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lag = workspace
        .log
        .stats()
        .end_offset
        .saturating_sub(*workspace.unify.applied.borrow());
    stop.store(true, Ordering::Relaxed);
    tailer.abort();
    let mut entered_us = histogram();
    let mut missing = 0;
    {
        let seen = seen.lock();
        for (user, acked) in acks.lock().iter() {
            match seen.get(user) {
                Some(at) => {
                    entered_us
                        .record(at.saturating_duration_since(*acked).as_micros().max(1) as u64)
                        .ok();
                }
                None => missing += 1,
            }
        }
    }
    let ack_us = ack_us.lock().clone();
    let error_sample = error_sample.lock().clone();
    RealTime {
        rate,
        ack_us,
        entered_us,
        qualifying: expected,
        missing,
        errors: errors.load(Ordering::Relaxed),
        error_sample,
        seconds: load_seconds,
        unify_lag_records: lag,
    }
}

async fn wait_for_unify(workspace: &Workspace) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let end = workspace.log.stats().end_offset;
        if *workspace.unify.applied.borrow() >= end
            && !workspace.audiences.is_pending()
            && !workspace.audiences.engine.lock().busy()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("unify did not catch up within an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn populate(
    workspace: &Workspace,
    load: &Arc<Load>,
    profiles: u64,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let now = tandem_core::time_util::now_ms();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let plans = ["free", "starter", "pro", "enterprise"];
    let mut batch = Vec::new();
    let mut sent = 0u64;
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for profile in 0..profiles {
        let user = format!("customer-{profile:08}");
        let at = |rng: &mut rand::rngs::StdRng, days: i64| {
            tandem_core::time_util::format_iso8601_ms(now - rng.gen_range(0..days * DAY_MS))
        };
        batch.push(
            json!({"type": "identify", "userId": user, "timestamp": at(&mut rng, 60),
            "traits": {"plan": plans[rng.gen_range(0..4)], "seats": rng.gen_range(1..20)}}),
        );
        for _ in 0..rng.gen_range(0..3) {
            batch.push(json!({"type": "track", "userId": user, "event": "Order Completed", "timestamp": at(&mut rng, 45),
                "properties": {"total": rng.gen_range(10..200)}}));
        }
        for _ in 0..rng.gen_range(0..4) {
            batch.push(json!({"type": "track", "userId": user, "event": "Viewed Pricing", "timestamp": at(&mut rng, 20),
                "properties": {"plan_shown": plans[rng.gen_range(0..4)]}}));
        }
        if rng.gen_range(0..10) == 0 {
            batch.push(json!({"type": "track", "userId": user, "event": "Signed Up", "timestamp": at(&mut rng, 60)}));
        }
        if batch.len() >= 200 || profile + 1 == profiles {
            sent += batch.len() as u64;
            let events = std::mem::take(&mut batch);
            let permit = slots.clone().acquire_owned().await?;
            let load = load.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = load.post(events).await;
                drop(permit);
                outcome
            }));
        }
    }
    for task in tasks {
        task.await?
            .map_err(|e| anyhow::anyhow!("populating: {e}"))?;
    }
    wait_for_unify(workspace).await?;
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// One pass over every profile row, decoding each: the floor under any evaluation from stored
/// state.
fn scan_profiles(workspace: &Workspace) -> anyhow::Result<(u64, f64)> {
    use tandem_unify::kv::{KvRead, Table};
    let started = Instant::now();
    let store = workspace.unify.store();
    let mut after: Option<Vec<u8>> = None;
    let mut count = 0u64;
    loop {
        let rows = store
            .read(|kv| kv.scan(Table::Profiles, &[], after.as_deref(), false, 5_000))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some((last, _)) = rows.last() else { break };
        after = Some(last.clone());
        for (_, value) in &rows {
            let profile: tandem_unify::model::ProfileRow =
                tandem_unify::model::decode(Table::Profiles, value)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            count += std::hint::black_box(profile.traits.len() as u64).min(1);
        }
    }
    Ok((count, started.elapsed().as_secs_f64() * 1000.0))
}

async fn preview(
    workspace: &Workspace,
    definition: tandem_config::AudienceConfig,
) -> anyhow::Result<(u64, f64, Vec<String>)> {
    let job = tandem_server::audiences::start_preview(workspace, definition)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    while !job.is_done() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let view = job.view();
    if let Some(error) = view.error {
        bail!("preview failed: {error}");
    }
    Ok((
        view.size,
        view.took_ms.unwrap_or(0) as f64,
        view.counted_from_history,
    ))
}

pub fn audiences(args: AudiencesArgs) -> anyhow::Result<ExitCode> {
    let temporary = tempfile::tempdir()?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| temporary.path().join("data"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = tandem_config::parse(&config_text(port, &data), "bench")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = tandem_server::start(config, tandem_server::ServeOptions::default()).await.context("starting tandem")?;
        let workspace = &server.state.workspaces[WORKSPACE];
        let load = Arc::new(Load {
            client: reqwest::Client::builder().pool_max_idle_per_host(IN_FLIGHT_MAX).build()?,
            url: format!("http://127.0.0.1:{port}/v1/batch"),
        });
        if !args.json {
            eprintln!("real time at {} events/s ({} s)…", args.rate, args.seconds);
        }
        let high = real_time(workspace, load.clone(), args.rate, args.seconds, "fast").await;
        wait_for_unify(workspace).await?;
        if !args.json {
            eprintln!("real time at {} events/s ({} s)…", args.low_rate, args.seconds);
        }
        let low = real_time(workspace, load.clone(), args.low_rate, args.seconds, "slow").await;
        wait_for_unify(workspace).await?;
        if !args.json {
            eprintln!("populating {} profiles…", args.profiles);
        }
        let (population_events, population_seconds) = populate(workspace, &load, args.profiles).await?;
        let (scanned, scan_ms) = scan_profiles(workspace)?;
        let (size, new_ms, counted) = preview(workspace, five_conditions(false)).await?;
        let (filtered_size, filtered_ms, _) = preview(workspace, five_conditions(true)).await?;
        // Saved: its new counter is counted by the backfill job, then everything is stored state.
        let saved = five_conditions(false);
        tandem_server::audiences::save_api_definition(&server.state, WORKSPACE, &saved).await.map_err(|e| anyhow::anyhow!(e.message))?;
        let backfill_started = Instant::now();
        wait_for_unify(workspace).await?;
        let backfill_ms = backfill_started.elapsed().as_secs_f64() * 1000.0;
        let members = workspace
            .unify
            .store()
            .read(|kv| tandem_audiences::state::size(kv, "target"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (stored_size, stored_ms, stored_counted) = preview(workspace, saved).await?;
        let real_time_json: Vec<Value> = [&high, &low].iter().map(|r| json!({
                "rate": r.rate, "seconds": r.seconds, "qualifying_users": r.qualifying, "missing": r.missing,
                "errors": r.errors, "error_sample": r.error_sample,
                "ack_ms": {"p50": ms(&r.ack_us, 0.5), "p99": ms(&r.ack_us, 0.99)},
                "ack_to_entered_ms": {"p50": ms(&r.entered_us, 0.5), "p99": ms(&r.entered_us, 0.99), "p999": ms(&r.entered_us, 0.999), "max": ms(&r.entered_us, 1.0)},
                "unify_lag_records_at_end": r.unify_lag_records,
            })).collect();
        let summary = json!({
            "real_time": real_time_json,
            "counting": {
                "profiles": scanned, "population_events": population_events, "population_seconds": population_seconds,
                "scan_ms": scan_ms,
                "preview_ms": new_ms, "preview_size": size, "counted_from_history": counted,
                "preview_filtered_ms": filtered_ms, "preview_filtered_size": filtered_size,
                "backfill_ms": backfill_ms, "members_after_save": members,
                "preview_saved_ms": stored_ms, "preview_saved_size": stored_size, "preview_saved_from_history": stored_counted,
            },
        });
        if !args.json {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            println!();
            println!("tandem audiences benchmark (server, load and log tail share the machine's cores)");
            println!("{:<58}{:>12}{:>12}{:>8}", "figure", "tandem", "reference", "ratio");
            for r in [&high, &low] {
                println!("{:<58}{:>12.1}{:>12.1}{:>8.2}   (reference: ack latency p99 of the same load)",
                    format!("ack → Audience Entered in the log p99 ms at {} ev/s", r.rate),
                    ms(&r.entered_us, 0.99), ms(&r.ack_us, 0.99), ratio(ms(&r.entered_us, 0.99), ms(&r.ack_us, 0.99)));
                println!("{:<58}{:>12.1}{:>12.1}{:>8.2}",
                    format!("ack → Audience Entered in the log p50 ms at {} ev/s", r.rate),
                    ms(&r.entered_us, 0.5), ms(&r.ack_us, 0.5), ratio(ms(&r.entered_us, 0.5), ms(&r.ack_us, 0.5)));
                println!("  {} users qualified, {} not announced within {:?}, {} request errors{}; unify lag at the end: {} records",
                    r.qualifying, r.missing, DRAIN_TIMEOUT, r.errors,
                    r.error_sample.as_deref().map(|s| format!(" ({s})")).unwrap_or_default(), r.unify_lag_records);
            }
            println!("{:<58}{:>12.1}{:>12.1}{:>8.2}   (reference: one pass decoding every profile)",
                format!("preview, 5 conditions (1 from timelines), {scanned} profiles, ms"), new_ms, scan_ms, ratio(new_ms, scan_ms));
            println!("{:<58}{:>12.1}{:>12.1}{:>8.2}",
                "  the same with a property filter (log reads), ms", filtered_ms, scan_ms, ratio(filtered_ms, scan_ms));
            println!("{:<58}{:>12.1}{:>12.1}{:>8.2}",
                "  saved and backfilled, ms", backfill_ms, scan_ms, ratio(backfill_ms, scan_ms));
            println!("{:<58}{:>12.1}{:>12.1}{:>8.2}",
                "  previewed again (every condition from counters), ms", stored_ms, scan_ms, ratio(stored_ms, scan_ms));
            println!("sizes: preview {size}, with filter {filtered_size}, members after save {members}, preview after save {stored_size}");
            println!("population: {population_events} events in {population_seconds:.1} s");
        }
        println!("{summary}");
        server.shutdown().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    drop(temporary);
    Ok(ExitCode::SUCCESS)
}
