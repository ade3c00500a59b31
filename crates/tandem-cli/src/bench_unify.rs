//! `tandem bench unify`: identity resolution, profile and computed-trait updates as the server's
//! unify consumer applies them, on a store pre-populated to N profiles — and, measured in the same
//! run on the same file, the store's own ceiling for the same work.
//!
//! 1. **Populate** a store to `--profiles` profiles (one `identify` per user, through
//!    `UnifyStore::apply_batch` in large batches). With `--data DIR` the populated store is kept
//!    and reused by later runs of the same size.
//! 2. **Measure** `--events` realistic events (collect's envelope around 700–900 bytes of JSON):
//!    60 % track/page of known users, 20 % identify with traits, 10 % new anonymous visitors, 5 %
//!    visitors identifying as known users (merges), 5 % group calls; four computed traits defined.
//!    They are applied as the consumer does (`store::apply_all` in one redb write transaction per
//!    batch of `UNIFY_BATCH_RECORDS_MAX`, durable at most every `UNIFY_DURABLE_COMMIT_MS`),
//!    through a shim that counts the store operations per table and samples the keys touched.
//!    Only the transactions are timed; building the records is not.
//! 3. **Reference**: the same number of gets, puts, deletes and scans per table, on keys drawn
//!    from those the engine touched, re-writing the values they hold (the state is unchanged), in
//!    batches of the same size committed alike — what redb costs for this work with nothing else
//!    (no JSON, no resolution, no encoding).

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};
use tandem_config::ComputedTraitConfig;
use tandem_core::envelope::{dedup_key, EventEnvelope, EventType};
use tandem_core::limits::{UNIFY_BATCH_RECORDS_MAX, UNIFY_DURABLE_COMMIT_MS};
use tandem_core::time_util::{format_iso8601_ms, now_ms};
use tandem_load::synth::{self, EventKind};
use tandem_unify::computed::ComputedDef;
use tandem_unify::kv::{KvRead, KvResult, KvWrite, RedbKv, Table};
use tandem_unify::store::{apply_all, stored_offset};
use tandem_unify::{BatchStats, Engine, IdentityRules, RecordSource, UnifyStore};

/// The source id of the benchmark's events.
const SOURCE_ID: &str = "bench-web";
/// User numbers of new anonymous visitors start here (known users are `0..profiles`).
const VISITOR_BASE: u64 = 5_000_000_000;
/// One account per this many users.
const USERS_PER_ACCOUNT: u64 = 50;
/// Keys sampled per table for the reference.
const KEY_SAMPLE_MAX: usize = 8192;
/// Store file and the note of what populated it, inside the data directory.
const STORE_FILE: &str = "unify.redb";
const MARKER_FILE: &str = "bench-unify.json";
/// Table bytes are small; counts are kept per table byte.
const TABLE_SLOTS: usize = 32;

#[derive(Args)]
pub struct UnifyArgs {
    /// Profiles to populate the store with before measuring.
    #[arg(long, default_value_t = 10_000)]
    profiles: u64,
    /// Events measured.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events applied first and not measured (the cache warms up).
    #[arg(long, default_value_t = 50_000)]
    warmup_events: u64,
    /// Keep the store here (reused by later runs with the same --profiles); default: a
    /// temporary directory, removed at the end.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Records per transaction while populating.
    #[arg(long, default_value_t = 50_000)]
    populate_batch: usize,
    /// Records per measured transaction: the server's consumer uses `UNIFY_BATCH_RECORDS_MAX`;
    /// change it only to explore what another batch size would do.
    #[arg(long, default_value_t = UNIFY_BATCH_RECORDS_MAX)]
    batch_records: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
}

/// What populated a kept store.
#[derive(serde::Serialize, serde::Deserialize)]
struct Marker {
    profiles: u64,
    /// Visitor numbers used so far (a rerun continues after them).
    visitors: u64,
}

