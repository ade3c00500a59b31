//! The import API through the real binary: a CSV with good and bad rows posted to
//! `POST /api/v1/workspaces/demo/sources/web/imports` stores exactly its valid rows as identify
//! events of the source and reports the others; the report survives a restart; posting the same
//! file again stores nothing new; a job cut by `kill -9` shows failed and posting again stores
//! every row exactly once; bad requests answer 4xx JSON errors and leave no job.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const IMPORTS: &str = "/api/v1/workspaces/demo/sources/web/imports";

/// POSTs `body` to the import route with `query`; returns status and JSON body.
async fn post_import(
    server: &TestServer,
    query: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let response = client()
        .post(server.url(&format!("{IMPORTS}{query}")))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls a job until it is no longer running.
async fn finished(server: &TestServer, progress: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, job) = admin_get(server, progress).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "import still running: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Identify events stored by imports, by their `context.import.row`.
fn imported_rows(server: &TestServer) -> HashMap<u64, Vec<Value>> {
    let mut rows: HashMap<u64, Vec<Value>> = HashMap::new();
    for line in server.export() {
        let event = &line["event"];
        assert_eq!(event["type"], "identify", "{line}");
        assert_eq!(event["context"]["library"]["name"], "tandem-import");
        let row = event["context"]["import"]["row"].as_u64().unwrap();
        rows.entry(row).or_default().push(event.clone());
    }
    rows
}

const QUERY: &str = "?map=customer_no=userId&map=crm_id=externalId:crm_id&map=signup=timestamp&map=age=traits.age:number";

fn crm_csv() -> String {
    let big_note = "n".repeat(40_000);
    format!(
        "customer_no,email,phone,crm_id,signup,plan,age\n\
         C1,ada@example.com,+44 20 7946 0000,X1,2024-05-01,pro,36\n\
         C2,not-an-email,,X2,2024-05-02,free,20\n\
         ,bob@example.com,,X3,2024-05-03,free,30\n\
         C4,carol@example.com,,X4,yesterday,pro,40\n\
         C5,dan@example.com,,X5\n\
         C6,\"eve@example.com\",,X6,2024-05-06T10:00:00Z,\"pro, annual\",\n\
         C7,frank@example.com,,X7,2024-05-07,{big_note},50\n\
         C8,grace@example.com,,X8,2024-05-08,free,eighty\n\
         \"C9\",\"heidi@example.com\",,X9,2024-05-09 08:30:00,\"multi\nline\",29\n"
    )
}

#[tokio::test]
async fn a_posted_csv_stores_exactly_its_valid_rows_and_reposting_stores_nothing_new() {
    let mut server = TestServer::start("");
    let csv = crm_csv();
    let (status, answer) = post_import(&server, QUERY, "text/csv", csv.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "running");
    let id = answer["id"].as_str().unwrap().to_string();
    let progress = answer["progress"].as_str().unwrap().to_string();
    assert_eq!(progress, format!("/api/v1/workspaces/demo/imports/{id}"));

    let job = finished(&server, &progress).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["source_id"], "web");
    assert_eq!(job["rows_read"], 9, "{job}");
    assert_eq!(job["rows_imported"], 3, "{job}");
    assert_eq!(job["rows_rejected"], 6, "{job}");
    assert_eq!(job["duplicates"], 0, "{job}");
    assert_eq!(job["bytes_total"], csv.len() as u64);
    assert_eq!(job["bytes_read"], csv.len() as u64);
    assert!(job["finished_at"].is_string(), "{job}");
    let rejected: Vec<(u64, String)> = job["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rejection| {
            assert!(!rejection["message"].as_str().unwrap().is_empty());
            (
                rejection["row"].as_u64().unwrap(),
                rejection["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(u64, String)> = [
        (2, "malformed_email"),
        (3, "missing_identity"),
        (4, "invalid_timestamp"),
        (5, "wrong_column_count"),
        (7, "event_too_large"),
        (8, "invalid_value"),
    ]
    .iter()
    .map(|(row, reason)| (*row, reason.to_string()))
    .collect();
    assert_eq!(rejected, expected, "{job}");
    assert_eq!(job["rejections"][0]["line"], 3);

    let (status, list) = admin_get(&server, "/api/v1/workspaces/demo/imports").await;
    assert_eq!(status, 200);
    assert_eq!(list["imports"][0]["id"], id.as_str(), "{list}");

    // The finished job's report survives a restart; the stored events are exactly the valid rows.
    server.stop();
    let stored = imported_rows(&server);
    let mut rows: Vec<u64> = stored.keys().copied().collect();
    rows.sort();
    assert_eq!(rows, vec![1, 6, 9], "exactly the valid rows");
    let ada = &stored[&1][0];
    assert_eq!(ada["userId"], "C1");
    assert_eq!(
        ada["traits"],
        json!({"email": "ada@example.com", "phone": "+44 20 7946 0000", "plan": "pro", "age": 36})
    );
    let stored_count = server.export().len();
    server.restart();
    let (status, again) = admin_get(&server, &progress).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "completed");
    assert_eq!(again["rows_rejected"], 6);

    // The same file again: every valid row is a duplicate, nothing new is stored.
    let (status, answer) = post_import(&server, QUERY, "text/csv", csv.clone()).await;
    assert_eq!(status, 202, "{answer}");
    let second = finished(&server, answer["progress"].as_str().unwrap()).await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["rows_imported"], 3, "{second}");
    assert_eq!(second["duplicates"], 3, "{second}");
    assert_eq!(second["rows_rejected"], 6, "{second}");
    assert_ne!(second["id"], job["id"]);
    server.stop();
    assert_eq!(server.export().len(), stored_count, "nothing new stored");
    let uploads: Vec<_> = std::fs::read_dir(server.data.join("imports"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".upload"))
        .collect();
    assert!(
        uploads.is_empty(),
        "uploads are removed when done: {uploads:?}"
    );
}

