//! Host side of the confined `bash` tool: validation, launch, capture,
//! timeout, cancel and teardown.
//!
//! A call is validated completely before anything starts (command length,
//! timeout, output cap, environment names, `cwd` under the root dir lexically
//! and after symlinks). Then the launcher is spawned with an empty
//! environment and one end of a socketpair as stdin (see [`super::protocol`]);
//! stdout and stderr are drained to the end, keeping at most the cap and
//! discarding the rest so the shell never blocks on a full pipe. A timeout, a
//! cancel or a dropped future closes the socket, which makes the launcher kill
//! the pid namespace and wait until it is empty; only a launcher that does not
//! comply within [`KILL_GRACE`] is killed directly (its init then dies by its
//! parent-death signal).
//!
//! This module never runs anything outside the launcher, never decides an
//! outcome from an exit code alone (the launcher's reports say whether the
//! walls were built), and never returns an outcome without the launcher's
//! confirmation that every wall was up.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Once;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::paths::{self, PathError};
use super::protocol::{LaunchSpec, MAX_REPORT_BYTES, Report, parse_reports};
use super::status::{SetupStep, Walls};
use super::{
    BashOutcome, BashRequest, DEFAULT_BASH_TIMEOUT, DEFAULT_MAX_OUTPUT_BYTES, LAUNCHER_ARG,
    MAX_BASH_TIMEOUT, MAX_COMMAND_CHARS, MAX_OUTPUT_BYTES, SandboxPolicy, ToolError, ToolErrorCode,
};

/// How long a launcher may take to empty its pid namespace after the host
/// asked it to, before the host kills it outright.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Longest `cwd` accepted.
const MAX_CWD_BYTES: usize = 1024;
/// Most environment variables a call may add.
const MAX_ENV_VARS: usize = 128;
/// Largest total size of the added environment.
const MAX_ENV_BYTES: usize = 64 << 10;

/// A validated call, ready to launch.
pub(crate) struct Prepared {
    spec: LaunchSpec,
    timeout: Duration,
    max_output: usize,
}

/// How a launch ended when it produced an outcome.
pub(crate) struct Finished {
    pub outcome: BashOutcome,
    pub walls: Walls,
}

fn invalid(message: impl Into<String>) -> ToolError {
    ToolError::new(ToolErrorCode::InvalidInput, message)
}

fn unavailable(message: impl Into<String>) -> ToolError {
    ToolError::new(ToolErrorCode::SandboxUnavailable, message)
}

/// Validates `request` against the contract's bounds and the policy's root.
pub(crate) fn prepare(policy: &SandboxPolicy, request: BashRequest) -> Result<Prepared, ToolError> {
    let root = checked_root(&policy.root_dir)?;

    if request.command.is_empty() {
        return Err(invalid("command must not be empty"));
    }
    let chars = request.command.chars().count();
    if chars > MAX_COMMAND_CHARS {
        return Err(invalid(format!(
            "command is {chars} characters long; the limit is {MAX_COMMAND_CHARS}"
        )));
    }
    if request.command.contains('\0') {
        return Err(invalid("command must not contain NUL"));
    }

    let timeout = match request.timeout_ms {
        None => DEFAULT_BASH_TIMEOUT,
        Some(0) => return Err(invalid("timeoutMs must be positive")),
        Some(ms) if Duration::from_millis(ms) > MAX_BASH_TIMEOUT => {
            return Err(invalid(format!(
                "timeoutMs {ms} exceeds the limit of {} ms",
                MAX_BASH_TIMEOUT.as_millis()
            )));
        }
        Some(ms) => Duration::from_millis(ms),
    };
    let max_output = match request.max_output_bytes {
        None => DEFAULT_MAX_OUTPUT_BYTES,
        Some(n) if n > MAX_OUTPUT_BYTES => {
            return Err(invalid(format!(
                "maxOutputBytes {n} exceeds the limit of {MAX_OUTPUT_BYTES}"
            )));
        }
        Some(n) => n,
    };

    let cwd = match request.cwd.as_deref() {
        None => root.clone(),
        Some(cwd) => resolve_cwd(&root, cwd)?,
    };

    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        ),
        ("HOME".to_string(), root.display().to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ];
    validate_env(&request.env)?;
    for (name, value) in request.env {
        env.retain(|(existing, _)| *existing != name);
        env.push((name, value));
    }

    let cpu_seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0) + 1;
    Ok(Prepared {
        spec: LaunchSpec {
            root_dir: root,
            cwd,
            command: request.command,
            env,
            allow_network: policy.allow_network,
            allow_missing_landlock: policy.allow_missing_landlock,
            limits: policy.limits,
            cpu_seconds,
            fail_at: policy.fail_at,
        },
        timeout,
        max_output: max_output as usize,
    })
}

/// The root dir must exist, be canonical, and not be `/` or a kernel
/// filesystem (the sandbox builds its own `/proc` and `/dev`, and has no `/sys`).
fn checked_root(root: &Path) -> Result<PathBuf, ToolError> {
    let canonical = std::fs::canonicalize(root).map_err(|e| {
        unavailable(format!(
            "the root dir {} is not usable: {e}",
            root.display()
        ))
    })?;
    if canonical != root {
        return Err(unavailable(format!(
            "the root dir {} is not canonical (it resolves to {})",
            root.display(),
            canonical.display()
        )));
    }
    if canonical.to_str().is_none() {
        return Err(unavailable("the root dir path is not UTF-8"));
    }
    let forbidden = ["/proc", "/dev", "/sys"];
    if canonical == Path::new("/") || forbidden.iter().any(|f| canonical.starts_with(f)) {
        return Err(unavailable(format!(
            "the root dir {} cannot be confined (it is / or under /proc, /dev or /sys)",
            canonical.display()
        )));
    }
    Ok(canonical)
}

