//! `GET /v1/projects/{writeKey}/settings`: the settings document analytics.js (analytics-next)
//! fetches at start from its CDN. Pointing the SDK's `cdnURL` at tandem makes it send here.

use crate::catalog::{KeyLookup, RequestOrigin};
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tandem_core::{time_util, ErrorCode};

pub fn router() -> Routes {
    Routes::new().route("/v1/projects/{write_key}/settings", get(settings))
}

async fn settings(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    match state.catalog.lookup(&write_key) {
        KeyLookup::Enabled(_) => {}
        lookup => {
            let (code, source) = match lookup {
                KeyLookup::Disabled(source) => {
                    (ErrorCode::DisabledSource, Some(source.record.key()))
                }
                _ => (ErrorCode::UnknownWriteKey, None),
            };
            let origin = RequestOrigin {
                ip: Some(peer.ip().to_string()),
                user_agent: headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                origin: headers
                    .get(header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            };
            state.catalog.note_refused_key(
                &write_key,
                code.as_str(),
                source,
                &origin,
                time_util::now_ms(),
            );
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "no source has this write key",
            ));
        }
    }
    let (protocol, host) = public_origin(&state, &headers);
    Ok(Json(settings_document(&write_key, &protocol, &host)))
}

/// Where browsers should send events: `server.public_url` when configured, else the host the
/// settings were fetched from (honouring `X-Forwarded-Proto` from a TLS-terminating proxy).
fn public_origin(state: &AppState, headers: &HeaderMap) -> (String, String) {
    if let Some(url) = state.config.server.public_url.as_deref() {
        if let Some((protocol, rest)) = url.split_once("://") {
            return (protocol.to_string(), rest.trim_end_matches('/').to_string());
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let protocol = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http")
        .to_string();
    (protocol, host)
}

/// The document analytics-next expects. Only the `Segment.io` destination is enabled (tandem
/// itself); no bundled integrations, no remote plugins and no metrics, so the page loads nothing
/// from any other host.
pub fn settings_document(write_key: &str, protocol: &str, host: &str) -> Value {
    json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{host}/v1"),
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]}
            }
        },
        "plan": {
            "track": {"__default": {"enabled": true, "integrations": {}}},
            "identify": {"__default": {"enabled": true}},
            "group": {"__default": {"enabled": true}}
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": []
    })
}
