//! Change requests, versions, rollback and configuration as code, through the real binary.
//!
//! Workspace `demo` inherits the organization's `change_approval` policy (required; only
//! `org_admin` exempt); workspace `free` overrides it (not required). A marketer's connection in
//! `demo` becomes a change request (202) whose dry run counts events sent before; the marketer
//! cannot approve it (no ApproveChanges), a workspace admin cannot approve their own; the admin
//! approves, it applies, and the connection delivers to a REAL loopback webhook receiver. The
//! history shows the version, a rollback restores the old state, a stale request gets 409. In
//! `free` the marketer's change applies at once. The export round-trips through `tandem
//! validate` and an import of it changes nothing; an edited export becomes one change request;
//! the CLI lists, shows and rejects.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FREE_WRITE_KEY: &str = "free-write-key-0123456789";

fn extra() -> String {
    format!(
        r#"
[organization.policies.change_approval]
value = {{ required = true, exempt_roles = ["org_admin"] }}
overridable = true

[[workspaces]]
id = "free"
name = "Free"
[workspaces.policies]
change_approval = {{ required = false, exempt_roles = [] }}
[[workspaces.sources]]
id = "free-web"
name = "Free website"
owner = "web-team@example.test"
write_key = "{FREE_WRITE_KEY}"
"#
    )
}

async fn send(server: &TestServer, prefix: &str, names: &[&str]) {
    let batch: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            json!({"type": "track", "event": name, "userId": format!("u{index}"),
                   "messageId": format!("{prefix}-{index}"), "properties": {"total": index}})
        })
        .collect();
    let (status, body) = post(server, "/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, 200, "{body}");
}

const TRANSFORMATION: &str =
    "function transform(event) { event.properties.reviewed = true; return event; }";

