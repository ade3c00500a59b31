//! Tracking plans: CRUD of plans (config-file plans are read-only, 409), their violation
//! counters, inference of a draft from recent events, and the quarantine (list, show, release,
//! discard). The enforcement itself is on the collect path (`routes::collect`, `crate::plans`).

use crate::auth::{
    Authorized, ManageTrackingPlans, Permission, ReadQuarantine, ReadTrackingPlans,
    ReleaseQuarantine,
};
use crate::changes::{self, Kind};
use crate::error::{ApiError, ApiResult};
use crate::plans::quarantine::Selection;
use crate::plans::store::Settled;
use crate::plans::{PlanEntry, PlanError, WorkspacePlans};
use crate::routes::Routes;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tandem_config::TrackingPlanConfig;
use tandem_core::limits::{
    QUARANTINE_LISTED_DEFAULT, QUARANTINE_LISTED_MAX, QUARANTINE_RELEASE_EVENTS_MAX,
    TRACKING_PLAN_INFER_EVENTS_MAX, TRACKING_PLAN_INFER_SCAN_RECORDS_MAX,
};
use tandem_core::{time_util, ErrorCode, EventType};

pub fn router() -> Routes {
    Routes::new()
        .route(
            "/api/v1/workspaces/{workspace}/tracking-plans",
            get(list_plans).post(create_plan),
        )
        .route(
            "/api/v1/workspaces/{workspace}/tracking-plans/infer",
            post(infer_plan),
        )
        .route(
            "/api/v1/workspaces/{workspace}/tracking-plans/{plan}",
            get(get_plan).patch(patch_plan).delete(delete_plan),
        )
        .route(
            "/api/v1/workspaces/{workspace}/tracking-plans/{plan}/violations",
            get(plan_violations),
        )
        .route(
            "/api/v1/workspaces/{workspace}/quarantine",
            get(list_quarantine),
        )
        .route(
            "/api/v1/workspaces/{workspace}/quarantine/release",
            post(release_quarantine),
        )
        .route(
            "/api/v1/workspaces/{workspace}/quarantine/discard",
            post(discard_quarantine),
        )
        .route(
            "/api/v1/workspaces/{workspace}/quarantine/{entry}",
            get(get_quarantined),
        )
}