pub fn unify(args: UnifyArgs) -> anyhow::Result<ExitCode> {
    if args.profiles == 0 || args.events == 0 {
        bail!("--profiles and --events must be at least 1");
    }
    if args.profiles >= VISITOR_BASE {
        bail!("--profiles must be below {VISITOR_BASE}");
    }
    let temporary;
    let dir = match &args.data {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("tandem-bench-unify-")
                .tempdir()
                .context("creating a temporary directory")?;
            temporary.path().to_path_buf()
        }
    };
    let store_path = dir.join(STORE_FILE);
    let marker_path = dir.join(MARKER_FILE);
    let engine = bench_engine()?;
    let quiet = args.json;

    // 1. Populate (or reuse a store populated to the same size).
    let mut marker = read_marker(&marker_path)?;
    let populate_seconds = match &marker {
        Some(existing) if existing.profiles == args.profiles && store_path.exists() => {
            if !quiet {
                eprintln!(
                    "reusing the store in {} ({} profiles populated)",
                    dir.display(),
                    existing.profiles
                );
            }
            None
        }
        Some(existing) => bail!(
            "{} holds a store populated to {} profiles, not {}: use another --data directory",
            dir.display(),
            existing.profiles,
            args.profiles
        ),
        None if store_path.exists() => bail!(
            "{} exists but was not populated by `tandem bench unify`: use an empty --data directory",
            store_path.display()
        ),
        None => {
            let seconds = populate(&store_path, &engine, &args, quiet)?;
            let fresh = Marker {
                profiles: args.profiles,
                visitors: 0,
            };
            write_marker(&marker_path, &fresh)?;
            marker = Some(fresh);
            Some(seconds)
        }
    };
    let mut marker = marker.expect("populated or reused");

    // 2. Measure, counting what the engine asks of the store.
    let kv = RedbKv::open(&store_path)
        .map_err(|error| anyhow::anyhow!("opening {}: {error}", store_path.display()))?;
    let mut mix = Mix::new(args.seed, args.profiles, marker.visitors);
    let measured = measure(&kv, &engine, &mut mix, &args, quiet)?;
    marker.visitors = mix.next_visitor;
    write_marker(&marker_path, &marker)?;

    // 3. The same store operations alone.
    let reference = reference(&kv, &measured, args.seed, quiet)?;
    drop(kv);
    let store_bytes = std::fs::metadata(&store_path).map(|m| m.len()).unwrap_or(0);

    let report = Report {
        profiles: args.profiles,
        populate_seconds,
        measured,
        reference,
        store_bytes,
    };
    if !args.json {
        print!("{}", report.table());
    }
    println!("{}", report.to_json());
    Ok(ExitCode::SUCCESS)
}

fn read_marker(path: &Path) -> anyhow::Result<Option<Marker>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_marker(path: &Path, marker: &Marker) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec(marker)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Default identity rules and four computed traits a shop would define.
fn bench_engine() -> anyhow::Result<Engine> {
    let traits = [
        ComputedTraitConfig {
            name: "orders_completed".into(),
            function: "count".into(),
            event: Some("Order Completed".into()),
            ..Default::default()
        },
        ComputedTraitConfig {
            name: "revenue_total".into(),
            function: "sum".into(),
            event: Some("Order Completed".into()),
            property: Some("revenue".into()),
            ..Default::default()
        },
        ComputedTraitConfig {
            name: "page_views_30d".into(),
            function: "count".into(),
            event_type: Some("page".into()),
            window_days: Some(30),
            ..Default::default()
        },
        ComputedTraitConfig {
            name: "last_page".into(),
            function: "last".into(),
            event_type: Some("page".into()),
            property: Some("path".into()),
            ..Default::default()
        },
    ];
    let computed = traits
        .iter()
        .map(|config| {
            ComputedDef::from_config(config)
                .map_err(|error| anyhow::anyhow!("computed trait {}: {error}", config.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Engine::with_computed(IdentityRules::default(), computed))
}

/// A benchmark never splits, so no record is ever read back.
struct NoRecords;

impl RecordSource for NoRecords {
    fn record(&self, _offset: u64) -> Option<Vec<u8>> {
        None
    }
}

fn envelope(event_type: EventType, message_id: &str, time_ms: i64, json: &[u8]) -> Vec<u8> {
    EventEnvelope {
        event_type,
        dedup_key: dedup_key(SOURCE_ID, message_id),
        event_time_ms: time_ms,
        source_id: SOURCE_ID,
        json,
    }
    .encode()
}

/// The identify that makes user `user` a profile: `userId`, `anonymousId` and the email the
/// load generator's identify calls use, so later events of the user join this profile.
fn population_record(user: u64, time_ms: i64) -> Vec<u8> {
    const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
    let message_id = format!("populate-{user:010}");
    let time = format_iso8601_ms(time_ms);
    let json = format!(
        concat!(
            r#"{{"type":"identify","messageId":"{message_id}","userId":"{user_id}","anonymousId":"{anonymous_id}","#,
            r#""timestamp":"{time}","receivedAt":"{time}","traits":{{"email":"u{user:010}@example.com","#,
            r#""name":"User {user}","plan":"{plan}","created_at":"2024-01-01T00:00:00.000Z"}},"#,
            r#""context":{{"library":{{"name":"analytics.js","version":"next-1.70.0"}},"ip":"203.0.113.7","locale":"en-US"}},"#,
            r#""integrations":{{}}}}"#
        ),
        message_id = message_id,
        user_id = synth::user_id(user),
        anonymous_id = synth::anonymous_id(user),
        time = time,
        user = user,
        plan = PLANS[(user % 4) as usize],
    );
    envelope(EventType::Identify, &message_id, time_ms, json.as_bytes())
}

pub(crate) fn progress(total: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{human_pos}}/{{human_len}} {{per_sec}} eta {{eta}}"
        ))
        .expect("a valid template"),
    );
    bar
}

