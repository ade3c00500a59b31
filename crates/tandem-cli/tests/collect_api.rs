//! Segment HTTP Tracking API conformance, through the real binary: every call type, both auth
//! styles, gzip, CORS, limits, enrichment (timestamps, messageId, context.ip), dedup across
//! restart, partial batch rejection, the settings document.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use tandem_core::time_util::parse_iso8601_ms;

fn iso(ms: i64) -> String {
    tandem_core::time_util::format_iso8601_ms(ms)
}

#[tokio::test]
async fn every_call_type_is_accepted_and_stored_with_its_fields() {
    let server = TestServer::start("");
    let calls = [
        (
            "/v1/track",
            json!({"userId": "u1", "event": "Order Completed", "properties": {"total": 42.5}, "messageId": "m-track"}),
        ),
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": {"email": "a@example.test"}, "messageId": "m-identify"}),
        ),
        (
            "/v1/page",
            json!({"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}, "messageId": "m-page"}),
        ),
        (
            "/v1/screen",
            json!({"userId": "u1", "name": "Settings", "messageId": "m-screen"}),
        ),
        (
            "/v1/group",
            json!({"userId": "u1", "groupId": "g1", "traits": {"plan": "pro"}, "messageId": "m-group"}),
        ),
        (
            "/v1/alias",
            json!({"userId": "u1", "previousId": "a1", "messageId": "m-alias"}),
        ),
    ];
    for (path, body) in &calls {
        let (status, answer) = post(&server, path, body).await;
        assert_eq!((status, answer), (200, json!({"success": true})), "{path}");
    }
    let events = server.events();
    assert_eq!(events.len(), calls.len());
    for ((path, body), stored) in calls.iter().zip(&events) {
        assert_eq!(
            stored["type"],
            path.trim_start_matches("/v1/"),
            "type of {path}"
        );
        assert_eq!(stored["messageId"], body["messageId"]);
        for field in [
            "userId",
            "anonymousId",
            "event",
            "groupId",
            "previousId",
            "properties",
            "traits",
            "name",
        ] {
            if !body[field].is_null() {
                assert_eq!(stored[field], body[field], "{field} of {path}");
            }
        }
        assert!(parse_iso8601_ms(stored["receivedAt"].as_str().unwrap()).is_some());
        assert!(parse_iso8601_ms(stored["timestamp"].as_str().unwrap()).is_some());
    }
}

#[tokio::test]
async fn analytics_next_short_paths_are_the_same_calls() {
    let server = TestServer::start("");
    let calls = [
        (
            "/v1/t",
            "track",
            json!({"userId": "u1", "event": "Clicked", "messageId": "s-t"}),
        ),
        (
            "/v1/i",
            "identify",
            json!({"userId": "u1", "messageId": "s-i"}),
        ),
        (
            "/v1/p",
            "page",
            json!({"anonymousId": "a1", "messageId": "s-p"}),
        ),
        (
            "/v1/s",
            "screen",
            json!({"userId": "u1", "messageId": "s-s"}),
        ),
        (
            "/v1/g",
            "group",
            json!({"userId": "u1", "groupId": "g1", "messageId": "s-g"}),
        ),
        (
            "/v1/a",
            "alias",
            json!({"userId": "u1", "previousId": "a1", "messageId": "s-a"}),
        ),
        (
            "/v1/b",
            "track",
            json!({"batch": [{"type": "track", "userId": "u1", "event": "B", "messageId": "s-b"}]}),
        ),
    ];
    for (path, _, body) in &calls {
        assert_eq!(
            post(&server, path, body).await,
            (200, json!({"success": true})),
            "{path}"
        );
    }
    let events = server.events();
    for ((path, event_type, _), stored) in calls.iter().zip(&events) {
        assert_eq!(stored["type"], *event_type, "type of {path}");
    }
    assert_eq!(
        post(&server, "/v1/t", &json!({"userId": "u1"})).await.0,
        400,
        "the short paths validate the same way"
    );
}

#[tokio::test]
async fn batch_and_import_accept_mixed_calls() {
    let server = TestServer::start("");
    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "A"},
        {"type": "identify", "userId": "u1", "traits": {"name": "Ada"}},
        {"type": "page", "anonymousId": "x", "name": "Pricing"}
    ]});
    assert_eq!(post(&server, "/v1/batch", &batch).await.0, 200);
    assert_eq!(post(&server, "/v1/import", &batch).await.0, 200);
    let events = server.events();
    assert_eq!(events.len(), 6);
    let ids: std::collections::HashSet<_> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        6,
        "a messageId is assigned to each event that had none"
    );
}

