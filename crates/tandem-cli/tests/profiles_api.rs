//! Unify through the real binary: events sent over the tracking API become profiles, readable
//! through the Segment-compatible Profile API with a workspace access token and through the
//! native routes; explain and split work end to end and survive a restart.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn wait_applied(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = admin_get(server, "/api/v1/workspaces/demo/unify").await;
        assert_eq!(status, 200, "{body}");
        if body["lag_records"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "unify did not catch up: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn profile_get(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    let response = client()
        .get(server.url(&format!("/v1/spaces/demo/collections/{path}")))
        .header("authorization", basic(token))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn send_journey(server: &TestServer) {
    let batch = json!({"batch": [
        {"type": "page", "anonymousId": "anon-laptop", "name": "Home", "messageId": "p1", "timestamp": "2026-11-01T10:00:00Z"},
        {"type": "track", "anonymousId": "anon-laptop", "event": "Viewed Product", "properties": {"sku": "A1"}, "messageId": "t1", "timestamp": "2026-11-01T10:01:00Z"},
        {"type": "identify", "anonymousId": "anon-laptop", "userId": "ada", "traits": {"email": "Ada@Example.org", "plan": "free", "name": "Ada"}, "messageId": "i1", "timestamp": "2026-11-01T10:02:00Z"},
        {"type": "track", "anonymousId": "anon-phone", "event": "Opened App", "messageId": "t2", "timestamp": "2026-11-02T08:00:00Z"},
        {"type": "identify", "anonymousId": "anon-phone", "traits": {"email": "ada@example.org"}, "messageId": "i2", "timestamp": "2026-11-02T08:01:00Z"},
        {"type": "identify", "userId": "ada", "traits": {"plan": "pro"}, "messageId": "i3", "timestamp": "2026-11-03T09:00:00Z"},
        {"type": "group", "userId": "ada", "groupId": "acme", "traits": {"name": "Acme Inc", "employees": 120}, "messageId": "g1", "timestamp": "2026-11-03T09:05:00Z"},
        {"type": "identify", "anonymousId": "anon-laptop", "userId": "bob", "messageId": "i4", "timestamp": "2026-11-04T09:00:00Z"}
    ]});
    let (status, body) = post(server, "/v1/batch", &batch).await;
    assert_eq!(status, 200, "{body}");
    wait_applied(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_api_serves_the_unified_profile() {
    let mut server = TestServer::start("");
    send_journey(&server).await;

    // No token, a wrong token: 401 with a JSON body.
    let response = client()
        .get(server.url("/v1/spaces/demo/collections/users/profiles/user_id:ada/traits"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        profile_get(
            &server,
            "tdm_pat_wrong",
            "users/profiles/user_id:ada/traits"
        )
        .await
        .0,
        401
    );

    let (status, created) = admin_post(
        &server,
        "/api/v1/workspaces/demo/access-tokens",
        &json!({"name": "support widget"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_string();

    // Traits: newest wins (plan = pro), the phone's email joined both devices.
    let (status, traits) = profile_get(&server, &token, "users/profiles/user_id:ada/traits").await;
    assert_eq!(status, 200, "{traits}");
    assert_eq!(traits["traits"]["plan"], "pro");
    assert_eq!(traits["traits"]["name"], "Ada");
    assert_eq!(traits["cursor"]["has_more"], false);
    let (_, by_phone) = profile_get(
        &server,
        &token,
        "users/profiles/anonymous_id:anon-phone/traits?include=plan",
    )
    .await;
    assert_eq!(
        by_phone["traits"],
        json!({"plan": "pro"}),
        "the phone resolves to the same person"
    );
    let (_, paged) =
        profile_get(&server, &token, "users/profiles/user_id:ada/traits?limit=1").await;
    assert_eq!(paged["traits"].as_object().unwrap().len(), 1);
    assert_eq!(paged["cursor"]["has_more"], true);
    let next = paged["cursor"]["next"].as_str().unwrap().to_string();
    let (_, page2) = profile_get(
        &server,
        &token,
        &format!("users/profiles/user_id:ada/traits?limit=1&next={next}"),
    )
    .await;
    assert_ne!(page2["traits"], paged["traits"]);
    let (_, verbose) = profile_get(
        &server,
        &token,
        "users/profiles/user_id:ada/traits?verbose=true&include=plan",
    )
    .await;
    assert_eq!(verbose["traits"]["plan"]["message_id"], "i3");

    // External ids: user id, both anonymous ids, the email; bob's claim on the laptop was refused.
    let (_, ids) = profile_get(
        &server,
        &token,
        "users/profiles/user_id:ada/external_ids?limit=20",
    )
    .await;
    let mut pairs: Vec<String> = ids["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["type"].as_str().unwrap(),
                i["id"].as_str().unwrap()
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            "anonymous_id:anon-laptop",
            "anonymous_id:anon-phone",
            "email:ada@example.org",
            "user_id:ada"
        ]
    );
    assert!(ids["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["collection"] == "users" && i["encoding"] == "none"));

    // Events: newest first, full Segment shape, paged with next.
    let (_, events) =
        profile_get(&server, &token, "users/profiles/user_id:ada/events?limit=2").await;
    let data = events["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["messageId"], "g1");
    assert_eq!(data[0]["source_id"], "web");
    let next = events["cursor"]["next"].as_str().unwrap().to_string();
    let (_, rest) = profile_get(
        &server,
        &token,
        &format!("users/profiles/user_id:ada/events?limit=200&next={next}"),
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 5, "7 events in all");
    assert_eq!(rest["cursor"]["has_more"], false);

    let (_, metadata) = profile_get(&server, &token, "users/profiles/user_id:ada/metadata").await;
    assert_eq!(
        metadata["metadata"]["first_message_at"],
        "2026-11-01T10:00:00.000Z"
    );
    let (_, links) = profile_get(&server, &token, "users/profiles/user_id:ada/links").await;
    assert_eq!(links["data"][0]["external_ids"][0]["id"], "acme");

    // Accounts.
    let (status, account) =
        profile_get(&server, &token, "accounts/profiles/group_id:acme/traits").await;
    assert_eq!(status, 200, "{account}");
    assert_eq!(account["traits"]["employees"], 120);
    let (_, members) = profile_get(&server, &token, "accounts/profiles/group_id:acme/links").await;
    assert_eq!(members["data"].as_array().unwrap().len(), 1);

    // Unknown profile, bad limit, bad id: clear 4xx.
    assert_eq!(
        profile_get(&server, &token, "users/profiles/user_id:nobody/traits")
            .await
            .0,
        404
    );
    assert_eq!(
        profile_get(
            &server,
            &token,
            "users/profiles/user_id:ada/traits?limit=500"
        )
        .await
        .0,
        400
    );
    assert_eq!(
        profile_get(&server, &token, "users/profiles/no-colon/traits")
            .await
            .0,
        400
    );

    // Bob is his own profile; the refusal says why the laptop did not join him.
    let (_, refusals) = admin_get(&server, "/api/v1/workspaces/demo/identity/refusals").await;
    assert_eq!(refusals["refusals"][0]["rule"], "limit user_id: 1");
    assert_eq!(refusals["refusals"][0]["event"]["message_id"], "i4");

    // Explain: why is the phone Ada?
    let (status, why) = admin_get(
        &server,
        "/api/v1/workspaces/demo/identity/explain?a=anonymous_id:anon-phone&b=user_id:ada",
    )
    .await;
    assert_eq!(status, 200, "{why}");
    assert_eq!(why["same_profile"], true);
    let message_ids: Vec<&str> = why["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(message_ids, ["i2", "i1", "i1"], "{why}");

    // Revoked tokens stop working.
    let id = created["id"].as_str().unwrap();
    let (status, _) = admin_post(
        &server,
        &format!("/api/v1/workspaces/demo/access-tokens/{id}/revoke"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        profile_get(&server, &token, "users/profiles/user_id:ada/traits")
            .await
            .0,
        401
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_undoes_a_merge_and_survives_restart() {
    let mut server = TestServer::start("");
    send_journey(&server).await;
    let (status, view) = admin_get(&server, "/api/v1/workspaces/demo/profiles/user_id:ada").await;
    assert_eq!(status, 200, "{view}");
    let profile = view["id"].as_str().unwrap().to_string();
    assert_eq!(view["metadata"]["events"], 7);

    let (status, split) = admin_post(
        &server,
        &format!("/api/v1/workspaces/demo/profiles/{profile}/split"),
        &json!({"identities": [{"type": "anonymous_id", "id": "anon-phone"}], "reason": "phone was a shared demo device"}),
    )
    .await;
    assert_eq!(status, 200, "{split}");
    assert_eq!(split["split"]["result"].as_array().unwrap().len(), 2);
    let (_, phone) = admin_get(
        &server,
        "/api/v1/workspaces/demo/profiles/anonymous_id:anon-phone",
    )
    .await;
    assert_ne!(phone["id"], view["id"]);
    let (_, why) = admin_get(
        &server,
        "/api/v1/workspaces/demo/identity/explain?a=anonymous_id:anon-phone&b=user_id:ada",
    )
    .await;
    assert_eq!(why["same_profile"], false);

    // Splitting every identifier, or a profile that does not exist: 400 / 404, nothing changes.
    let (status, body) = admin_post(
        &server,
        &format!("/api/v1/workspaces/demo/profiles/{profile}/split"),
        &json!({"identities": []}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = admin_post(
        &server,
        "/api/v1/workspaces/demo/profiles/prof_0000000000000001/split",
        &json!({"identities": [{"type": "user_id", "id": "x"}]}),
    )
    .await;
    assert_eq!(status, 404);

    server.restart();
    let (_, after) = admin_get(
        &server,
        "/api/v1/workspaces/demo/identity/explain?a=anonymous_id:anon-phone&b=user_id:ada",
    )
    .await;
    assert_eq!(
        after["same_profile"], false,
        "the split is kept across restarts"
    );
    let (_, splits) = admin_get(&server, "/api/v1/workspaces/demo/identity/splits").await;
    assert_eq!(
        splits["splits"][0]["reason"],
        "phone was a shared demo device"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_identifier_and_trait() {
    let mut server = TestServer::start("");
    send_journey(&server).await;
    let (status, found) = admin_get(
        &server,
        "/api/v1/workspaces/demo/profiles?identifier=email:ada@example.org",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(found["profiles"][0]["traits"]["plan"]["value"], "pro");
    let (_, found) = admin_get(
        &server,
        "/api/v1/workspaces/demo/profiles?trait=plan&value=pro",
    )
    .await;
    assert_eq!(found["profiles"].as_array().unwrap().len(), 1);
    let (_, none) = admin_get(
        &server,
        "/api/v1/workspaces/demo/profiles?identifier=email:nobody@example.org",
    )
    .await;
    assert_eq!(none["profiles"], json!([]));
    let (status, _) = admin_get(&server, "/api/v1/workspaces/demo/profiles").await;
    assert_eq!(status, 400);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_traits_update_as_events_arrive_and_rules_changes_rebuild() {
    let computed = r#"
[[workspaces.computed_traits]]
name = "orders"
function = "count"
event = "Order Completed"

[[workspaces.computed_traits]]
name = "eur_revenue"
function = "sum"
event = "Order Completed"
property = "revenue"
[[workspaces.computed_traits.where]]
property = "currency"
op = "eq"
value = "EUR"

[[workspaces.computed_traits]]
name = "favourite_category"
function = "most_frequent"
event = "Order Completed"
property = "category"
"#;
    let mut server = TestServer::start(computed);
    let order = |id: &str, user: &str, revenue: f64, currency: &str, category: &str| {
        json!({"type": "track", "userId": user, "event": "Order Completed", "messageId": id,
               "properties": {"revenue": revenue, "currency": currency, "category": category}})
    };
    let batch = json!({"batch": [
        order("o1", "ada", 10.0, "EUR", "books"),
        order("o2", "ada", 5.5, "EUR", "games"),
        order("o3", "ada", 99.0, "USD", "books"),
        {"type": "track", "anonymousId": "anon-1", "event": "Order Completed", "messageId": "o4",
         "properties": {"revenue": 1.0, "currency": "EUR", "category": "books"}},
    ]});
    assert_eq!(post(&server, "/v1/batch", &batch).await.0, 200);
    wait_applied(&server).await;
    let (_, view) = admin_get(&server, "/api/v1/workspaces/demo/profiles/user_id:ada").await;
    assert_eq!(
        view["computed_traits"],
        json!({"orders": 3, "eur_revenue": 15.5, "favourite_category": "books"})
    );

    // The anonymous buyer turns out to be Ada: the states merge.
    let identify =
        json!({"type": "identify", "userId": "ada", "anonymousId": "anon-1", "messageId": "i1"});
    assert_eq!(post(&server, "/v1/identify", &identify).await.0, 200);
    wait_applied(&server).await;
    let (_, created) = admin_post(
        &server,
        "/api/v1/workspaces/demo/access-tokens",
        &json!({"name": "t"}),
    )
    .await;
    let token = created["token"].as_str().unwrap();
    let (_, traits) = profile_get(
        &server,
        token,
        "users/profiles/user_id:ada/traits?include=orders,eur_revenue",
    )
    .await;
    assert_eq!(traits["traits"], json!({"orders": 4, "eur_revenue": 16.5}));

    // A new definition applies to history: the store is rebuilt from the log at start.
    server.stop();
    let config = server.config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[[workspaces.computed_traits]]\nname = \"largest_order\"\nfunction = \"max\"\nevent = \"Order Completed\"\nproperty = \"revenue\"\n")).unwrap();
    server.restart();
    wait_applied(&server).await;
    let (_, view) = admin_get(&server, "/api/v1/workspaces/demo/profiles/user_id:ada").await;
    assert_eq!(view["computed_traits"]["largest_order"], 99.0);
    assert_eq!(view["computed_traits"]["orders"], 4);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_from_the_log_gives_the_same_profiles() {
    let mut server = TestServer::start("");
    send_journey(&server).await;
    let (_, view) = admin_get(&server, "/api/v1/workspaces/demo/profiles/user_id:ada").await;
    let profile = view["id"].as_str().unwrap().to_string();
    let split =
        json!({"identities": [{"type": "anonymous_id", "id": "anon-phone"}], "reason": "test"});
    let (status, _) = admin_post(
        &server,
        &format!("/api/v1/workspaces/demo/profiles/{profile}/split"),
        &split,
    )
    .await;
    assert_eq!(status, 200);
    let (_, before) = admin_get(&server, "/api/v1/workspaces/demo/profiles/user_id:ada").await;
    server.stop();

    let output = run_cli(&[
        "rebuild",
        "--config",
        server.config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(report.contains("workspace demo: 9 events"), "{report}");
    assert!(report.contains("1 splits"), "{report}");

    server.restart();
    let (_, after) = admin_get(&server, "/api/v1/workspaces/demo/profiles/user_id:ada").await;
    assert_eq!(
        after, before,
        "replaying the log reproduces the profile exactly, split included"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_set_through_the_api_rebuild_profiles_online() {
    let mut server = TestServer::start("");
    send_journey(&server).await;
    let (status, current) = admin_get(&server, "/api/v1/workspaces/demo/unify/rules").await;
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["managed_by"], "api");
    assert_eq!(current["effective_identifiers"][0]["type"], "user_id");

    // Invalid rules: 400 naming each problem; nothing changes.
    let put = |body: Value| {
        let url = server.url("/api/v1/workspaces/demo/unify/rules");
        async move {
            let response = client()
                .put(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = put(json!({"identity": {"identifiers": [{"type": "email", "limit": 0}]}, "computed_traits": [{"name": "x", "function": "median"}]})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["details"]["problems"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{body}"
    );

    // Blocking the shared email's domain: the phone no longer joins Ada.
    let rules = json!({
        "identity": {"blocked_values": [".*@example\\.org"], "identifiers": [], "default_blocked_values": true},
        "computed_traits": [{"name": "events_tracked", "function": "count", "where": []}]
    });
    let (status, body) = put(rules.clone()).await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = admin_get(&server, "/api/v1/workspaces/demo/unify").await;
        if status["rebuild"].is_null()
            && status["rules_fingerprint"] == body["fingerprint"]
            && status["lag_records"] == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rebuild did not finish: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, why) = admin_get(
        &server,
        "/api/v1/workspaces/demo/identity/explain?a=anonymous_id:anon-phone&b=user_id:ada",
    )
    .await;
    assert_eq!(why["same_profile"], false, "{why}");
    let (_, ada) = admin_get(&server, "/api/v1/workspaces/demo/profiles/user_id:ada").await;
    assert_eq!(ada["computed_traits"]["events_tracked"], 1, "{ada}");

    // The same rules again: nothing to do. After a restart the API's rules still apply.
    assert_eq!(put(rules).await.0, 200);
    server.restart();
    wait_applied(&server).await;
    let (_, after) = admin_get(&server, "/api/v1/workspaces/demo/unify/rules").await;
    assert_eq!(after["fingerprint"], body["fingerprint"]);
    server.stop();

    // A workspace whose config declares rules refuses API changes.
    let mut declared = TestServer::start("[workspaces.identity]\nblocked_values = [\"x\"]\n");
    let response = client()
        .put(declared.url("/api/v1/workspaces/demo/unify/rules"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"identity": {}, "computed_traits": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    declared.stop();
}
