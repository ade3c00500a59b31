//! Real-time audiences through the real binary: `Audience Entered`/`Exited` in `tandem log
//! export` and at a real loopback webhook receiver (a connection from the built-in source
//! `tandem-audiences`); a merge that makes someone qualify; memberships on the native profile and
//! the Segment-compatible Profile API; a config-declared audience read-only (409); an API audience
//! created, previewed (size == members after its backfill), changed and deleted (members exit);
//! kill -9 and restart with no duplicate events; a window's edge passing (the server runs under
//! libfaketime a few seconds before midnight UTC); `tandem audiences create|update|delete` following
//! the backfill. The personalization API: `personalize.rs`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn config(receiver: &Receiver) -> String {
    format!(
        r#"
[[workspaces.audiences]]
id = "big-spenders"
name = "Big spenders"
owner = "crm@example.test"
[workspaces.audiences.condition]
event = "Order Completed"
at_least = 2
within_days = 30
where = [{{ property = "total", op = "gt", value = 100 }}]

[[workspaces.destinations]]
id = "crm"
name = "CRM audience sync"
type = "webhook"
owner = "crm@example.test"
[workspaces.destinations.settings]
url = "{url}"

[[workspaces.connections]]
id = "audiences-to-crm"
sources = ["tandem-audiences"]
destination = "crm"
events = ["Audience Entered", "Audience Exited"]
[workspaces.connections.delivery]
batch_age_ms = 50
"#,
        url = receiver.url()
    )
}

