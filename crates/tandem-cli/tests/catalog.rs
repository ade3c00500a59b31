//! The catalog and the record of processing, through the real binary.
//!
//! Workspace `demo` has config sources `web` and `mobile` (no purpose, no data categories), a
//! config destination `crm` (a REAL loopback webhook receiver) with a config connection carrying
//! its own owner, purpose, consent category, event filter and transformation; the test adds an
//! API source `pos`, an API destination `lake` without a purpose and an API connection from every
//! source without a consent category. Events flow; `pos` is disabled and its key used again.
//! The catalog must show each object's owner, purpose, categories, provenance, activity and the
//! findings; the record of processing must say what reaches which recipient and why, as JSON, as
//! Markdown and through the CLI; the organization view sums every workspace; roles are checked.

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const TRANSFORMATION: &str =
    "function transform(event) {\n  event.properties.reviewed = true;\n  return event;\n}";

fn extra(receiver: &Receiver) -> String {
    format!(
        r#"
[[workspaces.destinations]]
id = "crm"
name = "CRM"
type = "webhook"
owner = "crm-team@example.test"
purpose = "sales follow-up"
data_categories = ["contact", "behavioral"]
[workspaces.destinations.settings]
url = "{url}"
batch = true

[[workspaces.connections]]
id = "web-to-crm"
sources = ["web"]
destination = "crm"
events = ["Order Completed"]
consent_categories = ["marketing"]
owner = "crm-ops@example.test"
purpose = "order follow-up calls"
transformation = """{TRANSFORMATION}"""
[workspaces.connections.delivery]
batch_age_ms = 20
"#,
        url = receiver.url()
    )
}

async fn get(server: &TestServer, token: &str, path: &str) -> (u16, String) {
    let response = client()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|item| item["id"] == id || item["destination"] == id || item["source"] == id)
        .unwrap_or_else(|| panic!("no `{id}` in {list}"))
}

