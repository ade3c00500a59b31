//! Policies set through the API, and tracking plans as reviewed changes, through the real binary.
//!
//! The config file declares `change_approval` (required for everyone but the admins,
//! overridable). Through the API, IT restricts the destination types the organization may use;
//! workspace `demo`'s admin widens the list for the market (an override: a versioned change);
//! the guardrail is then enforced on API-created destinations. Organization policies have a
//! history and roll back. A marketer proposes a tracking plan as a change request whose dry run
//! says what the plan would block among recent events; an admin approves it and it is enforced.
//! Export/import carries policies and plans; everything survives a restart.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const EXTRA: &str = r#"
[organization.policies.change_approval]
value = { required = true, exempt_roles = ["org_admin", "workspace_admin"] }
overridable = true
"#;

fn nats_destination(id: &str) -> Value {
    json!({"id": id, "name": "Bus", "type": "nats", "owner": "platform@example.test",
           "settings": {"servers": ["nats://127.0.0.1:4222"], "subject": "tandem.{type}"}})
}

fn effective<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|policy| policy["name"] == name)
        .unwrap_or_else(|| panic!("no policy {name} in {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_through_the_api_and_tracking_plans_as_reviewed_changes() {
    let mut server = TestServer::start(EXTRA);
    let ws = "/api/v1/workspaces/demo";
    let workspace_admin = token(&server, "workspace_admin", Some("demo")).await;
    let marketer = token(&server, "marketer", Some("demo")).await;

    // What the file declares is listed and read-only.
    let (status, listed) = call(&server, ADMIN_TOKEN, Method::GET, "/api/v1/policies", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["policies"][0]["name"], "change_approval");
    assert_eq!(listed["policies"][0]["declared_in"], "config");
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::PUT,
        "/api/v1/policies/change_approval",
        Some(json!({"value": false})),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // IT allows webhooks only; a bad value and a marketer are refused.
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::PUT,
        "/api/v1/policies/allowed_destination_types",
        Some(json!({"value": 3})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        &server,
        &marketer,
        Method::PUT,
        "/api/v1/policies/allowed_destination_types",
        Some(json!({"value": ["nats"]})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::PUT,
        "/api/v1/policies/allowed_destination_types",
        Some(json!({"value": ["webhook"], "overridable": true, "reason": "one tool per job"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["declared_in"].clone(), body["version"].clone()),
        (json!("api"), json!(1))
    );

    // The guardrail holds for API-created destinations.
    let (status, body) = admin_post(
        &server,
        &format!("{ws}/destinations"),
        &nats_destination("bus"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`nats` is not allowed"), "{body}");

    // The market's admin widens it for demo: an override, versioned like any change.
    let (status, body) = call(
        &server,
        &workspace_admin,
        Method::PUT,
        &format!("{ws}/policies/allowed_destination_types"),
        Some(json!({"value": "nats"})),
    )
    .await;
    assert_eq!(
        status, 400,
        "a string where the organization has a list: {body}"
    );
    let (status, body) = call(
        &server,
        &marketer,
        Method::PUT,
        &format!("{ws}/policies/allowed_destination_types"),
        Some(json!({"value": ["webhook", "nats"]})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        &server,
        &workspace_admin,
        Method::PUT,
        &format!("{ws}/policies/allowed_destination_types"),
        Some(json!({"value": ["webhook", "nats"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"]["source"], "workspace");
    assert_eq!(body["policy"]["declared_in"], "api");
    assert_eq!(body["policy"]["organization_value"], json!(["webhook"]));
    let (status, body) = admin_post(
        &server,
        &format!("{ws}/destinations"),
        &nats_destination("bus"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, history) = call(
        &server,
        ADMIN_TOKEN,
        Method::GET,
        &format!("{ws}/config/history?kind=policy"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["versions"][0]["id"], "allowed_destination_types");
    assert!(
        history["versions"][0]["by"]
            .as_str()
            .unwrap()
            .starts_with("token:"),
        "{history}"
    );

    // An organization change that would silently drop demo's override is refused.
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::PUT,
        "/api/v1/policies/allowed_destination_types",
        Some(json!({"value": ["webhook"], "overridable": false})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("demo"),
        "{body}"
    );

    // History and rollback of an organization policy.
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::PUT,
        "/api/v1/policies/allowed_destination_types",
        Some(json!({"value": ["webhook", "files"], "overridable": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::POST,
        "/api/v1/policies/allowed_destination_types/rollback",
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"]["version"], 3);
    assert_eq!(body["policy"]["value"], json!(["webhook"]));
    let (_, history) = call(
        &server,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/policies/allowed_destination_types/history",
        None,
    )
    .await;
    let reasons: Vec<&str> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|version| version["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["one tool per job", "", "rollback to version 1"]);

    // Recent events: two orders without a total, one with.
    let batch: Vec<Value> = (0..3)
        .map(|i| {
            let properties = if i == 0 {
                json!({"total": 10})
            } else {
                json!({})
            };
            json!({"type": "track", "event": "Order Completed", "userId": format!("u{i}"),
                   "messageId": format!("before-{i}"), "properties": properties})
        })
        .collect();
    let (status, body) = post(&server, "/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, 200, "{body}");

    // A marketer proposes a blocking tracking plan: a change request with its dry run.
    let plan = json!({"id": "web-plan", "name": "Web plan", "sources": ["web"], "mode": "block",
        "events": {"Order Completed": {"type": "object", "required": ["total"]}}});
    let (status, body) = call(
        &server,
        &marketer,
        Method::POST,
        &format!("{ws}/tracking-plans"),
        Some(plan.clone()),
    )
    .await;
    assert_eq!(
        status, 403,
        "plans are IT's guardrails; marketers propose them: {body}"
    );
    let (status, request) = call(
        &server,
        &marketer,
        Method::POST,
        &format!("{ws}/change-requests"),
        Some(
            json!({"title": "block orders without a total", "operations": [
            {"kind": "tracking_plan", "action": "create", "id": "web-plan", "value": plan}]}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{request}");
    let id = request["id"].as_str().unwrap().to_string();
    let (status, shown) = call(
        &server,
        &workspace_admin,
        Method::GET,
        &format!("{ws}/change-requests/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    let impact = &shown["impact"][0]["impact"]["proposed"];
    assert_eq!(impact["checked"], 3, "{shown}");
    assert_eq!(impact["violating"], 2, "{shown}");
    assert_eq!(impact["violating_outcome"], "blocked", "{shown}");
    assert_eq!(impact["violations"][0]["rule"], "required", "{shown}");
    let (status, body) = call(
        &server,
        &workspace_admin,
        Method::POST,
        &format!("{ws}/change-requests/{id}/approve"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "applied", "{body}");

    // Enforced: an order without a total is blocked now.
    let (status, body) = post(
        &server,
        "/v1/track",
        &json!({"event": "Order Completed", "userId": "u9", "messageId": "after-1", "properties": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["tracking_plan"]["blocked"][0]["messageId"], "after-1",
        "{body}"
    );
    let (_, history) = call(
        &server,
        ADMIN_TOKEN,
        Method::GET,
        &format!("{ws}/config/history?kind=tracking_plan&id=web-plan"),
        None,
    )
    .await;
    assert_eq!(
        history["versions"][0]["change_request"],
        json!(id),
        "{history}"
    );

    // An admin's own plan change applies at once (exempt) and is versioned too.
    let (status, body) = call(
        &server,
        ADMIN_TOKEN,
        Method::PATCH,
        &format!("{ws}/tracking-plans/web-plan"),
        Some(json!({"mode": "flag"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);

    // Export carries the override and the plan; importing it unchanged changes nothing.
    let response = client()
        .get(server.url(&format!("{ws}/config/export")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let exported = response.text().await.unwrap();
    assert!(exported.contains("allowed_destination_types"), "{exported}");
    assert!(exported.contains("web-plan"), "{exported}");
    let response = client()
        .post(server.url(&format!("{ws}/config/import")))
        .bearer_auth(ADMIN_TOKEN)
        .body(exported)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (status, body["operations"].clone()),
        (200, json!(0)),
        "{body}"
    );

    // Everything holds across a restart.
    server.restart();
    let (_, body) = call(
        &server,
        &marketer,
        Method::GET,
        &format!("{ws}/policy/effective"),
        None,
    )
    .await;
    let allowed = effective(&body, "allowed_destination_types");
    assert_eq!(allowed["value"], json!(["webhook", "nats"]), "{body}");
    assert_eq!(allowed["source"], "workspace");
    let (status, body) = call(
        &server,
        &workspace_admin,
        Method::DELETE,
        &format!("{ws}/policies/allowed_destination_types"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"]["source"], "organization");
    let (_, audit) = admin_get(&server, "/api/v1/audit?action=policy.rollback").await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
}