async fn request(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut builder = client()
        .request(method, server.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn track(server: &TestServer, ids: Value, name: &str, properties: Value) {
    let mut event = ids;
    event["event"] = json!(name);
    event["properties"] = properties;
    let (status, body) = post(server, "/v1/track", &event).await;
    assert_eq!(status, 200, "{body}");
}

async fn identify(server: &TestServer, ids: Value, traits: Value) {
    let mut event = ids;
    event["traits"] = traits;
    let (status, body) = post(server, "/v1/identify", &event).await;
    assert_eq!(status, 200, "{body}");
}

/// The audience events in the log: (event name, audience, userId or anonymousId).
fn audience_events(server: &TestServer) -> Vec<(String, String, String, Value)> {
    server
        .export()
        .into_iter()
        .filter(|line| {
            line["source_id"] == "tandem-audiences"
                || line["event"]["context"]["audience"].is_object()
        })
        .map(|line| {
            let event = line["event"].clone();
            let who = event["userId"]
                .as_str()
                .or(event["anonymousId"].as_str())
                .unwrap_or_default()
                .to_string();
            (
                event["event"].as_str().unwrap_or_default().to_string(),
                event["properties"]["audience_key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                who,
                event,
            )
        })
        .collect()
}

async fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(
    events: &[(String, String, String, Value)],
    name: &str,
    audience: &str,
    who: &str,
) -> usize {
    events
        .iter()
        .filter(|(n, a, w, _)| n == name && a == audience && w == who)
        .count()
}

async fn wait_job_done(server: &TestServer) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, list) = request(
            server,
            reqwest::Method::GET,
            "/api/v1/workspaces/demo/audiences",
            None,
        )
        .await;
        assert_eq!(status, 200, "{list}");
        if list["pending"] == false && list["job"].is_null() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the audience job never ended: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_enter_exit_sync_preview_backfill_and_survive_kill_9() {
    let receiver = Receiver::start().await;
    let mut server = TestServer::start(&config(&receiver));
    // The file's audience is new to this data directory: its (empty) backfill runs first.
    wait_job_done(&server).await;

    // Two qualifying orders (one of 50 does not count): u1 enters.
    track(
        &server,
        json!({"userId": "u1"}),
        "Order Completed",
        json!({"total": 150}),
    )
    .await;
    track(
        &server,
        json!({"userId": "u1"}),
        "Order Completed",
        json!({"total": 50}),
    )
    .await;
    track(
        &server,
        json!({"userId": "u1"}),
        "Order Completed",
        json!({"total": 200}),
    )
    .await;
    let events = wait_until("u1 entering big-spenders", || {
        let events = audience_events(&server);
        (count(&events, "Audience Entered", "big-spenders", "u1") == 1).then_some(events)
    })
    .await;
    let entered = &events[0].3;
    assert_eq!(entered["type"], "track");
    assert_eq!(entered["properties"]["big-spenders"], true);
    assert_eq!(entered["context"]["audience"]["reason"], "event");
    assert!(entered["messageId"].as_str().unwrap().starts_with("aud-"));
    // Delivered to the webhook like any event.
    wait_until("the webhook receiving the entry", || {
        receiver
            .events
            .lock()
            .iter()
            .any(|e| e["event"] == "Audience Entered" && e["userId"] == "u1")
            .then_some(())
    })
    .await;

    // A merge makes someone qualify: one order as an anonymous visitor, one as u2, then the
    // identify that joins them.
    track(
        &server,
        json!({"anonymousId": "anon-7"}),
        "Order Completed",
        json!({"total": 120}),
    )
    .await;
    track(
        &server,
        json!({"userId": "u2"}),
        "Order Completed",
        json!({"total": 130}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(
            &audience_events(&server),
            "Audience Entered",
            "big-spenders",
            "u2"
        ),
        0
    );
    identify(
        &server,
        json!({"userId": "u2", "anonymousId": "anon-7"}),
        json!({"plan": "pro"}),
    )
    .await;
    let events = wait_until("u2 entering through the merge", || {
        let events = audience_events(&server);
        (count(&events, "Audience Entered", "big-spenders", "u2") == 1).then_some(events)
    })
    .await;
    let merged = events.iter().find(|e| e.2 == "u2").unwrap();
    assert_eq!(merged.3["context"]["audience"]["reason"], "merge");
    assert_eq!(merged.3["anonymousId"], "anon-7");

    // Memberships on the native profile and in the Profile API's traits.
    let (status, profile) = request(
        &server,
        reqwest::Method::GET,
        "/api/v1/workspaces/demo/profiles/user_id:u2",
        None,
    )
    .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["audiences"][0]["id"], "big-spenders", "{profile}");
    let (status, token) = admin_post(
        &server,
        "/api/v1/workspaces/demo/access-tokens",
        &json!({"name": "test"}),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    let traits: Value = client()
        .get(server.url("/v1/spaces/demo/collections/users/profiles/user_id:u2/traits"))
        .basic_auth(token["token"].as_str().unwrap(), Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(traits["traits"]["big-spenders"], true, "{traits}");

    // The config file's audience is read-only through the API.
    let (status, body) = request(
        &server,
        reqwest::Method::PATCH,
        "/api/v1/workspaces/demo/audiences/big-spenders",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // Bad definitions: every problem with its path.
    let (status, body) = request(
        &server,
        reqwest::Method::POST,
        "/api/v1/workspaces/demo/audiences",
        Some(json!({"id": "bad", "name": "Bad", "condition": {"all": [
            {"trait": "plan", "op": "between", "value": 1},
            {"audience": "nope"},
            {"event": "X", "at_least": 1, "at_most": 2}
        ]}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for expected in [
        "condition.all[0].op",
        "no audience `nope`",
        "condition.all[2].at_most",
    ] {
        assert!(message.contains(expected), "{expected} in {message}");
    }

    // Preview a new definition over the existing profiles, save it: its members are the preview.
    for (user, plan, views) in [
        ("p1", "pro", 2),
        ("p2", "pro", 0),
        ("p3", "free", 3),
        ("p4", "pro", 1),
    ] {
        identify(&server, json!({"userId": user}), json!({"plan": plan})).await;
        for _ in 0..views {
            track(
                &server,
                json!({"userId": user}),
                "Viewed Pricing",
                json!({"page": "/pricing"}),
            )
            .await;
        }
    }
    let definition = json!({"id": "pro-shoppers", "name": "Pro shoppers", "condition": {"all": [
        {"trait": "plan", "op": "eq", "value": "pro"},
        {"event": "Viewed Pricing", "within_days": 7, "where": [{"property": "page", "op": "contains", "value": "pricing"}]}
    ]}});
    // The last events must be applied to profiles before the preview reads them.
    wait_until("unify to catch up", || {
        let rt = tokio::runtime::Handle::current();
        let (_, status) = tokio::task::block_in_place(|| {
            rt.block_on(request(
                &server,
                reqwest::Method::GET,
                "/api/v1/workspaces/demo/unify",
                None,
            ))
        });
        (status["lag_records"] == 0).then_some(())
    })
    .await;
    let (status, preview) = request(
        &server,
        reqwest::Method::POST,
        "/api/v1/workspaces/demo/audiences/preview",
        Some(definition.clone()),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["size"], 2, "p1 and p4: {preview}");
    assert_eq!(preview["sample"].as_array().unwrap().len(), 2);
    assert!(
        !preview["counted_from_history"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{preview}"
    );
    let (status, created) = request(
        &server,
        reqwest::Method::POST,
        "/api/v1/workspaces/demo/audiences",
        Some(definition),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    wait_job_done(&server).await;
    let (status, members) = request(
        &server,
        reqwest::Method::GET,
        "/api/v1/workspaces/demo/audiences/pro-shoppers/members",
        None,
    )
    .await;
    assert_eq!(status, 200, "{members}");
    let mut ids: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["p1", "p4"]);
    assert_eq!(members["size"], preview["size"]);
    let events = wait_until("the backfill's entries in the log", || {
        let events = audience_events(&server);
        (count(&events, "Audience Entered", "pro-shoppers", "p4") == 1).then_some(events)
    })
    .await;
    assert_eq!(
        events.iter().find(|e| e.1 == "pro-shoppers").unwrap().3["context"]["audience"]["reason"],
        "backfill"
    );
    // Real time from then on: p2 views pricing and enters.
    track(
        &server,
        json!({"userId": "p2"}),
        "Viewed Pricing",
        json!({"page": "/pricing"}),
    )
    .await;
    wait_until("p2 entering in real time", || {
        (count(
            &audience_events(&server),
            "Audience Entered",
            "pro-shoppers",
            "p2",
        ) == 1)
            .then_some(())
    })
    .await;
    // The CLI lists and shows them.
    let url = server.url("");
    let listed = run_cli_json(&[
        "audiences",
        "list",
        "--url",
        &url,
        "--token",
        ADMIN_TOKEN,
        "--workspace",
        "demo",
    ]);
    let sizes: Vec<(String, u64)> = listed["audiences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("big-spenders".to_string(), 2),
            ("pro-shoppers".to_string(), 3)
        ]
    );
    let members = run_cli_json(&[
        "audiences",
        "members",
        "pro-shoppers",
        "--url",
        &url,
        "--token",
        ADMIN_TOKEN,
        "--workspace",
        "demo",
    ]);
    assert_eq!(members["members"].as_array().unwrap().len(), 3);

    // kill -9, restart: nothing announced twice, and real time continues.
    let before = audience_events(&server).len();
    server.restart_after_kill();
    track(
        &server,
        json!({"userId": "u3"}),
        "Order Completed",
        json!({"total": 300}),
    )
    .await;
    track(
        &server,
        json!({"userId": "u3"}),
        "Order Completed",
        json!({"total": 300}),
    )
    .await;
    let events = wait_until("u3 entering after the restart", || {
        let events = audience_events(&server);
        (count(&events, "Audience Entered", "big-spenders", "u3") == 1).then_some(events)
    })
    .await;
    assert_eq!(events.len(), before + 1, "{events:#?}");
    let mut message_ids: Vec<&str> = events
        .iter()
        .map(|e| e.3["messageId"].as_str().unwrap())
        .collect();
    message_ids.sort();
    message_ids.dedup();
    assert_eq!(message_ids.len(), events.len(), "no duplicate messageIds");

    // A changed definition re-evaluates: p2's plan condition dropped, p3 (free) joins.
    let (status, body) = request(
        &server,
        reqwest::Method::PATCH,
        "/api/v1/workspaces/demo/audiences/pro-shoppers",
        Some(json!({"condition": {"event": "Viewed Pricing", "at_least": 2, "within_days": 7}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_job_done(&server).await;
    let events = wait_until("the change's entries and exits", || {
        let events = audience_events(&server);
        (count(&events, "Audience Entered", "pro-shoppers", "p3") == 1
            && count(&events, "Audience Exited", "pro-shoppers", "p4") == 1
            && count(&events, "Audience Exited", "pro-shoppers", "p2") == 1)
            .then_some(events)
    })
    .await;
    assert_eq!(count(&events, "Audience Exited", "pro-shoppers", "p1"), 0);

    // Deleted: every member exits.
    let (status, body) = request(
        &server,
        reqwest::Method::DELETE,
        "/api/v1/workspaces/demo/audiences/pro-shoppers",
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    wait_until("the members' exits", || {
        let events = audience_events(&server);
        (count(&events, "Audience Exited", "pro-shoppers", "p1") == 1
            && count(&events, "Audience Exited", "pro-shoppers", "p3") == 1)
            .then_some(())
    })
    .await;
    let (status, _) = request(
        &server,
        reqwest::Method::GET,
        "/api/v1/workspaces/demo/audiences/pro-shoppers",
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Versions of the API audience: create, update, delete.
    let (status, history) = request(
        &server,
        reqwest::Method::GET,
        "/api/v1/workspaces/demo/config/history?kind=audience&id=pro-shoppers",
        None,
    )
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["versions"].as_array().map(Vec::len),
        Some(3),
        "{history}"
    );
    // Every webhook delivery of an audience event names the change it announces.
    wait_until("the webhook receiving the exits", || {
        let delivered = receiver.events.lock();
        (delivered
            .iter()
            .filter(|e| {
                e["event"] == "Audience Exited" && e["properties"]["audience_key"] == "pro-shoppers"
            })
            .count()
            >= 4)
            .then_some(())
    })
    .await;
    let delivered = receiver.events.lock().clone();
    assert!(
        delivered
            .iter()
            .all(|e| e["context"]["audience"]["id"].is_string()),
        "{delivered:#?}"
    );
    assert!(delivered.iter().any(|e| e["event"] == "Audience Exited"));
    let verify = server.verify();
    assert!(verify.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_edge_passing_at_midnight_makes_members_exit() {
    let library = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|path| std::path::Path::new(path).exists())
    .expect("libfaketime (scripts/install-test-deps.sh installs it)");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = r#"
[[workspaces.audiences]]
id = "ordered-today"
name = "Ordered today"
condition = { event = "Order Completed", within_days = 1 }
"#;
    // The server's clock starts 8 s before midnight UTC and runs from there.
    let server = TestServer::start_with_env(
        dir,
        data,
        extra,
        &[
            ("LD_PRELOAD", library),
            ("FAKETIME", "@2026-03-01 23:59:52"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("TZ", "UTC"),
        ],
    );
    let (status, body) = post(
        &server,
        "/v1/track",
        &json!({"userId": "night-owl", "event": "Order Completed", "timestamp": "2026-03-01T23:59:55Z"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_until("the entry", || {
        (count(
            &audience_events(&server),
            "Audience Entered",
            "ordered-today",
            "night-owl",
        ) == 1)
            .then_some(())
    })
    .await;
    let events = wait_until("the exit after midnight", || {
        let events = audience_events(&server);
        (count(&events, "Audience Exited", "ordered-today", "night-owl") == 1).then_some(events)
    })
    .await;
    let exited = events.iter().find(|e| e.0 == "Audience Exited").unwrap();
    assert_eq!(exited.3["context"]["audience"]["reason"], "window");
    assert!(
        exited.3["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2026-03-02T00:00:0"),
        "{}",
        exited.3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_follows_the_backfill_updates_and_deletes() {
    let server = TestServer::start("");
    for (user, plan) in [("c1", "pro"), ("c2", "pro"), ("c3", "free")] {
        identify(&server, json!({ "userId": user }), json!({ "plan": plan })).await;
    }
    // Unify applies behind collect: the backfill then finds all three profiles.
    let deadline = Instant::now() + WAIT;
    for user in ["c1", "c2", "c3"] {
        let path = format!("/api/v1/workspaces/demo/profiles/user_id:{user}");
        while admin_get(&server, &path).await.0 != 200 {
            assert!(Instant::now() < deadline, "no profile {user}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let url = server.url("");
    let api = ["--url", &url, "--token", ADMIN_TOKEN, "--workspace", "demo"];
    let with_api = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(api.iter())
            .map(|arg| arg.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli_json(&args)
    };

    // Created from a TOML file: the command returns once the backfill is done.
    let created_file = server.dir.path().join("pro.toml");
    std::fs::write(
        &created_file,
        "id = \"pro\"\nname = \"Pro plan\"\ncondition = { trait = \"plan\", op = \"eq\", value = \"pro\" }\n",
    )
    .unwrap();
    let created = run(with_api(&[
        "audiences",
        "create",
        "--file",
        created_file.to_str().unwrap(),
    ]));
    assert_eq!(created["status"], "live", "{created}");
    assert_eq!(created["size"], 2, "{created}");

    // Updated from a JSON patch: the new condition replaces the tree, re-evaluated.
    let patch_file = server.dir.path().join("patch.json");
    std::fs::write(
        &patch_file,
        json!({"condition": {"trait": "plan", "op": "in", "value": ["pro", "free"]}}).to_string(),
    )
    .unwrap();
    let updated = run(with_api(&[
        "audiences",
        "update",
        "pro",
        "--file",
        patch_file.to_str().unwrap(),
    ]));
    assert_eq!(updated["status"], "live", "{updated}");
    assert_eq!(updated["size"], 3, "{updated}");
    assert_eq!(updated["condition"]["op"], "in", "{updated}");

    // Deleted: gone, its members exit.
    let deleted = run(with_api(&["audiences", "delete", "pro"]));
    assert_eq!(deleted, json!({"deleted": "pro"}));
    let (status, _) = admin_get(&server, "/api/v1/workspaces/demo/audiences/pro").await;
    assert_eq!(status, 404);
    wait_until("c1 exits", || {
        (count(&audience_events(&server), "Audience Exited", "pro", "c1") == 1).then_some(())
    })
    .await;
}
