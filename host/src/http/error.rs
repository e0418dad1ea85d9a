//! The error envelope: the only place that turns a failure into a status code
//! and `{"error":{"code","message","details?"}}`.
//!
//! Handlers return [`ApiError`]; engine errors convert by meaning (never by
//! matching messages). Internal causes (database, panics) are logged here and
//! never shown to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::engine::EngineError;
use crate::runtime::LoadError;
use crate::store::StoreError;

/// Every error code the HTTP API emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A parameter or field is malformed.
    InvalidRequest,
    /// The body is not JSON.
    InvalidJson,
    /// The run input does not match the workflow's input schema.
    InvalidInput,
    /// The body is larger than the limit.
    PayloadTooLarge,
    /// The body did not arrive in time.
    RequestTimeout,
    /// Missing or wrong token.
    Unauthorized,
    /// Host or Origin not allowed.
    Forbidden,
    /// Unknown route, or unknown run on a run-scoped route.
    NotFound,
    /// `workflowPath` escapes the root dir.
    WorkflowPathOutsideRoot,
    /// `workflowPath` names nothing.
    WorkflowNotFound,
    /// The bytes are not a component.
    WorkflowInvalidComponent,
    /// The component imports what the host does not provide.
    WorkflowUnsupportedImport,
    /// The component does not export the workflow world.
    WorkflowMissingExports,
    /// The component's `describe` failed.
    WorkflowDescribeFailed,
    /// The guest crate does not build.
    WorkflowBuildFailed,
    /// `resume: true` without `runId`.
    RunIdRequired,
    /// The run id is taken.
    RunAlreadyExists,
    /// Resume of a run that does not exist.
    RunNotFound,
    /// Cancel of a finished or failed run.
    RunNotActive,
    /// Approve/deny of a node that is not waiting for a decision.
    NodeNotWaiting,
    /// A node (or iteration) the run never mounted.
    NodeNotFound,
    /// The database cannot commit.
    StorageUnavailable,
    /// The host is shutting down.
    ShuttingDown,
    /// Too many event streams open (per client or in all).
    TooManyStreams,
    /// A bug.
    ServerError,
}

impl ErrorCode {
    /// The wire code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::InvalidJson => "INVALID_JSON",
            Self::InvalidInput => "INVALID_INPUT",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::WorkflowPathOutsideRoot => "WORKFLOW_PATH_OUTSIDE_ROOT",
            Self::WorkflowNotFound => "WORKFLOW_NOT_FOUND",
            Self::WorkflowInvalidComponent => "WORKFLOW_INVALID_COMPONENT",
            Self::WorkflowUnsupportedImport => "WORKFLOW_UNSUPPORTED_IMPORT",
            Self::WorkflowMissingExports => "WORKFLOW_MISSING_EXPORTS",
            Self::WorkflowDescribeFailed => "WORKFLOW_DESCRIBE_FAILED",
            Self::WorkflowBuildFailed => "WORKFLOW_BUILD_FAILED",
            Self::RunIdRequired => "RUN_ID_REQUIRED",
            Self::RunAlreadyExists => "RUN_ALREADY_EXISTS",
            Self::RunNotFound => "RUN_NOT_FOUND",
            Self::RunNotActive => "RUN_NOT_ACTIVE",
            Self::NodeNotWaiting => "NODE_NOT_WAITING",
            Self::NodeNotFound => "NODE_NOT_FOUND",
            Self::StorageUnavailable => "STORAGE_UNAVAILABLE",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::TooManyStreams => "TOO_MANY_STREAMS",
            Self::ServerError => "SERVER_ERROR",
        }
    }

    /// The status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest
            | Self::InvalidJson
            | Self::InvalidInput
            | Self::WorkflowPathOutsideRoot
            | Self::WorkflowNotFound
            | Self::RunIdRequired => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound | Self::RunNotFound | Self::NodeNotFound => StatusCode::NOT_FOUND,
            Self::RunAlreadyExists | Self::RunNotActive | Self::NodeNotWaiting => {
                StatusCode::CONFLICT
            }
            Self::WorkflowInvalidComponent
            | Self::WorkflowUnsupportedImport
            | Self::WorkflowMissingExports
            | Self::WorkflowDescribeFailed
            | Self::WorkflowBuildFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::StorageUnavailable | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn of_load_error(error: &LoadError) -> Self {
        match error {
            LoadError::Invalid(_) | LoadError::TooLarge { .. } => Self::WorkflowInvalidComponent,
            LoadError::UnsatisfiedImport(_) => Self::WorkflowUnsupportedImport,
            LoadError::MissingExports(_) => Self::WorkflowMissingExports,
            LoadError::Describe(_) => Self::WorkflowDescribeFailed,
        }
    }
}