/// Populates a new store to `args.profiles` profiles; returns the seconds it took.
fn populate(path: &Path, engine: &Engine, args: &UnifyArgs, quiet: bool) -> anyhow::Result<f64> {
    let store = UnifyStore::open(path)
        .map_err(|error| anyhow::anyhow!("opening {}: {error}", path.display()))?;
    let started = Instant::now();
    let bar = progress(args.profiles, "populating", quiet);
    let plain = !quiet && !std::io::stderr().is_terminal();
    let batch = args.populate_batch.max(1) as u64;
    let profiles = args.profiles;
    let base_ms = now_ms() - 90 * 86_400_000;
    // Records are built on the other core while the store applies the previous batch.
    let (sender, receiver) = sync_channel::<Vec<(u64, Vec<u8>)>>(2);
    let builder = std::thread::spawn(move || {
        let mut user = 0;
        while user < profiles {
            let end = (user + batch).min(profiles);
            let records = (user..end)
                .map(|u| (u, population_record(u, base_ms + u as i64)))
                .collect();
            if sender.send(records).is_err() {
                return;
            }
            user = end;
        }
    });
    let mut done = 0u64;
    let mut next_note = 0u64;
    for records in receiver {
        // Durable: redb reuses the pages a transaction frees only after a durable commit, so
        // non-durable population would leave the file about twice its size.
        store
            .apply_batch(engine, &NoRecords, &records, true)
            .map_err(|error| anyhow::anyhow!("populating: {error}"))?;
        done += records.len() as u64;
        bar.set_position(done);
        if plain && done >= next_note {
            eprintln!(
                "populating: {done} of {profiles} profiles, {:.0} s",
                started.elapsed().as_secs_f64()
            );
            next_note = done + (profiles / 10).max(1);
        }
    }
    builder
        .join()
        .map_err(|_| anyhow::anyhow!("the record builder failed"))?;
    store
        .sync()
        .map_err(|error| anyhow::anyhow!("making the population durable: {error}"))?;
    bar.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
}

/// The measured event mix.
struct Mix {
    rng: StdRng,
    users: u64,
    next_visitor: u64,
    /// Visitors not yet identified (candidates for a merge).
    visitors: Vec<u64>,
    now_ms: i64,
}

impl Mix {
    fn new(seed: u64, users: u64, visitors_used: u64) -> Mix {
        Mix {
            rng: StdRng::seed_from_u64(seed ^ visitors_used.rotate_left(17)),
            users,
            next_visitor: visitors_used,
            visitors: Vec::new(),
            now_ms: now_ms(),
        }
    }

    fn new_visitor(&mut self) -> u64 {
        let visitor = VISITOR_BASE + self.next_visitor;
        self.next_visitor += 1;
        self.visitors.push(visitor);
        visitor
    }

