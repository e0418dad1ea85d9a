//! The RPC layer shared by HTTP (`POST /v1/rpc/<method>`, `POST /rpc`) and
//! WebSocket `req` frames: the response envelope, the error codes and their
//! HTTP statuses, and the dispatch of a method to its handler.
//!
//! Frames are Smithers' exactly: `{type:"res", id, ok:true, apiVersion:"v1",
//! payload}` or `{type:"res", id, ok:false, apiVersion:"v1", error:{version,
//! code, message, ...details}}` — the published client checks `type`, `id`,
//! `ok` and `payload`/`error.code`/`error.message` and nothing else. The
//! handlers themselves live in `methods` (runs, approvals, signals, outputs)
//! and `cron`; this module only routes.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::Gateway;
use super::auth::Identity;
use super::{cron, methods};
use crate::http::error::ApiError;

/// The API version every frame carries.
pub const API_VERSION: &str = "v1";

/// The gateway's error codes, spelled as Smithers spells them (a mix of
/// legacy upper-case and newer PascalCase codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcCode {
    /// Malformed params.
    InvalidRequest,
    /// A frame outside Smithers' bounds (not JSON, too deep, too big, a bad
    /// method name), or a run input that is not a JSON object.
    InvalidInput,
    /// A body over the limit (Smithers spells it `PayloadTooLarge`).
    PayloadTooLarge,
    /// Missing or bad credentials.
    Unauthorized,
    /// Authenticated but not allowed (scope, approval restriction, Host).
    Forbidden,
    /// Unknown workflow, run, cron or route.
    NotFound,
    /// Unknown method.
    MethodNotFound,
    /// Missing or malformed run id (streams).
    InvalidRunId,
    /// Unknown run (stream and cancel paths).
    RunNotFound,
    /// Unknown node.
    NodeNotFound,
    /// Unknown iteration of a node.
    IterationNotFound,
    /// `afterSeq` out of range.
    SeqOutOfRange,
    /// The approval was decided already.
    AlreadyDecided,
    /// The run is finished, failed or cancelled.
    RunNotActive,
    /// The run id is taken.
    Conflict,
    /// The client speaks another protocol version.
    ProtocolUnsupported,
    /// Too many connections.
    ConnectionLimit,
    /// A bug or an unavailable dependency.
    ServerError,
}

impl RpcCode {
    /// The wire code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::InvalidInput => "INVALID_INPUT",
            Self::PayloadTooLarge => "PayloadTooLarge",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotFound => "METHOD_NOT_FOUND",
            Self::InvalidRunId => "InvalidRunId",
            Self::RunNotFound => "RunNotFound",
            Self::NodeNotFound => "NodeNotFound",
            Self::IterationNotFound => "IterationNotFound",
            Self::SeqOutOfRange => "SeqOutOfRange",
            Self::AlreadyDecided => "AlreadyDecided",
            Self::RunNotActive => "RUN_NOT_ACTIVE",
            Self::Conflict => "CONFLICT",
            Self::ProtocolUnsupported => "PROTOCOL_UNSUPPORTED",
            Self::ConnectionLimit => "CONNECTION_LIMIT",
            Self::ServerError => "SERVER_ERROR",
        }
    }

    /// Smithers' `statusForRpcError`.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest
            | Self::InvalidInput
            | Self::SeqOutOfRange
            | Self::InvalidRunId
            | Self::ProtocolUnsupported => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound
            | Self::MethodNotFound
            | Self::RunNotFound
            | Self::NodeNotFound
            | Self::IterationNotFound => StatusCode::NOT_FOUND,
            Self::AlreadyDecided | Self::RunNotActive | Self::Conflict => StatusCode::CONFLICT,
            Self::ConnectionLimit => StatusCode::SERVICE_UNAVAILABLE,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failed RPC.
#[derive(Debug, Clone)]
pub struct RpcError {
    /// Wire code.
    pub code: &'static str,
    /// HTTP status of the code.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// Extra fields spread into `error` (`requiredScope`, `refresh`, ...).
    pub details: Option<Map<String, Value>>,
}

impl RpcError {
    /// An error with a gateway code.
    pub fn new(code: RpcCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str(),
            status: code.status(),
            message: message.into(),
            details: None,
        }
    }

    /// `INVALID_REQUEST`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(RpcCode::InvalidRequest, message)
    }

    /// `NOT_FOUND "Run not found: <id>"`.
    pub fn run_not_found(run_id: &str) -> Self {
        Self::new(RpcCode::NotFound, format!("Run not found: {run_id}"))
    }

    /// Adds fields to `error` (an object's fields; anything else is ignored).
    pub fn with_details(mut self, details: Value) -> Self {
        if let Value::Object(map) = details {
            self.details.get_or_insert_with(Map::new).extend(map);
        }
        self
    }

    /// `FORBIDDEN` for a missing scope, naming it.
    pub fn missing_scope(method: &str) -> Self {
        let scope = super::auth::required_scope(method);
        Self::new(
            RpcCode::Forbidden,
            format!("Missing required scope {scope} for {method}"),
        )
        .with_details(json!({ "requiredScope": scope }))
    }
}