fn codes(findings: &Value) -> Vec<(String, String)> {
    findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["object"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_findings_and_record_of_processing() {
    let receiver = Receiver::start().await;
    let server = TestServer::start(&extra(&receiver));
    let ws = "/api/v1/workspaces/demo";

    // An API source with a purpose and categories; an unknown category is refused by name.
    let (status, body) = admin_post(
        &server,
        &format!("{ws}/sources"),
        &json!({"id": "pos", "name": "Point of sale", "owner": "retail@example.test",
                "purpose": "in-store receipts", "data_categories": ["identifiers", "shoe-size"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shoe-size"),
        "{body}"
    );
    let (status, pos) = admin_post(
        &server,
        &format!("{ws}/sources"),
        &json!({"id": "pos", "name": "Point of sale", "owner": "retail@example.test",
                "purpose": "in-store receipts", "data_categories": ["identifiers", "transactions"]}),
    )
    .await;
    assert_eq!(status, 201, "{pos}");
    let pos_key = pos["write_key"].as_str().unwrap().to_string();

    // An API destination without a purpose, and a connection from every source without consent.
    let (status, body) = admin_post(
        &server,
        &format!("{ws}/destinations"),
        &json!({"id": "lake", "name": "Data lake", "type": "webhook", "owner": "data@example.test",
                "settings": {"url": receiver.url(), "batch": true}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin_post(
        &server,
        &format!("{ws}/connections"),
        &json!({"id": "all-to-lake", "sources": ["*"], "destination": "lake", "enabled": false}),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Events: three orders reach the CRM, a page view does not.
    let batch: Vec<Value> = (0..4)
        .map(|i| {
            let name = if i < 3 { "Order Completed" } else { "Viewed" };
            json!({"type": "track", "event": name, "userId": format!("u{i}"), "messageId": format!("m{i}"),
                    "properties": {"total": 10 * i}})
        })
        .collect();
    let (status, body) = post(&server, "/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.events.lock().len() < 3 {
        assert!(Instant::now() < deadline, "the CRM never got the orders");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // `pos` is disabled; a forgotten till keeps using its key.
    let (status, body) =
        admin_post(&server, &format!("{ws}/sources/pos/disable"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let response = client()
        .post(server.url("/v1/track"))
        .header("authorization", basic(&pos_key))
        .header("origin", "https://till-7.example.test")
        .json(&json!({"event": "Receipt", "userId": "u9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // The workspace catalog.
    let (status, catalog) = admin_get(&server, &format!("{ws}/catalog")).await;
    assert_eq!(status, 200, "{catalog}");
    let web = find(&catalog["sources"], "web");
    assert_eq!(web["owner"], "web-team@example.test");
    assert_eq!(web["managed_by"], "config");
    assert_eq!(web["events_accepted"], 4);
    assert!(web["last_seen_at"].is_string(), "{web}");
    assert_eq!(web["connections"], json!(["web-to-crm", "all-to-lake"]));
    let pos = find(&catalog["sources"], "pos");
    assert_eq!(
        pos["data_categories"],
        json!(["identifiers", "transactions"])
    );
    assert_eq!(pos["enabled"], false);
    assert_eq!(pos["managed_by"], "api");
    assert_eq!(pos["created"]["by"], "admin-token");
    assert!(pos["changed"]["at"].is_string(), "{pos}");

    let crm = find(&catalog["destinations"], "crm");
    assert_eq!(crm["type"], "webhook");
    assert_eq!(crm["purpose"], "sales follow-up");
    assert_eq!(crm["delivered"], 3);
    assert!(crm["last_delivered_at"].is_string(), "{crm}");
    let lake = find(&catalog["destinations"], "lake");
    assert_eq!(lake["managed_by"], "api");
    assert_eq!(lake["created"]["by"], "admin-token", "{lake}");
    assert!(lake["created"]["at"].is_string());

    let to_crm = find(&catalog["connections"], "web-to-crm");
    assert_eq!(to_crm["owner"], "crm-ops@example.test");
    assert_eq!(to_crm["owner_from"], "connection");
    assert_eq!(to_crm["consent_categories"], json!(["marketing"]));
    assert_eq!(to_crm["transformation"], true);
    assert_eq!(to_crm["state"], "running");
    let to_lake = find(&catalog["connections"], "all-to-lake");
    assert_eq!(to_lake["owner"], "data@example.test");
    assert_eq!(to_lake["owner_from"], "destination");
    assert_eq!(to_lake["state"], "disabled");

    let transformation = &catalog["transformations"][0];
    assert_eq!(transformation["connection"], "web-to-crm");
    assert_eq!(transformation["lines"], 4);
    let digest: String = Sha256::digest(TRANSFORMATION.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(transformation["sha256"], digest);

    let found = codes(&catalog["findings"]);
    for expected in [
        ("disabled_key_in_use", "source/pos"),
        ("no_purpose", "source/web"),
        ("no_purpose", "source/mobile"),
        ("no_purpose", "destination/lake"),
        ("no_data_categories", "source/web"),
        ("no_data_categories", "destination/lake"),
    ] {
        assert!(
            found.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} missing from {found:?}"
        );
    }
    assert_eq!(catalog["findings"][0]["severity"], "critical");
    assert!(
        catalog["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("https://till-7.example.test"),
        "{}",
        catalog["findings"][0]
    );
    assert!(
        !found
            .iter()
            .any(|(code, _)| code == "no_consent_categories"),
        "a disabled connection sends nothing: {found:?}"
    );

    // Enabling the consent-less connection makes it a gap of the record.
    let response = client()
        .patch(server.url(&format!("{ws}/connections/all-to-lake")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // The record of processing (JSON).
    let privacy = token(&server, "privacy_officer", Some("demo")).await;
    let (status, text) = get(&server, &privacy, &format!("{ws}/record-of-processing")).await;
    assert_eq!(status, 200, "{text}");
    let record: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["controller"], "Test Org");
    let crm = find(&record["activities"], "crm");
    assert_eq!(
        crm["purposes"],
        json!(["sales follow-up", "order follow-up calls"])
    );
    assert_eq!(crm["consent_categories"], json!(["marketing"]));
    assert_eq!(crm["flows"][0]["events"], json!(["Order Completed"]));
    assert_eq!(crm["flows"][0]["transformation"], true);
    let lake = find(&record["activities"], "lake");
    assert_eq!(
        lake["source_data_categories"],
        json!(["identifiers", "transactions"]),
        "`*` reaches pos too: {lake}"
    );
    assert_eq!(
        lake["undeclared_data_categories"],
        json!(["identifiers", "transactions"])
    );
    let web = find(&record["collection"], "web");
    assert_eq!(web["recipients"], json!(["crm", "lake"]));
    let gaps = codes(&record["gaps"]);
    assert!(
        gaps.contains(&(
            "no_consent_categories".into(),
            "connection/all-to-lake".into()
        )),
        "{gaps:?}"
    );

    // As a document, over HTTP and through the CLI.
    let (status, text) = get(
        &server,
        &privacy,
        &format!("{ws}/record-of-processing?format=markdown"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.starts_with("# Record of processing activities — Demo"),
        "{text}"
    );
    assert!(
        text.contains("| CRM (`crm`, webhook) | crm-team@example.test | sales follow-up, order follow-up calls |"),
        "{text}"
    );
    let url = server.url("");
    let printed = run_cli_ok(&[
        "catalog",
        "record",
        "--markdown",
        "--workspace",
        "demo",
        "--url",
        &url,
        "--token",
        &privacy,
    ]);
    // The same document, generated a moment later: equal but for its `Generated:` line.
    let undated = |document: &str| -> Vec<String> {
        document
            .lines()
            .filter(|line| !line.starts_with("- Generated: "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        undated(&String::from_utf8(printed).unwrap()),
        undated(&text)
    );
    let shown = run_cli_json(&[
        "catalog",
        "show",
        "--workspace",
        "demo",
        "--url",
        &url,
        "--token",
        ADMIN_TOKEN,
    ]);
    assert_eq!(shown["workspace"], "demo");
    let (status, body) = get(
        &server,
        &privacy,
        &format!("{ws}/record-of-processing?format=pdf"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("pdf"), "{body}");

    // The organization view: every workspace side by side, organization credentials only.
    let (status, organization) = admin_get(&server, "/api/v1/catalog").await;
    assert_eq!(status, 200, "{organization}");
    let demo = find(&organization["workspaces"], "demo");
    assert_eq!(demo["sources"], 3);
    assert_eq!(demo["events_accepted"], 4);
    assert!(demo["delivered"].as_u64().unwrap() >= 3, "{demo}");
    assert!(
        demo["findings"]["critical"].as_u64().unwrap() >= 1,
        "{demo}"
    );
    let viewer = token(&server, "viewer", Some("demo")).await;
    let (status, body) = get(&server, &viewer, "/api/v1/catalog").await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = get(&server, &viewer, &format!("{ws}/catalog")).await;
    assert_eq!(status, 200);
    let analyst = token(&server, "analyst", None).await;
    let (status, body) = get(&server, &analyst, "/api/v1/catalog").await;
    assert_eq!(status, 200, "{body}");
}