    /// The next event, as a log record.
    fn record(&mut self) -> Vec<u8> {
        let user = self.rng.gen_range(0..self.users);
        let (event_type, mut event) = match self.rng.gen_range(0..100) {
            // Known users browse and buy.
            0..=59 => {
                let kind = if self.rng.gen_bool(0.6) {
                    EventKind::Track
                } else {
                    EventKind::Page
                };
                (event_type(kind), synth::event(&mut self.rng, kind, user, 0))
            }
            // Known users update their traits.
            60..=79 => (
                EventType::Identify,
                synth::event(&mut self.rng, EventKind::Identify, user, 0),
            ),
            // New anonymous visitors.
            80..=89 => {
                let visitor = self.new_visitor();
                let kind = if self.rng.gen_bool(0.7) {
                    EventKind::Page
                } else {
                    EventKind::Track
                };
                let mut event = synth::event(&mut self.rng, kind, visitor, 0);
                event.as_object_mut().expect("an object").remove("userId");
                (event_type(kind), event)
            }
            // A visitor logs in as a known user: their anonymous profile merges into it.
            90..=94 => {
                let visitor = if self.visitors.is_empty() {
                    self.new_visitor()
                } else {
                    let at = self.rng.gen_range(0..self.visitors.len());
                    self.visitors.swap_remove(at)
                };
                let mut event = synth::event(&mut self.rng, EventKind::Identify, user, 0);
                event["anonymousId"] = json!(synth::anonymous_id(visitor));
                (EventType::Identify, event)
            }
            _ => (EventType::Group, self.group(user)),
        };
        let time_ms = self.now_ms - self.rng.gen_range(0..86_400_000);
        event["timestamp"] = json!(format_iso8601_ms(time_ms));
        event["receivedAt"] = json!(format_iso8601_ms(self.now_ms));
        let message_id = event["messageId"]
            .as_str()
            .expect("synthetic events have a messageId")
            .to_string();
        let json = serde_json::to_vec(&event).expect("values serialize");
        envelope(event_type, &message_id, time_ms, &json)
    }

    fn group(&mut self, user: u64) -> Value {
        let account = user / USERS_PER_ACCOUNT;
        let message_id: u128 = self.rng.gen();
        json!({
            "type": "group",
            "messageId": format!("{message_id:032x}"),
            "userId": synth::user_id(user),
            "anonymousId": synth::anonymous_id(user),
            "groupId": format!("acct-{account:08}"),
            "traits": {
                "name": format!("Company {account}"),
                "plan": *["team", "business", "enterprise"].choose(&mut self.rng).expect("non-empty"),
                "employees": self.rng.gen_range(5..5_000u32),
                "industry": *["retail", "media", "software", "travel"].choose(&mut self.rng).expect("non-empty"),
            },
            "context": {
                "library": {"name": "analytics.js", "version": "next-1.70.0"},
                "ip": format!("203.0.113.{}", self.rng.gen_range(1..255u32)),
                "locale": "en-US",
            },
            "integrations": {},
        })
    }
}

fn event_type(kind: EventKind) -> EventType {
    match kind {
        EventKind::Track => EventType::Track,
        EventKind::Page => EventType::Page,
        EventKind::Identify => EventType::Identify,
    }
}

/// Store operations, per table byte.
#[derive(Clone, Debug)]
struct OpCounts {
    gets: [u64; TABLE_SLOTS],
    puts: [u64; TABLE_SLOTS],
    deletes: [u64; TABLE_SLOTS],
    scans: [u64; TABLE_SLOTS],
    scan_rows: [u64; TABLE_SLOTS],
    /// Bytes of values read by gets and written by puts.
    read_bytes: [u64; TABLE_SLOTS],
    written_bytes: [u64; TABLE_SLOTS],
    tables: [Option<Table>; TABLE_SLOTS],
    /// Keys touched, sampled uniformly per table (reservoir).
    sampled: Vec<Vec<Vec<u8>>>,
    touched: [u64; TABLE_SLOTS],
    sampler: u64,
}

