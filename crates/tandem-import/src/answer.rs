//! What the server's answer to a batch means for the import: done (all or part stored), try again
//! later (and when), or stop. The HTTP client itself lives in the CLI; this is the policy.

use crate::limits::{RETRY_AFTER_SECONDS_MAX, RETRY_BACKOFF_MS_FIRST, RETRY_BACKOFF_MS_MAX};
use rand::Rng;
use std::time::Duration;

/// The server's answer to one `POST /v1/batch`, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Stored: every event (200), or all but the ones listed (400 `invalid_events`).
    Stored { rejected: Vec<ServerRejection> },
    /// Not stored, worth retrying (429, 503, 5xx, 408): the server asked to wait `after` if set.
    Retry { after: Option<Duration> },
    /// Not stored, and retrying cannot help (bad write key, a request the server refuses).
    Fail,
}

/// An event of a batch the server refused, by its index in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRejection {
    pub index: usize,
    pub code: String,
    pub message: String,
}

/// Classifies an answer by its status, `Retry-After` header and JSON body (`Null` if none).
pub fn classify(status: u16, retry_after: Option<&str>, body: &serde_json::Value) -> Answer {
    match status {
        200..=299 => Answer::Stored {
            rejected: Vec::new(),
        },
        400 if body["error"]["code"] == "invalid_events" => Answer::Stored {
            rejected: server_rejections(body),
        },
        408 | 429 | 500 | 502 | 503 | 504 => Answer::Retry {
            after: retry_after.and_then(parse_retry_after),
        },
        _ => Answer::Fail,
    }
}

fn server_rejections(body: &serde_json::Value) -> Vec<ServerRejection> {
    body["error"]["details"]["rejected"]
        .as_array()
        .map(|rejected| {
            rejected
                .iter()
                .filter_map(|entry| {
                    Some(ServerRejection {
                        index: usize::try_from(entry["index"].as_u64()?).ok()?,
                        code: entry["code"].as_str().unwrap_or("unknown").to_string(),
                        message: entry["message"].as_str().unwrap_or_default().to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `Retry-After` in seconds (the form tandem and most APIs send), capped at
/// `RETRY_AFTER_SECONDS_MAX`. The HTTP-date form is ignored (the backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(RETRY_AFTER_SECONDS_MAX)))
}

/// How long to wait before attempt `attempt + 1` (attempt 0 failed first): the server's
/// `Retry-After` plus a little jitter when it gave one, else exponential backoff with jitter, so
/// many importers pushed back at once do not return at once.
pub fn backoff(attempt: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
    if let Some(after) = retry_after {
        return after + Duration::from_millis(rng.gen_range(0..=RETRY_BACKOFF_MS_FIRST));
    }
    let ceiling = RETRY_BACKOFF_MS_FIRST
        .saturating_mul(1u64 << attempt.min(20))
        .min(RETRY_BACKOFF_MS_MAX);
    Duration::from_millis(rng.gen_range(ceiling / 2..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(200, None, &json!({"success": true})),
            Answer::Stored { rejected: vec![] }
        );
        let partial = json!({"error": {"code": "invalid_events", "message": "1 event(s) rejected",
            "details": {"accepted": 1, "rejected": [{"index": 1, "messageId": "m", "code": "invalid_field", "message": "`traits` must be an object"}]}}});
        assert_eq!(
            classify(400, None, &partial),
            Answer::Stored {
                rejected: vec![ServerRejection {
                    index: 1,
                    code: "invalid_field".into(),
                    message: "`traits` must be an object".into()
                }]
            }
        );
        assert_eq!(
            classify(429, Some("3"), &json!({})),
            Answer::Retry {
                after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            classify(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), &json!({})),
            Answer::Retry { after: None }
        );
        assert_eq!(
            classify(503, Some("86400"), &json!({})),
            Answer::Retry {
                after: Some(Duration::from_secs(RETRY_AFTER_SECONDS_MAX))
            }
        );
        for status in [400, 401, 403, 404, 413] {
            assert_eq!(
                classify(status, None, &json!({"error": {"code": "x"}})),
                Answer::Fail
            );
        }
    }

    #[test]
    fn backoff_grows_to_a_ceiling_with_jitter_and_honours_retry_after() {
        let mut rng = rand::thread_rng();
        for attempt in 0..40 {
            let wait = backoff(attempt, None, &mut rng).as_millis() as u64;
            let ceiling = (RETRY_BACKOFF_MS_FIRST << attempt.min(20)).min(RETRY_BACKOFF_MS_MAX);
            assert!(
                (ceiling / 2..=ceiling).contains(&wait),
                "attempt {attempt}: {wait}"
            );
        }
        let wait = backoff(0, Some(Duration::from_secs(2)), &mut rng);
        assert!(wait >= Duration::from_secs(2));
        assert!(wait <= Duration::from_secs(2) + Duration::from_millis(RETRY_BACKOFF_MS_FIRST));
    }
}
