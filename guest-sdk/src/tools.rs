//! What the host does for a task: run a confined shell command, write a log line, stream a
//! value to the run's listeners, send an HTTP request ([`http`]). Call these from task closures (not from the build function,
//! which must stay a pure function of its context).
//!
//! Outside the host (native tests), [`log`] writes to stderr, [`emit`] does nothing and
//! [`bash`] fails with `TOOL_UNAVAILABLE`, so a task that uses them can still be tested.

pub mod http;

use std::fmt;

use serde::Serialize;

use crate::TaskError;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the task survived.
    Warn,
    /// A failure.
    Error,
}

/// Options of a [`bash_with`] call. Every field has a safe default chosen by the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BashOptions {
    /// Working directory, relative to the root dir (or absolute inside it).
    pub cwd: Option<String>,
    /// Wall-clock limit in milliseconds (host default 60 000, at most 3 600 000).
    pub timeout_ms: Option<u64>,
    /// Cap of each of stdout and stderr in bytes (host default 200 000, at most 10 MiB).
    pub max_output_bytes: Option<u64>,
    /// Environment variables for the command, beyond `PATH`, `HOME` and `LANG`.
    pub env: Vec<(String, String)>,
}

impl BashOptions {
    /// The defaults.
    pub fn new() -> Self {
        BashOptions::default()
    }

    /// Sets the working directory.
    #[must_use]
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Sets the wall-clock limit in milliseconds.
    #[must_use]
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Sets the cap of each of stdout and stderr in bytes.
    #[must_use]
    pub fn max_output_bytes(mut self, max: u64) -> Self {
        self.max_output_bytes = Some(max);
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// The outcome of a command that ran. A non-zero exit is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BashOutput {
    /// Exit status; 128 + n when killed by signal n.
    pub exit_code: i32,
    /// Captured standard output (UTF-8, lossy, capped).
    pub stdout: String,
    /// Captured standard error (UTF-8, lossy, capped).
    pub stderr: String,
    /// Output was cut at the cap.
    pub truncated: bool,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
}

impl BashOutput {
    /// The command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Why a tool could not do what was asked (`SANDBOX_UNAVAILABLE`, `TOOL_PATH_ESCAPE`,
/// `PROCESS_TIMEOUT`, `INVALID_INPUT`, ...). `?` in a task turns it into a [`TaskError`] with
/// the same code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ToolError {}

impl From<ToolError> for TaskError {
    fn from(err: ToolError) -> Self {
        TaskError::new(err.message).code(err.code)
    }
}

/// Runs `/bin/bash -c command` in the host's sandbox with the default options.
pub fn bash(command: &str) -> Result<BashOutput, ToolError> {
    bash_with(command, BashOptions::default())
}

/// Runs `/bin/bash -c command` in the host's sandbox: the root dir is the only writable
/// place, there is no network unless the operator allows it, and the environment is empty
/// but for `PATH`, `HOME`, `LANG` and `options.env`.
pub fn bash_with(command: &str, options: BashOptions) -> Result<BashOutput, ToolError> {
    host::bash(command, options)
}

/// The placeholder of the operator's secret `name` (`--secret NAME`): an opaque string to
/// put where the secret belongs in an HTTP request ([`http`]), e.g.
/// `format!("Bearer {}", secret("API_KEY")?)`. The host replaces it by the real value only
/// in requests to the destinations the secret is bound to, and replaces the value by the
/// placeholder in what comes back: the task never sees the value. Fails with
/// `SECRET_UNKNOWN` when the operator gave no such secret.
pub fn secret(name: &str) -> Result<String, ToolError> {
    // The host puts each placeholder in the task's WASI environment under its name.
    std::env::var(name).map_err(|_| ToolError {
        code: "SECRET_UNKNOWN".to_owned(),
        message: format!("no secret {name:?} is given to this workflow (--secret {name})"),
    })
}

/// Writes a line to the host log, attributed to the run and the node.
pub fn log(level: Level, message: impl AsRef<str>) {
    host::log(level, message.as_ref());
}

/// Streams `data` to the run's listeners as a `NodeOutput` event. Fails (`INVALID_INPUT`)
/// only if `data` does not serialize to JSON.
pub fn emit<T: Serialize + ?Sized>(data: &T) -> Result<(), ToolError> {
    let json = serde_json::to_string(data).map_err(|err| ToolError {
        code: "INVALID_INPUT".to_owned(),
        message: format!("emit: the value does not serialize to JSON: {err}"),
    })?;
    host::emit(&json);
    Ok(())
}

/// The `tools` imports of the world.
#[cfg(target_arch = "wasm32")]
mod host {
    use super::{BashOptions, BashOutput, Level, ToolError};
    use crate::__private::bindings::smithers::workflow::tools as wit;

    pub(super) fn bash(command: &str, options: BashOptions) -> Result<BashOutput, ToolError> {
        let options = wit::BashOptions {
            cwd: options.cwd,
            timeout_ms: options.timeout_ms,
            max_output_bytes: options.max_output_bytes,
            env: options.env,
        };
        wit::bash(command, &options)
            .map(|r| BashOutput {
                exit_code: r.exit_code,
                stdout: r.stdout,
                stderr: r.stderr,
                truncated: r.truncated,
                duration_ms: r.duration_ms,
            })
            .map_err(|e| ToolError {
                code: e.code,
                message: e.message,
            })
    }

    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit::LogLevel::Trace,
            Level::Debug => wit::LogLevel::Debug,
            Level::Info => wit::LogLevel::Info,
            Level::Warn => wit::LogLevel::Warn,
            Level::Error => wit::LogLevel::Error,
        };
        wit::log(level, message);
    }

    pub(super) fn emit(json: &str) {
        wit::emit(json);
    }
}

/// Stand-ins for native tests, where there is no host.
#[cfg(not(target_arch = "wasm32"))]
mod host {
    use super::{BashOptions, BashOutput, Level, ToolError};

    pub(super) fn bash(_command: &str, _options: BashOptions) -> Result<BashOutput, ToolError> {
        Err(ToolError {
            code: "TOOL_UNAVAILABLE".to_owned(),
            message: "the bash tool exists only inside the smithers host".to_owned(),
        })
    }

    pub(super) fn log(level: Level, message: &str) {
        eprintln!("[{level:?}] {message}");
    }

    pub(super) fn emit(_json: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_errors_become_task_errors_with_the_same_code() {
        let err: TaskError = ToolError {
            code: "PROCESS_TIMEOUT".into(),
            message: "slow".into(),
        }
        .into();
        assert_eq!(
            (err.code.as_str(), err.message.as_str()),
            ("PROCESS_TIMEOUT", "slow")
        );
        assert!(err.retryable);
    }

    #[test]
    fn natively_bash_is_unavailable_and_emit_checks_serialization() {
        assert_eq!(bash("true").unwrap_err().code, "TOOL_UNAVAILABLE");
        assert!(emit(&serde_json::json!({"a": 1})).is_ok());
        let unserializable = std::collections::HashMap::from([((1, 2), 3)]);
        assert_eq!(emit(&unserializable).unwrap_err().code, "INVALID_INPUT");
    }
}