impl Default for OpCounts {
    fn default() -> Self {
        OpCounts {
            gets: [0; TABLE_SLOTS],
            puts: [0; TABLE_SLOTS],
            deletes: [0; TABLE_SLOTS],
            scans: [0; TABLE_SLOTS],
            scan_rows: [0; TABLE_SLOTS],
            read_bytes: [0; TABLE_SLOTS],
            written_bytes: [0; TABLE_SLOTS],
            tables: [None; TABLE_SLOTS],
            sampled: vec![Vec::new(); TABLE_SLOTS],
            touched: [0; TABLE_SLOTS],
            sampler: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl OpCounts {
    fn slot(&mut self, table: Table) -> usize {
        let slot = table as usize;
        assert!(slot < TABLE_SLOTS, "table byte {slot} out of range");
        self.tables[slot] = Some(table);
        slot
    }

    fn sample(&mut self, slot: usize, key: &[u8]) {
        self.touched[slot] += 1;
        // xorshift64: cheap, and the sample needs no more.
        self.sampler ^= self.sampler << 13;
        self.sampler ^= self.sampler >> 7;
        self.sampler ^= self.sampler << 17;
        let pool = &mut self.sampled[slot];
        if pool.len() < KEY_SAMPLE_MAX {
            pool.push(key.to_vec());
        } else {
            let at = self.sampler % self.touched[slot];
            if (at as usize) < KEY_SAMPLE_MAX {
                pool[at as usize] = key.to_vec();
            }
        }
    }

    fn total(counts: &[u64; TABLE_SLOTS]) -> u64 {
        counts.iter().sum()
    }
}

/// A store that counts what is asked of it.
struct Counting<'a, K> {
    inner: &'a mut K,
    counts: &'a RefCell<OpCounts>,
}

impl<K: KvRead> KvRead for Counting<'_, K> {
    fn get(&self, table: Table, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        let value = self.inner.get(table, key)?;
        let mut counts = self.counts.borrow_mut();
        let slot = counts.slot(table);
        counts.gets[slot] += 1;
        counts.read_bytes[slot] += value.as_ref().map_or(0, |v| v.len() as u64);
        counts.sample(slot, key);
        Ok(value)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = self.inner.scan(table, prefix, after, reverse, limit)?;
        let mut counts = self.counts.borrow_mut();
        let slot = counts.slot(table);
        counts.scans[slot] += 1;
        counts.scan_rows[slot] += rows.len() as u64;
        Ok(rows)
    }
}

impl<K: KvWrite> KvWrite for Counting<'_, K> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> KvResult<()> {
        {
            let mut counts = self.counts.borrow_mut();
            let slot = counts.slot(table);
            counts.puts[slot] += 1;
            counts.written_bytes[slot] += value.len() as u64;
            counts.sample(slot, key);
        }
        self.inner.put(table, key, value)
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> KvResult<()> {
        {
            let mut counts = self.counts.borrow_mut();
            let slot = counts.slot(table);
            counts.deletes[slot] += 1;
        }
        self.inner.delete(table, key)
    }
}

/// What the measured run did.
struct Measured {
    events: u64,
    seconds: f64,
    batches: u64,
    durable_commits: u64,
    /// Slowest batch, ms.
    batch_ms_max: f64,
    stats: BatchStats,
    counts: OpCounts,
    record_bytes: u64,
    warmup_events: u64,
    batch_records: u64,
}

/// Applies `records` in one transaction as `UnifyStore::apply_batch` does, counting.
fn apply_counted(
    kv: &RedbKv,
    engine: &Engine,
    records: &[(u64, Vec<u8>)],
    durable: bool,
    counts: &RefCell<OpCounts>,
) -> KvResult<BatchStats> {
    kv.write(durable, |table| {
        let mut counting = Counting {
            inner: table,
            counts,
        };
        apply_all(&mut counting, engine, &NoRecords, records)
    })
}

fn measure(
    kv: &RedbKv,
    engine: &Engine,
    mix: &mut Mix,
    args: &UnifyArgs,
    quiet: bool,
) -> anyhow::Result<Measured> {
    let mut offset = kv
        .read(stored_offset)
        .map_err(|error| anyhow::anyhow!("reading the store's offset: {error}"))?
        .unwrap_or(0);
    let batch = args.batch_records.max(1) as u64;
    let mut next_batch = |size: u64, offset: &mut u64| -> Vec<(u64, Vec<u8>)> {
        (0..size)
            .map(|_| {
                *offset += 1;
                (*offset - 1, mix.record())
            })
            .collect()
    };

    // Warm-up: applied, not counted.
    let warmup_counts = RefCell::new(OpCounts::default());
    let mut warmed = 0;
    while warmed < args.warmup_events {
        let records = next_batch(batch.min(args.warmup_events - warmed), &mut offset);
        warmed += records.len() as u64;
        apply_counted(kv, engine, &records, false, &warmup_counts)
            .map_err(|error| anyhow::anyhow!("applying the warm-up: {error}"))?;
    }
    kv.write(true, |_| Ok(()))
        .map_err(|error| anyhow::anyhow!("committing the warm-up: {error}"))?;

    let counts = RefCell::new(OpCounts::default());
    let bar = progress(args.events, "applying", quiet);
    let durable_every = Duration::from_millis(UNIFY_DURABLE_COMMIT_MS);
    let mut measured = Measured {
        events: 0,
        seconds: 0.0,
        batches: 0,
        durable_commits: 0,
        batch_ms_max: 0.0,
        stats: BatchStats::default(),
        counts: OpCounts::default(),
        record_bytes: 0,
        warmup_events: warmed,
        batch_records: batch,
    };
    let mut last_durable = Instant::now();
    while measured.events < args.events {
        let records = next_batch(batch.min(args.events - measured.events), &mut offset);
        measured.record_bytes += records.iter().map(|(_, r)| r.len() as u64).sum::<u64>();
        let durable = last_durable.elapsed() >= durable_every;
        let started = Instant::now();
        let stats = apply_counted(kv, engine, &records, durable, &counts)
            .map_err(|error| anyhow::anyhow!("applying events: {error}"))?;
        let took = started.elapsed();
        measured.seconds += took.as_secs_f64();
        measured.batch_ms_max = measured.batch_ms_max.max(took.as_secs_f64() * 1000.0);
        if durable {
            last_durable = Instant::now();
            measured.durable_commits += 1;
        }
        measured.batches += 1;
        measured.events += records.len() as u64;
        add_stats(&mut measured.stats, &stats);
        bar.set_position(measured.events);
    }
    // The consumer's last commit is durable too.
    let started = Instant::now();
    kv.write(true, |_| Ok(()))
        .map_err(|error| anyhow::anyhow!("committing: {error}"))?;
    measured.seconds += started.elapsed().as_secs_f64();
    measured.durable_commits += 1;
    bar.finish_and_clear();
    measured.counts = counts.into_inner();
    Ok(measured)
}

