//! PII through the real binary: one webhook connection whose policy hashes emails, masks phones,
//! drops cards and allows names, seen at a real receiver; a second connection without a policy
//! getting the values as sent; `anonymize_ip` storing a zeroed address; an analyst reading a
//! profile with its PII masked and a privacy officer reading it in clear; a policy naming an
//! unknown action refused with its path.

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// The workspace's salt, given to the server through the environment variable the file names.
const SALT: &str = "pii-test-salt-0123456789";
const EMAIL: &str = "jane.doe@example.com";
const PHONE: &str = "+33612345689";
const CARD: &str = "4111 1111 1111 1111";
const CLIENT_IP: &str = "203.0.113.77";

fn config(policy: &Receiver, plain: &Receiver) -> String {
    format!(
        r#"
[workspaces.pii]
anonymize_ip = true
salt_env = "TANDEM_TEST_PII_SALT"

[[workspaces.pii.rules]]
path = "properties.loyalty_id"
category = "loyalty"

[[workspaces.destinations]]
id = "crm"
name = "CRM"
type = "webhook"
owner = "crm-team@example.test"
[workspaces.destinations.settings]
url = "{policy}"
batch = true

[[workspaces.connections]]
id = "to-crm"
sources = ["*"]
destination = "crm"
pii = {{ email = "hash", phone = "mask", card = "drop", name = "allow", loyalty = "mask", default = "allow" }}
[workspaces.connections.delivery]
batch_age_ms = 20

[[workspaces.destinations]]
id = "lake"
name = "Lake"
type = "webhook"
owner = "data-team@example.test"
[workspaces.destinations.settings]
url = "{plain}"
batch = true

[[workspaces.connections]]
id = "to-lake"
sources = ["*"]
destination = "lake"
pii = {{ default = "allow" }}
[workspaces.connections.delivery]
batch_age_ms = 20
"#,
        policy = policy.url(),
        plain = plain.url(),
    )
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

async fn wait_for(receiver: &Receiver, message_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(event) = receiver
            .events
            .lock()
            .iter()
            .find(|event| event["messageId"] == message_id)
        {
            return event.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {message_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn profile(server: &TestServer, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(
            server,
            token,
            reqwest::Method::GET,
            &format!("/api/v1/workspaces/demo/profiles/{id}"),
            None,
        )
        .await;
        if status == 200 && body["traits"].get("phone").is_some() {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no profile {id}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_connection_sees_its_own_policy_and_analysts_see_pii_masked() {
    let (policy, plain) = (Receiver::start().await, Receiver::start().await);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_with_env(
        dir,
        data,
        &config(&policy, &plain),
        &[("TANDEM_TEST_PII_SALT", SALT)],
    );

    let identify = json!({
        "type": "identify", "userId": "u-1", "messageId": "m-identify",
        "traits": {"email": EMAIL, "phone": PHONE, "firstName": "Jane", "lastName": "Doe", "plan": "pro"},
        "context": {"ip": CLIENT_IP}
    });
    let track = json!({
        "type": "track", "userId": "u-1", "messageId": "m-track", "event": "Order Completed",
        "properties": {"card": CARD, "loyalty_id": "LOY-778899", "total": 42.5},
        "context": {"traits": {"email": EMAIL}}
    });
    let (status, body) = post(&server, "/v1/batch", &json!({"batch": [identify, track]})).await;
    assert_eq!(status, 200, "{body}");

    // The policy's connection: each action as the destination sees it.
    let identified = wait_for(&policy, "m-identify").await;
    let tracked = wait_for(&policy, "m-track").await;
    let hashed = identified["traits"]["email"].as_str().unwrap();
    assert_eq!(
        hashed,
        sha256_hex(&format!("{SALT}{EMAIL}")),
        "SHA-256 of salt + value"
    );
    assert_eq!(hashed.len(), 64);
    assert_eq!(
        tracked["context"]["traits"]["email"], hashed,
        "the same value hashes the same in every event"
    );
    assert_eq!(identified["traits"]["phone"], "+33*******89", "masked");
    assert_eq!(identified["traits"]["firstName"], "Jane", "names allowed");
    assert_eq!(identified["traits"]["lastName"], "Doe");
    assert_eq!(identified["traits"]["plan"], "pro", "not PII: untouched");
    assert!(
        tracked["properties"].get("card").is_none(),
        "dropped: {tracked}"
    );
    assert_eq!(
        tracked["properties"]["loyalty_id"], "L***",
        "a path rule's category"
    );
    assert_eq!(tracked["properties"]["total"], 42.5);
    let sent = format!("{identified}{tracked}");
    for secret in [EMAIL, PHONE, CARD, "LOY-778899", CLIENT_IP] {
        assert!(!sent.contains(secret), "{secret} reached the CRM: {sent}");
    }

    // The connection without a policy: the values as sent (the IP as stored: anonymized).
    let identified = wait_for(&plain, "m-identify").await;
    let tracked = wait_for(&plain, "m-track").await;
    assert_eq!(identified["traits"]["email"], EMAIL);
    assert_eq!(identified["traits"]["phone"], PHONE);
    assert_eq!(tracked["properties"]["card"], CARD);
    assert_eq!(tracked["properties"]["loyalty_id"], "LOY-778899");
    assert_eq!(identified["context"]["ip"], "203.0.113.0");

    // anonymize_ip: the log holds the zeroed address, the client's and the peer's.
    let (status, body) = post(
        &server,
        "/v1/track",
        &json!({"userId": "u-2", "event": "Viewed", "messageId": "m-peer"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let peer = wait_for(&plain, "m-peer").await;
    assert_eq!(
        peer["context"]["ip"], "127.0.0.0",
        "the peer's address, zeroed"
    );
    let stored = server.events();
    let logged = format!("{stored:?}");
    assert!(
        !logged.contains(CLIENT_IP),
        "the full address never reached the log"
    );
    assert_eq!(
        by_message_id(&stored, "m-identify")[0]["context"]["ip"],
        "203.0.113.0"
    );

    // Profiles: an analyst sees PII masked, a privacy officer in clear.
    let analyst = token(&server, "analyst", Some("demo")).await;
    let officer = token(&server, "privacy_officer", Some("demo")).await;
    let masked = profile(&server, &analyst, "user_id:u-1").await;
    assert_eq!(
        masked["traits"]["email"]["value"], "j***@example.com",
        "{masked}"
    );
    assert_eq!(masked["traits"]["phone"]["value"], "+33*******89");
    assert_eq!(masked["traits"]["firstName"]["value"], "J***");
    assert_eq!(masked["traits"]["plan"]["value"], "pro");
    let masked_text = masked.to_string();
    for secret in [EMAIL, PHONE] {
        assert!(
            !masked_text.contains(secret),
            "{secret} shown to an analyst: {masked_text}"
        );
    }
    let clear = profile(&server, &officer, "user_id:u-1").await;
    assert_eq!(clear["traits"]["email"]["value"], EMAIL);
    assert_eq!(clear["traits"]["phone"]["value"], PHONE);
    let emails: Vec<&Value> = clear["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|identity| identity["type"] == "email")
        .map(|identity| &identity["id"])
        .collect();
    assert_eq!(emails, [EMAIL]);

    // The Segment-compatible Profile API and its events, for the analyst.
    let (status, traits) = call(
        &server,
        &analyst,
        reqwest::Method::GET,
        "/v1/spaces/demo/collections/users/profiles/user_id:u-1/traits",
        None,
    )
    .await;
    assert_eq!(status, 200, "{traits}");
    assert_eq!(traits["traits"]["email"], "j***@example.com");
    let (status, events) = call(
        &server,
        &analyst,
        reqwest::Method::GET,
        "/v1/spaces/demo/collections/users/profiles/user_id:u-1/events",
        None,
    )
    .await;
    assert_eq!(status, 200, "{events}");
    let events_text = events.to_string();
    assert!(events_text.contains("m-track"), "{events_text}");
    for secret in [EMAIL, PHONE, CARD, "LOY-778899"] {
        assert!(
            !events_text.contains(secret),
            "{secret} in events: {events_text}"
        );
    }
    // Finding a profile by a PII trait's value would tell the value: refused without ReadPii.
    let (status, refused) = call(
        &server,
        &analyst,
        reqwest::Method::GET,
        &format!("/api/v1/workspaces/demo/profiles?trait=email&value={EMAIL}"),
        None,
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(refused.to_string().contains("ReadPii"), "{refused}");
    let (status, found) = call(
        &server,
        &officer,
        reqwest::Method::GET,
        &format!("/api/v1/workspaces/demo/profiles?trait=email&value={EMAIL}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["profiles"].as_array().unwrap().len(), 1);

    // A policy with an unknown action or category is refused with its path.
    let (status, problem) = admin_post(
        &server,
        "/api/v1/workspaces/demo/connections",
        &json!({"id": "bad", "sources": ["*"], "destination": "lake", "pii": {"email": "shred", "shoe_size": "mask"}}),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    let message = problem.to_string();
    assert!(message.contains("pii.email"), "{message}");
    assert!(message.contains("unknown action `shred`"), "{message}");
    assert!(message.contains("no PII category `shoe_size`"), "{message}");

    // The salt is in neither the export nor the server's log.
    let (status, export) = call(
        &server,
        ADMIN_TOKEN,
        reqwest::Method::GET,
        "/api/v1/workspaces/demo/config/export",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let export = export.as_str().unwrap();
    assert!(
        export.contains("salt_env = \"TANDEM_TEST_PII_SALT\""),
        "{export}"
    );
    assert!(export.contains("anonymize_ip = true"), "{export}");
    assert!(!export.contains(SALT));
    assert!(!server.server_log().contains(SALT));
}
