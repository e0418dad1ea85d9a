//! The wire between the host and the launcher.
//!
//! The host gives the launcher one end of a unix socketpair as its stdin. Over
//! it the host sends one [`LaunchSpec`] (a JSON line), and the launcher, its
//! namespace init and the shell-to-be (until `exec`) send back [`Report`]s,
//! one JSON line per `write`, so the host never has to guess from exit codes
//! whether the sandbox was built. The host closing its end means "kill
//! everything now". Nothing the confined command runs can write here: the
//! socket is close-on-exec and the init that holds it is not dumpable.
//!
//! This module only defines the messages and their framing; it must never
//! carry anything the confined command controls except its exit status.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::status::{ResourceLimits, SetupStep, Walls};

/// Longest launch spec accepted (command ≤ 8 KiB and env ≤ 64 KiB fit easily).
pub(crate) const MAX_SPEC_BYTES: usize = 1 << 20;
/// Longest report stream the host reads.
pub(crate) const MAX_REPORT_BYTES: usize = 64 << 10;

/// Everything the launcher needs, validated by the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LaunchSpec {
    /// Canonical root dir, bind-mounted at the same path.
    pub root_dir: PathBuf,
    /// The root dir is writable (bash), or read-only under a throw-away
    /// writable layer (guest builds: see [`Mount::Overlay`]).
    pub root_overlay: bool,
    /// Further host directories to expose, each at its host path, in order
    /// (parents before what is mounted inside them).
    pub mounts: Vec<Mount>,
    /// Canonical working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Absolute path of the program to execute, as seen inside the sandbox.
    pub program: PathBuf,
    /// Its arguments, `argv[0]` included.
    pub argv: Vec<String>,
    /// The complete environment of the program, in order.
    pub env: Vec<(String, String)>,
    /// Share the host's network namespace.
    pub allow_network: bool,
    /// Go on without Landlock if the kernel lacks it.
    pub allow_missing_landlock: bool,
    /// Resource limits.
    pub limits: ResourceLimits,
    /// `RLIMIT_CPU` in seconds.
    pub cpu_seconds: u64,
    /// Test hook: fail at this step as if the kernel refused it.
    pub fail_at: Option<SetupStep>,
}

/// A host directory made visible inside the sandbox at its own path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "path", rename_all = "kebab-case")]
pub enum Mount {
    /// Bound read-only (and nosuid, nodev); executable.
    ReadOnly(PathBuf),
    /// Bound read-write (nosuid, nodev); executable.
    ReadWrite(PathBuf),
    /// A fresh, private, size-limited tmpfs (nosuid, nodev) hiding whatever
    /// the host has there.
    Tmpfs(PathBuf),
    /// The host directory as the read-only lower layer of an overlay whose
    /// upper layer is a private tmpfs of the launch: programs may write
    /// (cargo updates `Cargo.lock`), and nothing reaches the host's disk.
    Overlay(PathBuf),
}

impl Mount {
    /// Where the mount appears (its host path).
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::ReadOnly(p) | Self::ReadWrite(p) | Self::Tmpfs(p) | Self::Overlay(p) => p,
        }
    }

    /// Whether the sandbox may write below it (for an overlay: into the
    /// throw-away layer).
    pub fn writable(&self) -> bool {
        !matches!(self, Self::ReadOnly(_))
    }
}

/// One message from the launcher side to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "kebab-case")]
pub(crate) enum Report {
    /// Every wall is up; the shell is about to be executed.
    Enforced(Walls),
    /// A step failed; the shell was not (and will not be) started.
    SetupFailed {
        /// Which step.
        step: SetupStep,
        /// The kernel's errno, when the failure was a syscall.
        errno: Option<i32>,
        /// What exactly failed.
        detail: String,
    },
    /// The shell exited normally.
    Exited {
        /// Its exit status.
        code: i32,
    },
    /// The shell was killed by a signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
}

impl Report {
    /// The framed bytes of this report (one JSON line).
    pub(crate) fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("reports always serialize");
        line.push(b'\n');
        line
    }
}

/// Parses a report stream; `Err` names the first garbled line.
pub(crate) fn parse_reports(bytes: &[u8]) -> Result<Vec<Report>, String> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line)
                .map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(line)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_as_json_lines() {
        let reports = [
            Report::SetupFailed {
                step: SetupStep::Unshare,
                errno: Some(1),
                detail: "unshare(CLONE_NEWUSER): Operation not permitted".into(),
            },
            Report::Exited { code: 3 },
            Report::Signaled { signal: 9 },
        ];
        let stream: Vec<u8> = reports.iter().flat_map(Report::to_line).collect();
        assert_eq!(parse_reports(&stream).unwrap(), reports);
        assert!(parse_reports(b"{\"report\":\"nope\"}\n").is_err());
    }
}