fn add_stats(total: &mut BatchStats, batch: &BatchStats) {
    total.records += batch.records;
    total.created += batch.created;
    total.merged += batch.merged;
    total.refused += batch.refused;
    total.duplicates += batch.duplicates;
    total.unattributed += batch.unattributed;
    total.unreadable += batch.unreadable;
    total.ignored_identifiers += batch.ignored_identifiers;
    total.splits += batch.splits;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Put,
    Scan,
}

struct Reference {
    seconds: f64,
    /// Operations done (puts include the engine's deletes, done as re-writes).
    gets: u64,
    puts: u64,
    scans: u64,
    durable_commits: u64,
}

/// The engine's store operations alone: same counts per table, same batches, same commits.
fn reference(
    kv: &RedbKv,
    measured: &Measured,
    seed: u64,
    quiet: bool,
) -> anyhow::Result<Reference> {
    let counts = &measured.counts;
    // The keys to use, with the values they hold now (absent keys are read, never written).
    let mut present: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); TABLE_SLOTS];
    let mut absent: Vec<Vec<Vec<u8>>> = vec![Vec::new(); TABLE_SLOTS];
    kv.read(|snapshot| {
        for slot in 0..TABLE_SLOTS {
            let Some(table) = counts.tables[slot] else {
                continue;
            };
            for key in &counts.sampled[slot] {
                match snapshot.get(table, key)? {
                    Some(value) => present[slot].push((key.clone(), value)),
                    None => absent[slot].push(key.clone()),
                }
            }
        }
        Ok(())
    })
    .map_err(|error| anyhow::anyhow!("sampling keys: {error}"))?;

    // Spread the totals over the same number of batches (carrying fractions along).
    let batches = measured.batches.max(1);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let bar = progress(batches, "reference", quiet);
    let durable_every = Duration::from_millis(UNIFY_DURABLE_COMMIT_MS);
    let mut last_durable = Instant::now();
    let mut done = Reference {
        seconds: 0.0,
        gets: 0,
        puts: 0,
        scans: 0,
        durable_commits: 0,
    };
    let share = |total: u64, batch: u64| -> u64 {
        // Operations due by the end of batch `batch`, minus those due before it.
        total * (batch + 1) / batches - total * batch / batches
    };
    for batch in 0..batches {
        let mut ops: Vec<(Op, usize)> = Vec::new();
        for slot in 0..TABLE_SLOTS {
            if counts.tables[slot].is_none() {
                continue;
            }
            let writes = counts.puts[slot] + counts.deletes[slot];
            for (op, total) in [
                (Op::Get, counts.gets[slot]),
                (Op::Put, writes),
                (Op::Scan, counts.scans[slot]),
            ] {
                ops.extend(std::iter::repeat_n(
                    (op, slot),
                    share(total, batch) as usize,
                ));
            }
        }
        ops.shuffle(&mut rng);
        // Which sampled key each operation uses, chosen before the clock starts.
        let picks: Vec<u64> = ops.iter().map(|_| rng.gen()).collect();
        let rows_per_scan: Vec<usize> = (0..TABLE_SLOTS)
            .map(|slot| {
                (counts.scan_rows[slot] as f64 / counts.scans[slot].max(1) as f64).ceil() as usize
            })
            .collect();
        let durable = last_durable.elapsed() >= durable_every;
        let started = Instant::now();
        kv.write(durable, |store| {
            for ((op, slot), pick) in ops.iter().zip(&picks) {
                let table = counts.tables[*slot].expect("only tables the engine used");
                let known = &present[*slot];
                let missing = &absent[*slot];
                match op {
                    Op::Get => {
                        let total = known.len() + missing.len();
                        if total == 0 {
                            continue;
                        }
                        let at = (*pick % total as u64) as usize;
                        let key = if at < known.len() {
                            &known[at].0
                        } else {
                            &missing[at - known.len()]
                        };
                        std::hint::black_box(store.get(table, key)?);
                        done.gets += 1;
                    }
                    Op::Put => {
                        if known.is_empty() {
                            continue;
                        }
                        let (key, value) = &known[(*pick % known.len() as u64) as usize];
                        store.put(table, key, value)?;
                        done.puts += 1;
                    }
                    Op::Scan => {
                        if known.is_empty() {
                            continue;
                        }
                        let key = &known[(*pick % known.len() as u64) as usize].0;
                        let prefix = &key[..key.len().min(8)];
                        std::hint::black_box(store.scan(
                            table,
                            prefix,
                            None,
                            false,
                            rows_per_scan[*slot],
                        )?);
                        done.scans += 1;
                    }
                }
            }
            Ok(())
        })
        .map_err(|error| anyhow::anyhow!("reference run: {error}"))?;
        done.seconds += started.elapsed().as_secs_f64();
        if durable {
            last_durable = Instant::now();
            done.durable_commits += 1;
        }
        bar.set_position(batch + 1);
    }
    let started = Instant::now();
    kv.write(true, |_| Ok(()))
        .map_err(|error| anyhow::anyhow!("reference commit: {error}"))?;
    done.seconds += started.elapsed().as_secs_f64();
    done.durable_commits += 1;
    bar.finish_and_clear();
    Ok(done)
}

