//! The gateway's WebSocket against the real binary: the handshake, ticks and
//! broadcast events; `streamRunEvents` resuming exactly once after a
//! disconnect, `run.gap_resync` past the window, the slow-consumer
//! disconnect; and durable cron schedules firing once per tick across a
//! restart.

mod common;
mod gateway_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gateway_support::{Gateway, Ws, script, task};
use serde_json::{Value, json};

const SCRIPTED: &str = r#"
heartbeat_ms = 200
[listen]
port = 0
[workflows.scripted]
path = "fixture-scripted.wasm"
"#;

#[tokio::test]
async fn the_handshake_says_hello_then_ticks_and_broadcasts_run_events() {
    let gw = Gateway::start(SCRIPTED, &["fixture-scripted"]);
    let mut ws = Ws::open(&gw.ws_url()).await;
    assert!(ws.challenge["payload"]["nonce"].is_string());
    assert!(ws.challenge["payload"]["ts"].is_i64());
    assert_eq!(ws.challenge["seq"], 1);

    let refused = ws
        .request(
            "connect",
            json!({"minProtocol": 2, "maxProtocol": 3, "client": {"id": "x"}}),
        )
        .await;
    assert_eq!(refused["error"]["code"], "PROTOCOL_UNSUPPORTED");
    let mut ws = Ws::open(&gw.ws_url()).await;
    let hello = ws.connect(None, None).await.unwrap();
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["features"], json!(["streaming", "runs"]));
    assert_eq!(hello["policy"]["heartbeatMs"], 200);
    assert_eq!(hello["identity"]["backend"], "smithers-host");
    assert_eq!(hello["auth"]["role"], "operator");
    assert_eq!(hello["auth"]["scopes"], json!(["*"]));
    assert!(hello["auth"]["sessionToken"].is_string());
    assert_eq!(hello["snapshot"]["runs"], json!([]));
    assert_eq!(hello["snapshot"]["approvals"], json!([]));

    // Ticks arrive every heartbeat; event frames count per connection.
    let mut last_seq = 1;
    let mut ticks = 0;
    while ticks < 2 {
        let frame = ws.next_event().await.unwrap();
        assert!(frame["seq"].as_u64().unwrap() > last_seq);
        assert!(frame["stateVersion"].is_u64());
        last_seq = frame["seq"].as_u64().unwrap();
        if frame["event"] == "tick" {
            ticks += 1;
        }
    }

    // Runs started elsewhere show up as gateway events.
    let launched = ws
        .request(
            "launchRun",
            json!({"workflow": "scripted", "runId": "b1", "input": script(task("a", json!({})))}),
        )
        .await;
    assert_eq!(launched["payload"]["runId"], "b1");
    let mut names = Vec::new();
    while !names.contains(&"run.completed".to_string()) {
        let frame = ws.next_event().await.unwrap();
        if frame["payload"]["runId"] == "b1" {
            names.push(frame["event"].as_str().unwrap().to_string());
        }
    }
    for expected in [
        "run.started",
        "node.started",
        "node.finished",
        "run.completed",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}

/// Reads `run.event` frames until `run.completed` or `limit` frames.
async fn read_run_events(ws: &mut Ws, limit: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    while frames.len() < limit {
        let frame = ws.next_run_frame().await.expect("stream open");
        assert_eq!(frame["event"], "run.event", "{frame}");
        let done = frame["payload"]["event"] == "run.completed";
        frames.push(frame["payload"].clone());
        if done {
            break;
        }
    }
    frames
}

