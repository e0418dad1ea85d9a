//! Run lifecycle routes: start, resume, cancel, status, list, frames.
//!
//! Handlers parse, call one engine (or store read) operation and shape the
//! answer. The `*_of` functions take a run id rather than a path so serve
//! mode can mount single-run variants of the same behaviour.

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

use super::ApiState;
use super::error::{ApiError, ErrorCode};
use super::extract::{JsonBody, PathParams, QueryParams, optional_int, positive_int, truthy};
use super::ok;
use crate::engine::views::{RunFacts, RunStateView, derive_run_state, owner_alive_locally};
use crate::engine::{Engine, ResumeOutcome, StartRequest};
use crate::model::{RunId, RunStatus, now_ms};
use crate::store::{NodeSummary, RunRow, StoreError};

/// Default and fallback `limit` of list routes.
const DEFAULT_LIMIT: u32 = 50;

/// A run id from a path segment; an impossible id is simply an unknown run.
pub fn path_run_id(raw: &str) -> Result<RunId, ApiError> {
    RunId::parse(raw).map_err(|_| ApiError::run_not_found())
}

/// The fields of a start or resume body, validated in Smithers' order.
struct RunBody {
    workflow_path: Option<String>,
    input: Option<Value>,
    run_id: Option<String>,
    resume: bool,
    max_concurrency: Option<u32>,
}

impl RunBody {
    fn parse(body: &Value, path_required: bool) -> Result<Self, ApiError> {
        let workflow_path = match body.get("workflowPath") {
            Some(Value::String(p)) if !p.is_empty() => Some(p.clone()),
            None | Some(Value::Null) if !path_required => None,
            _ => return Err(ApiError::invalid("workflowPath must be a string")),
        };
        let input = match body.get("input") {
            None => None,
            Some(Value::Object(map)) => Some(Value::Object(map.clone())),
            Some(_) => return Err(ApiError::invalid("input must be a JSON object")),
        };
        let max_concurrency = match body.get("config").and_then(|c| c.get("maxConcurrency")) {
            None => None,
            Some(value) => Some(positive_number(value).ok_or_else(|| {
                ApiError::invalid("config.maxConcurrency must be a positive number")
            })?),
        };
        let run_id = match body.get("runId") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(_) => return Err(ApiError::invalid("runId must be a string")),
        };
        Ok(Self {
            workflow_path,
            input,
            run_id,
            resume: truthy(body.get("resume")),
            max_concurrency,
        })
    }
}

/// JavaScript `Number(x)` finite and > 0, floored to at least 1.
fn positive_number(value: &Value) -> Option<u32> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (n.is_finite() && n > 0.0).then(|| n.floor().clamp(1.0, f64::from(u32::MAX)) as u32)
}

/// `POST /v1/runs`: start a run, or resume one with `resume: true`.
pub async fn start(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let body = RunBody::parse(&body, true)?;
    let workflow_path = body.workflow_path.unwrap_or_default();
    if body.resume {
        let raw = body.run_id.ok_or_else(|| {
            ApiError::new(
                ErrorCode::RunIdRequired,
                "runId is required when resume is true",
            )
        })?;
        let run_id = RunId::parse(&raw).map_err(ApiError::invalid)?;
        return resume_of(&state.engine, run_id, Some(&workflow_path)).await;
    }
    let run_id = state
        .engine
        .start(StartRequest {
            workflow_path,
            input: body.input,
            run_id: body.run_id,
            max_concurrency: body.max_concurrency,
            auth: None,
        })
        .await
        .map_err(ApiError::from_start)?;
    Ok(ok(&json!({ "runId": run_id })))
}

/// `POST /v1/runs/:runId/resume`: `workflowPath` is optional (the run
/// remembers its workflow).
pub async fn resume(
    State(state): State<ApiState>,
    PathParams(raw): PathParams<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let body = RunBody::parse(&body, false)?;
    let run_id = RunId::parse(&raw)
        .map_err(|_| ApiError::new(ErrorCode::RunNotFound, "Run id does not exist"))?;
    resume_of(&state.engine, run_id, body.workflow_path.as_deref()).await
}

