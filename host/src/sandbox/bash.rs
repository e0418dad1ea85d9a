//! The confined `bash` tool: validation of a call and the shape of its
//! outcome.
//!
//! A call is validated completely before anything starts (command length,
//! timeout, output cap, environment names, `cwd` under the root dir lexically
//! and after symlinks) and becomes a [`Launch`] of `/bin/bash -c COMMAND`
//! with the root dir writable; [`super::spawn`] runs it. This module never
//! starts anything itself and never lets a call choose a wall.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::paths::{self, PathError};
use super::protocol::LaunchSpec;
use super::spawn::{Finished, Launch};
use super::status::Walls;
use super::{
    BashOutcome, BashRequest, DEFAULT_BASH_TIMEOUT, DEFAULT_MAX_OUTPUT_BYTES, MAX_BASH_TIMEOUT,
    MAX_COMMAND_CHARS, MAX_OUTPUT_BYTES, SandboxPolicy, ToolError, ToolErrorCode,
};

/// Longest `cwd` accepted.
const MAX_CWD_BYTES: usize = 1024;
/// Most environment variables a call may add.
const MAX_ENV_VARS: usize = 128;
/// Largest total size of the added environment.
const MAX_ENV_BYTES: usize = 64 << 10;

fn invalid(message: impl Into<String>) -> ToolError {
    ToolError::new(ToolErrorCode::InvalidInput, message)
}

pub(crate) fn unavailable(message: impl Into<String>) -> ToolError {
    ToolError::new(ToolErrorCode::SandboxUnavailable, message)
}

/// Validates `request` against the contract's bounds and the policy's root.
pub(crate) fn prepare(policy: &SandboxPolicy, request: BashRequest) -> Result<Launch, ToolError> {
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
    Ok(Launch {
        spec: LaunchSpec {
            root_dir: root,
            root_overlay: false,
            mounts: Vec::new(),
            cwd,
            program: PathBuf::from("/bin/bash"),
            argv: vec!["bash".into(), "-c".into(), request.command],
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

/// The bash outcome of a finished launch, with the walls it ran behind.
pub(crate) fn outcome(finished: Finished, max_output: usize) -> (BashOutcome, Walls) {
    let (stdout, stdout_cut) = utf8_within(finished.stdout, max_output, finished.stdout_cut);
    let (stderr, stderr_cut) = utf8_within(finished.stderr, max_output, finished.stderr_cut);
    let outcome = BashOutcome {
        exit_code: finished.exit_code,
        stdout,
        stderr,
        truncated: stdout_cut || stderr_cut,
        duration_ms: finished.duration_ms,
    };
    (outcome, finished.walls)
}

/// The root dir must exist, be canonical, and not be `/` or a kernel
/// filesystem (the sandbox builds its own `/proc` and `/dev`, and has no `/sys`).
pub(crate) fn checked_root(root: &Path) -> Result<PathBuf, ToolError> {
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
