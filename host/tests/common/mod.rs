//! Test support: real guest components built once per test binary, and real
//! hosts on temporary root and state dirs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use smithers_host::app::{App, AppConfig};
use smithers_host::engine::StartRequest;
use smithers_host::model::RunId;
use smithers_host::store::RunRow;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `smithers-host` binary under test.
pub fn host_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_smithers-host"))
}

fn package_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("name = ")
                    .map(|v| v.trim_matches('"').to_string())
            })
            .expect("package name");
        names.push(name);
    }
    names.sort();
    names
}

/// Builds every example and fixture guest for wasm32-wasip2 (once per test
/// binary) and returns the directory holding the `.wasm` components.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target").join("guests");
        let _ = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .output();
        let mut packages = package_names(&root.join("examples"));
        packages.extend(package_names(&root.join("tests/guests")));
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root)
            .envs(
                smithers_host::runtime::build::GUEST_PROFILE_ENV
                    .iter()
                    .copied(),
            )
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target_dir);
        for package in &packages {
            cmd.args(["-p", package]);
        }
        let status = cmd.status().expect("run cargo to build the guests");
        assert!(status.success(), "building the guest components failed");
        target_dir.join("wasm32-wasip2").join("release")
    })
}

/// Path of a built guest, by package name (`example-hello`, `fixture-scripted`).
pub fn guest(package: &str) -> PathBuf {
    let path = guests_dir().join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.is_file(), "no component at {}", path.display());
    path
}

/// A host on temporary dirs, in this process.
pub struct TestHost {
    pub app: App,
    pub root: tempfile::TempDir,
    pub state: tempfile::TempDir,
}

impl TestHost {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut AppConfig)) -> Self {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut config = AppConfig::new(root.path());
        config.state_dir = Some(state.path().to_path_buf());
        config.launcher = Some(host_binary());
        configure(&mut config);
        let app = App::open(config).expect("open host");
        Self { app, root, state }
    }

    /// Copies a guest into the root dir; returns its workflow path.
    pub fn install(&self, package: &str) -> String {
        let name = format!("{package}.wasm");
        std::fs::copy(guest(package), self.root.path().join(&name)).unwrap();
        name
    }

    pub async fn start(&self, workflow: &str, input: Value) -> RunId {
        self.app
            .engine
            .start(StartRequest {
                workflow_path: workflow.into(),
                input: Some(input),
                ..Default::default()
            })
            .await
            .expect("start run")
    }

    /// Waits (bounded) until no driver runs the run, then returns its row.
    pub async fn settle(&self, run_id: &RunId) -> RunRow {
        tokio::time::timeout(Duration::from_secs(60), self.app.engine.wait_idle(run_id))
            .await
            .expect("run settles within 60 s");
        self.run(run_id).await
    }

    pub async fn run(&self, run_id: &RunId) -> RunRow {
        let id = run_id.clone();
        self.app
            .engine
            .store()
            .read(move |r| r.run(&id))
            .await
            .unwrap()
            .expect("run exists")
    }

    /// Every stored event of a run, as JSON.
    pub async fn events(&self, run_id: &RunId) -> Vec<Value> {
        let id = run_id.clone();
        let rows = self
            .app
            .engine
            .store()
            .read(move |r| r.events_after(&id, -1, u32::MAX))
            .await
            .unwrap();
        rows.iter()
            .map(|e| serde_json::from_str(&e.json).unwrap())
            .collect()
    }

    /// Committed output of a node.
    pub async fn output(&self, run_id: &RunId, node: &str, iteration: u32) -> Option<Value> {
        let id = run_id.clone();
        let nodes = self
            .app
            .engine
            .store()
            .read(move |r| r.nodes(&id))
            .await
            .unwrap();
        nodes
            .into_iter()
            .find(|n| &*n.key.node_id == node && n.key.iteration == iteration)
            .and_then(|n| n.output_json)
            .map(|o| serde_json::from_str(&o).unwrap())
    }
}

/// Types of events, in order.
pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Events of one type.
pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Reads `child`'s piped stdout until a line starting with `prefix` and
/// returns the rest of that line, or `None` if none came within 60 s (the
/// caller panics with the host's log). The stdout keeps being drained
/// afterwards, so the host never blocks on a full pipe.
pub fn wait_for_line(child: &mut Child, prefix: &str) -> Option<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Some(rest.trim().to_string());
                }
            }
            Err(_) => return None,
        }
    }
}

/// Runs `command` (stdout discarded) and returns its exit code and stderr
/// once it exited; panics, naming `what`, if it is still running after 30 s
/// (a host that should have refused to start and is listening instead).
pub fn refused(command: &mut Command, what: &str) -> (Option<i32>, String) {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("it kept running: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}