/// Engine and store failures keep the codes server mode gives them.
impl From<ApiError> for RpcError {
    fn from(error: ApiError) -> Self {
        let mut rpc = Self {
            code: error.code.as_str(),
            status: error.status(),
            message: error.message,
            details: None,
        };
        if let Some(details) = error.details {
            rpc = rpc.with_details(json!({ "details": details }));
        }
        rpc
    }
}

impl From<crate::engine::EngineError> for RpcError {
    fn from(error: crate::engine::EngineError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<crate::store::StoreError> for RpcError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::from(error).into()
    }
}

/// A successful response frame.
pub fn response_ok(id: &str, payload: Value) -> Value {
    json!({ "type": "res", "id": id, "ok": true, "apiVersion": API_VERSION, "payload": payload })
}

/// A failed response frame.
pub fn response_error(id: &str, error: &RpcError) -> Value {
    let mut body = Map::new();
    body.insert("version".into(), json!(API_VERSION));
    body.insert("code".into(), json!(error.code));
    body.insert("message".into(), json!(error.message));
    if let Some(details) = &error.details {
        for (k, v) in details {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    json!({ "type": "res", "id": id, "ok": false, "apiVersion": API_VERSION, "error": body })
}

/// Who is calling, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The authenticated identity.
    pub identity: Identity,
    /// True over WebSocket (streams are only offered there).
    pub websocket: bool,
}

/// Runs one method for an authenticated caller (scopes already checked).
/// `streamRunEvents` and `connect` are handled by the WebSocket layer.
pub async fn dispatch(
    gateway: &Gateway,
    caller: &Caller,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    let empty = Value::Object(Map::new());
    let params = if params.is_object() { params } else { &empty };
    match method {
        "health" => Ok(gateway.health(false)),
        "listWorkflows" | "workflows.list" => Ok(methods::list_workflows(gateway, params)),
        "launchRun" | "runs.create" => methods::launch_run(gateway, caller, params).await,
        "resumeRun" => methods::resume_run(gateway, params).await,
        "cancelRun" | "runs.cancel" => methods::cancel_run(gateway, params).await,
        "getRun" | "runs.get" => methods::get_run(gateway, params).await,
        "listRuns" | "runs.list" => methods::list_runs(gateway, params).await,
        "listApprovals" | "approvals.list" => methods::list_approvals(gateway, params).await,
        "submitApproval" | "approvals.decide" => {
            methods::submit_approval(gateway, caller, params).await
        }
        "submitSignal" | "signals.send" => methods::submit_signal(gateway, caller, params).await,
        "runs.rerun" => methods::rerun(gateway, caller, params).await,
        "frames.list" => methods::list_frames(gateway, params).await,
        "frames.get" => methods::get_frame(gateway, params).await,
        "getNodeOutput" | "devtools.getNodeOutput" => {
            methods::get_node_output(gateway, params).await
        }
        "cronList" | "cron.list" => cron::list(gateway, params).await,
        "cronCreate" | "cron.add" => cron::create(gateway, params).await,
        "cronDelete" | "cron.remove" => cron::delete(gateway, params).await,
        "cronRun" | "cron.trigger" => cron::trigger(gateway, caller, params).await,
        "streamRunEvents" => Err(RpcError::invalid(
            "streamRunEvents is only supported over websocket connections",
        )),
        other => Err(RpcError::new(
            RpcCode::MethodNotFound,
            format!("Unknown method: {other}"),
        )),
    }
}

/// A string param, or `None` when absent or not a non-empty string.
pub fn string_param(params: &Value, name: &str) -> Option<String> {
    params
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A required string param.
pub fn required_string(params: &Value, name: &str) -> Result<String, RpcError> {
    string_param(params, name).ok_or_else(|| RpcError::invalid(format!("{name} is required")))
}

/// An optional positive integer param (`limit`).
pub fn positive_int(value: Option<&Value>, name: &str) -> Result<Option<u32>, RpcError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .map(|n| Some(n.min(u64::from(u32::MAX)) as u32))
            .ok_or_else(|| RpcError::invalid(format!("{name} must be a positive integer"))),
    }
}

/// An optional non-negative integer param (`iteration`, `offset`).
pub fn non_negative_int(value: Option<&Value>, name: &str) -> Result<Option<u32>, RpcError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= u64::from(u32::MAX))
            .map(|n| Some(n as u32))
            .ok_or_else(|| RpcError::invalid(format!("{name} must be a non-negative integer"))),
    }
}

/// A run input: absent is `{}`, anything but an object is `INVALID_INPUT`.
pub fn run_input(value: Option<&Value>) -> Result<Value, RpcError> {
    match value {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::Object(map)) => Ok(Value::Object(map.clone())),
        Some(_) => Err(RpcError::new(
            RpcCode::InvalidInput,
            "Gateway RPC input must be a JSON object.",
        )),
    }
}
