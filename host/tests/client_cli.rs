//! `smithers-host client …` run as a process against the real host.

mod client_support;
mod common;

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

use client_support::{Host, events_until, waiting_approval};

/// Runs `smithers-host client --url <host> ARGS` (bounded); `env` adds variables.
async fn cli(host: &Host, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(common::host_binary());
    cmd.arg("client");
    if !env.iter().any(|(k, _)| *k == "SMITHERS_URL") {
        cmd.arg("--url").arg(&host.url);
    }
    cmd.args(args)
        .env_remove("SMITHERS_URL")
        .env_remove("SMITHERS_API_KEY")
        .env("USER", "tester")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finishes within 60 s")
        .expect("run the CLI")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_watch_status_runs_and_frames() {
    let host = Host::start();
    let hello = host.install("example-hello");

    let out = cli(
        &host,
        &[
            "start",
            &hello,
            "--input",
            r#"{"name":"Ada"}"#,
            "--run-id",
            "h1",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "h1\n");

    // Not a TTY: plain lines, one per node, and the run's outcome as exit code.
    let out = cli(&host, &["watch", "h1"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"run h1 started (hello)"), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("finished") && l.contains("greet") && l.ends_with(" ms")),
        "{text}"
    );
    // Each output under its node's line, whole off a terminal; the run's
    // outputs after its end.
    let greet = lines
        .iter()
        .position(|l| l.starts_with("finished"))
        .unwrap();
    assert_eq!(
        lines[greet + 1..greet + 4],
        ["  {", r#"    "greeting": "Hello, Ada!""#, "  }"],
        "{text}"
    );
    let end = lines
        .iter()
        .position(|l| l.starts_with("run finished in "))
        .unwrap_or_else(|| panic!("no end line: {text}"));
    assert_eq!(
        lines[end + 1..],
        [
            "result",
            &format!("  {:<28} {}", "greet", r#"{"greeting":"Hello, Ada!"}"#)
        ],
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no terminal escapes off a TTY: {text:?}"
    );

    let out = cli(&host, &["watch", "h1", "--json"], &[]).await;
    let events: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["type"], "RunStarted");
    assert_eq!(events.last().unwrap()["type"], "RunFinished");
    let finished = events.iter().find(|e| e["type"] == "NodeFinished").unwrap();
    assert_eq!(finished["output"], json!({"greeting": "Hello, Ada!"}));
    assert_eq!(finished["nodeId"], "greet");

    let out = cli(&host, &["status", "h1"], &[]).await;
    assert!(
        stdout(&out).contains("status    finished (succeeded)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).ends_with(&format!(
            "outputs\n  {:<28} {}\n",
            "greet", r#"{"greeting":"Hello, Ada!"}"#
        )),
        "{}",
        stdout(&out)
    );
    let out = cli(&host, &["--json", "status", "h1"], &[]).await;
    assert_eq!(json(&out)["status"], "finished");
    assert_eq!(
        json(&out)["outputs"][0]["output"],
        json!({"greeting": "Hello, Ada!"})
    );

    // SMITHERS_URL instead of --url; `start --json`.
    let url = host.url.clone();
    let out = cli(
        &host,
        &["start", &hello, "--json"],
        &[("SMITHERS_URL", &url)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let second = json(&out)["runId"].as_str().unwrap().to_string();
    let out = cli(&host, &["watch", &second], &[("SMITHERS_URL", &url)]).await;
    assert_eq!(out.status.code(), Some(0));

    let out = cli(&host, &["runs", "--json"], &[]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 2);
    let out = cli(&host, &["runs", "--status", "finished"], &[]).await;
    let text = stdout(&out);
    assert!(text.starts_with("RUN"), "{text}");
    assert!(text.contains("h1") && text.contains(&second), "{text}");
    let out = cli(&host, &["runs", "--status", "failed"], &[]).await;
    assert_eq!(stdout(&out), "no runs\n");

    let out = cli(&host, &["frames", "h1", "--json"], &[]).await;
    assert!(json(&out)[0]["frameNo"].as_u64().unwrap() >= 1);
    let out = cli(&host, &["frames", "h1", "--limit", "1"], &[]).await;
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_approve_deny_and_cancel() {
    let host = Host::start();
    let approval = host.install("example-approval");
    let client = host.client();

    let out = cli(&host, &["approvals"], &[]).await;
    assert_eq!(stdout(&out), "no pending approvals\n");

    for run in ["a1", "a2", "a3"] {
        let out = cli(&host, &["start", &approval, "--run-id", run], &[]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        events_until(&mut client.stream_events(run), waiting_approval).await;
    }
    let out = cli(&host, &["approvals"], &[]).await;
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].starts_with("RUN") && rows[0].contains("WAITING"),
        "{text}"
    );
    // Oldest first.
    let order: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(order, ["a1", "a2", "a3"], "{text}");
    let out = cli(&host, &["approvals", "--json"], &[]).await;
    assert_eq!(json(&out)[0]["nodeId"], "gate");

    let out = cli(&host, &["approve", "a1", "gate", "--note", "ship it"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "approved gate of run a1\n");
    let out = cli(&host, &["watch", "a1"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("approved"), "{}", stdout(&out));

    let out = cli(&host, &["deny", "a2", "gate", "--note", "no"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&host, &["watch", "a2"], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed run exits 1: {}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("run failed"), "{}", stdout(&out));

    let out = cli(&host, &["cancel", "a3"], &[]).await;
    assert_eq!(stdout(&out), "cancelled run a3\n");
    let out = cli(&host, &["watch", "a3"], &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stdout(&out));

    // Refusals: the envelope on stderr, exit 6.
    let out = cli(&host, &["approve", "a1", "gate"], &[]).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("NODE_NOT_WAITING"),
        "{}",
        stderr(&out)
    );
    let out = cli(&host, &["status", "nope"], &[]).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("NOT_FOUND: Run not found (HTTP 404)"),
        "{}",
        stderr(&out)
    );
    let out = cli(&host, &["cancel", "a1"], &[]).await;
    assert!(stderr(&out).contains("RUN_NOT_ACTIVE"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_comes_from_the_environment_and_an_absent_host_exits_70() {
    let host = Host::with_token(Some("sekret"));
    let out = cli(&host, &["runs"], &[]).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("UNAUTHORIZED"), "{}", stderr(&out));
    let out = cli(&host, &["runs"], &[("SMITHERS_API_KEY", "sekret")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "no runs\n");

    let url = host.url.clone();
    drop(host);
    let mut cmd = tokio::process::Command::new(common::host_binary());
    let out = cmd
        .args(["client", "--url", &url, "status", "x"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(70));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_node_show_what_a_run_produced() {
    let host = Host::start();
    let scripted = host.install("fixture-scripted");
    let input = json!({"root": {"sequence": [
        {"task": {"id": "flaky", "failAttempts": 1, "retries": 2, "backoff": "fixed",
                  "initialDelayMs": 10, "output": {"ok": true}}},
        {"loop": {"id": "refine", "max": 3, "children": [{"task": {"id": "draft"}}]}},
    ]}})
    .to_string();
    let out = cli(
        &host,
        &[
            "start", &scripted, "--input", &input, "--run-id", "o1", "--watch",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Every output, pretty, under its node.
    let out = cli(&host, &["outputs", "o1"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("flaky\n  {\n    \"ok\": true\n  }\ndraft\n"),
        "{text}"
    );
    assert!(text.contains("\ndraft[2]\n"), "{text}");
    // A page at a time, with the command that continues.
    let out = cli(&host, &["outputs", "o1", "--limit", "1"], &[]).await;
    let text = stdout(&out);
    let more = text
        .lines()
        .find_map(|l| l.strip_prefix("more: smithers-host client outputs o1 --cursor "))
        .unwrap_or_else(|| panic!("no continuation: {text}"));
    let out = cli(
        &host,
        &["--json", "outputs", "o1", "--limit", "1", "--cursor", more],
        &[],
    )
    .await;
    assert_eq!(json(&out)["outputs"][0]["nodeId"], "draft");

    // A node: its attempts, then its output.
    let out = cli(&host, &["node", "o1", "flaky"], &[]).await;
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "flaky  finished  2 attempts", "{text}");
    assert!(lines[1].starts_with("  attempt 1   failed"), "{text}");
    assert!(
        lines[1].ends_with("TASK_FAILED: planned failure on attempt 1"),
        "{text}"
    );
    assert!(lines[2].starts_with("  attempt 2   finished"), "{text}");
    assert_eq!(
        lines[3..],
        ["  output", "    {", "      \"ok\": true", "    }"],
        "{text}"
    );
    let out = cli(
        &host,
        &["--json", "node", "o1", "draft", "--iteration", "2"],
        &[],
    )
    .await;
    assert_eq!(json(&out)["iterations"][0]["output"]["iteration"], 2);

    // Refusals keep the envelope's code, exit 6.
    let out = cli(&host, &["node", "o1", "nope"], &[]).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("NODE_NOT_FOUND"), "{}", stderr(&out));
    let out = cli(&host, &["outputs", "ghost"], &[]).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("RUN_NOT_FOUND"), "{}", stderr(&out));
}
