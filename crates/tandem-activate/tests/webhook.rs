//! The webhook against REAL receivers started by the test on loopback (axum; behind rustls for
//! https, with a certificate the test makes with `rcgen`, signed by a private CA):
//!
//! - https with the CA given in `tls_ca_pem`: delivered; body, `Idempotency-Key` and signature
//!   as received;
//! - https without it: not trusted → a retry naming the certificate problem (never a reject: the
//!   receiver is fine, the setting is not, and the log holds the events meanwhile);
//! - a certificate for another name: refused the same way (the host name is checked);
//! - events sent as the log stored them arrive byte for byte inside the batch body.

mod tls_harness;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::Arc;
use tandem_activate::destination::EventJson;
use tandem_activate::destinations::webhook::{
    signature, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use tandem_activate::{BatchOutcome, BuildContext, Destination, OutboundEvent, Outcome};
use tandem_core::EventType;
use tls_harness::TestCa;

const SECRET: &str = "whsec-0123456789abcdef";

#[derive(Default)]
struct Received {
    requests: Mutex<Vec<(HeaderMap, Bytes)>>,
}

async fn hook(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    received.requests.lock().push((headers, body));
    StatusCode::OK
}

fn app(received: Arc<Received>) -> axum::Router {
    axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(received)
}

/// An https receiver on a free loopback port presenting `cert` (DER) with `key` (DER).
async fn start_https(cert: Vec<u8>, key: Vec<u8>) -> (u16, Arc<Received>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.into()],
            rustls::pki_types::PrivateKeyDer::try_from(key).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Received::default());
    let router = app(received.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate hangs up here: nothing to serve.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, received)
}

async fn start_http() -> (u16, Arc<Received>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Received::default());
    let router = app(received.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (port, received)
}

fn webhook(settings: Value) -> Arc<dyn Destination> {
    let context = BuildContext {
        workspace_id: "ws".into(),
        destination_id: "hook".into(),
        data_dir: std::env::temp_dir(),
    };
    (tandem_activate::destinations::webhook::TYPE.build)(&settings, &context).expect("build")
}

fn event(message_id: &str, json: EventJson) -> OutboundEvent {
    OutboundEvent {
        offset: 1,
        message_id: message_id.into(),
        event_type: EventType::Track,
        source_id: "web".into(),
        received_at_ms: 0,
        user_key: "u1".into(),
        event: json,
    }
}

fn events() -> Vec<OutboundEvent> {
    vec![
        event(
            "m1",
            json!({"type": "track", "event": "Viewed", "messageId": "m1", "userId": "u1"}).into(),
        ),
        event(
            "m2",
            json!({"type": "track", "event": "Bought", "messageId": "m2", "userId": "u1"}).into(),
        ),
    ]
}

