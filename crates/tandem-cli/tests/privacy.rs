//! Data-subject requests end to end, through the real binary, a real PostgreSQL warehouse, a
//! real webhook receiver and the files destination: one synthetic person with three devices,
//! an email and a CRM record, events delivered everywhere (and one dead letter); an access
//! request exports everything about them; an erasure by email reaches every store and
//! destination — then every file under the data directory (and the server's own log) is
//! scanned byte by byte, and every warehouse row, for each of the person's identifiers and
//! trait values: zero hits. A new event for the person is suppressed; another person is intact.

mod common;

#[path = "../../tandem-activate/tests/pg_harness/mod.rs"]
mod pg_harness;

use common::*;
use pg_harness::PgServer;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const PHONE_DEVICE: &str = "anon-ada-phone-7781";
const LAPTOP_DEVICE: &str = "anon-ada-laptop-5521";
const TABLET_DEVICE: &str = "anon-ada-tablet-9913";
const USER_ID: &str = "ada-user-31337";
const EMAIL: &str = "ada.lovelace@example.org";
const NAME: &str = "Ada Lovelace-Byron";
const CRM_ID: &str = "CRM-ADA-000042";
const PHONE: &str = "+44 20 7946 0958";
const PHONE_NORMALIZED: &str = "+442079460958";
const CITY: &str = "Marylebone-Westminster";

/// Everything that would identify Ada, as sent and as normalized.
const NEEDLES: &[&str] = &[
    PHONE_DEVICE,
    LAPTOP_DEVICE,
    TABLET_DEVICE,
    USER_ID,
    EMAIL,
    NAME,
    CRM_ID,
    PHONE,
    PHONE_NORMALIZED,
    CITY,
];

fn config(receiver: &Receiver, pg: &PgServer) -> String {
    let hook = receiver.url();
    let pg = pg.url();
    let throwing = "function transform(e) { if (e.event === 'Poison') throw new Error('poisoned'); return e; }";
    format!(
        r#"
[[workspaces.destinations]]
id = "hook"
name = "Webhook"
type = "webhook"
owner = "crm-team@example.test"
[workspaces.destinations.settings]
url = "{hook}"
delete_url = "{hook}"

[[workspaces.connections]]
id = "hook"
sources = ["*"]
destination = "hook"
transformation = "{throwing}"
[workspaces.connections.delivery]
batch_age_ms = 20

[[workspaces.destinations]]
id = "warehouse"
name = "Warehouse"
type = "postgres"
owner = "data-team@example.test"
[workspaces.destinations.settings]
url = "{pg}"
pool_size = 2

[[workspaces.connections]]
id = "warehouse"
sources = ["*"]
destination = "warehouse"
[workspaces.connections.delivery]
batch_age_ms = 20

[[workspaces.destinations]]
id = "lake"
name = "Files"
type = "files"
owner = "data-team@example.test"
[workspaces.destinations.settings]
path = "lake"

[[workspaces.connections]]
id = "lake"
sources = ["*"]
destination = "lake"
[workspaces.connections.delivery]
batch_age_ms = 50
"#
    )
}

fn received(receiver: &Receiver, message_id: &str) -> bool {
    receiver
        .events
        .lock()
        .iter()
        .any(|event| event["messageId"] == message_id)
}

/// Every warehouse row of the workspace's schema, as text.
async fn warehouse_rows(pg: &PgServer) -> Vec<String> {
    let client = pg.client().await;
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'tandem_demo'",
            &[],
        )
        .await
        .unwrap();
    let mut rows = Vec::new();
    for table in tables {
        let name: String = table.get(0);
        for row in client
            .query(
                &format!("SELECT t::text FROM tandem_demo.\"{name}\" t"),
                &[],
            )
            .await
            .unwrap()
        {
            rows.push(format!("{name}: {}", row.get::<_, String>(0)));
        }
    }
    rows
}

/// (file, needle) for every needle found in a file under `dir`.
fn scan(dir: &Path, hits: &mut Vec<(String, &'static str)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, hits);
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for needle in NEEDLES {
            if let Some(at) = bytes
                .windows(needle.len())
                .position(|window| window == needle.as_bytes())
            {
                let around = &bytes[at.saturating_sub(200)..(at + 100).min(bytes.len())];
                hits.push((
                    format!("{}: …{}…", path.display(), String::from_utf8_lossy(around)),
                    needle,
                ));
            }
        }
    }
}

