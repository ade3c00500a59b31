//! `tandem catalog organization|show|record`: the catalog and the record of processing over the
//! management API of a running server.

use crate::access_cmd::{call, finish, ApiArgs};
use crate::plans_cmd::WorkspaceArgs;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Every workspace side by side: volumes, deliveries, violations, findings (an
    /// organization-wide credential).
    Organization {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One workspace's sources, destinations, connections and transformations with owners,
    /// purposes, data categories, provenance, activity and findings.
    Show {
        #[command(flatten)]
        target: WorkspaceArgs,
    },
    /// The record of processing activities (GDPR Art. 30) of a workspace.
    Record {
        #[command(flatten)]
        target: WorkspaceArgs,
        /// The readable document (Markdown) instead of JSON.
        #[arg(long)]
        markdown: bool,
    },
}

pub fn catalog(command: CatalogCommand) -> anyhow::Result<ExitCode> {
    let (ok, value) = match &command {
        CatalogCommand::Organization { api } => call(api, Method::GET, "/api/v1/catalog", None)?,
        CatalogCommand::Show { target } => {
            call(&target.api, Method::GET, &target.path("/catalog"), None)?
        }
        CatalogCommand::Record { target, markdown } => {
            let format = if *markdown { "markdown" } else { "json" };
            let path = target.path(&format!("/record-of-processing?format={format}"));
            call(&target.api, Method::GET, &path, None)?
        }
    };
    match value {
        // The Markdown document is text: print it as it is.
        Value::String(text) if ok => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        value => finish(ok, &value),
    }
}
