//! Delivery through the real binary to a REAL HTTP receiver started by the test (axum on a free
//! loopback port) whose behaviour the test switches: down (listener closed), slow, 500 with
//! `Retry-After`, 400 for a poison event, ok.
//!
//! - outage: the receiver is down, then slow, then answers 500 + Retry-After, then heals: every
//!   event is delivered, and a second, healthy connection gets its events during the outage;
//! - poison: one event refused with 400 goes alone to the DLQ, the rest are delivered; after
//!   the receiver is fixed, a replay through the API delivers it and empties the DLQ;
//! - kill -9 during delivery under load: after restart every acknowledged event is delivered at
//!   least once, and every request's `Idempotency-Key` is its event's messageId.
//! Durations are scaled down from the minutes to seconds.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    Slow(u64),
    Unavailable,
    RejectPoison,
}

struct Shared {
    mode: Mutex<Mode>,
    /// messageId → the Idempotency-Key headers it arrived with.
    received: Mutex<HashMap<String, Vec<String>>>,
    at: Mutex<HashMap<String, Instant>>,
}

/// A webhook receiver whose listener can be closed and reopened on the same port.
struct Receiver {
    port: u16,
    shared: Arc<Shared>,
    server: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let mode = *shared.mode.lock();
    let body: Value = serde_json::from_str(&body).unwrap();
    let events: Vec<Value> = match body.get("batch") {
        Some(batch) => batch.as_array().unwrap().clone(),
        None => vec![body],
    };
    match mode {
        Mode::Slow(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Mode::Unavailable => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("retry-after", "1")],
                "busy",
            )
                .into_response()
        }
        Mode::RejectPoison if events.iter().any(|event| event["event"] == "Poison") => {
            return (StatusCode::BAD_REQUEST, "{\"error\":\"poison\"}").into_response()
        }
        _ => {}
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut received = shared.received.lock();
    let mut at = shared.at.lock();
    for event in events {
        let id = event["messageId"].as_str().unwrap().to_string();
        at.entry(id.clone()).or_insert_with(Instant::now);
        received.entry(id).or_default().push(key.clone());
    }
    StatusCode::OK.into_response()
}

