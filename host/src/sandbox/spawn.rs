//! Host side of one confined launch: spawn the launcher, send the spec,
//! capture the output, enforce the timeout and cancellation, tear down.
//!
//! The launcher is spawned with an empty environment and one end of a
//! socketpair as stdin (see [`super::protocol`]); stdout and stderr are
//! drained to the end, keeping at most the cap and discarding the rest so the
//! program never blocks on a full pipe. A timeout, a cancel or a dropped
//! future closes the socket, which makes the launcher kill the pid namespace
//! and wait until it is empty; only a launcher that does not comply within
//! [`KILL_GRACE`] is killed directly (its init then dies by its parent-death
//! signal).
//!
//! This module never runs anything outside the launcher, never decides an
//! outcome from an exit code alone (the launcher's reports say whether the
//! walls were built), and never returns an outcome without the launcher's
//! confirmation that every wall was up. What a launch runs (bash, a guest
//! build) is decided by its callers.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::Once;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::protocol::{LaunchSpec, MAX_REPORT_BYTES, Report, parse_reports};
use super::status::{SetupStep, Walls};
use super::{LAUNCHER_ARG, ToolError, ToolErrorCode};

/// How long a launcher may take to empty its pid namespace after the host
/// asked it to, before the host kills it outright.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A validated launch.
pub(crate) struct Launch {
    /// What the launcher builds and runs.
    pub spec: LaunchSpec,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Cap of each of stdout and stderr.
    pub max_output: usize,
}

/// How a launch ended when the program ran to an exit.
pub(crate) struct Finished {
    /// Exit status; 128 + n when killed by signal n.
    pub exit_code: i32,
    /// Captured stdout, at most the cap.
    pub stdout: Vec<u8>,
    /// Captured stderr, at most the cap.
    pub stderr: Vec<u8>,
    /// stdout was cut at the cap.
    pub stdout_cut: bool,
    /// stderr was cut at the cap.
    pub stderr_cut: bool,
    /// Wall-clock duration.
    pub duration_ms: u64,
    /// What the launcher enforced.
    pub walls: Walls,
}

fn unavailable(message: impl Into<String>) -> ToolError {
    ToolError::new(ToolErrorCode::SandboxUnavailable, message)
}

/// Launches a confined program and waits for it, its timeout or `cancel`.
pub(crate) async fn launch(
    launcher: &Path,
    launch: Launch,
    cancel: CancellationToken,
) -> Result<Finished, ToolError> {
    let Launch {
        spec,
        timeout,
        max_output,
    } = launch;
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + timeout);

    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| unavailable(format!("cannot create the control socket: {e}")))?;
    let mut command = Command::new(launcher);
    command
        .arg(LAUNCHER_ARG)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let spawned = command.spawn();
    // The command holds the launcher's end of the socket: drop it now, or the
    // host would never see the launcher side hang up.
    drop(command);
    let mut child = spawned.map_err(|e| {
        unavailable(format!(
            "cannot start the sandbox launcher {}: {e}",
            launcher.display()
        ))
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    ours.set_nonblocking(true)
        .map_err(|e| unavailable(format!("control socket: {e}")))?;
    let control = tokio::net::UnixStream::from_std(ours)
        .map_err(|e| unavailable(format!("control socket: {e}")))?;
    let (mut reports_in, mut spec_out) = control.into_split();

    let mut line = serde_json::to_vec(&spec).expect("the spec always serializes");
    line.push(b'\n');
    // A launcher that died before reading is diagnosed from its reports and
    // exit status below, so a failed write is not an error by itself.
    let _ = spec_out.write_all(&line).await;

    let collect = async {
        tokio::join!(
            read_capped(stdout, max_output),
            read_capped(stderr, max_output),
            read_reports(&mut reports_in),
            child.wait(),
        )
    };
    let interrupted = tokio::select! {
        biased;
        collected = collect => Ok(collected),
        () = cancel.cancelled() => Err(ToolError::new(
            ToolErrorCode::Cancelled,
            "the call was cancelled; its process tree was killed",
        )),
        () = tokio::time::sleep_until(deadline) => Err(ToolError::new(
            ToolErrorCode::Timeout,
            format!("Command timed out after {}ms", timeout.as_millis()),
        )),
    };
    let ((out, out_cut), (err, err_cut), reports, exit) = match interrupted {
        Ok(collected) => collected,
        Err(error) => {
            // Closing the socket asks the launcher to kill the namespace; its
            // exit means the namespace is empty.
            drop(reports_in);
            drop(spec_out);
            if tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::warn!("sandbox launcher ignored the kill request; killing it");
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            return Err(error);
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let reports = reports.map_err(unavailable)?;
    let exit = exit.map_err(|e| unavailable(format!("waiting for the launcher: {e}")))?;

    if let Some(failure) = reports.iter().find_map(|r| match r {
        Report::SetupFailed { step, detail, .. } => Some((*step, detail.clone())),
        _ => None,
    }) {
        return Err(setup_failure(failure.0, &failure.1));
    }
    let walls = reports.iter().find_map(|r| match r {
        Report::Enforced(walls) => Some(walls.clone()),
        _ => None,
    });
    let status = reports.iter().find_map(|r| match r {
        Report::Exited { code } => Some(*code),
        Report::Signaled { signal } => Some(128 + signal),
        _ => None,
    });
    let Some(walls) = walls else {
        let said = String::from_utf8_lossy(&err);
        let said = said.trim();
        return Err(unavailable(format!(
            "the sandbox launcher exited ({exit}) without confirming its walls{}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {}", said.chars().take(500).collect::<String>())
            }
        )));
    };
    let Some(exit_code) = status else {
        return Err(ToolError::new(
            ToolErrorCode::SpawnFailed,
            format!("the sandbox init died before the shell finished (launcher {exit})"),
        ));
    };
    if walls.landlock.is_none() {
        static WARNED: Once = Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "the sandbox runs WITHOUT Landlock (the kernel lacks it and \
                 --allow-missing-landlock is set): only namespaces, mounts, capabilities, \
                 seccomp and rlimits confine confined programs"
            );
        });
    }
    Ok(Finished {
        exit_code,
        stdout: out,
        stderr: err,
        stdout_cut: out_cut,
        stderr_cut: err_cut,
        duration_ms,
        walls,
    })
}

fn setup_failure(step: SetupStep, detail: &str) -> ToolError {
    if step == SetupStep::Exec {
        // Every wall was up; the shell itself could not be executed.
        return ToolError::new(
            ToolErrorCode::SpawnFailed,
            format!("Failed to spawn the program inside the sandbox ({step}): {detail}"),
        );
    }
    unavailable(format!(
        "the sandbox could not be set up ({step}): {detail}"
    ))
}

/// Reads `reader` to the end, keeping the first `cap` bytes.
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let room = cap - kept.len();
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    (kept, truncated)
}

async fn read_reports(reader: &mut (impl AsyncRead + Unpin)) -> Result<Vec<Report>, String> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) if bytes.len() + n > MAX_REPORT_BYTES => {
                return Err("the sandbox launcher's reports are too long".into());
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A launcher that died without reading the spec resets the
            // socket; what it said before (if anything) still counts.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("reading the sandbox launcher's reports: {e}")),
        }
    }
    parse_reports(&bytes).map_err(|e| format!("garbled report from the sandbox launcher: {e}"))
}
