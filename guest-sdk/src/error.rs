//! The error a task returns. It is data the host stores and shows, so it carries a
//! machine-readable code and says whether another attempt may succeed. A panic is not a
//! `TaskError`: it traps the component and the host reports the trap.

use std::fmt;

use serde_json::Value;

/// Why a task failed.
///
/// Build one with [`TaskError::new`] and refine it with the chained methods; `?` converts
/// [`serde_json::Error`], [`std::io::Error`] and [`ToolError`](crate::tools::ToolError) into
/// one.
///
/// Codes the SDK itself produces: `TASK_FAILED` (the default), `INVALID_INPUT` (the run input
/// does not decode), `INVALID_OUTPUT` (a stored output does not decode, or a task's value
/// does not serialize), `MISSING_OUTPUT` (no output for that node and iteration),
/// `TASK_NOT_FOUND` (the tree has no task with the id the host asked for) and
/// `RENDER_FAILED` (the build function failed while looking for the task).
///
/// ```
/// use smithers_sdk::{serde_json::json, TaskError};
///
/// let err = TaskError::new("quota exceeded")
///     .code("QUOTA")
///     .not_retryable()
///     .details(json!({"limit": 10}));
/// assert_eq!(err.code, "QUOTA");
/// assert!(!err.retryable);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    /// Machine-readable code, `TASK_FAILED` unless set with [`TaskError::code`].
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Whether another attempt may succeed; false skips the remaining retries.
    pub retryable: bool,
    /// Optional structured details.
    pub details: Option<Value>,
}

impl TaskError {
    /// A retryable failure with code `TASK_FAILED`.
    pub fn new(message: impl Into<String>) -> Self {
        TaskError {
            code: "TASK_FAILED".to_owned(),
            message: message.into(),
            retryable: true,
            details: None,
        }
    }

    /// Replaces the code.
    #[must_use]
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }

    /// Marks the failure as final: the host does not retry it, whatever `retries` says.
    #[must_use]
    pub fn not_retryable(mut self) -> Self {
        self.retryable = false;
        self
    }

    /// Attaches structured details.
    #[must_use]
    pub fn details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub(crate) fn invalid_input(err: &serde_json::Error) -> Self {
        TaskError::new(format!(
            "the run input does not have the expected shape: {err}"
        ))
        .code("INVALID_INPUT")
        .not_retryable()
    }

    pub(crate) fn invalid_output(node: &str, iteration: u32, err: &serde_json::Error) -> Self {
        TaskError::new(format!(
            "the output of `{node}` (iteration {iteration}) does not have the expected shape: {err}"
        ))
        .code("INVALID_OUTPUT")
        .not_retryable()
    }

    pub(crate) fn missing_output(node: &str, iteration: Option<u32>) -> Self {
        let message = match iteration {
            Some(iteration) => format!("`{node}` has no output for iteration {iteration}"),
            None => format!("`{node}` has no output yet"),
        };
        TaskError::new(message)
            .code("MISSING_OUTPUT")
            .not_retryable()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for TaskError {}

impl From<serde_json::Error> for TaskError {
    fn from(err: serde_json::Error) -> Self {
        TaskError::new(format!("JSON error: {err}"))
    }
}

impl From<std::io::Error> for TaskError {
    fn from(err: std::io::Error) -> Self {
        TaskError::new(format!("I/O error: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_error_is_a_retryable_task_failure() {
        let err = TaskError::new("boom");
        assert_eq!(err.code, "TASK_FAILED");
        assert!(err.retryable);
        assert_eq!(err.to_string(), "TASK_FAILED: boom");
    }

    #[test]
    fn question_mark_converts_io_and_json_errors() {
        fn read() -> Result<(), TaskError> {
            std::fs::read("/definitely/not/here")?;
            Ok(())
        }
        fn parse() -> Result<(), TaskError> {
            serde_json::from_str::<u32>("nope")?;
            Ok(())
        }
        assert!(read().unwrap_err().message.starts_with("I/O error"));
        assert!(parse().unwrap_err().message.starts_with("JSON error"));
    }
}
