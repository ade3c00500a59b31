//! The console's security through the real binary: the page and its files with a strict
//! Content-Security-Policy and the other headers, revalidation by ETag; the session cookie's
//! flags; CSRF refusal of cookie-authenticated changes without the session's token or from
//! another origin (bearer clients unaffected); login refused from another origin.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "a long enough password";

async fn user_session(server: &TestServer, email: &str, role: &str) -> Value {
    user_login(server, email, role, Some("demo"), PASSWORD).await
}

fn with_cookie(
    server: &TestServer,
    method: Method,
    path: &str,
    session: &str,
) -> reqwest::RequestBuilder {
    client()
        .request(method, server.url(path))
        .header("cookie", format!("tandem_session={session}"))
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy() {
    let server = TestServer::start("");
    let page = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(
        !headers.contains_key("strict-transport-security"),
        "plain http"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/js/main.js"), "{html}");
    assert!(
        !html.contains("<script>") && !html.contains("style=\""),
        "{html}"
    );

    // Modules and libraries, with their media type and an ETag to revalidate against.
    for (path, kind) in [
        ("/console/js/main.js", "text/javascript"),
        ("/console/vendor/echarts.esm.min.mjs", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/icon.svg", "image/svg+xml"),
    ] {
        let file = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(file.status(), 200, "{path}");
        assert!(
            file.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert!(file.headers().contains_key("content-security-policy"));
        let etag = file.headers()["etag"].to_str().unwrap().to_string();
        let again = client()
            .get(server.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path} revalidated");
    }
    let missing = client()
        .get(server.url("/console/js/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("content-security-policy"));
    // Outside the embedded files nothing is reachable, whatever the path says.
    for path in ["/console/../Cargo.toml", "/console/%2e%2e/src/lib.rs"] {
        let status = client()
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{path}");
    }

    // Behind TLS (a proxy says so): HSTS too.
    let tls = client()
        .get(server.url("/"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(tls.headers().contains_key("strict-transport-security"));
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_for_changes() {
    let server = TestServer::start("");
    let login = user_session(&server, "mia@example.test", "marketer").await;
    let session = login["session"].as_str().unwrap();
    let csrf = login["csrf_token"].as_str().unwrap();
    assert_eq!(csrf.len(), 64, "{login}");
    assert_ne!(csrf, session);

    // The cookie's flags (plain http here: no Secure; behind TLS: Secure).
    let raw = client()
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "mia@example.test", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = raw.headers()["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    let behind_tls = client()
        .post(server.url("/api/v1/auth/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": "mia@example.test", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(behind_tls.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));

    // Reads need no token; `me` gives it back to a console that reloaded.
    let me: Value = with_cookie(&server, Method::GET, "/api/v1/me", session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["csrf_token"], csrf, "{me}");

    let source = json!({"name": "Landing page", "owner": "mia@example.test"});
    // A change with the cookie and no token: refused, nothing created.
    let refused = with_cookie(
        &server,
        Method::POST,
        "/api/v1/workspaces/demo/sources",
        session,
    )
    .json(&source)
    .send()
    .await
    .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf_rejected", "{body}");
    // A wrong token: refused.
    let wrong = with_cookie(
        &server,
        Method::POST,
        "/api/v1/workspaces/demo/sources",
        session,
    )
    .header("x-tandem-csrf", "0".repeat(64))
    .json(&source)
    .send()
    .await
    .unwrap();
    assert_eq!(wrong.status(), 403);
    // The right token, but from another origin: refused.
    let foreign = with_cookie(
        &server,
        Method::POST,
        "/api/v1/workspaces/demo/sources",
        session,
    )
    .header("x-tandem-csrf", csrf)
    .header("origin", "https://evil.example")
    .json(&source)
    .send()
    .await
    .unwrap();
    assert_eq!(foreign.status(), 403);
    let (_, sources) = admin_get(&server, "/api/v1/workspaces/demo/sources").await;
    assert!(
        !sources.to_string().contains("Landing page"),
        "nothing created: {sources}"
    );
    // The right token from this origin: applied.
    let origin = format!("http://127.0.0.1:{}", server.port);
    let made = with_cookie(
        &server,
        Method::POST,
        "/api/v1/workspaces/demo/sources",
        session,
    )
    .header("x-tandem-csrf", csrf)
    .header("origin", &origin)
    .json(&source)
    .send()
    .await
    .unwrap();
    assert_eq!(made.status(), 201, "{}", made.text().await.unwrap());
    // Logout is a change too.
    let logout = with_cookie(&server, Method::POST, "/api/v1/auth/logout", session)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 403);

    // Bearer clients (scripts) are not affected: the browser never sends a bearer by itself.
    let bearer = client()
        .post(server.url("/api/v1/workspaces/demo/sources"))
        .bearer_auth(session)
        .header("origin", "https://elsewhere.example")
        .json(&json!({"name": "Script source", "owner": "ops@example.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 201);

    // The refusals are in the audit log as denied requests of that user.
    let (_, audit) = admin_get(&server, "/api/v1/audit?action=access.denied").await;
    let denied = audit["entries"].as_array().unwrap();
    assert!(
        denied
            .iter()
            .any(|entry| entry["actor"]["name"] == "mia@example.test"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_login_from_another_origin_is_refused() {
    let server = TestServer::start("");
    user_session(&server, "ann@example.test", "viewer").await;
    let foreign = client()
        .post(server.url("/api/v1/auth/login"))
        .header("origin", "https://evil.example")
        .json(&json!({"email": "ann@example.test", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert!(!foreign.headers().contains_key("set-cookie"));
    let body: Value = foreign.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf_rejected");
    let own = client()
        .post(server.url("/api/v1/auth/login"))
        .header("origin", format!("http://127.0.0.1:{}", server.port))
        .json(&json!({"email": "ann@example.test", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
}
