//! How one operation is described: its parameters, request body, and the
//! answers it may give (200 and each error status with its codes).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Operation, codes_of};
use crate::http::error::ErrorCode;

pub(super) fn describe(operation: &Operation) -> Value {
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
            "{nodeId}" if operation.id == "getNode" => out.push(path_param("nodeId", "Node id")),
            "{nodeId}" => out.push(path_param("nodeId", "Approval node id")),
            "{name}" => out.push(path_param("name", "Signal name")),
            "{path}" => out.push(path_param(
                "path",
                "Workflow path under the root dir, percent-encoded (`/` as `%2F`)",
            )),
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
        "listWorkflows" => out.push(query_param(
            "build",
            "Build the guest crates that are not built from their current sources (default false)",
            json!({ "type": "string", "enum": ["true", "false", "1", "0", ""] }),
        )),
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
        "listOutputs" | "getNode" => {
            if operation.id == "getNode" {
                out.push(query_param(
                    "iteration",
                    "Only this loop iteration",
                    json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX }),
                ));
            }
            out.extend([
                query_param(
                    "cursor",
                    "Continue after an earlier answer: its nextCursor",
                    json!({ "type": "string", "pattern": "^[0-9]+$" }),
                ),
                query_param(
                    "limit",
                    "Most items returned (default 100, at most 1000), floored",
                    json!({ "type": "number", "minimum": 1 }),
                ),
            ]);
        }
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

pub(super) fn schema_ref(name: &str) -> Value {
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
        "listOutputs" => json_of(schema_ref("OutputsPage")),
        "getNode" => json_of(schema_ref("NodeView")),
        "approveNode" | "denyNode" => json_of(json!({
            "type": "object", "required": ["runId"], "properties": { "runId": { "type": "string" } },
        })),
        "sendSignal" | "sendSignalLegacy" => json_of(schema_ref("SignalReceipt")),
        "preflightWorkflow" => json_of(schema_ref("PreflightReport")),
        "listWorkflows" => json_of(schema_ref("WorkflowList")),
        "getWorkflow" => json_of(schema_ref("Workflow")),
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

pub(super) fn error_schema(codes: &[&str]) -> Value {
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
