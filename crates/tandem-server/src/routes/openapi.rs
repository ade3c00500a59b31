//! `GET /api/v1/openapi.json`: the OpenAPI document of the whole HTTP surface.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// Written by hand beside the code; a test checks that every route the router serves is in it.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/openapi.json",
        get(|| async {
            ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
        }),
    )
}