struct Report {
    profiles: u64,
    populate_seconds: Option<f64>,
    measured: Measured,
    reference: Reference,
    store_bytes: u64,
}

impl Report {
    fn events_per_second(&self) -> f64 {
        self.measured.events as f64 / self.measured.seconds
    }

    fn us_per_event(&self) -> f64 {
        self.measured.seconds * 1e6 / self.measured.events as f64
    }

    fn reference_events_per_second(&self) -> f64 {
        self.measured.events as f64 / self.reference.seconds
    }

    fn reference_us_per_event(&self) -> f64 {
        self.reference.seconds * 1e6 / self.measured.events as f64
    }

    fn per_event(&self, total: u64) -> f64 {
        total as f64 / self.measured.events as f64
    }

    fn table(&self) -> String {
        let m = &self.measured;
        let c = &m.counts;
        let ratio = self.events_per_second() / self.reference_events_per_second();
        let mut out = String::new();
        let populated = match self.populate_seconds {
            Some(seconds) => format!(
                "populated in {seconds:.1} s ({:.0} profiles/s)",
                self.profiles as f64 / seconds
            ),
            None => "store reused".to_string(),
        };
        out.push_str(&format!(
            "tandem unify benchmark: {} profiles ({populated}), {} events measured after {} warm-up, store {:.0} MiB\n",
            self.profiles,
            m.events,
            m.warmup_events,
            self.store_bytes as f64 / 1_048_576.0
        ));
        out.push_str(&format!(
            "{:<44}{:>14}{:>14}{:>8}\n",
            "figure", "tandem", "reference", "ratio"
        ));
        out.push_str(&format!(
            "{:<44}{:>14}{:>14}{:>8.2}   (reference: the same store operations alone)\n",
            "events/s",
            thousands(self.events_per_second()),
            thousands(self.reference_events_per_second()),
            ratio
        ));
        out.push_str(&format!(
            "{:<44}{:>14.2}{:>14.2}{:>8.2}\n",
            "µs/event",
            self.us_per_event(),
            self.reference_us_per_event(),
            self.us_per_event() / self.reference_us_per_event()
        ));
        out.push_str(&format!(
            "store operations per event: {:.1} gets, {:.1} puts, {:.1} deletes, {:.2} scans ({:.1} rows); {:.0} B read, {:.0} B written\n",
            self.per_event(OpCounts::total(&c.gets)),
            self.per_event(OpCounts::total(&c.puts)),
            self.per_event(OpCounts::total(&c.deletes)),
            self.per_event(OpCounts::total(&c.scans)),
            self.per_event(OpCounts::total(&c.scan_rows)),
            self.per_event(OpCounts::total(&c.read_bytes)),
            self.per_event(OpCounts::total(&c.written_bytes)),
        ));
        out.push_str(&format!(
            "events: {} profiles created, {} merges, {} merges refused; {} batches of up to {}, {} durable commits, slowest batch {:.1} ms, {:.0} B/record\n",
            m.stats.created,
            m.stats.merged,
            m.stats.refused,
            m.batches,
            m.batch_records,
            m.durable_commits,
            m.batch_ms_max,
            m.record_bytes as f64 / m.events as f64
        ));
        out
    }

