//! `GET /v1/runs/:runId/events`: a run's event log as server-sent events.
//!
//! History is replayed, then live events are pushed as they are committed
//! (the engine's `follow`, no polling), each as `event: smithers`, `id: <seq>`,
//! `data: <event JSON>`, so a standard `Last-Event-ID` reconnect resumes
//! exactly after the last event seen. The stream ends after the terminal
//! event, or when the server shuts down. A client that stops reading only
//! stalls its own stream: `follow` re-reads what it missed from the database.
//! Each stream holds a slot of [`super::subscribers`] while it is open; past
//! the limits a new one is refused with 429 `TOO_MANY_STREAMS`.

use std::convert::Infallible;
use std::pin::pin;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::ApiState;
use super::connections::ClientAddr;
use super::error::ApiError;
use super::extract::{PathParams, QueryParams, optional_int};
use super::runs::path_run_id;
use crate::engine::events::follow;
use crate::model::RunId;

/// Interval of `: keep-alive` comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Reconnect delay advertised to clients.
const RETRY: Duration = Duration::from_millis(1000);

/// `GET /v1/runs/:runId/events?afterSeq=N` (or `Last-Event-ID: N`).
pub async fn stream(
    State(state): State<ApiState>,
    client: ClientAddr,
    PathParams(raw): PathParams<String>,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run_id = path_run_id(&raw)?;
    let after_seq = resume_point(&headers, &query)?;
    let id = run_id.clone();
    let exists = state
        .engine
        .store()
        .read(move |r| r.run(&id))
        .await?
        .is_some();
    if !exists {
        return Err(ApiError::run_not_found());
    }
    sse_response(&state, client, run_id, after_seq)
}

/// Where a stream resumes: `Last-Event-ID` wins over `afterSeq`; -1 = from
/// the beginning. A malformed `afterSeq` is refused even when the header
/// wins, rather than silently ignored.
pub fn resume_point(headers: &HeaderMap, query: &QueryParams) -> Result<i64, ApiError> {
    let after_seq = optional_int(query.get("afterSeq"), -1)?;
    match headers.get("last-event-id") {
        Some(value) => {
            // Unlike `afterSeq` (where Smithers reads "" as 0), an empty id
            // is refused: read as 0 it would silently skip event 0.
            let text = value
                .to_str()
                .ok()
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID must be a number"))?;
            optional_int(Some(text), -1)
        }
        None => Ok(after_seq),
    }
}

/// The SSE response for a run known to exist, or 429 when `client` (or
/// everyone) already holds as many streams as allowed.
pub fn sse_response(
    state: &ApiState,
    client: ClientAddr,
    run_id: RunId,
    after_seq: i64,
) -> Result<Response, ApiError> {
    let slot = state.streams.admit(client.0)?;
    let guard = state.metrics.sse_subscriber();
    let stop = state.shutdown.clone();
    let events = follow(state.engine.store().clone(), run_id.clone(), after_seq);
    let body = async_stream::stream! {
        let _guards = (slot, guard);
        yield Ok::<_, Infallible>(Event::default().retry(RETRY));
        let mut events = pin!(events);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                next = events.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    yield Ok(Event::default().event("smithers").id(event.seq.to_string()).data(&event.json));
                }
                Some(Err(e)) => {
                    tracing::warn!(run = %run_id, error = %e, "event stream stopped on a storage error");
                    break;
                }
                None => break,
            }
        }
    };
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
