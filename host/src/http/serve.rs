//! Serve mode (`smithers-host up WORKFLOW --serve`): one run, served over
//! HTTP with the route table of Smithers' `createServeApp` (contract §2).
//!
//! Every route acts on the one run the process started, so no run id appears
//! in paths. The handlers are the server-mode ones applied to that run, with
//! the same auth, Host/Origin gate, error envelope, SSE and metrics.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::auth::AccessPolicy;
use super::connections::ClientAddr;
use super::error::{ApiError, ErrorCode};
use super::extract::{JsonBody, PathParams, QueryParams, opt_string};
use super::{ApiState, approvals, events, finish, ok, ops, runs};
use crate::model::RunId;

/// The state of serve-mode handlers: the API state and the served run.
#[derive(Clone)]
pub struct ServeState {
    api: ApiState,
    run_id: RunId,
}

impl axum::extract::FromRef<ServeState> for ApiState {
    fn from_ref(state: &ServeState) -> Self {
        state.api.clone()
    }
}

impl axum::extract::FromRef<ServeState> for super::extract::BodyLimits {
    fn from_ref(state: &ServeState) -> Self {
        state.api.limits
    }
}

/// The serve-mode route table for `run_id`.
pub fn router(api: ApiState, policy: AccessPolicy, run_id: RunId) -> Router {
    let state = ServeState {
        api: api.clone(),
        run_id,
    };
    let routes: Router<ServeState> = Router::new()
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/", get(status))
        .route("/events", get(stream))
        .route("/frames", get(frames))
        .route("/approve/{node_id}", post(approve))
        .route("/deny/{node_id}", post(deny))
        .route("/cancel", post(cancel))
        .route("/signal/{name}", post(signal));
    finish(routes.with_state(state), api, policy)
}

/// `GET /`: the run's status object.
async fn status(State(s): State<ServeState>) -> Result<Response, ApiError> {
    Ok(ok(&runs::status_of(&s.api.engine, s.run_id).await?))
}

/// `GET /events?afterSeq=N` (or `Last-Event-ID`): the run's events as SSE.
async fn stream(
    State(s): State<ServeState>,
    client: ClientAddr,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after_seq = events::resume_point(&headers, &query)?;
    events::sse_response(&s.api, client, s.run_id, after_seq)
}

/// `GET /frames?limit&afterFrameNo`: newest first. As in Smithers' serve
/// mode, a missing or unusable `limit` means 50 rather than an error.
async fn frames(State(s): State<ServeState>, query: QueryParams) -> Result<Response, ApiError> {
    let limit = query
        .get("limit")
        .and_then(|l| l.trim().parse::<i64>().ok())
        .map_or(50, |l| {
            if l <= 0 {
                50
            } else {
                l.min(i64::from(u32::MAX)) as u32
            }
        });
    let after = query
        .get("afterFrameNo")
        .and_then(|a| a.trim().parse::<i64>().ok())
        .filter(|a| *a >= 0);
    let run_id = s.run_id.clone();
    let frames = s
        .api
        .engine
        .store()
        .read(move |r| r.frames(&run_id, limit, after))
        .await?;
    Ok(ok(&frames))
}

/// `POST /approve/:nodeId` with `{iteration?, note?, decidedBy?}`.
async fn approve(
    State(s): State<ServeState>,
    PathParams(node_id): PathParams<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    approvals::decide_of(&s.api.engine, s.run_id, node_id, &body, true).await
}

/// `POST /deny/:nodeId` with `{iteration?, note?, decidedBy?}`.
async fn deny(
    State(s): State<ServeState>,
    PathParams(node_id): PathParams<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    approvals::decide_of(&s.api.engine, s.run_id, node_id, &body, false).await
}

/// `POST /cancel`: 409 `RUN_NOT_ACTIVE` once the run is over (including a
/// second cancel, as Smithers' serve mode answers).
async fn cancel(State(s): State<ServeState>) -> Result<Response, ApiError> {
    let outcome = s.api.engine.cancel(&s.run_id).await?;
    if !outcome.won {
        return Err(
            ApiError::new(ErrorCode::RunNotActive, "Run is not currently active")
                .with_details(json!({ "status": "cancelled" })),
        );
    }
    Ok(ok(&outcome))
}

/// `POST /signal/:name` with `{data?, correlationId?, receivedBy?}`.
async fn signal(
    State(s): State<ServeState>,
    PathParams(name): PathParams<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let data = match body.get("data") {
        None | Some(Value::Null) => json!({}),
        Some(data) => data.clone(),
    };
    let receipt = s
        .api
        .engine
        .signal(
            &s.run_id,
            &name,
            data,
            opt_string(&body, "correlationId"),
            opt_string(&body, "receivedBy"),
        )
        .await?;
    Ok(ok(&receipt))
}
