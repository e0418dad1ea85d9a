//! The workloads (a)–(e), each against one [`Target`]: the same client
//! calls for every server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use smithers_bench::{Summary, summarize};
use smithers_client::{Event, EventKind, EventStream, RunStatus};
use tokio::task::JoinSet;

use crate::WAIT;
use crate::target::Target;

/// (a) `POST /v1/runs` until `RunStarted` arrives on the run's SSE stream
/// (opened right after the POST answers, as a client does).
pub(crate) async fn start_latency(t: &Target, samples: usize) -> Summary {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let run = t.start("hello", json!({})).await;
        let (mut events, mut event) = t.events(&run).await;
        while !matches!(event.kind, EventKind::RunStarted { .. }) {
            event = next(&mut events).await;
        }
        times.push(started.elapsed());
        drop(events);
        t.wait_terminal(&run).await;
    }
    summarize(&mut times)
}

/// (c) With the run parked at `gate` and its SSE stream open: approve (and,
/// on Smithers, resume) until the next `NodeStarted` arrives.
pub(crate) async fn approve_latency(t: &Target, samples: usize) -> Summary {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let run = t.start("approval", json!({})).await;
        // Parked: the run's status changed, not just the node's (Smithers
        // ignores a resume until the run has parked).
        let (mut events, mut event) = t.events(&run).await;
        while !matches!(event.kind, EventKind::RunStatusChanged { ref status } if *status == RunStatus::WaitingApproval)
        {
            event = next(&mut events).await;
        }
        let started = Instant::now();
        t.approve(&run).await;
        loop {
            if matches!(next(&mut events).await.kind, EventKind::NodeStarted { .. }) {
                break;
            }
        }
        times.push(started.elapsed());
        drop(events);
        t.wait_terminal(&run).await;
    }
    summarize(&mut times)
}

pub(crate) async fn next(events: &mut EventStream) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event")
}

/// (b) Per-step overhead of `fibo` with N steps: the server's own record
/// (`finishedAtMs - startedAtMs`) divided by N, median of `reps` runs.
pub(crate) async fn step_overhead(t: &Target, n: u64, reps: usize) -> (f64, f64) {
    let mut per_step = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..reps {
        let started = Instant::now();
        let run = t.start("fibo", json!({ "n": n })).await;
        let status = t.wait_terminal(&run).await;
        let elapsed = started.elapsed();
        assert_eq!(status, RunStatus::Finished, "{} fibo {n}", t.name());
        let view = t
            .client
            .get_status(&run)
            .await
            .unwrap_or_else(|e| panic!("status of {run}: {e}"));
        let took = view.finished_at_ms.unwrap() - view.started_at_ms.unwrap();
        per_step.push(took as f64 / n as f64);
        wall.push(elapsed.as_secs_f64() * 1000.0 / n as f64);
    }
    (median(&mut per_step), median(&mut wall))
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// (d) `concurrency` clients each starting `hello` and waiting for its end,
/// for `duration` (or `max_runs` in all); completed runs per second. The
/// workers live in a `JoinSet`: dropping this future (a time limit) aborts them.
pub(crate) async fn throughput(
    t: &Arc<Target>,
    concurrency: usize,
    duration: Duration,
    max_runs: u64,
) -> f64 {
    // Smithers is polled every 20 ms per client up to 8 clients, then less
    // often (64 clients: 160 ms), so that the polls (≤ 400/s) do not take
    // the cores it needs to run the runs.
    t.poll_ms
        .store(20 * (concurrency as u64 / 8).max(1), Ordering::Relaxed);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let t = t.clone();
        let done = done.clone();
        workers.spawn(async move {
            while Instant::now() < deadline && done.load(Ordering::Relaxed) < max_runs {
                let run = t.start("hello", json!({})).await;
                let status = t.wait_terminal(&run).await;
                assert_eq!(status, RunStatus::Finished, "{run} ended {status}");
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    join_all(workers).await;
    t.poll_ms.store(20, Ordering::Relaxed);
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Waits for every worker; a worker's panic is re-raised here.
pub(crate) async fn join_all(mut workers: JoinSet<()>) {
    while let Some(result) = workers.join_next().await {
        if let Err(e) = result {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("worker: {e}");
        }
    }
}

/// (e) Starts `count` approval runs (32 at a time), waits until every one
/// is parked, and returns the server's RSS then (KiB) and the time it took.
pub(crate) async fn parked_rss(t: &Arc<Target>, count: usize) -> (u64, Duration) {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..32 {
        let t = t.clone();
        let next = next.clone();
        workers.spawn(async move {
            let mut runs = Vec::new();
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < count {
                runs.push(t.start("approval", json!({})).await);
            }
            let deadline = Instant::now() + WAIT * 2;
            for run in runs {
                loop {
                    let status = t.status(&run).await;
                    if status == RunStatus::WaitingApproval {
                        break;
                    }
                    assert!(!status.is_terminal(), "{run} ended: {status}");
                    assert!(Instant::now() < deadline, "{run} did not park in time");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
    join_all(workers).await;
    let took = started.elapsed();
    // Let allocators settle (and bun's GC run) before reading RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (t.rss_kib(), took)
}