#[tokio::test]
async fn reconnecting_with_after_seq_delivers_every_event_exactly_once() {
    let gw = Gateway::start(SCRIPTED, &["fixture-scripted"]);
    let input =
        script(json!({"appendSequence": {"count": 40, "path": "lines.txt", "sleepMs": 25}}));
    gw.call(
        "launchRun",
        json!({"workflow": "scripted", "runId": "long", "input": input}),
    )
    .await;

    // First connection: read part of the run, then drop the socket mid-run.
    let (mut ws, _) = gw.connect(None).await;
    let res = ws.stream("long", Some(0)).await;
    assert_eq!(res["ok"], true, "{res}");
    assert!(res["payload"]["streamId"].is_string());
    assert_eq!(res["payload"]["afterSeq"], 0);
    let first = read_run_events(&mut ws, 30).await;
    assert_eq!(first.len(), 30);
    drop(ws);
    let status = gw.call("getRun", json!({"runId": "long"})).await;
    assert_eq!(
        status["status"], "running",
        "the run is still going after the disconnect"
    );

    // Second connection resumes after the last seq it saw.
    let last = first.last().unwrap()["seq"].as_u64().unwrap();
    let (mut ws, _) = gw.connect(None).await;
    let res = ws.stream("long", Some(last)).await;
    assert_eq!(res["ok"], true, "{res}");
    let rest = read_run_events(&mut ws, usize::MAX).await;
    assert_eq!(rest.last().unwrap()["event"], "run.completed");

    let seqs: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every event exactly once, in order");
    let stream_ids: BTreeSet<&str> = first
        .iter()
        .chain(&rest)
        .map(|f| f["streamId"].as_str().unwrap())
        .collect();
    assert_eq!(stream_ids.len(), 2);
    let finished = rest
        .iter()
        .filter(|f| f["event"] == "node.finished")
        .count()
        + first
            .iter()
            .filter(|f| f["event"] == "node.finished")
            .count();
    assert_eq!(finished, 40);

    // A full replay of the finished run holds the same events.
    let (mut ws, _) = gw.connect(None).await;
    ws.stream("long", None).await;
    let replay = read_run_events(&mut ws, usize::MAX).await;
    assert_eq!(replay.len(), seqs.len());
    for (a, b) in replay.iter().zip(first.iter().chain(&rest)) {
        assert_eq!(
            (&a["seq"], &a["event"], &a["payload"]),
            (&b["seq"], &b["event"], &b["payload"])
        );
    }
}

#[tokio::test]
async fn an_after_seq_older_than_the_window_gets_gap_resync_first() {
    let config = r#"
[listen]
port = 0
[limits]
event_window = 5
[workflows.scripted]
path = "fixture-scripted.wasm"
"#;
    let gw = Gateway::start(config, &["fixture-scripted"]);
    let input = script(
        json!({"sequence": [task("a", json!({})), task("b", json!({})), task("c", json!({}))]}),
    );
    gw.call(
        "launchRun",
        json!({"workflow": "scripted", "runId": "g1", "input": input}),
    )
    .await;
    gw.wait_status("g1", "finished").await;
    let (mut ws, _) = gw.connect(None).await;

    let res = ws.stream("g1", Some(2)).await;
    let current = res["payload"]["currentSeq"].as_u64().unwrap();
    assert!(current > 10, "{res}");
    let gap = ws.next_run_frame().await.unwrap();
    assert_eq!(gap["event"], "run.gap_resync", "{gap}");
    assert_eq!(gap["payload"]["fromSeq"], 3);
    assert_eq!(gap["payload"]["toSeq"], current - 5);
    assert_eq!(gap["payload"]["snapshot"]["status"], "finished");
    assert_eq!(gap["payload"]["streamId"], res["payload"]["streamId"]);
    let events = read_run_events(&mut ws, usize::MAX).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, ((current - 4)..=current).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["event"], "run.completed");
    assert_eq!(events.last().unwrap()["payload"]["status"], "finished");

    // Inside the window: no resync.
    let res = ws.stream("g1", Some(current - 2)).await;
    assert_eq!(res["ok"], true);
    let events = read_run_events(&mut ws, usize::MAX).await;
    assert_eq!(events.len(), 2);
    // Out of range and unknown runs.
    let res = ws.stream("g1", Some(current + 1)).await;
    assert_eq!(res["error"]["code"], "SeqOutOfRange");
    let res = ws
        .request("streamRunEvents", json!({"runId": "g1", "afterSeq": -1}))
        .await;
    assert_eq!(res["error"]["code"], "SeqOutOfRange");
    let res = ws.stream("nope", None).await;
    assert_eq!(res["error"]["code"], "RunNotFound");
}

