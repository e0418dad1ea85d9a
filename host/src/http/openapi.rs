//! The OpenAPI 3.1 description of server mode, served at `GET /openapi.json`.
//!
//! Written by hand from one table of operations ([`OPERATIONS`]) rather than
//! derived from handler annotations: the handlers parse loosely on purpose
//! (Smithers' semantics), and a table keeps the description in one readable
//! place. Tests keep it honest: `host/tests/reliability_openapi.rs` checks
//! that every route of [`super::router`] is described and vice versa, and
//! the fuzz campaigns (`reliability/schemathesis.sh`,
//! `host/tests/reliability_fuzz.rs`) check real answers against it. Every
//! [`ErrorCode`] is listed in [`error_codes`] by an exhaustive macro, so a new
//! code does not compile until it is documented here.

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::{Map, Value, json};

use super::error::ErrorCode;
use super::ok;

/// How an operation reads its input, which decides the errors it can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Nothing beyond the path.
    None,
    /// Query parameters.
    Query,
    /// A JSON body (size, deadline, depth and syntax are checked).
    Body,
}

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `get` or `post`.
    pub method: &'static str,
    /// OpenAPI path template (`/v1/runs/{runId}`).
    pub path: &'static str,
    /// operationId.
    pub id: &'static str,
    /// One line.
    pub summary: &'static str,
    /// What it reads.
    pub input: Input,
    /// A legacy alias kept for Smithers clients.
    pub alias: bool,
    /// Codes the handler itself may answer (input and auth codes are added
    /// from `input` and the route).
    pub codes: &'static [ErrorCode],
}

use ErrorCode as E;

const fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    input: Input,
    codes: &'static [ErrorCode],
) -> Operation {
    Operation {
        method,
        path,
        id,
        summary,
        input,
        alias: false,
        codes,
    }
}

const fn alias(mut operation: Operation, id: &'static str, path: &'static str) -> Operation {
    operation.id = id;
    operation.path = path;
    operation.alias = true;
    operation
}

const LIST_APPROVALS: Operation = op(
    "get",
    "/v1/approvals",
    "listApprovals",
    "Pending approvals, oldest first",
    Input::None,
    &[],
);

const SIGNAL: Operation = op(
    "post",
    "/v1/runs/{runId}/signals/{name}",
    "sendSignal",
    "Deliver a signal; a run waiting for it continues by itself",
    Input::Body,
    &[E::NotFound, E::StorageUnavailable, E::ShuttingDown],
);