impl From<PlanError> for ApiError {
    fn from(error: PlanError) -> Self {
        match error {
            PlanError::NotFound(message) => ApiError::not_found(message),
            PlanError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            PlanError::Invalid(problems) => {
                let message = problems
                    .iter()
                    .map(|(field, message)| match field.as_str() {
                        "" => message.clone(),
                        field => format!("{field}: {message}"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let details: Vec<Value> = problems
                    .into_iter()
                    .map(|(field, message)| json!({"field": field, "message": message}))
                    .collect();
                ApiError::new(ErrorCode::InvalidRequest, message)
                    .with_details(json!({ "problems": details }))
            }
            PlanError::Schemas(problems) => {
                let message = problems
                    .iter()
                    .map(|problem| match &problem.event {
                        Some(event) => format!(
                            "the schema of event `{event}` does not compile: {}",
                            problem.message
                        ),
                        None => format!(
                            "the schema `{}` does not compile: {}",
                            problem.schema, problem.message
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError::new(ErrorCode::InvalidRequest, message)
                    .with_details(json!({ "problems": problems }))
            }
            PlanError::Internal(message) => ApiError::internal(message),
        }
    }
}

fn plans(state: &AppState, workspace: &str) -> ApiResult<Arc<WorkspacePlans>> {
    state
        .workspaces
        .get(workspace)
        .map(|workspace| workspace.plans.clone())
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))
}

fn source_ids(state: &AppState, workspace: &str) -> ApiResult<Vec<String>> {
    Ok(state
        .store
        .sources()
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|source| source.workspace_id == workspace)
        .map(|source| source.id)
        .collect())
}

fn plan_view(entry: &PlanEntry, plans: &WorkspacePlans) -> Value {
    let mut view = serde_json::to_value(&entry.plan.config).unwrap_or_default();
    let totals = plans.violations.totals(entry.plan.id());
    if let Some(object) = view.as_object_mut() {
        object.insert("version".into(), json!(entry.plan.version));
        object.insert("managed_by".into(), json!(entry.managed_by));
        object.insert("enforced".into(), json!(!entry.plan.config.draft));
        object.insert("totals".into(), json!(totals));
        if let Some(stored) = &entry.stored {
            object.insert(
                "created_at".into(),
                json!(time_util::format_iso8601_ms(stored.created_at_ms)),
            );
            object.insert("created_by".into(), json!(stored.created_by));
            object.insert(
                "updated_at".into(),
                json!(time_util::format_iso8601_ms(stored.updated_at_ms)),
            );
            object.insert("updated_by".into(), json!(stored.updated_by));
        }
    }
    view
}

fn view_of(plans: &WorkspacePlans, id: &str) -> ApiResult<Value> {
    let set = plans.set();
    set.get(id)
        .map(|entry| plan_view(entry, plans))
        .ok_or_else(|| ApiError::not_found(format!("tracking plan {}/{id}", plans.workspace)))
}

async fn list_plans(
    State(state): State<AppState>,
    _auth: Authorized<ReadTrackingPlans>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    let plans = plans(&state, &workspace)?;
    let set = plans.set();
    let views: Vec<Value> = set
        .entries
        .iter()
        .map(|entry| plan_view(entry, &plans))
        .collect();
    Ok(Json(json!({ "tracking_plans": views })))
}

async fn get_plan(
    State(state): State<AppState>,
    _auth: Authorized<ReadTrackingPlans>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let plans = plans(&state, &workspace)?;
    Ok(Json(view_of(&plans, &id)?))
}

fn parse_plan(body: Value) -> ApiResult<TrackingPlanConfig> {
    serde_json::from_value(body)
        .map_err(|error| ApiError::new(ErrorCode::InvalidRequest, error.to_string()))
}

/// A plan change through the change machinery: applied now (versioned) unless the caller's
/// changes need approval, when it becomes a change request (202).
async fn submit_plan_change(
    state: &AppState,
    auth: &Authorized<ManageTrackingPlans>,
    workspace: &str,
    id: &str,
    after: Option<TrackingPlanConfig>,
    title: String,
) -> ApiResult<Option<Response>> {
    let after = after
        .map(|config| serde_json::to_value(&config).map_err(ApiError::internal))
        .transpose()?;
    let operation = changes::prepare(state, workspace, Kind::TrackingPlan, id, after)?;
    changes::submit(state, auth, workspace, title, vec![operation]).await
}

async fn create_plan(
    State(state): State<AppState>,
    auth: Authorized<ManageTrackingPlans>,
    Path(workspace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let plans = plans(&state, &workspace)?;
    let config = parse_plan(body)?;
    let id = config.id.clone();
    if plans.set().get(&id).is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tracking plan {id} already exists"),
        ));
    }
    let title = format!("create tracking plan {id}");
    if let Some(accepted) =
        submit_plan_change(&state, &auth, &workspace, &id, Some(config), title).await?
    {
        return Ok(accepted);
    }
    let view = view_of(&plans, &id)?;
    auth.audit(
        &state,
        "tracking_plan.create",
        Some(&workspace),
        format!("tracking plan {workspace}/{id}"),
        None,
        Some(view.clone()),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn patch_plan(
    State(state): State<AppState>,
    auth: Authorized<ManageTrackingPlans>,
    Path((workspace, id)): Path<(String, String)>,
    Json(patch): Json<Value>,
) -> ApiResult<Response> {
    let plans = plans(&state, &workspace)?;
    let current = {
        let set = plans.set();
        let entry = set
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("tracking plan {workspace}/{id}")))?;
        if entry.managed_by == tandem_store::ManagedBy::Config {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("tracking plan {id} is declared in the config file; change it there"),
            ));
        }
        entry.plan.config.clone()
    };
    let before = view_of(&plans, &id)?;
    let (_, after) = crate::routes::activate::patched(&current, &id, &patch)?;
    let config = parse_plan(after)?;
    let title = format!("update tracking plan {id}");
    if let Some(accepted) =
        submit_plan_change(&state, &auth, &workspace, &id, Some(config), title).await?
    {
        return Ok(accepted);
    }
    let view = view_of(&plans, &id)?;
    auth.audit(
        &state,
        "tracking_plan.update",
        Some(&workspace),
        format!("tracking plan {workspace}/{id}"),
        Some(before),
        Some(view.clone()),
    )
    .await?;
    Ok(Json(view).into_response())
}

