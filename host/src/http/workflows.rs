//! Workflow-level routes: the workflows under the root dir, one of them, and
//! the upgrade preflight.

use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use super::error::{ApiError, ErrorCode};
use super::extract::{JsonBody, PathParams, QueryParams};
use super::{ApiState, ok};
use crate::engine::EngineError;

/// `GET /v1/workflows?build=true|false`: the workflows under the root dir,
/// `{workflows, truncated}`. Crates are built only with `build=true`.
pub async fn list(State(state): State<ApiState>, query: QueryParams) -> Result<Response, ApiError> {
    let build = match query.get("build") {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => return Err(ApiError::invalid("build must be true or false")),
    };
    let list = state.engine.workflows(build).await?;
    Ok(ok(&list))
}

/// `GET /v1/workflows/:path` (the path percent-encoded, `/` as `%2F`): one
/// workflow, resolved like a start's `workflowPath`; a crate is built. One
/// that does not load or build is answered 200 with `state: "failed"`.
pub async fn one(
    State(state): State<ApiState>,
    PathParams(path): PathParams<String>,
) -> Result<Response, ApiError> {
    match state.engine.workflow(&path).await {
        Ok(entry) => Ok(ok(&entry)),
        // A resource route: what names nothing is a 404, as for runs.
        Err(EngineError::WorkflowNotFound(_)) => {
            Err(ApiError::new(ErrorCode::NotFound, "Workflow not found"))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/workflows/preflight {"workflowPath"}`: re-renders every live run
/// of the workflow against the file's current version and reports each as
/// `compatible` or `divergent` (with the first reason). Changes nothing.
pub async fn preflight(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let path = match body.get("workflowPath") {
        Some(Value::String(path)) if !path.is_empty() => path.clone(),
        _ => return Err(ApiError::invalid("workflowPath must be a string")),
    };
    let report = state.engine.preflight(&path).await?;
    Ok(ok(&report))
}