/// Every operation of server mode, in the order of the router.
pub const OPERATIONS: &[Operation] = &[
    op(
        "get",
        "/health",
        "health",
        "Liveness, version, active runs and the bash sandbox status (no auth)",
        Input::None,
        &[],
    ),
    op(
        "get",
        "/metrics",
        "metrics",
        "Prometheus text exposition",
        Input::None,
        &[],
    ),
    op(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        Input::None,
        &[],
    ),
    op(
        "post",
        "/v1/runs",
        "startRun",
        "Start a run (or resume one with `resume: true` and `runId`)",
        Input::Body,
        &[
            E::RunIdRequired,
            E::RunAlreadyExists,
            E::RunNotFound,
            E::WorkflowPathOutsideRoot,
            E::WorkflowNotFound,
            E::WorkflowInvalidComponent,
            E::WorkflowUnsupportedImport,
            E::WorkflowMissingExports,
            E::WorkflowDescribeFailed,
            E::WorkflowBuildFailed,
            E::StorageUnavailable,
            E::ShuttingDown,
        ],
    ),
    op(
        "get",
        "/v1/runs",
        "listRuns",
        "Runs, newest first, each with its derived run state",
        Input::Query,
        &[],
    ),
    op(
        "get",
        "/v1/runs/{runId}",
        "getRun",
        "The status of a run",
        Input::None,
        &[E::NotFound],
    ),
    op(
        "post",
        "/v1/runs/{runId}/resume",
        "resumeRun",
        "Resume a parked, failed, cancelled or interrupted run",
        Input::Body,
        &[
            E::RunNotFound,
            E::WorkflowPathOutsideRoot,
            E::WorkflowNotFound,
            E::WorkflowInvalidComponent,
            E::WorkflowUnsupportedImport,
            E::WorkflowMissingExports,
            E::WorkflowDescribeFailed,
            E::WorkflowBuildFailed,
            E::StorageUnavailable,
            E::ShuttingDown,
        ],
    ),
    op(
        "post",
        "/v1/runs/{runId}/cancel",
        "cancelRun",
        "Cancel a running or parked run",
        Input::None,
        &[
            E::NotFound,
            E::RunNotActive,
            E::StorageUnavailable,
            E::ShuttingDown,
        ],
    ),
    op(
        "get",
        "/v1/runs/{runId}/events",
        "streamEvents",
        "The run's events as server-sent events: history, then live, ending after the terminal event",
        Input::Query,
        &[E::NotFound, E::TooManyStreams],
    ),
    op(
        "get",
        "/v1/runs/{runId}/frames",
        "listFrames",
        "Render frames, newest first",
        Input::Query,
        &[E::NotFound],
    ),
    op(
        "post",
        "/v1/runs/{runId}/nodes/{nodeId}/approve",
        "approveNode",
        "Approve a waiting approval node; the run continues by itself",
        Input::Body,
        &[
            E::NotFound,
            E::NodeNotWaiting,
            E::StorageUnavailable,
            E::ShuttingDown,
        ],
    ),
    op(
        "post",
        "/v1/runs/{runId}/nodes/{nodeId}/deny",
        "denyNode",
        "Deny a waiting approval node; the run continues by itself",
        Input::Body,
        &[
            E::NotFound,
            E::NodeNotWaiting,
            E::StorageUnavailable,
            E::ShuttingDown,
        ],
    ),
    SIGNAL,
    alias(SIGNAL, "sendSignalLegacy", "/signal/{runId}/{name}"),
    LIST_APPROVALS,
    alias(LIST_APPROVALS, "listApprovalsV1Alias", "/v1/approval/list"),
    alias(LIST_APPROVALS, "listApprovalsAlias", "/approval/list"),
    alias(LIST_APPROVALS, "listApprovalsShort", "/approvals"),
    op(
        "post",
        "/v1/workflows/preflight",
        "preflightWorkflow",
        "Check every live run of a workflow against the file's current version (changes nothing)",
        Input::Body,
        &[
            E::WorkflowPathOutsideRoot,
            E::WorkflowNotFound,
            E::WorkflowInvalidComponent,
            E::WorkflowUnsupportedImport,
            E::WorkflowMissingExports,
            E::WorkflowDescribeFailed,
            E::WorkflowBuildFailed,
        ],
    ),
];

macro_rules! documented_codes {
    ($($variant:ident: $meaning:literal,)+) => {
        /// Every error code, in the order of the enum.
        pub const ERROR_CODES: &[ErrorCode] = &[$(ErrorCode::$variant),+];

        /// What a code means, for the document. Exhaustive on purpose.
        fn meaning(code: ErrorCode) -> &'static str {
            match code {
                $(ErrorCode::$variant => $meaning,)+
            }
        }
    };
}

documented_codes! {
    InvalidRequest: "a parameter, header or field is malformed",
    InvalidJson: "the body is not JSON",
    PayloadTooLarge: "the body is larger than --max-body-bytes",
    RequestTimeout: "the body did not arrive within 60 s",
    Unauthorized: "missing or wrong token",
    Forbidden: "Host or Origin is not loopback (no token configured)",
    NotFound: "unknown route, wrong method, or unknown run on a run-scoped route",
    WorkflowPathOutsideRoot: "workflowPath escapes the root dir (lexically or through a symlink)",
    WorkflowNotFound: "workflowPath names nothing",
    WorkflowInvalidComponent: "the file is not a valid component",
    WorkflowUnsupportedImport: "the component imports what the host does not provide",
    WorkflowMissingExports: "the component does not export the workflow world",
    WorkflowDescribeFailed: "the component's describe() failed",
    WorkflowBuildFailed: "the guest crate does not build",
    RunIdRequired: "resume: true without runId",
    RunAlreadyExists: "the run id is taken",
    RunNotFound: "resume of a run that does not exist",
    RunNotActive: "cancel of a finished or failed run",
    NodeNotWaiting: "approve or deny of a node that is not waiting for a decision",
    StorageUnavailable: "the database cannot commit (disk full, read-only); reads keep working",
    ShuttingDown: "the host is shutting down",
    TooManyStreams: "too many event streams open from this client (--max-sse-per-client) or in all (--max-sse-subscribers)",
    ServerError: "a bug; the cause is in the server log, never in the answer",
}

