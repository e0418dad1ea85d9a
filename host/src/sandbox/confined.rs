//! Confined programs other than bash: the same walls, a read-only root dir.
//!
//! The host runs untrusted code of its own accord too: building a guest crate
//! runs its build scripts and procedural macros. Such a program gets every
//! wall of the bash tool (namespaces, `pivot_root`, Landlock, seccomp, no
//! capabilities, rlimits, an empty environment but the one given, a fresh
//! keyring) with two differences: the root dir is mounted **read-only** under
//! a throw-away writable layer (an overlay whose upper layer lives in the
//! launch's private memory, so cargo may update a `Cargo.lock` and nothing
//! reaches the disk), and the network namespace is always empty, whatever
//! `--allow-network` says.
//! What else it sees is listed in its [`Mount`]s, each at its host path.
//!
//! This module validates the launch and never decides what a program may see
//! beyond its caller's list; it never mounts `/`, a kernel filesystem, or an
//! ancestor of the policy's root dir writable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::bash::{checked_root, unavailable};
use super::protocol::LaunchSpec;
use super::spawn::{self, Launch};
use super::{ResourceLimits, SandboxPolicy, ToolError, ToolErrorCode};

pub use super::protocol::Mount;

/// A program to run confined.
#[derive(Debug, Clone)]
pub struct ConfinedCommand {
    /// Absolute path of the program inside the sandbox (so a mounted or
    /// system path).
    pub program: PathBuf,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// The program's whole environment.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Host directories it sees besides the system dirs and the root dir.
    pub mounts: Vec<Mount>,
    /// Resource limits of every process it starts.
    pub limits: ResourceLimits,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Cap of each of stdout and stderr.
    pub max_output_bytes: usize,
}

/// What a confined program left when it exited.
#[derive(Debug, Clone)]
pub struct ConfinedOutput {
    /// Exit status; 128 + n when killed by signal n.
    pub exit_code: i32,
    /// stdout, at most the cap.
    pub stdout: Vec<u8>,
    /// stderr, at most the cap.
    pub stderr: Vec<u8>,
    /// Either stream was cut.
    pub truncated: bool,
    /// Wall-clock duration.
    pub duration_ms: u64,
}

/// Runs `command` behind the walls of `policy` with the root dir read-only
/// and no network. Fails closed like [`super::run_bash`].
pub async fn run_confined(
    policy: &SandboxPolicy,
    command: ConfinedCommand,
    cancel: CancellationToken,
) -> Result<ConfinedOutput, ToolError> {
    let root = checked_root(&policy.root_dir)?;
    let mounts = checked_mounts(&root, command.mounts)?;
    if !command.program.is_absolute() || !command.cwd.is_absolute() {
        return Err(invalid(
            "the program and its working directory must be absolute",
        ));
    }
    let mut argv = vec![
        command
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    ];
    argv.extend(command.args);
    let timeout_secs = command.timeout.as_secs() + u64::from(command.timeout.subsec_nanos() > 0);
    let launch = Launch {
        spec: LaunchSpec {
            root_dir: root,
            root_overlay: true,
            mounts,
            cwd: command.cwd,
            program: command.program,
            argv,
            env: command.env,
            allow_network: false,
            allow_missing_landlock: policy.allow_missing_landlock,
            limits: command.limits,
            cpu_seconds: timeout_secs + 1,
            fail_at: policy.fail_at,
        },
        timeout: command.timeout,
        max_output: command.max_output_bytes,
    };
    let finished = spawn::launch(&policy.launcher, launch, cancel).await?;
    Ok(ConfinedOutput {
        exit_code: finished.exit_code,
        truncated: finished.stdout_cut || finished.stderr_cut,
        stdout: finished.stdout,
        stderr: finished.stderr,
        duration_ms: finished.duration_ms,
    })
}

fn invalid(message: impl Into<String>) -> ToolError {
    ToolError::new(ToolErrorCode::InvalidInput, message)
}

/// Every mount must be absolute and canonical, must not be `/` or under a
/// kernel filesystem, and must not be writable over the root dir. They come
/// back ordered so that a directory is mounted before anything inside it;
/// the root dir itself is dropped (it is always mounted, read-only).
fn checked_mounts(root: &Path, mounts: Vec<Mount>) -> Result<Vec<Mount>, ToolError> {
    let mut checked = Vec::with_capacity(mounts.len());
    for mount in mounts {
        let path = mount.path();
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| unavailable(format!("cannot mount {}: {e}", path.display())))?;
        if canonical != path {
            return Err(unavailable(format!(
                "cannot mount {}: not canonical (it resolves to {})",
                path.display(),
                canonical.display()
            )));
        }
        let forbidden = ["/proc", "/dev", "/sys"];
        if path == Path::new("/") || forbidden.iter().any(|f| path.starts_with(f)) {
            return Err(unavailable(format!(
                "cannot mount {}: it is / or a kernel filesystem",
                path.display()
            )));
        }
        if path == root {
            continue;
        }
        if matches!(mount, Mount::ReadWrite(_) | Mount::Tmpfs(_)) && root.starts_with(path) {
            return Err(unavailable(format!(
                "cannot mount {} writable: it holds the root dir",
                path.display()
            )));
        }
        checked.push(mount);
    }
    checked.sort_by_key(|m| m.path().components().count());
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_checked_and_ordered_parents_first() {
        let base = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(base.path()).unwrap();
        let root = base.join("root");
        let deep = base.join("a/b");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&deep).unwrap();
        let ordered = checked_mounts(
            &root,
            vec![
                Mount::ReadWrite(deep.clone()),
                Mount::ReadOnly(base.join("a")),
                Mount::ReadOnly(root.clone()),
            ],
        )
        .unwrap();
        assert_eq!(
            ordered,
            vec![Mount::ReadOnly(base.join("a")), Mount::ReadWrite(deep)]
        );
        assert!(checked_mounts(&root, vec![Mount::ReadWrite(base.clone())]).is_err());
        assert!(checked_mounts(&root, vec![Mount::ReadOnly("/".into())]).is_err());
        assert!(checked_mounts(&root, vec![Mount::ReadOnly(base.join("a/../a"))]).is_err());
        assert!(checked_mounts(&root, vec![Mount::ReadOnly(base.join("missing"))]).is_err());
    }
}