impl Receiver {
    async fn start() -> Receiver {
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Ok),
            received: Mutex::default(),
            at: Mutex::default(),
        });
        let mut receiver = Receiver {
            port: free_port(),
            shared,
            server: None,
        };
        receiver.up().await;
        receiver
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.server = Some((stop, task));
    }

    async fn down(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    fn set(&self, mode: Mode) {
        *self.shared.mode.lock() = mode;
    }

    fn ids(&self) -> HashSet<String> {
        self.shared.received.lock().keys().cloned().collect()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
}

fn destination_toml(id: &str, url: &str, batch: bool) -> String {
    format!(
        "\n[[workspaces.destinations]]\nid = \"{id}\"\nname = \"{id}\"\ntype = \"webhook\"\nowner = \"team@example.test\"\n[workspaces.destinations.settings]\nurl = \"{url}\"\nbatch = {batch}\n"
    )
}

fn connection_toml(id: &str, destination: &str) -> String {
    format!(
        "\n[[workspaces.connections]]\nid = \"{id}\"\nsources = [\"*\"]\ndestination = \"{destination}\"\n[workspaces.connections.delivery]\nbatch_events_max = 50\nbatch_age_ms = 20\nrequest_timeout_ms = 1000\n"
    )
}

async fn send_events(
    server: &TestServer,
    prefix: &str,
    count: usize,
    poison_at: Option<usize>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(25) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|&index| {
                let id = format!("{prefix}-{index}");
                ids.push(id.clone());
                let name = if Some(index) == poison_at { "Poison" } else { "Viewed" };
                json!({"type": "track", "event": name, "userId": format!("u{}", index % 7), "messageId": id})
            })
            .collect();
        let (status, body) = post(server, "/v1/batch", &json!({ "batch": batch })).await;
        assert_eq!(status, 200, "{body}");
    }
    ids
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(server: &TestServer, connection: &str) -> Value {
    let (code, body) = admin_get(
        server,
        &format!("/api/v1/workspaces/demo/connections/{connection}"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    body["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_event_goes_alone_to_the_dlq_and_replay_delivers_it() {
    let receiver = Receiver::start().await;
    receiver.set(Mode::RejectPoison);
    let extra =
        destination_toml("hook", &receiver.url(), true) + &connection_toml("to-hook", "hook");
    let mut server = TestServer::start(&extra);
    server.wait_ready();
    let ids = send_events(&server, "p", 100, Some(37)).await;
    let expected: HashSet<String> = ids.iter().filter(|id| *id != "p-37").cloned().collect();
    wait_for("the good events", Duration::from_secs(30), || {
        expected.is_subset(&receiver.ids())
    })
    .await;
    let start = Instant::now();
    loop {
        let status = status(&server, "to-hook").await;
        if status["dlq_size"] == 1 {
            assert!(
                status["last_errors"].to_string().contains("HTTP 400"),
                "{status}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!receiver.ids().contains("p-37"));
    let (code, listing) =
        admin_get(&server, "/api/v1/workspaces/demo/connections/to-hook/dlq").await;
    assert_eq!(code, 200);
    let entries = listing["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listing}");
    assert_eq!(entries[0]["message_id"], "p-37");
    assert!(
        entries[0]["error"].as_str().unwrap().contains("poison"),
        "{listing}"
    );
    let entry_id = entries[0]["id"].as_str().unwrap().to_string();
    let (code, entry) = admin_get(
        &server,
        &format!("/api/v1/workspaces/demo/connections/to-hook/dlq/{entry_id}"),
    )
    .await;
    assert_eq!(
        (code, entry["event"]["event"].as_str()),
        (200, Some("Poison"))
    );
    let (code, _) = admin_post(
        &server,
        "/api/v1/workspaces/demo/connections/to-hook/dlq/replay",
        &json!({}),
    )
    .await;
    assert_eq!(code, 400, "neither ids nor all");

    receiver.set(Mode::Ok);
    let (code, job) = admin_post(
        &server,
        "/api/v1/workspaces/demo/connections/to-hook/dlq/replay",
        &json!({"all": true}),
    )
    .await;
    assert_eq!(code, 202, "{job}");
    wait_for("the replayed poison event", Duration::from_secs(30), || {
        receiver.ids().contains("p-37")
    })
    .await;
    let job_path = format!(
        "/api/v1/workspaces/demo/connections/to-hook/dlq/replays/{}",
        job["id"].as_str().unwrap()
    );
    let start = Instant::now();
    loop {
        let (_, progress) = admin_get(&server, &job_path).await;
        if progress["state"] == "done" {
            assert_eq!(
                (progress["sent"].as_u64(), progress["failed"].as_u64()),
                (Some(1), Some(0)),
                "{progress}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{progress}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&server, "to-hook").await["dlq_size"], 0);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_nothing_and_does_not_delay_a_healthy_connection() {
    let mut broken = Receiver::start().await;
    let healthy = Receiver::start().await;
    let extra = destination_toml("broken", &broken.url(), true)
        + &destination_toml("healthy", &healthy.url(), true)
        + &connection_toml("to-broken", "broken")
        + &connection_toml("to-healthy", "healthy");
    let mut server = TestServer::start(&extra);
    server.wait_ready();
    broken.down().await;
    let mut all = Vec::new();
    // Down: the healthy connection gets its events while the broken one cannot deliver.
    let ids = send_events(&server, "down", 300, None).await;
    let sent_at = Instant::now();
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    wait_for(
        "the healthy connection during the outage",
        Duration::from_secs(10),
        || wanted.is_subset(&healthy.ids()),
    )
    .await;
    assert!(sent_at.elapsed() < Duration::from_secs(10));
    all.extend(ids);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = status(&server, "to-broken").await;
    assert_eq!(during["delivered"], 0, "{during}");
    assert!(
        during["lag_records"].as_u64().unwrap() >= 300,
        "the log is the buffer: {during}"
    );
    assert!(
        during["last_errors"].to_string().contains("connection"),
        "{during}"
    );
    // Slow: every request times out (request_timeout_ms = 1000).
    broken.set(Mode::Slow(3000));
    broken.up().await;
    all.extend(send_events(&server, "slow", 100, None).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // 500 + Retry-After.
    broken.set(Mode::Unavailable);
    all.extend(send_events(&server, "busy", 100, None).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(status(&server, "to-broken").await["last_errors"]
        .to_string()
        .contains("HTTP 500"));
    broken.set(Mode::Ok);
    all.extend(send_events(&server, "ok", 100, None).await);
    let everything: HashSet<String> = all.iter().cloned().collect();
    wait_for(
        "every event after recovery",
        Duration::from_secs(90),
        || everything.is_subset(&broken.ids()),
    )
    .await;
    assert!(everything.is_subset(&healthy.ids()));
    let start = Instant::now();
    loop {
        let after = status(&server, "to-broken").await;
        if after["lag_records"] == 0 {
            assert_eq!(after["dlq_size"], 0, "{after}");
            assert_eq!(after["circuit"], "closed", "{after}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{after}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = (
        200,
        client()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        metrics.contains("tandem_delivery_events_total"),
        "metrics list deliveries"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_redelivers_with_the_same_idempotency_key() {
    let receiver = Receiver::start().await;
    receiver.set(Mode::Slow(5));
    let extra =
        destination_toml("hook", &receiver.url(), false) + &connection_toml("to-hook", "hook");
    let mut server = TestServer::start(&extra);
    server.wait_ready();
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        acknowledged.extend(send_events(&server, &format!("k{round}"), 400, None).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill9();
        server.restart_after_kill();
    }
    receiver.set(Mode::Ok);
    let wanted: HashSet<String> = acknowledged.iter().cloned().collect();
    wait_for(
        "every acknowledged event after the restarts",
        Duration::from_secs(60),
        || wanted.is_subset(&receiver.ids()),
    )
    .await;
    for (id, keys) in receiver.shared.received.lock().iter() {
        assert!(
            keys.iter().all(|key| key == id),
            "{id} arrived with keys {keys:?}"
        );
    }
    server.stop();
}
