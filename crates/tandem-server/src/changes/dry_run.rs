//! The dry run of a change: what it would do to recent traffic, computed on demand (the log
//! moves on; a stored result would go stale). For a connection, the last
//! [`CHANGE_DRY_RUN_EVENTS`] events of its sources go through the proposed filters, mappings and
//! transformation — the same code delivery runs (`Connection::compile`, `tandem_transform`) —
//! and are counted as sent, dropped by a filter, dropped by the transformation, failed, and
//! changed (what leaves differs from what came in), with samples. The connection's current
//! definition gets the same counts, for comparison. For a destination or a source: the
//! connections that use it.

use super::{Kind, Operation};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use serde_json::{json, Value};
use std::sync::Arc;
use tandem_activate::connection::Connection;
use tandem_config::TrackingPlanConfig;
use tandem_config::{ConnectionConfig, DestinationConfig};
use tandem_core::limits::{
    CHANGE_DRY_RUN_EVENTS, CHANGE_DRY_RUN_SAMPLES, TRANSFORM_TEST_SCAN_RECORDS_MAX,
};
use tandem_core::EventType;

/// The impact of each operation, in order.
pub async fn impact(
    state: &AppState,
    workspace: &str,
    operations: &[Operation],
) -> ApiResult<Vec<Value>> {
    let activation = super::activation(state, workspace)?;
    let log = state
        .workspaces
        .get(workspace)
        .map(|workspace| workspace.log.clone())
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))?;
    // The destinations and connections as they would be after the whole request.
    let mut destinations: Vec<DestinationConfig> = activation
        .destinations()?
        .into_iter()
        .map(|(config, _)| config)
        .collect();
    let mut connections: Vec<ConnectionConfig> = activation
        .connections()?
        .into_iter()
        .map(|(config, _)| config)
        .collect();
    for operation in operations {
        match operation.kind {
            Kind::Destination => {
                destinations.retain(|config| config.id != operation.id);
                if let Some(after) = &operation.after {
                    destinations
                        .push(serde_json::from_value(after.clone()).map_err(ApiError::internal)?);
                }
            }
            Kind::Connection => {
                connections.retain(|config| config.id != operation.id);
                if let Some(after) = &operation.after {
                    connections
                        .push(serde_json::from_value(after.clone()).map_err(ApiError::internal)?);
                }
            }
            Kind::Source
            | Kind::Audience
            | Kind::TrackingPlan
            | Kind::Policy
            | Kind::Personalization => {}
        }
    }
    let mut impacts = Vec::with_capacity(operations.len());
    for operation in operations {
        let users = |matches: &dyn Fn(&ConnectionConfig) -> bool| -> Vec<String> {
            connections
                .iter()
                .filter(|c| matches(c))
                .map(|c| c.id.clone())
                .collect()
        };
        let impact = match operation.kind {
            Kind::Destination => json!({
                "connections_using_it": users(&|c| c.destination == operation.id),
            }),
            Kind::Source => json!({
                "connections_reading_it": users(&|c| c.sources.iter().any(|s| s == "*" || s == &operation.id)),
            }),
            Kind::Audience => audience_impact(state, workspace, operation).await?,
            Kind::Personalization => json!({
                "note": "the personalization API answers under the new allow-list and rules at once; no event is re-run",
            }),
            Kind::Policy => json!({
                "note": "a policy applies to the workspace's later changes and stages; no event is re-run",
            }),
            Kind::TrackingPlan => {
                let mut impact = json!({});
                for (label, config) in [
                    ("proposed", &operation.after),
                    ("current", &operation.before),
                ] {
                    let Some(config) = config else {
                        impact[label] = Value::Null;
                        continue;
                    };
                    let config: TrackingPlanConfig =
                        serde_json::from_value(config.clone()).map_err(ApiError::internal)?;
                    let log = log.clone();
                    impact[label] =
                        tokio::task::spawn_blocking(move || plan_counts(log.as_ref(), config))
                            .await
                            .map_err(ApiError::internal)?;
                }
                impact
            }
            Kind::Connection => {
                let find_destination = |config: &ConnectionConfig| {
                    destinations
                        .iter()
                        .find(|d| d.id == config.destination)
                        .cloned()
                };
                let proposed: Option<ConnectionConfig> = match &operation.after {
                    Some(after) => {
                        Some(serde_json::from_value(after.clone()).map_err(ApiError::internal)?)
                    }
                    None => None,
                };
                let current: Option<ConnectionConfig> = match &operation.before {
                    Some(before) => {
                        Some(serde_json::from_value(before.clone()).map_err(ApiError::internal)?)
                    }
                    None => None,
                };
                let mut impact = json!({});
                for (label, config) in [("proposed", proposed), ("current", current)] {
                    let Some(config) = config else {
                        impact[label] = Value::Null;
                        continue;
                    };
                    let Some(destination) = find_destination(&config) else {
                        impact[label] =
                            json!({"error": format!("no destination `{}`", config.destination)});
                        continue;
                    };
                    let (log, workspace) = (log.clone(), workspace.to_string());
                    impact[label] = tokio::task::spawn_blocking(move || {
                        connection_counts(log.as_ref(), &workspace, &config, &destination)
                    })
                    .await
                    .map_err(ApiError::internal)?;
                }
                impact
            }
        };
        let mut entry =
            json!({"kind": operation.kind, "id": operation.id, "action": operation.action});
        entry["impact"] = impact;
        impacts.push(entry);
    }
    Ok(impacts)
}

