//! Changes of a workspace's API-managed configuration (sources, destinations, connections):
//! operations, their validation against the state they would produce, atomic apply with
//! version history, the `change_approval` policy, and change requests.
//!
//! Life of a change (ARCHITECTURE.md has the long form): a handler turns its request into
//! [`Operation`]s (the object's JSON before and after, and its version when read); [`submit`]
//! asks the workspace's `change_approval` policy whether the caller's role needs approval. If
//! not, [`apply`] re-validates and writes everything in one transaction of the activate store,
//! appending one version per object. If so, a [`ChangeRequest`] holding the operations is stored
//! and the caller gets 202; approving it applies it the same way, where a version that moved
//! since is a 409 and nothing is written.

pub mod diff;
pub mod dry_run;

use crate::auth::{Authorized, Principal, RequiredPermission};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use tandem_activate::history::{DefinitionWrite, Provenance, Version};
use tandem_activate::runtime::{Activation, ManagedBy};
use tandem_config::{
    AudienceConfig, ConnectionConfig, DestinationConfig, PersonalizationConfig, SourceConfig,
    TrackingPlanConfig,
};
use tandem_core::limits::CHANGE_REQUEST_OPERATIONS_MAX;
use tandem_core::{ids, time_util, ErrorCode};
use tandem_store::SourceRecord;

/// What an operation changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Source,
    Destination,
    Connection,
    Audience,
    /// A tracking plan (API-managed plans; `DATA/plans/<ws>.redb`).
    #[serde(rename = "tracking_plan")]
    TrackingPlan,
    /// A workspace's override of an organization policy: `{"name", "value"}`, id = the name.
    Policy,
    /// The personalization API's policy of a workspace (allow-list and rules), id = the
    /// workspace's; kept in the metadata store's settings.
    Personalization,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Destination => "destination",
            Kind::Connection => "connection",
            Kind::Audience => "audience",
            Kind::TrackingPlan => "tracking_plan",
            Kind::Policy => "policy",
            Kind::Personalization => "personalization",
        }
    }

    pub const ALL: [Kind; 7] = [
        Kind::Source,
        Kind::Destination,
        Kind::Connection,
        Kind::Audience,
        Kind::TrackingPlan,
        Kind::Policy,
        Kind::Personalization,
    ];

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether the activate store keeps the definition itself (else another store does, written
    /// in the apply transaction's last step).
    fn stored_in_activate(self) -> bool {
        matches!(self, Kind::Destination | Kind::Connection | Kind::Audience)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// One object's change: its whole JSON before (absent: created) and after (absent: deleted),
/// and the version it had when the change was prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub kind: Kind,
    pub action: Action,
    pub id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub base_version: u64,
    /// Why, in words; default: the action.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    /// Approved and being applied (left so only if the server stopped in between: approving
    /// again retries the apply).
    Approved,
    Rejected,
    Applied,
    /// Approved but could not apply (a conflict, or no longer valid); `error` says why.
    Failed,
    Withdrawn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    pub by: String,
    pub at_ms: i64,
    pub text: String,
}

/// A proposed change of several objects, applied all together or not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRequest {
    pub id: String,
    pub workspace: String,
    pub title: String,
    pub status: Status,
    pub proposed_by: String,
    pub proposed_by_role: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub comments: Vec<Comment>,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub decided_at_ms: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
    /// `{kind, id, version}` of each version the apply recorded.
    #[serde(default)]
    pub versions: Vec<Value>,
}

impl ChangeRequest {
    pub fn load(activation: &Activation, id: &str) -> ApiResult<ChangeRequest> {
        let json = activation
            .dlq
            .change_request(id)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("change request {id}")))?;
        serde_json::from_value(json).map_err(ApiError::internal)
    }

    pub fn save(&self, activation: &Activation) -> ApiResult<()> {
        let json = serde_json::to_value(self).map_err(ApiError::internal)?;
        activation
            .dlq
            .put_change_request(&self.id, &json)
            .map_err(ApiError::internal)
    }

    /// The request as the API shows it: each operation with its changed paths, settings
    /// values of destinations redacted.
    pub fn view(&self) -> Value {
        let operations: Vec<Value> = self.operations.iter().map(operation_view).collect();
        let mut view = serde_json::to_value(self).unwrap_or_default();
        view["operations"] = Value::Array(operations);
        view["created_at"] = json!(time_util::format_iso8601_ms(self.created_at_ms));
        view["updated_at"] = json!(time_util::format_iso8601_ms(self.updated_at_ms));
        view
    }
}

