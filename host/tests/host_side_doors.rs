//! The host's own side doors: what the host does with what a hostile
//! workflow can write into the root dir — build it, read it, watch it, log
//! it, quote it in an error — attacked over the real binary, and checked on
//! the host side (files outside the root, the host's secrets in answers and
//! logs, its threads, peak memory and inotify watches).
//!
//! Everything planted here in the root dir stands for what a workflow's
//! confined `bash` can write there (any file, FIFO, crate or directory).

mod common;
mod http_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use http_support::{Options, Server};

const KEY_PREFIX: &str = "TOPSECRET-APIKEY";

/// A build script that reports what it can reach and tries to leave marks
/// outside the root dir, then fails so that its report comes back in the
/// build error.
const EVIL_BUILD_RS: &str = r#"
fn main() {
    let key = std::env::var("SMITHERS_API_KEY").unwrap_or_else(|_| "unset".into());
    let config = std::env::var("SMITHERS_FROM_CONFIG").unwrap_or_else(|_| "ignored".into());
    let secret = std::fs::read_to_string("{OUTSIDE}/secret.txt")
        .unwrap_or_else(|e| format!("unreadable ({})", e.kind()));
    let wrote_outside = std::fs::write("{OUTSIDE}/{MARK}", "x").is_ok();
    let wrote_home = std::fs::write("/root/{MARK}", "x").is_ok() || std::fs::write("/tmp/../{MARK}", "x").is_ok();
    let _ = std::fs::write("{ROOT}/{MARK}", "x");
    panic!("REPORT key={key} config={config} secret={secret} wrote_outside={wrote_outside} wrote_home={wrote_home}");
}
"#;

fn key() -> String {
    format!("{KEY_PREFIX}-{}", std::process::id())
}

/// A directory outside the root dir holding a secret file.
struct Outside {
    dir: tempfile::TempDir,
    secret: String,
}

impl Outside {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret = format!("TOPSECRET-FILE-{}", uuid::Uuid::new_v4().simple());
        std::fs::write(dir.path().join("secret.txt"), &secret).unwrap();
        Self { dir, secret }
    }

    fn path(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap()
    }

    /// Files in it besides the secret (what a build managed to write).
    fn planted(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "secret.txt")
            .collect()
    }
}

/// Writes a crate named `name` into `root` whose build script is `build_rs`.
fn evil_crate(root: &Path, name: &str, outside: &Path, mark: &str, extra_manifest: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             build = \"build.rs\"\n{extra_manifest}\n[lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    // A toolchain of the crate's choosing would be installed by rustup on the
    // host; the host's own toolchain must build it.
    std::fs::write(
        dir.join("rust-toolchain.toml"),
        "[toolchain]\nchannel = \"nightly-2001-01-01\"\n",
    )
    .unwrap();
    let build_rs = EVIL_BUILD_RS
        .replace("{OUTSIDE}", &outside.display().to_string())
        .replace(
            "{ROOT}",
            &std::fs::canonicalize(root).unwrap().display().to_string(),
        )
        .replace("{MARK}", mark);
    std::fs::write(dir.join("build.rs"), build_rs).unwrap();
}

fn secret_server(extra_args: &[&str], cwd_in_root: bool) -> Server {
    Server::with(Options {
        token: Some(key()),
        env: vec![("SMITHERS_API_KEY".into(), key())],
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        cwd_in_root,
        ..Options::default()
    })
}

fn error_of(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or_default(),
        body["error"]["message"].as_str().unwrap_or_default(),
    )
}