/// An audience change's impact: its members now, and a preview of the proposed definition over
/// every current profile (which may still be running: the answer names the preview to poll).
async fn audience_impact(
    state: &AppState,
    workspace: &str,
    operation: &Operation,
) -> ApiResult<Value> {
    let target = state
        .workspaces
        .get(workspace)
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))?;
    let current_size = target
        .unify
        .store()
        .read(|kv| tandem_audiences::state::size(kv, &operation.id))
        .map_err(ApiError::internal)?;
    let proposed = match &operation.after {
        None => json!({"size": 0, "note": "deleted: every member exits"}),
        Some(after) => {
            let config: tandem_config::AudienceConfig =
                serde_json::from_value(after.clone()).map_err(ApiError::internal)?;
            match crate::audiences::start_preview(target, config) {
                Ok(job) => {
                    crate::audiences::wait_preview(&job).await;
                    let view = job.view();
                    json!({
                        "size": view.size, "status": view.status, "progress": view.progress,
                        "profiles_scanned": view.profiles_scanned, "preview": view.id,
                        "error": view.error,
                    })
                }
                Err(error) => json!({"error": error.message}),
            }
        }
    };
    Ok(json!({
        "current_size": if operation.before.is_some() { json!(current_size) } else { Value::Null },
        "proposed": proposed,
    }))
}

/// The workspace's most recent events (`CHANGE_DRY_RUN_EVENTS`) of the sources `reads`
/// accepts, or the error as a dry run shows it.
fn recent(
    log: &dyn tandem_log::EventLog,
    reads: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Value)>, Value> {
    crate::routes::activate::recent_events(
        log,
        CHANGE_DRY_RUN_EVENTS,
        TRANSFORM_TEST_SCAN_RECORDS_MAX,
        |source_id, event_type, _| event_type != EventType::Control && reads(source_id),
    )
    .map_err(|error| json!({"error": format!("reading the log: {error}")}))
}

/// What tracking plan `config` would do with the most recent events of the sources it governs:
/// how many it checks, how many pass, and what becomes of the others under its mode, with the
/// most frequent violations and samples.
pub fn plan_counts(log: &dyn tandem_log::EventLog, config: TrackingPlanConfig) -> Value {
    let plan = match tandem_plans::CompiledPlan::compile(config.clone(), 0) {
        Ok(plan) => plan,
        Err(problems) => return json!({"error": "the plan does not compile", "problems": problems}),
    };
    let everywhere = config.sources.is_empty();
    let events = match recent(log, |source_id| {
        everywhere || config.sources.iter().any(|source| source == source_id)
    }) {
        Ok(events) => events,
        Err(error) => return error,
    };
    let (mut checked, mut passed, mut violating) = (0u64, 0u64, 0u64);
    let mut rules: std::collections::BTreeMap<(String, String), u64> = Default::default();
    let mut samples: Vec<Value> = Vec::new();
    for (_, event) in &events {
        let event_type = event["type"]
            .as_str()
            .and_then(EventType::parse)
            .unwrap_or(EventType::Track);
        if !plan.governs(event_type) {
            continue;
        }
        checked += 1;
        let violations = plan.check(event_type, event);
        if violations.is_empty() {
            passed += 1;
            continue;
        }
        violating += 1;
        for violation in &violations {
            *rules
                .entry((violation.field.clone(), violation.rule.clone()))
                .or_default() += 1;
        }
        sample(
            &mut samples,
            json!({"messageId": event["messageId"], "event": event["event"], "violations": violations}),
        );
    }
    let outcome = if config.draft {
        "not enforced (draft)"
    } else {
        match config.mode {
            tandem_config::PlanMode::Allow => "stored (violations counted)",
            tandem_config::PlanMode::Flag => "stored with context.violations",
            tandem_config::PlanMode::Quarantine => "quarantined",
            tandem_config::PlanMode::Block => "blocked",
        }
    };
    let mut top: Vec<Value> = rules
        .into_iter()
        .map(|((field, rule), count)| json!({"field": field, "rule": rule, "count": count}))
        .collect();
    top.sort_by(|a, b| b["count"].as_u64().cmp(&a["count"].as_u64()));
    json!({
        "events": events.len(), "checked": checked, "passed": passed,
        "violating": violating, "violating_outcome": outcome,
        "violations": top, "samples": samples,
    })
}

