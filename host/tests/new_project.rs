//! A project of one's own, the way a new user makes it: `smithers-host new`
//! in a directory outside this checkout, then `run` (outputs printed, inputs
//! checked against the derived schema), `approve`, the crate's own tests, and
//! several such crates served from one root dir and listed by the server.

mod common;
mod http_support;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{Value, json};

/// A temporary project dir (the root dir) and state dir, outside the checkout.
struct Project {
    root: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        let project = Self {
            root: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
        };
        assert!(!project.root.path().starts_with(common::workspace_root()));
        project
    }

    /// The host with this project as root dir and cwd; guest builds share
    /// the test guests' target dir (same profile, so dependencies are reused).
    fn host(&self, args: &[&str]) -> Output {
        Command::new(common::host_binary())
            .args(args)
            .current_dir(self.root.path())
            .arg("--state-dir")
            .arg(self.state.path())
            .env("SMITHERS_BUILD_DIR", build_dir())
            .output()
            .unwrap()
    }

    /// `smithers-host new ARGS` in the project dir.
    fn new_command(&self, args: &[&str]) -> Output {
        Command::new(common::host_binary())
            .arg("new")
            .args(args)
            .current_dir(self.root.path())
            .output()
            .unwrap()
    }

    /// `smithers-host new NAME` (offline: the cache already holds what the
    /// SDK needs, and a test must not depend on the network).
    fn new_crate(&self, name: &str) -> PathBuf {
        let out = self.new_command(&[name, "--no-fetch"]);
        assert!(out.status.success(), "{}", text(&out));
        self.root.path().join(name)
    }
}

fn build_dir() -> PathBuf {
    common::guests_dir()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ndjson(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn new_makes_a_standalone_crate_that_runs_and_tests_outside_the_checkout() {
    let project = Project::new();
    let dir = project.new_crate("demo");
    for file in ["Cargo.toml", "src/lib.rs", "README.md", ".gitignore"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("[workspace]"), "{manifest}");
    assert!(manifest.contains("version = \"0.1.0\""), "{manifest}");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("smithers-host run demo"), "{readme}");
    assert!(readme.contains("Where the SDK comes from"), "{readme}");
    // A name that would escape or surprise is refused.
    let out = project.new_command(&["../evil"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = project.new_command(&["demo", "--no-fetch"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "an existing crate was overwritten"
    );

    // An input the derived schema refuses starts nothing and names where.
    let out = project.host(&["run", "demo", "--input", r#"{"topic":3}"#]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("/topic"), "{}", text(&out));

    // Built by the host (in its sandbox), run, parked at the approval; the
    // draft's output is printed.
    let out = project.host(&["run", "demo", "--input", r#"{"topic":"tea"}"#]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("A short note about tea."), "{printed}");

    // `--json` carries the outputs on `NodeFinished`.
    let out = project.host(&["run", "demo", "--input", r#"{"topic":"tea"}"#, "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let events = ndjson(&out);
    let run_id = events[0]["runId"].as_str().unwrap().to_string();
    assert!(events.iter().any(|e| e["type"] == "ApprovalRequested"));
    let draft = events
        .iter()
        .find(|e| e["type"] == "NodeFinished" && e["nodeId"] == "draft")
        .unwrap_or_else(|| panic!("no NodeFinished for draft: {events:?}"));
    assert_eq!(
        draft["output"],
        json!({ "text": "A short note about tea.", "words": 5 })
    );

    // Approved: it finishes, printing what publish made of the draft.
    let out = project.host(&["approve", &run_id, "review", "--by", "ada"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("published"), "{printed}");
    assert!(printed.contains("ada"), "{printed}");
    let out = project.host(&["status", &run_id, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "finished", "{status}");
    assert!(status.to_string().contains("approvedBy"), "{status}");

    // The crate's own native test passes (sharing the workspace's target dir
    // so its dependencies are not compiled again).
    let out = Command::new("cargo")
        .args(["test", "--offline", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", common::workspace_root().join("target"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("test result: ok. 1 passed"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_new_crates_are_served_from_one_root_dir() {
    let server = http_support::Server::with(http_support::Options {
        env: vec![(
            "SMITHERS_BUILD_DIR".into(),
            build_dir().display().to_string(),
        )],
        ..Default::default()
    });
    for name in ["notes", "digest"] {
        let out = Command::new(common::host_binary())
            .args(["new", name, "--no-fetch", "--dir"])
            .arg(server.root.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let mut runs = Vec::new();
    for name in ["notes", "digest"] {
        let run = server
            .start_run(name, json!({ "topic": format!("{name} topic") }))
            .await;
        runs.push(run);
    }
    for run in &runs {
        server.wait_status(run, "waiting-approval").await;
        let (status, body) = server
            .post(
                &format!("/v1/runs/{run}/nodes/review/approve"),
                json!({ "decidedBy": "ada" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for run in &runs {
        server.wait_status(run, "finished").await;
        let (status, body) = server.get(&format!("/v1/runs/{run}/outputs")).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.to_string().contains("\"approvedBy\":\"ada\""),
            "{body}"
        );
    }

    // The server knows both, with the schema their SDK derived from `Input`.
    let (status, listed) = server.get("/v1/workflows").await;
    assert_eq!(status, 200, "{listed}");
    for name in ["notes", "digest"] {
        let workflow = listed["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["path"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"));
        assert_eq!(workflow["state"], "ready", "{workflow}");
        assert_eq!(workflow["name"], name, "{workflow}");
        assert_eq!(
            workflow["inputSchema"]["properties"]["topic"]["type"], "string",
            "{workflow}"
        );
    }

    // And refuses an input that does not match it, naming where.
    let (status, body) = server
        .post(
            "/v1/runs",
            json!({ "workflowPath": "digest", "input": { "topic": 3 } }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_INPUT", "{body}");
    assert_eq!(body["error"]["details"]["pointer"], "/topic", "{body}");
}
