//! Load and soak: a bounded load generator (loopback only) against the real
//! server for a fixed duration. Each worker loops: start a run that parks on
//! an approval, follow it with two SSE subscribers (one from the start, one
//! that joins late with `Last-Event-ID`), approve it when it waits, and
//! check that both streams deliver the whole gap-free history and end with
//! `RunFinished`. Readers poll the listings and replay the whole stream of
//! a finished run meanwhile.
//!
//! Every second the host's RSS (`/proc/PID/status`), open descriptors
//! (`/proc/PID/fd`) and the size of the database's WAL are sampled. The properties: zero errors (every answer
//! as expected, every stream complete), no panic or internal error in the
//! log, and RSS and fds flat after warm-up: the last quarter of the run
//! holds no more than the first quarter after warm-up, within a tolerance;
//! the WAL stays under 192 MiB (it starts over past 64 MiB).
//! Printed: throughput, latency percentiles per request kind, errors, and
//! RSS and fds over time.
//!
//! `RELIABILITY_SOAK_SECS` (default 60, the CI short form; the full form is
//! 600), `RELIABILITY_SOAK_WORKERS` (runs in flight, default 8),
//! `RELIABILITY_SOAK_READERS` (listing pollers, default 2).

mod common;
mod http_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use http_support::{Options, Server, SseReader, script, task};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the load generator measured.
#[derive(Default)]
struct Stats {
    /// Request kind → latencies in microseconds.
    latencies: BTreeMap<&'static str, Vec<u64>>,
    requests: u64,
    runs: u64,
    events: u64,
    errors: Vec<String>,
}

impl Stats {
    fn record(&mut self, kind: &'static str, since: Instant) {
        self.requests += 1;
        self.latencies
            .entry(kind)
            .or_default()
            .push(since.elapsed().as_micros() as u64);
    }
}

type Shared = Arc<Mutex<Stats>>;

const MIB: f64 = 1024.0 * 1024.0;

fn error(stats: &Shared, message: String) {
    let mut stats = stats.lock().unwrap();
    if stats.errors.len() < 50 {
        eprintln!("soak error: {message}");
    }
    stats.errors.push(message);
}

/// One sample of the host process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    /// Size of the database's write-ahead log.
    wal_bytes: u64,
}

fn sample(pid: i32, at: Duration, state: &std::path::Path) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let wal_bytes = std::fs::metadata(state.join("smithers.db-wal")).map_or(0, |m| m.len());
    Sample {
        at,
        rss_kib,
        fds,
        wal_bytes,
    }
}

async fn json_request(
    stats: &Shared,
    kind: &'static str,
    request: reqwest::RequestBuilder,
) -> Option<Value> {
    let started = Instant::now();
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            error(stats, format!("{kind}: {e}"));
            return None;
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    stats.lock().unwrap().record(kind, started);
    if status != 200 {
        error(stats, format!("{kind}: {status} {body}"));
        return None;
    }
    match serde_json::from_str(&body) {
        Ok(value) => Some(value),
        Err(e) => {
            error(stats, format!("{kind}: not JSON ({e}): {body}"));
            None
        }
    }
}

async fn subscribe(
    stats: &Shared,
    client: &reqwest::Client,
    base: &str,
    run: &str,
    last_event_id: Option<u64>,
) -> Option<SseReader> {
    let started = Instant::now();
    let mut request = client.get(format!("{base}/v1/runs/{run}/events"));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    match request.send().await {
        Ok(response) if response.status() == 200 => {
            stats.lock().unwrap().record("sse-open", started);
            Some(SseReader::new(response))
        }
        Ok(response) => {
            error(stats, format!("sse-open {run}: {}", response.status()));
            None
        }
        Err(e) => {
            error(stats, format!("sse-open {run}: {e}"));
            None
        }
    }
}

/// Reads a stream to its end; checks seqs run on from `first` without gap
/// and that the last event is `RunFinished`. Calls `on_event` on each.
async fn follow(
    stats: &Shared,
    run: &str,
    mut sse: SseReader,
    first: u64,
    mut on_event: impl FnMut(&Value),
) -> Option<u64> {
    let mut next = first;
    let mut last_type = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = sse.next_event().await {
            if event.data["seq"].as_u64() != Some(next) {
                return Err(format!("seq {} where {next} was due", event.data["seq"]));
            }
            next += 1;
            last_type = event.data["type"].as_str().unwrap_or_default().to_string();
            on_event(&event.data);
        }
        Ok(())
    })
    .await;
    let outcome = match read {
        Err(_) => Err("the stream did not end within 60 s".to_string()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) if last_type != "RunFinished" => {
            Err(format!("the stream ended after {last_type:?}"))
        }
        Ok(Ok(())) => Ok(next),
    };
    match outcome {
        Ok(end) => {
            stats.lock().unwrap().events += end - first;
            Some(end)
        }
        Err(e) => {
            error(stats, format!("sse {run}: {e}"));
            None
        }
    }
}

