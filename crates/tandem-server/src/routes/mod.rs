//! One module per resource, each exposing its router.

pub mod activate;
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
    Router::new()
        .merge(segment_api)
        .merge(sources::router())
        .merge(activate::router())
        .merge(profiles::router())
        .merge(imports::router())
        .merge(live::router())
        .merge(health::router())
        .merge(openapi::router())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> crate::error::ApiError {
    crate::error::ApiError::not_found(format!("route {}", uri.path()))
}
