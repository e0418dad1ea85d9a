//! Workflow-level routes: the upgrade preflight.

use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use super::error::ApiError;
use super::extract::JsonBody;
use super::{ApiState, ok};

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