/// The build's report must show a confined build: no host secret, no host
/// config, no write outside the root dir.
fn assert_confined_report(message: &str, outside: &Outside) {
    assert!(
        message.contains("REPORT"),
        "the build script's report is missing: {message}"
    );
    assert!(
        !message.contains(KEY_PREFIX),
        "the host's API key reached the build: {message}"
    );
    assert!(
        !message.contains(&outside.secret),
        "a file outside the root was read: {message}"
    );
    assert!(message.contains("key=unset"), "{message}");
    assert!(
        message.contains("config=ignored"),
        "a config file of the root dir was honoured: {message}"
    );
    assert!(message.contains("wrote_outside=false"), "{message}");
    assert!(message.contains("wrote_home=false"), "{message}");
    assert!(
        outside.planted().is_empty(),
        "the build wrote outside: {:?}",
        outside.planted()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crate_in_the_root_dir_is_built_confined_without_the_hosts_env_or_config() {
    let outside = Outside::new();
    let server = secret_server(&[], true);
    let root = server.root.path();
    evil_crate(root, "evil", &outside.path(), "planted-by-build", "");
    // A config file in the root dir, with the host running from the root dir.
    std::fs::create_dir_all(root.join(".cargo")).unwrap();
    std::fs::write(
        root.join(".cargo/config.toml"),
        "[env]\nSMITHERS_FROM_CONFIG = \"honoured\"\n",
    )
    .unwrap();

    let (status, body) = server
        .post("/v1/runs", json!({ "workflowPath": "evil" }))
        .await;
    let (code, message) = error_of(&body);
    assert_eq!((status, code), (422, "WORKFLOW_BUILD_FAILED"), "{body}");
    assert_confined_report(message, &outside);
    assert!(
        !root.join("planted-by-build").exists(),
        "the build wrote into the root dir"
    );
    assert!(message.len() <= 17 * 1024, "the build error is not bounded");
    assert!(
        !message.contains('\u{1b}'),
        "terminal escapes reached the client"
    );
    assert!(!server.log().contains(KEY_PREFIX));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_never_ends_is_killed_at_the_build_timeout() {
    let server = secret_server(&["--build-timeout", "3s"], false);
    let dir = server.root.path().join("sleeper");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"sleeper\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\n\
         crate-type = [\"cdylib\"]\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    let marker = format!("smithers-sleeper-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(
        dir.join("build.rs"),
        format!(
            "fn main() {{ let _ = std::process::Command::new(\"sh\").args([\"-c\", \"exec -a {marker} sleep 1000\"]).spawn(); loop {{ std::thread::sleep(std::time::Duration::from_secs(1)); }} }}"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (status, body) = server
        .post("/v1/runs", json!({ "workflowPath": "sleeper" }))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(
        (status, error_of(&body).0),
        (422, "WORKFLOW_BUILD_FAILED"),
        "{body}"
    );
    assert!(error_of(&body).1.contains("timed out"), "{body}");
    assert!(
        elapsed < Duration::from_secs(60),
        "the build took {elapsed:?}"
    );
    let survivors: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        })
        .collect();
    assert!(survivors.is_empty(), "the build's processes outlived it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_escapes_a_guest_logs_never_reach_the_hosts_log() {
    let server = Server::with(Options {
        install: vec!["fixture-scripted".into()],
        ..Options::default()
    });
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mRED\r\rCR";
    let input = http_support::script(http_support::task(
        "noisy",
        json!({ "log": hostile, "stderr": hostile }),
    ));
    let run = server.start_run("fixture-scripted.wasm", input).await;
    server.wait_status(&run, "finished").await;
    let log = std::fs::read(server.log_path()).unwrap();
    assert!(
        !log.contains(&0x1b),
        "an escape character reached the host's log"
    );
    assert!(!log.contains(&0x07), "a BEL reached the host's log");
    assert!(
        String::from_utf8_lossy(&log).contains("RED"),
        "the message was not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lib_path_outside_the_root_is_not_quoted_in_the_build_error() {
    let outside = Outside::new();
    let source = outside.path().join("lib.rs");
    let quoted = format!("fn {}_not_rust(", outside.secret.replace('-', "_"));
    std::fs::write(&source, format!("{quoted} this is not rust\n")).unwrap();
    let server = secret_server(&[], false);
    let dir = server.root.path().join("libpath");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"libpath\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\npath = {:?}\n\n[workspace]\n",
            source.display().to_string()
        ),
    )
    .unwrap();
    let (status, body) = server
        .post("/v1/runs", json!({ "workflowPath": "libpath" }))
        .await;
    let (code, message) = error_of(&body);
    assert_eq!((status, code), (422, "WORKFLOW_BUILD_FAILED"), "{body}");
    let secret_part = outside.secret.replace('-', "_");
    assert!(
        !message.contains(&secret_part),
        "an outside file was quoted: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_watcher_rebuilds_confined() {
    let outside = Outside::new();
    let server = secret_server(&["--dev"], false);
    let root = server.root.path();
    evil_crate(root, "evil", &outside.path(), "planted-by-build", "");
    let (status, _) = server
        .post("/v1/runs", json!({ "workflowPath": "evil" }))
        .await;
    assert_eq!(status, 422);

    // The workflow edits its crate: the watcher rebuilds it, no request needed.
    evil_crate(root, "evil", &outside.path(), "planted-by-rebuild", "");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !server.log().contains("guest crate does not build") {
        assert!(
            Instant::now() < deadline,
            "no rebuild; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = server.log();
    assert!(log.contains("REPORT"), "{log}");
    assert!(
        !log.contains(KEY_PREFIX),
        "the host's API key reached the rebuild"
    );
    assert!(!log.contains(&outside.secret));
    assert!(outside.planted().is_empty(), "{:?}", outside.planted());
}

#[test]
fn the_one_shot_run_builds_confined() {
    let outside = Outside::new();
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    evil_crate(root.path(), "evil", &outside.path(), "planted-by-run", "");
    let output = Command::new(common::host_binary())
        .args(["run", "evil", "--root-dir"])
        .arg(root.path())
        .arg("--state-dir")
        .arg(state.path())
        .env("SMITHERS_API_KEY", key())
        .current_dir(root.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(6), "{text}");
    assert_confined_report(&text, &outside);
}

#[test]
fn a_build_dir_inside_the_root_dir_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    for build_dir in [root.path().join("target"), root.path().to_path_buf()] {
        let output = Command::new(common::host_binary())
            .args(["runs", "--root-dir"])
            .arg(root.path())
            .arg("--state-dir")
            .arg(state.path())
            .arg("--build-dir")
            .arg(&build_dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("build dir"), "{stderr}");
    }
    assert!(
        !root.path().join("target").exists(),
        "the refused build dir was created"
    );
}

/// Threads of a process.
fn threads(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap()
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap();
    kb / 1024
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_pipes_in_the_root_dir_are_refused_without_blocking() {
    let server = Server::start();
    let root = server.root.path();
    mkfifo(&root.join("pipe.wasm"));
    std::fs::create_dir_all(root.join("krate/src")).unwrap();
    mkfifo(&root.join("krate/Cargo.toml"));
    let before = threads(server.pid());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut requests = Vec::new();
    for i in 0..24 {
        let path = if i % 2 == 0 { "pipe.wasm" } else { "krate" };
        requests.push(
            client
                .post(server.url("/v1/runs"))
                .json(&json!({ "workflowPath": path }))
                .send(),
        );
    }
    for response in futures::future::join_all(requests).await {
        let response = response.expect("answered within 10 s");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert!(
            matches!(error_of(&body).0, "WORKFLOW_NOT_FOUND"),
            "{status} {body}"
        );
        assert_eq!(status, 400, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = threads(server.pid());
    assert!(after <= before + 4, "threads grew from {before} to {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_non_binary_components_are_refused_cheaply_and_not_quoted() {
    let server = Server::start();
    let root = server.root.path();
    // A 1 GiB sparse file: refused from its size, never read.
    let sparse = std::fs::File::create(root.join("big.wasm")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    // 20 MB of zeros (under the size bound): not a binary component, and its
    // single 20 MB "line" must not come back in the error.
    std::fs::write(root.join("zeros.wasm"), vec![0u8; 20 << 20]).unwrap();
    // Text that a text-format parser would quote back.
    let quoted = format!("(module {})", "QUOTED".repeat(10_000));
    std::fs::write(root.join("text.wasm"), &quoted).unwrap();

    for name in ["big.wasm", "zeros.wasm", "text.wasm"] {
        let response = server
            .client
            .post(server.url("/v1/runs"))
            .json(&json!({ "workflowPath": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{name}");
        let text = response.text().await.unwrap();
        assert!(text.len() < 4096, "{name}: a {} byte answer", text.len());
        assert!(
            text.contains("WORKFLOW_INVALID_COMPONENT"),
            "{name}: {text}"
        );
        assert!(
            !text.contains("QUOTEDQUOTED"),
            "{name}: the file was quoted"
        );
    }
    let peak = peak_rss_mib(server.pid());
    assert!(peak < 400, "peak RSS {peak} MiB");
}

/// inotify watches held by a process.
fn inotify_watches(pid: i32) -> usize {
    let mut watches = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let is_inotify = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().contains("inotify"));
        if is_inotify {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            watches += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    watches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_logs_bounded_lines_and_watches_a_bounded_number_of_dirs() {
    let server = Server::start();
    let root = server.root.path();
    std::fs::write(root.join("zeros.wasm"), vec![0u8; 60 << 20]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("changed workflow does not load") {
        assert!(Instant::now() < deadline, "the watcher never looked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log_bytes = std::fs::metadata(server.log_path()).unwrap().len();
    assert!(log_bytes < 64 << 10, "the host logged {log_bytes} bytes");

    for i in 0..2000 {
        std::fs::create_dir_all(root.join(format!("many/d{i}/src"))).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watches = inotify_watches(server.pid());
    assert!(watches > 0, "the watcher watches nothing");
    assert!(
        watches <= smithers_host::engine::watcher::MAX_WATCHED_DIRS + 1,
        "{watches} inotify watches"
    );
    let log_bytes = std::fs::metadata(server.log_path()).unwrap().len();
    assert!(log_bytes < 64 << 10, "the host logged {log_bytes} bytes");
}

/// The processes of `pid`'s children (all its threads').
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// A child the host starts (the sandbox launcher) holds only descriptors
/// of its own: none of the host's files (the state dir's lock and
/// database, the root dir) and none of its sockets, so nothing of a killed
/// host lives on in a child (a restart is never refused by its own lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_launcher_inherits_none_of_the_hosts_descriptors() {
    let server = Server::with(Options {
        install: vec!["fixture-scripted".into()],
        ..Options::default()
    });
    let input = http_support::script(http_support::task(
        "t",
        json!({ "bash": { "command": "sleep 3" } }),
    ));
    let run = server.start_run("fixture-scripted.wasm", input).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let launcher = loop {
        let found = children(server.pid()).into_iter().find(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("__sandbox-exec"))
        });
        if let Some(launcher) = found {
            break launcher;
        }
        assert!(Instant::now() < deadline, "no launcher started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{launcher}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    let state = std::fs::canonicalize(server.state.path()).unwrap();
    let root = std::fs::canonicalize(server.root.path()).unwrap();
    for target in &fds {
        assert!(
            !target.starts_with(&state.display().to_string())
                && !target.starts_with(&root.display().to_string()),
            "the launcher holds the host's {target}: {fds:?}"
        );
    }
    // Its control socket, and no other (the host's listener is one).
    let sockets = fds.iter().filter(|t| t.starts_with("socket:")).count();
    assert!(sockets <= 1, "{fds:?}");
    server.wait_status(&run, "finished").await;
}

/// `SMITHERS_LOG_FORMAT=json`: every line the host logs is one JSON object
/// (fields escaped, so a client's text cannot start a line of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let server = Server::with(Options {
        install: vec!["fixture-scripted".into()],
        env: vec![
            ("SMITHERS_LOG_FORMAT".into(), "json".into()),
            ("SMITHERS_LOG".into(), "debug".into()),
        ],
        ..Options::default()
    });
    let (status, _) = server
        .post(
            "/v1/runs",
            json!({ "workflowPath": "missing\nFORGED level=ERROR.wasm", "input": {} }),
        )
        .await;
    assert!(status >= 400);
    let run = server
        .start_run(
            "fixture-scripted.wasm",
            http_support::script(http_support::task("t", json!({}))),
        )
        .await;
    server.wait_status(&run, "finished").await;
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 5, "{log}");
    for line in lines {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["fields"].is_object(),
            "{line}"
        );
        assert!(!line.starts_with("FORGED"));
    }
}