/// A failed request, ready to become the envelope.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Structured details (size limit, depth limit...).
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with the code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `400 INVALID_REQUEST`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// `404 NOT_FOUND "Run not found"`, the answer of run-scoped routes.
    pub fn run_not_found() -> Self {
        Self::new(ErrorCode::NotFound, "Run not found")
    }

    /// `404 NOT_FOUND "Route not found"`.
    pub fn route_not_found() -> Self {
        Self::new(ErrorCode::NotFound, "Route not found")
    }

    /// `500 SERVER_ERROR` for a cause that must not reach the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error while serving a request");
        Self::new(ErrorCode::ServerError, "Internal server error")
    }

    /// Maps an engine error on the routes that start or resume runs, where an
    /// unknown run is `RUN_NOT_FOUND "Run id does not exist"` (contract §1.6).
    pub fn from_start(error: EngineError) -> Self {
        match error {
            EngineError::RunNotFound(_) => {
                Self::new(ErrorCode::RunNotFound, "Run id does not exist")
            }
            other => other.into(),
        }
    }

    /// Maps an engine error on the routes that read a run's nodes and
    /// outputs, where an unknown run is `RUN_NOT_FOUND "Run not found"`.
    pub fn from_read(error: EngineError) -> Self {
        match error {
            EngineError::RunNotFound(_) => Self::unknown_run(),
            other => other.into(),
        }
    }

    /// `404 RUN_NOT_FOUND "Run not found"`, the answer of the node and
    /// outputs routes for an unknown run.
    pub fn unknown_run() -> Self {
        Self::new(ErrorCode::RunNotFound, "Run not found")
    }

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::InvalidRequest(message) => Self::invalid(message),
            EngineError::InvalidInput(violation) => {
                Self::new(ErrorCode::InvalidInput, violation.to_string()).with_details(
                    json!({ "pointer": violation.pointer, "reason": violation.reason }),
                )
            }
            EngineError::WorkflowPathOutsideRoot(path) => Self::new(
                ErrorCode::WorkflowPathOutsideRoot,
                "Workflow path must be within server root directory",
            )
            .with_details(json!({ "workflowPath": path })),
            EngineError::WorkflowNotFound(message) => Self::new(
                ErrorCode::WorkflowNotFound,
                format!("workflow not found: {message}"),
            ),
            EngineError::WorkflowLoad(e) => Self::new(ErrorCode::of_load_error(&e), e.to_string()),
            EngineError::WorkflowBuild(e) => {
                Self::new(ErrorCode::WorkflowBuildFailed, e.to_string())
            }
            EngineError::RunNotFound(_) => Self::run_not_found(),
            EngineError::RunAlreadyExists(_) => {
                Self::new(ErrorCode::RunAlreadyExists, "Run id already exists")
            }
            EngineError::RunNotActive(_, status) => {
                Self::new(ErrorCode::RunNotActive, "Run is not currently active")
                    .with_details(json!({ "status": status.as_str() }))
            }
            EngineError::NotWaitingForApproval(message) => {
                Self::new(ErrorCode::NodeNotWaiting, message)
            }
            e @ EngineError::NodeNotFound { .. } => {
                Self::new(ErrorCode::NodeNotFound, e.to_string())
            }
            EngineError::Store(e) => e.into(),
            EngineError::ShuttingDown => {
                Self::new(ErrorCode::ShuttingDown, "The host is shutting down")
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => {
                tracing::error!(error = %message, "the database cannot commit");
                Self::new(
                    ErrorCode::StorageUnavailable,
                    "The database cannot commit; try again later",
                )
            }
            StoreError::Closed => Self::new(ErrorCode::ShuttingDown, "The host is shutting down"),
            other => Self::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        json_response(self.code.status(), &json!({ "error": error }))
    }
}

/// A JSON response with the given status (the security headers are added by
/// the router's layers, for every response).
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_error_codes_match_the_runtime_codes() {
        for error in [
            LoadError::Invalid(String::new()),
            LoadError::UnsatisfiedImport(String::new()),
            LoadError::MissingExports(String::new()),
            LoadError::Describe(String::new()),
        ] {
            assert_eq!(ErrorCode::of_load_error(&error).as_str(), error.code());
        }
    }

    #[test]
    fn workflow_listings_name_errors_with_the_codes_a_start_answers() {
        use crate::runtime::build::BuildError;
        for error in [
            EngineError::WorkflowLoad(LoadError::Describe(String::new())),
            EngineError::WorkflowLoad(LoadError::TooLarge { size: 2, limit: 1 }),
            EngineError::WorkflowBuild(BuildError::NotACrate(String::new())),
            EngineError::WorkflowNotFound(String::new()),
            EngineError::WorkflowPathOutsideRoot(String::new()),
            EngineError::InvalidRequest(String::new()),
            EngineError::ShuttingDown,
        ] {
            let code = error.workflow_code();
            assert_eq!(ApiError::from(error).code.as_str(), code);
        }
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(ErrorCode::RunNotActive.status(), StatusCode::CONFLICT);
        assert_eq!(ErrorCode::NodeNotWaiting.status(), StatusCode::CONFLICT);
        assert_eq!(
            ErrorCode::PayloadTooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ErrorCode::WorkflowBuildFailed.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