/// What `config` would do with the workspace's most recent events of its sources.
pub fn connection_counts(
    log: &dyn tandem_log::EventLog,
    workspace: &str,
    config: &ConnectionConfig,
    destination: &DestinationConfig,
) -> Value {
    let reads_all = config.sources.iter().any(|source| source == "*");
    let events = match recent(log, |source_id| {
        reads_all || config.sources.iter().any(|source| source == source_id)
    }) {
        Ok(events) => events,
        Err(error) => return error,
    };
    let plain = ConnectionConfig {
        transformation: None,
        ..config.clone()
    };
    let shaper = match Connection::compile(workspace, &plain, destination, None) {
        Ok(shaper) => Arc::new(shaper),
        Err(error) => return json!({"error": error}),
    };
    let mut counts = Counts::default();
    // Events through the filters, then the mappings, as delivery runs them.
    let mut shaped: Vec<(String, Value, Value)> = Vec::new();
    for (source, event) in events {
        counts.events += 1;
        let event_type = event["type"]
            .as_str()
            .and_then(EventType::parse)
            .unwrap_or(EventType::Track);
        let filtered = shaper
            .accepts_header(&source, event_type)
            .and_then(|()| shaper.accepts_event(event_type, &event));
        if let Err(skip) = filtered {
            counts.dropped_by_filter += 1;
            sample(
                &mut counts.samples_dropped_by_filter,
                json!({"event": event, "reason": format!("{skip:?}")}),
            );
            continue;
        }
        match shaper.shape(&event, &source) {
            Ok(mut outputs) => {
                let output = outputs.pop().unwrap_or(Value::Null);
                shaped.push((source, event, output));
            }
            Err(error) => {
                counts.failed += 1;
                sample(
                    &mut counts.samples_failed,
                    json!({"event": event, "error": error}),
                );
            }
        }
    }
    let mut compile_error = None;
    let outcomes: Vec<Result<Vec<Value>, Value>> = match &config.transformation {
        None => shaped
            .iter()
            .map(|(_, _, output)| Ok(vec![output.clone()]))
            .collect(),
        Some(code) => {
            use tandem_transform::{TransformContext, TransformLimits};
            let contexts: Vec<TransformContext> = shaped
                .iter()
                .map(|(source, _, _)| TransformContext {
                    workspace_id: workspace.to_string(),
                    source_id: Some(source.clone()),
                    connection_id: Some(config.id.clone()),
                    destination_type: Some(destination.kind.clone()),
                })
                .collect();
            let runs: Vec<(&Value, &TransformContext)> = shaped
                .iter()
                .map(|(_, _, output)| output)
                .zip(contexts.iter())
                .collect();
            let run = tandem_transform::test_run_each(code, &runs, TransformLimits::default());
            compile_error = run
                .compile_error
                .map(|error| serde_json::to_value(error).unwrap_or_default());
            if let Some(error) = &compile_error {
                shaped.iter().map(|_| Err(error.clone())).collect()
            } else {
                run.results
                    .into_iter()
                    .map(|result| match (result.output, result.error) {
                        (_, Some(error)) => Err(serde_json::to_value(error).unwrap_or_default()),
                        (Some(outputs), None) => Ok(outputs),
                        (None, None) => Ok(Vec::new()),
                    })
                    .collect()
            }
        }
    };
    for ((_, input, _), outcome) in shaped.iter().zip(outcomes) {
        match outcome {
            Err(error) => {
                counts.failed += 1;
                sample(
                    &mut counts.samples_failed,
                    json!({"event": input, "error": error}),
                );
            }
            Ok(outputs) if outputs.is_empty() => {
                counts.dropped_by_transformation += 1;
                sample(
                    &mut counts.samples_dropped_by_transformation,
                    json!({"event": input}),
                );
            }
            Ok(outputs) => {
                counts.sent += 1;
                if outputs.len() != 1 || &outputs[0] != input {
                    counts.changed += 1;
                    sample(
                        &mut counts.samples_changed,
                        json!({"event": input, "outputs": outputs}),
                    );
                } else {
                    sample(&mut counts.samples_sent, json!({"event": input}));
                }
            }
        }
    }
    json!({
        "events": counts.events,
        "sent": counts.sent,
        "dropped_by_filter": counts.dropped_by_filter,
        "dropped_by_transformation": counts.dropped_by_transformation,
        "failed": counts.failed,
        "changed": counts.changed,
        "compile_error": compile_error,
        "samples": {
            "sent": counts.samples_sent,
            "dropped_by_filter": counts.samples_dropped_by_filter,
            "dropped_by_transformation": counts.samples_dropped_by_transformation,
            "failed": counts.samples_failed,
            "changed": counts.samples_changed,
        },
    })
}

#[derive(Default)]
struct Counts {
    events: usize,
    sent: usize,
    dropped_by_filter: usize,
    dropped_by_transformation: usize,
    failed: usize,
    changed: usize,
    samples_sent: Vec<Value>,
    samples_dropped_by_filter: Vec<Value>,
    samples_dropped_by_transformation: Vec<Value>,
    samples_failed: Vec<Value>,
    samples_changed: Vec<Value>,
}

fn sample(samples: &mut Vec<Value>, value: Value) {
    if samples.len() < CHANGE_DRY_RUN_SAMPLES {
        samples.push(value);
    }
}
