//! The audience steps of a workspace's unify task (`crate::unify::run`): the task owns every
//! write to the unify store, so definitions are taken, batches evaluated, job steps and window
//! sweeps run between batches, in one order, without racing each other.

use super::WorkspaceAudiences;
use crate::unify::{LogRecords, Unify};
use std::collections::BTreeSet;
use std::sync::Arc;
use tandem_audiences::{Effects, Reason};
use tandem_core::limits::AUDIENCE_BACKFILL_PROFILES_PER_STEP;
use tandem_unify::kv::KvResult;
use tandem_unify::{BatchStats, Engine, UnifyStore};

/// Takes definitions waiting since the last batch: unify's hidden counters are swapped and the
/// job planned, before any further batch.
pub async fn take_definitions(
    workspace_id: &str,
    unify: &Arc<Unify>,
    audiences: &Arc<WorkspaceAudiences>,
) {
    let Some((pending, handed)) = audiences.take_pending() else {
        return;
    };
    if let Err(error) = unify.set_hidden_counters(pending.set.counter_defs()) {
        tracing::error!(workspace = %workspace_id, %error, "audience counters refused");
        audiences.set_error(Some(error));
        audiences.planned(handed);
        return;
    }
    let retry = pending.clone();
    let (store, task_audiences) = (unify.store(), audiences.clone());
    let planned = tokio::task::spawn_blocking(move || {
        let audiences = task_audiences;
        let mut engine = audiences.engine.lock();
        let now = tandem_core::time_util::now_ms();
        let result = store.write(true, |kv| {
            engine.plan(
                kv,
                pending.set.clone(),
                &pending.reason,
                now,
                pending.rebuilt,
            )
        });
        audiences.publish(&engine);
        audiences.set_error(result.as_ref().err().map(|e| e.to_string()));
        if result.is_ok() {
            audiences.planned(handed);
        }
        result.map(|busy| (busy, pending.reason))
    })
    .await;
    match planned {
        Ok(Ok((true, reason))) => {
            tracing::info!(workspace = %workspace_id, %reason, "audience memberships catching up (job started)")
        }
        Ok(Ok((false, _))) => {}
        Ok(Err(error)) => {
            tracing::error!(workspace = %workspace_id, %error, "planning audiences failed; retrying before the next batch");
            audiences.retry(retry);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        Err(error) => {
            tracing::error!(workspace = %workspace_id, %error, "planning audiences failed; retrying before the next batch");
            audiences.retry(retry);
        }
    }
}

/// Applies a batch and evaluates what it changed, in one transaction (durable when `durable`
/// or when memberships changed). Blocking.
pub fn apply_batch(
    store: &UnifyStore,
    engine: &Engine,
    audiences: &WorkspaceAudiences,
    source: &LogRecords,
    batch: &[(u64, Vec<u8>)],
    durable: bool,
) -> KvResult<(BatchStats, bool, Effects)> {
    let audience_engine = audiences.engine.lock();
    let mut effects = Effects::default();
    let now = tandem_core::time_util::now_ms();
    let (stats, durable) =
        store.apply_batch_with(engine, source, batch, durable, &mut |kv, changed| {
            if changed.is_empty() {
                return Ok(false);
            }
            effects = audience_engine.after_batch(kv, changed, source, now, Reason::Event)?;
            Ok(!effects.outbox.is_empty())
        })?;
    Ok((stats, durable, effects))
}

/// One step of the job, if one runs. Blocking; durable.
pub fn job_step(
    store: &UnifyStore,
    audiences: &WorkspaceAudiences,
    source: &LogRecords,
) -> KvResult<Option<Effects>> {
    let mut engine = audiences.engine.lock();
    if !engine.busy() {
        return Ok(None);
    }
    let now = tandem_core::time_util::now_ms();
    let effects = store.write(true, |kv| {
        engine.step(kv, source, now, AUDIENCE_BACKFILL_PROFILES_PER_STEP)
    })?;
    audiences.publish(&engine);
    Ok(Some(effects))
}

/// Moves windows whose edge passed and evaluates the profiles they changed. Blocking; durable.
pub fn sweep(
    store: &UnifyStore,
    engine: &Engine,
    audiences: &WorkspaceAudiences,
    source: &LogRecords,
    limit: usize,
) -> KvResult<(usize, Effects)> {
    let audience_engine = audiences.engine.lock();
    let mut effects = Effects::default();
    let now = tandem_core::time_util::now_ms();
    let moved = store.expire_windows_with(engine, now, limit, &mut |kv, changed| {
        effects = audience_engine.after_batch(kv, changed, source, now, Reason::Window)?;
        Ok(true)
    })?;
    Ok((moved, effects))
}

/// What follows a commit: the cache sees the profiles as they are now, the drain is woken, the
/// member gauges move.
pub fn publish(
    workspace_id: &str,
    store: &UnifyStore,
    audiences: &WorkspaceAudiences,
    effects: &Effects,
) {
    audiences.cache.update(&effects.profiles, &effects.gone);
    if effects.outbox.is_empty() {
        return;
    }
    audiences.outbox.notify_one();
    let touched: BTreeSet<&str> = effects.outbox.iter().map(|e| e.audience.as_str()).collect();
    let sizes = store.read(|kv| {
        touched
            .iter()
            .map(|id| Ok((*id, tandem_audiences::state::size(kv, id)?)))
            .collect::<KvResult<Vec<_>>>()
    });
    if let Ok(sizes) = sizes {
        for (audience, size) in sizes {
            metrics::gauge!("tandem_audience_members", "workspace" => workspace_id.to_string(), "audience" => audience.to_string())
                .set(size as f64);
        }
    }
}
