//! `tandem serve`, `tandem load` and `tandem bench`.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tandem_server::auth::AdminTokenOrigin;
use tandem_server::ServeOptions;

#[derive(Args)]
pub struct ServeArgs {
    /// The config file (TOML). Without one, a demo workspace is served.
    #[arg(long, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides `server.listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (overrides `server.data_dir`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Benchmark reference only: run the whole request path but discard events instead of storing them.
    #[arg(long, hide = true)]
    discard: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => {
            tandem_config::load_with(path, Some(tandem_activate::registry::config_validator))
                .map_err(|error| anyhow::anyhow!("{error}"))?
        }
        None => tandem_config::Config::default(),
    };
    let overrides = tandem_config::Overrides {
        listen: args.listen,
        data_dir: args.data,
        admin_token: None,
    };
    tandem_config::apply_env_and_overrides(
        &mut config,
        &|name| std::env::var(name).ok(),
        &overrides,
    )
    .map_err(|problems| {
        anyhow::anyhow!(
            "{}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    if args.discard {
        tracing::warn!("--discard: events are NOT stored (benchmark reference mode)");
    }
    runtime()?.block_on(async move {
        let server = tandem_server::start(
            config,
            ServeOptions {
                persist: !args.discard,
            },
        )
        .await?;
        print_banner(&server);
        tandem_server::serve_until_signal(server).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn print_banner(server: &tandem_server::RunningServer) {
    let report = &server.report;
    let url = format!("http://{}", report.listen);
    println!("tandem {} listening on {url}", env!("CARGO_PKG_VERSION"));
    println!(
        "  data directory: {}",
        server.state.config.server.data_dir.display()
    );
    for (workspace, recovery) in &report.workspaces {
        println!(
            "  workspace {workspace}: log at offset {} ({} segments{})",
            recovery.next_offset,
            recovery.segments,
            if recovery.truncated_bytes > 0 {
                format!(", {} torn bytes truncated", recovery.truncated_bytes)
            } else {
                String::new()
            }
        );
    }
    if let Some(key) = &report.demo_write_key {
        println!("  demo workspace: demo, source: demo-web");
        println!("  demo write key: {key}");
        println!("  try: curl -u {key}: {url}/v1/track -H 'content-type: application/json' -d '{{\"userId\":\"u1\",\"event\":\"Signed Up\"}}'");
    }
    if let Some(token) = &report.demo_access_token {
        println!("  demo Profile API access token: {token}");
        println!("  then: curl -u {token}: {url}/v1/spaces/demo/collections/users/profiles/user_id:u1/events");
    }
    match &report.admin_token {
        AdminTokenOrigin::Generated(token) => {
            println!("  admin token (shown once, stored hashed): {token}")
        }
        AdminTokenOrigin::Configured => println!("  admin token: from config / TANDEM_ADMIN_TOKEN"),
        AdminTokenOrigin::Stored => println!(
            "  admin token: as generated at first start (set TANDEM_ADMIN_TOKEN to replace it)"
        ),
    }
    println!("  console: {url}/");
    if server
        .state
        .store
        .users()
        .is_ok_and(|users| users.is_empty())
    {
        println!("  no console user yet; make the first one (an organization admin) with the admin token:");
        println!("    echo 'a long passphrase' | TANDEM_ADMIN_TOKEN=… tandem users add --url {url} --email you@example.com --role org_admin");
    }
    println!(
        "  started in {} ms ({} dedup entries recovered)",
        report.startup.as_millis(),
        report.dedup_entries_recovered
    );
}

#[derive(Args)]
pub struct LoadArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "TANDEM_WRITE_KEY")]
    write_key: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Events per batch request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Approximate bytes per event.
    #[arg(long, default_value_t = 1000)]
    event_bytes: usize,
    /// Target events per second (open loop); omit for as fast as possible.
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Distinct users.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Append the messageId of every acknowledged event to this file.
    #[arg(long)]
    record_acked: Option<PathBuf>,
}

pub fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let options = tandem_load::LoadOptions {
        url: args.url,
        write_key: args.write_key,
        concurrency: args.concurrency,
        batch_events: args.batch,
        event_bytes: args.event_bytes,
        rate_events_per_second: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        users: args.users,
        seed: args.seed,
        retry_on_pushback: true,
        record_acked: args.record_acked,
    };
    let report = runtime()?.block_on(tandem_load::run(options, None))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The disk's fdatasync'd sequential write bandwidth for given record sizes (the log's ceiling).
    Disk {
        /// Directory on the disk to measure (a temporary file is written and removed).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        record_bytes: usize,
        /// Records per write+fdatasync (the group-commit size).
        #[arg(long, default_value_t = 100)]
        records_per_write: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        json: bool,
    },
    /// Unify: identity, profile and computed-trait updates on a store of N profiles, beside the
    /// store's ceiling for the same operations.
    Unify(crate::bench_unify::UnifyArgs),
    /// Profile API trait lookups at a fixed rate over HTTP, beside the same loop on /healthz.
    ProfileApi(crate::bench_profile_api::ProfileApiArgs),
    /// Batched webhook delivery from a log backlog to a local receiver, beside the same requests
    /// sent directly; then an outage under steady input and the backlog's drain rate.
    Deliver(crate::bench_deliver::DeliverArgs),
    /// Audiences: ack → `Audience Entered` in the log under load (beside the ack latency), and
    /// a five-condition audience counted over many profiles (beside one pass over them).
    Audiences(crate::bench_audiences::AudiencesArgs),
    /// Personalization API answers at a fixed rate over HTTP, beside the same loop on /healthz.
    Personalize(crate::bench_personalize::PersonalizeArgs),
}

pub fn bench(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Unify(args) => return crate::bench_unify::unify(args),
        BenchCommand::ProfileApi(args) => return crate::bench_profile_api::profile_api(args),
        BenchCommand::Deliver(args) => return crate::bench_deliver::deliver(args),
        BenchCommand::Audiences(args) => return crate::bench_audiences::audiences(args),
        BenchCommand::Personalize(args) => return crate::bench_personalize::personalize(args),
        BenchCommand::Disk {
            dir,
            record_bytes,
            records_per_write,
            duration,
            json,
        } => {
            let report = tandem_load::disk_ceiling(
                &dir,
                record_bytes,
                records_per_write,
                Duration::from_secs_f64(duration),
            )?;
            if json {
                println!("{}", report.to_json());
            } else {
                println!("{report}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
