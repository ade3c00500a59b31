//! `tandem rebuild`: rebuilds the profiles (identity graph, traits, computed traits) of workspaces
//! from their logs, with a progress bar. Run it with the server stopped; the server itself
//! rebuilds on start when the identity rules or computed traits changed.
//!
//! The new state is built in a side file and swapped in only when complete, so an interrupted
//! rebuild leaves the old state in place.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_core::limits::UNIFY_BATCH_RECORDS_MAX;
use tandem_log::{EventLog, FileLog};
use tandem_server::unify::{effective_rules, store_path, LogRecords};
use tandem_store::{MetadataStore, RedbStore};
use tandem_unify::{BatchStats, UnifyStore};

#[derive(Args)]
pub struct RebuildArgs {
    /// The configuration (identity rules and computed traits come from it). Without one, the
    /// demo workspace with default rules.
    #[arg(long, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides the config's).
    #[arg(long, env = "TANDEM_DATA")]
    data: Option<PathBuf>,
    /// Only this workspace (default: all).
    #[arg(long)]
    workspace: Option<String>,
    /// No progress bar (for scripts and logs).
    #[arg(long)]
    quiet: bool,
}

pub fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => {
            tandem_config::load_with(path, Some(tandem_activate::registry::config_validator))
                .map_err(|error| anyhow::anyhow!("{error}"))?
        }
        None => tandem_config::demo_with_write_key("rebuild-only-not-a-write-key"),
    };
    if let Some(data) = args.data {
        config.server.data_dir = data;
    }
    let data_dir = config.server.data_dir.clone();
    let workspaces: Vec<_> = config
        .workspaces
        .iter()
        .filter(|w| args.workspace.as_deref().is_none_or(|only| only == w.id))
        .collect();
    if workspaces.is_empty() {
        anyhow::bail!("no such workspace in the configuration");
    }
    let metadata: Arc<dyn MetadataStore> = Arc::new(
        RedbStore::open(&data_dir.join("metadata.redb")).map_err(|error| {
            anyhow::anyhow!("opening the metadata store (is the server still running?): {error}")
        })?,
    );
    for workspace in workspaces {
        let log_dir = data_dir.join("logs").join(&workspace.id);
        if !log_dir.is_dir() {
            eprintln!(
                "workspace {}: no log at {}, skipped",
                workspace.id,
                log_dir.display()
            );
            continue;
        }
        let rules = effective_rules(metadata.as_ref(), workspace)?;
        let counters = audience_counters(&data_dir, workspace, &rules)?;
        let counted: Vec<String> = counters.iter().map(|c| c.name.clone()).collect();
        let engine = rules
            .engine_with(counters)
            .map_err(|error| anyhow::anyhow!("unify rules of {}: {error}", workspace.id))?;
        let options = tandem_server::log_options(&config, &workspace.id, true);
        let (log, _) = FileLog::open(&log_dir, options).map_err(|error| {
            anyhow::anyhow!(
                "opening the log of {} (is the server still running?): {error}",
                workspace.id
            )
        })?;
        let log: Arc<dyn EventLog> = log;
        let stats = log.stats();
        let target = store_path(&data_dir, &workspace.id);
        let side = target.with_extension("redb.rebuild");
        let _ = std::fs::remove_file(&side);
        let store = UnifyStore::open(&side).map_err(|error| anyhow::anyhow!("{error}"))?;
        let bar = if args.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(stats.end_offset.saturating_sub(stats.start_offset))
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:40}] {human_pos}/{human_len} events  {per_sec}  eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("workspace {}", workspace.id));
        let started = Instant::now();
        let mut totals = BatchStats::default();
        let source = LogRecords(log.clone());
        let mut next = stats.start_offset;
        while next < stats.end_offset {
            let records = log
                .read(next, UNIFY_BATCH_RECORDS_MAX)
                .map_err(|error| anyhow::anyhow!("reading offset {next}: {error}"))?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            let batch: Vec<(u64, Vec<u8>)> = records
                .into_iter()
                .map(|r| (r.offset, r.payload.to_vec()))
                .collect();
            let stats = store
                .apply_batch(&engine, &source, &batch, false)
                .map_err(|error| anyhow::anyhow!("applying offset {next}: {error}"))?;
            totals += &stats;
            bar.inc(batch.len() as u64);
            next = last + 1;
        }
        store
            .set_fingerprint(&rules.fingerprint())
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        // Audience memberships and their outbox go over to the new state; the server
        // reconciles them with the rebuilt profiles at its next start.
        if target.exists() {
            let old = UnifyStore::open(&target).map_err(|error| anyhow::anyhow!("{error}"))?;
            store
                .write(true, |kv| {
                    old.read(|previous| tandem_audiences::state::carry_over(previous, kv))
                })
                .map_err(|error| anyhow::anyhow!("carrying audience memberships over: {error}"))?;
        }
        store
            .write(true, |kv| {
                tandem_audiences::state::mark_rebuilt(kv, &counted)
            })
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        store.sync().map_err(|error| anyhow::anyhow!("{error}"))?;
        drop(store);
        std::fs::rename(&side, &target)?;
        if let Some(dir) = target.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        bar.finish_and_clear();
        let elapsed = started.elapsed().max(Duration::from_millis(1));
        println!(
            "workspace {}: {} events in {:.1} s ({:.0} events/s): {} profiles created, {} merges, {} merges refused, {} splits, {} events without identifiers",
            workspace.id,
            totals.records,
            elapsed.as_secs_f64(),
            totals.records as f64 / elapsed.as_secs_f64(),
            totals.created,
            totals.merged,
            totals.refused,
            totals.splits,
            totals.unattributed,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The hidden counters of the workspace's audiences (config file and API), so the rebuilt
/// profiles count them from the start.
fn audience_counters(
    data_dir: &std::path::Path,
    workspace: &tandem_config::WorkspaceConfig,
    rules: &tandem_server::unify::UnifyRules,
) -> anyhow::Result<Vec<tandem_unify::computed::ComputedDef>> {
    let mut definitions = workspace.audiences.clone();
    let path = data_dir
        .join("activate")
        .join(format!("{}.redb", workspace.id));
    if path.exists() {
        let store = tandem_activate::dlq::Dlq::open(&path).map_err(|error| {
            anyhow::anyhow!(
                "opening {} (is the server still running?): {error}",
                path.display()
            )
        })?;
        for json in store
            .definitions(tandem_server::audiences::AUDIENCE_KIND)
            .map_err(|error| anyhow::anyhow!("{error}"))?
        {
            definitions.push(serde_json::from_value(json)?);
        }
    }
    let names = rules.computed_trait_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let set = tandem_audiences::AudienceSet::compile(&definitions, &names)
        .map_err(|error| anyhow::anyhow!("audiences of {}: {error}", workspace.id))?;
    Ok(set.counter_defs())
}
