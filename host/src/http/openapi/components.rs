//! `components`: the schemas of every request and answer the operations
//! refer to, and the security schemes.

use serde_json::{Value, json};

use super::shapes::{error_schema, schema_ref};
use super::{ERROR_CODES, meaning};

pub(super) fn components() -> Value {
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
    let mut components = json!({
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
                    "recovering": {
                        "type": "boolean",
                        "description": "runs a previous host process left running are still being resumed"
                    },
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
            "Workflow": {
                "type": "object",
                "required": ["path", "kind", "state", "name", "version", "hash", "inputSchema", "error"],
                "properties": {
                    "path": { "type": "string", "description": "relative to the root dir; a workflowPath that starts it" },
                    "kind": { "type": "string", "enum": ["component", "crate"] },
                    "state": {
                        "type": "string",
                        "enum": ["ready", "not-built", "outdated", "failed"],
                        "description": "ready: it loads (a crate: built from its current sources); not-built: a crate this host has not built; outdated: a crate whose sources changed since its last build; failed: see error",
                    },
                    "name": string_or_null,
                    "version": string_or_null,
                    "hash": string_or_null,
                    "inputSchema": { "type": ["object", "boolean", "null"], "description": "the JSON Schema run inputs must match" },
                    "error": {
                        "type": ["object", "null"],
                        "required": ["code", "message"],
                        "properties": { "code": { "type": "string" }, "message": { "type": "string" } },
                    },
                },
            },
            "WorkflowList": {
                "type": "object",
                "required": ["workflows", "truncated"],
                "properties": {
                    "workflows": { "type": "array", "items": schema_ref("Workflow") },
                    "truncated": { "type": "boolean", "description": "a scan limit stopped the walk; there may be more" },
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
    });
    for (name, schema) in crate::http::outputs::schemas() {
        components["schemas"][name] = schema;
    }
    components
}
