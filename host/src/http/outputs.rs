//! What a run produced: `GET /v1/runs/:runId/nodes/:nodeId` (a node at each
//! iteration: state, attempts, output, error) and `GET /v1/runs/:runId/outputs`
//! (every committed output). Both are smithers-host additions, paged by
//! `cursor` and `limit` and bounded by `--max-output-page-bytes`.
//!
//! Handlers parse the query, call one engine verb and answer its view; an
//! unknown run is `404 RUN_NOT_FOUND`, an unknown node `404 NODE_NOT_FOUND`.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{PathParams, QueryParams, positive_int};
use super::{ApiState, ok};
use crate::engine::outputs::{Cursor, Page};
use crate::model::RunId;

/// A run id from a path segment; an impossible id is an unknown run.
fn run_id(raw: &str) -> Result<RunId, ApiError> {
    RunId::parse(raw).map_err(|_| ApiError::unknown_run())
}

/// The page a query asks for: `cursor` (a `nextCursor` of an earlier answer)
/// and `limit` (items, default 100, at most 1000).
fn page(state: &ApiState, query: &QueryParams) -> Result<Page, ApiError> {
    let cursor = match query.get("cursor").filter(|c| !c.is_empty()) {
        Some(raw) => Some(Cursor::parse(raw).ok_or_else(|| {
            ApiError::invalid("cursor must be the nextCursor of an earlier answer")
        })?),
        None => None,
    };
    let limit = positive_int(query.get("limit"), Page::DEFAULT_LIMIT)?.min(Page::MAX_LIMIT);
    Ok(Page {
        cursor,
        limit,
        max_bytes: state.output_page_bytes,
    })
}

/// `GET /v1/runs/:runId/nodes/:nodeId?iteration&cursor&limit`.
pub async fn node(
    State(state): State<ApiState>,
    PathParams((run, node)): PathParams<(String, String)>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let run_id = run_id(&run)?;
    let iteration = match query.get("iteration") {
        Some(raw) => Some(
            raw.trim()
                .parse::<u32>()
                .map_err(|_| ApiError::invalid("iteration must be a non-negative integer"))?,
        ),
        None => None,
    };
    let page = page(&state, &query)?;
    let view = state
        .engine
        .node(&run_id, &node, iteration, page)
        .await
        .map_err(ApiError::from_read)?;
    Ok(ok(&view))
}

/// `GET /v1/runs/:runId/outputs?cursor&limit`.
pub async fn outputs(
    State(state): State<ApiState>,
    PathParams(run): PathParams<String>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let run_id = run_id(&run)?;
    let page = page(&state, &query)?;
    let outputs = state
        .engine
        .outputs(&run_id, page)
        .await
        .map_err(ApiError::from_read)?;
    Ok(ok(&outputs))
}

/// The OpenAPI schemas of the two answers (`NodeView`, `OutputsPage`), for
/// `openapi::components`.
pub(super) fn schemas() -> [(&'static str, Value); 2] {
    let int = json!({ "type": "integer" });
    let int_or_null = json!({ "type": ["integer", "null"] });
    let string_or_null = json!({ "type": ["string", "null"] });
    let outputs_page = json!({
        "type": "object",
        "required": ["runId", "outputs", "nextCursor"],
        "description": "At most `limit` outputs and --max-output-page-bytes of them (one larger output comes alone); nextCursor is null on the last page",
        "properties": {
            "runId": { "type": "string" },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["nodeId", "iteration", "state", "label", "output"],
                    "properties": {
                        "nodeId": { "type": "string" },
                        "iteration": int,
                        "state": { "type": "string" },
                        "label": string_or_null,
                        "output": {},
                    },
                },
            },
            "nextCursor": string_or_null,
        },
    });
    let node_view = json!({
        "type": "object",
        "required": ["runId", "nodeId", "iterations", "nextCursor"],
        "description": "At most `limit` iterations and --max-output-page-bytes of them (one larger iteration comes alone); nextCursor is null on the last page",
        "properties": {
            "runId": { "type": "string" },
            "nodeId": { "type": "string" },
            "iterations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["iteration", "state", "label", "lastAttempt", "updatedAtMs", "output", "error", "attempts", "attemptCount"],
                    "properties": {
                        "iteration": int,
                        "state": { "type": "string", "enum": ["pending", "waiting-approval", "waiting-event", "in-progress", "finished", "failed", "cancelled", "skipped"] },
                        "label": string_or_null,
                        "lastAttempt": int_or_null,
                        "updatedAtMs": int,
                        "output": { "description": "the committed output, or null" },
                        "error": { "type": ["object", "null"], "description": "why the node failed; null unless state is failed" },
                        "attempts": {
                            "type": "array",
                            "description": "the 20 latest attempts, oldest first",
                            "items": {
                                "type": "object",
                                "required": ["attempt", "state", "startedAtMs", "finishedAtMs", "error"],
                                "properties": {
                                    "attempt": int,
                                    "state": { "type": "string", "enum": ["in-progress", "finished", "failed", "cancelled"] },
                                    "startedAtMs": int,
                                    "finishedAtMs": int_or_null,
                                    "error": { "type": ["object", "null"] },
                                },
                            },
                        },
                        "attemptCount": int,
                    },
                },
            },
            "nextCursor": string_or_null,
        },
    });
    [("OutputsPage", outputs_page), ("NodeView", node_view)]
}
