//! Outside input to runs: approval decisions, the pending-approvals list and
//! signals. The engine resumes a parked run by itself once its input arrived,
//! so none of these needs a follow-up resume call.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{JsonBody, PathParams, opt_string};
use super::runs::path_run_id;
use super::{ApiState, ok};
use crate::engine::{ApprovalDecision, Engine};
use crate::model::RunId;

/// `POST /v1/runs/:runId/nodes/:nodeId/approve`.
pub async fn approve(
    State(state): State<ApiState>,
    PathParams((run, node)): PathParams<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    decide_of(&state.engine, path_run_id(&run)?, node, &body, true).await
}

/// `POST /v1/runs/:runId/nodes/:nodeId/deny`.
pub async fn deny(
    State(state): State<ApiState>,
    PathParams((run, node)): PathParams<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    decide_of(&state.engine, path_run_id(&run)?, node, &body, false).await
}

/// Records a decision from a body `{iteration?, note?, decidedBy?}`;
/// answers `{runId}`. 409 `NODE_NOT_WAITING` when there is nothing to decide.
pub async fn decide_of(
    engine: &Engine,
    run_id: RunId,
    node_id: String,
    body: &Value,
    approved: bool,
) -> Result<Response, ApiError> {
    let iteration = match body.get("iteration") {
        None | Some(Value::Null) => 0,
        Some(value) => value
            .as_f64()
            .filter(|n| n.fract() == 0.0 && *n >= 0.0 && *n <= f64::from(u32::MAX))
            .ok_or_else(|| ApiError::invalid("iteration must be a non-negative integer"))?
            as u32,
    };
    let decision = ApprovalDecision {
        node_id,
        iteration,
        approved,
        note: opt_string(body, "note"),
        decided_by: opt_string(body, "decidedBy"),
    };
    engine.decide(&run_id, decision).await?;
    Ok(ok(&json!({ "runId": run_id })))
}

/// `GET /v1/approvals` (and its aliases): pending approvals, oldest first.
pub async fn list(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let approvals = state
        .engine
        .store()
        .read(|r| r.pending_approvals(u32::MAX))
        .await?;
    Ok(ok(&json!({ "approvals": approvals })))
}

/// `POST /v1/runs/:runId/signals/:name` and the legacy `POST /signal/:runId/:name`.
pub async fn signal(
    State(state): State<ApiState>,
    PathParams((run, name)): PathParams<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let run_id = path_run_id(&run)?;
    let data = match body.get("data") {
        None | Some(Value::Null) => json!({}),
        Some(data) => data.clone(),
    };
    let receipt = state
        .engine
        .signal(
            &run_id,
            &name,
            data,
            opt_string(&body, "correlationId"),
            opt_string(&body, "receivedBy"),
        )
        .await?;
    Ok(ok(&receipt))
}