/// An operation as the API shows it: before, after (redacted) and the changed paths.
pub fn operation_view(operation: &Operation) -> Value {
    let mut view = serde_json::to_value(operation).unwrap_or_default();
    view["changes"] = serde_json::to_value(diff::changed_paths(
        operation.before.as_ref(),
        operation.after.as_ref(),
    ))
    .unwrap_or_default();
    view["before"] = redacted(operation.kind, operation.before.as_ref());
    view["after"] = redacted(operation.kind, operation.after.as_ref());
    view
}

/// A destination's settings are secrets (tokens, passwords): views show a short fingerprint of
/// each value instead, so a diff still tells which one changed. Exports and the store keep them.
pub fn redacted(kind: Kind, value: Option<&Value>) -> Value {
    let Some(value) = value else {
        return Value::Null;
    };
    let mut value = value.clone();
    if kind == Kind::Destination {
        if let Some(settings) = value.get_mut("settings").and_then(Value::as_object_mut) {
            for setting in settings.values_mut() {
                let text = serde_json::to_string(setting).unwrap_or_default();
                *setting = json!(format!(
                    "<redacted sha256:{}>",
                    &ids::write_key_hash(&text)[..12]
                ));
            }
        }
    }
    value
}

/// The workspace's activation, or 404.
pub fn activation(state: &AppState, workspace: &str) -> ApiResult<Arc<Activation>> {
    state
        .workspaces
        .get(workspace)
        .map(|workspace| workspace.activation.clone())
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))
}

/// A source as its versions and exports hold it (the key only as its hash).
pub fn source_document(record: &SourceRecord) -> SourceConfig {
    SourceConfig {
        id: record.id.clone(),
        name: record.name.clone(),
        owner: record.owner.clone(),
        write_key: String::new(),
        write_key_sha256: Some(record.write_key_hash.clone()),
        purpose: record.purpose.clone(),
        data_categories: record.data_categories.clone(),
        enabled: record.enabled,
    }
}

/// The live JSON of an object and who manages it, if it exists.
pub fn current(
    state: &AppState,
    workspace: &str,
    kind: Kind,
    id: &str,
) -> ApiResult<Option<(Value, ManagedBy)>> {
    let activation = activation(state, workspace)?;
    let to_json = |value: serde_json::Result<Value>| value.map_err(ApiError::internal);
    Ok(match kind {
        Kind::Source => match state.store.source(workspace, id)? {
            None => None,
            Some(record) => {
                let by = match record.managed_by {
                    tandem_store::ManagedBy::Config => ManagedBy::Config,
                    tandem_store::ManagedBy::Api => ManagedBy::Api,
                };
                Some((to_json(serde_json::to_value(source_document(&record)))?, by))
            }
        },
        Kind::Destination => match activation
            .destinations()?
            .into_iter()
            .find(|(config, _)| config.id == id)
        {
            None => None,
            Some((config, by)) => Some((to_json(serde_json::to_value(config))?, by)),
        },
        Kind::Connection => match activation
            .connections()?
            .into_iter()
            .find(|(config, _)| config.id == id)
        {
            None => None,
            Some((config, by)) => Some((to_json(serde_json::to_value(config))?, by)),
        },
        Kind::Audience => match workspace_of(state, workspace)?
            .audiences
            .definitions()
            .into_iter()
            .find(|(config, _)| config.id == id)
        {
            None => None,
            Some((config, by)) => Some((to_json(serde_json::to_value(config))?, by)),
        },
        Kind::Personalization => {
            let policy = workspace_of(state, workspace)?.personalization.get();
            if policy.declared {
                Some((
                    to_json(serde_json::to_value(&policy.config))?,
                    ManagedBy::Config,
                ))
            } else if policy.config != Default::default() {
                Some((
                    to_json(serde_json::to_value(&policy.config))?,
                    ManagedBy::Api,
                ))
            } else {
                None
            }
        }
        Kind::TrackingPlan => {
            let set = workspace_plans(state, workspace)?.set();
            match set.get(id) {
                None => None,
                Some(entry) => Some((
                    to_json(serde_json::to_value(&entry.plan.config))?,
                    managed(entry.managed_by),
                )),
            }
        }
        Kind::Policy => {
            state
                .policies
                .workspace_override(workspace, id)
                .map(|(value, declared_in)| {
                    let by = match declared_in {
                        tandem_config::DeclaredIn::Config => ManagedBy::Config,
                        tandem_config::DeclaredIn::Api => ManagedBy::Api,
                    };
                    (policy_document(id, &value), by)
                })
        }
    })
}

