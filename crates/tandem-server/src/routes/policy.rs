//! `GET /api/v1/workspaces/{workspace}/policy/effective`: every organization policy as the
//! workspace runs with it — the value, where it comes from (`organization` or `workspace`),
//! whether it may be overridden, and the organization's value when overridden. Policies are
//! declared in the config file (`[organization.policies.NAME]`, `[workspaces.policies]`);
//! `tandem validate` refuses overrides of non-overridable policies or of another type.

use crate::auth::{Authorized, ReadCatalog};
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};

pub fn router() -> Routes {
    Routes::new().route(
        "/api/v1/workspaces/{workspace}/policy/effective",
        get(effective),
    )
}

async fn effective(
    State(state): State<AppState>,
    _auth: Authorized<ReadCatalog>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<Value>> {
    if !state.workspaces.contains_key(&workspace) {
        return Err(ApiError::not_found(format!("workspace {workspace}")));
    }
    let policies = tandem_config::effective_policies(&state.config, &workspace);
    Ok(Json(json!({
        "workspace": workspace,
        "policies": serde_json::to_value(policies).map_err(ApiError::internal)?,
    })))
}
