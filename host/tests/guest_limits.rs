//! A guest cannot run or grow without bound: every task and every render
//! has a deadline, and what a guest emits, logs, prints and returns is
//! capped per call and per run. Each test drives the real binary with the
//! limit scaled down by its flag, attacks it with the `scripted` fixture and
//! checks the host side: the run's status and error code, the rows and
//! bytes in the SQLite file, the host's own log, and that the driver is
//! gone (`activeRuns` back to 0).

mod common;
mod http_support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use http_support::{Options, Server, script, task};

const SCRIPTED: &str = "fixture-scripted.wasm";

fn server(flags: &[&str]) -> Server {
    Server::with(Options {
        install: vec!["fixture-scripted".into()],
        extra_args: flags.iter().map(|f| f.to_string()).collect(),
        ..Options::default()
    })
}

/// The server's database, opened beside it (WAL lets it read while the
/// server writes).
fn db(server: &Server) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(server.state.path().join("smithers.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// Every stored event of a run, in seq order.
fn events(server: &Server, run: &str) -> Vec<Value> {
    let conn = db(server);
    let mut stmt = conn
        .prepare("SELECT payload_json FROM events WHERE run_id = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([run], |row| row.get::<_, String>(0))
        .unwrap()
        .map(|json| serde_json::from_str(&json.unwrap()).unwrap())
        .collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Events and their bytes as stored for a run.
fn stored(server: &Server, run: &str) -> (u64, u64) {
    db(server)
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(payload_json AS BLOB))), 0)
               FROM events WHERE run_id = ?1",
            [run],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
        )
        .unwrap()
}

