//! Consent enforced on every route, through the real binary: a matrix of consent objects ×
//! connections needing categories, the profile's latest preferences for events without one,
//! the `consent_missing` policy for people without any, consent recorded through the API, the
//! explanation of a decision, and the personalization API's answer.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Connection id → the categories it needs.
const ROUTES: &[(&str, &[&str])] = &[
    ("none", &[]),
    ("necessary", &["necessary"]),
    ("analytics", &["analytics"]),
    ("marketing", &["marketing"]),
    ("both", &["analytics", "marketing"]),
];

fn config(receivers: &BTreeMap<&str, Receiver>) -> String {
    let mut extra = String::from(
        "\n[organization.policies.consent_missing]\nvalue = \"deny\"\noverridable = true\n",
    );
    for (id, categories) in ROUTES {
        let url = receivers[id].url();
        let categories: Vec<String> = categories.iter().map(|c| format!("\"{c}\"")).collect();
        extra += &format!(
            "\n[[workspaces.destinations]]\nid = \"{id}\"\nname = \"{id}\"\ntype = \"webhook\"\nowner = \"team@example.test\"\n[workspaces.destinations.settings]\nurl = \"{url}\"\nbatch = true\n\
             \n[[workspaces.connections]]\nid = \"{id}\"\nsources = [\"*\"]\ndestination = \"{id}\"\nconsent_categories = [{}]\n[workspaces.connections.delivery]\nbatch_age_ms = 20\n",
            categories.join(", ")
        );
    }
    extra
}