fn resolve_cwd(root: &Path, cwd: &str) -> Result<PathBuf, ToolError> {
    if cwd.len() > MAX_CWD_BYTES {
        return Err(invalid(format!("cwd is longer than {MAX_CWD_BYTES} bytes")));
    }
    let resolved = paths::resolve_existing(root, cwd).map_err(|e| match e {
        PathError::Escape(p) => ToolError::new(
            ToolErrorCode::PathEscape,
            format!("Path escapes sandbox root: {p}"),
        ),
        PathError::NotFound(p) => invalid(format!("cwd does not exist: {p}")),
        PathError::Invalid(p) => invalid(format!("cwd is not a valid path: {p}")),
    })?;
    if !resolved.is_dir() {
        return Err(invalid(format!("cwd is not a directory: {cwd}")));
    }
    Ok(resolved)
}

/// Names are `[A-Za-z_][A-Za-z0-9_]*`; values have no NUL. `PATH`, `HOME` and
/// `LANG` may be overridden: the command could `export` them itself.
fn validate_env(env: &[(String, String)]) -> Result<(), ToolError> {
    if env.len() > MAX_ENV_VARS {
        return Err(invalid(format!(
            "at most {MAX_ENV_VARS} environment variables are accepted"
        )));
    }
    let mut total = 0;
    for (name, value) in env {
        let mut chars = name.chars();
        let valid_name = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(invalid(format!(
                "invalid environment variable name {name:?} (expected [A-Za-z_][A-Za-z0-9_]*)"
            )));
        }
        if value.contains('\0') {
            return Err(invalid(format!("environment variable {name} contains NUL")));
        }
        total += name.len() + value.len() + 2;
    }
    if total > MAX_ENV_BYTES {
        return Err(invalid(format!(
            "the environment is larger than {MAX_ENV_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Launches a prepared call and waits for it, the timeout or `cancel`.
pub(crate) async fn launch(
    policy: &SandboxPolicy,
    prepared: Prepared,
    cancel: CancellationToken,
) -> Result<Finished, ToolError> {
    let Prepared {
        spec,
        timeout,
        max_output,
    } = prepared;
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + timeout);

    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| unavailable(format!("cannot create the control socket: {e}")))?;
    let mut command = Command::new(&policy.launcher);
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
            policy.launcher.display()
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
            "the bash call was cancelled; its process tree was killed",
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
                "bash sandbox runs WITHOUT Landlock (the kernel lacks it and \
                 --allow-missing-landlock is set): only namespaces, mounts, capabilities \
                 and rlimits confine the shell"
            );
        });
    }
    let (stdout, stdout_cut) = utf8_within(out, max_output, out_cut);
    let (stderr, stderr_cut) = utf8_within(err, max_output, err_cut);
    Ok(Finished {
        outcome: BashOutcome {
            exit_code,
            stdout,
            stderr,
            truncated: stdout_cut || stderr_cut,
            duration_ms,
        },
        walls,
    })
}

fn setup_failure(step: SetupStep, detail: &str) -> ToolError {
    if step == SetupStep::Exec {
        // Every wall was up; the shell itself could not be executed.
        return ToolError::new(
            ToolErrorCode::SpawnFailed,
            format!("Failed to spawn /bin/bash inside the sandbox ({step}): {detail}"),
        );
    }
    unavailable(format!(
        "the bash sandbox could not be set up ({step}): {detail}"
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

/// Text of at most `cap` bytes that never ends inside a code point; invalid
/// UTF-8 elsewhere becomes U+FFFD (and is cut again if that grew it).
pub(crate) fn utf8_within(mut bytes: Vec<u8>, cap: usize, mut truncated: bool) -> (String, bool) {
    if bytes.len() > cap {
        bytes.truncate(cap);
        truncated = true;
    }
    if truncated
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        bytes.truncate(e.valid_up_to());
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if text.len() > cap {
        let mut end = cap;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        truncated = true;
    }
    (text, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_splits_a_code_point() {
        let text = "aé€😀".as_bytes().to_vec(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(utf8_within(text.clone(), 2, false), ("a".into(), true));
        assert_eq!(utf8_within(text.clone(), 3, false), ("aé".into(), true));
        assert_eq!(utf8_within(text.clone(), 5, false), ("aé".into(), true));
        assert_eq!(utf8_within(text.clone(), 9, false), ("aé€".into(), true));
        assert_eq!(
            utf8_within(text.clone(), 10, false),
            ("aé€😀".into(), false)
        );
        // A stream cut at the cap by the reader is flagged and trimmed the same way.
        assert_eq!(utf8_within(b"a\xc3".to_vec(), 2, true), ("a".into(), true));
    }

    #[test]
    fn invalid_utf8_is_replaced_without_exceeding_the_cap() {
        let (text, cut) = utf8_within(vec![b'a', 0xff, b'b'], 3, false);
        assert!(text.len() <= 3);
        assert!(cut);
        assert_eq!(utf8_within(b"ok\xff".to_vec(), 10, false).0, "ok\u{fffd}");
    }

    #[test]
    fn env_names_are_validated() {
        let ok = |n: &str| validate_env(&[(n.to_string(), "v".to_string())]).is_ok();
        assert!(ok("A") && ok("_x9") && ok("PATH"));
        assert!(!ok("") && !ok("9A") && !ok("A-B") && !ok("A=B") && !ok("É"));
        assert!(validate_env(&[("A".into(), "x\0y".into())]).is_err());
    }
}
