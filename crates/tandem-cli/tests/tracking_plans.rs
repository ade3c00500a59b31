//! Tracking plans through the real binary: each mode end to end (allow, flag, block, quarantine
//! with release surviving a restart), inference from sent events, and refused plans.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PLANS: &str = "/api/v1/workspaces/demo/tracking-plans";

/// The plan every test starts from: `Order Completed` needs a string `order_id` and a
/// non-negative `total`.
fn order_plan(id: &str, mode: &str) -> Value {
    json!({
        "id": id,
        "name": format!("Orders ({mode})"),
        "sources": ["web"],
        "mode": mode,
        "events": {
            "Order Completed": {
                "type": "object",
                "required": ["order_id", "total"],
                "properties": {
                    "order_id": {"type": "string"},
                    "total": {"type": "number", "minimum": 0}
                }
            }
        }
    })
}

fn order(message_id: &str, user: &str, properties: Value) -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": user, "messageId": message_id, "properties": properties})
}

async fn create_plan(server: &TestServer, plan: &Value) {
    let (status, body) = admin_post(server, PLANS, plan).await;
    assert_eq!(status, 201, "{body}");
}

/// Runs the CLI and parses what it printed.
fn cli_json(args: &[&str]) -> Value {
    let output = run_cli(args);
    assert!(
        output.status.success(),
        "tandem {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the CLI prints JSON")
}

