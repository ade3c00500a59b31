//! `tandem config export|import` and `tandem changes list|show|approve|reject`: configuration
//! as code and change requests, over the management API of a running server (which checks
//! roles, keeps the versions and audits every step).

use crate::access_cmd::{call, credential, finish, ApiArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

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
pub enum ConfigCommand {
    /// Print the live configuration of a workspace as a config file (TOML; `tandem validate`
    /// accepts it). Sources carry `write_key_sha256`, never a key; destination settings are included.
    Export {
        #[command(flatten)]
        target: WorkspaceArgs,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Propose a config file's differences from the live workspace as one change request
    /// (applied at once when your changes need no approval).
    Import {
        #[command(flatten)]
        target: WorkspaceArgs,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ChangesCommand {
    /// Change requests of a workspace.
    List {
        #[command(flatten)]
        target: WorkspaceArgs,
        /// Only this status: open, approved, rejected, applied, failed, withdrawn.
        #[arg(long)]
        status: Option<String>,
    },
    /// One change request: operations, diffs, comments and (while open) the dry run.
    Show {
        #[command(flatten)]
        target: WorkspaceArgs,
        id: String,
    },
    /// Approve a change request, which applies it (never your own).
    Approve {
        #[command(flatten)]
        target: WorkspaceArgs,
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a change request.
    Reject {
        #[command(flatten)]
        target: WorkspaceArgs,
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

pub fn config(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Export { target, output } => {
            let (ok, value) = call(
                &target.api,
                Method::GET,
                &target.path("/config/export"),
                None,
            )?;
            match (ok, value, output) {
                (true, Value::String(text), Some(file)) => {
                    std::fs::write(&file, text)
                        .with_context(|| format!("writing {}", file.display()))?;
                    Ok(ExitCode::SUCCESS)
                }
                (true, Value::String(text), None) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                (ok, value, _) => finish(ok, &value),
            }
        }
        ConfigCommand::Import { target, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let (ok, value) = post_text(&target.api, &target.path("/config/import"), text)?;
            finish(ok, &value)
        }
    }
}

pub fn changes(command: ChangesCommand) -> anyhow::Result<ExitCode> {
    let (ok, value) = match command {
        ChangesCommand::List { target, status } => {
            let query = status
                .map(|status| format!("?status={status}"))
                .unwrap_or_default();
            call(
                &target.api,
                Method::GET,
                &target.path(&format!("/change-requests{query}")),
                None,
            )?
        }
        ChangesCommand::Show { target, id } => call(
            &target.api,
            Method::GET,
            &target.path(&format!("/change-requests/{id}")),
            None,
        )?,
        ChangesCommand::Approve {
            target,
            id,
            comment,
        } => call(
            &target.api,
            Method::POST,
            &target.path(&format!("/change-requests/{id}/approve")),
            Some(json!({ "comment": comment })),
        )?,
        ChangesCommand::Reject {
            target,
            id,
            comment,
        } => call(
            &target.api,
            Method::POST,
            &target.path(&format!("/change-requests/{id}/reject")),
            Some(json!({ "comment": comment })),
        )?,
    };
    finish(ok, &value)
}

/// `call` with a TOML body instead of JSON.
fn post_text(api: &ApiArgs, path: &str, text: String) -> anyhow::Result<(bool, Value)> {
    let token = credential(api)?;
    let url = format!("{}{path}", api.url.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/toml")
            .body(text)
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let ok = response.status().is_success();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((ok, value))
    })
}
