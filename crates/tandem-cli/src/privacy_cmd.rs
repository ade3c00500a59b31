//! `tandem privacy request|list|show|export|suppressions`: data-subject requests over the
//! management API of a running server (roles are checked there: creating requests and
//! downloading exports needs `ManagePrivacyRequests`). A request is followed until it is done,
//! with a spinner naming each store as it is reached; the exit code says whether it completed.

use crate::access_cmd::{call, finish, ApiArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long `request` follows a request before giving up (it keeps running on the server).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Args)]
pub struct Target {
    #[command(flatten)]
    api: ApiArgs,
    #[arg(long, default_value = "default")]
    workspace: String,
}

impl Target {
    fn path(&self, rest: &str) -> String {
        format!("/api/v1/workspaces/{}/privacy{rest}", self.workspace)
    }
}

#[derive(Subcommand)]
pub enum PrivacyCommand {
    /// Creates a data-subject request and follows it to its end.
    Request {
        #[command(flatten)]
        target: Target,
        /// access (export), erasure, suppression or rectification.
        #[arg(long = "type")]
        kind: String,
        /// The person, as `type:value` (`email:ada@example.org`, `user_id:42`, `crm_id:C-1`).
        #[arg(long)]
        identifier: String,
        /// A corrected trait for a rectification, `name=value` (value as JSON when it parses, else text); repeatable.
        #[arg(long = "trait")]
        traits: Vec<String>,
        /// Why (kept with the request and in the audit log), e.g. a ticket number.
        #[arg(long)]
        note: Option<String>,
        /// Return at once with the request instead of following it.
        #[arg(long)]
        no_wait: bool,
        /// For an access request: where to write the export document once ready.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Requests, newest first, with the SLA summary.
    List {
        #[command(flatten)]
        target: Target,
        /// pending, running, completed or failed.
        #[arg(long)]
        status: Option<String>,
    },
    /// One request with its status per store and destination (the deletion report).
    Show {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Writes an access request's export document to a file (or standard output).
    Export {
        #[command(flatten)]
        target: Target,
        id: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// How many identifiers the workspace suppresses.
    Suppressions {
        #[command(flatten)]
        target: Target,
    },
}

fn parse_traits(traits: &[String]) -> anyhow::Result<Option<Map<String, Value>>> {
    if traits.is_empty() {
        return Ok(None);
    }
    let mut map = Map::new();
    for entry in traits {
        let (name, value) = entry
            .split_once('=')
            .with_context(|| format!("--trait {entry}: expected name=value"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        map.insert(name.to_string(), value);
    }
    Ok(Some(map))
}

fn write_export(target: &Target, id: &str, out: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let (ok, document) = call(
        &target.api,
        Method::GET,
        &target.path(&format!("/requests/{id}/export")),
        None,
    )?;
    if !ok {
        return finish(ok, &document);
    }
    let text = serde_json::to_string_pretty(&document)?;
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("export written to {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls the request until it completes or fails, showing each store reached.
fn follow(target: &Target, id: &str) -> anyhow::Result<Value> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} steps · {msg}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    loop {
        let (ok, request) = call(
            &target.api,
            Method::GET,
            &target.path(&format!("/requests/{id}")),
            None,
        )?;
        if !ok {
            bar.finish_and_clear();
            anyhow::bail!("{request}");
        }
        let steps = request["steps"].as_array().cloned().unwrap_or_default();
        bar.set_position(steps.len() as u64);
        if let Some(last) = steps.last() {
            bar.set_message(format!(
                "{}: {}",
                last["store"].as_str().unwrap_or_default(),
                last["status"].as_str().unwrap_or_default()
            ));
        }
        let status = request["status"].as_str().unwrap_or_default();
        if status == "completed" || status == "failed" {
            bar.finish_and_clear();
            return Ok(request);
        }
        if started.elapsed() > FOLLOW_TIMEOUT {
            bar.finish_and_clear();
            anyhow::bail!(
                "{id} is still {status} after {FOLLOW_TIMEOUT:?}; it keeps running: `tandem privacy show {id}`"
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

pub fn privacy(command: PrivacyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PrivacyCommand::Request {
            target,
            kind,
            identifier,
            traits,
            note,
            no_wait,
            out,
        } => {
            let (identifier_type, value) = identifier
                .split_once(':')
                .filter(|(kind, value)| !kind.is_empty() && !value.is_empty())
                .context("--identifier: expected type:value, e.g. email:ada@example.org")?;
            let mut body = json!({
                "type": kind,
                "identifier": {"type": identifier_type, "id": value},
                "note": note,
            });
            if let Some(traits) = parse_traits(&traits)? {
                body["traits"] = Value::Object(traits);
            }
            let (ok, created) = call(
                &target.api,
                Method::POST,
                &target.path("/requests"),
                Some(body),
            )?;
            if !ok || no_wait {
                return finish(ok, &created);
            }
            let id = created["id"].as_str().unwrap_or_default().to_string();
            let done = follow(&target, &id)?;
            let completed = done["status"] == "completed";
            finish(completed, &done)?;
            if completed && kind == "access" {
                write_export(&target, &id, out.as_ref())?;
            }
            Ok(if completed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        PrivacyCommand::List { target, status } => {
            let query = status.map(|s| format!("?status={s}")).unwrap_or_default();
            let (ok, value) = call(
                &target.api,
                Method::GET,
                &target.path(&format!("/requests{query}")),
                None,
            )?;
            finish(ok, &value)
        }
        PrivacyCommand::Show { target, id } => {
            let (ok, value) = call(
                &target.api,
                Method::GET,
                &target.path(&format!("/requests/{id}")),
                None,
            )?;
            finish(ok, &value)
        }
        PrivacyCommand::Export { target, id, out } => write_export(&target, &id, out.as_ref()),
        PrivacyCommand::Suppressions { target } => {
            let (ok, value) = call(
                &target.api,
                Method::GET,
                &target.path("/suppressions"),
                None,
            )?;
            finish(ok, &value)
        }
    }
}