async fn delete_plan(
    State(state): State<AppState>,
    auth: Authorized<ManageTrackingPlans>,
    Path((workspace, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let plans = plans(&state, &workspace)?;
    let before = view_of(&plans, &id)?;
    let title = format!("delete tracking plan {id}");
    if let Some(accepted) = submit_plan_change(&state, &auth, &workspace, &id, None, title).await? {
        return Ok(accepted);
    }
    auth.audit(
        &state,
        "tracking_plan.delete",
        Some(&workspace),
        format!("tracking plan {workspace}/{id}"),
        Some(before),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct ViolationQuery {
    event: Option<String>,
    source: Option<String>,
    field: Option<String>,
}

async fn plan_violations(
    State(state): State<AppState>,
    _auth: Authorized<ReadTrackingPlans>,
    Path((workspace, id)): Path<(String, String)>,
    Query(query): Query<ViolationQuery>,
) -> ApiResult<Json<Value>> {
    let plans = plans(&state, &workspace)?;
    let set = plans.set();
    let entry = set
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("tracking plan {workspace}/{id}")))?;
    let (counters, totals) = plans.violations.of_plan(&id);
    let counters: Vec<Value> = counters
        .into_iter()
        .filter(|counter| query.event.as_ref().is_none_or(|event| &counter.event == event))
        .filter(|counter| query.source.as_ref().is_none_or(|source| &counter.source == source))
        .filter(|counter| query.field.as_ref().is_none_or(|field| &counter.field == field))
        .map(|counter| {
            let samples: Vec<Value> = counter
                .samples
                .iter()
                .map(|sample| json!({"messageId": sample.message_id, "message": sample.message, "at": time_util::format_iso8601_ms(sample.at_ms), "outcome": sample.outcome}))
                .collect();
            json!({
                "event": counter.event, "field": counter.field, "source": counter.source,
                "rule": counter.rule, "count": counter.count,
                "first_seen": time_util::format_iso8601_ms(counter.first_seen_ms),
                "last_seen": time_util::format_iso8601_ms(counter.last_seen_ms),
                "samples": samples,
            })
        })
        .collect();
    Ok(Json(json!({
        "plan": id, "version": entry.plan.version, "mode": entry.plan.mode(),
        "totals": totals, "violations": counters,
    })))
}

/// `POST …/tracking-plans/infer`: a draft plan from the workspace's (or a source's) last events.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    /// Only this source's events (and the draft applies to it).
    source: Option<String>,
    /// How many of the most recent events to read.
    events: usize,
    /// Save the draft (not enforced) instead of only returning it.
    #[serde(default)]
    save: bool,
    /// Id and name of the saved draft. Default `inferred-<source or workspace>`.
    id: Option<String>,
    name: Option<String>,
}

async fn infer_plan(
    State(state): State<AppState>,
    auth: Authorized<ManageTrackingPlans>,
    Path(workspace): Path<String>,
    Json(request): Json<InferRequest>,
) -> ApiResult<Response> {
    let plans = plans(&state, &workspace)?;
    if !(1..=TRACKING_PLAN_INFER_EVENTS_MAX).contains(&request.events) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("`events` must be 1 ..= {TRACKING_PLAN_INFER_EVENTS_MAX}"),
        ));
    }
    if let Some(source) = &request.source {
        if !source_ids(&state, &workspace)?.contains(source) {
            return Err(ApiError::not_found(format!("source {workspace}/{source}")));
        }
    }
    let log = state
        .workspaces
        .get(&workspace)
        .map(|workspace| workspace.log.clone())
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))?;
    let only_source = request.source.clone();
    let wanted = request.events;
    let samples = tokio::task::spawn_blocking(move || {
        crate::routes::activate::recent_events(
            log.as_ref(),
            wanted,
            TRACKING_PLAN_INFER_SCAN_RECORDS_MAX,
            |source, event_type, _| {
                only_source.as_deref().is_none_or(|only| only == source)
                    && matches!(
                        event_type,
                        EventType::Track | EventType::Identify | EventType::Group
                    )
            },
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let typed: Vec<(EventType, &Value)> = samples
        .iter()
        .filter_map(|(_, event)| {
            let kind = event
                .get("type")
                .and_then(Value::as_str)
                .and_then(EventType::parse)?;
            Some((kind, event))
        })
        .collect();
    let read = typed.len();
    let inferred = tandem_plans::infer(typed);
    let samples_per_event: BTreeMap<String, usize> = inferred.samples.clone();
    let scope = request.source.clone().unwrap_or_else(|| workspace.clone());
    let id = request.id.unwrap_or_else(|| format!("inferred-{scope}"));
    let name = request
        .name
        .unwrap_or_else(|| format!("Inferred from the last {read} events of {scope}"));
    let config = inferred.into_config(id, name, request.source.into_iter().collect());
    if !request.save {
        return Ok((
            StatusCode::OK,
            Json(
                json!({"plan": config, "events_read": read, "samples": samples_per_event, "saved": false}),
            ),
        )
            .into_response());
    }
    let id = config.id.clone();
    let title = format!("save inferred draft tracking plan {id}");
    if let Some(accepted) =
        submit_plan_change(&state, &auth, &workspace, &id, Some(config), title).await?
    {
        return Ok(accepted);
    }
    let view = view_of(&plans, &id)?;
    auth.audit(
        &state,
        "tracking_plan.infer",
        Some(&workspace),
        format!("tracking plan {workspace}/{id}"),
        None,
        Some(view.clone()),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"plan": view, "events_read": read, "samples": samples_per_event, "saved": true}),
        ),
    )
        .into_response())
}