async fn request(server: &TestServer, token: &str, body: Value) -> Value {
    let (status, created) = call(
        server,
        token,
        Method::POST,
        "/api/v1/workspaces/demo/privacy/requests",
        Some(body),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/workspaces/demo/privacy/requests/{id}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, shown) = call(server, token, Method::GET, &path, None).await;
        if shown["status"] == "completed" || shown["status"] == "failed" {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "the request never finished: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn step<'a>(report: &'a Value, store: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["store"] == store)
        .unwrap_or_else(|| panic!("no step {store} in {report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn erasure_by_email_leaves_no_byte_of_the_person_anywhere() {
    let receiver = Receiver::start().await;
    let pg = PgServer::start();
    let mut server = TestServer::start(&config(&receiver, &pg));
    server.wait_ready();

    // Ada on three devices, known by userId and email, with a CRM record and a dead letter.
    let ada = [
        json!({"type": "page", "anonymousId": PHONE_DEVICE, "name": "Home", "messageId": "ada-1"}),
        json!({"type": "track", "anonymousId": LAPTOP_DEVICE, "event": "Viewed Product", "messageId": "ada-2",
               "context": {"consent": {"categoryPreferences": {"analytics": true, "marketing": true}}}}),
        json!({"type": "identify", "anonymousId": PHONE_DEVICE, "userId": USER_ID, "messageId": "ada-3",
               "traits": {"email": EMAIL, "name": NAME, "phone": PHONE, "address": {"city": CITY}}}),
        json!({"type": "identify", "anonymousId": LAPTOP_DEVICE, "userId": USER_ID, "messageId": "ada-4"}),
        json!({"type": "track", "anonymousId": TABLET_DEVICE, "event": "Added to Cart", "messageId": "ada-5",
               "context": {"traits": {"email": EMAIL}}}),
        json!({"type": "track", "userId": USER_ID, "event": "Poison", "messageId": "ada-6"}),
    ];
    let bob = [
        json!({"type": "identify", "userId": "bob-user-2", "messageId": "bob-1", "traits": {"email": "bob@example.net", "name": "Bob Builder"}}),
        json!({"type": "track", "userId": "bob-user-2", "event": "Order Completed", "messageId": "bob-2"}),
    ];
    let batch: Vec<Value> = ada.iter().chain(bob.iter()).cloned().collect();
    let (status, body) = post(&server, "/v1/batch", &json!({"batch": batch})).await;
    assert_eq!(status, 200, "{body}");
    // The CRM record, imported through the API.
    let csv = format!("customer_no,email,crm_id\n{USER_ID},{EMAIL},{CRM_ID}\nbob-user-2,bob@example.net,CRM-BOB-1\n");
    let response = client()
        .post(server.url("/api/v1/workspaces/demo/sources/web/imports?map=customer_no=userId&map=email=traits.email&map=crm_id=externalId:crm_id"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );

    // Delivered everywhere: the webhook, the warehouse, the files; the poison to the DLQ.
    eventually(
        "the webhook deliveries",
        Duration::from_secs(30),
        || async {
            ["ada-3", "ada-5", "bob-2"]
                .iter()
                .all(|id| received(&receiver, id))
        },
    )
    .await;
    eventually("the warehouse rows", Duration::from_secs(30), || async {
        let rows = warehouse_rows(&pg).await;
        rows.iter().any(|row| row.contains(CRM_ID)) && rows.iter().any(|row| row.contains("bob-2"))
    })
    .await;
    eventually("the files", Duration::from_secs(30), || async {
        let mut hits = Vec::new();
        scan(&server.data.join("lake"), &mut hits);
        hits.iter().any(|(_, needle)| *needle == NAME)
    })
    .await;
    eventually("the dead letter", Duration::from_secs(30), || async {
        let (_, dlq) = admin_get(&server, "/api/v1/workspaces/demo/connections/hook/dlq").await;
        dlq["dlq_size"] == 1
    })
    .await;
    // One profile holds all of it (the CRM id included).
    eventually("one profile for Ada", Duration::from_secs(30), || async {
        let (status, profile) = admin_get(
            &server,
            &format!("/api/v1/workspaces/demo/profiles/email:{EMAIL}"),
        )
        .await;
        status == 200
            && profile["identities"].as_array().is_some_and(|ids| {
                [PHONE_DEVICE, LAPTOP_DEVICE, TABLET_DEVICE, CRM_ID, USER_ID]
                    .iter()
                    .all(|needle| ids.iter().any(|id| id["id"] == *needle))
            })
    })
    .await;

    // Roles: an analyst may not create requests; the privacy officer may.
    let analyst = token(&server, "analyst", Some("demo")).await;
    let (status, _) = call(
        &server,
        &analyst,
        Method::POST,
        "/api/v1/workspaces/demo/privacy/requests",
        Some(json!({"type": "access", "identifier": {"type": "email", "id": EMAIL}})),
    )
    .await;
    assert_eq!(status, 403);
    let officer = token(&server, "privacy_officer", Some("demo")).await;
    let (status, refused) = call(
        &server,
        &officer,
        Method::POST,
        "/api/v1/workspaces/demo/privacy/requests",
        Some(json!({"type": "forget", "identifier": {"type": "email", "id": EMAIL}})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("type"),
        "{refused}"
    );

    // Access: everything about Ada in one document.
    let access = request(
        &server,
        &officer,
        json!({"type": "access", "identifier": {"type": "email", "id": "Ada.Lovelace@Example.org"}}),
    )
    .await;
    assert_eq!(access["status"], "completed", "{access}");
    let (status, document) = call(
        &server,
        &officer,
        Method::GET,
        &format!(
            "/api/v1/workspaces/demo/privacy/requests/{}/export",
            access["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{document}");
    let text = document.to_string();
    for needle in [
        PHONE_DEVICE,
        LAPTOP_DEVICE,
        TABLET_DEVICE,
        USER_ID,
        EMAIL,
        NAME,
        CRM_ID,
    ] {
        assert!(text.contains(needle), "{needle} missing from the export");
    }
    assert!(
        !text.contains("bob-user-2"),
        "the export holds another person"
    );
    let events = document["events"].as_array().unwrap();
    assert!(events.len() >= 7, "{}", events.len());
    assert_eq!(document["dead_letters"].as_array().unwrap().len(), 1);
    assert!(document["profiles"][0]["consent"]["latest"]["marketing"] == true);

    // Erasure by email.
    let erased = request(
        &server,
        &officer,
        json!({"type": "erasure", "identifier": {"type": "email", "id": EMAIL}, "note": "ticket 7"}),
    )
    .await;
    assert_eq!(erased["status"], "completed", "{erased:#}");
    assert!(erased["identifiers"].as_u64().unwrap() >= 6, "{erased:#}");
    for store in [
        "suppression",
        "profiles",
        "log",
        "quarantine",
        "dead_letters",
        "destination:hook",
        "destination:warehouse",
        "destination:lake",
        "exports",
        "vacuum",
        "verify",
    ] {
        assert_eq!(
            step(&erased, store)["status"],
            "done",
            "{store}: {erased:#}"
        );
    }
    assert!(
        step(&erased, "log")["count"].as_u64().unwrap() >= 7,
        "{erased:#}"
    );
    assert_eq!(step(&erased, "dead_letters")["count"], 1);
    assert_eq!(step(&erased, "exports")["count"], 1);
    // The request itself no longer holds the identifier, only its hash.
    assert!(!erased.to_string().contains(EMAIL));
    // The webhook was asked to delete, with every identifier.
    let deletion = receiver
        .events
        .lock()
        .iter()
        .find(|event| event["type"] == "delete")
        .cloned()
        .expect("a delete call at the webhook");
    let asked = deletion["identifiers"].to_string();
    for needle in [USER_ID, EMAIL, PHONE_DEVICE, LAPTOP_DEVICE, TABLET_DEVICE] {
        assert!(asked.contains(needle), "{needle} not in {deletion}");
    }

    // Zero hits, byte by byte, in every file under the data directory and in the server's log.
    let mut hits = Vec::new();
    scan(&server.data, &mut hits);
    assert!(hits.is_empty(), "the person is still on disk: {hits:#?}");
    for needle in NEEDLES {
        assert!(
            !server.server_log().contains(needle),
            "{needle} in the server log"
        );
    }
    // Zero hits in the warehouse; the other person's rows stay.
    let rows = warehouse_rows(&pg).await;
    for needle in NEEDLES {
        assert!(
            !rows.iter().any(|row| row.contains(needle)),
            "{needle} still in the warehouse: {rows:#?}"
        );
    }
    assert!(rows.iter().any(|row| row.contains("bob-2")));
    let (status, _) = admin_get(
        &server,
        &format!("/api/v1/workspaces/demo/profiles/user_id:{USER_ID}"),
    )
    .await;
    assert_eq!(status, 404);
    let (status, bob_profile) = admin_get(
        &server,
        "/api/v1/workspaces/demo/profiles/user_id:bob-user-2",
    )
    .await;
    assert_eq!(status, 200, "{bob_profile}");

    // A new event for Ada is acknowledged and suppressed; Bob's next one flows.
    let (status, _) = post(
        &server,
        "/v1/batch",
        &json!({"batch": [
            {"type": "track", "userId": USER_ID, "event": "Came Back", "messageId": "ada-7"},
            {"type": "track", "anonymousId": TABLET_DEVICE, "event": "Came Back", "messageId": "ada-8"},
            {"type": "track", "userId": "bob-user-2", "event": "Came Back", "messageId": "bob-3"},
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    eventually("bob's next event", Duration::from_secs(30), || async {
        received(&receiver, "bob-3")
    })
    .await;
    assert!(!received(&receiver, "ada-7") && !received(&receiver, "ada-8"));
    let mut hits = Vec::new();
    scan(&server.data, &mut hits);
    assert!(hits.is_empty(), "a suppressed event was stored: {hits:#?}");
    let (_, suppressions) =
        admin_get(&server, "/api/v1/workspaces/demo/privacy/suppressions").await;
    assert!(suppressions["suppressed_identifiers"].as_u64().unwrap() >= 6);

    // The request list shows it, with the SLA summary; the suppression survives a restart.
    let (_, list) = call(
        &server,
        &officer,
        Method::GET,
        "/api/v1/workspaces/demo/privacy/requests?status=completed",
        None,
    )
    .await;
    assert_eq!(list["requests"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["sla"]["overdue"], 0);
    // The CLI: the same list, and a rectification followed to its end.
    let url = server.url("");
    let listed = run_cli_json(&[
        "privacy",
        "list",
        "--url",
        &url,
        "--token",
        &officer,
        "--workspace",
        "demo",
        "--status",
        "completed",
    ]);
    assert_eq!(listed["requests"].as_array().unwrap().len(), 2, "{listed}");
    let rectified: Value = serde_json::from_slice(&run_cli_ok(&[
        "privacy",
        "request",
        "--url",
        &url,
        "--token",
        &officer,
        "--workspace",
        "demo",
        "--type",
        "rectification",
        "--identifier",
        "user_id:bob-user-2",
        "--trait",
        "name=Robert Builder",
        "--note",
        "typo in the name",
    ]))
    .unwrap();
    assert_eq!(rectified["status"], "completed", "{rectified}");
    eventually("the rectified trait", Duration::from_secs(30), || async {
        let (_, profile) = admin_get(
            &server,
            "/api/v1/workspaces/demo/profiles/user_id:bob-user-2",
        )
        .await;
        profile["traits"]["name"]["value"] == "Robert Builder"
    })
    .await;

    server.restart();
    let (status, _) = post(
        &server,
        "/v1/track",
        &json!({"userId": USER_ID, "event": "After Restart", "messageId": "ada-9"}),
    )
    .await;
    assert_eq!(status, 200);
    let mut hits = Vec::new();
    scan(&server.data, &mut hits);
    assert!(
        hits.is_empty(),
        "suppression forgot the person across a restart: {hits:#?}"
    );
}