#[tokio::test]
async fn write_key_in_body_and_all_credential_failures() {
    let server = TestServer::start("");
    let client = client();
    let body = json!({"writeKey": WRITE_KEY, "userId": "u1", "event": "Body Auth", "messageId": "body-auth"});
    let response = client
        .post(server.url("/v1/track"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let stored = server.events();
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].get("writeKey").is_none(),
        "the write key is a credential and is never stored"
    );

    let response = client
        .post(server.url("/v1/track"))
        .json(&json!({"userId": "u1", "event": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "missing_credentials"
    );

    for _ in 0..3 {
        let response = client
            .post(server.url("/v1/track"))
            .header("authorization", basic("not-a-known-key-0000"))
            .header("origin", "https://shadow.example.test")
            .json(&json!({"userId": "u1", "event": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["code"],
            "unknown_write_key"
        );
    }
    let (status, unknown) = admin_get(&server, "/api/v1/unknown-keys").await;
    assert_eq!(status, 200);
    let rows = unknown["unknown_keys"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["attempts"], 3);
    assert_eq!(rows[0]["last_origin"], "https://shadow.example.test");
    assert_eq!(rows[0]["last_ip"], "127.0.0.1");
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_broken_gzip_is_a_400() {
    let server = TestServer::start("");
    let body = json!({"batch": [{"type": "track", "userId": "u1", "event": "Zipped", "messageId": "gz-1"}]});
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body.to_string().as_bytes()).unwrap();
    let compressed = encoder.finish().unwrap();
    let send = |bytes: Vec<u8>| {
        client()
            .post(server.url("/v1/batch"))
            .header("authorization", basic(WRITE_KEY))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(bytes)
            .send()
    };
    assert_eq!(
        send(compressed.clone()).await.unwrap().status().as_u16(),
        200
    );
    let broken = send(compressed[..compressed.len() / 2].to_vec())
        .await
        .unwrap();
    assert_eq!(broken.status().as_u16(), 400);
    assert!(broken.json::<Value>().await.unwrap()["error"]["code"].is_string());
    assert_eq!(by_message_id(&server.events(), "gz-1").len(), 1);
}

#[tokio::test]
async fn cors_preflight_and_origin_echo() {
    let server = TestServer::start("");
    let client = client();
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/v1/batch"))
        .header("origin", "https://shop.example.test")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example.test"
    );
    assert!(preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "content-type,authorization"
    );
    let response = client
        .post(server.url("/v1/track"))
        .header("origin", "https://shop.example.test")
        .header("authorization", basic(WRITE_KEY))
        .json(&json!({"userId": "u", "event": "e"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example.test"
    );
}

#[tokio::test]
async fn limits_answer_400_with_a_named_problem() {
    let server = TestServer::start("");
    let client = client();
    let send_raw = |path: &'static str, body: Vec<u8>| {
        client
            .post(server.url(path))
            .header("authorization", basic(WRITE_KEY))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let code = |value: &Value| {
        value["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    let invalid = send_raw("/v1/track", b"{not json".to_vec()).await.unwrap();
    assert_eq!(invalid.status().as_u16(), 400);
    assert_eq!(code(&invalid.json().await.unwrap()), "invalid_json");

    let huge = json!({"batch": [{"type": "track", "userId": "u", "event": "x", "properties": {"blob": "x".repeat(600 * 1024)}}]});
    let too_large = send_raw("/v1/batch", huge.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(too_large.status().as_u16(), 400);
    assert_eq!(code(&too_large.json().await.unwrap()), "body_too_large");

    let many: Vec<Value> = (0..2501).map(|i| json!({"type": "track", "userId": "u", "event": "e", "messageId": format!("many-{i}")})).collect();
    let too_many = send_raw("/v1/batch", json!({"batch": many}).to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(too_many.status().as_u16(), 400);
    assert_eq!(
        code(&too_many.json().await.unwrap()),
        "batch_too_many_events"
    );

    let big_event = json!({"batch": [
        {"type": "track", "userId": "u", "event": "ok-before", "messageId": "ok-1"},
        {"type": "track", "userId": "u", "event": "big", "messageId": "big-1", "properties": {"blob": "y".repeat(33 * 1024)}},
        {"type": "track", "userId": "u", "event": "ok-after", "messageId": "ok-2"}
    ]});
    let partial = send_raw("/v1/batch", big_event.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(partial.status().as_u16(), 400);
    let body: Value = partial.json().await.unwrap();
    assert_eq!(code(&body), "invalid_events");
    assert_eq!(body["error"]["details"]["rejected"][0]["index"], 1);
    assert_eq!(
        body["error"]["details"]["rejected"][0]["code"],
        "event_too_large"
    );
    let events = server.events();
    assert_eq!(events.len(), 2, "the valid events of the batch are stored");
    assert!(by_message_id(&events, "big-1").is_empty());
}

#[tokio::test]
async fn invalid_events_are_rejected_alone_with_their_reason() {
    let server = TestServer::start("");
    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "Good", "messageId": "good-1"},
        {"type": "track", "event": "No identity", "messageId": "bad-identity"},
        {"type": "track", "userId": "u1", "messageId": "bad-no-event"},
        {"type": "group", "userId": "u1", "messageId": "bad-no-group"},
        {"type": "alias", "userId": "u1", "messageId": "bad-no-previous"},
        {"type": "track", "userId": "u1", "event": "Long id", "messageId": "m".repeat(101)},
        {"type": "nonsense", "userId": "u1", "messageId": "bad-type"},
        {"type": "identify", "anonymousId": "a1", "messageId": "good-2"}
    ]});
    let (status, body) = post(&server, "/v1/batch", &batch).await;
    assert_eq!(status, 400);
    let rejected = body["error"]["details"]["rejected"].as_array().unwrap();
    let indexes: Vec<u64> = rejected
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![1, 2, 3, 4, 5, 6]);
    assert!(rejected
        .iter()
        .all(|r| r["code"].is_string() && r["message"].is_string()));
    let stored: Vec<String> = server
        .events()
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, vec!["good-1", "good-2"]);
}

#[tokio::test]
async fn timestamps_are_corrected_for_client_clock_skew() {
    let server = TestServer::start("");
    let now = tandem_core::time_util::now_ms();
    // The client's clock is 1 hour fast; the event happened 5 s before it was sent.
    let sent_at = now + 3_600_000;
    let original = sent_at - 5_000;
    let body = json!({"userId": "u", "event": "Skewed", "messageId": "skew", "originalTimestamp": iso(original), "sentAt": iso(sent_at)});
    assert_eq!(post(&server, "/v1/track", &body).await.0, 200);
    let explicit = json!({"userId": "u", "event": "Explicit", "messageId": "explicit", "timestamp": "2020-01-01T00:00:00.000Z", "sentAt": iso(sent_at)});
    assert_eq!(post(&server, "/v1/track", &explicit).await.0, 200);

    let events = server.events();
    let skewed = by_message_id(&events, "skew")[0];
    let received = parse_iso8601_ms(skewed["receivedAt"].as_str().unwrap()).unwrap();
    let timestamp = parse_iso8601_ms(skewed["timestamp"].as_str().unwrap()).unwrap();
    assert_eq!(
        received - timestamp,
        5_000,
        "timestamp = receivedAt - (sentAt - originalTimestamp)"
    );
    assert_eq!(skewed["originalTimestamp"], iso(original));
    assert!((received - now).abs() < 60_000);
    assert_eq!(
        by_message_id(&events, "explicit")[0]["timestamp"],
        "2020-01-01T00:00:00.000Z",
        "a timestamp set by the client is kept"
    );
}

#[tokio::test]
async fn context_ip_is_filled_unless_the_client_set_it() {
    let server = TestServer::start("");
    assert_eq!(
        post(
            &server,
            "/v1/track",
            &json!({"userId": "u", "event": "a", "messageId": "ip-1"})
        )
        .await
        .0,
        200
    );
    let own = json!({"userId": "u", "event": "b", "messageId": "ip-2", "context": {"ip": "203.0.113.9", "locale": "de-DE"}});
    assert_eq!(post(&server, "/v1/track", &own).await.0, 200);
    let events = server.events();
    assert_eq!(
        by_message_id(&events, "ip-1")[0]["context"]["ip"],
        "127.0.0.1"
    );
    assert_eq!(
        by_message_id(&events, "ip-2")[0]["context"]["ip"],
        "203.0.113.9"
    );
    assert_eq!(
        by_message_id(&events, "ip-2")[0]["context"]["locale"],
        "de-DE"
    );
}

#[tokio::test]
async fn duplicates_are_dropped_even_across_a_restart_and_a_kill() {
    let mut server = TestServer::start("");
    let event = json!({"userId": "u", "event": "Once", "messageId": "dup-1"});
    assert_eq!(post(&server, "/v1/track", &event).await.0, 200);
    assert_eq!(
        post(&server, "/v1/track", &event).await.0,
        200,
        "a duplicate is acknowledged"
    );
    server.restart();
    assert_eq!(post(&server, "/v1/track", &event).await.0, 200);
    server.restart_after_kill();
    assert_eq!(post(&server, "/v1/track", &event).await.0, 200);
    // The same messageId from another source is another event.
    let other = client()
        .post(server.url("/v1/track"))
        .header("authorization", basic(SECOND_WRITE_KEY))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 200);
    let exported = server.export();
    let copies: Vec<_> = exported
        .iter()
        .filter(|line| line["event"]["messageId"] == "dup-1")
        .collect();
    assert_eq!(copies.len(), 2);
    assert_ne!(copies[0]["source"], copies[1]["source"]);
}

#[tokio::test]
async fn settings_document_points_analytics_js_at_tandem() {
    let server = TestServer::start("");
    let response = client()
        .get(server.url(&format!("/v1/projects/{WRITE_KEY}/settings")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let settings: Value = response.json().await.unwrap();
    let segment = &settings["integrations"]["Segment.io"];
    assert_eq!(segment["apiKey"], WRITE_KEY);
    assert_eq!(segment["apiHost"], format!("127.0.0.1:{}/v1", server.port));
    assert_eq!(segment["protocol"], "http");
    let unknown = client()
        .get(server.url("/v1/projects/nope-nope-nope/settings"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let server = TestServer::start("");
    assert_eq!(
        post(&server, "/v1/track", &json!({"userId": "u", "event": "m"}))
            .await
            .0,
        200
    );
    let client = client();
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "tandem_events_accepted_total",
        "tandem_log_fsync_seconds",
        "tandem_log_bytes",
        "tandem_collect_batch_events",
        "tandem_dedup_entries",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let openapi: Value = client
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openapi["openapi"], "3.1.0");
    assert!(openapi["paths"]["/v1/batch"]["post"].is_object());
    let missing = client
        .get(server.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
}

#[tokio::test]
async fn a_source_over_its_rate_limit_gets_429_with_retry_after() {
    let server = TestServer::start("[collect]\nrate_limit_events_per_second = 5\n");
    let batch = |prefix: &str| json!({"batch": (0..5).map(|i| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("{prefix}-{i}")})).collect::<Vec<_>>()});
    assert_eq!(post(&server, "/v1/batch", &batch("first")).await.0, 200);
    let response = client()
        .post(server.url("/v1/batch"))
        .header("authorization", basic(WRITE_KEY))
        .json(&batch("second"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    let other = client()
        .post(server.url("/v1/track"))
        .header("authorization", basic(SECOND_WRITE_KEY))
        .json(&json!({"userId": "u", "event": "E"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 200, "the limit is per source");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        post(&server, "/v1/batch", &batch("second")).await.0,
        200,
        "the retry succeeds once the bucket refills"
    );
    let ids: Vec<String> = server
        .events()
        .iter()
        .map(|e| e["messageId"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.iter().filter(|id| id.starts_with("second")).count(), 5);
}