/// Size of the database file and its WAL.
fn database_bytes(server: &Server) -> u64 {
    ["smithers.db", "smithers.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(server.state.path().join(name)).ok())
        .map(|m| m.len())
        .sum()
}

/// The error of the run's last `RunFailed` event.
fn run_error(server: &Server, run: &str) -> Value {
    let events = events(server, run);
    let failed = of_type(&events, "RunFailed");
    failed
        .last()
        .unwrap_or_else(|| panic!("no RunFailed in {events:?}"))["error"]
        .clone()
}

/// Waits (bounded) until no run has a driver, as `/health` reports it.
async fn wait_no_active_runs(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, health) = server.get("/health").await;
        assert_eq!(status, 200);
        if health["activeRuns"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "drivers still active: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the run has stored `count` events of `kind`.
async fn wait_events(server: &Server, run: &str, kind: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = events(server, run);
        if of_type(&events, kind).len() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never stored {count} {kind}: {events:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node_output(server: &Server, run: &str, node: &str) -> Option<String> {
    db(server)
        .query_row(
            "SELECT output_json FROM nodes WHERE run_id = ?1 AND node_id = ?2",
            [run, node],
            |row| row.get(0),
        )
        .unwrap()
}

fn attempts(server: &Server, run: &str, node: &str) -> u64 {
    db(server)
        .query_row(
            "SELECT COUNT(*) FROM attempts WHERE run_id = ?1 AND node_id = ?2",
            [run, node],
            |row| row.get::<_, i64>(0),
        )
        .unwrap() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_timeout_ends_at_the_default_deadline_and_a_longer_one_is_clamped() {
    let server = server(&["--task-timeout", "500ms", "--max-task-timeout", "1s"]);
    let run = server
        .start_run(
            SCRIPTED,
            script(json!({"parallel": {"children": [
                task("unbounded", json!({"spin": true, "continueOnFail": true})),
                task("greedy", json!({"spin": true, "timeoutMs": 3_600_000, "continueOnFail": true})),
            ]}})),
        )
        .await;
    server.wait_status(&run, "finished").await;
    let events = events(&server, &run);
    let failed = of_type(&events, "NodeFailed");
    let error_of = |node: &str| {
        failed
            .iter()
            .find(|e| e["nodeId"] == node)
            .unwrap_or_else(|| panic!("{node} did not fail: {events:?}"))["error"]
            .clone()
    };
    assert_eq!(error_of("unbounded")["code"], "TASK_TIMEOUT");
    assert!(
        error_of("unbounded")["message"]
            .as_str()
            .unwrap()
            .contains("within 500 ms")
    );
    assert_eq!(error_of("greedy")["code"], "TASK_TIMEOUT");
    assert!(
        error_of("greedy")["message"]
            .as_str()
            .unwrap()
            .contains("within 1000 ms")
    );
    wait_no_active_runs(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_that_loops_fails_the_run_with_render_timeout_also_after_resume() {
    let server = server(&["--render-timeout", "1s"]);
    let run = server
        .start_run(
            SCRIPTED,
            script(json!({"sequence": [
                task("first", json!({"output": {"kept": true}})),
                {"if": {"node": "first", "path": "/kept", "then": {"renderSpin": true}}},
            ]})),
        )
        .await;
    server.wait_status(&run, "failed").await;
    let error = run_error(&server, &run);
    assert_eq!(error["code"], "RENDER_TIMEOUT", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("within 1000 ms")
    );
    wait_no_active_runs(&server).await;
    // What was committed before the render looped is kept.
    assert_eq!(
        node_output(&server, &run, "first").as_deref(),
        Some(r#"{"kept":true}"#)
    );

    // Resuming renders again, and fails again the same way, freeing the driver.
    let (status, body) = server
        .post(&format!("/v1/runs/{run}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_events(&server, &run, "RunFailed", 2).await;
    assert_eq!(run_error(&server, &run)["code"], "RENDER_TIMEOUT");
    assert_eq!(server.status(&run).await["status"], "failed");
    wait_no_active_runs(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_recovered_after_a_crash_gets_a_fresh_deadline_and_the_run_still_ends() {
    let mut server = server(&["--task-timeout", "2s"]);
    let run = server
        .start_run(SCRIPTED, script(task("spinner", json!({"spin": true}))))
        .await;
    wait_events(&server, &run, "NodeStarted", 1).await;
    server.kill9();
    server.spawn();
    server.wait_status(&run, "failed").await;
    let error = run_error(&server, &run);
    assert_eq!(error["code"], "TASK_TIMEOUT", "{error}");
    // The attempt the crash interrupted, then the recovered one.
    assert_eq!(attempts(&server, &run, "spinner"), 2);
    wait_no_active_runs(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_over_its_cap_fails_the_task_without_retry_and_is_not_stored() {
    let server = server(&["--max-emit-bytes", "4096"]);
    let big = "e".repeat(10_000);
    let run = server
        .start_run(
            SCRIPTED,
            script(task(
                "chatty",
                json!({"emit": {"blob": big}, "retries": 3, "initialDelayMs": 10}),
            )),
        )
        .await;
    server.wait_status(&run, "failed").await;
    let error = run_error(&server, &run);
    assert_eq!(error["code"], "OUTPUT_LIMIT_EXCEEDED", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("4096"),
        "{error}"
    );
    assert_eq!(attempts(&server, &run, "chatty"), 1);
    let events = events(&server, &run);
    assert!(of_type(&events, "NodeOutput").is_empty(), "{events:?}");
    let (_, bytes) = stored(&server, &run);
    assert!(bytes < 8_000, "the run stored {bytes} bytes of events");
    wait_no_active_runs(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_captured_output_over_their_caps_are_cut_and_the_host_log_stays_small() {
    let server = server(&["--max-log-bytes", "1024", "--max-stdio-bytes", "2048"]);
    let line = "l".repeat(100_000);
    let run = server
        .start_run(
            SCRIPTED,
            script(task(
                "noisy",
                json!({"log": line, "stdout": line, "repeat": 5}),
            )),
        )
        .await;
    server.wait_status(&run, "finished").await;
    let events = events(&server, &run);
    let outputs = of_type(&events, "NodeOutput");
    let texts = |stream: &str| -> Vec<usize> {
        outputs
            .iter()
            .filter(|e| e["stream"] == stream)
            .map(|e| e["text"].as_str().unwrap().len())
            .collect()
    };
    let logs = texts("log");
    assert_eq!(logs.len(), 5, "{logs:?}");
    assert!(logs.iter().all(|&n| n <= 1024 + 64), "{logs:?}");
    let stdout = texts("stdout");
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    assert!(stdout[0] <= 2048 + 64, "{stdout:?}");
    // The host logs each guest log line too: cut as well.
    let host_log = std::fs::metadata(server.log_path()).unwrap().len();
    assert!(
        host_log < 32 * 1024,
        "the host's log grew to {host_log} bytes"
    );
    wait_no_active_runs(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_outputs_and_errors_over_their_caps_are_refused_or_cut() {
    let server = server(&["--max-task-output-bytes", "4096"]);
    let run = server
        .start_run(
            SCRIPTED,
            script(json!({"sequence": [
                task("wordy", json!({"fail": "m".repeat(100_000), "notRetryable": true, "continueOnFail": true})),
                task("bloated", json!({"output": "o".repeat(10_000), "retries": 3, "initialDelayMs": 10})),
            ]})),
        )
        .await;
    server.wait_status(&run, "failed").await;
    let error = run_error(&server, &run);
    assert_eq!(error["code"], "OUTPUT_LIMIT_EXCEEDED", "{error}");
    assert_eq!(error["nodeId"], "bloated");
    // Not retried, and nothing of the output stored.
    assert_eq!(attempts(&server, &run, "bloated"), 1);
    assert_eq!(node_output(&server, &run, "bloated"), None);
    // A guest's error message is cut before it is stored.
    let events = events(&server, &run);
    let wordy = of_type(&events, "NodeFailed")
        .into_iter()
        .find(|e| e["nodeId"] == "wordy")
        .expect("wordy failed")["error"]["message"]
        .as_str()
        .unwrap()
        .len();
    assert!(wordy <= 4096 + 64, "error message of {wordy} bytes stored");
    let (_, bytes) = stored(&server, &run);
    assert!(bytes < 32_000, "the run stored {bytes} bytes of events");
    wait_no_active_runs(&server).await;
}

/// 256 KiB allowed; a stored byte count this far over it means the limit
/// did not hold (the slack covers the bookkeeping of the final step).
const RUN_LIMIT: u64 = 256 * 1024;
const SLACK: u64 = 32 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_flooding_emits_stops_at_its_stored_bytes_limit_and_keeps_what_it_committed() {
    let limit = RUN_LIMIT.to_string();
    let server = server(&["--max-run-stored-bytes", &limit]);
    let run = server
        .start_run(
            SCRIPTED,
            script(json!({"sequence": [
                task("before", json!({"output": {"kept": true}})),
                // 20 MB of emits, 1000 bytes each.
                task("flood", json!({"emit": "f".repeat(1000), "repeat": 20_000})),
                task("after", json!({})),
            ]})),
        )
        .await;
    server.wait_status(&run, "failed").await;
    let error = run_error(&server, &run);
    assert_eq!(error["code"], "OUTPUT_LIMIT_EXCEEDED", "{error}");
    let events = events(&server, &run);
    let flood = of_type(&events, "NodeFailed");
    assert_eq!(flood.len(), 1, "{flood:?}");
    assert_eq!(flood[0]["nodeId"], "flood");
    assert_eq!(flood[0]["error"]["code"], "OUTPUT_LIMIT_EXCEEDED");
    assert!(
        of_type(&events, "NodeStarted")
            .iter()
            .all(|e| e["nodeId"] != "after")
    );
    assert_eq!(
        node_output(&server, &run, "before").as_deref(),
        Some(r#"{"kept":true}"#)
    );
    let (count, bytes) = stored(&server, &run);
    assert!(
        bytes <= RUN_LIMIT + SLACK,
        "{count} events of {bytes} bytes stored"
    );
    assert!(count < 400, "{count} events stored");
    let file = database_bytes(&server);
    assert!(file < 16 * 1024 * 1024, "database of {file} bytes");
    wait_no_active_runs(&server).await;

    // A resumed run counts what it already stored: it gets no fresh budget,
    // and fails again once the little room left is used.
    for resumes in 2..=3 {
        let (status, body) = server
            .post(&format!("/v1/runs/{run}/resume"), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
        wait_events(&server, &run, "RunFailed", resumes).await;
        assert_eq!(run_error(&server, &run)["code"], "OUTPUT_LIMIT_EXCEEDED");
        wait_no_active_runs(&server).await;
    }
    let (count, bytes) = stored(&server, &run);
    assert!(
        bytes <= RUN_LIMIT + SLACK,
        "after resumes: {count} events of {bytes} bytes stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_quiet_tasks_stops_at_the_stored_bytes_limit() {
    let limit = (64 * 1024).to_string();
    let server = server(&["--max-run-stored-bytes", &limit]);
    let run = server
        .start_run(
            SCRIPTED,
            script(json!({"loop": {"id": "forever", "max": 2000,
                                   "children": [task("tick", json!({"output": 1}))]}})),
        )
        .await;
    server.wait_status(&run, "failed").await;
    let error = run_error(&server, &run);
    assert_eq!(error["code"], "OUTPUT_LIMIT_EXCEEDED", "{error}");
    assert_eq!(error["details"]["limitBytes"], 64 * 1024);
    let (count, bytes) = stored(&server, &run);
    assert!(
        bytes <= 64 * 1024 + SLACK,
        "{count} events of {bytes} bytes stored"
    );
    wait_no_active_runs(&server).await;
}