async fn admin_patch(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .patch(server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn metrics(server: &TestServer) -> String {
    client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The metric line naming every one of `labels`, and its value.
fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

fn logged(server: &TestServer, message_id: &str) -> Vec<Value> {
    by_message_id(&server.events(), message_id)
        .into_iter()
        .cloned()
        .collect()
}

/// Polls until unify has the profile of `user` with at least `events` events.
async fn wait_for_profile(server: &TestServer, user: &str, events: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, view) = admin_get(
            server,
            &format!("/api/v1/workspaces/demo/profiles/user_id:{user}"),
        )
        .await;
        if status == 200 && view["metadata"]["events"].as_u64() >= Some(events) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "no profile of {user} with {events} events: {status} {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const CONFIG_PLAN: &str = r#"
[[workspaces.tracking_plans]]
id = "orders"
name = "Orders"
sources = ["web"]
mode = "allow"

[workspaces.tracking_plans.events."Order Completed"]
type = "object"
required = ["order_id", "total"]
properties.order_id.type = "string"
properties.total = { type = "number", minimum = 0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_mode_stores_the_event_and_counts_its_violation() {
    let mut server = TestServer::start(CONFIG_PLAN);
    let (status, answer) = post(
        &server,
        "/v1/track",
        &order("allow-1", "ann", json!({"order_id": "o1", "total": "12"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"success": true}),
        "allow mode says nothing to the client"
    );
    let (status, _) = post(
        &server,
        "/v1/track",
        &order("allow-2", "ann", json!({"order_id": "o2", "total": 3})),
    )
    .await;
    assert_eq!(status, 200);
    let stored = logged(&server, "allow-1");
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0]["context"].get("violations").is_none(),
        "allow does not annotate"
    );
    assert_eq!(logged(&server, "allow-2").len(), 1);

    let (status, report) = admin_get(&server, &format!("{PLANS}/orders/violations")).await;
    assert_eq!(status, 200, "{report}");
    let counters = report["violations"].as_array().unwrap();
    assert_eq!(counters.len(), 1, "{report}");
    assert_eq!(counters[0]["field"], "/properties/total");
    assert_eq!(counters[0]["rule"], "type");
    assert_eq!(counters[0]["source"], "web");
    assert_eq!(counters[0]["event"], "Order Completed");
    assert_eq!(counters[0]["count"], 1);
    assert_eq!(counters[0]["samples"][0]["messageId"], "allow-1");
    assert_eq!(report["totals"]["allowed"], 1);
    let text = metrics(&server).await;
    assert_eq!(
        metric_value(
            &text,
            "tandem_tracking_plan_violations_total",
            &[
                "mode=\"allow\"",
                "source=\"web\"",
                "event=\"Order Completed\""
            ]
        ),
        Some(1.0),
        "{text}"
    );

    // The plan is the config file's: read-only through the API.
    let (status, body) = admin_patch(
        &server,
        &format!("{PLANS}/orders"),
        &json!({"mode": "block"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (_, listed) = admin_get(&server, PLANS).await;
    assert_eq!(listed["tracking_plans"][0]["managed_by"], "config");

    // Counters survive a restart.
    server.restart();
    let (_, report) = admin_get(&server, &format!("{PLANS}/orders/violations")).await;
    assert_eq!(report["violations"][0]["count"], 1, "{report}");
    assert_eq!(report["totals"]["allowed"], 1);
    post(
        &server,
        "/v1/track",
        &order("allow-3", "ann", json!({"order_id": "o3", "total": "x"})),
    )
    .await;
    let (_, report) = admin_get(&server, &format!("{PLANS}/orders/violations")).await;
    assert_eq!(report["violations"][0]["count"], 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_mode_stores_the_event_with_its_violations() {
    let server = TestServer::start("");
    create_plan(&server, &order_plan("orders", "flag")).await;
    let (status, answer) = post(
        &server,
        "/v1/batch",
        &json!({"batch": [
            order("flag-1", "bea", json!({"total": -5})),
            order("flag-2", "bea", json!({"order_id": "o2", "total": 5})),
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let flagged = logged(&server, "flag-1");
    assert_eq!(flagged.len(), 1);
    let mut violations: Vec<(String, String)> = flagged[0]["context"]["violations"]
        .as_array()
        .expect("context.violations on a flagged event")
        .iter()
        .map(|violation| {
            assert!(violation["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty()));
            (
                violation["field"].as_str().unwrap().to_string(),
                violation["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    violations.sort();
    assert_eq!(
        violations,
        vec![
            ("/properties/order_id".to_string(), "required".to_string()),
            ("/properties/total".to_string(), "minimum".to_string()),
        ]
    );
    // The rest of the event is as sent (and enriched).
    assert_eq!(flagged[0]["properties"]["total"], -5);
    assert_eq!(flagged[0]["userId"], "bea");
    assert_eq!(flagged[0]["event"], "Order Completed");
    let clean = logged(&server, "flag-2");
    assert!(clean[0]["context"].get("violations").is_none());
    let (_, report) = admin_get(&server, &format!("{PLANS}/orders/violations")).await;
    assert_eq!(report["totals"]["flagged"], 1, "{report}");
    assert_eq!(report["violations"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_mode_drops_the_event_and_counts_it() {
    let server = TestServer::start("");
    create_plan(&server, &order_plan("orders", "block")).await;
    let (status, answer) = post(
        &server,
        "/v1/batch",
        &json!({"batch": [
            order("block-ok", "cy", json!({"order_id": "o1", "total": 1})),
            order("block-bad", "cy", json!({"order_id": 7, "total": 1})),
        ]}),
    )
    .await;
    assert_eq!(
        status, 200,
        "Segment answers 200 to blocked events: {answer}"
    );
    assert_eq!(answer["success"], true);
    assert_eq!(
        answer["tracking_plan"]["blocked"],
        json!([{"index": 1, "messageId": "block-bad"}])
    );
    assert!(
        logged(&server, "block-bad").is_empty(),
        "a blocked event is not stored"
    );
    assert_eq!(logged(&server, "block-ok").len(), 1);
    // Another source is not governed by this plan.
    let response = client()
        .post(server.url("/v1/track"))
        .header("authorization", basic(SECOND_WRITE_KEY))
        .json(&order("mobile-bad", "cy", json!({"order_id": 7})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(logged(&server, "mobile-bad").len(), 1);

    let (_, report) = admin_get(&server, &format!("{PLANS}/orders/violations")).await;
    assert_eq!(report["totals"]["blocked"], 1, "{report}");
    assert_eq!(report["violations"][0]["field"], "/properties/order_id");
    let text = metrics(&server).await;
    assert_eq!(
        metric_value(
            &text,
            "tandem_tracking_plan_events_blocked_total",
            &["source=\"web\"", "event=\"Order Completed\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "tandem_tracking_plan_violations_total",
            &["mode=\"block\""]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_holds_then_releases_once_across_restarts() {
    let mut server = TestServer::start("");
    create_plan(&server, &order_plan("orders", "quarantine")).await;
    let (status, answer) = post(
        &server,
        "/v1/batch",
        &json!({"batch": [
            order("q-ok", "dee", json!({"order_id": "o1", "total": 1})),
            order("q-held", "quinn", json!({"order_id": "o2"})),
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["tracking_plan"]["quarantined"],
        json!([{"index": 1, "messageId": "q-held"}])
    );
    // A retry of the same request quarantines (and counts) nothing twice.
    let (status, _) = post(
        &server,
        "/v1/track",
        &order("q-held", "quinn", json!({"order_id": "o2"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, report) = admin_get(&server, &format!("{PLANS}/orders/violations")).await;
    assert_eq!(report["totals"]["quarantined"], 1, "{report}");
    assert_eq!(report["violations"][0]["count"], 1, "{report}");
    assert!(logged(&server, "q-held").is_empty());
    assert_eq!(logged(&server, "q-ok").len(), 1);

    let (status, listed) = admin_get(
        &server,
        "/api/v1/workspaces/demo/quarantine?event=Order%20Completed&source=web",
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["messageId"], "q-held");
    let id = entries[0]["id"].as_u64().unwrap();
    let (_, other_source) =
        admin_get(&server, "/api/v1/workspaces/demo/quarantine?source=mobile").await;
    assert_eq!(other_source["entries"], json!([]));
    let (status, entry) =
        admin_get(&server, &format!("/api/v1/workspaces/demo/quarantine/{id}")).await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["status"], "pending");
    assert_eq!(entry["violations"][0]["field"], "/properties/total");
    assert_eq!(entry["violations"][0]["rule"], "required");
    assert_eq!(entry["event"]["properties"]["order_id"], "o2");

    // Released against the unchanged plan, it still violates and stays.
    let (status, report) = admin_post(
        &server,
        "/api/v1/workspaces/demo/quarantine/release",
        &json!({"all": true}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["released"], 0);
    assert_eq!(report["still_violating"][0]["id"], id);

    // Durable: it survives kill -9.
    server.restart_after_kill();
    let (_, listed) = admin_get(&server, "/api/v1/workspaces/demo/quarantine").await;
    assert_eq!(listed["entries"].as_array().unwrap().len(), 1, "{listed}");
    let (status, _) = admin_get(&server, "/api/v1/workspaces/demo/profiles/user_id:quinn").await;
    assert_eq!(status, 404, "a quarantined event reaches no profile");

    // Fix the plan (total optional), release: it reaches the log and the profile.
    let (status, patched) = admin_patch(
        &server,
        &format!("{PLANS}/orders"),
        &json!({"events": {"Order Completed": {"required": ["order_id"]}}}),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["version"], 2);
    let (status, report) = admin_post(
        &server,
        "/api/v1/workspaces/demo/quarantine/release",
        &json!({"event": "Order Completed"}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["released"], 1, "{report}");
    assert_eq!(logged(&server, "q-held").len(), 1);
    wait_for_profile(&server, "quinn", 1).await;
    let (_, entry) = admin_get(&server, &format!("/api/v1/workspaces/demo/quarantine/{id}")).await;
    assert_eq!(entry["status"], "released");

    // Never twice: not again now, nor after a restart.
    let (_, again) = admin_post(
        &server,
        "/api/v1/workspaces/demo/quarantine/release",
        &json!({"all": true}),
    )
    .await;
    assert_eq!(again["released"], 0, "{again}");
    server.restart();
    let (_, listed) = admin_get(&server, "/api/v1/workspaces/demo/quarantine").await;
    assert_eq!(listed["entries"], json!([]), "{listed}");
    let (_, again) = admin_post(
        &server,
        "/api/v1/workspaces/demo/quarantine/release",
        &json!({"ids": [id]}),
    )
    .await;
    assert_eq!(again["released"], 0, "{again}");
    assert_eq!(logged(&server, "q-held").len(), 1);
    // Releases are counted (flushed at the clean restart).
    let (_, report) = admin_get(&server, &format!("{PLANS}/orders/violations")).await;
    assert_eq!(report["totals"]["released"], 1, "{report}");

    // Discard: another held event is dropped for good and audited.
    post(
        &server,
        "/v1/track",
        &order("q-discard", "quinn", json!({"total": 1})),
    )
    .await;
    // Through the CLI, as an operator would.
    let base = server.url("");
    let listed = cli_json(&[
        "plans",
        "quarantine",
        "list",
        "--url",
        &base,
        "--token",
        ADMIN_TOKEN,
        "--workspace",
        "demo",
    ]);
    assert_eq!(listed["entries"][0]["messageId"], "q-discard", "{listed}");
    let discarded = cli_json(&[
        "plans",
        "quarantine",
        "discard",
        "--source",
        "web",
        "--url",
        &base,
        "--token",
        ADMIN_TOKEN,
        "--workspace",
        "demo",
    ]);
    assert_eq!(discarded["discarded"], 1, "{discarded}");
    assert!(logged(&server, "q-discard").is_empty());
    let (_, audit) = admin_get(&server, "/api/v1/audit?limit=1000").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .collect();
    for action in [
        "tracking_plan.create",
        "tracking_plan.update",
        "quarantine.release",
        "quarantine.discard",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marketer_releases_but_cannot_force_or_change_plans() {
    let server = TestServer::start("");
    create_plan(&server, &order_plan("orders", "quarantine")).await;
    post(
        &server,
        "/v1/track",
        &order("m-held", "mo", json!({"order_id": "o"})),
    )
    .await;
    let (status, token) = admin_post(
        &server,
        "/api/v1/workspaces/demo/tokens",
        &json!({"name": "marketer", "role": "marketer"}),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    let token = token["token"].as_str().unwrap().to_string();
    let as_marketer = |path: &str, body: Value| {
        let request = client()
            .post(server.url(path))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = as_marketer(
        "/api/v1/workspaces/demo/quarantine/release",
        json!({"all": true, "force": true}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ManageTrackingPlans"));
    let (status, body) = as_marketer(PLANS, order_plan("other", "block")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = as_marketer(
        "/api/v1/workspaces/demo/quarantine/release",
        json!({"all": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"], 0, "still violating: {body}");
    // The organization admin may force it through; it is stored with its violations.
    let (status, body) = admin_post(
        &server,
        "/api/v1/workspaces/demo/quarantine/release",
        &json!({"all": true, "force": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"], 1);
    let stored = logged(&server, "m-held");
    assert_eq!(
        stored[0]["context"]["violations"][0]["field"],
        "/properties/total"
    );
}

const CURRENCIES: [&str; 2] = ["EUR", "USD"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_builds_a_draft_from_sent_events() {
    let server = TestServer::start("");
    let mut batch = Vec::new();
    for index in 0..12 {
        let mut properties = json!({"order_id": format!("o{index}"), "total": index, "currency": CURRENCIES[index % 2]});
        if index % 3 == 0 {
            properties["coupon"] = json!(if index % 2 == 0 {
                json!("SAVE")
            } else {
                Value::Null
            });
        }
        batch.push(order(
            &format!("inf-{index}"),
            &format!("u{index}"),
            properties,
        ));
    }
    batch.push(json!({"type": "identify", "userId": "u1", "messageId": "inf-id-1", "traits": {"email": "u1@example.test", "tier": "gold"}}));
    batch.push(json!({"type": "identify", "userId": "u2", "messageId": "inf-id-2", "traits": {"email": "u2@example.test", "tier": "gold"}}));
    let (status, _) = post(&server, "/v1/batch", &json!({"batch": batch})).await;
    assert_eq!(status, 200);

    let (status, draft) = admin_post(
        &server,
        &format!("{PLANS}/infer"),
        &json!({"source": "web", "events": 100}),
    )
    .await;
    assert_eq!(status, 200, "{draft}");
    assert_eq!(draft["events_read"], 14);
    assert_eq!(draft["saved"], false);
    let order_schema = &draft["plan"]["events"]["Order Completed"];
    assert_eq!(
        order_schema["required"],
        json!(["currency", "order_id", "total"]),
        "{draft}"
    );
    assert_eq!(order_schema["properties"]["total"]["type"], "integer");
    assert_eq!(
        order_schema["properties"]["currency"]["enum"],
        json!(["EUR", "USD"])
    );
    assert_eq!(
        order_schema["properties"]["coupon"]["type"],
        json!(["null", "string"])
    );
    assert!(order_schema["properties"]["order_id"].get("enum").is_none());
    let traits = &draft["plan"]["identify_traits"];
    assert_eq!(traits["required"], json!(["email", "tier"]));
    assert_eq!(traits["properties"]["tier"]["enum"], json!(["gold"]));
    assert_eq!(draft["plan"]["sources"], json!(["web"]));

    // Saved, it is a draft: listed, not enforced.
    let (status, saved) = admin_post(
        &server,
        &format!("{PLANS}/infer"),
        &json!({"source": "web", "events": 100, "save": true, "id": "web-draft"}),
    )
    .await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["plan"]["draft"], true);
    assert_eq!(saved["plan"]["enforced"], false);
    post(
        &server,
        "/v1/track",
        &order("inf-after", "u1", json!({"total": "not a number"})),
    )
    .await;
    assert_eq!(logged(&server, "inf-after").len(), 1);
    let listed = cli_json(&[
        "plans",
        "list",
        "--url",
        &server.url(""),
        "--token",
        ADMIN_TOKEN,
        "--workspace",
        "demo",
    ]);
    assert_eq!(listed["tracking_plans"][0]["id"], "web-draft", "{listed}");
    let (_, report) = admin_get(&server, &format!("{PLANS}/web-draft/violations")).await;
    assert_eq!(
        report["violations"],
        json!([]),
        "a draft counts nothing: {report}"
    );
    // Once enforced (IT reviewed it), the same event is a violation.
    let (status, body) = admin_patch(
        &server,
        &format!("{PLANS}/web-draft"),
        &json!({"draft": false, "mode": "block"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, answer) = post(
        &server,
        "/v1/track",
        &order("inf-blocked", "u1", json!({"total": "not a number"})),
    )
    .await;
    assert_eq!(
        answer["tracking_plan"]["blocked"][0]["messageId"], "inf-blocked",
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plans_are_refused() {
    let server = TestServer::start("");
    let mut bad = order_plan("bad", "block");
    bad["events"]["Signed Up"] =
        json!({"type": "object", "properties": {"plan": {"type": "strng"}}});
    let (status, body) = admin_post(&server, PLANS, &bad).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`Signed Up`"), "{message}");
    assert!(
        message.contains("strng"),
        "the schema error is named: {message}"
    );
    let field = body["error"]["details"]["problems"][0]["field"]
        .as_str()
        .unwrap();
    assert!(field.ends_with("events.Signed Up"), "{field}");
    let (_, listed) = admin_get(&server, PLANS).await;
    assert_eq!(listed["tracking_plans"], json!([]));

    let (status, body) = admin_post(
        &server,
        PLANS,
        &json!({"id": "x", "name": "X", "sources": ["nope"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));
    let (status, body) = admin_post(
        &server,
        PLANS,
        &json!({"id": "x", "name": "X", "mode": "maybe"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    create_plan(&server, &order_plan("orders", "allow")).await;
    let (status, body) = admin_post(&server, PLANS, &order_plan("orders", "allow")).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = admin_post(&server, PLANS, &order_plan("overlap", "block")).await;
    assert_eq!(status, 409, "one plan per source: {body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("orders"));
    let (status, body) = admin_patch(
        &server,
        &format!("{PLANS}/orders"),
        &json!({"events": {"Order Completed": {"type": 12}}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, plan) = admin_get(&server, &format!("{PLANS}/orders")).await;
    assert_eq!(plan["version"], 1, "a refused change changes nothing");
}