/// Every code an operation may answer: its own, its input's and the
/// access checks'.
pub fn codes_of(operation: &Operation) -> Vec<ErrorCode> {
    let mut codes = Vec::new();
    if operation.path != "/health" {
        codes.extend([E::Unauthorized, E::Forbidden]);
    }
    match operation.input {
        Input::None => {}
        Input::Query => codes.push(E::InvalidRequest),
        Input::Body => codes.extend([
            E::InvalidRequest,
            E::InvalidJson,
            E::PayloadTooLarge,
            E::RequestTimeout,
        ]),
    }
    if operation.path.contains('{') {
        // A path segment that is not UTF-8 once decoded.
        codes.push(E::InvalidRequest);
    }
    codes.extend(operation.codes);
    codes.push(E::ServerError);
    codes
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    ok(&document())
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let item = paths
            .entry(operation.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item");
        item.insert(operation.method.into(), describe(operation));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "smithers-host server mode",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Smithers-compatible HTTP API of `smithers-host` (server mode). \
                Every error is `{\"error\":{\"code\",\"message\",\"details?\"}}` with one of the \
                documented codes. With a token, every route but /health needs \
                `Authorization: Bearer <token>` or `x-smithers-key: <token>`; without one, \
                a non-loopback Host or Origin is refused (403).",
        },
        "servers": [{ "url": "http://127.0.0.1:7331" }],
        "security": [{}, { "bearer": [] }, { "smithersKey": [] }],
        "paths": paths,
        "components": components(),
    })
}

fn describe(operation: &Operation) -> Value {
    let mut out = json!({
        "operationId": operation.id,
        "summary": operation.summary,
        "responses": responses(operation),
    });
    if operation.alias {
        out["deprecated"] = json!(true);
    }
    if operation.path == "/health" {
        out["security"] = json!([]);
    }
    let parameters = parameters(operation);
    if !parameters.is_empty() {
        out["parameters"] = Value::Array(parameters);
    }
    if let Some(body) = request_body(operation.id) {
        out["requestBody"] = json!({
            "required": false,
            "description": "JSON; an empty body is `{}`. Unknown fields are ignored.",
            "content": { "application/json": { "schema": body } },
        });
    }
    out
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "type": "string", "minLength": 1 },
    })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn parameters(operation: &Operation) -> Vec<Value> {
    let mut out = Vec::new();
    for segment in operation.path.split('/') {
        match segment {
            "{runId}" => out.push(path_param(
                "runId",
                "Run id; an impossible id is an unknown run",
            )),
            "{nodeId}" => out.push(path_param("nodeId", "Approval node id")),
            "{name}" => out.push(path_param("name", "Signal name")),
            _ => {}
        }
    }
    // Numbers as JavaScript's Number() reads them: an empty (or blank)
    // value is 0, as in Smithers.
    let number = json!({
        "anyOf": [{ "type": "number" }, { "type": "string", "pattern": "^\\s*$" }],
        "description": "a number; an empty value reads as 0",
    });
    match operation.id {
        "listRuns" => out.extend([
            query_param(
                "limit",
                "Most runs returned (default 50), floored",
                json!({ "type": "number", "minimum": 1 }),
            ),
            query_param(
                "status",
                "Only runs with this status",
                json!({ "type": "string" }),
            ),
            query_param(
                "workflow",
                "Only runs of this workflow name",
                json!({ "type": "string" }),
            ),
        ]),
        "listFrames" => out.extend([
            query_param(
                "limit",
                "Most frames returned (default 50), floored",
                json!({ "type": "number", "minimum": 1 }),
            ),
            query_param(
                "afterFrameNo",
                "Only frames after this number",
                number.clone(),
            ),
        ]),
        "streamEvents" => out.extend([
            query_param(
                "afterSeq",
                "Replay events after this seq (-1: all)",
                number.clone(),
            ),
            json!({
                "name": "Last-Event-ID", "in": "header", "required": false,
                "description": "Standard SSE resume point; wins over afterSeq (an empty value is refused)",
                "schema": { "type": "number" },
            }),
        ]),
        _ => {}
    }
    out
}

