//! `run` against a small Segment-like receiver started on loopback: what the generator reports
//! must match what the receiver saw, status by status, and the acknowledged-ids file must list
//! exactly the events the receiver answered 200 for.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tandem_load::{LoadError, LoadOptions, Snapshot};

const WRITE_KEY: &str = "test-key";

/// How the receiver answers the n-th request (counting from 1).
#[derive(Clone, Copy)]
enum Mode {
    AlwaysOk,
    /// Every n-th request: 503 with `Retry-After: 0`, nothing stored.
    PushBackEvery(u64),
    /// Every n-th request: 400 with a Segment-style error body.
    RejectEvery(u64),
    /// Every request answered 200 after this long, like a server slower than the target rate.
    SlowOk(Duration),
}

#[derive(Default)]
struct Seen {
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    /// messageIds of events in batches answered 200, in arrival order.
    stored_ids: Vec<String>,
}

struct Receiver {
    mode: Mode,
    seen: Mutex<Seen>,
}

async fn batch(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    let expected = format!("Basic {}", base64_of(&format!("{WRITE_KEY}:")));
    if headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        != Some(expected.as_str())
    {
        receiver
            .seen
            .lock()
            .unwrap()
            .statuses
            .entry(401)
            .and_modify(|count| *count += 1)
            .or_insert(1);
        return (StatusCode::UNAUTHORIZED, "{\"success\":false}").into_response();
    }
    if let Mode::SlowOk(delay) = receiver.mode {
        tokio::time::sleep(delay).await;
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(&body).expect("the generator sends valid JSON");
    assert!(parsed["sentAt"].is_string());
    let ids: Vec<String> = parsed["batch"]
        .as_array()
        .expect("a batch array")
        .iter()
        .map(|event| event["messageId"].as_str().expect("messageId").to_owned())
        .collect();
    let mut seen = receiver.seen.lock().unwrap();
    seen.requests += 1;
    let status = match receiver.mode {
        Mode::PushBackEvery(every) if seen.requests % every == 0 => 503,
        Mode::RejectEvery(every) if seen.requests % every == 0 => 400,
        _ => 200,
    };
    *seen.statuses.entry(status).or_default() += 1;
    match status {
        200 => {
            seen.stored_ids.extend(ids);
            (StatusCode::OK, "{\"success\":true}").into_response()
        }
        503 => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "0")],
            "{\"success\":false}",
        )
            .into_response(),
        _ => (
            StatusCode::BAD_REQUEST,
            "{\"success\":false,\"code\":\"invalid_batch\"}",
        )
            .into_response(),
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn start_receiver(mode: Mode) -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        mode,
        seen: Mutex::new(Seen::default()),
    });
    let app = Router::new()
        .route("/v1/batch", post(batch))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), receiver)
}

fn options(url: String) -> LoadOptions {
    LoadOptions {
        url,
        write_key: WRITE_KEY.into(),
        concurrency: 4,
        batch_events: 50,
        event_bytes: 1000,
        duration: Duration::from_millis(1000),
        warmup: Duration::ZERO,
        users: 1000,
        ..LoadOptions::default()
    }
}