fn ids(receiver: &Receiver) -> BTreeSet<String> {
    receiver
        .events
        .lock()
        .iter()
        .filter_map(|event| event["messageId"].as_str().map(str::to_string))
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The consent objects of the matrix: `None` = the event has none.
fn consents() -> Vec<(&'static str, Option<Value>)> {
    vec![
        ("absent", None),
        ("empty", Some(json!({}))),
        ("analytics", Some(json!({"analytics": true}))),
        (
            "marketing",
            Some(json!({"marketing": true, "analytics": false})),
        ),
        (
            "all",
            Some(json!({"analytics": true, "marketing": true, "advertising": true})),
        ),
        (
            "none-granted",
            Some(json!({"analytics": false, "marketing": false})),
        ),
    ]
}

/// What the policy says: every needed category granted, or none needed; without preferences
/// the workspace's `consent_missing = "deny"` applies.
fn expected(route: &[&str], consent: &Option<Value>) -> bool {
    let needed: Vec<&&str> = route.iter().filter(|c| **c != "necessary").collect();
    if needed.is_empty() {
        return true;
    }
    match consent {
        None => false,
        Some(granted) => needed.iter().all(|c| granted[**c] == true),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_honours_the_consent_the_policy_gives() {
    let mut receivers = BTreeMap::new();
    for (id, _) in ROUTES {
        receivers.insert(*id, Receiver::start().await);
    }
    let mut server = TestServer::start(&config(&receivers));
    server.wait_ready();

    // The matrix: each consent object on its own (new) person.
    let mut batch = Vec::new();
    for (name, consent) in consents() {
        let mut event = json!({"type": "track", "event": "Viewed", "anonymousId": format!("anon-{name}"), "messageId": format!("m-{name}")});
        if let Some(consent) = consent {
            event["context"] = json!({"consent": {"categoryPreferences": consent}});
        }
        batch.push(event);
    }
    // A marker every route receives, so "not received" means "decided", not "not yet".
    batch.push(
        json!({"type": "track", "event": "Viewed", "anonymousId": "marker", "messageId": "marker",
        "context": {"consent": {"categoryPreferences": {"analytics": true, "marketing": true}}}}),
    );
    let (status, body) = post(&server, "/v1/batch", &json!({"batch": batch})).await;
    assert_eq!(status, 200, "{body}");
    for (id, _) in ROUTES {
        wait_until(&format!("the marker at {id}"), || {
            ids(&receivers[id]).contains("marker")
        })
        .await;
    }
    for (route, categories) in ROUTES {
        let got = ids(&receivers[route]);
        for (name, consent) in consents() {
            assert_eq!(
                got.contains(&format!("m-{name}")),
                expected(categories, &consent),
                "route {route} {categories:?}, consent {name} {consent:?}"
            );
        }
    }
    let (_, status) = admin_get(&server, "/api/v1/workspaces/demo/connections/marketing").await;
    assert_eq!(status["status"]["consent_denied"], 4, "{status}");

    // Why was m-analytics not sent to `marketing`? The same decision, explained.
    let (code, why) = admin_post(
        &server,
        "/api/v1/workspaces/demo/consent/explain",
        &json!({"connection": "marketing", "message_id": "m-analytics"}),
    )
    .await;
    assert_eq!(code, 200, "{why}");
    assert_eq!(why["sent"], false, "{why}");
    assert_eq!(why["stopped_by"], "consent", "{why}");
    assert_eq!(why["consent"]["basis"], "event");
    assert_eq!(why["consent"]["missing"], json!(["marketing"]));
    // The live debugger's verdict for the same event and connection agrees.
    let offset = why["offset"]
        .as_u64()
        .expect("the explained event's offset");
    let (code, routed) =
        admin_get(&server, &format!("/api/v1/workspaces/demo/events/{offset}")).await;
    assert_eq!(code, 200, "{routed}");
    let marketing = routed["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|delivery| delivery["connection"] == "marketing")
        .expect("a verdict for `marketing`");
    assert_eq!(marketing["status"], "consent_denied", "{marketing}");
    assert_eq!(marketing["consent"]["missing"], json!(["marketing"]));
    let (_, why) = admin_post(
        &server,
        "/api/v1/workspaces/demo/consent/explain",
        &json!({"connection": "analytics", "message_id": "m-absent"}),
    )
    .await;
    assert_eq!(why["consent"]["basis"], "policy", "{why}");
    assert!(
        why["consent"]["reason"].as_str().unwrap().contains("deny"),
        "{why}"
    );

    // The profile remembers: later events without a consent object follow its latest choice.
    let (status, _) = post(
        &server,
        "/v1/track",
        &json!({"userId": "ada", "event": "Signed Up", "messageId": "ada-1",
        "context": {"consent": {"categoryPreferences": {"analytics": true, "marketing": true}}}}),
    )
    .await;
    assert_eq!(status, 200);
    let profile_consent = |server: &TestServer| {
        let server_url = server.url("/api/v1/workspaces/demo/profiles/user_id:ada/consent");
        async move {
            let response = client()
                .get(server_url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap_or(Value::Null)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while profile_consent(&server).await["latest"]["marketing"] != true {
        assert!(
            Instant::now() < deadline,
            "the profile never learned the consent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post(
        &server,
        "/v1/track",
        &json!({"userId": "ada", "event": "Viewed", "messageId": "ada-2"}),
    )
    .await;
    wait_until("ada-2 at marketing", || {
        ids(&receivers["marketing"]).contains("ada-2")
    })
    .await;

    // Withdrawn through the API by a privacy officer: recorded as an event, with its proof.
    let officer = token(&server, "privacy_officer", Some("demo")).await;
    let (code, recorded) = call(&server, &officer, reqwest::Method::PUT,
        "/api/v1/workspaces/demo/profiles/user_id:ada/consent",
        Some(json!({"categoryPreferences": {"analytics": true, "marketing": false}, "note": "withdrawn by phone"}))).await;
    assert_eq!(code, 200, "{recorded}");
    let (code, refused) = call(
        &server,
        &officer,
        reqwest::Method::PUT,
        "/api/v1/workspaces/demo/profiles/user_id:ada/consent",
        Some(json!({"categoryPreferences": {"telepathy": true}})),
    )
    .await;
    assert_eq!(code, 400, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("telepathy"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let consent = profile_consent(&server).await;
        if consent["latest"]["marketing"] == false {
            assert_eq!(
                consent["history"][0]["source_id"], "tandem-privacy",
                "{consent}"
            );
            assert_eq!(
                consent["history"][0]["message_id"], recorded["message_id"],
                "{consent}"
            );
            assert_eq!(consent["history"][1]["message_id"], "ada-1", "{consent}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the withdrawal never reached the profile: {consent}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post(
        &server,
        "/v1/track",
        &json!({"userId": "ada", "event": "Viewed", "messageId": "ada-3"}),
    )
    .await;
    post(
        &server,
        "/v1/track",
        &json!({"anonymousId": "marker", "event": "Viewed", "messageId": "marker-2",
        "context": {"consent": {"categoryPreferences": {"analytics": true, "marketing": true}}}}),
    )
    .await;
    wait_until("marker-2 at marketing", || {
        ids(&receivers["marketing"]).contains("marker-2")
    })
    .await;
    wait_until("ada-3 at analytics", || {
        ids(&receivers["analytics"]).contains("ada-3")
    })
    .await;
    assert!(
        !ids(&receivers["marketing"]).contains("ada-3"),
        "withdrawn consent is honoured"
    );

    // The overview shows the policy and each route's categories.
    let (code, overview) = admin_get(&server, "/api/v1/workspaces/demo/consent").await;
    assert_eq!(code, 200);
    assert_eq!(overview["missing"], "deny");
    assert!(overview["categories"]
        .as_array()
        .unwrap()
        .contains(&json!("marketing")));
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_naming_an_unknown_category_is_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = config_text(free_port(), &data, "\n[[workspaces.destinations]]\nid = \"d\"\nname = \"d\"\ntype = \"webhook\"\nowner = \"t@example.test\"\n[workspaces.destinations.settings]\nurl = \"http://127.0.0.1:9/hook\"\n\n[[workspaces.connections]]\nid = \"c\"\nsources = [\"*\"]\ndestination = \"d\"\nconsent_categories = [\"telepathy\"]\n");
    let path = dir.path().join("tandem.toml");
    std::fs::write(&path, text).unwrap();
    let output = run_cli(&["validate", "--config", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        stderr.contains("consent_categories[0]") && stderr.contains("telepathy"),
        "{stderr}"
    );
}