#[derive(Deserialize)]
struct QuarantineQuery {
    event: Option<String>,
    source: Option<String>,
    /// Entries after this id (paging).
    after: Option<u64>,
    limit: Option<usize>,
}

async fn list_quarantine(
    State(state): State<AppState>,
    _auth: Authorized<ReadQuarantine>,
    Path(workspace): Path<String>,
    Query(query): Query<QuarantineQuery>,
) -> ApiResult<Json<Value>> {
    let plans = plans(&state, &workspace)?;
    let limit = query
        .limit
        .unwrap_or(QUARANTINE_LISTED_DEFAULT)
        .clamp(1, QUARANTINE_LISTED_MAX);
    let selection = Selection {
        ids: None,
        event: query.event,
        source: query.source,
    };
    let entries = plans.quarantine.list(&selection, query.after, limit);
    let next_after = (entries.len() == limit)
        .then(|| entries.last().map(|entry| entry.id))
        .flatten();
    let views: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let mut view = serde_json::to_value(entry).unwrap_or_default();
            view["received_at"] = json!(time_util::format_iso8601_ms(entry.received_at_ms));
            view
        })
        .collect();
    Ok(Json(json!({
        "entries": views,
        "pending": plans.quarantine.pending_count(),
        "next_after": next_after,
    })))
}

