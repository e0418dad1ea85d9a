//! Functional behaviour of the confined bash tool: capture, exit codes,
//! environment, working directory, limits, truncation, timeout, cancel and
//! failing closed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use smithers_host::sandbox::{
    BashOutcome, BashRequest, NetworkWall, SandboxPolicy, SetupStep, ToolError, ToolErrorCode,
    probe, run_bash,
};
use tokio_util::sync::CancellationToken;

/// A fresh, canonical root dir and a closed policy over it.
struct Root {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap();
        Self { _dir: dir, path }
    }

    fn policy(&self) -> SandboxPolicy {
        SandboxPolicy::new(
            self.path.clone(),
            PathBuf::from(env!("CARGO_BIN_EXE_smithers-host")),
        )
    }

    async fn run(&self, request: BashRequest) -> Result<BashOutcome, ToolError> {
        run_bash(&self.policy(), request, CancellationToken::new()).await
    }

    async fn sh(&self, command: &str) -> BashOutcome {
        self.run(cmd(command)).await.expect("the command runs")
    }
}

fn cmd(command: &str) -> BashRequest {
    BashRequest {
        command: command.into(),
        ..BashRequest::default()
    }
}

fn marker() -> String {
    format!("smb{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Pids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            pids.push(pid);
        }
    }
    pids
}

fn code(result: Result<BashOutcome, ToolError>) -> ToolErrorCode {
    result.expect_err("the call must fail").code
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_separately() {
    let root = Root::new();
    let out = root.sh("echo out; echo err >&2; printf 'no newline'").await;
    assert_eq!(out.stdout, "out\nno newline");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(out.exit_code, 0);
    assert!(!out.truncated);
}

#[tokio::test]
async fn exit_code_is_the_commands() {
    let root = Root::new();
    assert_eq!(root.sh("exit 7").await.exit_code, 7);
    assert_eq!(root.sh("false").await.exit_code, 1);
    assert_eq!(root.sh("no-such-command-xyz").await.exit_code, 127);
}

#[tokio::test]
async fn a_shell_killed_by_a_signal_reports_128_plus_n() {
    let root = Root::new();
    assert_eq!(root.sh("kill -9 $$").await.exit_code, 137);
    assert_eq!(root.sh("kill -TERM $$").await.exit_code, 143);
}

#[tokio::test]
async fn the_environment_is_fixed_plus_the_requested_variables() {
    let root = Root::new();
    let mut request = cmd("env | grep -v -E '^(PWD|SHLVL|_)=' | sort");
    request.env = vec![
        ("GREETING".into(), "hello world".into()),
        ("LANG".into(), "C".into()),
    ];
    let out = root.run(request).await.unwrap();
    let expected = format!(
        "GREETING=hello world\nHOME={}\nLANG=C\nPATH=/usr/local/bin:/usr/bin:/bin\n",
        root.path.display()
    );
    assert_eq!(out.stdout, expected);
}

#[tokio::test]
async fn invalid_environment_names_are_refused() {
    let root = Root::new();
    for name in ["", "1ABC", "A-B", "A=B", "BASH_FUNC_x%%", "É"] {
        let mut request = cmd("true");
        request.env = vec![(name.into(), "v".into())];
        assert_eq!(
            code(root.run(request).await),
            ToolErrorCode::InvalidInput,
            "{name:?}"
        );
    }
}

#[tokio::test]
async fn paths_inside_match_the_host_and_home_is_the_root() {
    let root = Root::new();
    let out = root
        .sh("pwd; echo $HOME; echo data > inside.txt; cat inside.txt")
        .await;
    let here = root.path.display();
    assert_eq!(out.stdout, format!("{here}\n{here}\ndata\n"));
    assert_eq!(
        std::fs::read_to_string(root.path.join("inside.txt")).unwrap(),
        "data\n"
    );
}

#[tokio::test]
async fn cwd_resolves_relative_and_absolute_paths_inside_the_root() {
    let root = Root::new();
    std::fs::create_dir_all(root.path.join("a/b")).unwrap();
    let mut request = cmd("pwd");
    request.cwd = Some("a/b".into());
    assert_eq!(
        root.run(request).await.unwrap().stdout,
        format!("{}/a/b\n", root.path.display())
    );
    let mut request = cmd("pwd");
    request.cwd = Some(format!("{}/a", root.path.display()));
    assert_eq!(
        root.run(request).await.unwrap().stdout,
        format!("{}/a\n", root.path.display())
    );
}

#[tokio::test]
async fn cwd_escapes_are_refused() {
    let root = Root::new();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path.join("out")).unwrap();
    for cwd in ["..", "../..", "/etc", "out", "a/../../x"] {
        let mut request = cmd("pwd");
        request.cwd = Some(cwd.into());
        assert_eq!(
            code(root.run(request).await),
            ToolErrorCode::PathEscape,
            "{cwd}"
        );
    }
}

