//! The confined bash tool driven the way users drive it: `examples/bash`
//! started over HTTP on the real server. Escape attempts are contained, the
//! result is the task's output and is streamed as an event, tool calls are
//! reported, the host keeps serving after each attempt, and
//! `--allow-network` is the only way to reach a listener.
//! (The exhaustive table of 70 attempts runs against the sandbox API in
//! `sandbox_escape.rs`.)

mod common;
mod http_support;

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use http_support::{Options, Server};
use serde_json::{Value, json};

const SECRET_VAR: &str = "SMITHERS_BASH_WORKFLOW_SECRET";
const SECRET: &str = "host-secret-7d1f";

fn server(allow_network: bool) -> Server {
    let mut extra_args = Vec::new();
    if allow_network {
        extra_args.push("--allow-network".to_string());
    }
    Server::with(Options {
        install: vec!["example-bash".into()],
        env: vec![(SECRET_VAR.into(), SECRET.into())],
        extra_args,
        ..Options::default()
    })
}

/// Runs `command` through examples/bash; returns the run's final status
/// body and the result the task streamed (its output), read over SSE.
async fn bash(server: &Server, command: &str) -> (Value, Option<Value>) {
    let run = server
        .start_run(
            "example-bash.wasm",
            json!({ "command": command, "timeoutMs": 10_000 }),
        )
        .await;
    let events = server.all_events(&run).await;
    let output = events
        .iter()
        .find(|e| e.kind() == "NodeOutput" && e.data["stream"] == "emit")
        .map(|e| serde_json::from_str(e.data["text"].as_str().unwrap()).unwrap());
    (server.status(&run).await, output)
}

#[tokio::test(flavor = "multi_thread")]
async fn escape_attempts_through_the_workflow_are_contained_and_the_host_keeps_serving() {
    let server = server(false);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside-secret").unwrap();
    let out = outside.path().display().to_string();
    let attempts = [
        format!("cat {out}/secret.txt"),
        "cat ../../../../etc/shadow; ls /root".to_string(),
        format!("ln -s {out} l; cat l/secret.txt"),
        "cat /proc/1/root/etc/hostname; ls /proc/1/cwd".to_string(),
        format!("env; printenv {SECRET_VAR}; cat /proc/*/environ"),
        "echo x > /etc/pwned; touch /usr/pwned".to_string(),
        "mount -t tmpfs none /mnt; unshare -r true; chroot / true".to_string(),
        "echo hi > /dev/tcp/1.1.1.1/80".to_string(),
    ];
    for command in &attempts {
        let (status, output) = bash(&server, command).await;
        assert_eq!(status["status"], "finished", "{command}: {status}");
        let output = output.unwrap_or_else(|| panic!("{command}: no output"));
        let text = output.to_string();
        assert!(
            !text.contains("outside-secret"),
            "{command} leaked a file: {text}"
        );
        assert!(
            !text.contains(SECRET),
            "{command} leaked the host env: {text}"
        );
        let stdout = output["stdout"].as_str().unwrap_or_default();
        assert!(
            !stdout.lines().any(|l| l.starts_with("root:")),
            "{command} read a password file: {text}"
        );
        assert!(!std::path::Path::new("/etc/pwned").exists());
        // The host keeps serving.
        let (code, health) = server.get("/health").await;
        assert_eq!(
            (code, &health["ok"]),
            (200, &json!(true)),
            "after {command}"
        );
    }
    assert!(!outside.path().join("l").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_result_is_the_output_and_is_streamed_with_tool_call_events() {
    let server = server(false);
    let run = server
        .start_run(
            "example-bash.wasm",
            json!({ "command": "echo out; echo err >&2; exit 3" }),
        )
        .await;
    let events = server.all_events(&run).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind()).collect();
    let started = kinds
        .iter()
        .position(|k| *k == "ToolCallStarted")
        .expect("ToolCallStarted");
    let finished = kinds
        .iter()
        .position(|k| *k == "ToolCallFinished")
        .expect("ToolCallFinished");
    assert!(started < finished);
    let call = &events[finished].data;
    assert_eq!(call["toolName"], "bash");
    assert_eq!(call["exitCode"], 3);
    assert_eq!(call["truncated"], false);
    assert!(call["durationMs"].is_u64());
    let emitted = events
        .iter()
        .find(|e| e.kind() == "NodeOutput" && e.data["stream"] == "emit")
        .expect("the result is streamed");
    let result: Value = serde_json::from_str(emitted.data["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        result,
        json!({ "exitCode": 3, "stdout": "out\n", "stderr": "err\n", "truncated": false })
    );
    assert_eq!(events.last().unwrap().kind(), "RunFinished");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_allow_network_lets_the_tool_reach_a_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let command = format!("echo hello > /dev/tcp/127.0.0.1/{port} && echo CONNECTED");

    let offline = server(false);
    let (_, output) = bash(&offline, &command).await;
    let output = output.unwrap();
    assert_ne!(output["exitCode"], 0, "{output}");
    assert!(!output["stdout"].as_str().unwrap().contains("CONNECTED"));
    assert!(listener.accept().is_err(), "nothing reached the listener");

    let online = server(true);
    let (_, output) = bash(&online, &command).await;
    let output = output.unwrap();
    assert_eq!(output["exitCode"], 0, "{output}");
    assert!(output["stdout"].as_str().unwrap().contains("CONNECTED"));
    let (mut stream, _) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    stream.set_nonblocking(false).unwrap();
    let mut received = String::new();
    stream.read_to_string(&mut received).unwrap();
    assert_eq!(received, "hello\n");
}
