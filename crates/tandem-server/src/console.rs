//! The console: the web app at `/`, its files under `/console/…`, embedded in the binary at build
//! time (`rust-embed` over `crates/tandem-server/console/`), so `tandem serve` stays the one
//! command and the binary needs no files beside it.
//!
//! The console has no backend of its own: it is plain ES modules calling the public management
//! API with the user's session cookie, so everything it does can be scripted. What this module
//! adds is the browser's side of security, on every console response:
//! * a strict Content-Security-Policy: scripts, styles, images and connections only from this
//!   origin — no inline script or style, no `eval`, no framing, no form posts elsewhere;
//! * `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`,
//!   `Cross-Origin-Opener-Policy` and `-Resource-Policy: same-origin`, a `Permissions-Policy`
//!   turning off what the console never uses, and HSTS behind TLS.
//!
//! (Cookies and CSRF are the API's: `routes::access` sets `tandem_session` HttpOnly,
//! SameSite=Strict, Secure behind TLS; `auth` refuses a cookie-authenticated change without the
//! session's `X-Tandem-CSRF` token or from another origin.)
//!
//! Files are revalidated (`Cache-Control: no-cache`) against an `ETag` — the SHA-256 rust-embed
//! computed at build time — so an upgraded binary never runs with stale modules, and an
//! unchanged file costs a 304.
//!
//! For console development, `TANDEM_CONSOLE_DIR=crates/tandem-server/console` makes a running
//! server read the same files from that directory instead (only names the binary embeds, so no
//! other file can be reached); edit, reload the page.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::borrow::Cow;
use std::sync::OnceLock;

#[derive(rust_embed::Embed)]
#[folder = "console/"]
struct Assets;

/// The policy of every console response. `style-src 'self'` still lets scripts set styles
/// through the CSSOM (how Preact and ECharts position things); only inline `<style>` and
/// `style="…"` markup are refused. `img-src data:` is for ECharts' "save as image".
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the console never asks the browser for.
const PERMISSIONS_POLICY: &str =
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()";

/// The environment variable naming a directory to serve the console's files from (development).
pub const CONSOLE_DIR_ENV: &str = "TANDEM_CONSOLE_DIR";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*path}", get(asset))
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve(&state, &headers, "index.html")
}

async fn asset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    serve(&state, &headers, &path)
}

fn serve(state: &AppState, request: &HeaderMap, name: &str) -> Response {
    let Some(file) = Assets::get(name) else {
        let mut response = ApiError::not_found(format!("console file {name}")).into_response();
        add_security_headers(response.headers_mut(), is_https(request, state));
        return response;
    };
    let etag = format!(
        "\"{}\"",
        tandem_core::ids::hex(&file.metadata.sha256_hash())
    );
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let body: Cow<'static, [u8]> = match development_dir() {
        Some(dir) => match std::fs::read(dir.join(name)) {
            Ok(bytes) => Cow::Owned(bytes),
            Err(error) => {
                tracing::warn!(%error, file = name, "console file not readable from {CONSOLE_DIR_ENV}");
                file.data
            }
        },
        None => file.data,
    };
    let mut response = if not_modified && development_dir().is_none() {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_owned().into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    add_security_headers(headers, is_https(request, state));
    response
}

fn development_dir() -> Option<&'static std::path::Path> {
    static DIR: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os(CONSOLE_DIR_ENV)
            .filter(|dir| !dir.is_empty())
            .map(std::path::PathBuf::from)
    })
    .as_deref()
}

fn is_https(headers: &HeaderMap, state: &AppState) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
        || state
            .config
            .server
            .public_url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://"))
}

/// The security headers of a console response.
pub fn add_security_headers(headers: &mut HeaderMap, https: bool) {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            PERMISSIONS_POLICY,
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// The media type of a console file, by its extension (the files are ours: a short table).
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        _ => "text/plain; charset=utf-8",
    }
}

/// Every embedded file name (for tests: each module the console imports must be embedded).
pub fn file_names() -> Vec<String> {
    Assets::iter().map(|name| name.into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_and_its_libraries_are_embedded() {
        let names = file_names();
        for needed in [
            "index.html",
            "app.css",
            "js/main.js",
            "js/api.js",
            "vendor/preact.mjs",
            "vendor/preact-hooks.mjs",
            "vendor/htm.mjs",
            "vendor/echarts.esm.min.mjs",
        ] {
            assert!(names.iter().any(|name| name == needed), "{needed} missing");
        }
    }

    #[test]
    fn every_relative_import_names_an_embedded_file() {
        let names = file_names();
        for name in names.iter().filter(|name| name.ends_with(".js")) {
            let text = String::from_utf8(Assets::get(name).unwrap().data.into_owned()).unwrap();
            let folder = name.rsplit_once('/').map_or("", |(folder, _)| folder);
            for line in text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
            {
                let Some(start) = line.find("from '.").or_else(|| line.find("import('.")) else {
                    continue;
                };
                let rest = &line[start..];
                let quoted = rest.split('\'').nth(1).unwrap();
                let resolved = resolve(folder, quoted);
                assert!(
                    names.contains(&resolved),
                    "{name} imports {quoted} → {resolved}, not embedded"
                );
            }
        }
    }

    fn resolve(folder: &str, relative: &str) -> String {
        let mut parts: Vec<&str> = folder.split('/').filter(|p| !p.is_empty()).collect();
        for part in relative.split('/') {
            match part {
                "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts.join("/")
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let page = String::from_utf8(Assets::get("index.html").unwrap().data.into_owned()).unwrap();
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains("style=\""), "inline style attribute");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "external reference"
        );
    }

    #[test]
    fn media_types() {
        assert_eq!(content_type("js/main.js"), "text/javascript; charset=utf-8");
        assert_eq!(
            content_type("vendor/preact.mjs"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("vendor/LICENSE.preact"),
            "text/plain; charset=utf-8"
        );
    }
}