#[tokio::test]
async fn a_missing_or_non_directory_cwd_is_invalid_input() {
    let root = Root::new();
    std::fs::write(root.path.join("file"), "x").unwrap();
    for cwd in ["missing", "file", ""] {
        let mut request = cmd("pwd");
        request.cwd = Some(cwd.into());
        let error = root.run(request).await.unwrap_err();
        assert_eq!(error.code, ToolErrorCode::InvalidInput, "{cwd}");
    }
    let mut request = cmd("pwd");
    request.cwd = Some("missing".into());
    let message = root.run(request).await.unwrap_err().message;
    assert!(message.contains("does not exist"), "{message}");
}

#[tokio::test]
async fn limits_of_the_request_are_enforced_before_anything_runs() {
    let root = Root::new();
    assert_eq!(code(root.run(cmd("")).await), ToolErrorCode::InvalidInput);
    let long = format!("echo {}", "é".repeat(8192 - 5));
    assert_eq!(long.chars().count(), 8192);
    assert_eq!(root.run(cmd(&long)).await.unwrap().exit_code, 0);
    let too_long = format!("{long}x");
    assert_eq!(
        code(root.run(cmd(&too_long)).await),
        ToolErrorCode::InvalidInput
    );

    let mut request = cmd("true");
    request.timeout_ms = Some(3_600_001);
    assert_eq!(code(root.run(request).await), ToolErrorCode::InvalidInput);
    let mut request = cmd("true");
    request.timeout_ms = Some(0);
    assert_eq!(code(root.run(request).await), ToolErrorCode::InvalidInput);
    let mut request = cmd("true");
    request.max_output_bytes = Some(10 * 1024 * 1024 + 1);
    assert_eq!(code(root.run(request).await), ToolErrorCode::InvalidInput);
}

#[tokio::test]
async fn truncation_keeps_whole_code_points_and_drains_the_rest() {
    let root = Root::new();
    // "é" is two bytes: a cap of 5 keeps two of them, never half of the third.
    let mut request = cmd("for i in $(seq 1 100000); do printf 'é'; done; printf 'é' >&2");
    request.max_output_bytes = Some(5);
    let out = root.run(request).await.unwrap();
    assert_eq!(out.stdout, "éé");
    assert_eq!(out.stderr, "é");
    assert!(out.truncated);

    let mut request = cmd("printf '€€€'");
    request.max_output_bytes = Some(8);
    let out = root.run(request).await.unwrap();
    assert_eq!(out.stdout, "€€");
    assert!(out.truncated);

    // Far more output than the pipe buffer: the shell is never blocked.
    let out = root
        .sh("head -c 20000000 /dev/zero | tr '\\0' a; echo done >&2")
        .await;
    assert_eq!(out.stdout.len(), 200_000);
    assert_eq!(out.stderr, "done\n");
    assert!(out.truncated);
}

#[tokio::test]
async fn stdin_is_empty_and_tmp_is_private_and_writable() {
    let root = Root::new();
    let out = root.sh("cat; echo x > /tmp/f && cat /tmp/f; ls /tmp").await;
    let name = root
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // The root dir's own mount point is the only other thing in /tmp when
    // the root lives under the host's /tmp.
    let listing: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(out.stdout.lines().next(), Some("x"));
    assert!(
        listing.iter().all(|l| *l == "f" || *l == name),
        "{listing:?}"
    );
}

#[tokio::test]
async fn the_shell_runs_as_the_host_uid_with_no_capabilities() {
    let root = Root::new();
    let out = root.sh("id -u; grep -E '^CapEff' /proc/self/status").await;
    let uid = rustix::process::geteuid().as_raw();
    assert_eq!(out.stdout, format!("{uid}\nCapEff:\t0000000000000000\n"));
}

#[tokio::test]
async fn a_timeout_kills_the_whole_tree_quickly() {
    let root = Root::new();
    let mark = marker();
    let mut request = cmd(&format!(
        "(exec -a {mark} sleep 100) & setsid bash -c 'exec -a {mark} sleep 100' & exec -a {mark} sleep 100"
    ));
    request.timeout_ms = Some(500);
    let started = Instant::now();
    let error = root.run(request).await.unwrap_err();
    assert_eq!(error.code, ToolErrorCode::Timeout);
    assert_eq!(error.message, "Command timed out after 500ms");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(processes_with(&mark), Vec::<i32>::new());
}