/// Starts, follows and approves runs until `deadline`.
async fn worker(
    stats: Shared,
    client: reqwest::Client,
    base: String,
    worker: usize,
    deadline: Instant,
) {
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let run = format!("soak-{worker}-{n}");
        let input = script(json!({ "sequence": [
            task("prepare", json!({})),
            { "approval": { "id": "gate" } },
            { "parallel": { "max": 2, "children": [task("left", json!({})), task("right", json!({}))] } },
        ]}));
        let started = Instant::now();
        if json_request(
            &stats,
            "start",
            client.post(format!("{base}/v1/runs")).json(&json!({
                "workflowPath": "fixture-scripted.wasm",
                "runId": run,
                "input": input,
            })),
        )
        .await
        .is_none()
        {
            continue;
        }
        let Some(sse) = subscribe(&stats, &client, &base, &run, None).await else {
            continue;
        };
        // The first subscriber approves when the gate waits; a second one
        // joins at that point with `Last-Event-ID` and must see the rest.
        let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel::<u64>();
        let mut waiting_tx = Some(waiting_tx);
        let first = follow(&stats, &run, sse, 0, |event| {
            if event["type"] == "NodeWaitingApproval"
                && let Some(tx) = waiting_tx.take()
            {
                let _ = tx.send(event["seq"].as_u64().unwrap_or(0));
            }
        });
        let decide = async {
            let Ok(seq) = waiting_rx.await else {
                error(&stats, format!("{run}: never waited for its approval"));
                return None;
            };
            let late = subscribe(&stats, &client, &base, &run, Some(seq)).await?;
            json_request(
                &stats,
                "approve",
                client
                    .post(format!("{base}/v1/runs/{run}/nodes/gate/approve"))
                    .json(&json!({ "note": "soak", "decidedBy": "load" })),
            )
            .await?;
            follow(&stats, &run, late, seq + 1, |_| {}).await
        };
        let (first_end, late_end) = tokio::join!(first, decide);
        if let (Some(a), Some(b)) = (first_end, late_end) {
            if a != b {
                error(&stats, format!("{run}: streams ended at {a} and {b}"));
            } else {
                let mut stats = stats.lock().unwrap();
                stats.runs += 1;
                stats.record("run", started);
            }
        }
    }
}

