//! Users, sessions, API tokens and the audit log through the real binary: login (cookie
//! attributes, wrong passwords), sessions as cookie and bearer, logout, role changes applying at
//! once, tokens shown once / scoped / never beyond their creator / revoked / given an expiry, and the
//! audit log recording all of it, filterable, exportable, and failing `tandem audit verify` when
//! an entry is edited, deleted or the tail cut.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::Write;
use std::process::Stdio;

const PASSWORD: &str = "correct horse battery staple";

async fn admin(
    method: reqwest::Method,
    server: &TestServer,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    as_token(method, server, path, ADMIN_TOKEN, body).await
}

async fn as_token(
    method: reqwest::Method,
    server: &TestServer,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client()
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn login(
    server: &TestServer,
    email: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn users_log_in_with_sessions_that_follow_their_role() {
    use reqwest::Method;
    let server = TestServer::start("");
    let (status, user) = admin(
        Method::POST,
        &server,
        "/api/v1/users",
        Some(json!({"email": "Ann@Example.test", "name": "Ann", "role": "viewer", "workspace": "demo", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    assert!(user.get("password_argon2").is_none() && user.get("password").is_none());
    // Weak passwords, unknown roles, an org admin tied to a workspace: refused with reasons.
    for (body, needle) in [
        (
            json!({"email": "b@example.test", "role": "viewer", "password": "short"}),
            "password",
        ),
        (
            json!({"email": "b@example.test", "role": "boss", "password": PASSWORD}),
            "unknown role",
        ),
        (
            json!({"email": "b@example.test", "role": "org_admin", "workspace": "demo", "password": PASSWORD}),
            "organization-wide",
        ),
        (
            json!({"email": "b@example.test", "role": "viewer", "workspace": "nowhere", "password": PASSWORD}),
            "does not exist",
        ),
        (
            json!({"email": "ann@example.test", "role": "viewer", "password": PASSWORD}),
            "already exists",
        ),
    ] {
        let (status, error) = admin(Method::POST, &server, "/api/v1/users", Some(body)).await;
        assert!(status == 400 || status == 409, "{status} {error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }

    let wrong = login(&server, "ann@example.test", "not the password at all", &[]).await;
    assert_eq!(wrong.status(), 401);
    let unknown = login(&server, "nobody@example.test", PASSWORD, &[]).await;
    assert_eq!(unknown.status(), 401);

    let ok = login(&server, "ANN@example.test", PASSWORD, &[]).await;
    assert_eq!(ok.status(), 200);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in [
        "tandem_session=tdm_sess_",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let session = ok.json::<Value>().await.unwrap()["session"]
        .as_str()
        .unwrap()
        .to_string();
    let behind_tls = login(
        &server,
        "ann@example.test",
        PASSWORD,
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(behind_tls.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    // The session as cookie and as bearer.
    let me = client()
        .get(server.url("/api/v1/me"))
        .header("cookie", format!("tandem_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["role"], "viewer");
    assert_eq!(me["workspace"], "demo");
    assert_eq!(me["user"]["email"], "Ann@Example.test");
    let (status, _) = as_token(
        Method::GET,
        &server,
        "/api/v1/workspaces/demo/sources",
        &session,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, denied) = as_token(
        Method::POST,
        &server,
        "/api/v1/workspaces/demo/sources",
        &session,
        Some(json!({"name": "x", "owner": "y"})),
    )
    .await;
    assert_eq!(status, 403, "{denied}");

    // Promoted: the same session may now create sources; removed: the session is gone.
    let id = user["id"].as_str().unwrap();
    let (status, changed) = admin(
        Method::PATCH,
        &server,
        &format!("/api/v1/users/{id}"),
        Some(json!({"role": "marketer"})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let (status, created) = as_token(
        Method::POST,
        &server,
        "/api/v1/workspaces/demo/sources",
        &session,
        Some(json!({"name": "Landing", "owner": "ann@example.test"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created_by"], "user:Ann@Example.test");

    // Logout ends the session (cookie cleared).
    let other = login(&server, "ann@example.test", PASSWORD, &[]).await;
    let other_session = other.json::<Value>().await.unwrap()["session"]
        .as_str()
        .unwrap()
        .to_string();
    let logout = client()
        .post(server.url("/api/v1/auth/logout"))
        .bearer_auth(&other_session)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    assert!(logout.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, error) = as_token(Method::GET, &server, "/api/v1/me", &other_session, None).await;
    assert_eq!(
        (status.as_u16(), error["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );

    let (status, _) = admin(
        Method::DELETE,
        &server,
        "/api/v1/users/ann@example.test",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = as_token(Method::GET, &server, "/api/v1/me", &session, None).await;
    assert_eq!(status, 401);

    // All of it is in the audit log: logins (both outcomes), user changes, the source.
    let (_, audit) = admin(
        Method::GET,
        &server,
        "/api/v1/audit?action=auth.login",
        None,
    )
    .await;
    let outcomes: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["failure", "failure", "success", "success", "success"],
        "{audit}"
    );
    let failure = &audit["entries"][1];
    assert_eq!(failure["actor"]["name"], "nobody@example.test");
    assert_eq!(failure["ip"], "127.0.0.1");
    let (_, changes) = admin(Method::GET, &server, "/api/v1/audit?action=user.", None).await;
    let actions: Vec<&str> = changes["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["user.create", "user.update", "user.delete"]);
    assert_eq!(changes["entries"][1]["before"]["role"], "viewer");
    assert_eq!(changes["entries"][1]["after"]["role"], "marketer");
    let (_, by_ann) = admin(
        Method::GET,
        &server,
        "/api/v1/audit?actor=Ann@Example.test&action=source.create&workspace=demo",
        None,
    )
    .await;
    assert_eq!(by_ann["entries"].as_array().unwrap().len(), 1, "{by_ann}");
    assert_eq!(by_ann["entries"][0]["after"]["owner"], "ann@example.test");
    let (status, bad) = admin(Method::GET, &server, "/api/v1/audit?since=yesterday", None).await;
    assert_eq!(status, 400, "{bad}");
}

#[tokio::test]
async fn tokens_are_shown_once_scoped_bounded_revocable_with_expiry() {
    use reqwest::Method;
    let server = TestServer::start("[[workspaces]]\nid = \"other\"\nname = \"Other\"\n");
    let (status, created) = admin(
        Method::POST,
        &server,
        "/api/v1/workspaces/demo/tokens",
        Some(json!({"name": "ws admin", "role": "workspace_admin"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("tdm_tok_"));
    assert_eq!(created["workspace"], "demo");
    assert!(
        created["expires_at"].is_string(),
        "90 days by default: {created}"
    );
    assert_eq!(created["last_used_at"], Value::Null);

    // Listing never shows a secret.
    let (_, list) = admin(Method::GET, &server, "/api/v1/tokens", None).await;
    assert!(!list.to_string().contains(&secret));
    assert!(!list.to_string().contains("sha256"));

    // The workspace admin manages tokens of its own workspace, never beyond its role or workspace.
    let (status, marketer) = as_token(
        Method::POST,
        &server,
        "/api/v1/workspaces/demo/tokens",
        &secret,
        Some(json!({"name": "ci", "role": "marketer", "expires_in_days": 7})),
    )
    .await;
    assert_eq!(status, 201, "{marketer}");
    let (status, error) = as_token(
        Method::POST,
        &server,
        "/api/v1/workspaces/demo/tokens",
        &secret,
        Some(json!({"name": "x", "role": "privacy_officer"})),
    )
    .await;
    assert_eq!(status, 403, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ReadAudit"),
        "{error}"
    );
    let (status, error) = as_token(
        Method::POST,
        &server,
        "/api/v1/workspaces/other/tokens",
        &secret,
        Some(json!({"name": "x", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, 403, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("scoped to workspace demo"));
    let (status, _) = as_token(
        Method::POST,
        &server,
        "/api/v1/tokens",
        &secret,
        Some(json!({"name": "x", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, 403);
    for days in [json!(0), json!(366), json!("soon")] {
        let (status, _) = admin(
            Method::POST,
            &server,
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "viewer", "expires_in_days": days})),
        )
        .await;
        assert_eq!(status, 400, "{days}");
    }
    let (status, forever) = admin(
        Method::POST,
        &server,
        "/api/v1/tokens",
        Some(json!({"name": "forever", "role": "viewer", "expires_in_days": null})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(forever["expires_at"], Value::Null);

    // Use is recorded; revocation is immediate.
    let marketer_secret = marketer["token"].as_str().unwrap();
    let (status, me) = as_token(Method::GET, &server, "/api/v1/me", marketer_secret, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["role"].as_str(), me["workspace"].as_str()),
        (Some("marketer"), Some("demo"))
    );
    let (_, tokens) = as_token(
        Method::GET,
        &server,
        "/api/v1/workspaces/demo/tokens",
        &secret,
        None,
    )
    .await;
    let used = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == marketer["id"])
        .unwrap()
        .clone();
    assert!(used["last_used_at"].is_string(), "{used}");
    let id = marketer["id"].as_str().unwrap();
    let (status, _) = as_token(
        Method::DELETE,
        &server,
        &format!("/api/v1/workspaces/other/tokens/{id}"),
        &secret,
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, revoked) = as_token(
        Method::DELETE,
        &server,
        &format!("/api/v1/workspaces/demo/tokens/{id}"),
        &secret,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(revoked["status"], "revoked");
    let (status, error) = as_token(Method::GET, &server, "/api/v1/me", marketer_secret, None).await;
    assert_eq!(status, 401);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));

    // Token use on admin routes is audited, with the token's identity.
    let (_, uses) = admin(
        Method::GET,
        &server,
        &format!("/api/v1/audit?action=token.use&actor={id}"),
        None,
    )
    .await;
    let entries = uses["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "{uses}");
    assert_eq!(entries[0]["actor"]["kind"], "api_token");
    assert_eq!(entries[0]["resource"], "GET /api/v1/me");
    let (_, failed) = admin(
        Method::GET,
        &server,
        "/api/v1/audit?action=auth.failed",
        None,
    )
    .await;
    assert!(
        failed["entries"][0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{failed}"
    );
}

#[tokio::test]
async fn users_and_tokens_through_the_cli() {
    let server = TestServer::start("");
    let url = server.url("");
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut child = std::process::Command::new(binary())
            .args(args)
            .args(["--url", &url])
            .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(
        &[
            "users",
            "add",
            "--email",
            "it@example.test",
            "--role",
            "org_admin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(ok, "{out}{err}");
    let (ok, out, _) = cli(&["users", "list"], None);
    assert!(ok && out.contains("it@example.test"), "{out}");
    let response = login(&server, "it@example.test", PASSWORD, &[]).await;
    assert_eq!(response.status(), 200);
    let (ok, out, err) = cli(
        &[
            "tokens",
            "create",
            "--name",
            "etl",
            "--role",
            "marketer",
            "--workspace",
            "demo",
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let id = created["id"].as_str().unwrap();
    let (ok, out, _) = cli(&["tokens", "list"], None);
    assert!(ok && out.contains(id));
    let (ok, out, _) = cli(&["tokens", "revoke", id], None);
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, _, err) = cli(
        &[
            "users",
            "add",
            "--email",
            "x@example.test",
            "--role",
            "viewer",
        ],
        Some("short\n"),
    );
    assert!(!ok && err.contains("password"), "{err}");
    let (ok, _, _) = cli(&["users", "remove", "it@example.test"], None);
    assert!(ok);
    let (ok, out, _) = cli(&["users", "list"], None);
    assert!(ok && !out.contains("it@example.test"));
}

/// Lines of the audit file, and a writer putting them back.
fn audit_lines(server: &TestServer) -> Vec<String> {
    std::fs::read_to_string(server.data.join("audit/audit.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_audit(server: &TestServer, lines: &[String]) {
    std::fs::write(
        server.data.join("audit/audit.jsonl"),
        lines.join("\n") + "\n",
    )
    .unwrap();
}

fn verify(server: &TestServer) -> (bool, String) {
    let output = run_cli(&["audit", "verify", "--data", server.data.to_str().unwrap()]);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test]
async fn the_audit_chain_detects_edits_deletions_and_truncation() {
    use reqwest::Method;
    let mut server = TestServer::start("");
    for n in 0..4 {
        let (status, _) = admin(
            Method::POST,
            &server,
            "/api/v1/workspaces/demo/sources",
            Some(json!({"name": format!("Source {n}"), "owner": "it@example.test"})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (_, verified) = admin(Method::GET, &server, "/api/v1/audit/verify", None).await;
    assert_eq!(verified["ok"], true, "{verified}");
    let export = client()
        .get(server.url("/api/v1/audit/export?action=source.create"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let exported = export.text().await.unwrap();
    assert_eq!(exported.lines().count(), 4);
    for line in exported.lines() {
        let stored: Value = serde_json::from_str(line).unwrap();
        assert_eq!(stored["entry"]["action"], "source.create");
        assert_eq!(stored["sha256"].as_str().unwrap().len(), 64);
    }
    server.stop();
    let (ok, message) = verify(&server);
    assert!(ok, "{message}");
    let original = audit_lines(&server);
    assert!(original.len() >= 8, "4 changes and 4 token uses at least");

    // One byte of entry 2 changed.
    let mut edited = original.clone();
    edited[2] = edited[2]
        .replacen("source.create", "source.crxate", 1)
        .replacen("token.use", "token.usx", 1);
    write_audit(&server, &edited);
    let (ok, message) = verify(&server);
    assert!(
        !ok && message.contains("entry 2 (line 3)") && message.contains("edited"),
        "{message}"
    );

    // Entry 3 deleted.
    let mut deleted = original.clone();
    deleted.remove(3);
    write_audit(&server, &deleted);
    let (ok, message) = verify(&server);
    assert!(!ok && message.contains("entry 3 is missing"), "{message}");

    // The tail cut: found against the head, and the server refuses to start on it.
    let mut truncated = original.clone();
    truncated.truncate(original.len() - 2);
    write_audit(&server, &truncated);
    let (ok, message) = verify(&server);
    assert!(!ok && message.contains("truncated"), "{message}");
    let output = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&server.config)
        .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("entries were removed"));

    // Put back untouched: verifies, the server starts and appends on the same chain.
    write_audit(&server, &original);
    let (ok, message) = verify(&server);
    assert!(ok, "{message}");
    server.restart();
    let (status, _) = admin(Method::GET, &server, "/api/v1/me", None).await;
    assert_eq!(status, 200);
    let (_, verified) = admin(Method::GET, &server, "/api/v1/audit/verify", None).await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["entries"].as_u64().unwrap() > original.len() as u64);
}

#[tokio::test]
async fn effective_policy_shows_where_each_value_comes_from() {
    use reqwest::Method;
    let server = TestServer::start(
        "\n[organization.policies.retention_days]\nvalue = 395\noverridable = true\n\n[organization.policies.change_approval]\nvalue = true\n\n[[workspaces]]\nid = \"fr\"\nname = \"France\"\n\n[workspaces.policies]\nretention_days = 90\n",
    );
    let (status, france) = admin(
        Method::GET,
        &server,
        "/api/v1/workspaces/fr/policy/effective",
        None,
    )
    .await;
    assert_eq!(status, 200, "{france}");
    let policies = france["policies"].as_array().unwrap();
    let by_name = |name: &str| policies.iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(
        by_name("retention_days"),
        json!({"name": "retention_days", "value": 90, "source": "workspace", "declared_in": "config", "overridable": true, "organization_value": 395})
    );
    assert_eq!(
        by_name("change_approval"),
        json!({"name": "change_approval", "value": true, "source": "organization", "declared_in": "config", "overridable": false})
    );
    let (_, demo) = admin(
        Method::GET,
        &server,
        "/api/v1/workspaces/demo/policy/effective",
        None,
    )
    .await;
    assert!(
        demo["policies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["source"] == "organization"),
        "{demo}"
    );
    let (status, _) = admin(
        Method::GET,
        &server,
        "/api/v1/workspaces/nowhere/policy/effective",
        None,
    )
    .await;
    assert_eq!(status, 404);
}