#[tokio::test]
async fn cancelling_kills_the_whole_tree() {
    let root = Root::new();
    let mark = marker();
    let cancel = CancellationToken::new();
    let policy = root.policy();
    let command = format!("setsid bash -c 'exec -a {mark} sleep 100' & exec -a {mark} sleep 100");
    let call = {
        let cancel = cancel.clone();
        tokio::spawn(async move { run_bash(&policy, cmd(&command), cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !processes_with(&mark).is_empty(),
        "the command should be running"
    );
    let started = Instant::now();
    cancel.cancel();
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(error.code, ToolErrorCode::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(processes_with(&mark), Vec::<i32>::new());
}

#[tokio::test]
async fn dropping_the_call_kills_the_whole_tree() {
    let root = Root::new();
    let mark = marker();
    let command = format!("setsid bash -c 'exec -a {mark} sleep 100' & exec -a {mark} sleep 100");
    let dropped = tokio::time::timeout(Duration::from_millis(400), root.run(cmd(&command))).await;
    assert!(dropped.is_err(), "the call should still have been running");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes_with(&mark).is_empty() {
        assert!(
            Instant::now() < deadline,
            "survivors: {:?}",
            processes_with(&mark)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn background_jobs_die_with_the_shell() {
    let root = Root::new();
    let mark = marker();
    let out = root
        .sh(&format!("(exec -a {mark} sleep 100) & nohup bash -c 'exec -a {mark} sleep 100' >/dev/null 2>&1 & echo started"))
        .await;
    assert_eq!(out.stdout, "started\n");
    assert_eq!(processes_with(&mark), Vec::<i32>::new());
}

#[tokio::test]
async fn probe_reports_every_wall() {
    let root = Root::new();
    let status = probe(&root.policy()).await;
    assert!(status.available, "{status}");
    let walls = status.walls.as_ref().unwrap();
    for ns in ["user", "mount", "pid", "ipc", "uts", "net"] {
        assert!(
            walls.namespaces.iter().any(|n| n == ns),
            "{ns} missing: {status}"
        );
    }
    assert_eq!(walls.network, NetworkWall::Isolated);
    assert!(walls.no_new_privs && walls.capabilities_dropped && walls.nested_userns_blocked);
    assert!(walls.landlock.is_some(), "{status}");
    assert!(walls.session_keyring_isolated, "{status}");
    assert!(walls.seccomp.denied_syscalls >= 60, "{status}");
    assert!(walls.seccomp.foreign_abis_blocked, "{status}");
    let text = status.to_string();
    assert!(text.starts_with("bash sandbox enforced"), "{text}");
    assert!(text.contains("seccomp"), "{text}");

    let mut open = root.policy();
    open.allow_network = true;
    let status = probe(&open).await;
    assert_eq!(status.walls.unwrap().network, NetworkWall::Host);
}

#[tokio::test]
async fn a_bogus_launcher_fails_closed() {
    let root = Root::new();
    let mut policy = root.policy();
    policy.launcher = PathBuf::from("/nonexistent/smithers-host");
    let error = run_bash(&policy, cmd("echo hi"), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.code, ToolErrorCode::SandboxUnavailable);

    // A launcher that exits without building anything is not mistaken for a
    // command that exited.
    policy.launcher = PathBuf::from("/bin/true");
    let error = run_bash(&policy, cmd("echo hi"), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.code, ToolErrorCode::SandboxUnavailable);
    assert!(
        error.message.contains("without confirming its walls"),
        "{}",
        error.message
    );

    let status = probe(&policy).await;
    assert!(!status.available);
    assert!(status.to_string().contains("UNAVAILABLE"), "{status}");
}

#[tokio::test]
async fn a_missing_root_dir_fails_closed() {
    let root = Root::new();
    let mut policy = root.policy();
    policy.root_dir = root.path.join("missing");
    let error = run_bash(&policy, cmd("true"), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.code, ToolErrorCode::SandboxUnavailable);
    policy.root_dir = PathBuf::from("/");
    let error = run_bash(&policy, cmd("true"), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.code, ToolErrorCode::SandboxUnavailable);
}

#[tokio::test]
async fn every_refused_wall_fails_closed_and_names_its_step() {
    let root = Root::new();
    let mark = marker();
    let command = format!("echo {mark} > {}/ran", root.path.display());
    let untestable = [
        SetupStep::ReadSpec,
        SetupStep::Descriptors,
        SetupStep::Supervise,
    ];
    for step in SetupStep::ALL
        .into_iter()
        .filter(|s| !untestable.contains(s))
    {
        let mut policy = root.policy();
        policy.fail_at = Some(step);
        let error = run_bash(&policy, cmd(&command), CancellationToken::new())
            .await
            .unwrap_err();
        let expected = if step == SetupStep::Exec {
            ToolErrorCode::SpawnFailed
        } else {
            ToolErrorCode::SandboxUnavailable
        };
        assert_eq!(error.code, expected, "{step:?}: {error}");
        assert!(error.message.contains(step.as_str()), "{step:?}: {error}");
        assert!(
            !Path::new(&root.path.join("ran")).exists(),
            "{step:?}: the command ran"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_strips_set_id_bits_left_in_the_root_dir_after_a_bash_call() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    // Planted from the host side: the seccomp filter refuses it from inside,
    // so this stands for whatever a future kernel might let through.
    let planted = root.path.join("deep/er");
    std::fs::create_dir_all(&planted).unwrap();
    let binary = planted.join("sh");
    std::fs::copy("/bin/sh", &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o6755)).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"x").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink(&victim, root.path.join("link")).unwrap();

    assert_eq!(root.sh("true").await.exit_code, 0);
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    let deadline = Instant::now() + Duration::from_secs(10);
    while mode(&binary) != 0o755 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mode(&binary), 0o755, "the set-id bits were not stripped");
    assert_eq!(
        mode(&victim),
        0o4755,
        "the sweep followed a symlink out of the root"
    );
}
