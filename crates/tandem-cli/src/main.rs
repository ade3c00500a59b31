//! `tandem`: one binary, one subcommand per job.

mod access_cmd;
mod audiences_cmd;
mod bench_audiences;
mod bench_deliver;
mod bench_personalize;
mod bench_profile_api;
mod bench_unify;
mod catalog_cmd;
mod changes_cmd;
mod deliver_cmd;
mod import_cmd;
mod log_cmd;
mod plans_cmd;
mod privacy_cmd;
mod rebuild_cmd;
mod serve_cmd;
mod tail_cmd;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: the event paths allocate and free many small
/// JSON values per event, and glibc's malloc spent ~40% of the delivery benchmark's CPU in
/// `_int_malloc`/`free`/`malloc_consolidate` (ARCHITECTURE.md, "Decisions").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Customer data platform with built-in governance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (collect API, management API, metrics). With no config, a demo workspace.
    Serve(serve_cmd::ServeArgs),
    /// Check a config file and report every problem with its line.
    Validate {
        #[arg(long, env = "TANDEM_CONFIG")]
        config: PathBuf,
    },
    /// Generate Segment-spec load against a server and report events/s and ack latency.
    Load(serve_cmd::LoadArgs),
    /// Import customer records (CSV or JSON lines) into a running server as identify events.
    Import(import_cmd::ImportArgs),
    /// Rebuild profiles (identity graph, traits, computed traits) from the logs; server stopped.
    Rebuild(rebuild_cmd::RebuildArgs),
    /// Inspect the durable log of a data directory.
    Log {
        #[command(subcommand)]
        command: log_cmd::LogCommand,
    },
    /// Follow the live event stream of a workspace or source.
    Tail(tail_cmd::TailArgs),
    /// Dead letters of a connection: list, show, replay, discard (over the management API).
    Dlq {
        #[command(subcommand)]
        command: deliver_cmd::DlqCommand,
    },
    /// Send past events to a connection's destination (over the management API), with progress.
    Backfill {
        #[command(subcommand)]
        command: deliver_cmd::BackfillCommand,
    },
    /// Data-subject requests: access (export), erasure, suppression, rectification; their
    /// reports (over the management API).
    Privacy {
        #[command(subcommand)]
        command: privacy_cmd::PrivacyCommand,
    },
    /// Audiences: list, show, preview a definition, members (over the management API).
    Audiences {
        #[command(subcommand)]
        command: audiences_cmd::AudiencesCommand,
    },
    /// Tracking plans, their violations, inference and the quarantine (over the management API).
    Plans {
        #[command(subcommand)]
        command: plans_cmd::PlansCommand,
    },
    /// The catalog (owners, purposes, data categories, activity, findings) and the record of
    /// processing (GDPR Art. 30), over the management API.
    Catalog {
        #[command(subcommand)]
        command: catalog_cmd::CatalogCommand,
    },
    /// Configuration as code: export the live config of a workspace, import a file as a change request.
    Config {
        #[command(subcommand)]
        command: changes_cmd::ConfigCommand,
    },
    /// Change requests: list, show (diff and dry run), approve (applies), reject.
    Changes {
        #[command(subcommand)]
        command: changes_cmd::ChangesCommand,
    },
    /// Users who log in (over the management API of a running server).
    Users {
        #[command(subcommand)]
        command: access_cmd::UsersCommand,
    },
    /// Management API tokens (over the management API of a running server).
    Tokens {
        #[command(subcommand)]
        command: access_cmd::TokensCommand,
    },
    /// The hash-chained audit log of a data directory: verify, export.
    Audit {
        #[command(subcommand)]
        command: access_cmd::AuditCommand,
    },
    /// Reference measurements for the benchmark.
    Bench {
        #[command(subcommand)]
        command: serve_cmd::BenchCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Validate { config } => validate(&config),
        Command::Load(args) => serve_cmd::load(args),
        Command::Import(args) => import_cmd::import(args),
        Command::Rebuild(args) => rebuild_cmd::rebuild(args),
        Command::Log { command } => log_cmd::run(command),
        Command::Tail(args) => tail_cmd::tail(args),
        Command::Dlq { command } => deliver_cmd::dlq(command),
        Command::Backfill { command } => deliver_cmd::backfill(command),
        Command::Audiences { command } => audiences_cmd::audiences(command),
        Command::Privacy { command } => privacy_cmd::privacy(command),
        Command::Plans { command } => plans_cmd::plans(command),
        Command::Catalog { command } => catalog_cmd::catalog(command),
        Command::Config { command } => changes_cmd::config(command),
        Command::Changes { command } => changes_cmd::changes(command),
        Command::Users { command } => access_cmd::users(command),
        Command::Tokens { command } => access_cmd::tokens(command),
        Command::Audit { command } => access_cmd::audit(command),
        Command::Bench { command } => serve_cmd::bench(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TANDEM_LOG_FORMAT").is_ok_and(|format| format == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn validate(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match tandem_config::load_with(path, Some(tandem_activate::registry::config_validator)) {
        Ok(config) => {
            let sources: usize = config
                .workspaces
                .iter()
                .map(|workspace| workspace.sources.len())
                .sum();
            println!(
                "{}: ok ({} workspaces, {} sources)",
                path.display(),
                config.workspaces.len(),
                sources
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::from(1))
        }
    }
}