/// Polls the listings and a recent run until `deadline`, and replays the
/// whole event stream of a finished run.
async fn reader(stats: Shared, client: reqwest::Client, base: String, deadline: Instant) {
    while Instant::now() < deadline {
        let finished = json_request(
            &stats,
            "list-finished",
            client.get(format!("{base}/v1/runs?limit=5&status=finished")),
        )
        .await;
        if let Some(id) = finished
            .as_ref()
            .and_then(|r| r.get(4)?.get("runId")?.as_str().map(str::to_string))
            && let Some(sse) = subscribe(&stats, &client, &base, &id, None).await
        {
            let started = Instant::now();
            if follow(&stats, &id, sse, 0, |_| {}).await.is_some() {
                stats.lock().unwrap().record("sse-replay", started);
            }
        }
        let runs = json_request(
            &stats,
            "list-runs",
            client.get(format!("{base}/v1/runs?limit=20")),
        )
        .await;
        json_request(
            &stats,
            "list-approvals",
            client.get(format!("{base}/v1/approvals")),
        )
        .await;
        if let Some(id) = runs
            .as_ref()
            .and_then(|r| r.get(0)?.get("runId")?.as_str().map(str::to_string))
        {
            json_request(
                &stats,
                "get-run",
                client.get(format!("{base}/v1/runs/{id}")),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

#[test]
fn soak_under_concurrent_starts_streams_and_approvals_has_no_errors_and_no_leaks() {
    let secs = env_or("RELIABILITY_SOAK_SECS", 60);
    let workers = env_or("RELIABILITY_SOAK_WORKERS", 8) as usize;
    let readers = env_or("RELIABILITY_SOAK_READERS", 2) as usize;
    let duration = Duration::from_secs(secs);
    // The first quarter (at least 10 s) warms caches, pools and the database.
    let warm_up = Duration::from_secs((secs / 4).max(10).min(secs / 2));
    println!("soak: {secs} s, {workers} workers, {readers} readers, warm-up {warm_up:?}");

    let server = Server::with(Options {
        install: vec!["fixture-scripted".into()],
        ..Default::default()
    });
    let pid = server.pid();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Compile the component once before the clock starts.
    runtime.block_on(async {
        let run = server
            .start_run("fixture-scripted.wasm", script(task("w", json!({}))))
            .await;
        server.wait_status(&run, "finished").await;
    });

    let stats: Shared = Arc::default();
    let started = Instant::now();
    let deadline = started + duration;
    let samples = runtime.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..workers {
            tasks.push(tokio::spawn(worker(
                stats.clone(),
                client.clone(),
                server.base.clone(),
                w,
                deadline,
            )));
        }
        for _ in 0..readers {
            tasks.push(tokio::spawn(reader(
                stats.clone(),
                client.clone(),
                server.base.clone(),
                deadline,
            )));
        }
        let mut samples = Vec::new();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut last_report = (Duration::ZERO, 0u64, 0u64);
        while Instant::now() < deadline {
            ticker.tick().await;
            let at = started.elapsed();
            samples.push(sample(pid, at, server.state.path()));
            if samples.len() % 5 == 0 {
                let s = samples.last().unwrap();
                let stats = stats.lock().unwrap();
                let span = (at - last_report.0).as_secs_f64();
                println!(
                    "soak: t={:>4.0}s  {:>6.1} req/s  {:>5.1} runs/s  rss {:>6.1} MiB  fds {:>3}  wal {:>5.1} MiB  errors {}",
                    at.as_secs_f64(),
                    (stats.requests - last_report.1) as f64 / span,
                    (stats.runs - last_report.2) as f64 / span,
                    s.rss_kib as f64 / 1024.0,
                    s.fds,
                    s.wal_bytes as f64 / MIB,
                    stats.errors.len()
                );
                last_report = (at, stats.requests, stats.runs);
            }
        }
        // Workers finish the run in hand (bounded).
        let drained =
            tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks)).await;
        if drained.is_err() {
            error(&stats, "workers did not finish within 60 s".into());
        }
        samples
    });
    let elapsed = started.elapsed().as_secs_f64();
    let log = server.log();
    drop(server);

    let stats = std::mem::take(&mut *stats.lock().unwrap());
    println!(
        "soak: {} requests, {} runs, {} events streamed in {elapsed:.1} s: \
         {:.1} req/s, {:.1} runs/s; errors: {}",
        stats.requests,
        stats.runs,
        stats.events,
        stats.requests as f64 / elapsed,
        stats.runs as f64 / elapsed,
        stats.errors.len()
    );
    for (kind, latencies) in &stats.latencies {
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        println!(
            "soak: {kind:<15} n={:<6} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            sorted.len(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.9),
            percentile(&sorted, 0.99),
            percentile(&sorted, 1.0),
        );
    }
    let after: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.at >= warm_up)
        .collect();
    let quarter = (after.len() / 4).max(1);
    let early = &after[..quarter.min(after.len())];
    let late = &after[after.len().saturating_sub(quarter)..];
    let rss_early = median(early.iter().map(|s| s.rss_kib).collect());
    let rss_late = median(late.iter().map(|s| s.rss_kib).collect());
    let fds_early = early.iter().map(|s| s.fds).max().unwrap_or(0);
    let fds_late = late.iter().map(|s| s.fds).max().unwrap_or(0);
    println!(
        "soak: after warm-up RSS {:.1} -> {:.1} MiB (median of first and last quarter), \
         fds {fds_early} -> {fds_late} (max); samples (s, MiB, fds): {}",
        rss_early as f64 / 1024.0,
        rss_late as f64 / 1024.0,
        samples
            .iter()
            .step_by(5)
            .map(|s| format!(
                "{}:{:.1}:{}",
                s.at.as_secs(),
                s.rss_kib as f64 / 1024.0,
                s.fds
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );

    assert!(
        stats.errors.is_empty(),
        "{} errors, first: {:?}",
        stats.errors.len(),
        &stats.errors[..stats.errors.len().min(10)]
    );
    assert!(
        !log.contains("panicked") && !log.contains("internal error"),
        "the server log shows a panic or an internal error:\n{log}"
    );
    assert!(stats.runs > 0, "no run completed");
    assert!(!after.is_empty(), "no sample after warm-up");
    // Flat: at most 10 % + 16 MiB of RSS growth (allocator and SQLite page
    // cache noise) and a handful of descriptors (connections in flight).
    let rss_limit = rss_early + rss_early / 10 + 16 * 1024;
    assert!(
        rss_late <= rss_limit,
        "RSS grew from {rss_early} KiB to {rss_late} KiB after warm-up (limit {rss_limit} KiB)"
    );
    // The WAL starts over once past 64 MiB; it used to grow without bound
    // under this load (readers nearly always on an older snapshot).
    let wal_max = samples.iter().map(|s| s.wal_bytes).max().unwrap_or(0);
    println!("soak: largest WAL {:.1} MiB", wal_max as f64 / MIB);
    assert!(
        wal_max <= 192 * 1024 * 1024,
        "the WAL grew to {:.1} MiB",
        wal_max as f64 / MIB
    );
    let fd_limit = fds_early + 8;
    assert!(
        fds_late <= fd_limit,
        "open fds grew from {fds_early} to {fds_late} after warm-up (limit {fd_limit})"
    );
}
