//! The transport: POST each request, classify each answer into an [`Outcome`].

use super::config::{self, WebhookAuth, WebhookSettings};
use super::request::{
    build_requests, signature, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use crate::destination::{
    BatchLimits, BatchOutcome, BuildContext, DeleteOutcome, Destination, OutboundEvent, Outcome,
};
use crate::retry::parse_retry_after;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tandem_core::limits::DEFAULT_DELIVERY_REQUEST_TIMEOUT_MS;

/// Bytes of a refusal's body quoted in the error (enough for a JSON error message).
const ERROR_BODY_QUOTED_BYTES: usize = 300;

pub struct Webhook {
    settings: WebhookSettings,
    client: reqwest::Client,
}

pub fn build(
    settings: &serde_json::Value,
    _context: &BuildContext,
) -> Result<Arc<dyn Destination>, String> {
    let settings = config::parse(settings)
        .map_err(|problems| crate::destination::describe_problems(&problems))?;
    let timeout = Duration::from_millis(
        settings
            .timeout_ms
            .unwrap_or(DEFAULT_DELIVERY_REQUEST_TIMEOUT_MS),
    );
    let mut client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(true)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(30))
        .no_proxy();
    if let Some(pem) = &settings.tls_ca_pem {
        for certificate in config::trusted_certificates(pem)? {
            client = client.add_root_certificate(certificate);
        }
    }
    let client = client
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
    Ok(Arc::new(Webhook { settings, client }))
}

impl Destination for Webhook {
    fn batch_limits(&self) -> BatchLimits {
        let mut limits = BatchLimits::default();
        if let Some(events_max) = self.settings.batch_events_max {
            limits.events_max = events_max;
        }
        limits
    }

    fn send<'a>(&'a self, batch: &'a [OutboundEvent]) -> BoxFuture<'a, BatchOutcome> {
        Box::pin(self.send_batch(batch))
    }

    fn delete_user<'a>(
        &'a self,
        identifiers: &'a [(String, String)],
    ) -> BoxFuture<'a, DeleteOutcome> {
        Box::pin(self.delete_subject(identifiers))
    }
}

impl Webhook {
    async fn send_batch(&self, batch: &[OutboundEvent]) -> BatchOutcome {
        let per_request = self.settings.batch_events_max.unwrap_or(batch.len());
        let mut requests = build_requests(batch, self.settings.batch, per_request);
        if requests.len() == 1 {
            let only = requests.pop().expect("one request");
            return BatchOutcome::All(self.post(only.body, &only.idempotency_key).await);
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let count = requests.len();
        for (index, request) in requests.into_iter().enumerate() {
            let outcome = self.post(request.body, &request.idempotency_key).await;
            if let Outcome::Retry { error, after } = &outcome {
                // Later requests may hold later events of the same users: keep them for the retry,
                // so per-user order survives.
                let rest = batch.len() - request.events.start;
                let message = format!("{error} (request {} of {count})", index + 1);
                outcomes.extend(std::iter::repeat_n(
                    Outcome::Retry {
                        error: message,
                        after: *after,
                    },
                    rest,
                ));
                return BatchOutcome::PerEvent(outcomes);
            }
            outcomes.extend(std::iter::repeat_n(outcome, request.events.len()));
        }
        BatchOutcome::PerEvent(outcomes)
    }

    /// POSTs `{"type": "delete", "identifiers": [{"type", "id"}…]}` to `delete_url`, signed
    /// and authenticated like events, with the request's id as the idempotency key.
    async fn delete_subject(&self, identifiers: &[(String, String)]) -> DeleteOutcome {
        let Some(url) = &self.settings.delete_url else {
            return DeleteOutcome::Unsupported;
        };
        let body = serde_json::json!({
            "type": "delete",
            "identifiers": identifiers
                .iter()
                .map(|(kind, value)| serde_json::json!({"type": kind, "id": value}))
                .collect::<Vec<_>>(),
        });
        let body = serde_json::to_vec(&body).expect("JSON values serialize");
        let key = format!("delete-{}", super::request::body_key(&body));
        match self.post_to(url, body, &key).await {
            Outcome::Delivered => DeleteOutcome::Deleted,
            Outcome::Retry { error, .. } => DeleteOutcome::Failed {
                error,
                retryable: true,
            },
            Outcome::Reject { error } => DeleteOutcome::Failed {
                error,
                retryable: false,
            },
        }
    }

    async fn post(&self, body: Vec<u8>, idempotency_key: &str) -> Outcome {
        self.post_to(&self.settings.url, body, idempotency_key)
            .await
    }

    async fn post_to(&self, url: &str, body: Vec<u8>, idempotency_key: &str) -> Outcome {
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, idempotency_key);
        for (name, value) in &self.settings.headers {
            request = request.header(name, value);
        }
        request = match &self.settings.auth {
            Some(WebhookAuth::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            Some(WebhookAuth::Bearer { token }) => request.bearer_auth(token),
            None => request,
        };
        if let Some(secret) = &self.settings.signing_secret {
            let timestamp = tandem_core::time_util::now_ms() / 1000;
            request = request
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, signature(secret, timestamp, &body));
        }
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string);
                let quoted = if (200..300).contains(&status) {
                    String::new()
                } else {
                    let bytes = response.bytes().await.unwrap_or_default();
                    String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_QUOTED_BYTES)])
                        .into_owned()
                };
                classify_status(status, retry_after.as_deref(), &quoted, SystemTime::now())
            }
            Err(error) => classify_error(&error),
        }
    }
}

/// 2xx → delivered; 408, 429 and 5xx → retry (with `Retry-After`); anything else → reject.
pub(super) fn classify_status(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
    now: SystemTime,
) -> Outcome {
    let describe = || {
        let body = body.trim();
        if body.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {body}")
        }
    };
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry {
            error: describe(),
            after: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        _ => Outcome::Reject { error: describe() },
    }
}

/// Transport failures are all transient: the receiver may come back.
pub(super) fn classify_error(error: &reqwest::Error) -> Outcome {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut message = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    Outcome::retry(message)
}
