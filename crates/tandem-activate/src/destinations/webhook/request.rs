//! Turning a batch into HTTP requests: body, idempotency key, signature.

use crate::destination::OutboundEvent;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
pub const TIMESTAMP_HEADER: &str = "X-Tandem-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Tandem-Signature";

/// One HTTP request to send: its body, the events it carries (indexes into the batch) and its
/// idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRequest {
    pub body: Vec<u8>,
    pub events: std::ops::Range<usize>,
    pub idempotency_key: String,
}

/// The requests for `batch`: one `{"batch": [...]}` per `per_request` events when batching,
/// else one event object per request.
pub fn build_requests(
    batch: &[OutboundEvent],
    batched: bool,
    per_request: usize,
) -> Vec<WebhookRequest> {
    if !batched {
        return batch
            .iter()
            .enumerate()
            .map(|(index, event)| WebhookRequest {
                body: event.event.to_json_bytes(),
                events: index..index + 1,
                idempotency_key: event.message_id.clone(),
            })
            .collect();
    }
    let per_request = per_request.max(1);
    let mut requests = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        let end = (start + per_request).min(batch.len());
        let body = batch_body(&batch[start..end]);
        requests.push(WebhookRequest {
            body,
            events: start..end,
            idempotency_key: batch_key(&batch[start..end]),
        });
        start = end;
    }
    requests
}

/// `{"batch": [...]}`: each event's stored bytes copied as they are, or its value serialized.
fn batch_body(events: &[OutboundEvent]) -> Vec<u8> {
    let bytes: usize = events
        .iter()
        .map(|event| event.event.json_len_hint() + 1)
        .sum();
    let mut body = Vec::with_capacity(16 + bytes);
    body.extend_from_slice(b"{\"batch\":[");
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        event.event.write_json(&mut body);
    }
    body.extend_from_slice(b"]}");
    body
}

/// The idempotency key of a batched request: the messageId of a lone event, else a SHA-256 of
/// the messageIds, so resending the same batch after a crash carries the same key (receivers
/// should still deduplicate by each event's messageId, since batches may be cut differently).
pub fn batch_key(events: &[OutboundEvent]) -> String {
    if let [only] = events {
        return only.message_id.clone();
    }
    let mut digest = Sha256::new();
    for event in events {
        digest.update(event.message_id.as_bytes());
        digest.update([0]);
    }
    format!("batch-{}", hex(&digest.finalize()[..16]))
}

/// A key derived from a body (the first 16 bytes of its SHA-256, hex): the same deletion
/// resent carries the same idempotency key.
pub fn body_key(body: &[u8]) -> String {
    hex(&Sha256::digest(body)[..16])
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: what a receiver recomputes to check the
/// request came from tandem and was not replayed long after `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}