/// Resumes a run: `{runId}`, or `{runId, status: "running"}` when a driver
/// already runs it (e.g. after an approval resumed it by itself).
pub async fn resume_of(
    engine: &Engine,
    run_id: RunId,
    workflow_path: Option<&str>,
) -> Result<Response, ApiError> {
    let outcome = engine
        .resume(&run_id, workflow_path)
        .await
        .map_err(ApiError::from_start)?;
    Ok(ok(&match outcome {
        ResumeOutcome::AlreadyRunning => json!({ "runId": run_id, "status": "running" }),
        ResumeOutcome::Resumed | ResumeOutcome::Finished => json!({ "runId": run_id }),
    }))
}

/// `POST /v1/runs/:runId/cancel`.
pub async fn cancel(
    State(state): State<ApiState>,
    PathParams(raw): PathParams<String>,
) -> Result<Response, ApiError> {
    let outcome = state.engine.cancel(&path_run_id(&raw)?).await?;
    Ok(ok(&outcome))
}

/// `GET /v1/runs/:runId`.
pub async fn status(
    State(state): State<ApiState>,
    PathParams(raw): PathParams<String>,
) -> Result<Response, ApiError> {
    let view = status_of(&state.engine, path_run_id(&raw)?).await?;
    Ok(ok(&view))
}

/// The status object of a run (contract §5.3, plus the workflow hashes).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatusView {
    run_id: RunId,
    workflow_name: String,
    status: RunStatus,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    run_state: RunStateView,
    summary: NodeSummary,
    workflow_hash: String,
    workflow_hashes: Vec<String>,
}

/// Reads a run's status object; 404 `NOT_FOUND` for an unknown run.
pub async fn status_of(engine: &Engine, run_id: RunId) -> Result<RunStatusView, ApiError> {
    let found = engine
        .store()
        .read(move |r| {
            let Some(run) = r.run(&run_id)? else {
                return Ok(None);
            };
            let facts = RunFacts::read(r, &run)?;
            Ok(Some((
                facts,
                r.node_summary(&run_id)?,
                r.run_versions(&run_id)?,
                run,
            )))
        })
        .await?;
    let (facts, summary, workflow_hashes, run) = found.ok_or_else(ApiError::run_not_found)?;
    let run_state = derive_run_state(&run, &facts, now_ms(), owner_alive_locally);
    Ok(RunStatusView {
        run_id: run.run_id,
        workflow_name: run.workflow_name,
        status: run.status,
        started_at_ms: run.started_at_ms,
        finished_at_ms: run.finished_at_ms,
        run_state,
        summary,
        workflow_hash: run.workflow_hash,
        workflow_hashes,
    })
}

/// A listed run: the full row plus its derived state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedRun {
    #[serde(flatten)]
    row: RunRow,
    run_state: RunStateView,
}

/// `GET /v1/runs?limit&status&workflow`: newest first.
pub async fn list(State(state): State<ApiState>, query: QueryParams) -> Result<Response, ApiError> {
    let limit = positive_int(query.get("limit"), DEFAULT_LIMIT)?;
    let status = query
        .get("status")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let workflow = query
        .get("workflow")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let rows = state
        .engine
        .store()
        .read(move |r| {
            let runs = r.runs(limit, status.as_deref(), workflow.as_deref())?;
            runs.into_iter()
                .map(|run| Ok((RunFacts::read(r, &run)?, run)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
    let now = now_ms();
    let listed: Vec<ListedRun> = rows
        .into_iter()
        .map(|(facts, row)| ListedRun {
            run_state: derive_run_state(&row, &facts, now, owner_alive_locally),
            row,
        })
        .collect();
    Ok(ok(&listed))
}

/// `GET /v1/runs/:runId/frames?limit&afterFrameNo`: newest first.
pub async fn frames(
    State(state): State<ApiState>,
    PathParams(raw): PathParams<String>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let run_id = path_run_id(&raw)?;
    let limit = positive_int(query.get("limit"), DEFAULT_LIMIT)?;
    let after = match query.get("afterFrameNo").filter(|v| !v.is_empty()) {
        Some(raw) => Some(optional_int(Some(raw), -1)?).filter(|n| *n >= 0),
        None => None,
    };
    let frames = state
        .engine
        .store()
        .read(move |r| match r.run(&run_id)? {
            Some(_) => r.frames(&run_id, limit, after).map(Some),
            None => Ok(None),
        })
        .await?
        .ok_or_else(ApiError::run_not_found)?;
    Ok(ok(&frames))
}
