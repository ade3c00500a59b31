//! Retention per workspace through the real binary: a workspace whose profiles are erased
//! after one day without events. One person's events carry timestamps three days old (unify's
//! `last_message_ms` is the event's corrected time, and a client `timestamp` is taken as is),
//! another's are current; a sweep (`POST …/retention/run`, the same one the server runs every
//! interval) erases the first only, and the report shows it — also after a restart.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const RETENTION: &str = "
[workspaces.retention]
log_days = 7
dead_letters_days = 30
profiles_inactive_days = 1
archive_days = 365
";

async fn profile_status(server: &TestServer, user_id: &str) -> u16 {
    admin_get(
        server,
        &format!("/api/v1/workspaces/demo/profiles/user_id:{user_id}"),
    )
    .await
    .0
}

fn iso(ms: i64) -> String {
    tandem_core::time_util::format_iso8601_ms(ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_profiles_are_erased_and_reported() {
    let mut server = TestServer::start(RETENTION);
    server.wait_ready();
    let now = tandem_core::time_util::now_ms();
    let three_days_ago = now - 3 * 86_400_000;
    let batch = json!({"batch": [
        {"type": "identify", "userId": "gone-quiet-1", "messageId": "old-1",
         "timestamp": iso(three_days_ago), "traits": {"email": "quiet@example.test"}},
        {"type": "track", "userId": "gone-quiet-1", "messageId": "old-2", "event": "Viewed",
         "timestamp": iso(three_days_ago + 60_000)},
        {"type": "identify", "userId": "still-here-2", "messageId": "new-1",
         "traits": {"email": "here@example.test"}},
    ]});
    let (status, body) = post(&server, "/v1/batch", &batch).await;
    assert_eq!(status, 200, "{body}");
    eventually("both profiles", Duration::from_secs(30), || async {
        profile_status(&server, "gone-quiet-1").await == 200
            && profile_status(&server, "still-here-2").await == 200
    })
    .await;

    let (status, report) = admin_get(&server, "/api/v1/workspaces/demo/retention").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["policy"]["profiles_inactive_days"], 1);
    assert_eq!(report["profiles"]["status"], "enforced");
    assert_eq!(report["profiles"]["last_run"], Value::Null);
    assert_eq!(report["log"]["max_age_hours"], 7 * 24);
    assert_eq!(
        report["log"]["max_age_from"],
        "workspaces.retention.log_days"
    );
    assert!(report["archive"]["status"]
        .as_str()
        .unwrap()
        .starts_with("not applicable yet"));

    // Reading the report is a privacy read; an analyst may not, a privacy officer may.
    let analyst = token(&server, "analyst", Some("demo")).await;
    let (status, _) = call(
        &server,
        &analyst,
        Method::GET,
        "/api/v1/workspaces/demo/retention",
        None,
    )
    .await;
    assert_eq!(status, 403);
    let officer = token(&server, "privacy_officer", Some("demo")).await;
    let (status, report) = call(
        &server,
        &officer,
        Method::POST,
        "/api/v1/workspaces/demo/retention/run",
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let run = &report["profiles"]["last_run"];
    assert_eq!(run["selected"], 1, "{report}");
    assert_eq!(run["erased"], 1, "{report}");
    assert_eq!(run["scanned"], 2, "{report}");
    assert_eq!(run["error"], Value::Null, "{report}");
    let request = run["requests"][0].as_str().unwrap();
    assert!(request.starts_with("retention-"), "{request}");
    assert_eq!(report["profiles"]["erased_total"], 1);
    // Nothing in the DLQ: the expiry ran and removed nothing.
    assert_eq!(report["dead_letters"]["last_run"]["removed"], 0);

    assert_eq!(profile_status(&server, "gone-quiet-1").await, 404);
    assert_eq!(profile_status(&server, "still-here-2").await, 200);

    // A second sweep finds nothing more.
    let (_, again) = admin_post(&server, "/api/v1/workspaces/demo/retention/run", &json!({})).await;
    assert_eq!(again["profiles"]["last_run"]["selected"], 0, "{again}");
    assert_eq!(again["profiles"]["erased_total"], 1);

    // The report survives a restart; the erased profile stays erased (the log replays the
    // erase record in order).
    server.restart();
    let (_, report) = admin_get(&server, "/api/v1/workspaces/demo/retention").await;
    assert_eq!(report["profiles"]["erased_total"], 1, "{report}");
    assert_eq!(profile_status(&server, "gone-quiet-1").await, 404);
    assert_eq!(profile_status(&server, "still-here-2").await, 200);
}
