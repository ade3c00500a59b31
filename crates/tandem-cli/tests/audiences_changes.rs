//! Audiences and the personalization policy under `change_approval`, through the real binary:
//! a marketer's new audience and policy become change requests (202) that apply nothing; the
//! audience's dry run previews its size over the current profiles; the admin approves, the
//! audience is backfilled (the profile enters it) and the policy answers at once; both are
//! versioned in the history; a marketer's delete is a change request too. In a workspace that
//! overrides the policy (not required) the marketer's audience applies at once.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FREE_WRITE_KEY: &str = "free-write-key-0123456789";
const WAIT: Duration = Duration::from_secs(30);

const EXTRA: &str = r#"
[organization.policies.change_approval]
value = { required = true, exempt_roles = ["org_admin"] }
overridable = true

[[workspaces]]
id = "free"
name = "Free"
[workspaces.policies]
change_approval = { required = false, exempt_roles = [] }
[[workspaces.sources]]
id = "free-web"
name = "Free website"
owner = "web-team@example.test"
write_key = "free-write-key-0123456789"
"#;

fn audience(id: &str) -> Value {
    json!({"id": id, "name": "Pro plan", "owner": "crm@example.test",
           "condition": {"trait": "plan", "op": "eq", "value": "pro"}})
}

async fn identify(server: &TestServer, write_key: &str, user: &str) {
    let response = client()
        .post(server.url("/v1/identify"))
        .header("authorization", basic(write_key))
        .json(&json!({"userId": user, "traits": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// GETs `path` as the admin until `done` holds.
async fn until(server: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = admin_get(server, path).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never reached: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_and_personalization_changes_go_through_change_requests() {
    let server = TestServer::start(EXTRA);
    let ws = "/api/v1/workspaces/demo";
    let marketer = token(&server, "marketer", Some("demo")).await;
    identify(&server, WRITE_KEY, "pro-1").await;
    until(&server, &format!("{ws}/profiles/user_id:pro-1"), |_| true).await;

    // 1. The marketer's audience: a change request, nothing applied.
    let (status, request) = call(
        &server,
        &marketer,
        Method::POST,
        &format!("{ws}/audiences"),
        Some(audience("pro")),
    )
    .await;
    assert_eq!(status, 202, "{request}");
    assert_eq!(request["status"], "open");
    let audience_request = request["id"].as_str().unwrap().to_string();
    let (status, _) = admin_get(&server, &format!("{ws}/audiences/pro")).await;
    assert_eq!(status, 404, "not applied before approval");

    // Its dry run previews the proposed audience over the current profiles.
    let (status, shown) = call(
        &server,
        &marketer,
        Method::GET,
        &format!("{ws}/change-requests/{audience_request}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    let impact = &shown["impact"][0]["impact"];
    assert_eq!(impact["proposed"]["size"], 1, "{shown}");
    assert_eq!(
        impact["current_size"],
        Value::Null,
        "a new audience: {shown}"
    );

    // 2. The marketer's personalization policy: a change request too; the policy is unchanged.
    let (status, request) = call(
        &server,
        &marketer,
        Method::PUT,
        &format!("{ws}/personalization"),
        Some(json!({"traits": ["plan"], "audiences": ["pro"]})),
    )
    .await;
    assert_eq!(
        status, 400,
        "names an audience that does not exist yet: {request}"
    );
    let (status, request) = call(
        &server,
        &marketer,
        Method::PUT,
        &format!("{ws}/personalization"),
        Some(json!({"traits": ["plan"]})),
    )
    .await;
    assert_eq!(status, 202, "{request}");
    let policy_request = request["id"].as_str().unwrap().to_string();
    assert_eq!(
        request["operations"][0]["kind"], "personalization",
        "{request}"
    );
    let (_, policy) = admin_get(&server, &format!("{ws}/personalization")).await;
    assert_eq!(policy["traits"], json!([]), "{policy}");

    // 3. The marketer cannot approve; the admin approves both: applied.
    let (status, _) = call(
        &server,
        &marketer,
        Method::POST,
        &format!("{ws}/change-requests/{audience_request}/approve"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);
    for id in [&audience_request, &policy_request] {
        let (status, approved) = call(
            &server,
            ADMIN_TOKEN,
            Method::POST,
            &format!("{ws}/change-requests/{id}/approve"),
            Some(json!({"comment": "ok"})),
        )
        .await;
        assert_eq!(status, 200, "{approved}");
        assert_eq!(approved["status"], "applied", "{approved}");
    }
    let shown = until(&server, &format!("{ws}/audiences/pro"), |a| {
        a["status"] == "live" && a["size"] == 1
    })
    .await;
    assert_eq!(shown["managed_by"], "api", "{shown}");
    let (_, policy) = admin_get(&server, &format!("{ws}/personalization")).await;
    assert_eq!(policy["traits"], json!(["plan"]), "{policy}");
    assert_eq!(policy["managed_by"], "api");

    // Both are versioned.
    for (kind, id) in [("audience", "pro"), ("personalization", "demo")] {
        let (status, history) =
            admin_get(&server, &format!("{ws}/config/history?kind={kind}&id={id}")).await;
        assert_eq!(status, 200, "{kind}: {history}");
        assert_eq!(
            history["versions"].as_array().map(Vec::len),
            Some(1),
            "{kind}: {history}"
        );
    }

    // The export carries the audience and the policy, and importing it changes nothing; an
    // export whose policy shows one more trait is one personalization operation.
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
    assert!(text.contains("[[workspaces.audiences]]"), "{text}");
    assert!(text.contains("[workspaces.personalization]"), "{text}");
    let import = |body: String| {
        let url = server.url(&format!("{ws}/config/import"));
        let marketer = marketer.clone();
        async move {
            let response = client()
                .post(url)
                .bearer_auth(marketer)
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
    let (status, body) = import(text.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operations"], 0, "{body}");
    let mut edited = tandem_config::parse(&text, "exported").unwrap();
    let demo = edited
        .workspaces
        .iter_mut()
        .find(|w| w.id == "demo")
        .unwrap();
    demo.personalization
        .as_mut()
        .unwrap()
        .traits
        .push("ltv".into());
    let (status, request) = import(tandem_config::to_toml(&edited)).await;
    assert_eq!(status, 202, "{request}");
    let operations = request["operations"].as_array().unwrap();
    assert_eq!(operations.len(), 1, "{request}");
    assert_eq!(operations[0]["kind"], "personalization");
    assert_eq!(operations[0]["action"], "update");

    // 4. A marketer's delete is a change request as well.
    let (status, request) = call(
        &server,
        &marketer,
        Method::DELETE,
        &format!("{ws}/audiences/pro"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{request}");
    let (status, _) = admin_get(&server, &format!("{ws}/audiences/pro")).await;
    assert_eq!(status, 200, "still there before approval");

    // 5. Where the workspace overrides the policy, the marketer's audience applies at once.
    let free_marketer = token(&server, "marketer", Some("free")).await;
    identify(&server, FREE_WRITE_KEY, "pro-2").await;
    let (status, created) = call(
        &server,
        &free_marketer,
        Method::POST,
        "/api/v1/workspaces/free/audiences",
        Some(audience("pro")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    until(&server, "/api/v1/workspaces/free/audiences/pro", |a| {
        a["status"] == "live" && a["size"] == 1
    })
    .await;
}