async fn get_quarantined(
    State(state): State<AppState>,
    _auth: Authorized<ReadQuarantine>,
    Path((workspace, entry)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let plans = plans(&state, &workspace)?;
    let not_found = || ApiError::not_found(format!("quarantined event {workspace}/{entry}"));
    let id: u64 = entry.parse().map_err(|_| not_found())?;
    let held = plans
        .quarantine
        .read(id)
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let settled = plans.settled_one(id).map_err(ApiError::internal)?;
    let status = match &settled {
        Some(settled) => settled.status.clone(),
        None if plans.quarantine.is_pending(id) => "pending".into(),
        None => "unknown".into(),
    };
    Ok(Json(json!({
        "id": id,
        "status": status,
        "settled": settled.map(|settled| json!({"at": time_util::format_iso8601_ms(settled.at_ms), "by": settled.by})),
        "source": held.source,
        "type": held.event_type,
        "event_name": held.event_name(),
        "messageId": held.message_id,
        "received_at": time_util::format_iso8601_ms(held.received_at_ms),
        "plan": held.plan,
        "plan_version": held.plan_version,
        "violations": held.violations,
        "event": held.event,
    })))
}

/// Which quarantined events a release or discard takes: `all`, or `ids`, `event`, `source`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleRequest {
    #[serde(default)]
    all: bool,
    ids: Option<Vec<u64>>,
    event: Option<String>,
    source: Option<String>,
    /// Release events that still violate the current plan (needs ManageTrackingPlans); they are
    /// stored with `context.violations`.
    #[serde(default)]
    force: bool,
}

impl SettleRequest {
    fn selection(&self) -> ApiResult<Selection> {
        if !self.all && self.ids.is_none() && self.event.is_none() && self.source.is_none() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "say which events: `all: true`, or `ids`, `event`, `source`",
            ));
        }
        Ok(Selection {
            ids: self.ids.clone(),
            event: self.event.clone(),
            source: self.source.clone(),
        })
    }
}

async fn release_quarantine(
    State(state): State<AppState>,
    auth: Authorized<ReleaseQuarantine>,
    Path(workspace): Path<String>,
    Json(request): Json<SettleRequest>,
) -> ApiResult<Json<Value>> {
    let plans = plans(&state, &workspace)?;
    let selection = request.selection()?;
    if request.force && !auth.principal.may(Permission::ManageTrackingPlans) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "permission {} is required to force a release past the plan; role {} does not have it",
                Permission::ManageTrackingPlans.as_str(),
                auth.principal.role.as_str()
            ),
        ));
    }
    let report = release(
        &state,
        &plans,
        &selection,
        request.force,
        &auth.principal.name(),
    )
    .await?;
    auth.audit(
        &state,
        "quarantine.release",
        Some(&workspace),
        format!("quarantine {workspace}"),
        None,
        Some(json!({
            "selection": {"all": request.all, "ids": request.ids, "event": request.event, "source": request.source},
            "force": request.force,
            "released": report["released"], "still_violating": report["still_violating"].as_array().map_or(0, Vec::len),
        })),
    )
    .await?;
    Ok(Json(report))
}

