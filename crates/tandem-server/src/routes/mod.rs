//! One module per resource, each exposing its router.

pub mod access;
pub mod audit;
pub mod collect;
pub mod cors;
pub mod health;
pub mod imports;
pub mod live;
pub mod openapi;
pub mod profiles;
pub mod settings;
pub mod sources;

use crate::state::AppState;
use axum::Router;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let segment_api = Router::new()
        .merge(collect::router())
        .merge(settings::router())
        .layer(axum::middleware::from_fn(cors::segment_cors));
    // Everything a credential opens: token use, denials and refused credentials are audited.
    let management = Router::new()
        .merge(access::router())
        .merge(audit::router())
        .merge(sources::router())
        .merge(profiles::router())
        .merge(imports::router())
        .merge(live::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record_requests,
        ));
    Router::new()
        .merge(segment_api)
        .merge(management)
        .merge(health::router())
        .merge(openapi::router())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> crate::error::ApiError {
    crate::error::ApiError::not_found(format!("route {}", uri.path()))
}