fn read_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every acknowledged id once, and exactly the ids the receiver stored.
fn assert_acked_file_matches(path: &Path, receiver: &Receiver) {
    let acked = read_ids(path);
    let stored = receiver.seen.lock().unwrap().stored_ids.clone();
    let acked_set: HashSet<&String> = acked.iter().collect();
    let stored_set: HashSet<&String> = stored.iter().collect();
    assert_eq!(acked_set.len(), acked.len(), "an id was acknowledged twice");
    assert_eq!(
        stored_set.len(),
        stored.len(),
        "the receiver stored an id twice"
    );
    assert!(
        acked_set == stored_set,
        "acked file ({}) differs from stored ids ({})",
        acked.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_match_what_the_receiver_stored() {
    let (url, receiver) = start_receiver(Mode::AlwaysOk).await;
    let directory = tempfile::tempdir().unwrap();
    let acked_path = directory.path().join("acked.txt");
    let report = tandem_load::run(
        LoadOptions {
            record_acked: Some(acked_path.clone()),
            ..options(url)
        },
        None,
    )
    .await
    .unwrap();
    println!("{report}");
    let seen = receiver.seen.lock().unwrap().requests;
    assert!(report.requests_ok > 0);
    assert_eq!(report.requests_ok, seen);
    assert_eq!(report.events_sent_ok, seen * 50);
    assert!(report.requests_failed_by_status.is_empty());
    assert_eq!(
        (
            report.transport_errors,
            report.retries,
            report.warmup_events_ok
        ),
        (0, 0, 0)
    );
    assert!(report.bytes_sent >= report.events_sent_ok * 900);
    assert!(report.latency_us.p50 > 0 && report.latency_us.p50 <= report.latency_us.max);
    assert_eq!(report.to_json()["events_sent_ok"], report.events_sent_ok);
    assert_acked_file_matches(&acked_path, &receiver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushback_is_retried_and_counted() {
    let (url, receiver) = start_receiver(Mode::PushBackEvery(3)).await;
    let directory = tempfile::tempdir().unwrap();
    let acked_path = directory.path().join("acked.txt");
    let report = tandem_load::run(
        LoadOptions {
            record_acked: Some(acked_path.clone()),
            retry_on_pushback: true,
            ..options(url)
        },
        None,
    )
    .await
    .unwrap();
    println!("{report}");
    let seen = receiver.seen.lock().unwrap();
    let pushed_back = seen.statuses[&503];
    assert_eq!(
        report.requests_failed_by_status,
        BTreeMap::from([(503, pushed_back)])
    );
    assert_eq!(report.requests_ok, seen.statuses[&200]);
    assert_eq!(report.events_sent_ok, seen.stored_ids.len() as u64);
    // Every pushed-back batch is resent, except those whose retry would start after the end.
    assert!(
        report.retries <= pushed_back && report.retries + 4 >= pushed_back,
        "{} retries for {pushed_back} pushbacks",
        report.retries
    );
    drop(seen);
    assert_acked_file_matches(&acked_path, &receiver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushback_without_retry_drops_the_batch() {
    let (url, receiver) = start_receiver(Mode::PushBackEvery(2)).await;
    let report = tandem_load::run(
        LoadOptions {
            retry_on_pushback: false,
            ..options(url)
        },
        None,
    )
    .await
    .unwrap();
    let seen = receiver.seen.lock().unwrap();
    assert_eq!(report.retries, 0);
    assert_eq!(
        report.requests_failed_by_status.get(&503).copied(),
        seen.statuses.get(&503).copied()
    );
    assert_eq!(report.events_sent_ok, seen.stored_ids.len() as u64);
    assert_eq!(report.requests_ok + report.requests_failed(), seen.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_counted_with_the_servers_reason() {
    let (url, receiver) = start_receiver(Mode::RejectEvery(2)).await;
    let report = tandem_load::run(options(url), None).await.unwrap();
    let seen = receiver.seen.lock().unwrap();
    assert_eq!(
        report.requests_failed_by_status.get(&400).copied(),
        seen.statuses.get(&400).copied()
    );
    assert!(report.error_samples[&400].contains("invalid_batch"));
    assert_eq!(report.retries, 0, "a 400 is never retried");
    assert_eq!(report.events_sent_ok, seen.stored_ids.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_write_key_is_reported_as_401() {
    let (url, receiver) = start_receiver(Mode::AlwaysOk).await;
    let report = tandem_load::run(
        LoadOptions {
            write_key: "wrong".into(),
            duration: Duration::from_millis(300),
            ..options(url)
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.events_sent_ok, 0);
    assert_eq!(
        report
            .requests_failed_by_status
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![401]
    );
    assert_eq!(
        report.requests_failed_by_status[&401],
        receiver.seen.lock().unwrap().statuses[&401]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_exactly_the_scheduled_requests() {
    let (url, receiver) = start_receiver(Mode::AlwaysOk).await;
    // 5,000 events/s in batches of 100 for 1 s: requests due at 0, 20, ..., 980 ms.
    let options = LoadOptions {
        rate_events_per_second: Some(5000),
        batch_events: 100,
        ..options(url)
    };
    let report = tandem_load::run(options, None).await.unwrap();
    assert_eq!(report.requests_ok, receiver.seen.lock().unwrap().requests);
    // All 50 unless the machine stalled past the end; either way none is sent beyond the schedule.
    assert_eq!(report.requests_ok + report.requests_behind_schedule, 50);
    assert!(report.requests_ok > 0);
    assert_eq!(report.target_events_per_second, Some(5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_slow_server_leaves_behind_are_reported() {
    let (url, receiver) = start_receiver(Mode::SlowOk(Duration::from_millis(50))).await;
    // 100 requests due in 1 s, but one connection to a 50 ms server can carry only about 20.
    let options = LoadOptions {
        rate_events_per_second: Some(10_000),
        batch_events: 100,
        concurrency: 1,
        ..options(url)
    };
    let report = tandem_load::run(options, None).await.unwrap();
    println!("{report}");
    assert_eq!(report.requests_ok, receiver.seen.lock().unwrap().requests);
    assert_eq!(report.requests_ok + report.requests_behind_schedule, 100);
    assert!(report.requests_behind_schedule > 0);
    // Measured from the due time, queueing behind the slow server shows in the latency.
    assert!(
        report.latency_us.max > 200_000,
        "max latency {} µs",
        report.latency_us.max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_is_reported_apart_and_progress_is_shown() {
    let (url, receiver) = start_receiver(Mode::AlwaysOk).await;
    let snapshots: Mutex<Vec<Snapshot>> = Mutex::new(Vec::new());
    let progress = |snapshot: &Snapshot| snapshots.lock().unwrap().push(snapshot.clone());
    let options = LoadOptions {
        warmup: Duration::from_millis(600),
        duration: Duration::from_millis(800),
        ..options(url)
    };
    let report = tandem_load::run(options, Some(&progress)).await.unwrap();
    assert!(report.warmup_events_ok > 0 && report.events_sent_ok > 0);
    assert_eq!(
        report.warmup_events_ok + report.events_sent_ok,
        receiver.seen.lock().unwrap().stored_ids.len() as u64
    );
    assert!(
        report.elapsed >= Duration::from_millis(700),
        "the measured window excludes the warm-up: {:?}",
        report.elapsed
    );
    let snapshots = snapshots.into_inner().unwrap();
    assert!(!snapshots.is_empty());
    assert!(snapshots[0].events_ok > 0 && snapshots[0].elapsed >= Duration::from_secs(1));
}

#[tokio::test]
async fn an_unreachable_server_fails_fast() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let error = tandem_load::run(options(url), None).await.unwrap_err();
    assert!(matches!(error, LoadError::Connect { .. }), "{error}");
}

#[tokio::test]
async fn impossible_batches_are_refused_before_sending() {
    let (url, receiver) = start_receiver(Mode::AlwaysOk).await;
    let error = tandem_load::run(
        LoadOptions {
            batch_events: 1000,
            event_bytes: 1000,
            ..options(url)
        },
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, LoadError::InvalidOptions(_)), "{error}");
    assert_eq!(receiver.seen.lock().unwrap().requests, 0);
}