/// Releases the selected pending events: each is re-checked against the plan now governing its
/// source; those that pass (or all, with `force`) go through the collect pipeline into the
/// workspace log, then are marked released in the store. One release at a time per workspace.
///
/// A crash after the append and before the mark leaves them pending; releasing them again
/// appends nothing new, because the workspace's dedup index (rebuilt from the log at start)
/// knows their (source, messageId) — within the dedup window.
async fn release(
    state: &AppState,
    plans: &WorkspacePlans,
    selection: &Selection,
    force: bool,
    by: &str,
) -> ApiResult<Value> {
    let _settling = plans.quarantine.settling.lock().await;
    let entries = plans
        .quarantine
        .list(selection, None, QUARANTINE_RELEASE_EVENTS_MAX);
    let now = time_util::now_ms();
    let mut by_source: BTreeMap<String, Vec<(u64, String, tandem_collect::Enriched)>> =
        BTreeMap::new();
    let mut still_violating = Vec::new();
    let mut failed = Vec::new();
    for entry in &entries {
        let Some(held) = plans
            .quarantine
            .read(entry.id)
            .map_err(ApiError::internal)?
        else {
            failed.push(
                json!({"id": entry.id, "reason": "the record is gone from the quarantine log"}),
            );
            continue;
        };
        let mut event: Value =
            serde_json::from_str(held.event.get()).map_err(ApiError::internal)?;
        let violations = plans
            .plan_for(&held.source)
            .map(|plan| plan.check(held.event_type, &event))
            .unwrap_or_default();
        if !violations.is_empty() {
            if !force {
                still_violating.push(json!({"id": entry.id, "violations": violations}));
                continue;
            }
            crate::plans::annotate(&mut event, &violations);
        }
        let json = if violations.is_empty() {
            held.event.get().as_bytes().to_vec()
        } else {
            serde_json::to_vec(&event).map_err(ApiError::internal)?
        };
        by_source.entry(held.source.clone()).or_default().push((
            entry.id,
            held.plan.clone(),
            held.enriched(json),
        ));
    }
    let mut released: Vec<(u64, String)> = Vec::new();
    let mut duplicates = 0;
    for (source_id, events) in by_source {
        let Some(source) = state.catalog.source_by_id(&plans.workspace, &source_id) else {
            for (id, _, _) in &events {
                failed.push(
                    json!({"id": id, "reason": format!("source {source_id} no longer exists")}),
                );
            }
            continue;
        };
        let ids: Vec<(u64, String)> = events
            .iter()
            .map(|(id, plan, _)| (*id, plan.clone()))
            .collect();
        let enriched = events
            .into_iter()
            .map(|(_, _, enriched)| enriched)
            .collect();
        let (_, duplicate) =
            crate::routes::collect::append_released(state, &source, enriched, now).await?;
        duplicates += duplicate;
        released.extend(ids);
    }
    settle(plans, &released, "released", by, now)?;
    Ok(json!({
        "released": released.len(),
        "released_ids": released.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "already_in_log": duplicates,
        "still_violating": still_violating,
        "failed": failed,
        "pending": plans.quarantine.pending_count(),
    }))
}

/// Marks entries settled durably, then drops them from the pending index and counts them.
fn settle(
    plans: &WorkspacePlans,
    entries: &[(u64, String)],
    status: &str,
    by: &str,
    now: i64,
) -> ApiResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let settled: Vec<(u64, Settled)> = entries
        .iter()
        .map(|(id, _)| {
            (
                *id,
                Settled {
                    status: status.to_string(),
                    at_ms: now,
                    by: by.to_string(),
                },
            )
        })
        .collect();
    plans.settle(&settled).map_err(ApiError::internal)?;
    let ids: Vec<u64> = entries.iter().map(|(id, _)| *id).collect();
    plans.quarantine.forget(&ids);
    let mut per_plan: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, plan) in entries {
        *per_plan.entry(plan).or_default() += 1;
    }
    for (plan, count) in per_plan {
        match status {
            "released" => plans.violations.settled(plan, count, 0),
            _ => plans.violations.settled(plan, 0, count),
        }
    }
    Ok(())
}

async fn discard_quarantine(
    State(state): State<AppState>,
    auth: Authorized<ReleaseQuarantine>,
    Path(workspace): Path<String>,
    Json(request): Json<SettleRequest>,
) -> ApiResult<Json<Value>> {
    let plans = plans(&state, &workspace)?;
    let selection = request.selection()?;
    let discarded = {
        let _settling = plans.quarantine.settling.lock().await;
        let entries = plans
            .quarantine
            .list(&selection, None, QUARANTINE_RELEASE_EVENTS_MAX);
        let entries: Vec<(u64, String)> = entries
            .into_iter()
            .map(|entry| (entry.id, entry.plan))
            .collect();
        settle(
            &plans,
            &entries,
            "discarded",
            &auth.principal.name(),
            time_util::now_ms(),
        )?;
        entries.len()
    };
    auth.audit(
        &state,
        "quarantine.discard",
        Some(&workspace),
        format!("quarantine {workspace}"),
        None,
        Some(json!({
            "selection": {"all": request.all, "ids": request.ids, "event": request.event, "source": request.source},
            "discarded": discarded,
        })),
    )
    .await?;
    Ok(Json(
        json!({"discarded": discarded, "pending": plans.quarantine.pending_count()}),
    ))
}
