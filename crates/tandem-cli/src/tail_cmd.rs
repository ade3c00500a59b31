//! `tandem tail`: follow a workspace's or source's live event stream (Server-Sent Events).

use clap::Args;
use futures::StreamExt;
use std::process::ExitCode;

#[derive(Args)]
pub struct TailArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin token.
    #[arg(long, env = "TANDEM_ADMIN_TOKEN")]
    token: String,
    #[arg(long, default_value = "demo")]
    workspace: String,
    /// Only this source.
    #[arg(long)]
    source: Option<String>,
    /// Print the whole SSE record (event kind, offset, rejection) instead of just the event JSON.
    #[arg(long)]
    raw: bool,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
}

pub fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(follow(args))
}

async fn follow(args: TailArgs) -> anyhow::Result<ExitCode> {
    let path = match &args.source {
        Some(source) => format!(
            "/api/v1/workspaces/{}/sources/{source}/live",
            args.workspace
        ),
        None => format!("/api/v1/workspaces/{}/live", args.workspace),
    };
    let response = reqwest::Client::new()
        .get(format!("{}{path}", args.url.trim_end_matches('/')))
        .bearer_auth(&args.token)
        .send()
        .await?;
    if !response.status().is_success() {
        eprintln!(
            "{}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        return Ok(ExitCode::from(1));
    }
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut printed = 0u64;
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let record: String = buffer.drain(..end + 2).collect();
            if let Some(line) = render(&record, args.raw) {
                println!("{line}");
                printed += 1;
                if args.count.is_some_and(|count| printed >= count) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One SSE record (`event: kind` / `data: json`) as a line to print, or None for keep-alives.
fn render(record: &str, raw: bool) -> Option<String> {
    let kind = record
        .lines()
        .find_map(|line| line.strip_prefix("event:"))
        .map(str::trim)
        .unwrap_or("message");
    let data: String = record
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.is_empty() {
        return None;
    }
    if raw {
        return Some(format!("{kind} {data}"));
    }
    let value: serde_json::Value = serde_json::from_str(&data).ok()?;
    match kind {
        "accepted" => Some(value["event"].to_string()),
        "rejected" => Some(format!("REJECTED {}", value["rejection"])),
        other => Some(format!("{other} {data}")),
    }
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn renders_accepted_and_rejected_and_skips_keepalives() {
        assert_eq!(
            render("event: accepted\ndata: {\"event\":{\"a\":1}}\n\n", false).as_deref(),
            Some("{\"a\":1}")
        );
        assert!(render(
            "event: rejected\ndata: {\"rejection\":{\"code\":\"x\"}}\n\n",
            false
        )
        .unwrap()
        .starts_with("REJECTED"));
        assert_eq!(render(": keep-alive\n\n", false), None);
    }
}