fn connection(events: &[&str]) -> Value {
    json!({
        "id": "to-hook", "sources": ["web"], "destination": "hook", "events": events,
        "transformation": TRANSFORMATION,
        "delivery": {"batch_events_max": 20, "batch_age_ms": 20, "request_timeout_ms": 2000},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marketer_proposes_admin_approves_history_rollback_and_conflict() {
    use reqwest::Method;
    let receiver = Receiver::start().await;
    let server = TestServer::start(&extra());
    let ws = "/api/v1/workspaces/demo";
    let marketer = token(&server, "marketer", Some("demo")).await;
    let workspace_admin = token(&server, "workspace_admin", Some("demo")).await;

    // The policy is inherited by demo, overridden by free.
    let (_, effective) = admin_get(&server, &format!("{ws}/policy/effective")).await;
    assert_eq!(
        effective["policies"][0]["value"]["required"], true,
        "{effective}"
    );

    // The organization admin is exempt: its destination applies at once (201).
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::POST,
        &format!("{ws}/destinations"),
        Some(json!({
            "id": "hook", "name": "Hook", "type": "webhook", "owner": "team@example.test",
            "settings": {"url": receiver.url(), "batch": true},
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Events sent before the change: the dry run's material.
    send(
        &server,
        "before",
        &[
            "Order Completed",
            "Viewed",
            "Order Completed",
            "Viewed",
            "Order Completed",
            "Viewed",
            "Viewed",
        ],
    )
    .await;

    // 1. The marketer's connection becomes a change request.
    let (status, request) = call(
        &server,
        &marketer,
        Method::POST,
        &format!("{ws}/connections"),
        Some(connection(&["Order Completed"])),
    )
    .await;
    assert_eq!(status, 202, "{request}");
    assert_eq!(request["status"], "open");
    let id = request["id"].as_str().unwrap().to_string();
    let (status, _) = call(
        &server,
        &marketer,
        Method::GET,
        &format!("{ws}/connections/to-hook"),
        None,
    )
    .await;
    assert_eq!(status, 404, "not applied before approval");

    // 2. The dry run counts the events sent before.
    let (status, shown) = call(
        &server,
        &marketer,
        Method::GET,
        &format!("{ws}/change-requests/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    let proposed = &shown["impact"][0]["impact"]["proposed"];
    assert_eq!(proposed["events"], 7, "{shown}");
    assert_eq!(proposed["sent"], 3, "{proposed}");
    assert_eq!(proposed["dropped_by_filter"], 4, "{proposed}");
    assert_eq!(proposed["changed"], 3, "{proposed}");
    assert_eq!(proposed["failed"], 0, "{proposed}");
    assert_eq!(
        proposed["samples"]["changed"][0]["outputs"][0]["properties"]["reviewed"],
        true
    );
    assert!(shown["operations"][0]["changes"][0]["change"] == "added");

    // 3. The marketer cannot approve (no ApproveChanges); a workspace admin, not exempt here,
    //    proposes too and cannot approve their own.
    let (status, body) = call(
        &server,
        &marketer,
        Method::POST,
        &format!("{ws}/change-requests/{id}/approve"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ApproveChanges"),
        "{body}"
    );
    let (status, own) = call(&server, &workspace_admin, Method::POST, &format!("{ws}/change-requests"), Some(json!({
        "title": "disable nothing much",
        "operations": [{"kind": "destination", "id": "hook", "action": "update", "patch": {"purpose": "tests"}}],
    }))).await;
    assert_eq!(status, 201, "{own}");
    let own_id = own["id"].as_str().unwrap();
    let (status, body) = call(
        &server,
        &workspace_admin,
        Method::POST,
        &format!("{ws}/change-requests/{own_id}/approve"),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot approve it"),
        "{body}"
    );
    let (status, body) = call(
        &server,
        &marketer,
        Method::POST,
        &format!("{ws}/change-requests/{id}/comments"),
        Some(json!({"text": "for the order webhook"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // 4. The admin approves: applied; the connection exists and delivers.
    let (status, approved) = call(
        &server,
        ADMIN_TOKEN,
        Method::POST,
        &format!("{ws}/change-requests/{id}/approve"),
        Some(json!({"comment": "ok"})),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "applied");
    let (status, live) = call(
        &server,
        &marketer,
        Method::GET,
        &format!("{ws}/connections/to-hook"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{live}");
    send(
        &server,
        "after",
        &["Order Completed", "Viewed", "Order Completed"],
    )
    .await;
    let start = Instant::now();
    while receiver.events.lock().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nothing delivered: {}",
            server.server_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let delivered = receiver.events.lock();
        let mut ids: Vec<&str> = delivered
            .iter()
            .map(|e| e["messageId"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            ["after-0", "after-2"],
            "only new Order Completed events"
        );
        assert!(delivered
            .iter()
            .all(|e| e["properties"]["reviewed"] == true));
    }

    // 5. The history shows the version, with its change request.
    let history_path = format!("{ws}/config/history?kind=connection&id=to-hook");
    let (status, history) = call(&server, &marketer, Method::GET, &history_path, None).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        1,
        "{history}"
    );
    assert_eq!(history["versions"][0]["version"], 1);
    assert_eq!(history["versions"][0]["change_request"], id.as_str());
    assert_eq!(history["versions"][0]["by"], "admin-token");

    // 6. The admin changes it directly (version 2); a rollback to version 1 restores the old
    //    state (version 3). The marketer's rollback would need approval (202).
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::PATCH,
        &format!("{ws}/connections/to-hook"),
        Some(json!({"events": ["Viewed"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rollback = json!({"kind": "connection", "id": "to-hook", "version": 1});
    let (status, body) = call(
        &server,
        &marketer,
        Method::POST,
        &format!("{ws}/config/rollback"),
        Some(rollback.clone()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::POST,
        &format!("{ws}/config/rollback"),
        Some(rollback),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 3);
    let (_, live) = call(
        &server,
        &marketer,
        Method::GET,
        &format!("{ws}/connections/to-hook"),
        None,
    )
    .await;
    assert_eq!(live["events"], json!(["Order Completed"]), "{live}");
    let (_, history) = call(&server, &marketer, Method::GET, &history_path, None).await;
    assert_eq!(
        history["versions"][2]["reason"], "rollback to version 1",
        "{history}"
    );

    // 7. A request made before another change is stale: 409, and it is marked failed.
    let (status, stale) = call(
        &server,
        &marketer,
        Method::PATCH,
        &format!("{ws}/connections/to-hook"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 202, "{stale}");
    let stale_id = stale["id"].as_str().unwrap();
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::PATCH,
        &format!("{ws}/connections/to-hook"),
        Some(json!({"exclude_events": ["Test"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::POST,
        &format!("{ws}/change-requests/{stale_id}/approve"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("changed since"),
        "{body}"
    );
    let (_, failed) = call(
        &server,
        &marketer,
        Method::GET,
        &format!("{ws}/change-requests/{stale_id}"),
        None,
    )
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let (_, live) = call(
        &server,
        &marketer,
        Method::GET,
        &format!("{ws}/connections/to-hook"),
        None,
    )
    .await;
    assert_eq!(live["enabled"], true, "the stale request applied nothing");

    // Every step is in the audit log, with before and after.
    let (_, audit) = admin_get(&server, "/api/v1/audit?action=change_request.&limit=100").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for wanted in [
        "change_request.create",
        "change_request.comment",
        "change_request.approve",
        "change_request.apply",
        "change_request.fail",
    ] {
        assert!(
            actions.contains(&wanted),
            "{wanted} not audited: {actions:?}"
        );
    }
    let (_, applied) = admin_get(&server, "/api/v1/audit?action=connection.create").await;
    assert!(
        applied["entries"][0]["after"]["transformation"].is_string(),
        "{applied}"
    );

    // With approval not required (workspace free overrides the policy), the marketer's change
    // applies directly, versioned.
    let free_marketer = token(&server, "marketer", Some("free")).await;
    let (status, body) = call(
        &server,
        &free_marketer,
        Method::POST,
        "/api/v1/workspaces/free/destinations",
        Some(json!({
            "id": "free-hook", "name": "Free hook", "type": "webhook", "owner": "team@example.test",
            "settings": {"url": receiver.url()},
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, history) = call(
        &server,
        &free_marketer,
        Method::GET,
        "/api/v1/workspaces/free/config/history?kind=destination",
        None,
    )
    .await;
    assert_eq!(history["versions"][0]["id"], "free-hook", "{history}");
    assert!(history["versions"][0]["after"]["settings"]["url"]
        .as_str()
        .unwrap()
        .starts_with("<redacted"));
    let (status, body) = call(
        &server,
        &free_marketer,
        Method::POST,
        "/api/v1/workspaces/free/sources/free-web/disable",
        None,
    )
    .await;
    assert_eq!(status, 409, "config-file sources stay read-only: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_round_trips_and_import_is_one_change_request() {
    use reqwest::Method;
    let receiver = Receiver::start().await;
    let server = TestServer::start(&extra());
    let ws = "/api/v1/workspaces/demo";
    let marketer = token(&server, "marketer", Some("demo")).await;
    for (path, body) in [
        (
            "destinations",
            json!({"id": "hook", "name": "Hook", "type": "webhook", "owner": "team@example.test", "settings": {"url": receiver.url()}}),
        ),
        ("connections", connection(&["Order Completed"])),
        (
            "sources",
            json!({"id": "shop", "name": "Shop", "owner": "shop@example.test"}),
        ),
    ] {
        let (status, body) = call(
            &server,
            ADMIN_TOKEN,
            Method::POST,
            &format!("{ws}/{path}"),
            Some(body),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    // The marketer may not export (destination settings are secrets).
    let (status, _) = call(
        &server,
        &marketer,
        Method::GET,
        &format!("{ws}/config/export"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, exported) = call(
        &server,
        ADMIN_TOKEN,
        Method::GET,
        &format!("{ws}/config/export"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let text = exported.as_str().unwrap().to_string();
    assert!(
        !text.contains(WRITE_KEY),
        "write keys are exported as hashes only"
    );
    assert!(text.contains("write_key_sha256"));
    let file = server.dir.path().join("exported.toml");
    std::fs::write(&file, &text).unwrap();
    let validated = run_cli(&["validate", "--config", file.to_str().unwrap()]);
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    // Parsed, it holds the live objects.
    let parsed = tandem_config::parse(&text, "exported").unwrap();
    let demo = parsed.workspaces.iter().find(|w| w.id == "demo").unwrap();
    assert_eq!(
        demo.connections[0].transformation.as_deref(),
        Some(TRANSFORMATION)
    );
    assert_eq!(demo.sources.len(), 3);

    // Importing the export changes nothing.
    let import = |token: String, body: String| {
        let url = server.url(&format!("{ws}/config/import"));
        async move {
            let response = client()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/toml")
                .body(body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, body) = import(marketer.clone(), text.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operations"], 0);

    // An edited export (connection removed, destination renamed, a new one) is ONE request.
    let mut edited = parsed.clone();
    let demo = edited
        .workspaces
        .iter_mut()
        .find(|w| w.id == "demo")
        .unwrap();
    demo.connections.clear();
    demo.destinations[0].name = "Hook (renamed)".into();
    let mut second = demo.destinations[0].clone();
    second.id = "hook-2".into();
    demo.destinations.push(second);
    let (status, request) = import(marketer.clone(), tandem_config::to_toml(&edited)).await;
    assert_eq!(status, 202, "{request}");
    let operations = request["operations"].as_array().unwrap();
    let summary: Vec<(String, String)> = operations
        .iter()
        .map(|op| {
            (
                format!(
                    "{} {}",
                    op["kind"].as_str().unwrap(),
                    op["id"].as_str().unwrap()
                ),
                op["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 3, "{summary:?}");
    for wanted in [
        ("destination hook", "update"),
        ("destination hook-2", "create"),
        ("connection to-hook", "delete"),
    ] {
        assert!(
            summary.contains(&(wanted.0.to_string(), wanted.1.to_string())),
            "{wanted:?} in {summary:?}"
        );
    }
    // A config-file source may not be changed by an import.
    let mut forbidden = parsed.clone();
    forbidden
        .workspaces
        .iter_mut()
        .find(|w| w.id == "demo")
        .unwrap()
        .sources[0]
        .owner = "someone-else@example.test".into();
    let (status, body) = import(marketer.clone(), tandem_config::to_toml(&forbidden)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config file"),
        "{body}"
    );

    // The CLI: list, show, reject; export.
    let id = request["id"].as_str().unwrap();
    let url = server.url("");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--url", &url, "--token", ADMIN_TOKEN, "--workspace", "demo"]);
        let output = run_cli(&all);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(&["changes", "list", "--status", "open"]);
    assert!(ok && out.contains(id), "{out}{err}");
    let (ok, out, err) = cli(&["changes", "show", id]);
    assert!(ok && out.contains("connections_using_it"), "{out}{err}");
    let (ok, out, err) = cli(&["changes", "reject", id, "--comment", "not now"]);
    assert!(ok && out.contains("\"rejected\""), "{out}{err}");
    let (ok, out, err) = cli(&["changes", "approve", id]);
    assert!(
        !ok && err.contains("conflict"),
        "a rejected request is closed: {out}{err}"
    );
    let (ok, out, err) = cli(&["config", "export"]);
    assert!(ok && out == text, "{err}");
    let (_, live) = call(
        &server,
        ADMIN_TOKEN,
        Method::GET,
        &format!("{ws}/connections/to-hook"),
        None,
    )
    .await;
    assert_eq!(live["id"], "to-hook", "the rejected import applied nothing");
}