fn request_body(id: &str) -> Option<Value> {
    let run_config = json!({
        "description": "other types are ignored",
        "properties": { "maxConcurrency": { "type": ["number", "string"], "exclusiveMinimum": 0, "description": "a positive number (or numeric string), floored to at least 1" } },
    });
    // Smithers ignores a non-string value of these fields silently.
    let lenient_string = json!({ "description": "a string; other types are ignored" });
    Some(match id {
        "startRun" => json!({
            "type": "object",
            "required": ["workflowPath"],
            "properties": {
                "workflowPath": { "type": "string", "minLength": 1, "description": "a .wasm component or a guest crate dir under the root dir" },
                "input": { "type": "object" },
                "runId": { "type": ["string", "null"], "minLength": 1, "maxLength": 256, "pattern": "^[^/\\u0000-\\u001f\\u007f-\\u009f]*$", "description": "at most 256 bytes, no '/' or control characters; default: a UUID" },
                "resume": { "description": "truthy: resume runId instead of starting" },
                "config": run_config,
            },
        }),
        "resumeRun" => json!({
            "description": "a non-object body counts as {}",
            "properties": {
                "workflowPath": { "type": ["string", "null"], "minLength": 1, "description": "default: the run's own" },
                "config": run_config,
            },
        }),
        "approveNode" | "denyNode" => json!({
            "description": "a non-object body counts as {}",
            "properties": {
                "iteration": { "type": ["integer", "null"], "minimum": 0, "maximum": u32::MAX },
                "note": lenient_string,
                "decidedBy": lenient_string,
            },
        }),
        "sendSignal" | "sendSignalLegacy" => json!({
            "description": "a non-object body counts as {}",
            "properties": {
                "data": { "description": "the payload (default {})" },
                "correlationId": lenient_string,
                "receivedBy": lenient_string,
            },
        }),
        "preflightWorkflow" => json!({
            "type": "object",
            "required": ["workflowPath"],
            "properties": { "workflowPath": { "type": "string", "minLength": 1 } },
        }),
        _ => return None,
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn ok_content(id: &str) -> Value {
    let json_of = |schema: Value| json!({ "application/json": { "schema": schema } });
    match id {
        "metrics" => json!({ "text/plain": { "schema": { "type": "string" } } }),
        // Schemas of text/event-stream describe one event.
        "streamEvents" => json!({ "text/event-stream": { "schema": {
            "type": "object",
            "properties": {
                "event": { "const": "smithers" },
                "id": { "type": "string", "pattern": "^[0-9]+$" },
                "data": { "type": "string", "contentMediaType": "application/json" },
                "retry": { "type": "integer" },
            },
        } } }),
        "openapi" => json_of(json!({ "type": "object" })),
        "health" => json_of(schema_ref("Health")),
        "startRun" | "resumeRun" => json_of(schema_ref("RunRef")),
        "listRuns" => json_of(json!({ "type": "array", "items": schema_ref("ListedRun") })),
        "getRun" => json_of(schema_ref("RunStatus")),
        "cancelRun" => json_of(schema_ref("CancelOutcome")),
        "listFrames" => json_of(json!({ "type": "array", "items": schema_ref("Frame") })),
        "approveNode" | "denyNode" => json_of(json!({
            "type": "object", "required": ["runId"], "properties": { "runId": { "type": "string" } },
        })),
        "sendSignal" | "sendSignalLegacy" => json_of(schema_ref("SignalReceipt")),
        "preflightWorkflow" => json_of(schema_ref("PreflightReport")),
        _ => json_of(json!({
            "type": "object", "required": ["approvals"],
            "properties": { "approvals": { "type": "array", "items": schema_ref("PendingApproval") } },
        })),
    }
}

fn responses(operation: &Operation) -> Value {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes_of(operation) {
        let codes = by_status.entry(code.status().as_u16()).or_default();
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    let mut out = Map::new();
    out.insert(
        "200".into(),
        json!({ "description": "OK", "content": ok_content(operation.id) }),
    );
    for (status, codes) in by_status {
        let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        out.insert(
            status.to_string(),
            json!({
                "description": names.join(", "),
                "x-error-codes": names,
                "content": { "application/json": { "schema": error_schema(&names) } },
            }),
        );
    }
    Value::Object(out)
}

fn error_schema(codes: &[&str]) -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "enum": codes },
                    "message": { "type": "string" },
                    "details": { "type": "object" },
                },
            },
        },
    })
}

