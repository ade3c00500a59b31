//! The audit log over HTTP: `GET /api/v1/audit` (filters: actor, action, workspace, since,
//! until; pages with `after`), `GET /api/v1/audit/export` (the stored lines as JSON lines, each
//! verifiable), `GET /api/v1/audit/verify` (the chain check `tandem audit verify` runs).
//!
//! Also what writes to it besides the handlers' own change entries: [`record_requests`], a
//! middleware on the management API recording every use of a token (`token.use`), every denied
//! request (`access.denied`) and every refused credential (`auth.failed`).

use crate::auth::{AuditSlot, Authorized, ReadAudit, SlotInfo};
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tandem_audit::{Actor, AuditEntry, AuditEvent};
use tandem_core::limits::AUDIT_PAGE_ENTRIES_MAX;
use tandem_core::{time_util, ErrorCode};

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/audit", get(list))
        .route("/api/v1/audit/export", get(export))
        .route("/api/v1/audit/verify", get(verify))
}

/// Appends `event` durably (off the async runtime); the caller answers only after it returns.
pub async fn record(state: &AppState, event: AuditEvent) -> Result<(), ApiError> {
    let audit = state.audit.clone();
    tokio::task::spawn_blocking(move || audit.append(event))
        .await
        .map_err(ApiError::internal)?
        .map(|_| ())
        .map_err(|error| {
            tracing::error!(%error, "audit append failed");
            ApiError::new(
                ErrorCode::Unavailable,
                format!("the audit log could not be written ({error}); retry later"),
            )
        })
}

/// Records token use, denials and refused credentials of every management request.
pub async fn record_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let slot = AuditSlot::default();
    let mut request = request;
    request.extensions_mut().insert(slot.clone());
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let response = next.run(request).await;
    let status = response.status();
    let seen = slot.0.lock().take();
    let event = match seen {
        Some(SlotInfo::Principal(principal)) if status == StatusCode::FORBIDDEN => Some(
            AuditEvent::new(principal.actor(), "access.denied", "denied"),
        ),
        Some(SlotInfo::Principal(principal)) if principal.is_token() => {
            let outcome = if status.is_success() {
                "success"
            } else {
                "failure"
            };
            Some(AuditEvent::new(principal.actor(), "token.use", outcome))
        }
        Some(SlotInfo::BadCredential(reason)) => {
            let actor = Actor {
                kind: "anonymous".into(),
                id: None,
                name: "unknown credential".into(),
                role: None,
                scope: None,
            };
            let mut event = AuditEvent::new(actor, "auth.failed", "failure");
            event.details = Some(json!({"reason": reason}));
            Some(event)
        }
        _ => None,
    };
    let Some(mut event) = event else {
        return response;
    };
    event.resource = Some(format!("{method} {}", pseudonymized_path(&state, &path)));
    event.ip = ip;
    event.user_agent = user_agent;
    let mut details = event.details.take().unwrap_or_else(|| json!({}));
    details["status"] = json!(status.as_u16());
    event.details = Some(details);
    event.workspace = workspace_of_path(&path);
    match record(&state, event).await {
        Ok(()) => response,
        Err(error) => error.into_response(),
    }
}

/// The path as the audit log keeps it: a profile named by an identifier (`…/profiles/
/// email:ada@example.org`) becomes `email:~<16 hex>`, the start of the same salted hash a
/// data-subject request shows — so the log is tamper-evident without holding anyone's
/// identifiers (an erasure cannot rewrite a hash chain), yet "who read this person's profile"
/// is still answerable by the hash.
fn pseudonymized_path(state: &AppState, path: &str) -> String {
    let Some(workspace) = workspace_of_path(path).and_then(|id| state.workspaces.get(&id)) else {
        return path.to_string();
    };
    let mut previous = "";
    let mut out = Vec::new();
    for segment in path.split('/') {
        let decoded = percent_decoded(segment);
        let pseudonym = (previous == "profiles")
            .then(|| decoded.split_once(':'))
            .flatten()
            .filter(|(kind, value)| !kind.is_empty() && !value.is_empty())
            .map(|(kind, value)| {
                let identity = tandem_unify::identity::Identity::new(
                    kind,
                    &tandem_unify::identity::normalize(kind, value),
                );
                format!("{kind}:~{}", &workspace.privacy.hash(&identity)[..16])
            });
        previous = segment;
        out.push(pseudonym.unwrap_or_else(|| segment.to_string()));
    }
    out.join("/")
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[at] == b'%' && at + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[at + 1]), hex(bytes[at + 2])) {
                out.push((high * 16 + low) as u8);
                at += 3;
                continue;
            }
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The workspace segment of `/api/v1/workspaces/{w}/…` or `/v1/spaces/{w}/…`.
fn workspace_of_path(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix("/api/v1/workspaces/")
        .or_else(|| path.strip_prefix("/v1/spaces/"))?;
    let workspace = rest.split('/').next()?;
    (!workspace.is_empty()).then(|| workspace.to_string())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Filter {
    /// Matches the actor's name, id or kind.
    actor: Option<String>,
    /// An action, or a prefix ending in `.` (`source.` for every source change).
    action: Option<String>,
    workspace: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// Entries after this sequence number.
    after: Option<u64>,
    /// Entries before this sequence number (with `order=newest`, to page back).
    before: Option<u64>,
    /// `oldest` (default: in order, paging on with `after`) or `newest` (the newest matching
    /// entries first, paging back with `before` = `next_before`): what a console shows first.
    order: Option<String>,
    limit: Option<usize>,
}

struct Bounds {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

fn parse_time(name: &str, value: Option<&str>) -> ApiResult<Option<i64>> {
    value
        .map(|text| {
            time_util::parse_iso8601_ms(text).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("`{name}` must be an ISO-8601 time such as 2025-01-31T00:00:00Z, not `{text}`"),
                )
            })
        })
        .transpose()
}

