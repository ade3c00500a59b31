//! The transport: a lazily connected NATS client, JetStream publishes awaited for their acks,
//! each answer classified into an [`Outcome`].

use super::config::{self, NatsAuth, NatsSettings};
use super::request::{build_messages, stream_subjects, NatsMessage, SubjectContext};
use crate::destination::{
    BatchLimits, BatchOutcome, BuildContext, Destination, OutboundEvent, Outcome,
};
use async_nats::jetstream::context::{
    CreateStreamErrorKind, GetStreamErrorKind, PublishError, PublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tandem_core::limits::DELIVERY_LANES_MAX;

/// Publishes of one batch sent before their acks are awaited: the pipelining that makes a batch
/// cost about one round trip per window instead of one per event. Each unacknowledged publish
/// holds a permit of the JetStream context and its payload in the client's buffers.
pub const PUBLISHES_IN_FLIGHT_MAX: usize = 256;
/// Most events per batch (the connection's `batch_events_max` is capped to it).
pub const NATS_BATCH_EVENTS_MAX: usize = 2_000;
/// Longest wait for a TCP connection and the server's greeting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Nats {
    settings: NatsSettings,
    workspace_id: String,
    destination_id: String,
    /// Connected on first use (`build` must not block); the client then reconnects by itself.
    connection: tokio::sync::Mutex<Option<jetstream::Context>>,
}

pub fn build(
    settings: &serde_json::Value,
    context: &BuildContext,
) -> Result<Arc<dyn Destination>, String> {
    let settings = config::parse(settings)
        .map_err(|problems| crate::destination::describe_problems(&problems))?;
    Ok(Arc::new(Nats {
        settings,
        workspace_id: context.workspace_id.clone(),
        destination_id: context.destination_id.clone(),
        connection: tokio::sync::Mutex::new(None),
    }))
}

impl Destination for Nats {
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            events_cap: NATS_BATCH_EVENTS_MAX,
            ..BatchLimits::default()
        }
    }

    fn send<'a>(&'a self, batch: &'a [OutboundEvent]) -> BoxFuture<'a, BatchOutcome> {
        Box::pin(self.send_batch(batch))
    }
}

impl Nats {
    async fn send_batch(&self, batch: &[OutboundEvent]) -> BatchOutcome {
        let jetstream = match self.jetstream().await {
            Ok(jetstream) => jetstream,
            Err(error) => return BatchOutcome::All(Outcome::retry(error)),
        };
        let subjects = SubjectContext {
            template: &self.settings.subject,
            workspace_id: &self.workspace_id,
            destination_id: &self.destination_id,
        };
        let messages = build_messages(batch, &subjects);
        let mut outcomes = Vec::with_capacity(messages.len());
        for window in messages.chunks(PUBLISHES_IN_FLIGHT_MAX) {
            outcomes.extend(self.publish_window(&jetstream, window).await);
        }
        match outcomes.first() {
            Some(first) if outcomes.iter().all(|outcome| outcome == first) => {
                BatchOutcome::All(first.clone())
            }
            _ => BatchOutcome::PerEvent(outcomes),
        }
    }

    /// Publishes every message of `window`, then awaits each ack: delivered only once JetStream
    /// acknowledged (stored, or recognised as a duplicate of a stored message).
    async fn publish_window(
        &self,
        jetstream: &jetstream::Context,
        window: &[NatsMessage],
    ) -> Vec<Outcome> {
        let mut pending = Vec::with_capacity(window.len());
        for message in window {
            let mut publish = PublishMessage::build()
                .payload(message.payload.clone())
                .message_id(&message.message_id);
            if let Some(stream) = &self.settings.stream {
                publish = publish.expected_stream(stream);
            }
            pending.push(
                jetstream
                    .send_publish(message.subject.clone(), publish)
                    .await,
            );
        }
        let acks = pending.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => match ack.await {
                    Ok(_) => Outcome::Delivered,
                    Err(error) => classify_publish(&error),
                },
                Err(error) => classify_publish(&error),
            }
        });
        futures::future::join_all(acks).await
    }

    /// The JetStream context, connecting (and checking or creating the stream) first if needed.
    async fn jetstream(&self) -> Result<jetstream::Context, String> {
        let mut connection = self.connection.lock().await;
        if let Some(jetstream) = connection.as_ref() {
            return Ok(jetstream.clone());
        }
        let mut options = async_nats::ConnectOptions::new()
            .name("tandem")
            .connection_timeout(CONNECT_TIMEOUT);
        options = match &self.settings.auth {
            Some(NatsAuth::UserPassword { username, password }) => {
                options.user_and_password(username.clone(), password.clone())
            }
            Some(NatsAuth::Token { token }) => options.token(token.clone()),
            None => options,
        };
        let client = options
            .connect(self.settings.servers.as_slice())
            .await
            .map_err(|error| format!("cannot connect to NATS: {error}"))?;
        let ack_timeout = Duration::from_millis(self.settings.ack_timeout_ms);
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(ack_timeout)
            .ack_timeout(ack_timeout)
            // Enough permits that no lane waits for another's acks; past them a publish fails
            // at once (retried) instead of waiting.
            .max_ack_inflight(PUBLISHES_IN_FLIGHT_MAX * DELIVERY_LANES_MAX)
            .backpressure_on_inflight(false)
            .build(client);
        if let Some(stream) = &self.settings.stream {
            self.ensure_stream(&jetstream, stream).await?;
        }
        *connection = Some(jetstream.clone());
        Ok(jetstream)
    }

    async fn ensure_stream(
        &self,
        jetstream: &jetstream::Context,
        name: &str,
    ) -> Result<(), String> {
        let error = match jetstream.get_stream(name).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let missing = matches!(error.kind(), GetStreamErrorKind::JetStream(inner)
            if inner.error_code() == ErrorCode::STREAM_NOT_FOUND);
        if !missing {
            return Err(format!("cannot look up stream {name:?}: {error}"));
        }
        if !self.settings.create_stream {
            return Err(format!(
                "stream {name:?} does not exist (create it, or set create_stream = true)"
            ));
        }
        let stream_config = jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![stream_subjects(&self.settings.subject)],
            duplicate_window: Duration::from_secs(self.settings.duplicate_window_seconds),
            ..Default::default()
        };
        match jetstream.create_stream(stream_config).await {
            Ok(_) => Ok(()),
            // Created meanwhile by another node: fine.
            Err(error)
                if matches!(error.kind(), CreateStreamErrorKind::JetStream(inner)
                    if inner.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
            {
                Ok(())
            }
            Err(error) => Err(format!("cannot create stream {name:?}: {error}")),
        }
    }
}

/// A publish that can never succeed as is (too large for the server or the stream) is
/// rejected; everything else (no ack in time, connection lost, no stream for the subject yet,
/// stream mismatch or full) is retried: the server or its configuration may change.
pub(super) fn classify_publish(error: &PublishError) -> Outcome {
    let message = describe(error);
    let permanent = match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => true,
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|inner| inner.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM),
        _ => false,
    };
    if permanent {
        Outcome::reject(message)
    } else {
        Outcome::retry(message)
    }
}

fn describe(error: &PublishError) -> String {
    let mut message = format!("JetStream publish: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(&format!(": {text}"));
        }
        source = cause.source();
    }
    message
}
