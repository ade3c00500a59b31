//! The live event stream for debugging: Server-Sent Events of every event a source sends, accepted
//! (as stored, with its offset) or rejected (with why), as it happens.
//! `GET /api/v1/workspaces/{workspace}/live` and `.../sources/{source}/live`.

use crate::auth::{Authorized, ReadLiveEvents};
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;
use crate::state::{AppState, LiveEvent};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::stream::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tandem_core::limits::LIVE_STREAMS_MAX;
use tandem_core::ErrorCode;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};
use tokio_stream::StreamExt;

/// Interval of SSE comments keeping idle connections (and proxies) open.
const KEEP_ALIVE_SECONDS: u64 = 15;

pub fn router() -> Routes {
    Routes::new()
        .route("/api/v1/workspaces/{workspace}/live", get(workspace_live))
        .route(
            "/api/v1/workspaces/{workspace}/sources/{source}/live",
            get(source_live),
        )
}

async fn workspace_live(
    State(state): State<AppState>,
    _auth: Authorized<ReadLiveEvents>,
    Path(workspace): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    stream(&state, workspace, None)
}

async fn source_live(
    State(state): State<AppState>,
    _auth: Authorized<ReadLiveEvents>,
    Path((workspace, source)): Path<(String, String)>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    if state.catalog.source_by_id(&workspace, &source).is_none() {
        return Err(ApiError::not_found(format!("source {workspace}/{source}")));
    }
    stream(&state, workspace, Some(source))
}

fn stream(
    state: &AppState,
    workspace: String,
    source: Option<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    if !state.workspaces.contains_key(&workspace) {
        return Err(ApiError::not_found(format!("workspace {workspace}")));
    }
    if state.live.receiver_count() >= LIVE_STREAMS_MAX {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("at most {LIVE_STREAMS_MAX} live streams may be open at once"),
        ));
    }
    let matches = move |event: &LiveEvent| {
        event.workspace_id == workspace
            && source
                .as_ref()
                .is_none_or(|source| &event.source_id == source)
    };
    let events = BroadcastStream::new(state.live.subscribe()).filter_map(
        move |item: Result<Arc<LiveEvent>, BroadcastStreamRecvError>| match item {
            Ok(event) if matches(&event) => {
                let kind = if event.rejection.is_some() {
                    "rejected"
                } else {
                    "accepted"
                };
                Some(Ok(Event::default()
                    .event(kind)
                    .data(serde_json::to_string(&*event).unwrap_or_default())))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Ok(Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{missed}}}")))),
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(KEEP_ALIVE_SECONDS))))
}
