//! `tandem audiences list|show|preview|create|update|delete|members`: audiences over the
//! management API of a running server (roles are checked there). A preview that takes longer than
//! the server waits, and the backfill of a created or changed audience, are followed with a
//! progress bar.

use crate::access_cmd::{call, finish, ApiArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Args)]
pub struct WorkspaceArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[arg(long, default_value = "default")]
    workspace: String,
}

impl WorkspaceArgs {
    fn path(&self, rest: &str) -> String {
        format!("/api/v1/workspaces/{}{rest}", self.workspace)
    }
}

#[derive(Subcommand)]
pub enum AudiencesCommand {
    /// Every audience with its size and backfill progress.
    List {
        #[command(flatten)]
        target: WorkspaceArgs,
    },
    /// One audience: definition, size, counters, version.
    Show {
        #[command(flatten)]
        target: WorkspaceArgs,
        audience: String,
    },
    /// Size (and sample members, with ReadProfiles) of a definition before saving it, over
    /// every current profile.
    Preview {
        #[command(flatten)]
        target: WorkspaceArgs,
        /// The definition: a JSON file, or TOML (`id`, `name`, `[condition]`) when it ends in `.toml`.
        #[arg(long, conflicts_with = "audience")]
        file: Option<PathBuf>,
        /// Or an existing audience's definition (its size as computed afresh).
        #[arg(long)]
        audience: Option<String>,
        /// Return at once with the preview id instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Saves a new audience (JSON, or TOML when the file ends in `.toml`) and follows its
    /// backfill over the existing profiles. Under `change_approval`, prints the change request.
    Create {
        #[command(flatten)]
        target: WorkspaceArgs,
        #[arg(long)]
        file: PathBuf,
        /// Return once saved instead of following the backfill.
        #[arg(long)]
        no_wait: bool,
    },
    /// Changes an API-managed audience: the file's fields replace the audience's (a `condition`
    /// replaces the whole tree); follows the re-evaluation.
    Update {
        #[command(flatten)]
        target: WorkspaceArgs,
        audience: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        no_wait: bool,
    },
    /// Deletes an API-managed audience: its members exit (`Audience Exited`, reason `deleted`).
    Delete {
        #[command(flatten)]
        target: WorkspaceArgs,
        audience: String,
    },
    /// An audience's members (a page, or `--all` as JSON lines).
    Members {
        #[command(flatten)]
        target: WorkspaceArgs,
        audience: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The page after this profile id.
        #[arg(long)]
        after: Option<String>,
        /// Every member, one JSON line each (pages through the whole audience).
        #[arg(long)]
        all: bool,
    },
}

pub fn audiences(command: AudiencesCommand) -> anyhow::Result<ExitCode> {
    match command {
        AudiencesCommand::List { target } => {
            let (ok, value) = call(&target.api, Method::GET, &target.path("/audiences"), None)?;
            finish(ok, &value)
        }
        AudiencesCommand::Show { target, audience } => {
            let path = target.path(&format!("/audiences/{audience}"));
            let (ok, value) = call(&target.api, Method::GET, &path, None)?;
            finish(ok, &value)
        }
        AudiencesCommand::Preview {
            target,
            file,
            audience,
            no_wait,
        } => preview(&target, file, audience, no_wait),
        AudiencesCommand::Create {
            target,
            file,
            no_wait,
        } => {
            let body = read_definition(&file)?;
            let (ok, value) = call(
                &target.api,
                Method::POST,
                &target.path("/audiences"),
                Some(body),
            )?;
            saved(&target, ok, value, no_wait)
        }
        AudiencesCommand::Update {
            target,
            audience,
            file,
            no_wait,
        } => {
            let body = read_definition(&file)?;
            let path = target.path(&format!("/audiences/{audience}"));
            let (ok, value) = call(&target.api, Method::PATCH, &path, Some(body))?;
            saved(&target, ok, value, no_wait)
        }
        AudiencesCommand::Delete { target, audience } => {
            let path = target.path(&format!("/audiences/{audience}"));
            let (ok, value) = call(&target.api, Method::DELETE, &path, None)?;
            if ok && value.as_str() == Some("") {
                return finish(true, &serde_json::json!({ "deleted": audience }));
            }
            finish(ok, &value)
        }
        AudiencesCommand::Members {
            target,
            audience,
            limit,
            after,
            all,
        } => members(&target, &audience, limit, after, all),
    }
}

/// After a create or update: a change request (202) is printed as is; a saved audience's
/// backfill is followed until the audience is live.
fn saved(
    target: &WorkspaceArgs,
    ok: bool,
    mut value: Value,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let status = |value: &Value| value["status"].as_str().unwrap_or_default().to_string();
    let applied = ok && ["pending", "backfilling", "live"].contains(&status(&value).as_str());
    if !applied || no_wait {
        return finish(ok, &value);
    }
    let id = value["id"].as_str().unwrap_or_default().to_string();
    let path = target.path(&format!("/audiences/{id}"));
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("backfill [{elapsed_precise}] {wide_bar} {percent}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // pending: the unify task takes the change before its next batch; backfilling: its job
    // walks every profile; live: done.
    while status(&value) != "live" {
        let backfill = &value["backfill"];
        if status(&value) == "pending" {
            bar.set_message("waiting for the unify task to take the change");
        } else {
            bar.set_position((backfill["progress"].as_f64().unwrap_or(0.0) * 1000.0) as u64);
            bar.set_message(format!(
                "{} profiles, {} entered, {} exited",
                backfill["profiles_done"], backfill["entered"], backfill["exited"]
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
        let (ok, next) = call(&target.api, Method::GET, &path, None)?;
        if !ok {
            bar.abandon();
            return finish(false, &next);
        }
        value = next;
    }
    bar.finish_and_clear();
    finish(true, &value)
}

fn definition(
    file: Option<PathBuf>,
    audience: Option<String>,
    target: &WorkspaceArgs,
) -> anyhow::Result<Value> {
    if let Some(id) = audience {
        let (ok, value) = call(
            &target.api,
            Method::GET,
            &target.path(&format!("/audiences/{id}")),
            None,
        )?;
        if !ok {
            anyhow::bail!("audience {id}: {value}");
        }
        let mut definition = serde_json::Map::new();
        for field in ["id", "name", "description", "owner", "condition"] {
            if let Some(v) = value.get(field).filter(|v| !v.is_null()) {
                definition.insert(field.to_string(), v.clone());
            }
        }
        return Ok(Value::Object(definition));
    }
    read_definition(&file.context("give --file DEFINITION or --audience ID")?)
}

/// A definition file: JSON, or TOML (`id`, `name`, `[condition]`) when it ends in `.toml`.
fn read_definition(file: &std::path::Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if file.extension().is_some_and(|ext| ext == "toml") {
        let value: toml::Value =
            toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
        Ok(serde_json::to_value(value)?)
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
    }
}

fn preview(
    target: &WorkspaceArgs,
    file: Option<PathBuf>,
    audience: Option<String>,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let body = definition(file, audience, target)?;
    let (ok, mut value) = call(
        &target.api,
        Method::POST,
        &target.path("/audiences/preview"),
        Some(body),
    )?;
    if !ok || no_wait || value["status"] != "running" {
        return finish(ok && value["status"] != "failed", &value);
    }
    let poll = value["poll"].as_str().unwrap_or_default().to_string();
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("preview [{elapsed_precise}] {wide_bar} {percent}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while value["status"] == "running" {
        bar.set_position((value["progress"].as_f64().unwrap_or(0.0) * 1000.0) as u64);
        bar.set_message(format!(
            "{} profiles, {} match",
            value["profiles_scanned"], value["size"]
        ));
        std::thread::sleep(POLL_INTERVAL);
        let (ok, next) = call(&target.api, Method::GET, &poll, None)?;
        if !ok {
            bar.abandon();
            return finish(false, &next);
        }
        value = next;
    }
    bar.finish_and_clear();
    finish(value["status"] == "done", &value)
}

fn members(
    target: &WorkspaceArgs,
    audience: &str,
    limit: usize,
    mut after: Option<String>,
    all: bool,
) -> anyhow::Result<ExitCode> {
    loop {
        let mut path = target.path(&format!("/audiences/{audience}/members?limit={limit}"));
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let (ok, page) = call(&target.api, Method::GET, &path, None)?;
        if !ok || !all {
            return finish(ok, &page);
        }
        for member in page["members"].as_array().into_iter().flatten() {
            println!("{member}");
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}
