//! `tandem dlq list|show|replay|discard` and `tandem backfill start|status`: the dead-letter
//! queue and backfills of a connection, over the management API of a running server (the DLQ
//! is a redb file the server holds; going through the API also checks roles and audits).
//! `replay` and `backfill start` follow the job with a progress bar until it ends (`--no-wait`
//! returns at once with the job).

use crate::access_cmd::{call, finish, ApiArgs};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

/// How often a followed job's progress is fetched.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Args)]
pub struct ConnectionArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[arg(long, default_value = "default")]
    workspace: String,
    /// The connection id.
    #[arg(long)]
    connection: String,
}

impl ConnectionArgs {
    fn path(&self, rest: &str) -> String {
        format!(
            "/api/v1/workspaces/{}/connections/{}{rest}",
            self.workspace, self.connection
        )
    }
}

/// Which dead letters a replay or discard covers: `--all`, some `--id`s, narrowed by filters.
#[derive(Args)]
pub struct Selection {
    /// Every entry (narrowed by the filters below, if any).
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// One entry id (repeat for several).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Only entries whose error contains this text.
    #[arg(long)]
    error_contains: Option<String>,
    /// Only track events of this name.
    #[arg(long)]
    event: Option<String>,
}

impl Selection {
    fn body(&self) -> Value {
        json!({
            "all": self.all,
            "ids": self.ids,
            "filter": {"error_contains": self.error_contains, "event": self.event},
        })
    }
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters (newest last), with their errors and events.
    List {
        #[command(flatten)]
        target: ConnectionArgs,
        #[arg(long)]
        error_contains: Option<String>,
        #[arg(long)]
        event: Option<String>,
        /// Entries after this id (the last id of the previous page).
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One dead letter in full.
    Show {
        #[command(flatten)]
        target: ConnectionArgs,
        id: String,
    },
    /// Send dead letters again through the connection's current mappings and transformation.
    Replay {
        #[command(flatten)]
        target: ConnectionArgs,
        #[command(flatten)]
        selection: Selection,
        /// Return once the replay has started instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove dead letters without sending them.
    Discard {
        #[command(flatten)]
        target: ConnectionArgs,
        #[command(flatten)]
        selection: Selection,
    },
}

#[derive(Subcommand)]
pub enum BackfillCommand {
    /// Send the events received in a time range (from the log) to the connection's destination.
    Start {
        #[command(flatten)]
        target: ConnectionArgs,
        /// ISO-8601 start (e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        from: String,
        /// ISO-8601 end.
        #[arg(long)]
        to: String,
        /// Return once the backfill has started instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Progress of the connection's last backfill.
    Status {
        #[command(flatten)]
        target: ConnectionArgs,
    },
}

pub fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List {
            target,
            error_contains,
            event,
            after,
            limit,
        } => {
            // Only for its query encoder: the path is joined to the server's URL by `call`.
            let mut encoder = reqwest::Url::parse("http://query.invalid/").expect("a valid URL");
            for (name, value) in [
                ("error_contains", error_contains),
                ("event", event),
                ("after", after),
                ("limit", limit.map(|limit| limit.to_string())),
            ] {
                if let Some(value) = value {
                    encoder.query_pairs_mut().append_pair(name, &value);
                }
            }
            let query = encoder.query().unwrap_or_default().to_string();
            let path = target.path(&format!(
                "/dlq{}{query}",
                if query.is_empty() { "" } else { "?" }
            ));
            let (ok, value) = call(&target.api, Method::GET, &path, None)?;
            finish(ok, &value)
        }
        DlqCommand::Show { target, id } => {
            let (ok, value) = call(
                &target.api,
                Method::GET,
                &target.path(&format!("/dlq/{id}")),
                None,
            )?;
            finish(ok, &value)
        }
        DlqCommand::Replay {
            target,
            selection,
            no_wait,
        } => {
            let (ok, job) = call(
                &target.api,
                Method::POST,
                &target.path("/dlq/replay"),
                Some(selection.body()),
            )?;
            if !ok || no_wait {
                return finish(ok, &job);
            }
            let id = job["id"].as_str().unwrap_or_default().to_string();
            follow(
                &target,
                &target.path(&format!("/dlq/replays/{id}")),
                "replay",
            )
        }
        DlqCommand::Discard { target, selection } => {
            let (ok, value) = call(
                &target.api,
                Method::POST,
                &target.path("/dlq/discard"),
                Some(selection.body()),
            )?;
            finish(ok, &value)
        }
    }
}

pub fn backfill(command: BackfillCommand) -> anyhow::Result<ExitCode> {
    match command {
        BackfillCommand::Start {
            target,
            from,
            to,
            no_wait,
        } => {
            let (ok, job) = call(
                &target.api,
                Method::POST,
                &target.path("/backfill"),
                Some(json!({"from": from, "to": to})),
            )?;
            if !ok || no_wait {
                return finish(ok, &job);
            }
            follow(&target, &target.path("/backfill"), "backfill")
        }
        BackfillCommand::Status { target } => {
            let (ok, value) = call(&target.api, Method::GET, &target.path("/backfill"), None)?;
            finish(ok, &value)
        }
    }
}

/// Polls a job until it is no longer running, drawing its progress; prints the final view.
fn follow(target: &ConnectionArgs, path: &str, what: &str) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        let (ok, job) = call(&target.api, Method::GET, path, None)?;
        if !ok {
            bar.abandon();
            return finish(ok, &job);
        }
        let number = |field: &str| job[field].as_u64().unwrap_or(0);
        bar.set_length(number("total").max(number("scanned")));
        bar.set_position(number("scanned"));
        bar.set_message(format!(
            "{what}: {} sent, {} failed",
            number("sent"),
            number("failed")
        ));
        if job["state"] != "running" {
            bar.finish_and_clear();
            let failed = job["state"] == "failed";
            return finish(!failed, &job);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
