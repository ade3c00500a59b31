//! `tandem log export` and `tandem log verify`: read-only tools over a data directory's logs,
//! safe to run while the server runs or after it was killed.

use clap::Subcommand;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tandem_core::EventEnvelope;

#[derive(Subcommand)]
pub enum LogCommand {
    /// Write stored events as JSON lines (enriched, with messageId), oldest first.
    Export {
        #[arg(long, env = "TANDEM_DATA", default_value = "./tandem-data")]
        data: PathBuf,
        /// Only this workspace (default: all).
        #[arg(long)]
        workspace: Option<String>,
        /// Wrap each event with its workspace, source, offset and receivedAt.
        #[arg(long)]
        meta: bool,
        /// Skip repeated (source, messageId) pairs.
        #[arg(long)]
        dedup: bool,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Check every record of every segment (CRC, offsets); exits 1 on corruption.
    Verify {
        #[arg(long, env = "TANDEM_DATA", default_value = "./tandem-data")]
        data: PathBuf,
        /// Also fail on a torn tail (normal after a crash; the server truncates it at next start).
        #[arg(long)]
        strict: bool,
    },
}

pub fn run(command: LogCommand) -> anyhow::Result<ExitCode> {
    match command {
        LogCommand::Export {
            data,
            workspace,
            meta,
            dedup,
            output,
        } => export(&data, workspace.as_deref(), meta, dedup, output),
        LogCommand::Verify { data, strict } => verify(&data, strict),
    }
}

/// `(workspace id, log directory)` of every workspace log under a data directory.
fn workspace_logs(data: &Path, only: Option<&str>) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let logs = data.join("logs");
    if !logs.is_dir() {
        anyhow::bail!(
            "{} holds no logs (is it a tandem data directory?)",
            data.display()
        );
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&logs)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.path().is_dir() && only.is_none_or(|only| only == name) {
            found.push((name, entry.path()));
        }
    }
    found.sort();
    if let (Some(only), true) = (only, found.is_empty()) {
        anyhow::bail!("no log for workspace {only} under {}", logs.display());
    }
    Ok(found)
}

fn progress_bar(total_bytes: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total_bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {wide_bar} {eta}")
            .expect("template"),
    );
    bar
}

fn export(
    data: &Path,
    only: Option<&str>,
    meta: bool,
    dedup: bool,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let sink: Box<dyn Write> = match output {
        Some(path) => Box::new(std::fs::File::create(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::new(sink);
    let mut seen = HashSet::new();
    let (mut exported, mut skipped) = (0u64, 0u64);
    for (workspace, dir) in workspace_logs(data, only)? {
        let total: u64 = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        let bar = progress_bar(total);
        for record in tandem_log::read_dir(&dir)? {
            let record = record?;
            bar.inc(record.payload.len() as u64 + 24);
            let envelope = EventEnvelope::decode(&record.payload)
                .map_err(|error| anyhow::anyhow!("offset {}: {error}", record.offset))?;
            if dedup && !seen.insert((workspace.clone(), envelope.dedup_key)) {
                skipped += 1;
                continue;
            }
            write_event(&mut out, &workspace, &record, &envelope, meta)?;
            exported += 1;
        }
        bar.finish_and_clear();
    }
    out.flush()?;
    eprintln!(
        "exported {exported} events{}",
        if dedup {
            format!(", skipped {skipped} duplicates")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn write_event(
    out: &mut impl Write,
    workspace: &str,
    record: &tandem_log::StoredRecord,
    envelope: &EventEnvelope,
    meta: bool,
) -> std::io::Result<()> {
    if meta {
        write!(
            out,
            "{{\"workspace\":{},\"source\":{},\"offset\":{},\"receivedAt\":{},\"event\":",
            serde_json::Value::from(workspace),
            serde_json::Value::from(envelope.source_id),
            record.offset,
            serde_json::Value::from(tandem_core::time_util::format_iso8601_ms(
                record.timestamp_ms
            )),
        )?;
        out.write_all(envelope.json)?;
        out.write_all(b"}\n")
    } else {
        out.write_all(envelope.json)?;
        out.write_all(b"\n")
    }
}

fn verify(data: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for (workspace, dir) in workspace_logs(data, None)? {
        let report = tandem_log::verify_dir(&dir)?;
        println!(
            "workspace {workspace}: {} records, {} bytes, {} segments",
            report.records, report.bytes, report.segments
        );
        for problem in &report.problems {
            let fatal = strict || !problem.is_torn_tail();
            failed |= fatal;
            println!(
                "  {}: {problem}",
                if fatal {
                    "CORRUPT"
                } else {
                    "torn tail (truncated at next start)"
                }
            );
        }
    }
    println!(
        "{}",
        if failed {
            "verify: FAILED"
        } else {
            "verify: ok"
        }
    );
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
