//! Confinement: what a workflow can touch.
//!
//! This module is the only place that builds a WASI context or calls into the
//! kernel's isolation features (namespaces, Landlock, rlimits). It must never
//! weaken a wall silently: when the kernel refuses something, the affected tool
//! fails closed with `SANDBOX_UNAVAILABLE` and a message naming what is missing.

pub mod launcher;
pub mod paths;
pub mod wasi;

/// First argument that makes the `smithers-host` binary act as the sandbox
/// launcher instead of the host.
pub const LAUNCHER_ARG: &str = "__sandbox-exec";

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Default wall-clock limit of one bash call.
pub const DEFAULT_BASH_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound of a bash call's timeout.
pub const MAX_BASH_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default cap of each of stdout and stderr.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 200_000;
/// Upper bound of the output cap.
pub const MAX_OUTPUT_BYTES: u64 = 10 * 1024 * 1024;
/// Longest accepted command.
pub const MAX_COMMAND_CHARS: usize = 8192;

/// What the operator allows the bash tool to do. Starts closed.
#[derive(Debug, Clone)]
pub struct SandboxPolicy {
    /// Canonical root dir: the only writable place, bind-mounted read-write.
    pub root_dir: PathBuf,
    /// Share the host network instead of an empty network namespace.
    pub allow_network: bool,
    /// Run without Landlock when the kernel lacks it (namespaces stay mandatory).
    pub allow_missing_landlock: bool,
    /// Executable that implements the hidden `__sandbox-exec` entry point
    /// (normally the `smithers-host` binary itself).
    pub launcher: PathBuf,
}

impl SandboxPolicy {
    /// A closed policy for `root_dir`, launched through `launcher`.
    pub fn new(root_dir: PathBuf, launcher: PathBuf) -> Self {
        Self {
            root_dir,
            allow_network: false,
            allow_missing_landlock: false,
            launcher,
        }
    }
}

/// One bash call as a workflow asked for it.
#[derive(Debug, Clone, Default)]
pub struct BashRequest {
    /// Passed to `/bin/bash -c`.
    pub command: String,
    /// Working directory, relative to the root dir or absolute inside it.
    pub cwd: Option<String>,
    /// Wall-clock limit in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Cap of each output stream in bytes.
    pub max_output_bytes: Option<u64>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// The outcome of a command that ran to an exit (any exit code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BashOutcome {
    /// Exit status; 128 + n when killed by signal n.
    pub exit_code: i32,
    /// Captured stdout, UTF-8-safe truncated.
    pub stdout: String,
    /// Captured stderr, UTF-8-safe truncated.
    pub stderr: String,
    /// Either stream was cut.
    pub truncated: bool,
    /// Wall-clock duration.
    pub duration_ms: u64,
}

/// Machine-readable reasons a tool call did not produce an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolErrorCode {
    /// The kernel refused a wall; the command did not run.
    SandboxUnavailable,
    /// `cwd` leaves the root dir.
    PathEscape,
    /// Arguments out of bounds (command length, timeout, output cap, env names).
    InvalidInput,
    /// The command ran past its timeout and was killed with its process tree.
    Timeout,
    /// The task was cancelled; the process tree was killed.
    Cancelled,
    /// The launcher could not be started.
    SpawnFailed,
}

impl ToolErrorCode {
    /// Wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SandboxUnavailable => "SANDBOX_UNAVAILABLE",
            Self::PathEscape => "TOOL_PATH_ESCAPE",
            Self::InvalidInput => "INVALID_INPUT",
            Self::Timeout => "PROCESS_TIMEOUT",
            Self::Cancelled => "CANCELLED",
            Self::SpawnFailed => "PROCESS_FAILED",
        }
    }
}

/// A tool call that produced no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ToolError {
    /// Why.
    pub code: ToolErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl ToolError {
    /// Builds an error.
    pub fn new(code: ToolErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Runs `command` with `/bin/bash -c` inside the kernel sandbox.
///
/// Until the confined implementation lands this refuses every call: a shell
/// that is not confined is never started.
pub async fn run_bash(
    _policy: &SandboxPolicy,
    _request: BashRequest,
    _cancel: CancellationToken,
) -> Result<BashOutcome, ToolError> {
    Err(ToolError::new(
        ToolErrorCode::SandboxUnavailable,
        "the confined bash tool is not available in this build",
    ))
}
