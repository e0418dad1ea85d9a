//! Runs survive the server: a SIGKILL mid-run or a graceful SIGTERM, then a
//! restart on the same state dir, and the run finishes without re-running
//! committed tasks; parked runs stay parked.

mod common;
mod http_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use http_support::{Server, script};

fn lines(server: &Server) -> Vec<String> {
    std::fs::read_to_string(server.root.path().join("lines.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn wait_for_lines(server: &Server, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(server).len() < at_least {
        assert!(
            Instant::now() < deadline,
            "the run made no progress:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_a_restart_finishes_the_run() {
    let mut server = Server::start();
    let scripted = server.install("fixture-scripted");
    let input =
        script(json!({"appendSequence": {"count": 30, "path": "lines.txt", "sleepMs": 50}}));
    let run = server.start_run(&scripted, input).await;
    wait_for_lines(&server, 5).await;
    server.kill9();
    let before = lines(&server).len();
    assert!(before < 30, "killed mid-run");

    server.spawn();
    // The restarted host answers at once; it resumes the run in the
    // background and says so until it is done.
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200);
    assert!(health["recovering"].is_boolean(), "{health}");
    let finished = server.wait_status(&run, "finished").await;
    assert_eq!(finished["summary"]["finished"], 30);
    assert_eq!(server.get("/health").await.1["recovering"], false);
    let written = lines(&server);
    let expected: BTreeSet<String> = (0..30).map(|i| format!("step-{i}")).collect();
    assert_eq!(written.iter().cloned().collect::<BTreeSet<_>>(), expected);
    // Only the step interrupted by the kill may have run twice.
    assert!(written.len() <= 31, "{written:?}");
    let events = server.all_events(&run).await;
    assert!(
        events
            .iter()
            .any(|e| e.kind() == "RunStarted" && e.data["resumed"] == true)
    );
    assert_eq!(events.last().unwrap().kind(), "RunFinished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_the_next_start_resumes_the_run() {
    let mut server = Server::start();
    let scripted = server.install("fixture-scripted");
    let input =
        script(json!({"appendSequence": {"count": 20, "path": "lines.txt", "sleepMs": 50}}));
    let run = server.start_run(&scripted, input).await;
    let parked = server
        .start_run(&scripted, script(json!({"approval": {"id": "gate"}})))
        .await;
    server.wait_status(&parked, "waiting-approval").await;
    wait_for_lines(&server, 3).await;
    let mut sse = server.sse(&format!("/v1/runs/{run}/events"), &[]).await;

    let stopped_at = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "clean exit: {status:?}\n{}", server.log());
    assert!(stopped_at.elapsed() < Duration::from_secs(15));
    // Open event streams end with the server.
    sse.events_until_end(Duration::from_secs(5)).await;

    server.spawn();
    server.wait_status(&run, "finished").await;
    assert_eq!(server.status(&parked).await["status"], "waiting-approval");
    let (code, _) = server
        .post(&format!("/v1/runs/{parked}/nodes/gate/approve"), json!({}))
        .await;
    assert_eq!(code, 200);
    server.wait_status(&parked, "finished").await;
}

/// The host commits an approval decision or a signal, then resumes the parked
/// run in a second step: killed between the two, the next start must resume
/// it (it used to stay parked for ever, its approval no longer pending). A
/// run still parked on an undecided approval stays parked, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_committed_just_before_a_kill_is_acted_on_at_the_next_start() {
    use smithers_host::model::{NodeKey, RunId};
    use smithers_host::store::{Commit, Durability, Op, Store};

    let mut server = Server::start();
    let scripted = server.install("fixture-scripted");
    let parked = |root| script(json!({"sequence": [root, {"task": {"id": "after"}}]}));
    let approved = server
        .start_run(&scripted, parked(json!({"approval": {"id": "gate"}})))
        .await;
    let signalled = server
        .start_run(
            &scripted,
            parked(json!({"signal": {"id": "wait", "name": "go"}})),
        )
        .await;
    let untouched = server
        .start_run(&scripted, parked(json!({"approval": {"id": "gate"}})))
        .await;
    server.wait_status(&approved, "waiting-approval").await;
    server.wait_status(&signalled, "waiting-event").await;
    server.wait_status(&untouched, "waiting-approval").await;
    let untouched_events = stored_events(&server, &untouched).await;
    server.kill9();

    // What the approve and signal routes commit before they resume the run.
    let store = Store::open(&server.state.path().join("smithers.db"), Durability::Normal).unwrap();
    store
        .commit(
            Commit::new(RunId::parse(&approved).unwrap()).op(Op::DecideApproval {
                key: NodeKey::new("gate", 0),
                approved: true,
                note: None,
                decided_by: None,
            }),
        )
        .await
        .unwrap();
    store
        .commit(
            Commit::new(RunId::parse(&signalled).unwrap()).op(Op::InsertSignal {
                name: "go".into(),
                payload_json: "{}".into(),
                correlation_id: None,
                received_by: None,
            }),
        )
        .await
        .unwrap();
    store.close();

    server.spawn();
    server.wait_status(&approved, "finished").await;
    server.wait_status(&signalled, "finished").await;
    assert_eq!(
        server.status(&untouched).await["status"],
        "waiting-approval"
    );
    assert_eq!(stored_events(&server, &untouched).await, untouched_events);
}

/// How many events a run's stream replays (for a run that is not over:
/// whatever arrives before the stream falls quiet).
async fn stored_events(server: &Server, run: &str) -> usize {
    let mut sse = server.sse(&format!("/v1/runs/{run}/events"), &[]).await;
    let mut count = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), sse.next_event()).await
    {
        count += 1;
    }
    count
}