#[tokio::test]
async fn a_consumer_that_stops_reading_loses_its_stream_not_its_socket() {
    let config = r#"
[listen]
port = 0
[limits]
max_queued_frames = 4
slow_consumer_ms = 300
[workflows.scripted]
path = "fixture-scripted.wasm"
"#;
    let gw = Gateway::start(config, &["fixture-scripted"]);
    // ~12 MiB of events: far more than the socket buffers hold (each
    // string within the gateway's 16 KiB bound on input strings).
    let blob = vec!["x".repeat(15 * 1024); 20];
    let input = script(
        json!({"loop": {"id": "l", "max": 40, "children": [task("emit", json!({"emit": blob}))]}}),
    );
    gw.call(
        "launchRun",
        json!({"workflow": "scripted", "runId": "big", "input": input}),
    )
    .await;
    gw.wait_status("big", "finished").await;

    let (mut ws, _) = gw.connect(None).await;
    let res = ws.stream("big", Some(0)).await;
    assert_eq!(res["ok"], true);
    // Stop reading long enough for the stream to give up on us.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let error = loop {
        let frame = ws.next_event().await.expect("the socket stays open");
        if frame["event"] == "run.error" {
            break frame;
        }
        assert_ne!(
            frame["payload"]["event"], "run.completed",
            "the slow consumer was never cut off"
        );
        assert!(Instant::now() < deadline);
    };
    assert_eq!(error["payload"]["error"]["code"], "BackpressureDisconnect");
    assert_eq!(error["payload"]["runId"], "big");
    // The connection itself still works.
    let health = ws.request("health", json!({})).await;
    assert_eq!(health["ok"], true);
    let (_, metrics) = gw.get("/metrics", &[]).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("smithers_gateway_backpressure_disconnects_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_cron_schedule_fires_once_per_tick_across_a_restart() {
    let config = r#"
heartbeat_ms = 100
[listen]
port = 0
[workflows.tick]
path = "example-hello.wasm"
schedule = "* * * * * *"
"#;
    let mut gw = Gateway::start(config, &["example-hello"]);
    let (mut ws, _) = gw.connect(None).await;
    let triggered = loop {
        let frame = ws.next_event().await.unwrap();
        if frame["event"] == "cron.triggered" {
            break frame;
        }
    };
    assert_eq!(triggered["payload"]["cronId"], "gateway:tick");
    assert_eq!(triggered["payload"]["workflow"], "tick");
    drop(ws);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = cron_runs(&gw).await;
    gw.stop();
    gw.spawn();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let crons = gw.call("cronList", json!({})).await;
    assert_eq!(crons[0]["cronId"], "gateway:tick");
    assert_eq!(crons[0]["pattern"], "* * * * * *");
    assert!(crons[0]["nextRunAtMs"].as_i64() > crons[0]["lastRunAtMs"].as_i64());
    let after = cron_runs(&gw).await;
    gw.stop();

    // Run ids are `cron-gateway-tick-<tick ms>`: one run per whole-second
    // tick, none fired twice, and the restart continued where it stopped.
    assert!(before.len() >= 2, "{before:?}\n{}", gw.log());
    assert!(after.len() >= before.len() + 2, "{after:?}\n{}", gw.log());
    let mut per_tick: BTreeMap<i64, usize> = BTreeMap::new();
    for (tick, run) in &after {
        assert_eq!(tick % 1000, 0, "{run}");
        *per_tick.entry(*tick).or_default() += 1;
    }
    assert!(per_tick.values().all(|n| *n == 1), "{per_tick:?}");
    for tick in before.keys() {
        assert!(after.contains_key(tick));
    }
    let log = gw.log();
    assert!(!log.contains("cron fire failed"), "{log}");
    // Every cron run finished as the system role.
    for (_, run) in after.iter().take(3) {
        let status = gw_status_after_stop(&gw, run).await;
        assert_eq!(status, "finished", "{run}");
    }
}

/// Cron runs by tick, from `listRuns`.
async fn cron_runs(gw: &Gateway) -> BTreeMap<i64, String> {
    let runs = gw
        .call("listRuns", json!({"filter": {"limit": 1000}}))
        .await;
    runs.as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let id = r["runId"].as_str()?;
            let tick = id.strip_prefix("cron-gateway-tick-")?.parse().ok()?;
            Some((tick, id.to_string()))
        })
        .collect()
}

/// Reads a run's status from the stopped gateway's state dir.
async fn gw_status_after_stop(gw: &Gateway, run: &str) -> String {
    let mut config = smithers_host::app::AppConfig::new(gw.root.path());
    config.state_dir = Some(gw.state.path().to_path_buf());
    let app = smithers_host::app::App::open(config).expect("open the state dir");
    let id = smithers_host::model::RunId::parse(run).unwrap();
    let row = app
        .engine
        .store()
        .read(move |r| r.run(&id))
        .await
        .unwrap()
        .expect("run exists");
    let auth: Value = serde_json::from_str(row.auth_json.as_deref().unwrap()).unwrap();
    assert_eq!(auth["role"], "system");
    assert_eq!(auth["triggeredBy"], "cron:gateway");
    let status = row.status.as_str().to_string();
    app.close().await;
    status
}

#[tokio::test]
async fn a_socket_that_never_connects_is_closed_at_the_auth_deadline() {
    let config = r#"
[listen]
port = 0
[limits]
auth_deadline_ms = 300
[workflows.scripted]
path = "fixture-scripted.wasm"
"#;
    let gw = Gateway::start(config, &["fixture-scripted"]);
    let started = Instant::now();
    let mut silent = Ws::open(&gw.ws_url()).await;
    assert!(silent.next_frame().await.is_none(), "closed by the server");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A socket that connects in time stays.
    let (mut ws, _) = gw.connect(None).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ws.request("health", json!({})).await["ok"], true);
}
