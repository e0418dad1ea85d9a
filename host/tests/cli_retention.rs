//! Retention and command-line polish, against the real binary: `gc` removes
//! ended runs (and only those) and the database file shrinks; a server with
//! `--retain` removes them on its own; a local command refused by a server's
//! state dir names the `client` command to use; completions, scoped help and
//! `client --host`.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Project {
    root: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Project {
    fn new(packages: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        for package in packages {
            std::fs::copy(
                common::guest(package),
                root.path().join(format!("{package}.wasm")),
            )
            .unwrap();
        }
        Self {
            root,
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// `smithers-host ARGS --root-dir R --state-dir S`, in the root dir.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(common::host_binary());
        cmd.current_dir(self.root.path())
            .args(args)
            .arg("--root-dir")
            .arg(self.root.path())
            .arg("--state-dir")
            .arg(self.state.path())
            .env_remove("SMITHERS_LOG")
            .env_remove("SMITHERS_API_KEY");
        cmd
    }

    fn host(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run smithers-host")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.host(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    /// Ids of every run in the state dir.
    fn run_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .json(&["runs", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["runId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// The database file and its WAL, in bytes.
    fn database_bytes(&self) -> u64 {
        ["smithers.db", "smithers.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(self.state.path().join(f)).map_or(0, |m| m.len()))
            .sum()
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A scripted run that emits about 1 MB of events.
fn big_run(project: &Project, id: &str) {
    let input = json!({"root": {"task": {"id": "t", "emit": "x".repeat(16_000), "repeat": 60}}});
    let out = project.host(&[
        "run",
        "fixture-scripted.wasm",
        "--run-id",
        id,
        "--input",
        &input.to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

fn parked_run(project: &Project, id: &str) {
    let out = project.host(&["run", "example-approval.wasm", "--run-id", id]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn gc_removes_ended_runs_keeps_a_parked_one_and_the_file_shrinks() {
    let project = Project::new(&["fixture-scripted", "example-approval"]);
    for id in ["big1", "big2", "big3"] {
        big_run(&project, id);
    }
    parked_run(&project, "parked");
    let failing = json!({"root": {"task": {"id": "t", "fail": "no"}}});
    let out = project.host(&[
        "run",
        "fixture-scripted.wasm",
        "--run-id",
        "failed",
        "--input",
        &failing.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let everything = ["big1", "big2", "big3", "failed", "parked"];
    assert_eq!(project.run_ids(), everything);

    // A dry run says what would go and removes nothing.
    let before = project.database_bytes();
    assert!(
        before > 2_000_000,
        "{before} bytes: not enough data to show"
    );
    let dry = project.json(&["gc", "--older-than", "0s", "--dry-run", "--json"]);
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["removed"]["runs"], 4, "{dry}");
    assert_eq!(dry["byStatus"], json!({"finished": 3, "failed": 1}));
    assert!(dry["removed"]["events"].as_u64().unwrap() > 100, "{dry}");
    assert_eq!(project.run_ids(), everything);
    assert!(project.database_bytes() >= before);

    // A status filter takes only those runs; a recent cutoff takes none.
    let failed = project.json(&["gc", "--older-than", "0s", "--status", "failed", "--json"]);
    assert_eq!(failed["byStatus"], json!({"failed": 1}), "{failed}");
    let none = project.json(&["gc", "--older-than", "1d", "--json"]);
    assert_eq!(none["removed"]["runs"], 0, "{none}");
    assert_eq!(project.run_ids(), ["big1", "big2", "big3", "parked"]);

    // The real pass: every ended run goes, the parked one stays whole, and
    // the file gives the space back.
    let before = project.database_bytes();
    let out = project.host(&["gc", "--older-than", "0s"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains("removed 3 runs (finished 3)"), "{printed}");
    assert!(printed.contains("big2"), "{printed}");
    let after = project.database_bytes();
    assert!(
        after < before / 4,
        "the database went from {before} to {after} bytes"
    );
    assert_eq!(project.run_ids(), ["parked"]);
    let gone = project.host(&["status", "big1"]);
    assert_eq!(gone.status.code(), Some(6), "{}", text(&gone));
    let parked = project.json(&["status", "parked", "--json"]);
    assert_eq!(parked["status"], "waiting-approval");
    let out = project.host(&["approve", "parked", "gate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A server on the project, with `extra` options; killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(project: &Project, extra: &[&str]) -> Self {
        let mut args = vec!["--port", "0", "--no-watch"];
        args.extend(extra);
        let mut child = project
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = common::wait_for_line(&mut child, "smithers-host listening on")
            .expect("the server listens");
        Self { child, url }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn start_run(&self, workflow: &str, id: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/runs", self.url))
            .json(&json!({"workflowPath": workflow, "runId": id, "input": {"name": "Ada"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    async fn status(&self, id: &str) -> (u16, Value) {
        let (code, body) = self.get(&format!("/v1/runs/{id}")).await;
        (code, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_retain_removes_ended_runs_on_schedule() {
    let project = Project::new(&["example-hello", "example-approval"]);
    let server = Server::start(&project, &["--retain", "1s", "--retain-interval", "200ms"]);
    server.start_run("example-approval.wasm", "parked").await;
    server.start_run("example-hello.wasm", "hello").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_finished = false;
    loop {
        let (code, body) = server.status("hello").await;
        match code {
            200 => seen_finished |= body["status"] == "finished",
            404 => break,
            _ => panic!("{code}: {body}"),
        }
        assert!(Instant::now() < deadline, "never removed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_finished, "removed before it was seen finished");
    // Parked for longer than --retain, and kept.
    let (code, parked) = server.status("parked").await;
    assert_eq!(code, 200, "{parked}");
    assert_eq!(parked["status"], "waiting-approval");
    let (code, metrics) = server.get("/metrics").await;
    assert_eq!(code, 200);
    let main_bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("smithers_db_size_bytes{file=\"main\"} "))
        .unwrap_or_else(|| panic!("no database size in:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(main_bytes > 0);
    assert!(metrics.contains("smithers_db_size_bytes{file=\"wal\"} "));
}

#[test]
fn a_local_command_on_a_served_state_dir_names_the_client_command() {
    let project = Project::new(&["example-approval"]);
    let server = Server::start(&project, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(server.start_run("example-approval.wasm", "p1"));
    let out = project.host(&["status", "p1"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stderr).to_string();
    let line = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("smithers-host client "))
        .unwrap_or_else(|| panic!("no client command in:\n{printed}"));
    assert_eq!(
        line,
        format!("smithers-host client --url {} status p1", server.url)
    );
    // The printed command works as printed.
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let out = Command::new(common::host_binary())
        .args(&args)
        .env_remove("SMITHERS_API_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("waiting-approval"), "{}", text(&out));
    // Every local verb says so, including those with no client verb.
    let out = project.host(&["approve", "p1", "gate"]);
    assert!(
        text(&out).contains(&format!("client --url {} approve p1 gate", server.url)),
        "{}",
        text(&out)
    );
    let out = project.host(&["gc", "--older-than", "30d"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(text(&out).contains("--retain"), "{}", text(&out));
}

fn binary(args: &[&str]) -> Output {
    Command::new(common::host_binary())
        .args(args)
        .env_remove("SMITHERS_API_KEY")
        .env_remove("SMITHERS_URL")
        .output()
        .unwrap()
}

#[test]
fn completions_help_and_the_client_say_only_what_applies() {
    let bash = binary(&["completions", "bash"]);
    assert!(bash.status.success(), "{}", text(&bash));
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(script.contains("complete -F _smithers__host"), "{script}");
    assert!(script.contains("gc") && script.contains("--older-than"));
    let zsh = binary(&["completions", "zsh"]);
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef smithers-host"));

    let help = text(&binary(&["run", "--help"]));
    assert!(help.contains("--root-dir"), "{help}");
    for server_only in ["--port", "--host", "--auth-token", "--no-watch", "--retain"] {
        assert!(
            !help.contains(server_only),
            "{server_only} in run --help:\n{help}"
        );
    }
    let help = text(&binary(&["serve", "--help"]));
    for option in ["--port", "--auth-token", "--no-watch", "--retain"] {
        assert!(
            help.contains(option),
            "{option} not in serve --help:\n{help}"
        );
    }

    // `client --host` is not a bind address taken in silence.
    let out = binary(&["client", "--host", "10.0.0.5", "runs"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--url http://10.0.0.5:7331"),
        "{}",
        text(&out)
    );
    // A server option before a command that takes none is refused.
    let out = binary(&["--port", "1", "run", "x.wasm"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--port does not apply to `smithers-host run`"));
}
