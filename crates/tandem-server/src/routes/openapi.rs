//! `GET /api/v1/openapi.json`: the OpenAPI document of the whole HTTP surface.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::routes::Routes;

/// Written by hand beside the code; a test checks that every route the router serves is in it.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

pub fn router() -> Routes {
    Routes::new().route(
        "/api/v1/openapi.json",
        get(|| async {
            ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
        }),
    )
}

/// Operations anyone may call without a credential. Any other operation names a permission (or
/// `write_key` for collect): a test holds the document to this list.
pub const PUBLIC_OPERATIONS: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/login"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Permission;
    use std::collections::BTreeSet;

    fn document() -> serde_json::Value {
        serde_json::from_str(OPENAPI_JSON).unwrap()
    }

    /// The router's paths (recorded as the modules route them) and the document's are the same.
    #[test]
    fn every_route_is_in_the_document_and_back() {
        let document = document();
        let routed: BTreeSet<String> = crate::routes::paths().into_iter().collect();
        let documented: BTreeSet<String> = document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes missing from openapi.json: {undocumented:?}; documented but not routed: {unrouted:?}"
        );
    }

    /// Every operation declares what it needs: a permission of the role table, `write_key`
    /// (collect), or `public` — and only the operations of `PUBLIC_OPERATIONS` are public.
    #[test]
    fn every_operation_declares_a_permission() {
        let document = document();
        let mut used = BTreeSet::new();
        let mut problems = Vec::new();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let declared = operation["x-tandem-permission"].as_str();
                match declared {
                    Some("public")
                        if PUBLIC_OPERATIONS.contains(&(method.as_str(), path.as_str())) => {}
                    Some("public") => problems.push(format!(
                        "{method} {path} is public but not in PUBLIC_OPERATIONS"
                    )),
                    Some("write_key") if path.starts_with("/v1/") => {}
                    Some("public_key") if path == "/v1/personalize" => {}
                    Some(name) => match Permission::parse(name) {
                        Some(permission) => {
                            used.insert(permission.as_str());
                        }
                        None => {
                            problems.push(format!("{method} {path}: unknown permission {name}"))
                        }
                    },
                    None => problems.push(format!("{method} {path} has no x-tandem-permission")),
                }
            }
        }
        for permission in Permission::ALL {
            if !used.contains(permission.as_str())
                && !crate::auth::REFINING_PERMISSIONS.contains(permission)
            {
                problems.push(format!("no route requires {}", permission.as_str()));
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
