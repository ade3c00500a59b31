//! One module per resource, each exposing its routes.
//!
//! Every module's `router()` returns [`Routes`], which records each path it routes: [`paths`]
//! lists the whole surface from the very functions [`router`] serves, so a test can compare it
//! with the OpenAPI document (and through it, the access matrix covers every route).

pub mod access;
pub mod activate;
pub mod audiences;
pub mod audit;
pub mod catalog;
pub mod changes;
pub mod collect;
pub mod consent;
pub mod cors;
pub mod health;
pub mod imports;
pub mod live;
pub mod openapi;
pub mod personalize;
pub mod policy;
pub mod privacy;
pub mod profiles;
pub mod retention;
pub mod settings;
pub mod sources;
pub mod tracking_plans;

use crate::state::AppState;
use axum::routing::MethodRouter;
use axum::Router;

/// A router that remembers its paths.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    pub fn route(
        mut self,
        path: impl Into<String>,
        method_router: MethodRouter<AppState>,
    ) -> Routes {
        let path = path.into();
        self.router = self.router.route(&path, method_router);
        self.paths.push(path);
        self
    }

    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

/// The Segment-compatible collect API (write keys; CORS for browsers).
fn segment_routes() -> Routes {
    collect::router()
        .merge(settings::router())
        .merge(personalize::public_router())
}

/// Everything a management credential opens (`Authorized<P>`; the Profile API's access tokens).
fn management_routes() -> Routes {
    Routes::new()
        .merge(access::router())
        .merge(audit::router())
        .merge(consent::router())
        .merge(privacy::router())
        .merge(retention::router())
        .merge(sources::router())
        .merge(catalog::router())
        .merge(activate::router())
        .merge(profiles::router())
        .merge(imports::router())
        .merge(live::router())
        .merge(policy::router())
        .merge(tracking_plans::router())
        .merge(changes::router())
        .merge(audiences::router())
        .merge(personalize::router())
}

/// Health, metrics and the OpenAPI document: no credentials.
fn public_routes() -> Routes {
    health::router().merge(openapi::router())
}

/// Every routed path, as [`router`] serves them.
pub fn paths() -> Vec<String> {
    [segment_routes(), management_routes(), public_routes()]
        .iter()
        .flat_map(|routes| routes.paths().to_vec())
        .collect()
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let segment_api = segment_routes()
        .into_router()
        .layer(axum::middleware::from_fn(cors::segment_cors));
    // Token use, denials and refused credentials are audited.
    let management = management_routes()
        .into_router()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record_requests,
        ));
    Router::new()
        .merge(segment_api)
        .merge(management)
        .merge(public_routes().into_router())
        // The console's files: not API operations (no credential, nothing to document).
        .merge(crate::console::router())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> crate::error::ApiError {
    crate::error::ApiError::not_found(format!("route {}", uri.path()))
}