fn components() -> Value {
    let all: Vec<&str> = ERROR_CODES.iter().map(|c| c.as_str()).collect();
    let mut error = error_schema(&all);
    error["description"] = json!(
        ERROR_CODES
            .iter()
            .map(|c| format!("{} ({}): {}", c.as_str(), c.status().as_u16(), meaning(*c)))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let int = json!({ "type": "integer" });
    let int_or_null = json!({ "type": ["integer", "null"] });
    let string_or_null = json!({ "type": ["string", "null"] });
    let status = json!({
        "type": "string",
        "enum": ["running", "waiting-approval", "waiting-event", "finished", "failed", "cancelled"],
    });
    json!({
        "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer" },
            "smithersKey": { "type": "apiKey", "in": "header", "name": "x-smithers-key" },
        },
        "schemas": {
            "Error": error,
            "Health": {
                "type": "object",
                "required": ["ok", "version", "activeRuns", "sandbox"],
                "properties": {
                    "ok": { "type": "boolean" },
                    "version": { "type": "string" },
                    "activeRuns": int,
                    "sandbox": { "type": ["object", "null"] },
                    "http": {
                        "type": "object",
                        "description": "the outbound HTTP policy of workflows (closed unless enabled)",
                        "required": ["enabled", "allow", "timeoutMs", "maxResponseBytes"],
                        "properties": {
                            "enabled": { "type": "boolean" },
                            "allow": { "type": "array", "items": { "type": "string" } },
                            "timeoutMs": int,
                            "maxResponseBytes": int,
                            "privateAddressesNeedIpPattern": { "type": "boolean" },
                            "secrets": {
                                "type": "array",
                                "description": "names and bindings of the operator's secrets (never their values)",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "name": { "type": "string" },
                                        "boundTo": { "type": "array", "items": { "type": "string" } },
                                        "inBody": { "type": "boolean" },
                                    },
                                },
                            },
                        },
                    },
                },
            },
            "RunRef": {
                "type": "object",
                "required": ["runId"],
                "properties": {
                    "runId": { "type": "string" },
                    "status": { "const": "running", "description": "present when a driver already runs it" },
                },
            },
            "RunState": {
                "type": "object",
                "required": ["runId", "computedAt", "state"],
                "properties": {
                    "runId": { "type": "string" },
                    "computedAt": { "type": "string" },
                    "state": { "type": "string", "enum": ["running", "waiting-approval", "waiting-event", "stale", "orphaned", "failed", "cancelled", "succeeded", "unknown"] },
                    "blocked": { "type": "object" },
                    "unhealthy": { "type": "object" },
                },
            },
            "RunStatus": {
                "type": "object",
                "required": ["runId", "workflowName", "status", "startedAtMs", "finishedAtMs", "runState", "summary", "workflowHash", "workflowHashes"],
                "properties": {
                    "runId": { "type": "string" },
                    "workflowName": { "type": "string" },
                    "status": status,
                    "startedAtMs": int_or_null,
                    "finishedAtMs": int_or_null,
                    "runState": schema_ref("RunState"),
                    "summary": { "type": "object", "additionalProperties": int },
                    "workflowHash": { "type": "string" },
                    "workflowHashes": { "type": "array", "items": { "type": "string" } },
                },
            },
            "ListedRun": {
                "type": "object",
                "required": ["runId", "workflowName", "workflowPath", "workflowHash", "status", "createdAtMs", "configJson", "runState"],
                "properties": {
                    "runId": { "type": "string" },
                    "workflowName": { "type": "string" },
                    "workflowPath": { "type": "string" },
                    "workflowHash": { "type": "string" },
                    "status": status,
                    "createdAtMs": int,
                    "startedAtMs": int_or_null,
                    "finishedAtMs": int_or_null,
                    "heartbeatAtMs": int_or_null,
                    "runtimeOwnerId": string_or_null,
                    "errorJson": string_or_null,
                    "configJson": { "type": "string" },
                    "cancelRequestedAtMs": int_or_null,
                    "runState": schema_ref("RunState"),
                },
            },
            "CancelOutcome": {
                "type": "object",
                "required": ["won", "status", "terminalStatus", "repaired", "runId"],
                "properties": {
                    "won": { "type": "boolean" },
                    "status": { "type": "string", "enum": ["cancelled", "already-terminal"] },
                    "terminalStatus": { "const": "cancelled" },
                    "repaired": { "type": "boolean" },
                    "runId": { "type": "string" },
                },
            },
            "Frame": {
                "type": "object",
                "required": ["runId", "frameNo", "createdAtMs", "xmlJson", "xmlHash", "encoding", "mountedTaskIdsJson", "taskIndexJson", "note"],
                "properties": {
                    "runId": { "type": "string" },
                    "frameNo": int,
                    "createdAtMs": int,
                    "xmlJson": { "type": "string" },
                    "xmlHash": { "type": "string" },
                    "encoding": { "const": "full" },
                    "mountedTaskIdsJson": { "type": "string" },
                    "taskIndexJson": { "type": "string" },
                    "note": { "type": "string" },
                },
            },
            "PendingApproval": {
                "type": "object",
                "required": ["runId", "nodeId", "iteration", "workflowName", "runStatus", "label", "requestTitle", "requestedAtMs", "waitingMs", "request"],
                "properties": {
                    "runId": { "type": "string" },
                    "nodeId": { "type": "string" },
                    "iteration": int,
                    "workflowName": { "type": "string" },
                    "runStatus": { "type": "string" },
                    "label": { "type": "string" },
                    "requestTitle": { "type": "string" },
                    "requestSummary": string_or_null,
                    "requestedAtMs": int,
                    "waitingMs": int,
                    "note": string_or_null,
                    "decidedBy": string_or_null,
                    "request": {},
                },
            },
            "SignalReceipt": {
                "type": "object",
                "required": ["runId", "seq", "signalName", "correlationId", "receivedAtMs"],
                "properties": {
                    "runId": { "type": "string" },
                    "seq": int,
                    "signalName": { "type": "string" },
                    "correlationId": string_or_null,
                    "receivedAtMs": int,
                },
            },
            "PreflightReport": {
                "type": "object",
                "required": ["workflowPath", "hash", "workflowName", "runs"],
                "properties": {
                    "workflowPath": { "type": "string" },
                    "hash": { "type": "string" },
                    "workflowName": { "type": "string" },
                    "runs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["runId", "status", "currentHash", "verdict"],
                            "properties": {
                                "runId": { "type": "string" },
                                "status": status,
                                "currentHash": { "type": "string" },
                                "verdict": { "type": "string", "enum": ["compatible", "divergent"] },
                                "reason": { "type": "string" },
                            },
                        },
                    },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_error_code_is_answered_by_some_operation_with_its_status() {
        let doc = document();
        let mut seen = BTreeSet::new();
        for (_, item) in doc["paths"].as_object().unwrap() {
            for (_, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    for code in response["x-error-codes"].as_array().into_iter().flatten() {
                        let code = ERROR_CODES
                            .iter()
                            .find(|c| c.as_str() == code)
                            .unwrap_or_else(|| panic!("{code} is not an ErrorCode"));
                        assert_eq!(status, &code.status().as_u16().to_string());
                        seen.insert(code.as_str());
                    }
                }
            }
        }
        let all: BTreeSet<&str> = ERROR_CODES.iter().map(|c| c.as_str()).collect();
        assert_eq!(seen, all);
        let listed: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
            ["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(listed, all);
    }

    #[test]
    fn operation_ids_are_unique() {
        let ids: BTreeSet<&str> = OPERATIONS.iter().map(|o| o.id).collect();
        assert_eq!(ids.len(), OPERATIONS.len());
    }
}
