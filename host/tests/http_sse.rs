//! Server-sent events and load: format, push after a decision, exact resume
//! with `afterSeq` and `Last-Event-ID`, many subscribers, many runs.

mod common;
mod http_support;

use std::time::{Duration, Instant};

use serde_json::json;

use http_support::{Server, SseEvent, script};

fn seqs(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(SseEvent::seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_replays_history_with_ids_then_ends_after_the_terminal_event() {
    let server = Server::start();
    let hello = server.install("example-hello");
    let run = server.start_run(&hello, json!({})).await;
    server.wait_status(&run, "finished").await;
    let mut sse = server.sse(&format!("/v1/runs/{run}/events"), &[]).await;
    assert_eq!(sse.content_type, "text/event-stream");
    assert_eq!(sse.cache_control, "no-cache");
    let first = sse.next_block().await.unwrap();
    assert_eq!(first.lines, vec!["retry: 1000".to_string()]);
    let events = sse.events_until_end(Duration::from_secs(10)).await;
    assert!(sse.ended);
    assert_eq!(seqs(&events), (0..events.len() as u64).collect::<Vec<_>>());
    for event in &events {
        assert_eq!(event.event.as_deref(), Some("smithers"));
        assert_eq!(event.id.as_deref(), Some(event.seq().to_string().as_str()));
        assert_eq!(event.data["runId"], run);
    }
    assert_eq!(events[0].kind(), "RunStarted");
    assert_eq!(events.last().unwrap().kind(), "RunFinished");
    // Resuming after the last seq of a finished run: just `retry`, then the end.
    let last = events.last().unwrap().seq();
    let mut sse = server
        .sse(&format!("/v1/runs/{run}/events?afterSeq={last}"), &[])
        .await;
    assert!(
        sse.events_until_end(Duration::from_secs(10))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_run_keeps_its_stream_open_and_pushes_what_follows_a_decision() {
    let server = Server::start();
    let approval = server.install("example-approval");
    let run = server.start_run(&approval, json!({})).await;
    let mut sse = server.sse(&format!("/v1/runs/{run}/events"), &[]).await;
    loop {
        let event = sse
            .next_event()
            .await
            .expect("stream stays open while parked");
        if event.kind() == "RunStatusChanged" {
            assert_eq!(event.data["status"], "waiting-approval");
            break;
        }
    }
    let approved_at = Instant::now();
    let (code, _) = server
        .post(&format!("/v1/runs/{run}/nodes/gate/approve"), json!({}))
        .await;
    assert_eq!(code, 200);
    let rest = sse.events_until_end(Duration::from_secs(20)).await;
    let kinds: Vec<&str> = rest.iter().map(SseEvent::kind).collect();
    assert_eq!(kinds.first(), Some(&"ApprovalGranted"), "{kinds:?}");
    assert!(kinds.contains(&"NodeStarted"));
    assert_eq!(kinds.last(), Some(&"RunFinished"));
    assert!(approved_at.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_seq_and_last_event_id_resume_exactly_after_the_given_seq() {
    let server = Server::start();
    let scripted = server.install("fixture-scripted");
    let input =
        script(json!({"appendSequence": {"count": 40, "path": "lines.txt", "sleepMs": 25}}));
    let run = server.start_run(&scripted, input).await;
    let path = format!("/v1/runs/{run}/events");
    let mut seen = Vec::new();

    // First connection: read some live events, then drop it mid-run.
    let mut sse = server.sse(&path, &[]).await;
    while seen.len() < 25 {
        seen.push(sse.next_event().await.expect("run still going"));
    }
    drop(sse);

    // Reconnect with afterSeq.
    let last = seen.last().unwrap().seq();
    let mut sse = server.sse(&format!("{path}?afterSeq={last}"), &[]).await;
    for _ in 0..25 {
        seen.push(sse.next_event().await.expect("run still going"));
    }
    drop(sse);
    assert_ne!(
        server.status(&run).await["status"],
        "finished",
        "the run should still be going"
    );

    // Reconnect with Last-Event-ID, which wins over afterSeq.
    let last = seen.last().unwrap().id.clone().unwrap();
    let mut sse = server
        .sse(&format!("{path}?afterSeq=0"), &[("last-event-id", &last)])
        .await;
    seen.extend(sse.events_until_end(Duration::from_secs(60)).await);

    assert_eq!(
        seqs(&seen),
        (0..seen.len() as u64).collect::<Vec<_>>(),
        "every event exactly once, in order"
    );
    assert_eq!(seen.last().unwrap().kind(), "RunFinished");
    let full = server.all_events(&run).await;
    assert_eq!(seqs(&full), seqs(&seen));
    let (code, body) = server.get(&format!("{path}?afterSeq=abc")).await;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["code"], "INVALID_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_subscribers_on_one_run_each_get_every_event() {
    // All 500 come from 127.0.0.1: raise the per-client limit (256).
    let server = Server::with(http_support::Options {
        extra_args: vec!["--max-sse-per-client".into(), "500".into()],
        ..Default::default()
    });
    let scripted = server.install("fixture-scripted");
    let input = script(json!({"sequence": [
        {"approval": {"id": "gate"}},
        {"appendSequence": {"count": 10, "path": "lines.txt"}},
    ]}));
    let run = server.start_run(&scripted, input).await;
    server.wait_status(&run, "waiting-approval").await;
    let path = format!("/v1/runs/{run}/events");
    let mut readers = Vec::new();
    for _ in 0..500 {
        let sse = server.sse(&path, &[]).await;
        readers.push(tokio::spawn(async move {
            let mut sse = sse;
            sse.events_until_end(Duration::from_secs(90)).await
        }));
    }
    let (code, _) = server
        .post(&format!("/v1/runs/{run}/nodes/gate/approve"), json!({}))
        .await;
    assert_eq!(code, 200);
    let mut lengths = Vec::new();
    for reader in readers {
        let events = reader.await.unwrap();
        assert_eq!(seqs(&events), (0..events.len() as u64).collect::<Vec<_>>());
        assert_eq!(events.last().unwrap().kind(), "RunFinished");
        lengths.push(events.len());
    }
    assert!(
        lengths.windows(2).all(|w| w[0] == w[1]),
        "everyone got the same events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_hello_runs_all_finish() {
    let server = std::sync::Arc::new(Server::start());
    let hello = server.install("example-hello");
    let mut starts = Vec::new();
    for i in 0..200 {
        let (server, hello) = (server.clone(), hello.clone());
        starts.push(tokio::spawn(async move {
            server
                .start_run(&hello, json!({"name": format!("n{i}")}))
                .await
        }));
    }
    let mut runs = Vec::new();
    for start in starts {
        runs.push(start.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, finished) = server.get("/v1/runs?status=finished&limit=1000").await;
        assert_eq!(code, 200);
        if finished.as_array().unwrap().len() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not all runs finished in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, failed) = server.get("/v1/runs?status=failed").await;
    assert_eq!(failed, json!([]));
}