impl Filter {
    fn bounds(&self) -> ApiResult<Bounds> {
        Ok(Bounds {
            since_ms: parse_time("since", self.since.as_deref())?,
            until_ms: parse_time("until", self.until.as_deref())?,
        })
    }

    fn matches(&self, bounds: &Bounds, entry: &AuditEntry) -> bool {
        let event = &entry.event;
        let actor_matches = self.actor.as_deref().is_none_or(|actor| {
            event.actor.name == actor
                || event.actor.kind == actor
                || event.actor.id.as_deref() == Some(actor)
        });
        let action_matches = self.action.as_deref().is_none_or(|action| {
            event.action == action || (action.ends_with('.') && event.action.starts_with(action))
        });
        actor_matches
            && action_matches
            && self
                .workspace
                .as_deref()
                .is_none_or(|w| event.workspace.as_deref() == Some(w))
            && bounds.since_ms.is_none_or(|since| entry.at_ms >= since)
            && bounds.until_ms.is_none_or(|until| entry.at_ms < until)
            && self.after.is_none_or(|after| entry.seq > after)
            && self.before.is_none_or(|before| entry.seq < before)
    }

    fn newest_first(&self) -> ApiResult<bool> {
        match self.order.as_deref() {
            None | Some("oldest") => Ok(false),
            Some("newest") => Ok(true),
            Some(other) => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`order` is `oldest` or `newest`, not `{other}`"),
            )),
        }
    }
}

fn bad_filter(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "{}; filters: actor, action, workspace, since, until, after, before, order, limit",
            rejection.body_text()
        ),
    )
}

/// Matching entries in order, with their stored lines: at most `limit`, and whether more match.
fn select(
    state: &AppState,
    filter: &Filter,
    limit: usize,
) -> ApiResult<(Vec<(AuditEntry, String)>, bool)> {
    let bounds = filter.bounds()?;
    let newest_first = filter.newest_first()?;
    let mut out = std::collections::VecDeque::new();
    let mut more = false;
    let entries = state.audit.entries().map_err(ApiError::internal)?;
    for item in entries {
        let (entry, line) = item.map_err(ApiError::internal)?;
        if filter.matches(&bounds, &entry) {
            if out.len() == limit {
                more = true;
                if !newest_first {
                    break;
                }
                // Newest first: the window slides on, keeping the last `limit` matches.
                out.pop_front();
            }
            out.push_back((entry, line));
        }
    }
    let mut out: Vec<_> = out.into();
    if newest_first {
        out.reverse();
    }
    Ok((out, more))
}

async fn list(
    State(state): State<AppState>,
    _auth: Authorized<ReadAudit>,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(filter) = filter.map_err(bad_filter)?;
    let limit = filter.limit.unwrap_or(100);
    if limit == 0 || limit > AUDIT_PAGE_ENTRIES_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit is 1..={AUDIT_PAGE_ENTRIES_MAX}"),
        ));
    }
    let newest_first = filter.newest_first()?;
    let (entries, more) = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || select(&state, &filter, limit))
            .await
            .map_err(ApiError::internal)??
    };
    let next = more
        .then(|| entries.last().map(|(entry, _)| entry.seq))
        .flatten();
    let (next_after, next_before) = if newest_first {
        (None, next)
    } else {
        (next, None)
    };
    let mut answer = json!({
        "entries": entries.into_iter().map(|(entry, _)| entry).collect::<Vec<_>>(),
        "next_after": next_after,
    });
    if newest_first {
        answer["next_before"] = json!(next_before);
    }
    Ok(Json(answer))
}

/// The stored lines (`{"entry":…,"sha256":…}`) of the matching entries, as JSON lines.
async fn export(
    State(state): State<AppState>,
    _auth: Authorized<ReadAudit>,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(filter) = filter.map_err(bad_filter)?;
    filter.bounds()?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let Ok(bounds) = filter.bounds() else { return };
        let entries = match state.audit.entries() {
            Ok(entries) => entries,
            Err(error) => {
                let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
                return;
            }
        };
        for item in entries {
            let sent = match item {
                Ok((entry, line)) if filter.matches(&bounds, &entry) => {
                    sender.blocking_send(Ok(line + "\n"))
                }
                Ok(_) => continue,
                Err(error) => sender.blocking_send(Err(std::io::Error::other(error.to_string()))),
            };
            if sent.is_err() {
                return; // the client went away
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn verify(
    State(state): State<AppState>,
    _auth: Authorized<ReadAudit>,
) -> ApiResult<Json<Value>> {
    let dir = state.audit.dir().to_path_buf();
    let verification = tokio::task::spawn_blocking(move || tandem_audit::verify(&dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(
        serde_json::to_value(verification).map_err(ApiError::internal)?,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn workspaces_are_read_from_paths() {
        assert_eq!(
            super::workspace_of_path("/api/v1/workspaces/emea/sources").as_deref(),
            Some("emea")
        );
        assert_eq!(
            super::workspace_of_path("/v1/spaces/apac/collections").as_deref(),
            Some("apac")
        );
        assert_eq!(super::workspace_of_path("/api/v1/users"), None);
    }
}
