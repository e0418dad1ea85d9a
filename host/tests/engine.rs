//! The durable engine against real components (the scripted fixture), in
//! process: retries, failures, continue-on-fail, timeouts, cancel, loops,
//! parallel limits, approvals, signals and broken components.

mod common;

use std::time::Duration;

use common::{TestHost, of_type, types};
use serde_json::{Value, json};
use smithers_host::engine::{ApprovalDecision, EngineError};
use smithers_host::model::RunStatus;

fn task(id: &str, extra: Value) -> Value {
    let mut spec = json!({ "id": id });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({ "task": spec })
}

fn seq(children: Vec<Value>) -> Value {
    json!({ "sequence": children })
}

fn script(root: Value) -> Value {
    json!({ "root": root })
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_then_success_records_every_attempt() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let run = host
        .start(&wf, script(task("flaky", json!({ "failAttempts": 2, "retries": 3, "backoff": "fixed", "initialDelayMs": 10 }))))
        .await;
    let row = host.settle(&run).await;
    assert_eq!(row.status, RunStatus::Finished);
    let events = host.events(&run).await;
    assert_eq!(of_type(&events, "NodeFailed").len(), 2);
    let retrying: Vec<u64> = of_type(&events, "NodeRetrying")
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(retrying, [2, 3]);
    let finished = of_type(&events, "NodeFinished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["attempt"], 3);
    assert_eq!(
        of_type(&events, "NodeFailed")[0]["error"]["message"],
        "planned failure on attempt 1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_retries_fail_the_run_with_the_task_message() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let run = host
        .start(
            &wf,
            script(seq(vec![
                task(
                    "doomed",
                    json!({ "fail": "disk on fire", "retries": 1, "initialDelayMs": 10 }),
                ),
                task("never", json!({})),
            ])),
        )
        .await;
    let row = host.settle(&run).await;
    assert_eq!(row.status, RunStatus::Failed);
    let events = host.events(&run).await;
    assert_eq!(of_type(&events, "NodeFailed").len(), 2);
    let failed = of_type(&events, "RunFailed");
    assert_eq!(failed.len(), 1);
    let message = failed[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk on fire"), "{message}");
    assert!(message.contains("doomed"), "{message}");
    assert!(
        of_type(&events, "NodeStarted")
            .iter()
            .all(|e| e["nodeId"] != "never")
    );
    assert_eq!(types(&events).last(), Some(&"RunFailed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn not_retryable_errors_skip_remaining_retries() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let run = host
        .start(
            &wf,
            script(task(
                "a",
                json!({ "fail": "bad input", "notRetryable": true, "retries": 5 }),
            )),
        )
        .await;
    assert_eq!(host.settle(&run).await.status, RunStatus::Failed);
    assert_eq!(of_type(&host.events(&run).await, "NodeStarted").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn continue_on_fail_finishes_the_run_and_reports_failed_children() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let run = host
        .start(
            &wf,
            script(seq(vec![
                task("optional", json!({ "fail": "meh", "continueOnFail": true })),
                task("after", json!({})),
            ])),
        )
        .await;
    assert_eq!(host.settle(&run).await.status, RunStatus::Finished);
    let events = host.events(&run).await;
    let finished = of_type(&events, "RunFinished");
    assert_eq!(finished[0]["failedChildren"], 1);
    assert_eq!(finished[0]["failedChildKeys"], json!(["optional::0"]));
    assert!(host.output(&run, "after", 0).await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_loop_times_out_and_fails_only_its_own_task() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let run = host
        .start(
            &wf,
            script(seq(vec![
                task(
                    "spinner",
                    json!({ "spin": true, "timeoutMs": 300, "continueOnFail": true }),
                ),
                task("after", json!({})),
            ])),
        )
        .await;
    assert_eq!(host.settle(&run).await.status, RunStatus::Finished);
    let events = host.events(&run).await;
    let failed = of_type(&events, "NodeFailed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"]["code"], "TASK_TIMEOUT");
    assert!(host.output(&run, "after", 0).await.is_some());
    // The host still runs other work.
    let again = host.start(&wf, script(task("quick", json!({})))).await;
    assert_eq!(host.settle(&again).await.status, RunStatus::Finished);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_running_task_promptly() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let run = host
        .start(
            &wf,
            script(seq(vec![
                task("slow", json!({ "spin": true })),
                task("never", json!({})),
            ])),
        )
        .await;
    wait_for_event(&host, &run, "NodeStarted").await;
    let started = std::time::Instant::now();
    let outcome = host.app.engine.cancel(&run).await.unwrap();
    assert!(outcome.won);
    let row = host.settle(&run).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        started.elapsed()
    );
    assert_eq!(row.status, RunStatus::Cancelled);
    let events = host.events(&run).await;
    let cancelled = of_type(&events, "NodeCancelled");
    assert_eq!(cancelled[0]["nodeId"], "slow");
    assert_eq!(types(&events).last(), Some(&"RunCancelled"));
    // A second cancel is harmless; cancelling a finished run is refused.
    assert!(!host.app.engine.cancel(&run).await.unwrap().won);
    let done = host.start(&wf, script(task("x", json!({})))).await;
    host.settle(&done).await;
    assert!(matches!(
        host.app.engine.cancel(&done).await,
        Err(EngineError::RunNotActive(..))
    ));
}

fn refine(max: u32, on_max: &str, done_at: u32) -> Value {
    script(json!({
        "loop": {
            "id": "refine", "max": max, "onMax": on_max,
            "untilNode": "draft", "untilPath": "/done", "untilEquals": true,
            "children": [task("draft", json!({ "doneAtIteration": done_at }))]
        }
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn loops_stop_when_until_holds() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let run = host.start(&wf, refine(5, "fail", 2)).await;
    assert_eq!(host.settle(&run).await.status, RunStatus::Finished);
    let events = host.events(&run).await;
    let iterations: Vec<u64> = of_type(&events, "NodeFinished")
        .iter()
        .map(|e| e["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(iterations, [0, 1, 2]);
    assert_eq!(host.output(&run, "draft", 2).await.unwrap()["done"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn loops_hitting_max_iterations_return_last_or_fail() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let run = host.start(&wf, refine(3, "return-last", 99)).await;
    assert_eq!(host.settle(&run).await.status, RunStatus::Finished);
    assert_eq!(of_type(&host.events(&run).await, "NodeFinished").len(), 3);
    let run = host.start(&wf, refine(3, "fail", 99)).await;
    assert_eq!(host.settle(&run).await.status, RunStatus::Failed);
    let events = host.events(&run).await;
    assert_eq!(
        of_type(&events, "RunFailed")[0]["error"]["code"],
        "LOOP_MAX_REACHED"
    );
    assert_eq!(of_type(&events, "NodeFinished").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_never_exceeds_its_max_concurrency() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let children: Vec<Value> = (0..6)
        .map(|i| task(&format!("w{i}"), json!({ "sleepMs": 150 })))
        .collect();
    let run = host
        .start(
            &wf,
            script(json!({ "parallel": { "max": 2, "children": children } })),
        )
        .await;
    assert_eq!(host.settle(&run).await.status, RunStatus::Finished);
    let events = host.events(&run).await;
    let (mut running, mut peak) = (0i32, 0i32);
    for event in &events {
        match event["type"].as_str().unwrap() {
            "NodeStarted" => running += 1,
            "NodeFinished" | "NodeFailed" => running -= 1,
            _ => {}
        }
        peak = peak.max(running);
    }
    assert_eq!(peak, 2, "peak concurrency from events");
    assert_eq!(of_type(&events, "NodeFinished").len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_park_and_decisions_resume_the_run_by_themselves() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let flow = |on_deny: &str| {
        script(seq(vec![
            task("prepare", json!({})),
            json!({ "approval": { "id": "gate", "onDeny": on_deny } }),
            task("apply", json!({ "echoOutputs": ["gate", "prepare"] })),
        ]))
    };
    let run = host.start(&wf, flow("fail")).await;
    let row = host.settle(&run).await;
    assert_eq!(row.status, RunStatus::WaitingApproval);
    let decide = |approved: bool| ApprovalDecision {
        node_id: "gate".into(),
        iteration: 0,
        approved,
        note: Some("ok".into()),
        decided_by: Some("alice".into()),
    };
    host.app.engine.decide(&run, decide(true)).await.unwrap();
    let row = wait_for_status(&host, &run, RunStatus::Finished).await;
    assert_eq!(row.status, RunStatus::Finished);
    let apply = host.output(&run, "apply", 0).await.unwrap();
    assert_eq!(apply["seen"]["gate"]["approved"], true);
    assert_eq!(apply["seen"]["gate"]["decidedBy"], "alice");
    assert!(apply["seen"]["prepare"].is_object());
    // Deciding again is a conflict, not a crash.
    assert!(matches!(
        host.app.engine.decide(&run, decide(true)).await,
        Err(EngineError::NotWaitingForApproval(_))
    ));

    let denied = host.start(&wf, flow("fail")).await;
    host.settle(&denied).await;
    host.app
        .engine
        .decide(&denied, decide(false))
        .await
        .unwrap();
    let row = wait_for_status(&host, &denied, RunStatus::Failed).await;
    let events = host.events(&denied).await;
    assert_eq!(
        of_type(&events, "RunFailed")[0]["error"]["code"],
        "APPROVAL_DENIED"
    );
    assert_eq!(row.status, RunStatus::Failed);

    let continued = host.start(&wf, flow("continue")).await;
    host.settle(&continued).await;
    host.app
        .engine
        .decide(&continued, decide(false))
        .await
        .unwrap();
    wait_for_status(&host, &continued, RunStatus::Finished).await;
    assert_eq!(
        host.output(&continued, "apply", 0).await.unwrap()["seen"]["gate"]["approved"],
        false
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_wake_waiting_runs_and_become_the_node_output() {
    let host = TestHost::new();
    let wf = host.install("fixture-scripted");
    let run = host
        .start(
            &wf,
            script(seq(vec![
                json!({ "signal": { "id": "wait", "name": "go" } }),
                task("use", json!({ "echoOutputs": ["wait"] })),
            ])),
        )
        .await;
    assert_eq!(host.settle(&run).await.status, RunStatus::WaitingEvent);
    let receipt = host
        .app
        .engine
        .signal(&run, "go", json!({ "answer": 42 }), Some("c1".into()), None)
        .await
        .unwrap();
    assert_eq!(receipt.seq, 0);
    wait_for_status(&host, &run, RunStatus::Finished).await;
    assert_eq!(
        host.output(&run, "use", 0).await.unwrap()["seen"]["wait"]["answer"],
        42
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_components_are_refused_with_a_clear_error() {
    let host = TestHost::new();
    std::fs::write(
        host.root.path().join("garbage.wasm"),
        b"\0asm this is not a component",
    )
    .unwrap();
    let err = host
        .app
        .engine
        .start(smithers_host::engine::StartRequest {
            workflow_path: "garbage.wasm".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::WorkflowLoad(e) if e.code() == "WORKFLOW_INVALID_COMPONENT"),
        "{err}"
    );

    let wf = host.install("fixture-no-exports");
    let err = host
        .app
        .engine
        .start(smithers_host::engine::StartRequest {
            workflow_path: wf,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::WorkflowLoad(e) if e.code() == "WORKFLOW_MISSING_EXPORTS"),
        "{err}"
    );

    let wf = host.install("fixture-socket");
    let err = host
        .app
        .engine
        .start(smithers_host::engine::StartRequest {
            workflow_path: wf,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::WorkflowLoad(e) if e.code() == "WORKFLOW_UNSUPPORTED_IMPORT"),
        "{err}"
    );
    assert!(err.to_string().contains("sockets"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_outside_the_root_are_refused() {
    let host = TestHost::new();
    for path in ["../x.wasm", "/etc/passwd", "a/../../b.wasm"] {
        let err = host
            .app
            .engine
            .start(smithers_host::engine::StartRequest {
                workflow_path: path.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, EngineError::WorkflowPathOutsideRoot(_)),
            "{path}: {err}"
        );
    }
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::guest("example-hello"),
        outside.path().join("hello.wasm"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("hello.wasm"),
        host.root.path().join("link.wasm"),
    )
    .unwrap();
    let err = host
        .app
        .engine
        .start(smithers_host::engine::StartRequest {
            workflow_path: "link.wasm".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::WorkflowPathOutsideRoot(_)),
        "{err}"
    );
}

async fn wait_for_event(host: &TestHost, run: &smithers_host::model::RunId, kind: &str) {
    for _ in 0..500 {
        if !of_type(&host.events(run).await, kind).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no {kind} event");
}

async fn wait_for_status(
    host: &TestHost,
    run: &smithers_host::model::RunId,
    status: RunStatus,
) -> smithers_host::store::RunRow {
    for _ in 0..1000 {
        let row = host.run(run).await;
        if row.status == status {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "run never reached {status}; events: {:?}",
        types(&host.events(run).await)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_racing_the_end_of_a_run_still_gets_every_event() {
    use futures::StreamExt;
    let host = TestHost::new();
    let wf = host.install("example-hello");
    for _ in 0..40 {
        let run = host.start(&wf, json!({})).await;
        let stream =
            smithers_host::engine::events::follow(host.app.engine.store().clone(), run.clone(), -1);
        let seen: Vec<_> = stream.map(|e| e.unwrap()).collect().await;
        let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        assert_eq!(seen.last().unwrap().event_type, "RunFinished", "{seqs:?}");
    }
}
