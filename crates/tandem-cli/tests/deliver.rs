//! Delivery through the real binary to a REAL HTTP receiver started by the test (axum on a free
//! loopback port) whose behaviour the test switches: down (listener closed), slow, 500 with
//! `Retry-After`, 400 for a poison event, ok.
//!
//! - outage: the receiver is down, then slow, then answers 500 + Retry-After, then heals: every
//!   event is delivered, none dead-lettered, and a second, healthy connection gets the events of
//!   every phase while the broken one still fails (none late because of it);
//! - poison: one event refused with 400 goes alone to the DLQ, the rest are delivered; after
//!   the receiver is fixed, a replay through the API delivers it and empties the DLQ; the same
//!   for an event a transformation throws on, replayed after the transformation is fixed;
//! - kill -9 during delivery under load: after restart every acknowledged event is delivered at
//!   least once; an event arrives twice only if it lay between the committed offset and the
//!   log's end at a kill (the in-flight window), and every request's `Idempotency-Key` is its
//!   event's messageId.
//!
//! Durations are scaled down from the minutes to seconds: the outage lasts
//! `TANDEM_TEST_OUTAGE_SECONDS` (default 5; set 300 for the five minutes).

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
    /// Requests answered per mode (`"slow"`, `"unavailable"`, …).
    hits: Mutex<HashMap<&'static str, u64>>,
    /// messageId → the event as last delivered.
    events: Mutex<HashMap<String, Value>>,
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
    let name = match mode {
        Mode::Ok => "ok",
        Mode::Slow(_) => "slow",
        Mode::Unavailable => "unavailable",
        Mode::RejectPoison => "reject_poison",
    };
    *shared.hits.lock().entry(name).or_default() += 1;
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
    let mut delivered = shared.events.lock();
    for event in events {
        let id = event["messageId"].as_str().unwrap().to_string();
        at.entry(id.clone()).or_insert_with(Instant::now);
        delivered.insert(id.clone(), event);
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
            hits: Mutex::default(),
            events: Mutex::default(),
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

    fn hits(&self, mode: &str) -> u64 {
        self.shared.hits.lock().get(mode).copied().unwrap_or(0)
    }

    fn event(&self, id: &str) -> Option<Value> {
        self.shared.events.lock().get(id).cloned()
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

/// How long the receiver stays down in the outage test.
fn outage() -> Duration {
    let seconds = std::env::var("TANDEM_TEST_OUTAGE_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(seconds)
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

/// The healthy connection gets a phase's events while the broken one still fails: a failing
/// destination never makes another late.
async fn healthy_gets(healthy: &Receiver, broken: &Receiver, ids: &[String], phase: &str) {
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    wait_for(
        &format!("the healthy connection during the {phase} phase"),
        Duration::from_secs(30),
        || wanted.is_subset(&healthy.ids()),
    )
    .await;
    assert!(
        wanted.is_disjoint(&broken.ids()),
        "the broken receiver got {phase} events before the healthy one had them all"
    );
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
    // Down (listener closed) for the whole outage, with events arriving all along.
    let down_since = Instant::now();
    let mut round = 0;
    while down_since.elapsed() < outage() {
        let ids = send_events(&server, &format!("down{round}"), 50, None).await;
        healthy_gets(&healthy, &broken, &ids, "down").await;
        all.extend(ids);
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = status(&server, "to-broken").await;
    assert_eq!(during["delivered"], 0, "{during}");
    assert!(
        during["lag_records"].as_u64().unwrap() >= all.len() as u64,
        "the log is the buffer: {during}"
    );
    assert!(
        during["last_errors"].to_string().contains("connection"),
        "{during}"
    );
    assert_ne!(during["circuit"], "closed", "{during}");
    // Slow: every request times out (request_timeout_ms = 1000).
    broken.set(Mode::Slow(3000));
    broken.up().await;
    let ids = send_events(&server, "slow", 100, None).await;
    healthy_gets(&healthy, &broken, &ids, "slow").await;
    all.extend(ids);
    // The circuit's next probe comes within its open period (at most 5 s).
    wait_for(
        "requests to the slow receiver",
        Duration::from_secs(30),
        || broken.hits("slow") >= 2,
    )
    .await;
    assert!(status(&server, "to-broken").await["last_errors"]
        .to_string()
        .contains("timeout"));
    // 500 + Retry-After.
    broken.set(Mode::Unavailable);
    let ids = send_events(&server, "busy", 100, None).await;
    healthy_gets(&healthy, &broken, &ids, "500").await;
    all.extend(ids);
    wait_for("requests answered 500", Duration::from_secs(30), || {
        broken.hits("unavailable") >= 2
    })
    .await;
    assert!(status(&server, "to-broken").await["last_errors"]
        .to_string()
        .contains("HTTP 500"));
    broken.set(Mode::Ok);
    all.extend(send_events(&server, "ok", 100, None).await);
    let everything: HashSet<String> = all.iter().cloned().collect();
    wait_for(
        "every event after recovery",
        Duration::from_secs(60),
        || everything.is_subset(&broken.ids()),
    )
    .await;
    assert!(everything.is_subset(&healthy.ids()));
    let start = Instant::now();
    loop {
        let after = status(&server, "to-broken").await;
        if after["lag_records"] == 0 {
            assert_eq!(after["dlq_size"], 0, "zero lost: {after}");
            assert_eq!(after["circuit"], "closed", "{after}");
            assert!(
                after["delivered"].as_u64().unwrap() >= everything.len() as u64,
                "{after}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{after}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = client().get(server.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
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
    let offset_file = server
        .data
        .join("logs/demo/consumers/deliver.to-hook.offset");
    let mut acknowledged = Vec::new();
    // Per kill: the committed offset the next start resumes at, and the events acknowledged.
    let mut kills = Vec::new();
    for round in 0..3 {
        acknowledged.extend(send_events(&server, &format!("k{round}"), 400, None).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill9();
        let committed: u64 = std::fs::read_to_string(&offset_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        kills.push((committed, acknowledged.len()));
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
    server.stop();
    let offsets: HashMap<String, u64> = server
        .export()
        .iter()
        .map(|line| {
            (
                line["event"]["messageId"].as_str().unwrap().to_string(),
                line["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    // The in-flight window of each kill: from the committed offset to the log's end then.
    let windows: Vec<(u64, u64)> = kills
        .iter()
        .map(|&(committed, count)| (committed, offsets[&acknowledged[count - 1]] + 1))
        .collect();
    let mut duplicates = 0;
    for (id, keys) in receiver.shared.received.lock().iter() {
        assert!(
            keys.iter().all(|key| key == id),
            "{id} arrived with keys {keys:?}"
        );
        if keys.len() > 1 {
            duplicates += 1;
            let offset = offsets[id];
            assert!(
                windows
                    .iter()
                    .any(|&(committed, end)| (committed..end).contains(&offset)),
                "{id} (offset {offset}) arrived {} times but lay below every committed offset: {windows:?}",
                keys.len()
            );
        }
    }
    let window_total: u64 = windows.iter().map(|(committed, end)| end - committed).sum();
    assert!(
        duplicates as u64 <= window_total,
        "{duplicates} duplicates, in-flight windows {windows:?}"
    );
}

/// A transformation throws on one event: that event alone goes to the DLQ with the error, the
/// rest flow; the transformation is fixed through the API; a replay runs the fixed code on the
/// stored original and delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_a_transformation_throws_on_is_replayed_after_the_fix() {
    use reqwest::Method;
    let receiver = Receiver::start().await;
    let mut server = TestServer::start(&destination_toml("hook", &receiver.url(), true));
    server.wait_ready();
    let base = "/api/v1/workspaces/demo";
    let throwing = "function transform(e) {\n  if (e.event === 'Poison') throw new Error('cannot price poison');\n  e.properties = {shaped: 'v1'};\n  return e;\n}";
    let (code, created) = admin_post(
        &server,
        &format!("{base}/connections"),
        &json!({"id": "shaped", "sources": ["*"], "destination": "hook", "transformation": throwing,
                "delivery": {"batch_events_max": 20, "batch_age_ms": 20}}),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let ids = send_events(&server, "x", 40, Some(13)).await;
    let expected: HashSet<String> = ids.iter().filter(|id| *id != "x-13").cloned().collect();
    wait_for(
        "the events around the poison one",
        Duration::from_secs(30),
        || expected.is_subset(&receiver.ids()),
    )
    .await;
    let dlq = format!("{base}/connections/shaped/dlq");
    let start = Instant::now();
    let listing = loop {
        let (_, listing) = admin_get(&server, &dlq).await;
        if listing["dlq_size"] == 1 {
            break listing;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{listing}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listing["entries"][0]["message_id"], "x-13");
    assert!(
        listing["entries"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot price poison"),
        "{listing}"
    );
    assert!(!receiver.ids().contains("x-13"));
    assert_eq!(
        receiver.event("x-12").unwrap()["properties"]["shaped"],
        "v1"
    );

    let fixed =
        "function transform(e) {\n  e.properties = {shaped: 'v2', was: e.event};\n  return e;\n}";
    let (code, patched) = admin_call(
        &server,
        Method::PATCH,
        &format!("{base}/connections/shaped"),
        Some(&json!({"transformation": fixed})),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    let (code, job) = admin_post(&server, &format!("{dlq}/replay"), &json!({"all": true})).await;
    assert_eq!(code, 202, "{job}");
    wait_for("the replayed event", Duration::from_secs(30), || {
        receiver.ids().contains("x-13")
    })
    .await;
    let replayed = receiver.event("x-13").unwrap();
    assert_eq!(
        replayed["properties"],
        json!({"shaped": "v2", "was": "Poison"}),
        "the fixed code ran on the stored original: {replayed}"
    );
    let start = Instant::now();
    while status(&server, "shaped").await["dlq_size"] != 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the DLQ empties");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop();
}

/// A connection's JavaScript transformation shapes what is delivered; an event it throws on goes
/// to the DLQ with the message; the test route shows the same before anything is sent (on
/// samples and on recent events); the CLI lists and discards dead letters and follows a backfill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transformation_shapes_dead_letters_and_can_be_tried_first_and_the_cli_manages_the_dlq() {
    let receiver = Receiver::start().await;
    let code = "function transform(e, c) {\n  if (e.event === 'Poison') throw new Error('no poison here');\n  e.properties = Object.assign({}, e.properties, {via: c.connectionId, source: c.sourceId});\n  return e;\n}";
    let connection = connection_toml("to-hook", "hook").replace(
        "[workspaces.connections.delivery]",
        &format!("transformation = {code:?}\n[workspaces.connections.delivery]"),
    );
    let extra = destination_toml("hook", &receiver.url(), true) + &connection;
    let mut server = TestServer::start(&extra);
    server.wait_ready();
    let test_path = "/api/v1/workspaces/demo/transformations/test";

    // Tried on samples first: the connection's code, its context, a throw with its stack.
    let (code_status, tried) = admin_post(
        &server,
        test_path,
        &json!({"connection": "to-hook", "source": "web", "events": [
            {"type": "track", "event": "Viewed", "properties": {"a": 1}},
            {"type": "track", "event": "Poison"},
        ]}),
    )
    .await;
    assert_eq!(code_status, 200, "{tried}");
    assert_eq!(tried["compile_error"], Value::Null);
    let first = &tried["results"][0];
    assert_eq!(
        first["output"][0]["properties"],
        json!({"a": 1, "via": "to-hook", "source": "web"}),
        "{tried}"
    );
    let second = &tried["results"][1];
    assert_eq!(second["error"]["kind"], "thrown", "{tried}");
    assert!(second["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no poison here"));
    assert!(
        second["error"]["stack"]
            .as_str()
            .unwrap()
            .contains("transform"),
        "{tried}"
    );
    assert_eq!(
        tried["summary"],
        json!({"events": 2, "outputs": 1, "dropped": 0, "failed": 1})
    );

    // Delivered through it: shaped events arrive, the poison event is dead-lettered.
    let ids = send_events(&server, "t", 30, Some(5)).await;
    let expected: HashSet<String> = ids.iter().filter(|id| *id != "t-5").cloned().collect();
    wait_for("the shaped events", Duration::from_secs(30), || {
        expected.is_subset(&receiver.ids())
    })
    .await;
    let shaped = receiver.event("t-7").unwrap();
    assert_eq!(shaped["properties"]["via"], "to-hook", "{shaped}");
    assert_eq!(shaped["properties"]["source"], "web", "{shaped}");
    wait_for("the dead letter", Duration::from_secs(20), || {
        receiver.ids().len() == 29
    })
    .await;
    let start = Instant::now();
    let listing = loop {
        let (code_status, listing) =
            admin_get(&server, "/api/v1/workspaces/demo/connections/to-hook/dlq").await;
        assert_eq!(code_status, 200, "{listing}");
        if listing["dlq_size"] == 1 {
            break listing;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{listing}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = listing["entries"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("no poison here") && error.contains("transform"),
        "{error}"
    );
    assert!(!receiver.ids().contains("t-5"));

    // Tried on the most recent events, filtered as the connection filters: other code, no sending.
    let (code_status, recent) = admin_post(
        &server,
        test_path,
        &json!({"connection": "to-hook", "recent": 3, "code": "function transform(e) { return null }"}),
    )
    .await;
    assert_eq!(code_status, 200, "{recent}");
    let inputs: Vec<&str> = recent["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["input"]["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["t-27", "t-28", "t-29"], "{recent}");
    assert_eq!(recent["summary"]["dropped"], 3, "{recent}");
    let (code_status, broken) = admin_post(
        &server,
        test_path,
        &json!({"code": "function transform(e) {", "events": [{"event": "x"}]}),
    )
    .await;
    assert_eq!(code_status, 200, "{broken}");
    assert_eq!(broken["compile_error"]["kind"], "syntax_error", "{broken}");
    assert_eq!(
        broken["results"][0]["error"]["kind"], "syntax_error",
        "{broken}"
    );
    for (body, problem) in [
        (
            json!({"code": "function transform(e) { return e }", "events": [], "recent": 2}),
            "not both",
        ),
        (json!({"events": [{}]}), "give `code`"),
        (
            json!({"code": "function transform(e) { return e }", "events": [1]}),
            "events[0]",
        ),
        (
            json!({"code": "function transform(e) { return e }", "recent": 1000}),
            "`recent`",
        ),
        (
            json!({"connection": "nope", "recent": 1}),
            "connection demo/nope",
        ),
    ] {
        let (code_status, answer) = admin_post(&server, test_path, &body).await;
        assert!(
            matches!(code_status, 400 | 404),
            "{body} → {code_status} {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(problem),
            "{body} → {answer}"
        );
    }
    assert!(!receiver.ids().contains("t-5"), "testing sends nothing");

    // The CLI: list, then discard the dead letter; a backfill of the last minute, followed.
    let url = server.url("");
    let api = [
        "--url",
        url.as_str(),
        "--token",
        ADMIN_TOKEN,
        "--workspace",
        "demo",
        "--connection",
        "to-hook",
    ];
    let listed = run_cli_json(&[&["dlq", "list"][..], &api[..]].concat());
    assert_eq!(listed["entries"][0]["message_id"], "t-5", "{listed}");
    let discarded = run_cli_json(&[&["dlq", "discard", "--all"][..], &api[..]].concat());
    assert_eq!(discarded["discarded"], 1, "{discarded}");
    let mut unknown_connection = api;
    unknown_connection[unknown_connection.len() - 1] = "nope";
    let missing = run_cli(&[&["dlq", "list"][..], &unknown_connection[..]].concat());
    assert_eq!(
        missing.status.code(),
        Some(1),
        "an unknown connection fails"
    );
    let now = tandem_core::time_util::now_ms();
    let from = tandem_core::time_util::format_iso8601_ms(now - 60_000);
    let to = tandem_core::time_util::format_iso8601_ms(now + 1_000);
    let before = receiver
        .shared
        .received
        .lock()
        .get("t-7")
        .map_or(0, Vec::len);
    let job = run_cli_json(
        &[
            &[
                "backfill",
                "start",
                "--from",
                from.as_str(),
                "--to",
                to.as_str(),
            ][..],
            &api[..],
        ]
        .concat(),
    );
    assert_eq!(job["state"], "done", "followed to the end: {job}");
    assert_eq!(
        job["sent"], 29,
        "the 29 good events again; the poison one is dead-lettered again: {job}"
    );
    let after = receiver
        .shared
        .received
        .lock()
        .get("t-7")
        .map_or(0, Vec::len);
    assert_eq!(after, before + 1, "the backfill delivered t-7 once more");
    server.stop();
}

async fn admin_call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(method, server.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Destinations and connections created through the API deliver; a merge patch changes them
/// (disabled → nothing sent, offset kept; re-enabled → the events arrive; a mapping added →
/// applied); config-declared ones and `id` cannot be changed; deletes are refused while a
/// connection still uses the destination; every change is in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_managed_destinations_and_connections_are_created_patched_and_deleted() {
    use reqwest::Method;
    let receiver = Receiver::start().await;
    let mut server = TestServer::start(&destination_toml("declared", &receiver.url(), true));
    server.wait_ready();
    let base = "/api/v1/workspaces/demo";
    let (code, created) = admin_post(
        &server,
        &format!("{base}/destinations"),
        &json!({"id": "hook", "name": "Hook", "type": "webhook", "owner": "crm@example.test",
                "settings": {"url": receiver.url(), "batch": true, "signing_secret": "whsec-0123456789abcdef"}}),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert!(
        !created.to_string().contains("whsec-"),
        "secrets are not echoed: {created}"
    );
    let (code, created) = admin_post(
        &server,
        &format!("{base}/connections"),
        &json!({"id": "to-hook", "sources": ["*"], "destination": "hook",
                "delivery": {"batch_events_max": 20, "batch_age_ms": 20}}),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let first = send_events(&server, "a", 10, None).await;
    wait_for(
        "events of an API-made connection",
        Duration::from_secs(30),
        || first.iter().all(|id| receiver.ids().contains(id)),
    )
    .await;

    let connection = format!("{base}/connections/to-hook");
    let (code, patched) = admin_call(
        &server,
        Method::PATCH,
        &connection,
        Some(&json!({"enabled": false})),
    )
    .await;
    assert_eq!(
        (code, &patched["enabled"]),
        (200, &json!(false)),
        "{patched}"
    );
    let paused = send_events(&server, "b", 10, None).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        paused.iter().all(|id| !receiver.ids().contains(id)),
        "a disabled connection sends nothing"
    );
    let (code, patched) = admin_call(
        &server,
        Method::PATCH,
        &connection,
        Some(&json!({"enabled": true, "mappings": [{"from": "userId", "to": "properties.who", "op": "copy"}]})),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(
        patched["delivery"]["batch_events_max"], 20,
        "fields not in the patch are kept: {patched}"
    );
    wait_for(
        "the events sent while disabled",
        Duration::from_secs(30),
        || paused.iter().all(|id| receiver.ids().contains(id)),
    )
    .await;
    let mapped = receiver.event("b-3").unwrap();
    assert_eq!(
        mapped["properties"]["who"], mapped["userId"],
        "the new mapping applies: {mapped}"
    );

    let destination = format!("{base}/destinations/hook");
    for (path, patch, status, problem) in [
        (
            destination.as_str(),
            json!({"id": "other"}),
            400,
            "cannot change",
        ),
        (
            destination.as_str(),
            json!({"settings": {"url": "ftp://nope"}}),
            400,
            "settings.url",
        ),
        (destination.as_str(), json!([1]), 400, "merge patch"),
        (
            &format!("{base}/destinations/declared") as &str,
            json!({"enabled": false}),
            409,
            "config file",
        ),
        (
            &format!("{base}/destinations/absent") as &str,
            json!({"enabled": false}),
            404,
            "absent",
        ),
        (
            connection.as_str(),
            json!({"destination": "absent"}),
            400,
            "absent",
        ),
    ] {
        let (code, answer) = admin_call(&server, Method::PATCH, path, Some(&patch)).await;
        assert_eq!(code, status, "{path} {patch} → {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(problem),
            "{path} {patch} → {answer}"
        );
    }
    let (code, answer) = admin_call(
        &server,
        Method::PATCH,
        &destination,
        Some(&json!({"name": "CRM hook", "settings": {"batch": false}})),
    )
    .await;
    assert_eq!(
        (code, &answer["name"]),
        (200, &json!("CRM hook")),
        "{answer}"
    );
    let single = send_events(&server, "c", 3, None).await;
    wait_for(
        "events after the destination changed",
        Duration::from_secs(30),
        || single.iter().all(|id| receiver.ids().contains(id)),
    )
    .await;

    let (code, answer) = admin_call(&server, Method::DELETE, &destination, None).await;
    assert_eq!(code, 409, "still used by to-hook: {answer}");
    assert_eq!(
        admin_call(&server, Method::DELETE, &connection, None)
            .await
            .0,
        204
    );
    assert_eq!(
        admin_call(&server, Method::DELETE, &destination, None)
            .await
            .0,
        204
    );
    assert_eq!(admin_get(&server, &destination).await.0, 404);
    let (code, audit) = admin_get(&server, "/api/v1/audit?workspace=demo").await;
    assert_eq!(code, 200, "{audit}");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .filter(|action| action.starts_with("destination.") || action.starts_with("connection."))
        .collect();
    assert_eq!(
        actions,
        [
            "destination.create",
            "connection.create",
            "connection.update",
            "connection.update",
            "destination.update",
            "connection.delete",
            "destination.delete"
        ],
        "{audit}"
    );
    assert!(
        !audit.to_string().contains("whsec-"),
        "no secret in the audit log"
    );
    server.stop();
}