/// A workspace policy override as changes and versions hold it.
pub fn policy_document(name: &str, value: &toml::Value) -> Value {
    json!({"name": name, "value": crate::policies::json_of(value)})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDocument {
    name: String,
    value: Value,
}

fn managed(by: tandem_store::ManagedBy) -> ManagedBy {
    match by {
        tandem_store::ManagedBy::Config => ManagedBy::Config,
        tandem_store::ManagedBy::Api => ManagedBy::Api,
    }
}

fn workspace_of<'a>(
    state: &'a AppState,
    workspace: &str,
) -> ApiResult<&'a crate::state::Workspace> {
    state
        .workspaces
        .get(workspace)
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))
}

/// The workspace's tracking plans, or 404.
pub fn workspace_plans(
    state: &AppState,
    workspace: &str,
) -> ApiResult<Arc<crate::plans::WorkspacePlans>> {
    state
        .workspaces
        .get(workspace)
        .map(|workspace| workspace.plans.clone())
        .ok_or_else(|| ApiError::not_found(format!("workspace {workspace}")))
}

/// [`prepare`] for a POST that creates: the same checks, and a 409 when `id` already exists.
pub fn prepare_create(
    state: &AppState,
    workspace: &str,
    kind: Kind,
    id: &str,
    after: &impl Serialize,
) -> ApiResult<Operation> {
    let after = serde_json::to_value(after).map_err(ApiError::internal)?;
    let operation = prepare(state, workspace, kind, id, Some(after))?;
    if operation.action != Action::Create {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("{} {id} already exists", kind.as_str()),
        ));
    }
    Ok(operation)
}

/// An operation on the live state: `after` (absent for a delete) normalised through its type,
/// checked against what exists (create: must not; update, delete: must, API-managed).
pub fn prepare(
    state: &AppState,
    workspace: &str,
    kind: Kind,
    id: &str,
    after: Option<Value>,
) -> ApiResult<Operation> {
    if kind == Kind::Personalization && id != workspace {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("personalization {id}: its id is the workspace's (`{workspace}`)"),
        ));
    }
    let existing = current(state, workspace, kind, id)?;
    let what = format!("{} {id}", kind.as_str());
    let action = match (&existing, &after) {
        (Some((_, ManagedBy::Config)), _) => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("{what} is declared in the config file; change it there"),
            ))
        }
        (None, None) => {
            return Err(ApiError::not_found(format!(
                "{what} in workspace {workspace}"
            )))
        }
        (None, Some(_)) => Action::Create,
        (Some(_), Some(_)) => Action::Update,
        (Some(_), None) => Action::Delete,
    };
    if kind == Kind::Source && action == Action::Delete {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{what}: sources are disabled, not deleted"),
        ));
    }
    let after = match after {
        None => None,
        Some(after) => Some(normalised(kind, id, after)?),
    };
    Ok(Operation {
        kind,
        action,
        id: id.to_string(),
        before: existing.map(|(json, _)| json),
        after,
        base_version: activation(state, workspace)?
            .dlq
            .latest_version(kind.as_str(), id)
            .map_err(ApiError::internal)?,
        reason: String::new(),
    })
}