#[tokio::test]
async fn json_lines_with_content_type_and_import_id() {
    let mut server = TestServer::start("");
    let body = "{\"user_id\":\"J1\",\"email\":\"j1@example.com\"}\n{\"email\":\"no-id@example.com\"}\n{\"user_id\":\"J3\"}\n";
    let (status, answer) = post_import(
        &server,
        "?import_id=crm-2024-05",
        "application/x-ndjson",
        body,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let job = finished(&server, answer["progress"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["format"], "jsonl");
    assert_eq!(job["import_id"], "crm-2024-05");
    assert_eq!(job["rows_read"], 3, "{job}");
    assert_eq!(job["rows_imported"], 2, "{job}");
    assert_eq!(job["rows_rejected"], 1, "{job}");
    assert_eq!(job["rejections"][0]["row"], 2, "{job}");
    server.stop();
    let mut users: Vec<String> = server
        .events()
        .iter()
        .map(|event| event["userId"].as_str().unwrap().to_string())
        .collect();
    users.sort();
    assert_eq!(users, vec!["J1", "J3"]);
}

#[tokio::test]
async fn bad_requests_answer_json_errors_and_leave_no_job() {
    let server = TestServer::start("");
    let csv = "customer_no,email\nC1,ada@example.com\n";
    let cases: Vec<(String, &str, String, u16, &str)> = vec![
        // No column gives an identity (customer_no is not mapped): nothing could be imported.
        ("".into(), "text/csv", csv.into(), 400, "invalid_request"),
        // A mapping that does not parse.
        (
            "?map=customer_no=nowhere".into(),
            "text/csv",
            csv.into(),
            400,
            "invalid_request",
        ),
        // A format nobody can tell.
        (
            "?map=customer_no=userId".into(),
            "application/octet-stream",
            csv.into(),
            400,
            "invalid_request",
        ),
        (
            "?format=xml".into(),
            "text/csv",
            csv.into(),
            400,
            "invalid_request",
        ),
        (
            "?colour=red".into(),
            "text/csv",
            csv.into(),
            400,
            "invalid_request",
        ),
        // An empty body.
        (
            "?map=customer_no=userId".into(),
            "text/csv",
            String::new(),
            400,
            "invalid_request",
        ),
        // Binary garbage as CSV: the header is not text.
        (
            "?map=customer_no=userId".into(),
            "text/csv",
            String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x01]).into_owned(),
            400,
            "invalid_request",
        ),
    ];
    for (query, content_type, body, expected_status, expected_code) in cases {
        let (status, answer) = post_import(&server, &query, content_type, body).await;
        assert_eq!(status, expected_status, "{query} {content_type}: {answer}");
        assert_eq!(
            answer["error"]["code"], expected_code,
            "{query} {content_type}: {answer}"
        );
        assert!(answer["error"]["message"].is_string());
    }
    // An upload announcing more than the limit is refused before it is read.
    let response = client()
        .post(server.url(&format!("{IMPORTS}?map=customer_no=userId")))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .header("content-length", (2u64 << 30).to_string())
        .body(csv)
        .send()
        .await;
    if let Ok(response) = response {
        let status = response.status().as_u16();
        if status != 400 {
            // The client may refuse to send a wrong Content-Length; the server's own streaming
            // limit is covered by the unit test in routes/imports.rs.
            assert!(status >= 400, "{status}");
        } else {
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["error"]["code"], "body_too_large", "{answer}");
        }
    }
    // Unknown source, no token.
    let response = client()
        .post(server.url("/api/v1/workspaces/demo/sources/nope/imports?format=csv"))
        .bearer_auth(ADMIN_TOKEN)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let response = client()
        .post(server.url(&format!("{IMPORTS}?format=csv")))
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let (status, list) = admin_get(&server, "/api/v1/workspaces/demo/imports").await;
    assert_eq!(status, 200);
    assert_eq!(list["imports"], json!([]), "no job was left behind");
    let leftovers: Vec<_> = std::fs::read_dir(server.data.join("imports"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_job_cut_by_kill_9_shows_failed_and_posting_again_completes_it_once() {
    const ROWS: u64 = 400_000;
    let mut server = TestServer::start("");
    let mut csv = String::from("user_id,email,plan\n");
    for row in 1..=ROWS {
        csv.push_str(&format!("u{row},user{row}@example.com,plan{}\n", row % 7));
    }
    let (status, answer) = post_import(&server, "", "text/csv", csv.clone()).await;
    assert_eq!(status, 202, "{answer}");
    let progress = answer["progress"].as_str().unwrap().to_string();
    server.kill9();
    server.restart_after_kill();
    let (status, job) = admin_get(&server, &progress).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("POST the same file"),
        "{job}"
    );
    assert!(job["rows_read"].as_u64().unwrap() < ROWS, "{job}");

    let (status, answer) = post_import(&server, "", "text/csv", csv).await;
    assert_eq!(status, 202, "{answer}");
    let job = finished(&server, answer["progress"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["rows_imported"], ROWS, "{job}");
    server.stop();
    let stored = imported_rows(&server);
    assert_eq!(stored.len() as u64, ROWS);
    assert!(
        stored.values().all(|events| events.len() == 1),
        "a row stored twice"
    );
}
