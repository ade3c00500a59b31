//! `tandem plans list|show|violations|infer` and `tandem plans quarantine list|show|release|discard`:
//! tracking plans and the quarantine over the management API of a running server (roles are
//! checked and changes audited there).

use crate::access_cmd::{call, finish, ApiArgs};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Args)]
pub struct WorkspaceArgs {
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    #[arg(long, default_value = "default")]
    pub(crate) workspace: String,
}

impl WorkspaceArgs {
    pub(crate) fn path(&self, rest: &str) -> String {
        format!("/api/v1/workspaces/{}{rest}", self.workspace)
    }
}

#[derive(Subcommand)]
pub enum PlansCommand {
    /// The workspace's tracking plans with their totals.
    List {
        #[command(flatten)]
        target: WorkspaceArgs,
    },
    /// One plan with its schemas.
    Show {
        #[command(flatten)]
        target: WorkspaceArgs,
        plan: String,
    },
    /// A plan's violation counters by event, field and source, with samples.
    Violations {
        #[command(flatten)]
        target: WorkspaceArgs,
        plan: String,
    },
    /// Infer a draft plan from the last N events (of one source); `--save` keeps it as a draft.
    Infer {
        #[command(flatten)]
        target: WorkspaceArgs,
        #[arg(long)]
        source: Option<String>,
        /// How many recent events to read.
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Save the draft (not enforced) for review.
        #[arg(long)]
        save: bool,
        /// Id of the saved draft.
        #[arg(long)]
        id: Option<String>,
    },
    /// Events a quarantine plan held aside.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

/// Which quarantined events a release or discard covers.
#[derive(Args)]
pub struct Selection {
    /// Every pending event (narrowed by the filters below, if any).
    #[arg(long)]
    all: bool,
    /// One entry id (repeat for several).
    #[arg(long = "id")]
    ids: Vec<u64>,
    /// Only track events of this name (`identify traits`, `group traits` for those calls).
    #[arg(long)]
    event: Option<String>,
    #[arg(long)]
    source: Option<String>,
}

impl Selection {
    fn body(&self) -> Value {
        json!({
            "all": self.all,
            "ids": (!self.ids.is_empty()).then_some(&self.ids),
            "event": self.event,
            "source": self.source,
        })
    }
}

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// Pending events, oldest first.
    List {
        #[command(flatten)]
        target: WorkspaceArgs,
        #[arg(long)]
        event: Option<String>,
        #[arg(long)]
        source: Option<String>,
        /// Entries after this id (the last id of the previous page).
        #[arg(long)]
        after: Option<u64>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One held event with its violations.
    Show {
        #[command(flatten)]
        target: WorkspaceArgs,
        id: u64,
    },
    /// Re-check held events against the current plan and store those that pass.
    Release {
        #[command(flatten)]
        target: WorkspaceArgs,
        #[command(flatten)]
        selection: Selection,
        /// Store them even if they still violate (needs ManageTrackingPlans).
        #[arg(long)]
        force: bool,
    },
    /// Drop held events for good.
    Discard {
        #[command(flatten)]
        target: WorkspaceArgs,
        #[command(flatten)]
        selection: Selection,
    },
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    // Only for its query encoder: the path is joined to the server's URL by `call`.
    let mut encoder = reqwest::Url::parse("http://query.invalid/").expect("a valid URL");
    for (name, value) in pairs {
        if let Some(value) = value {
            encoder.query_pairs_mut().append_pair(name, value);
        }
    }
    match encoder.query() {
        Some(query) if !query.is_empty() => format!("?{query}"),
        _ => String::new(),
    }
}

pub fn plans(command: PlansCommand) -> anyhow::Result<ExitCode> {
    let (target, method, path, body) = match command {
        PlansCommand::List { target } => {
            let path = target.path("/tracking-plans");
            (target, Method::GET, path, None)
        }
        PlansCommand::Show { target, plan } => {
            let path = target.path(&format!("/tracking-plans/{plan}"));
            (target, Method::GET, path, None)
        }
        PlansCommand::Violations { target, plan } => {
            let path = target.path(&format!("/tracking-plans/{plan}/violations"));
            (target, Method::GET, path, None)
        }
        PlansCommand::Infer {
            target,
            source,
            events,
            save,
            id,
        } => {
            let path = target.path("/tracking-plans/infer");
            let body = json!({"source": source, "events": events, "save": save, "id": id});
            (target, Method::POST, path, Some(body))
        }
        PlansCommand::Quarantine { command } => return quarantine(command),
    };
    let (ok, value) = call(&target.api, method, &path, body)?;
    finish(ok, &value)
}

fn quarantine(command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    let (target, method, path, body) = match command {
        QuarantineCommand::List {
            target,
            event,
            source,
            after,
            limit,
        } => {
            let query = query(&[
                ("event", event),
                ("source", source),
                ("after", after.map(|after| after.to_string())),
                ("limit", limit.map(|limit| limit.to_string())),
            ]);
            let path = target.path(&format!("/quarantine{query}"));
            (target, Method::GET, path, None)
        }
        QuarantineCommand::Show { target, id } => {
            let path = target.path(&format!("/quarantine/{id}"));
            (target, Method::GET, path, None)
        }
        QuarantineCommand::Release {
            target,
            selection,
            force,
        } => {
            let mut body = selection.body();
            body["force"] = json!(force);
            let path = target.path("/quarantine/release");
            (target, Method::POST, path, Some(body))
        }
        QuarantineCommand::Discard { target, selection } => {
            let path = target.path("/quarantine/discard");
            (target, Method::POST, path, Some(selection.body()))
        }
    };
    let (ok, value) = call(&target.api, method, &path, body)?;
    finish(ok, &value)
}