    fn to_json(&self) -> Value {
        let m = &self.measured;
        let c = &m.counts;
        let per_table: serde_json::Map<String, Value> = (0..TABLE_SLOTS)
            .filter_map(|slot| {
                let table = c.tables[slot]?;
                Some((
                    format!("{table:?}").to_lowercase(),
                    json!({
                        "gets": self.per_event(c.gets[slot]),
                        "puts": self.per_event(c.puts[slot]),
                        "deletes": self.per_event(c.deletes[slot]),
                        "scans": self.per_event(c.scans[slot]),
                        "read_bytes": self.per_event(c.read_bytes[slot]),
                        "written_bytes": self.per_event(c.written_bytes[slot]),
                    }),
                ))
            })
            .collect();
        json!({
            "profiles": self.profiles,
            "populate_seconds": self.populate_seconds,
            "events": m.events,
            "warmup_events": m.warmup_events,
            "seconds": m.seconds,
            "events_per_second": self.events_per_second(),
            "us_per_event": self.us_per_event(),
            "reference_seconds": self.reference.seconds,
            "reference_events_per_second": self.reference_events_per_second(),
            "reference_us_per_event": self.reference_us_per_event(),
            "ratio": self.events_per_second() / self.reference_events_per_second(),
            "ops_per_event": {
                "gets": self.per_event(OpCounts::total(&c.gets)),
                "puts": self.per_event(OpCounts::total(&c.puts)),
                "deletes": self.per_event(OpCounts::total(&c.deletes)),
                "scans": self.per_event(OpCounts::total(&c.scans)),
                "scan_rows": self.per_event(OpCounts::total(&c.scan_rows)),
                "read_bytes": self.per_event(OpCounts::total(&c.read_bytes)),
                "written_bytes": self.per_event(OpCounts::total(&c.written_bytes)),
                "by_table": per_table,
            },
            "reference_ops": {
                "gets": self.reference.gets,
                "puts": self.reference.puts,
                "scans": self.reference.scans,
                "durable_commits": self.reference.durable_commits,
            },
            "created": m.stats.created,
            "merged": m.stats.merged,
            "refused": m.stats.refused,
            "batches": m.batches,
            "batch_records": m.batch_records,
            "durable_commits": m.durable_commits,
            "batch_ms_max": m.batch_ms_max,
            "record_bytes_mean": m.record_bytes as f64 / m.events as f64,
            "store_bytes": self.store_bytes,
        })
    }
}

/// `1234567.8` → `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separates() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn records_are_envelopes_of_realistic_size() {
        let mut mix = Mix::new(1, 1000, 0);
        let mut types = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let record = mix.record();
            let envelope = EventEnvelope::decode(&record).unwrap();
            let event: Value = serde_json::from_slice(envelope.json).unwrap();
            assert!(
                (250..=1100).contains(&envelope.json.len()),
                "{} bytes",
                envelope.json.len()
            );
            assert_eq!(event["type"], envelope.event_type.as_str());
            types.insert(envelope.event_type.as_str());
        }
        assert_eq!(types.len(), 4, "{types:?}");
        let populate = population_record(7, 0);
        let envelope = EventEnvelope::decode(&populate).unwrap();
        let event: Value = serde_json::from_slice(envelope.json).unwrap();
        assert_eq!(event["userId"], synth::user_id(7));
    }

    #[test]
    fn a_small_run_creates_merges_and_reuses_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let args = |profiles| UnifyArgs {
            profiles,
            events: 3000,
            warmup_events: 500,
            data: Some(dir.path().to_path_buf()),
            populate_batch: 400,
            batch_records: UNIFY_BATCH_RECORDS_MAX,
            seed: 3,
            json: true,
        };
        unify(args(1000)).unwrap();
        let marker = read_marker(&dir.path().join(MARKER_FILE)).unwrap().unwrap();
        assert_eq!(marker.profiles, 1000);
        assert!(marker.visitors > 0);
        // A second run continues on the same store; another size is refused.
        unify(args(1000)).unwrap();
        assert!(unify(args(2000)).is_err());
    }
}
