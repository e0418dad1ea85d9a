//! RPC handlers for runs, approvals, signals and node outputs. Each parses
//! its params the way Smithers' gateway does, calls one engine or store
//! operation and shapes the payload. The engine resumes a parked run by
//! itself after a decision or a signal, so no handler resumes explicitly.

use serde_json::{Map, Value, json};

use super::Gateway;
use super::auth::has_approval_scope;
use super::rpc::{
    Caller, RpcCode, RpcError, non_negative_int, positive_int, required_string, run_input,
    string_param,
};
use crate::engine::views::{RunFacts, derive_run_state, owner_alive_locally};
use crate::engine::{ApprovalDecision, EngineError, ResumeOutcome};
use crate::model::{ApprovalStatus, NodeKey, NodeState, RunId, RunStatus, now_ms};
use crate::store::{RunRow, StoreError};

/// Default `limit` of `listRuns`.
const DEFAULT_RUNS_LIMIT: u32 = 50;

fn filter(params: &Value) -> &Value {
    static EMPTY: Value = Value::Null;
    params
        .get("filter")
        .filter(|f| f.is_object())
        .unwrap_or(&EMPTY)
}

fn run_id_param(params: &Value) -> Result<RunId, RpcError> {
    let raw = required_string(params, "runId")?;
    RunId::parse(&raw).map_err(|_| RpcError::run_not_found(&raw))
}

