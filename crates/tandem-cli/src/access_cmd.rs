//! `tandem users add|list|remove`, `tandem tokens create|list|revoke` (over the management API)
//! and `tandem audit verify|export` (offline, on the data directory).
//!
//! Users and tokens go through the API of the running server rather than the data directory:
//! the metadata store is a redb file the server holds locked, and going through the API means
//! every change is checked (roles, scopes, limits) and audited like any other — with the
//! credential given (`--token`, `TANDEM_TOKEN`, else `TANDEM_ADMIN_TOKEN`). The audit log is
//! a plain append-only file, so verifying it needs no server (and works while one runs).

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ApiArgs {
    #[arg(long, env = "TANDEM_URL", default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,
    /// A management credential (admin token, API token or session).
    #[arg(long, env = "TANDEM_TOKEN")]
    token: Option<String>,
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from standard input (one line).
    Add {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
        /// Only this workspace (default: the organization).
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
    },
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove a user (by id or email) and end their sessions.
    Remove {
        #[command(flatten)]
        api: ApiArgs,
        user: String,
    },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create a management API token; prints the secret once.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// Only this workspace (default: the organization).
        #[arg(long)]
        workspace: Option<String>,
        /// Days until it expires (default 90); `--never-expires` for none.
        #[arg(long, conflicts_with = "never_expires")]
        expires_in_days: Option<i64>,
        #[arg(long)]
        never_expires: bool,
    },
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this workspace's tokens (as its workspace admin may list them).
        #[arg(long)]
        workspace: Option<String>,
    },
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        /// The token's workspace, when revoking as that workspace's admin.
        #[arg(long)]
        workspace: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of DATA/audit: exits 1 naming the first bad entry.
    Verify {
        #[arg(long, env = "TANDEM_DATA", default_value = "./tandem-data")]
        data: PathBuf,
    },
    /// Print every entry as stored (JSON lines), for archiving or a SIEM.
    Export {
        #[arg(long, env = "TANDEM_DATA", default_value = "./tandem-data")]
        data: PathBuf,
    },
}

pub(crate) fn credential(api: &ApiArgs) -> anyhow::Result<String> {
    api.token
        .clone()
        .or_else(|| std::env::var("TANDEM_ADMIN_TOKEN").ok())
        .context("give a credential: --token, TANDEM_TOKEN or TANDEM_ADMIN_TOKEN")
}

/// Sends one request; prints the answer (JSON) and maps failure to exit code 1.
pub(crate) fn call(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(bool, Value)> {
    let token = credential(api)?;
    let url = format!("{}{path}", api.url.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let ok = response.status().is_success();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((ok, value))
    })
}

pub(crate) fn finish(ok: bool, value: &Value) -> anyhow::Result<ExitCode> {
    if ok {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}", serde_json::to_string_pretty(value)?);
        Ok(ExitCode::from(1))
    }
}

pub fn users(command: UsersCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let (ok, value) = match &command {
        UsersCommand::Add {
            api,
            email,
            role,
            workspace,
            name,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from standard input")?;
            let password = password.lines().next().unwrap_or_default().to_string();
            let body = json!({"email": email, "role": role, "workspace": workspace, "name": name, "password": password});
            call(api, Method::POST, "/api/v1/users", Some(body))?
        }
        UsersCommand::List { api } => call(api, Method::GET, "/api/v1/users", None)?,
        UsersCommand::Remove { api, user } => {
            call(api, Method::DELETE, &format!("/api/v1/users/{user}"), None)?
        }
    };
    finish(ok, &value)
}

pub fn tokens(command: TokensCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let (ok, value) = match &command {
        TokensCommand::Create {
            api,
            name,
            role,
            workspace,
            expires_in_days,
            never_expires,
        } => {
            let mut body = json!({"name": name, "role": role});
            if *never_expires {
                body["expires_in_days"] = Value::Null;
            } else if let Some(days) = expires_in_days {
                body["expires_in_days"] = json!(days);
            }
            match workspace {
                Some(workspace) => call(
                    api,
                    Method::POST,
                    &format!("/api/v1/workspaces/{workspace}/tokens"),
                    Some(body),
                )?,
                None => call(api, Method::POST, "/api/v1/tokens", Some(body))?,
            }
        }
        TokensCommand::List { api, workspace } => match workspace {
            Some(workspace) => call(
                api,
                Method::GET,
                &format!("/api/v1/workspaces/{workspace}/tokens"),
                None,
            )?,
            None => call(api, Method::GET, "/api/v1/tokens", None)?,
        },
        TokensCommand::Revoke { api, id, workspace } => match workspace {
            Some(workspace) => call(
                api,
                Method::DELETE,
                &format!("/api/v1/workspaces/{workspace}/tokens/{id}"),
                None,
            )?,
            None => call(api, Method::DELETE, &format!("/api/v1/tokens/{id}"), None)?,
        },
    };
    finish(ok, &value)
}

pub fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { data } => {
            let verification = tandem_audit::verify(&data.join("audit"))?;
            println!("{}", serde_json::to_string_pretty(&verification)?);
            if let Some(problem) = &verification.problem {
                eprintln!(
                    "audit log broken at entry {} (line {}): {}",
                    problem.seq, problem.line, problem.reason
                );
                return Ok(ExitCode::from(1));
            }
            eprintln!(
                "audit log ok: {} entries, hash chain and head intact",
                verification.entries
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { data } => {
            use std::io::Write;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for item in tandem_audit::read_entries(&data.join("audit"))? {
                let (_, line) = item?;
                writeln!(out, "{line}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
