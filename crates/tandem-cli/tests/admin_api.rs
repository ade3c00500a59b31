//! The management API and CLI through the real binary: the source catalog (owner, last seen,
//! create/disable with write key shown once), admin-token enforcement, the live stream and
//! `tandem tail`, `tandem validate`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn management_routes_require_the_admin_token() {
    let server = TestServer::start("");
    let client = client();
    for path in [
        "/api/v1/workspaces",
        "/api/v1/workspaces/demo/sources",
        "/api/v1/unknown-keys",
        "/api/v1/workspaces/demo/log",
    ] {
        let anonymous = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "{path}");
        assert_eq!(
            anonymous.json::<Value>().await.unwrap()["error"]["code"],
            "missing_credentials"
        );
        let wrong = client
            .get(server.url(path))
            .bearer_auth("wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path}");
        assert_eq!(
            wrong.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_token"
        );
        let (status, _) = admin_get(&server, path).await;
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn sources_have_owners_activity_and_a_write_key_shown_once() {
    let server = TestServer::start("");
    assert_eq!(
        post(
            &server,
            "/v1/track",
            &json!({"userId": "u", "event": "Seen"})
        )
        .await
        .0,
        200
    );
    let (_, listed) = admin_get(&server, "/api/v1/workspaces/demo/sources").await;
    let web = listed["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "web")
        .unwrap()
        .clone();
    assert_eq!(web["owner"], "web-team@example.test");
    assert_eq!(web["managed_by"], "config");
    assert_eq!(web["events_accepted"], 1);
    assert!(web["last_seen_at"].is_string());
    assert!(web.get("write_key").is_none() && web.get("write_key_hash").is_none());

    let (status, created) = admin_post(
        &server,
        "/api/v1/workspaces/demo/sources",
        &json!({"name": "Kiosk", "owner": "stores@example.test", "purpose": "in-store sign-ups"}),
    )
    .await;
    assert_eq!(status, 201);
    let key = created["write_key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let (_, again) = admin_get(&server, &format!("/api/v1/workspaces/demo/sources/{id}")).await;
    assert!(
        again.get("write_key").is_none(),
        "the key is shown only at creation"
    );
    assert_eq!(again["purpose"], "in-store sign-ups");

    let send = |key: String| {
        client()
            .post(server.url("/v1/track"))
            .header("authorization", basic(&key))
            .json(&json!({"userId": "k", "event": "Kiosk"}))
            .send()
    };
    assert_eq!(send(key.clone()).await.unwrap().status().as_u16(), 200);
    let (status, _) = admin_post(
        &server,
        &format!("/api/v1/workspaces/demo/sources/{id}/disable"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let refused = send(key.clone()).await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["code"],
        "disabled_source"
    );
    admin_post(
        &server,
        &format!("/api/v1/workspaces/demo/sources/{id}/enable"),
        &json!({}),
    )
    .await;
    assert_eq!(send(key).await.unwrap().status().as_u16(), 200);

    let (status, body) = admin_post(
        &server,
        "/api/v1/workspaces/demo/sources/web/disable",
        &json!({}),
    )
    .await;
    assert_eq!(
        status, 409,
        "config-managed sources are changed in the config file"
    );
    assert_eq!(body["error"]["code"], "conflict");
    let (status, body) = admin_post(
        &server,
        "/api/v1/workspaces/demo/sources",
        &json!({"name": "No owner", "owner": ""}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    let (status, _) = admin_post(
        &server,
        "/api/v1/workspaces/nowhere/sources",
        &json!({"name": "x", "owner": "y"}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sources_created_by_api_survive_restart() {
    let mut server = TestServer::start("");
    let (_, created) = admin_post(
        &server,
        "/api/v1/workspaces/demo/sources",
        &json!({"id": "crm", "name": "CRM", "owner": "crm@example.test"}),
    )
    .await;
    let key = created["write_key"].as_str().unwrap().to_string();
    server.restart();
    let response = client()
        .post(server.url("/v1/identify"))
        .header("authorization", basic(&key))
        .json(&json!({"userId": "c1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn live_stream_shows_accepted_and_rejected_events_and_tail_prints_them() {
    let server = TestServer::start("");
    let response = client()
        .get(server.url("/api/v1/workspaces/demo/sources/web/live"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));

    let tail = std::process::Command::new(binary())
        .args([
            "tail",
            "--url",
            &server.url(""),
            "--token",
            ADMIN_TOKEN,
            "--workspace",
            "demo",
            "--source",
            "web",
            "--count",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let batch = json!({"batch": [{"type": "track", "userId": "u", "event": "Live One", "messageId": "live-1"}, {"type": "track", "messageId": "live-bad"}]});
    post(&server, "/v1/batch", &batch).await;

    let mut stream = response.bytes_stream();
    let mut text = String::new();
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(text.contains("live-1") && text.contains("event: rejected")) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("live events within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: accepted"));

    let output = tokio::task::spawn_blocking(move || tail.wait_with_output().unwrap())
        .await
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("Live One"), "tail printed: {printed}");
    assert!(printed.contains("REJECTED"), "tail printed: {printed}");
}

#[test]
fn validate_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config_text(8080, &dir.path().join("data"), "")).unwrap();
    let output = run_cli(&["validate", "--config", good.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let bad = dir.path().join("bad.toml");
    let text = config_text(8080, &dir.path().join("data"), "")
        .replace("owner = \"mobile-team@example.test\"\n", "")
        .replace(
            &format!("write_key = \"{SECOND_WRITE_KEY}\""),
            &format!("write_key = \"{WRITE_KEY}\""),
        );
    std::fs::write(&bad, &text).unwrap();
    let output = run_cli(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let report = String::from_utf8_lossy(&output.stderr).to_string();
    let lines: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("bad.toml:"))
        .collect();
    assert!(
        lines.len() >= 2,
        "both problems reported, each with a line: {report}"
    );
    assert!(report.contains("owner"), "{report}");
    assert!(report.contains("write_key"), "{report}");
}

#[test]
fn serve_without_config_prints_a_demo_workspace_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(binary())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            dir.path().join("data").to_str().unwrap(),
        ])
        .env_remove("TANDEM_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("started in");
        banner.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let banner = banner.join("\n");
    assert!(banner.contains("demo write key:"), "{banner}");
    assert!(banner.contains("admin token (shown once"), "{banner}");
}