/// `listWorkflows {filter?: {hasUi?, includeSystem?}}`.
pub fn list_workflows(gateway: &Gateway, params: &Value) -> Value {
    let include_system = params
        .get("includeSystem")
        .or_else(|| filter(params).get("includeSystem"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let has_ui = params
        .get("hasUi")
        .or_else(|| filter(params).get("hasUi"))
        .and_then(Value::as_bool);
    // No workflow has a UI here.
    if has_ui == Some(true) {
        return json!([]);
    }
    Value::Array(gateway.workflow_summaries(include_system))
}

/// `launchRun {workflow, input?, options?: {runId?, maxConcurrency?}, runId?}`.
pub async fn launch_run(
    gateway: &Gateway,
    caller: &Caller,
    params: &Value,
) -> Result<Value, RpcError> {
    let key = required_string(params, "workflow")?;
    let input = run_input(params.get("input"))?;
    let options = params.get("options").cloned().unwrap_or(Value::Null);
    let run_id = string_param(params, "runId").or_else(|| string_param(&options, "runId"));
    let max_concurrency = positive_int(options.get("maxConcurrency"), "maxConcurrency")?;
    let triggered_by = caller.identity.triggered_by();
    gateway
        .start_run(
            &key,
            input,
            caller.identity.run_auth(&triggered_by),
            run_id,
            max_concurrency,
        )
        .await
}

/// `resumeRun {runId, options?: {force?}}`: a terminal run answers
/// `already_terminal` unless `force` (then a failed or cancelled run
/// continues from its committed state).
pub async fn resume_run(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let run_id = run_id_param(params)?;
    let force = params
        .get("options")
        .and_then(|o| o.get("force"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let run = gateway.run(&run_id).await?;
    if run.status.is_terminal() && (!force || run.status == RunStatus::Finished) {
        return Ok(json!({ "runId": run_id, "status": "already_terminal" }));
    }
    match gateway.engine.resume(&run_id, None).await {
        Ok(ResumeOutcome::Finished) => Ok(json!({ "runId": run_id, "status": "already_terminal" })),
        Ok(_) => Ok(json!({ "runId": run_id, "status": "resume_requested" })),
        Err(EngineError::RunNotFound(_)) => Err(RpcError::run_not_found(run_id.as_str())),
        Err(e) => Err(e.into()),
    }
}

/// `cancelRun {runId}`: Smithers' `finalizeCancelledRun` claim object.
pub async fn cancel_run(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let run_id = run_id_param(params)?;
    match gateway.engine.cancel(&run_id).await {
        Ok(outcome) => Ok(serde_json::to_value(outcome).expect("outcomes serialize")),
        Err(EngineError::RunNotFound(_)) => {
            Err(RpcError::new(RpcCode::RunNotFound, "Run not found"))
        }
        Err(EngineError::RunNotActive(_, status)) => Err(RpcError::new(
            RpcCode::RunNotActive,
            "Run is not currently active",
        )
        .with_details(json!({ "status": status.as_str() }))),
        Err(e) => Err(e.into()),
    }
}

/// A run as the gateway lists it: the stored row plus `workflowKey`,
/// `system` and the derived `runState`.
fn run_summary(gateway: &Gateway, run: RunRow, facts: &RunFacts, now: i64) -> Value {
    let run_state = derive_run_state(&run, facts, now, owner_alive_locally);
    let key = gateway.key_of_path(&run.workflow_path).map(str::to_string);
    let system = key
        .as_deref()
        .and_then(|k| gateway.registered(k))
        .is_some_and(|w| w.config.system);
    let mut value = serde_json::to_value(&run).expect("runs serialize");
    let object = value.as_object_mut().expect("runs serialize to objects");
    object.insert("workflowKey".into(), json!(key));
    object.insert("system".into(), json!(system));
    object.insert("runState".into(), json!(run_state));
    value
}

/// `getRun {runId}`: the run row, `workflowKey`, `system`, node `summary`
/// and `runState`.
pub async fn get_run(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let run_id = run_id_param(params)?;
    let id = run_id.clone();
    let found = gateway
        .engine
        .store()
        .read(move |r| {
            let Some(run) = r.run(&id)? else {
                return Ok(None);
            };
            Ok(Some((RunFacts::read(r, &run)?, r.node_summary(&id)?, run)))
        })
        .await?;
    let (facts, summary, run) = found.ok_or_else(|| RpcError::run_not_found(run_id.as_str()))?;
    let mut value = run_summary(gateway, run, &facts, now_ms());
    value["summary"] = json!(summary);
    Ok(value)
}

/// `listRuns {filter?: {status?, limit?, offset?, workflow?}}`: newest first.
pub async fn list_runs(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let filter = filter(params);
    let limit = positive_int(filter.get("limit"), "limit")?.unwrap_or(DEFAULT_RUNS_LIMIT);
    let offset = non_negative_int(filter.get("offset"), "offset")?.unwrap_or(0);
    let status = string_param(filter, "status");
    let path = match string_param(filter, "workflow") {
        Some(key) => match gateway.registered(&key) {
            Some(workflow) => Some(workflow.path.clone()),
            None => return Ok(json!([])),
        },
        None => None,
    };
    let rows = gateway
        .engine
        .store()
        .read(move |r| {
            r.runs_page(limit, offset, status.as_deref(), path.as_deref())?
                .into_iter()
                .map(|run| Ok((RunFacts::read(r, &run)?, run)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
    let now = now_ms();
    Ok(Value::Array(
        rows.into_iter()
            .map(|(facts, run)| run_summary(gateway, run, &facts, now))
            .collect(),
    ))
}

/// Pending approvals in the gateway's shape, oldest first.
pub async fn pending_approvals(gateway: &Gateway) -> Result<Vec<Value>, RpcError> {
    let rows = gateway
        .engine
        .store()
        .read(|r| {
            let approvals = r.pending_approvals(u32::MAX)?;
            approvals
                .into_iter()
                .map(|a| {
                    let id = RunId::parse(&a.run_id).map_err(StoreError::Corrupt)?;
                    let path = r.run(&id)?.map(|run| run.workflow_path);
                    Ok((a, path))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|(a, path)| {
            let key = path.as_deref().and_then(|p| gateway.key_of_path(p));
            json!({
                "runId": a.run_id,
                "workflowKey": key,
                "nodeId": a.node_id,
                "iteration": a.iteration,
                "requestTitle": a.request_title,
                "requestSummary": a.request_summary,
                "requestedAtMs": a.requested_at_ms,
                "allowedScopes": string_list(a.request.get("allowedScopes")),
                "allowedUsers": string_list(a.request.get("allowedUsers")),
            })
        })
        .collect())
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `listApprovals {filter?: {runId?, workflow?, limit?}}`.
pub async fn list_approvals(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let filter = filter(params);
    let run_id = string_param(params, "runId").or_else(|| string_param(filter, "runId"));
    let workflow = string_param(params, "workflow").or_else(|| string_param(filter, "workflow"));
    let limit = positive_int(params.get("limit").or_else(|| filter.get("limit")), "limit")?;
    let mut approvals = pending_approvals(gateway).await?;
    approvals.retain(|a| {
        run_id.as_deref().is_none_or(|id| a["runId"] == id)
            && workflow.as_deref().is_none_or(|w| a["workflowKey"] == w)
    });
    if let Some(limit) = limit {
        approvals.truncate(limit as usize);
    }
    Ok(Value::Array(approvals))
}

/// `submitApproval {runId, nodeId, iteration?, approved? | decision: {approved,
/// note?}, note?}`: enforces the approval's `allowedUsers`/`allowedScopes`,
/// refuses a second decision (`AlreadyDecided` 409), decides; the engine then
/// resumes the run in the background.
pub async fn submit_approval(
    gateway: &Gateway,
    caller: &Caller,
    params: &Value,
) -> Result<Value, RpcError> {
    let decision = params.get("decision").filter(|d| d.is_object());
    let approved = params.get("approved").and_then(Value::as_bool).or_else(|| {
        decision
            .and_then(|d| d.get("approved"))
            .and_then(Value::as_bool)
    });
    let (Some(raw_run), Some(node_id), Some(approved)) = (
        string_param(params, "runId"),
        string_param(params, "nodeId"),
        approved,
    ) else {
        return Err(RpcError::invalid(
            "runId, nodeId, and approved are required",
        ));
    };
    let iteration = non_negative_int(params.get("iteration"), "iteration")?.unwrap_or(0);
    let run_id = RunId::parse(&raw_run).map_err(|_| RpcError::run_not_found(&raw_run))?;
    let key = NodeKey::new(node_id.clone(), iteration);
    let (id, k) = (run_id.clone(), key.clone());
    let (run, approval) = gateway
        .engine
        .store()
        .read(move |r| Ok((r.run(&id)?, r.approval(&id, &k)?)))
        .await?;
    if run.is_none() {
        return Err(RpcError::run_not_found(&raw_run));
    }
    let approval = approval.ok_or_else(|| {
        RpcError::new(
            RpcCode::NodeNotFound,
            format!("No approval was requested for {node_id} (iteration {iteration})"),
        )
    })?;
    if approval.status != ApprovalStatus::Requested {
        return Err(already_decided(
            &raw_run,
            &node_id,
            iteration,
            approval.status,
        ));
    }
    let request: Value = serde_json::from_str(&approval.request_json).unwrap_or(Value::Null);
    let allowed_users = string_list(request.get("allowedUsers"));
    let identity = &caller.identity;
    if !allowed_users.is_empty()
        && !identity
            .user_id
            .as_ref()
            .is_some_and(|u| allowed_users.contains(u))
    {
        return Err(RpcError::new(
            RpcCode::Forbidden,
            "User is not allowed to decide this approval",
        ));
    }
    let allowed_scopes = string_list(request.get("allowedScopes"));
    if !allowed_scopes.is_empty()
        && !allowed_scopes
            .iter()
            .any(|s| has_approval_scope(&identity.scopes, s))
    {
        return Err(RpcError::new(
            RpcCode::Forbidden,
            "Connection is missing required approval scope",
        ));
    }
    let note =
        string_param(params, "note").or_else(|| decision.and_then(|d| string_param(d, "note")));
    let outcome = gateway
        .engine
        .decide(
            &run_id,
            ApprovalDecision {
                node_id: node_id.clone(),
                iteration,
                approved,
                note,
                decided_by: identity.user_id.clone(),
            },
        )
        .await;
    match outcome {
        Ok(()) => Ok(json!({
            "runId": raw_run, "nodeId": node_id, "iteration": iteration, "approved": approved,
        })),
        // Lost a race with another decision.
        Err(EngineError::NotWaitingForApproval(_)) => Err(already_decided(
            &raw_run,
            &node_id,
            iteration,
            ApprovalStatus::Approved,
        )),
        Err(EngineError::RunNotFound(_)) => Err(RpcError::run_not_found(&raw_run)),
        Err(e) => Err(e.into()),
    }
}

fn already_decided(run: &str, node: &str, iteration: u32, status: ApprovalStatus) -> RpcError {
    RpcError::new(
        RpcCode::AlreadyDecided,
        format!("Approval for {node} has already been decided"),
    )
    .with_details(json!({
        "runId": run, "nodeId": node, "iteration": iteration, "status": status.as_str(),
    }))
}

/// `submitSignal {runId, signalName | correlationKey, payload | data,
/// correlationId?}`: the receipt `{runId, seq, signalName, correlationId,
/// receivedAtMs}`; a run waiting for it continues.
pub async fn submit_signal(
    gateway: &Gateway,
    caller: &Caller,
    params: &Value,
) -> Result<Value, RpcError> {
    let correlation_key = string_param(params, "correlationKey");
    let name = string_param(params, "signalName").or_else(|| correlation_key.clone());
    let (Some(raw_run), Some(name)) = (string_param(params, "runId"), name) else {
        return Err(RpcError::invalid("runId and signalName are required"));
    };
    let run_id = RunId::parse(&raw_run).map_err(|_| RpcError::run_not_found(&raw_run))?;
    let payload = params
        .get("data")
        .or_else(|| params.get("payload"))
        .filter(|v| !v.is_null())
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    let correlation_id = string_param(params, "correlationId").or(correlation_key);
    match gateway
        .engine
        .signal(
            &run_id,
            &name,
            payload,
            correlation_id,
            caller.identity.user_id.clone(),
        )
        .await
    {
        Ok(receipt) => Ok(serde_json::to_value(receipt).expect("receipts serialize")),
        Err(EngineError::RunNotFound(_)) => Err(RpcError::run_not_found(&raw_run)),
        Err(e) => Err(e.into()),
    }
}

/// `getNodeOutput {runId, nodeId, iteration?}`: `{status: "produced", row}`,
/// `{status: "failed", row: null, error}` or `{status: "pending", row: null}`
/// (`schema` is always null: components carry no output schema).
pub async fn get_node_output(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let run_id = run_id_param(params)?;
    let node_id = required_string(params, "nodeId")?;
    let iteration = non_negative_int(params.get("iteration"), "iteration")?;
    let id = run_id.clone();
    let (run, nodes) = gateway
        .engine
        .store()
        .read(move |r| Ok((r.run(&id)?, r.nodes(&id)?)))
        .await?;
    if run.is_none() {
        return Err(RpcError::new(
            RpcCode::RunNotFound,
            format!("Run not found: {run_id}"),
        ));
    }
    let mut rows: Vec<_> = nodes
        .into_iter()
        .filter(|n| *n.key.node_id == *node_id)
        .collect();
    if rows.is_empty() {
        return Err(RpcError::new(
            RpcCode::NodeNotFound,
            format!("Node not found: {node_id}"),
        ));
    }
    rows.sort_by_key(|n| n.key.iteration);
    let node = match iteration {
        Some(i) => rows
            .into_iter()
            .find(|n| n.key.iteration == i)
            .ok_or_else(|| {
                RpcError::new(
                    RpcCode::IterationNotFound,
                    format!("Iteration not found: {i}"),
                )
            })?,
        None => rows.pop().expect("not empty"),
    };
    let decode = |raw: &Option<String>| {
        raw.as_deref()
            .map(|t| serde_json::from_str::<Value>(t).unwrap_or(Value::String(t.to_string())))
    };
    let base = json!({ "runId": run_id, "nodeId": node_id, "iteration": node.key.iteration, "schema": null });
    let mut value = base;
    if let Some(output) = decode(&node.output_json) {
        value["status"] = json!("produced");
        value["row"] = output;
    } else if node.state == NodeState::Failed {
        value["status"] = json!("failed");
        value["row"] = Value::Null;
        value["error"] = decode(&node.error_json).unwrap_or(Value::Null);
    } else {
        value["status"] = json!("pending");
        value["row"] = Value::Null;
        value["state"] = json!(node.state.as_str());
    }
    Ok(value)
}

/// `frames.list {runId, limit? (50), afterFrameNo?}`: frames newest first
/// (server mode's frame rows).
pub async fn list_frames(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let run_id = run_id_param(params)?;
    let limit = positive_int(params.get("limit"), "limit")?.unwrap_or(DEFAULT_RUNS_LIMIT);
    let after = positive_int(params.get("afterFrameNo"), "afterFrameNo")?.map(i64::from);
    let id = run_id.clone();
    let frames = gateway
        .engine
        .store()
        .read(move |r| match r.run(&id)? {
            Some(_) => r.frames(&id, limit, after).map(Some),
            None => Ok(None),
        })
        .await?
        .ok_or_else(|| RpcError::run_not_found(run_id.as_str()))?;
    Ok(serde_json::to_value(frames).expect("frames serialize"))
}

/// `frames.get {runId, frameNo?}`: one frame, the last when `frameNo` is
/// absent.
pub async fn get_frame(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let run_id = run_id_param(params)?;
    let frame_no = positive_int(params.get("frameNo"), "frameNo")?;
    let id = run_id.clone();
    let found = gateway
        .engine
        .store()
        .read(move |r| {
            if r.run(&id)?.is_none() {
                return Ok(None);
            }
            // Frames come newest first.
            Ok(Some(match frame_no {
                Some(n) => r
                    .frames(&id, u32::MAX, Some(i64::from(n) - 1))?
                    .into_iter()
                    .find(|f| f.frame_no == u64::from(n)),
                None => r.frames(&id, 1, None)?.into_iter().next(),
            }))
        })
        .await?
        .ok_or_else(|| RpcError::run_not_found(run_id.as_str()))?;
    found
        .map(|f| serde_json::to_value(f).expect("frames serialize"))
        .ok_or_else(|| RpcError::new(RpcCode::NotFound, "Frame not found"))
}

/// `runs.rerun {runId, newRunId?}`: a new run of the same registered
/// workflow with the same input, started by the caller.
pub async fn rerun(gateway: &Gateway, caller: &Caller, params: &Value) -> Result<Value, RpcError> {
    let run_id = run_id_param(params)?;
    let run = gateway.run(&run_id).await?;
    let key = gateway
        .key_of_path(&run.workflow_path)
        .ok_or_else(|| {
            RpcError::new(
                RpcCode::NotFound,
                format!("Run {run_id} was not started from a registered workflow"),
            )
        })?
        .to_string();
    let input = serde_json::from_str(&run.input_json).unwrap_or_else(|_| json!({}));
    let triggered_by = caller.identity.triggered_by();
    gateway
        .start_run(
            &key,
            run_input(Some(&input))?,
            caller.identity.run_auth(&triggered_by),
            string_param(params, "newRunId"),
            None,
        )
        .await
}
