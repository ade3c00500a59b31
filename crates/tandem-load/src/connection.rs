//! One keep-alive HTTP/1.1 connection per worker, and what a response means for the batch.
//! A plain `client::conn::http1` rather than a pooled client: a worker never has more than one
//! request in flight, so a pool would only add locking and bookkeeping per request.

use std::io;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::LoadError;

/// Longest wait for one response. A durable server answers in milliseconds; a request still
/// open after this is counted as a transport error and its connection replaced.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured, so a misconfigured server cannot park the generator.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);
/// Characters of a rejection body kept for the report: enough for Segment-style error JSON.
const ERROR_BODY_CHARS_MAX: usize = 300;

/// Where requests go, with the headers every request shares prepared once.
#[derive(Clone, Debug)]
pub struct Target {
    host: String,
    port: u16,
    host_header: HeaderValue,
    authorization: HeaderValue,
    batch_path: String,
}

impl Target {
    /// Parses a base URL such as `http://127.0.0.1:8080` or `http://host/prefix`.
    pub fn parse(url: &str, write_key: &str) -> Result<Target, LoadError> {
        let invalid = |reason: &str| LoadError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("only http:// is supported (no TLS)"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
        Ok(Target {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            host_header: HeaderValue::from_str(authority.as_str())
                .map_err(|_| invalid("bad host"))?,
            authorization: HeaderValue::from_str(&format!("Basic {credentials}"))
                .map_err(|_| invalid("write key is not a valid header value"))?,
            batch_path: format!("{}/v1/batch", uri.path().trim_end_matches('/')),
        })
    }

    fn batch_request(&self, body: Bytes) -> Request<Full<Bytes>> {
        Request::builder()
            .method(Method::POST)
            .uri(&self.batch_path)
            .header(HOST, self.host_header.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("tandem-load"))
            .body(Full::new(body))
            .expect("request parts are valid")
    }
}

/// What the server's answer means for the batch.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// 200: every event is durably stored.
    Acked,
    /// 429/503: nothing stored; the same batch may be resent after `retry_after`.
    PushedBack { status: u16, retry_after: Duration },
    /// Any other status: nothing to retry, the body says why.
    Rejected { status: u16, body: String },
    /// No answer (refused, reset, timed out): whether the events were stored is unknown.
    Transport(String),
}

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(target: &Target) -> io::Result<Connection> {
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
        // Bodies go out in one write; without this the last segment can wait for a delayed ACK.
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        // The connection task ends by itself when the sender is dropped or the peer closes.
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    /// True once the server closed the connection (e.g. `Connection: close`) or it failed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one batch and reads the whole response, so the connection can be reused.
    pub async fn send_batch(&mut self, target: &Target, body: Bytes) -> Outcome {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(target, body)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => Outcome::Transport(error.to_string()),
            Err(_) => Outcome::Transport(format!("no response within {REQUEST_TIMEOUT:?}")),
        }
    }

    async fn exchange(&mut self, target: &Target, body: Bytes) -> Result<Outcome, hyper::Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(target.batch_request(body)).await?;
        let status = response.status();
        let retry_after = retry_after(response.headers().get(RETRY_AFTER));
        let body = response.into_body().collect().await?.to_bytes();
        Ok(classify(status, retry_after, &body))
    }
}

fn classify(status: StatusCode, retry_after: Duration, body: &[u8]) -> Outcome {
    match status {
        StatusCode::OK => Outcome::Acked,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Outcome::PushedBack {
            status: status.as_u16(),
            retry_after,
        },
        _ => Outcome::Rejected {
            status: status.as_u16(),
            body: String::from_utf8_lossy(body)
                .chars()
                .take(ERROR_BODY_CHARS_MAX)
                .collect(),
        },
    }
}

/// `Retry-After` in seconds; a missing or HTTP-date value falls back to tandem's own default.
fn retry_after(header: Option<&HeaderValue>) -> Duration {
    let seconds = header
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    let seconds = seconds.unwrap_or(tandem_core::limits::RETRY_AFTER_SECONDS);
    Duration::from_secs(seconds).min(RETRY_AFTER_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let target = Target::parse("http://127.0.0.1:8080/", "key").unwrap();
        assert_eq!(
            (
                target.host.as_str(),
                target.port,
                target.batch_path.as_str()
            ),
            ("127.0.0.1", 8080, "/v1/batch")
        );
        assert_eq!(target.authorization, "Basic a2V5Og==");
        let target = Target::parse("http://collector.local/segment", "").unwrap();
        assert_eq!(
            (target.port, target.batch_path.as_str()),
            (80, "/segment/v1/batch")
        );
        assert_eq!(Target::parse("http://[::1]:9000", "k").unwrap().host, "::1");
        assert!(Target::parse("https://example.com", "k").is_err());
        assert!(Target::parse("not a url", "k").is_err());
    }

    #[test]
    fn classifies_statuses() {
        assert_eq!(
            classify(StatusCode::OK, Duration::ZERO, b"{\"success\":true}"),
            Outcome::Acked
        );
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(2), b""),
            Outcome::PushedBack {
                status: 503,
                retry_after: Duration::from_secs(2)
            }
        );
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, Duration::ZERO, b""),
            Outcome::PushedBack { status: 429, .. }
        ));
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, Duration::ZERO, b"bad"),
            Outcome::Rejected {
                status: 400,
                body: "bad".into()
            }
        );
    }

    #[test]
    fn reads_retry_after() {
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("3"))),
            Duration::from_secs(3)
        );
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("0"))),
            Duration::ZERO
        );
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static(
                "Wed, 21 Oct 2015 07:28:00 GMT"
            ))),
            Duration::from_secs(1)
        );
        assert_eq!(retry_after(None), Duration::from_secs(1));
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("86400"))),
            RETRY_AFTER_MAX
        );
    }
}