#[tokio::test]
async fn https_receiver_with_a_private_ca_gets_signed_batches() {
    let ca = TestCa::new("tandem test CA");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let (port, received) = start_https(server.cert_der, server.key_der).await;
    let destination = webhook(json!({
        "url": format!("https://127.0.0.1:{port}/hook"),
        "tls_ca_pem": ca.pem(),
        "signing_secret": SECRET,
    }));
    let batch = events();
    assert_eq!(
        destination.send(&batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let (headers, body) = {
        let requests = received.requests.lock();
        assert_eq!(requests.len(), 1);
        requests[0].clone()
    };
    let body_json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body_json["batch"][1]["event"], "Bought");
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
    assert!(header(IDEMPOTENCY_HEADER).starts_with("batch-"));
    let timestamp: i64 = header(TIMESTAMP_HEADER).parse().unwrap();
    assert_eq!(
        header(SIGNATURE_HEADER),
        signature(SECRET, timestamp, &body),
        "the signature covers the body as received"
    );

    // By host name as well: the certificate names localhost too.
    let by_name = webhook(json!({
        "url": format!("https://localhost:{port}/hook"),
        "tls_ca_pem": ca.pem(),
    }));
    assert_eq!(
        by_name.send(&batch[..1]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(received.requests.lock().len(), 2);
}

/// Sending through `destination` is retried, with an error that names the certificate.
async fn assert_certificate_retry(destination: &dyn Destination, what: &str) {
    match destination.send(&events()).await {
        BatchOutcome::All(Outcome::Retry { error, .. }) => assert!(
            error.to_lowercase().contains("certificate"),
            "{what}: the error names the certificate: {error}"
        ),
        other => panic!("{what} must be retried, not {other:?}"),
    }
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_is_a_retry_naming_the_problem() {
    let ca = TestCa::new("tandem test CA");
    let server = ca.server(&["127.0.0.1"]);
    let (port, received) = start_https(server.cert_der, server.key_der).await;
    let url = format!("https://127.0.0.1:{port}/hook");
    let untrusted = webhook(json!({"url": url}));
    assert_certificate_retry(untrusted.as_ref(), "an untrusted certificate").await;
    let other_ca = TestCa::new("another CA");
    let wrong_ca = webhook(json!({"url": url, "tls_ca_pem": other_ca.pem()}));
    assert!(matches!(
        wrong_ca.send(&events()).await,
        BatchOutcome::All(Outcome::Retry { .. })
    ));
    // Issued for 127.0.0.1 only: `localhost` is another name.
    let misnamed = webhook(json!({
        "url": format!("https://localhost:{port}/hook"),
        "tls_ca_pem": ca.pem(),
    }));
    assert_certificate_retry(misnamed.as_ref(), "a misnamed certificate").await;
    assert!(received.requests.lock().is_empty(), "nothing was served");
}

#[test]
fn tls_settings_are_checked() {
    let problems = |settings: Value| -> Vec<String> {
        (tandem_activate::destinations::webhook::TYPE.validate)(&settings)
            .unwrap_err()
            .into_iter()
            .map(|problem| format!("{}: {}", problem.field, problem.message))
            .collect()
    };
    let ca = TestCa::new("tandem test CA");
    assert!((tandem_activate::destinations::webhook::TYPE.validate)(
        &json!({"url": "https://hooks.example.test/x", "tls_ca_pem": ca.pem()})
    )
    .is_ok());
    let not_pem = problems(json!({"url": "https://hooks.example.test/x", "tls_ca_pem": "hello"}));
    assert_eq!(not_pem.len(), 1, "{not_pem:?}");
    assert!(not_pem[0].starts_with("tls_ca_pem: "), "{not_pem:?}");
    let plain = problems(json!({"url": "http://hooks.example.test/x", "tls_ca_pem": ca.pem()}));
    assert_eq!(plain, ["tls_ca_pem: only for an https:// URL"]);
}

#[tokio::test]
async fn events_sent_as_stored_arrive_byte_for_byte() {
    let (port, received) = start_http().await;
    let destination = webhook(json!({"url": format!("http://127.0.0.1:{port}/hook")}));
    // As collect stores them: key order and spacing of the client kept.
    let first = r#"{"userId":"u1","type":"track","event":"Viewed","properties":{ "b": 2, "a": 1 },"messageId":"m1"}"#;
    let second =
        r#"{"messageId":"m2","type":"identify","traits":{"name":"Ada \u00e9"},"userId":"u1"}"#;
    let batch = vec![
        event(
            "m1",
            EventJson::stored(Bytes::from_static(first.as_bytes())),
        ),
        event(
            "m2",
            EventJson::stored(Bytes::from_static(second.as_bytes())),
        ),
    ];
    assert_eq!(
        destination.send(&batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let first_body = received.requests.lock()[0].1.clone();
    assert_eq!(
        first_body,
        Bytes::from(format!("{{\"batch\":[{first},{second}]}}")),
        "the stored bytes, unparsed"
    );
    assert!(batch[0].event.is_stored());
    let single = webhook(json!({"url": format!("http://127.0.0.1:{port}/hook"), "batch": false}));
    assert_eq!(
        single.send(&batch[1..]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let requests = received.requests.lock();
    assert_eq!(requests[1].1, Bytes::from(second));
    assert_eq!(
        requests[1].0.get(IDEMPOTENCY_HEADER).unwrap(),
        "m2",
        "a lone event's key is its messageId"
    );
}
