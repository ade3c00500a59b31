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

#[cfg(test)]
mod tests {
    /// Every `.route("…")` of the route modules is documented.
    #[test]
    fn every_route_is_in_the_document() {
        let document: serde_json::Value = serde_json::from_str(super::OPENAPI_JSON).unwrap();
        let sources = [
            include_str!("collect.rs"),
            include_str!("settings.rs"),
            include_str!("sources.rs"),
            include_str!("live.rs"),
            include_str!("health.rs"),
            include_str!("profiles.rs"),
            include_str!("imports.rs"),
            include_str!("activate.rs"),
            include_str!("mod.rs"),
            include_str!("openapi.rs"),
        ];
        let mut missing = Vec::new();
        for source in sources {
            for piece in source.split(".route(").skip(1) {
                let Some(path) = piece
                    .trim_start()
                    .strip_prefix('"')
                    .and_then(|rest| rest.split('"').next())
                    .filter(|path| path.starts_with('/'))
                else {
                    continue;
                };
                if document["paths"].get(path).is_none() {
                    missing.push(path.to_string());
                }
            }
        }
        assert!(
            missing.is_empty(),
            "routes missing from openapi.json: {missing:?}"
        );
    }
}