/// `after` through its type (defaults filled, unknown fields refused), its id checked.
fn normalised(kind: Kind, id: &str, after: Value) -> ApiResult<Value> {
    let invalid = |error: serde_json::Error| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{} {id}: {error}", kind.as_str()),
        )
    };
    let (json, own_id) = match kind {
        Kind::Source => {
            let config: SourceConfig = serde_json::from_value(after).map_err(invalid)?;
            (serde_json::to_value(&config), config.id)
        }
        Kind::Destination => {
            let config: DestinationConfig = serde_json::from_value(after).map_err(invalid)?;
            (serde_json::to_value(&config), config.id)
        }
        Kind::Connection => {
            let config: ConnectionConfig = serde_json::from_value(after).map_err(invalid)?;
            (serde_json::to_value(&config), config.id)
        }
        Kind::Audience => {
            let config: AudienceConfig = serde_json::from_value(after).map_err(invalid)?;
            (serde_json::to_value(&config), config.id)
        }
        Kind::TrackingPlan => {
            let config: TrackingPlanConfig = serde_json::from_value(after).map_err(invalid)?;
            (serde_json::to_value(&config), config.id)
        }
        Kind::Personalization => {
            let config: PersonalizationConfig = serde_json::from_value(after).map_err(invalid)?;
            (serde_json::to_value(&config), id.to_string())
        }
        Kind::Policy => {
            let document: PolicyDocument = serde_json::from_value(after).map_err(invalid)?;
            let value = crate::policies::toml_of(&document.value)?;
            (Ok(policy_document(&document.name, &value)), document.name)
        }
    };
    if own_id != id {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{} {id}: `id` cannot change (it is `{own_id}` in the new definition)",
                kind.as_str()
            ),
        ));
    }
    json.map_err(ApiError::internal)
}

