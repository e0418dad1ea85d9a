//! Confinement: what a workflow can touch.
//!
//! This module is the only place that builds a WASI context or calls into the
//! kernel's isolation features (namespaces, Landlock, rlimits). It must never
//! weaken a wall silently: when the kernel refuses something, the affected tool
//! fails closed with `SANDBOX_UNAVAILABLE` and a message naming what is missing.
//!
//! Map of the bash tool: [`run_bash`] (here) validates and launches through
//! `bash` (host side: spawn, capture, timeout, cancel, teardown), which
//! re-executes the host binary as [`launcher`] (namespaces, fork, supervision)
//! whose namespace init builds the root in `rootfs`, drops privileges in
//! `confine` and enforces `landlock`; `protocol` is the wire between them and
//! [`SandboxStatus`] reports what was enforced. `docs/security.md` is the
//! threat model.

mod bash;
mod confine;
pub mod confined;
mod landlock;
pub mod launcher;
pub mod paths;
mod protocol;
mod rootfs;
pub mod seccomp;
pub mod setid;
mod spawn;
mod status;
pub mod wasi;

pub use confined::{ConfinedCommand, ConfinedOutput, Mount, run_confined};
pub use status::{
    LandlockWalls, NetworkWall, ResourceLimits, SandboxStatus, SeccompWalls, SetupStep, Walls,
};

/// First argument that makes the `smithers-host` binary act as the sandbox
/// launcher instead of the host.
pub const LAUNCHER_ARG: &str = "__sandbox-exec";

use std::path::PathBuf;
use std::time::Duration;

/// The cancellation handle [`run_bash`] takes, re-exported so callers need
/// not depend on a matching `tokio-util`.
pub use tokio_util::sync::CancellationToken;

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
    /// Resource limits of every bash call.
    pub limits: ResourceLimits,
    /// Test hook: make the launcher fail at this step as if the kernel had
    /// refused it. Can only close the sandbox further; `None` in production.
    #[doc(hidden)]
    pub fail_at: Option<SetupStep>,
    /// Strips set-id bits from files in the root dir after bash calls.
    pub set_id_sweeper: std::sync::Arc<setid::SetIdSweeper>,
}

impl SandboxPolicy {
    /// A closed policy for `root_dir`, launched through `launcher`.
    pub fn new(root_dir: PathBuf, launcher: PathBuf) -> Self {
        Self {
            root_dir,
            allow_network: false,
            allow_missing_landlock: false,
            launcher,
            limits: ResourceLimits::default(),
            fail_at: None,
            set_id_sweeper: Default::default(),
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
/// The shell runs in new user, mount, pid, ipc, uts, cgroup and (unless
/// `allow_network`) network namespaces, in a fresh root holding only the
/// system dirs (read-only), a minimal `/etc` and `/dev`, a private `/tmp` and
/// the root dir (read-write), under Landlock, `no_new_privs`, no capabilities
/// and rlimits, with an empty environment except `PATH`, `HOME` (the root dir),
/// `LANG` and `request.env`, and `/dev/null` as stdin. When the call returns
/// — by exit, timeout, cancel, or the future being dropped — every process it
/// started is gone (dropping the future starts the teardown; it completes
/// within milliseconds).
///
/// A kernel that refuses any wall yields `SANDBOX_UNAVAILABLE` naming the
/// step; the command never runs unconfined.
pub async fn run_bash(
    policy: &SandboxPolicy,
    request: BashRequest,
    cancel: CancellationToken,
) -> Result<BashOutcome, ToolError> {
    let launch = bash::prepare(policy, request)?;
    let max_output = launch.max_output;
    let result = spawn::launch(&policy.launcher, launch, cancel).await;
    // Whatever the outcome, the shell may have run: look for set-id files
    // it left (the seccomp filter should have refused them).
    policy.set_id_sweeper.request(&policy.root_dir);
    let finished = result?;
    let (outcome, _) = bash::outcome(finished, max_output);
    tracing::debug!(
        exit_code = outcome.exit_code,
        duration_ms = outcome.duration_ms,
        truncated = outcome.truncated,
        "confined bash call finished"
    );
    Ok(outcome)
}

/// Measures what the bash tool enforces on this host by running a confined
/// `true` through the launcher: the walls in the result are the ones the
/// launcher reported after building them. Log it at start and show it in
/// `/health`; an unavailable status means every bash call will fail closed.
pub async fn probe(policy: &SandboxPolicy) -> SandboxStatus {
    let request = BashRequest {
        command: "true".into(),
        timeout_ms: Some(10_000),
        ..BashRequest::default()
    };
    let result = match bash::prepare(policy, request) {
        Ok(launch) => {
            let max_output = launch.max_output;
            spawn::launch(&policy.launcher, launch, CancellationToken::new())
                .await
                .map(|finished| bash::outcome(finished, max_output))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((outcome, walls)) if outcome.exit_code == 0 => SandboxStatus {
            available: true,
            error: None,
            walls: Some(walls),
        },
        Ok((outcome, walls)) => SandboxStatus {
            available: false,
            error: Some(format!(
                "a confined `true` exited with {}: {}",
                outcome.exit_code,
                outcome.stderr.trim()
            )),
            walls: Some(walls),
        },
        Err(e) => SandboxStatus {
            available: false,
            error: Some(e.to_string()),
            walls: None,
        },
    }
}
