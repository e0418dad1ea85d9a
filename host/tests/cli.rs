//! The `smithers-host` binary's local commands, run as processes on every
//! example: exit codes, printed continuation commands, NDJSON output.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

struct Project {
    root: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Project {
    fn new(examples: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        for example in examples {
            std::fs::copy(
                common::guest(&format!("example-{example}")),
                root.path().join(format!("{example}.wasm")),
            )
            .unwrap();
        }
        Self {
            root,
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn host(&self, args: &[&str]) -> Output {
        Command::new(common::host_binary())
            .current_dir(self.root.path())
            .args(args)
            .arg("--root-dir")
            .arg(self.root.path())
            .arg("--state-dir")
            .arg(self.state.path())
            .env_remove("SMITHERS_LOG")
            .output()
            .expect("run smithers-host")
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ndjson(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn node_finished<'a>(events: &'a [Value], node: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == "NodeFinished" && e["nodeId"] == node)
        .unwrap_or_else(|| panic!("no NodeFinished of {node}"))
}

/// No control character but newlines: nothing a workflow chose can drive
/// the terminal.
fn assert_terminal_safe(text: &str) {
    if let Some(c) = text.chars().find(|c| c.is_control() && *c != '\n') {
        panic!("control character {c:?} in:\n{text}");
    }
}

#[test]
fn hello_greets_its_input_and_exits_zero() {
    let project = Project::new(&["hello"]);
    let out = project.host(&[
        "run",
        "hello.wasm",
        "--input",
        r#"{"name":"Ada"}"#,
        "--json",
        "--run-id",
        "h1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let events = ndjson(&out);
    assert_eq!(events.first().unwrap()["type"], "RunStarted");
    assert_eq!(events.last().unwrap()["type"], "RunFinished");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free seqs from 0"
    );
    // The output rides on NodeFinished, every other field as stored.
    let finished = node_finished(&events, "greet");
    assert_eq!(finished["output"], json!({"greeting": "Hello, Ada!"}));
    for field in [
        "runId",
        "nodeId",
        "iteration",
        "attempt",
        "seq",
        "timestampMs",
    ] {
        assert!(finished.get(field).is_some(), "{field} kept: {finished}");
    }
    assert!(
        events
            .iter()
            .filter(|e| e["type"] != "NodeFinished")
            .all(|e| e.get("output").is_none()),
        "only NodeFinished gains an output"
    );
    let status = project.host(&["status", "h1", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["status"], "finished");
    assert_eq!(status["summary"]["finished"], 1);
    assert_eq!(
        status["outputs"],
        json!([{"nodeId": "greet", "iteration": 0, "state": "finished", "label": null,
                "output": {"greeting": "Hello, Ada!"}}])
    );
}

#[test]
fn run_shows_each_output_as_it_finishes_and_the_result_in_plain_lines_off_a_terminal() {
    let project = Project::new(&["hello"]);
    let out = project.host(&[
        "run",
        "hello.wasm",
        "--input",
        r#"{"name":"Ada"}"#,
        "--run-id",
        "p1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_terminal_safe(&stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"run p1 started (hello)"), "{stdout}");
    // One line per node with its state and duration, the output under it.
    let at = lines
        .iter()
        .position(|l| l.starts_with("finished") && l.contains(" greet ") && l.ends_with(" ms"))
        .unwrap_or_else(|| panic!("no line for greet:\n{stdout}"));
    assert_eq!(
        lines[at + 1..at + 4],
        ["  {", r#"    "greeting": "Hello, Ada!""#, "  }"],
        "{stdout}"
    );
    // Then the run's end and its result: every output, one line each.
    let end = lines
        .iter()
        .position(|l| l.starts_with("run finished in "))
        .unwrap_or_else(|| panic!("no end line:\n{stdout}"));
    assert_eq!(
        lines[end + 1..],
        [
            "result",
            &format!("  {:<28} {}", "greet", r#"{"greeting":"Hello, Ada!"}"#)
        ],
        "{stdout}"
    );

    let out = project.host(&["status", "p1"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.ends_with(&format!(
            "outputs\n  {:<28} {}\n",
            "greet", r#"{"greeting":"Hello, Ada!"}"#
        )),
        "{stdout}"
    );
}

#[test]
fn text_a_workflow_chose_never_drives_the_terminal() {
    let project = Project::new(&[]);
    std::fs::copy(
        common::guest("fixture-scripted"),
        project.root.path().join("scripted.wasm"),
    )
    .unwrap();
    let hostile = "\u{1b}[2J\u{9b}31m\u{7f}\u{7}";
    let input = json!({"root": {"sequence": [
        {"task": {"id": format!("x{hostile}"), "output": {"s": hostile}}},
        {"task": {"id": "talk", "log": format!("red{hostile}"), "stdout": hostile}},
    ]}})
    .to_string();
    let out = project.host(&["run", "scripted.wasm", "--input", &input, "--run-id", "t"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_terminal_safe(&stdout);
    assert!(
        stdout.contains("\\u{1b}[2J"),
        "escaped, not dropped:\n{stdout}"
    );
    for args in [&["status", "t"][..], &["status", "t", "--json"][..]] {
        let out = project.host(args);
        assert_terminal_safe(&String::from_utf8_lossy(&out.stdout));
    }
    // JSON keeps the exact value: escapes are JSON's own.
    let out = project.host(&["status", "t", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["outputs"][0]["output"]["s"], hostile);
}

#[test]
fn approval_parks_with_exit_3_and_the_printed_command_finishes_it() {
    let project = Project::new(&["approval"]);
    let out = project.host(&["run", "approval.wasm", "--run-id", "ap"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let printed = text(&out);
    let approve_line = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("smithers-host approve ap gate"))
        .unwrap_or_else(|| panic!("no approve command in:\n{printed}"))
        .to_string();
    // Run exactly the printed command (minus the program name).
    let args: Vec<String> = approve_line
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect();
    let out = Command::new(common::host_binary())
        .args(&args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let events = ndjson(&out);
    assert_eq!(events.first().unwrap()["type"], "ApprovalGranted");
    assert_eq!(events.last().unwrap()["type"], "RunFinished");
    let runs = project.host(&["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "finished");
}

#[test]
fn denying_the_approval_fails_the_run_with_exit_1() {
    let project = Project::new(&["approval"]);
    assert_eq!(
        project
            .host(&["run", "approval.wasm", "--run-id", "d"])
            .status
            .code(),
        Some(3)
    );
    let out = project.host(&["deny", "d", "gate", "--note", "not today"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not today"), "{}", text(&out));
}

#[test]
fn signal_parks_with_exit_4_and_signal_finishes_it() {
    let project = Project::new(&["signal"]);
    let out = project.host(&["run", "signal.wasm", "--run-id", "s"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("smithers-host signal s go"),
        "{}",
        text(&out)
    );
    let out = project.host(&["signal", "s", "go", "--data", r#"{"answer":42}"#]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn parallel_loop_fibo_and_files_examples_finish() {
    let project = Project::new(&["parallel", "loop", "fibo", "files"]);
    for (workflow, input) in [
        ("parallel.wasm", r#"{"sleepMs":50}"#),
        ("loop.wasm", "{}"),
        ("fibo.wasm", r#"{"n":20}"#),
        ("files.wasm", r#"{"path":"out/data.txt"}"#),
    ] {
        let out = project.host(&["run", workflow, "--input", input, "--json"]);
        assert!(out.status.success(), "{workflow}: {}", text(&out));
        assert_eq!(
            ndjson(&out).last().unwrap()["type"],
            "RunFinished",
            "{workflow}"
        );
    }
    assert!(
        project.root.path().join("out/data.txt").is_file(),
        "files wrote under the root"
    );
}

#[test]
fn bad_input_and_unknown_runs_are_refused_with_clear_messages() {
    let project = Project::new(&["hello"]);
    let out = project.host(&["run", "hello.wasm", "--input", "{not json"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(text(&out).contains("not valid JSON"), "{}", text(&out));
    let out = project.host(&["run", "missing.wasm"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(text(&out).contains("not found"), "{}", text(&out));
    let out = project.host(&["approve", "nope", "gate"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(text(&out).contains("not found"), "{}", text(&out));
}

/// The host on the repository's examples dir as root, from there; builds
/// share the test guests' target dir.
fn run_example(state: &Path, args: &[&str]) -> Command {
    let examples = common::workspace_root().join("examples");
    let mut command = Command::new(common::host_binary());
    command
        .args(args)
        .current_dir(&examples)
        .arg("--root-dir")
        .arg(&examples)
        .arg("--state-dir")
        .arg(state)
        .env(
            "SMITHERS_BUILD_DIR",
            common::guests_dir().parent().unwrap().parent().unwrap(),
        );
    command
}

#[test]
fn a_crate_of_a_workspace_outside_the_root_dir_names_the_flag_that_lets_builds_read_it() {
    let state = tempfile::tempdir().unwrap();
    let out = run_example(state.path(), &["run", "hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let expected = format!("--build-source {}", common::workspace_root().display());
    assert!(text(&out).contains(&expected), "{}", text(&out));
}

#[test]
fn a_guest_crate_directory_is_built_and_run() {
    // The root is the repository's examples dir; builds share the test guests' target dir
    // and may read the workspace the examples belong to.
    let examples = common::workspace_root().join("examples");
    let state = tempfile::tempdir().unwrap();
    let out = run_example(
        state.path(),
        &["run", "hello", "--input", r#"{"name":"crate"}"#, "--json"],
    )
    .arg("--build-source")
    .arg(common::workspace_root())
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ndjson(&out).last().unwrap()["type"], "RunFinished");
    assert!(Path::new(&examples).join("hello/Cargo.toml").is_file());
}