/// Checks `operations` against the state they would produce together (a connection may use a
/// destination created by the same request; a deleted destination must not be used by any
/// connection left): every problem at once, as 400 `invalid_request` with `problems`.
pub fn validate(state: &AppState, workspace: &str, operations: &[Operation]) -> ApiResult<()> {
    if operations.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "no operations"));
    }
    if operations.len() > CHANGE_REQUEST_OPERATIONS_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{} operations; at most {CHANGE_REQUEST_OPERATIONS_MAX} per change",
                operations.len()
            ),
        ));
    }
    let activation = activation(state, workspace)?;
    let mut sources: Vec<String> = state
        .store
        .sources()?
        .into_iter()
        .filter(|source| source.workspace_id == workspace)
        .map(|source| source.id)
        .collect();
    let mut destinations: Vec<(String, Option<DestinationConfig>)> = activation
        .destinations()?
        .into_iter()
        .map(|(config, _)| (config.id.clone(), Some(config)))
        .collect();
    let mut connections: Vec<ConnectionConfig> = activation
        .connections()?
        .into_iter()
        .map(|(config, _)| config)
        .collect();
    let mut audiences: Vec<AudienceConfig> = workspace_of(state, workspace)?
        .audiences
        .definitions()
        .into_iter()
        .map(|(config, _)| config)
        .collect();
    let audiences_touched = operations.iter().any(|op| op.kind == Kind::Audience);
    let mut personalization_after: Option<(usize, PersonalizationConfig)> = None;
    let plans = workspace_plans(state, workspace)?;
    let mut plans_after: Vec<TrackingPlanConfig> = plans
        .set()
        .entries
        .iter()
        .map(|entry| entry.plan.config.clone())
        .collect();
    let mut problems: Vec<(String, String)> = Vec::new();
    for (index, operation) in operations.iter().enumerate() {
        let at = |field: &str| {
            format!(
                "operations[{index}] ({} {}){field}",
                operation.kind.as_str(),
                operation.id
            )
        };
        match (operation.kind, &operation.after) {
            (Kind::Source, Some(after)) => {
                let source: SourceConfig =
                    serde_json::from_value(after.clone()).map_err(ApiError::internal)?;
                if source.name.trim().is_empty() || source.owner.trim().is_empty() {
                    problems.push((at(""), "`name` and `owner` are required".into()));
                }
                if source.write_key_sha256.is_none() {
                    problems.push((at(".write_key_sha256"), "missing".into()));
                }
                if !sources.contains(&source.id) {
                    sources.push(source.id);
                }
            }
            (Kind::Source, None) => problems.push((at(""), "sources are not deleted".into())),
            (Kind::Destination, Some(after)) => {
                match crate::routes::activate::checked_destination(after.clone()) {
                    Ok(config) => {
                        if let Some(problem) = state
                            .policies
                            .destination_type_problem(workspace, &config.kind)
                        {
                            problems.push((at(".type"), problem));
                        }
                        destinations.retain(|(id, _)| id != &config.id);
                        destinations.push((config.id.clone(), Some(config)));
                    }
                    Err(error) => problems.extend(error_problems(&error, &at)),
                }
            }
            (Kind::Destination, None) => destinations.retain(|(id, _)| id != &operation.id),
            (Kind::Connection, Some(after)) => {
                let config: ConnectionConfig =
                    serde_json::from_value(after.clone()).map_err(ApiError::internal)?;
                connections.retain(|connection| connection.id != config.id);
                connections.push(config);
            }
            (Kind::Connection, None) => connections.retain(|c| c.id != operation.id),
            (Kind::Audience, Some(after)) => {
                let config: AudienceConfig =
                    serde_json::from_value(after.clone()).map_err(ApiError::internal)?;
                audiences.retain(|audience| audience.id != config.id);
                audiences.push(config);
            }
            (Kind::Audience, None) => audiences.retain(|a| a.id != operation.id),
            (Kind::TrackingPlan, Some(after)) => {
                let config: TrackingPlanConfig =
                    serde_json::from_value(after.clone()).map_err(ApiError::internal)?;
                plans_after.retain(|plan| plan.id != config.id);
                plans_after.push(config);
            }
            (Kind::TrackingPlan, None) => plans_after.retain(|plan| plan.id != operation.id),
            (Kind::Policy, Some(after)) => {
                let document: PolicyDocument =
                    serde_json::from_value(after.clone()).map_err(ApiError::internal)?;
                let value = crate::policies::toml_of(&document.value)?;
                if let Some(problem) = state.policies.override_problem(&document.name, &value) {
                    problems.push((at(".value"), problem));
                }
            }
            (Kind::Policy, None) => {}
            (Kind::Personalization, after) => {
                let config: PersonalizationConfig = match after {
                    Some(after) => {
                        serde_json::from_value(after.clone()).map_err(ApiError::internal)?
                    }
                    None => PersonalizationConfig::default(),
                };
                personalization_after = Some((index, config));
            }
        }
    }
    if audiences_touched || personalization_after.is_some() {
        let computed = workspace_of(state, workspace)?
            .unify
            .rules()
            .computed_trait_names();
        let label = |config: &AudienceConfig| match operations
            .iter()
            .position(|op| op.kind == Kind::Audience && op.id == config.id)
        {
            Some(index) => format!("operations[{index}] (audience {})", config.id),
            None => format!("audience {}", config.id),
        };
        if audiences_touched {
            problems.extend(crate::audiences::set_problems(
                &audiences, &computed, &label,
            ));
        }
        // The personalization policy the request leaves, against the audiences it leaves (its
        // rules may name audiences too).
        let current = workspace_of(state, workspace)?.personalization.get();
        let (policy, at, every_problem) = match &personalization_after {
            Some((index, config)) => (
                config,
                format!("operations[{index}] (personalization {workspace})."),
                true,
            ),
            None => (&current.config, "personalization.".to_string(), false),
        };
        let ids: Vec<&str> = audiences.iter().map(|a| a.id.as_str()).collect();
        for problem in tandem_config::personalization_problems(policy, &ids, None) {
            if every_problem || problem.message.starts_with("no audience") {
                problems.push((format!("{at}{}", problem.path), problem.message));
            }
        }
    }
    // Tracking plans are checked against the plans the whole request leaves (overlaps).
    let plan_sources: Vec<&str> = sources.iter().map(String::as_str).collect();
    for (index, operation) in operations.iter().enumerate() {
        if operation.kind != Kind::TrackingPlan {
            continue;
        }
        let Some(after) = &operation.after else {
            continue;
        };
        let config: TrackingPlanConfig =
            serde_json::from_value(after.clone()).map_err(ApiError::internal)?;
        let create = operation.action == Action::Create;
        if let Err(error) = plans.check(&config, &plan_sources, create, Some(&plans_after)) {
            let at = format!("operations[{index}] (tracking_plan {})", operation.id);
            // A plan that collides with another (same id, a source already governed) is a
            // conflict with the current state, not a malformed request.
            if let crate::plans::PlanError::Conflict(message) = error {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("{at}: {message}"),
                ));
            }
            problems.extend(error_problems(&ApiError::from(error), &|field| {
                format!("{at}{field}")
            }));
        }
    }
    // Connections are checked once every destination and source of the request is known.
    let source_ids: Vec<&str> = sources.iter().map(String::as_str).collect();
    let destination_ids: Vec<&str> = destinations.iter().map(|(id, _)| id.as_str()).collect();
    for connection in &connections {
        let touched = operations
            .iter()
            .any(|op| op.kind == Kind::Connection && op.id == connection.id);
        let destination_deleted = !destination_ids.contains(&connection.destination.as_str());
        if !touched && !destination_deleted {
            continue;
        }
        let pii = crate::pii::declared(state, workspace);
        for problem in tandem_config::connection_problems(connection, &source_ids, &destination_ids)
            .into_iter()
            .chain(tandem_config::pii_category_problems(connection, &pii))
        {
            problems.push((
                format!("connection {}.{}", connection.id, problem.path),
                problem.message,
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let message = problems
        .iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect::<Vec<_>>()
        .join("; ");
    let details: Vec<Value> = problems
        .into_iter()
        .map(|(field, message)| json!({"field": field, "message": message}))
        .collect();
    Err(ApiError::new(ErrorCode::InvalidRequest, message)
        .with_details(json!({ "problems": details })))
}

fn error_problems(error: &ApiError, at: &dyn Fn(&str) -> String) -> Vec<(String, String)> {
    let listed: Vec<(String, String)> = error
        .details
        .as_ref()
        .and_then(|details| details["problems"].as_array())
        .map(|problems| {
            problems
                .iter()
                .map(|problem| {
                    let message = problem["message"].as_str().unwrap_or("");
                    // A schema that does not compile names its event rather than a field.
                    if let Some(event) = problem["event"].as_str() {
                        return (
                            at(&format!(".events.{event}")),
                            format!("the schema of event `{event}` does not compile: {message}"),
                        );
                    }
                    let field = problem["field"].as_str().unwrap_or("");
                    let field = if field.is_empty() {
                        String::new()
                    } else {
                        format!(".{field}")
                    };
                    (at(&field), message.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        vec![(at(""), error.message.clone())]
    } else {
        listed
    }
}

/// Re-validates `operations` and applies them all in one transaction (none on any error),
/// recording a version per object; a version or definition that moved since they were
/// prepared is 409 `conflict`. Sources are written to the metadata store inside the same
/// transaction's commit step, so a refused source write applies nothing either.
pub async fn apply(
    state: &AppState,
    workspace: &str,
    operations: &[Operation],
    provenance: &Provenance,
) -> ApiResult<Vec<Version>> {
    validate(state, workspace, operations)?;
    let activation = activation(state, workspace)?;
    let writes: Vec<DefinitionWrite> = operations
        .iter()
        .map(|operation| DefinitionWrite {
            kind: operation.kind.as_str().to_string(),
            id: operation.id.clone(),
            before: operation.before.clone(),
            after: operation.after.clone(),
            base_version: operation.base_version,
            stored: operation.kind.stored_in_activate(),
            reason: if operation.reason.is_empty() {
                format!("{:?}", operation.action).to_lowercase()
            } else {
                operation.reason.clone()
            },
        })
        .collect();
    let source_records = source_records(state, workspace, operations, provenance)?;
    let store = state.store.clone();
    let plans = workspace_plans(state, workspace)?;
    let sources: Vec<String> = store
        .sources()?
        .into_iter()
        .filter(|source| source.workspace_id == workspace)
        .map(|source| source.id)
        .chain(source_records.iter().map(|(record, _)| record.id.clone()))
        .collect();
    let versions = activation
        .apply_writes(&writes, provenance, || {
            for (record, create) in &source_records {
                let written = if *create {
                    store.create_source(record)
                } else {
                    store.put_source(record)
                };
                written.map_err(|error| error.to_string())?;
            }
            let source_ids: Vec<&str> = sources.iter().map(String::as_str).collect();
            for operation in operations {
                write_elsewhere(state, workspace, &plans, &source_ids, operation, provenance)?;
            }
            Ok(())
        })
        .await?;
    if !source_records.is_empty() {
        state.catalog.reload()?;
    }
    if operations.iter().any(|op| op.kind == Kind::Audience) {
        let target = workspace_of(state, workspace)?;
        let ids: Vec<&str> = operations
            .iter()
            .filter(|op| op.kind == Kind::Audience)
            .map(|op| op.id.as_str())
            .collect();
        target.audiences.reload(
            &activation,
            &target.unify.rules().computed_trait_names(),
            &format!("changed audience {}", ids.join(", ")),
        )?;
    }
    Ok(versions)
}

/// The write of an operation whose object lives outside the activate store (tracking plans,
/// policy overrides, the personalization policy): the apply transaction's last step, after
/// validation.
fn write_elsewhere(
    state: &AppState,
    workspace: &str,
    plans: &crate::plans::WorkspacePlans,
    source_ids: &[&str],
    operation: &Operation,
    provenance: &Provenance,
) -> Result<(), String> {
    match (operation.kind, &operation.after) {
        (Kind::TrackingPlan, Some(after)) => {
            let config: TrackingPlanConfig =
                serde_json::from_value(after.clone()).map_err(|error| error.to_string())?;
            let create = operation.action == Action::Create;
            plans
                .put(config, source_ids, &provenance.by, create)
                .map_err(|error| ApiError::from(error).message)?;
        }
        (Kind::TrackingPlan, None) => {
            plans
                .delete(&operation.id)
                .map_err(|error| ApiError::from(error).message)?;
        }
        (Kind::Policy, after) => {
            let value = match after {
                Some(after) => {
                    let document: PolicyDocument =
                        serde_json::from_value(after.clone()).map_err(|error| error.to_string())?;
                    Some(
                        crate::policies::toml_of(&document.value)
                            .map_err(|error| error.to_string())?,
                    )
                }
                None => None,
            };
            state
                .policies
                .write_override(workspace, &operation.id, value.as_ref())
                .map_err(|error| error.to_string())?;
        }
        (Kind::Personalization, after) => {
            let config: PersonalizationConfig = match after {
                Some(after) => {
                    serde_json::from_value(after.clone()).map_err(|error| error.to_string())?
                }
                None => PersonalizationConfig::default(),
            };
            let target = state
                .workspaces
                .get(workspace)
                .ok_or_else(|| format!("no workspace {workspace}"))?;
            let policy = target
                .personalization
                .save(state.store.as_ref(), workspace, config)
                .map_err(|error| error.message)?;
            // What unify keeps for the cache follows the allow-list; cached answers made under
            // the old policy go.
            target.audiences.engine.lock().capture_traits = policy.captured_traits();
            target.audiences.cache.clear();
        }
        _ => {}
    }
    Ok(())
}

/// The metadata-store records the source operations write, with whether each is new.
fn source_records(
    state: &AppState,
    workspace: &str,
    operations: &[Operation],
    provenance: &Provenance,
) -> ApiResult<Vec<(SourceRecord, bool)>> {
    let mut records = Vec::new();
    for operation in operations.iter().filter(|op| op.kind == Kind::Source) {
        let Some(after) = &operation.after else {
            continue;
        };
        let source: SourceConfig =
            serde_json::from_value(after.clone()).map_err(ApiError::internal)?;
        let existing = state.store.source(workspace, &operation.id)?;
        let record = SourceRecord {
            workspace_id: workspace.to_string(),
            id: source.id.clone(),
            name: source.name.trim().to_string(),
            owner: source.owner.trim().to_string(),
            purpose: source.purpose.clone(),
            data_categories: source.data_categories.clone(),
            write_key_hash: source.write_key_sha256.clone().unwrap_or_default(),
            enabled: source.enabled,
            managed_by: tandem_store::ManagedBy::Api,
            created_at_ms: existing
                .as_ref()
                .map_or(provenance.at_ms, |e| e.created_at_ms),
            created_by: existing
                .as_ref()
                .map_or(provenance.by.clone(), |e| e.created_by.clone()),
            updated_at_ms: provenance.at_ms,
        };
        records.push((record, existing.is_none()));
    }
    Ok(records)
}

/// Whether `principal`'s changes in `workspace` need approval (the `change_approval` policy,
/// inherited from the organization unless the workspace overrides it).
pub fn needs_approval(state: &AppState, principal: &Principal, workspace: &str) -> bool {
    state
        .policies
        .change_approval(workspace)
        .applies_to(principal.role.as_str())
}

/// A change request of `operations` by the caller, stored (status open) and audited.
pub async fn propose<P: RequiredPermission>(
    state: &AppState,
    auth: &Authorized<P>,
    workspace: &str,
    title: String,
    operations: Vec<Operation>,
) -> ApiResult<ChangeRequest> {
    validate(state, workspace, &operations)?;
    let now = time_util::now_ms();
    let request = ChangeRequest {
        id: format!(
            "cr_{now:013}_{}",
            ids::random_secret(6)
                .to_lowercase()
                .replace(['-', '_'], "x")
        ),
        workspace: workspace.to_string(),
        title,
        status: Status::Open,
        proposed_by: auth.principal.name(),
        proposed_by_role: auth.principal.role.as_str().to_string(),
        created_at_ms: now,
        updated_at_ms: now,
        operations,
        comments: Vec::new(),
        decided_by: None,
        decided_at_ms: None,
        error: None,
        versions: Vec::new(),
    };
    let activation = activation(state, workspace)?;
    request.save(&activation)?;
    auth.audit(
        state,
        "change_request.create",
        Some(workspace),
        format!("change_request {workspace}/{}", request.id),
        None,
        Some(request.view()),
    )
    .await?;
    Ok(request)
}

/// The 202 a change that needs approval answers: the change request it became.
pub fn accepted(request: &ChangeRequest) -> Response {
    let mut view = request.view();
    view["note"] = json!(
        "this change needs approval (policy change_approval): it was not applied; a role with ApproveChanges approves it"
    );
    (StatusCode::ACCEPTED, Json(view)).into_response()
}

/// What a handler's change becomes: applied now (`None`; the handler answers as before) or,
/// when the caller's role needs approval, a change request (`Some(202)`).
pub async fn submit<P: RequiredPermission>(
    state: &AppState,
    auth: &Authorized<P>,
    workspace: &str,
    title: String,
    operations: Vec<Operation>,
) -> ApiResult<Option<Response>> {
    if needs_approval(state, &auth.principal, workspace) {
        let request = propose(state, auth, workspace, title, operations).await?;
        return Ok(Some(accepted(&request)));
    }
    let provenance = Provenance {
        by: auth.principal.name(),
        change_request: None,
        at_ms: time_util::now_ms(),
    };
    apply(state, workspace, &operations, &provenance).await?;
    Ok(None)
}
