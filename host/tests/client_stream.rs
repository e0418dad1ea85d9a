//! The client's event stream across failures: a server killed mid-run and
//! restarted on the same state dir, and resumption from a given seq. Every
//! event must arrive exactly once, in order.

mod client_support;
mod common;

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use smithers_client::{EventKind, RunWorkflow, StreamOptions};

use client_support::{Host, all_events, fast_reconnect, types};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_a_server_kill_resumes_with_every_event_exactly_once() {
    let mut host = Host::start();
    let scripted = host.install("fixture-scripted");
    let client = host.client();
    let input =
        json!({"root": {"appendSequence": {"count": 30, "path": "lines.txt", "sleepMs": 40}}});
    let run = client
        .run_workflow(&RunWorkflow::new(&scripted).input(input))
        .await
        .unwrap()
        .run_id;

    let mut stream = client.stream_events_with(&run, fast_reconnect());
    let mut seen = Vec::new();
    let mut finished = 0;
    // Read until a few steps are done, then kill the server under the stream.
    while finished < 5 {
        let event = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event");
        if matches!(event.kind, EventKind::NodeFinished { .. }) {
            finished += 1;
        }
        seen.push(event);
    }
    host.kill9();
    // Let the client notice and retry against nothing for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.spawn();
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(90), stream.collect::<Vec<_>>())
        .await
        .expect("the run finishes after the restart");
    for event in rest {
        seen.push(event.unwrap_or_else(|e| panic!("{e}\n{}", host.log())));
    }

    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (0..seen.len() as u64).collect::<Vec<_>>(),
        "{:?}",
        types(&seen)
    );
    assert!(
        matches!(seen.last().unwrap().kind, EventKind::RunFinished {}),
        "{:?}",
        types(&seen)
    );
    // The restarted host resumed the run: a second RunStarted (a resume).
    assert!(
        seen.iter()
            .filter(|e| matches!(e.kind, EventKind::RunStarted { resumed: true, .. }))
            .count()
            >= 1,
        "{:?}",
        types(&seen)
    );
    // Exactly the log the server holds, event for event.
    let replay = all_events(&client, &run).await;
    assert_eq!(
        seen.iter().map(|e| &e.json).collect::<Vec<_>>(),
        replay.iter().map(|e| &e.json).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_can_start_after_a_seq_and_a_finished_run_ends_it_at_once() {
    let host = Host::start();
    let hello = host.install("example-hello");
    let client = host.client();
    let run = client
        .run_workflow(&RunWorkflow::new(&hello))
        .await
        .unwrap()
        .run_id;
    let all = all_events(&client, &run).await;
    let from = 2;
    let tail: Vec<_> = client
        .stream_events_with(
            &run,
            StreamOptions {
                after_seq: Some(from),
                ..StreamOptions::default()
            },
        )
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(tail, all[from as usize + 1..].to_vec());
    // After the terminal event there is nothing more, and no reconnect loop.
    let last = all.last().unwrap().seq;
    let nothing: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        client
            .stream_events_with(
                &run,
                StreamOptions {
                    after_seq: Some(last),
                    ..StreamOptions::default()
                },
            )
            .collect::<Vec<_>>(),
    )
    .await
    .expect("ends at once");
    assert!(nothing.is_empty());
}
