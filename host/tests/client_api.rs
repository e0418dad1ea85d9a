//! smithers-client against the real binary: every function, and the error
//! envelope (code and HTTP status) surfaced for each refusal.

mod client_support;
mod common;

use std::time::Duration;

use serde_json::json;
use smithers_client::{
    AttemptState, Client, Decision, Error, EventKind, FramesQuery, ListRuns, NodeQuery, NodeState,
    OutputsQuery, RunStatus, RunWorkflow, Signal, StreamOptions,
};

use client_support::{Host, all_events, events_until, types, waiting_approval};

fn api_code(result: Result<impl std::fmt::Debug, Error>) -> (u16, String) {
    match result {
        Err(Error::Api { status, code, .. }) => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_stream_status_frames_and_list_mirror_the_pi_client() {
    let host = Host::start();
    let hello = host.install("example-hello");
    let client = host.client();

    let started = client
        .run_workflow(
            &RunWorkflow::new(&hello)
                .input(json!({"name": "Ada"}))
                .run_id("hello-1"),
        )
        .await
        .unwrap();
    assert_eq!(started.run_id, "hello-1");
    assert_eq!(started.status, None);

    let events = all_events(&client, "hello-1").await;
    assert_eq!(events.first().unwrap().type_name(), "RunStarted");
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunFinished {}
    ));
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
    assert!(
        events.iter().any(
            |e| matches!(&e.kind, EventKind::NodeFinished { node_id, .. } if node_id == "greet")
        )
    );

    let status = client.get_status("hello-1").await.unwrap();
    assert_eq!(status.status, RunStatus::Finished);
    assert_eq!(status.workflow_name, "hello");
    assert_eq!(status.summary.get("finished"), Some(&1));
    assert_eq!(status.run_state.unwrap().state, "succeeded");
    assert!(status.extra.contains_key("workflowHash"));

    let frames = client
        .get_frames("hello-1", &FramesQuery::default())
        .await
        .unwrap();
    assert!(!frames.is_empty());
    assert!(frames.windows(2).all(|w| w[0].frame_no > w[1].frame_no));
    let tail = client
        .get_frames(
            "hello-1",
            &FramesQuery {
                limit: Some(1),
                after_frame_no: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].frame_no, frames[0].frame_no);

    let runs = client.list_runs(&ListRuns::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_id, "hello-1");
    assert_eq!(runs[0].status, RunStatus::Finished);
    let failed = client
        .list_runs(&ListRuns {
            status: Some("failed".into()),
            ..ListRuns::default()
        })
        .await
        .unwrap();
    assert!(failed.is_empty());

    // The PI form of resume (POST /v1/runs with resume: true) and ours.
    let resumed = client.resume("hello-1", Some(&hello)).await.unwrap();
    assert_eq!(resumed.run_id, "hello-1");
    let resumed = client.resume("hello-1", None).await.unwrap();
    assert_eq!(resumed.run_id, "hello-1");

    let health = client.health().await.unwrap();
    assert_eq!(health["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_approve_deny_cancel_and_signals() {
    let host = Host::start();
    let approval = host.install("example-approval");
    let scripted = host.install("fixture-scripted");
    let client = host.client();

    // Approve: listed while pending, then the run finishes by itself.
    let run = client
        .run_workflow(&RunWorkflow::new(&approval).run_id("ap-1"))
        .await
        .unwrap()
        .run_id;
    let mut stream = client.stream_events(&run);
    events_until(&mut stream, waiting_approval).await;
    let pending = client.list_approvals().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].run_id.as_str(), pending[0].node_id.as_str()),
        ("ap-1", "gate")
    );
    assert_eq!(pending[0].run_status, Some(RunStatus::WaitingApproval));
    client
        .approve(
            &run,
            "gate",
            &Decision {
                note: Some("ship it".into()),
                decided_by: Some("ada".into()),
                ..Decision::default()
            },
        )
        .await
        .unwrap();
    let rest: Vec<_> = events_until(&mut stream, |e| e.is_terminal()).await;
    assert!(matches!(
        rest.last().unwrap().kind,
        EventKind::RunFinished {}
    ));
    assert!(rest.iter().any(|e| matches!(
        &e.kind,
        EventKind::ApprovalGranted { note: Some(note), .. } if note == "ship it"
    )));
    assert!(client.list_approvals().await.unwrap().is_empty());

    // Deny: the gate fails the run.
    let run = client
        .run_workflow(&RunWorkflow::new(&approval))
        .await
        .unwrap()
        .run_id;
    let mut stream = client.stream_events(&run);
    events_until(&mut stream, waiting_approval).await;
    client
        .deny(&run, "gate", &Decision::with_note("not today"))
        .await
        .unwrap();
    let rest = events_until(&mut stream, |e| e.is_terminal()).await;
    assert!(
        matches!(rest.last().unwrap().kind, EventKind::RunFailed { .. }),
        "{:?}",
        types(&rest)
    );

    // Cancel a parked run, then again: already cancelled.
    let run = client
        .run_workflow(&RunWorkflow::new(&approval))
        .await
        .unwrap()
        .run_id;
    let mut stream = client.stream_events(&run);
    events_until(&mut stream, waiting_approval).await;
    let outcome = client.cancel(&run).await.unwrap();
    assert_eq!(outcome.run_id, run);
    assert_eq!(outcome.won, Some(true));
    let rest = events_until(&mut stream, |e| e.is_terminal()).await;
    assert!(matches!(
        rest.last().unwrap().kind,
        EventKind::RunCancelled {}
    ));
    assert_eq!(client.cancel(&run).await.unwrap().won, Some(false));

    // A signal wakes a run waiting for it.
    let run = client
        .run_workflow(&RunWorkflow::new(&scripted).input(json!({
            "root": {"sequence": [{"signal": {"id": "w", "name": "go"}}, {"task": {"id": "after"}}]}
        })))
        .await
        .unwrap()
        .run_id;
    let mut stream = client.stream_events(&run);
    events_until(&mut stream, |e| {
        matches!(e.kind, EventKind::NodeWaitingEvent { .. })
    })
    .await;
    let mut signal = Signal::new(json!({"x": 1}));
    signal.correlation_id = Some("c-1".into());
    let receipt = client.signal(&run, "go", &signal).await.unwrap();
    assert_eq!(receipt.run_id, run);
    assert_eq!(receipt.signal_name, "go");
    assert_eq!(receipt.correlation_id.as_deref(), Some("c-1"));
    let rest = events_until(&mut stream, |e| e.is_terminal()).await;
    assert!(matches!(
        rest.last().unwrap().kind,
        EventKind::RunFinished {}
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_surface_the_envelope_code_and_http_status() {
    let host = Host::start();
    let hello = host.install("example-hello");
    let approval = host.install("example-approval");
    let client = host.client();

    assert_eq!(
        api_code(client.get_status("nope").await),
        (404, "NOT_FOUND".into())
    );
    assert_eq!(
        api_code(client.get_frames("nope", &FramesQuery::default()).await),
        (404, "NOT_FOUND".into())
    );
    assert_eq!(
        api_code(client.cancel("nope").await),
        (404, "NOT_FOUND".into())
    );
    assert_eq!(
        api_code(client.resume("nope", None).await),
        (404, "RUN_NOT_FOUND".into())
    );
    assert_eq!(
        api_code(client.approve("nope", "gate", &Decision::default()).await),
        (404, "NOT_FOUND".into())
    );
    assert_eq!(
        api_code(
            client
                .run_workflow(&RunWorkflow::new("../outside.wasm"))
                .await
        ),
        (400, "WORKFLOW_PATH_OUTSIDE_ROOT".into())
    );
    assert_eq!(
        api_code(
            client
                .run_workflow(&RunWorkflow::new(&hello).input(json!([1, 2])))
                .await
        ),
        (400, "INVALID_REQUEST".into())
    );
    assert_eq!(
        api_code(client.run_workflow(&RunWorkflow::new("missing.wasm")).await),
        (400, "WORKFLOW_NOT_FOUND".into())
    );

    client
        .run_workflow(&RunWorkflow::new(&hello).run_id("taken"))
        .await
        .unwrap();
    assert_eq!(
        api_code(
            client
                .run_workflow(&RunWorkflow::new(&hello).run_id("taken"))
                .await
        ),
        (409, "RUN_ALREADY_EXISTS".into())
    );
    all_events(&client, "taken").await;
    let e = client.cancel("taken").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(409), Some("RUN_NOT_ACTIVE")));
    assert!(!e.is_transient());
    assert!(e.to_string().contains("Run is not currently active"), "{e}");

    let run = client
        .run_workflow(&RunWorkflow::new(&approval))
        .await
        .unwrap()
        .run_id;
    assert_eq!(
        api_code(client.approve(&run, "prepare", &Decision::default()).await),
        (409, "NODE_NOT_WAITING".into())
    );

    // A stream of an unknown run: one error, then the end.
    let mut stream = client.stream_events("nope");
    let first = futures::StreamExt::next(&mut stream).await.unwrap();
    assert_eq!(first.unwrap_err().code(), Some("NOT_FOUND"));
    assert!(futures::StreamExt::next(&mut stream).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_unauthorized_and_an_absent_host_is_transient() {
    let host = Host::with_token(Some("sekret"));
    let good = host.client();
    assert!(
        good.list_runs(&ListRuns::default())
            .await
            .unwrap()
            .is_empty()
    );
    let bad = Client::builder()
        .base_url(&host.url)
        .api_key("wrong")
        .build()
        .unwrap();
    assert_eq!(
        api_code(bad.list_runs(&ListRuns::default()).await),
        (401, "UNAUTHORIZED".into())
    );
    let mut stream = bad.stream_events("any");
    let first = futures::StreamExt::next(&mut stream).await.unwrap();
    assert_eq!(first.unwrap_err().code(), Some("UNAUTHORIZED"));

    let port = host.port;
    drop(host);
    let gone = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = gone.get_status("x").await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(e.is_transient());
    // A stream keeps trying within its bounds, then says it lost the run.
    let mut stream = gone.stream_events_with(
        "x",
        StreamOptions {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            max_attempts: 3,
            ..StreamOptions::default()
        },
    );
    let first = futures::StreamExt::next(&mut stream).await.unwrap();
    assert!(
        matches!(first, Err(Error::StreamLost { attempts: 3, .. })),
        "{first:?}"
    );
    assert!(futures::StreamExt::next(&mut stream).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_outputs_read_what_a_run_produced_typed_and_paged() {
    let host = Host::start();
    let scripted = host.install("fixture-scripted");
    let client = host.client();
    let input = json!({"root": {"sequence": [
        {"task": {"id": "flaky", "failAttempts": 1, "retries": 2, "backoff": "fixed",
                  "initialDelayMs": 10, "output": {"ok": true}}},
        {"loop": {"id": "refine", "max": 3, "children": [{"task": {"id": "draft"}}]}},
    ]}});
    client
        .run_workflow(&RunWorkflow::new(&scripted).input(input).run_id("p1"))
        .await
        .unwrap();
    all_events(&client, "p1").await;

    let flaky = client
        .node("p1", "flaky", &NodeQuery::default())
        .await
        .unwrap();
    assert_eq!(flaky.next_cursor, None);
    let only = &flaky.iterations[0];
    assert_eq!(only.state, NodeState::Finished);
    assert_eq!(only.output, Some(json!({"ok": true})));
    let states: Vec<&AttemptState> = only.attempts.iter().map(|a| &a.state).collect();
    assert_eq!(states, [&AttemptState::Failed, &AttemptState::Finished]);
    assert_eq!(only.attempt_count, 2);

    let draft = client
        .node("p1", "draft", &NodeQuery::iteration(1))
        .await
        .unwrap();
    assert_eq!(draft.iterations.len(), 1);
    assert_eq!(draft.iterations[0].output.as_ref().unwrap()["iteration"], 1);

    // Every output once, a page of one at a time.
    let mut query = OutputsQuery {
        limit: Some(1),
        ..OutputsQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = client.outputs("p1", &query).await.unwrap();
        assert!(page.outputs.len() <= 1);
        seen.extend(
            page.outputs
                .iter()
                .map(|o| (o.node_id.clone(), o.iteration)),
        );
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    let expected: Vec<(String, u32)> = [("flaky", 0), ("draft", 0), ("draft", 1), ("draft", 2)]
        .iter()
        .map(|(n, i)| (n.to_string(), *i))
        .collect();
    assert_eq!(seen, expected);

    assert_eq!(
        api_code(client.node("p1", "nope", &NodeQuery::default()).await),
        (404, "NODE_NOT_FOUND".into())
    );
    assert_eq!(
        api_code(client.outputs("ghost", &OutputsQuery::default()).await),
        (404, "RUN_NOT_FOUND".into())
    );
}
