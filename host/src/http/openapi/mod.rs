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

use axum::response::Response;
use serde_json::{Map, Value, json};

use super::error::ErrorCode;
use super::ok;

mod components;
mod shapes;

use components::components;
use shapes::describe;

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
            E::InvalidInput,
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
        "get",
        "/v1/runs/{runId}/outputs",
        "listOutputs",
        "The run's committed outputs, a bounded page at a time (smithers-host)",
        Input::Query,
        &[E::RunNotFound],
    ),
    op(
        "get",
        "/v1/runs/{runId}/nodes/{nodeId}",
        "getNode",
        "A node at each iteration: state, attempts, output, error; a bounded page at a time (smithers-host)",
        Input::Query,
        &[E::RunNotFound, E::NodeNotFound],
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
        "get",
        "/v1/workflows",
        "listWorkflows",
        "The workflows under the root dir (bounded walk; crates are built only with build=true)",
        Input::Query,
        &[E::ShuttingDown],
    ),
    op(
        "get",
        "/v1/workflows/{path}",
        "getWorkflow",
        "One workflow, resolved like workflowPath and loaded (a crate is built)",
        Input::None,
        &[E::NotFound, E::WorkflowPathOutsideRoot, E::ShuttingDown],
    ),
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
        pub(super) fn meaning(code: ErrorCode) -> &'static str {
            match code {
                $(ErrorCode::$variant => $meaning,)+
            }
        }
    };
}

documented_codes! {
    InvalidRequest: "a parameter, header or field is malformed",
    InvalidJson: "the body is not JSON",
    InvalidInput: "the run input does not match the workflow's input schema; details: {pointer, reason}",
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
    RunNotFound: "resume of a run that does not exist, or its nodes or outputs asked for",
    RunNotActive: "cancel of a finished or failed run",
    NodeNotWaiting: "approve or deny of a node that is not waiting for a decision",
    NodeNotFound: "a node (or an iteration of it) the run never mounted",
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
