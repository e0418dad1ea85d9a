//! A whole measurement on one server: the sample sizes ([`Plan`]), every
//! workload in its own bounded task, and the [`Figures`] they give.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use smithers_bench::Summary;
use smithers_client::RunStatus;

use crate::WAIT;
use crate::target::{Kind, Target};
use crate::workloads::{approve_latency, parked_rss, start_latency, step_overhead, throughput};

/// Sample sizes.
pub(crate) struct Plan {
    pub(crate) start: usize,
    pub(crate) approve: usize,
    pub(crate) steps: Vec<(u64, usize)>,
    pub(crate) throughput: Duration,
    pub(crate) max_runs: u64,
    pub(crate) parked: usize,
}

impl Plan {
    pub(crate) fn ours_alone(quick: bool) -> Self {
        Self {
            start: if quick { 20 } else { 200 },
            approve: if quick { 20 } else { 200 },
            steps: Vec::new(),
            throughput: Duration::from_secs(if quick { 2 } else { 10 }),
            max_runs: 100_000,
            parked: if quick { 500 } else { 10_000 },
        }
    }

    pub(crate) fn peer(quick: bool, kind: Kind) -> Self {
        let smithers = kind == Kind::Smithers;
        Self {
            start: if quick { 5 } else { 20 },
            approve: if quick { 3 } else { 12 },
            steps: if quick {
                vec![(10, 1), (100, 1)]
            } else if smithers {
                vec![(10, 3), (100, 2), (400, 1)]
            } else {
                vec![(10, 5), (100, 3), (400, 3)]
            },
            throughput: Duration::from_secs(if quick { 2 } else { 5 }),
            max_runs: 20_000,
            parked: if quick { 100 } else { 1_000 },
        }
    }
}

/// A figure, or why there is none (the workload failed or ran out of time).
pub(crate) type Outcome<T> = Result<T, String>;

/// Runs one workload in its own task under a time limit: a panic (a failed
/// request, a run that failed, a wait that expired) or the limit becomes the
/// figure's `Err`, and the task is aborted, so one misbehaving workload can
/// neither hang the benchmark nor lose the other figures.
pub(crate) async fn bounded<T, F>(t: &Target, what: &str, limit: Duration, work: F) -> Outcome<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let mut task = tokio::spawn(work);
    let outcome = match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            Err(format!("failed: {}", first_line(&message)))
        }
        Ok(Err(e)) => Err(format!("failed: {e}")),
        Err(_) => {
            task.abort();
            Err(format!("no result within {} s", limit.as_secs()))
        }
    };
    if let Err(why) = &outcome {
        eprintln!("[{}] {what}: {why}", t.name());
    }
    outcome
}

pub(crate) fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut short: String = line.chars().take(160).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

/// Everything measured on one server.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(crate) warm_up: Outcome<()>,
    pub(crate) start: Outcome<Summary>,
    pub(crate) approve: Outcome<Summary>,
    /// N → (per step from the server's record, per step wall clock), ms.
    pub(crate) steps: BTreeMap<u64, Outcome<(f64, f64)>>,
    /// Concurrency → runs/s.
    pub(crate) throughput: BTreeMap<usize, Outcome<f64>>,
    pub(crate) rss_idle_kib: u64,
    /// RSS with the parked runs (KiB), and the time parking them took.
    pub(crate) parked_rss: Outcome<(u64, Duration)>,
    pub(crate) parked: usize,
}

/// The time limit of a loop of `count` samples, each allowed `each`.
pub(crate) fn limit(count: usize, each: Duration) -> Duration {
    Duration::from_secs(30) + each * count as u32
}

pub(crate) async fn measure(t: Target, plan: &Plan) -> Figures {
    let t = Arc::new(t);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_kib = t.rss_kib();
    eprintln!("[{}] idle RSS {} MiB", t.name(), rss_idle_kib / 1024);

    // Warm-up: load (compile, import) every workflow once.
    let w = t.clone();
    let warm_up = bounded(&t, "warm-up", Duration::from_secs(300), async move {
        for _ in 0..3 {
            let run = w.start("hello", json!({})).await;
            w.wait_terminal(&run).await;
        }
        let run = w.start("fibo", json!({ "n": 3 })).await;
        w.wait_terminal(&run).await;
        let run = w.start("approval", json!({})).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let status = w.status(&run).await;
            if status == RunStatus::WaitingApproval {
                break;
            }
            assert!(Instant::now() < deadline, "{run} did not park in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.approve(&run).await;
        w.wait_terminal(&run).await;
    })
    .await;
    phase(&t, "warm-up");

    eprintln!(
        "[{}] (a) start → RunStarted, {} samples",
        t.name(),
        plan.start
    );
    let (w, n) = (t.clone(), plan.start);
    let start = bounded(&t, "(a)", limit(n, Duration::from_secs(10)), async move {
        start_latency(&w, n).await
    })
    .await;
    phase(&t, "(a)");

    let mut steps = BTreeMap::new();
    for &(n, reps) in &plan.steps {
        eprintln!("[{}] (b) fibo N={n}, {reps} runs", t.name());
        let w = t.clone();
        // A step gets up to 2 s (Smithers takes hundreds of ms, more as N grows).
        let each = Duration::from_secs(20) + Duration::from_secs(2) * n as u32;
        let figure = bounded(&t, &format!("(b) N={n}"), limit(reps, each), async move {
            step_overhead(&w, n, reps).await
        })
        .await;
        steps.insert(n, figure);
    }
    phase(&t, "(b)");

    eprintln!(
        "[{}] (c) approve → NodeStarted, {} samples",
        t.name(),
        plan.approve
    );
    let (w, n) = (t.clone(), plan.approve);
    let approve = bounded(&t, "(c)", limit(n, Duration::from_secs(15)), async move {
        approve_latency(&w, n).await
    })
    .await;
    phase(&t, "(c)");

    let mut throughput_by = BTreeMap::new();
    for c in [1, 8, 64] {
        eprintln!("[{}] (d) hello runs/s at concurrency {c}", t.name());
        let (w, d, max) = (t.clone(), plan.throughput, plan.max_runs);
        let figure = bounded(
            &t,
            &format!("(d) c={c}"),
            d + Duration::from_secs(60),
            async move { throughput(&w, c, d, max).await },
        )
        .await;
        throughput_by.insert(c, figure);
        phase(&t, &format!("(d) at concurrency {c}"));
    }

    eprintln!("[{}] (e) parking {} approval runs", t.name(), plan.parked);
    let (w, n) = (t.clone(), plan.parked);
    let parked_rss = bounded(
        &t,
        "(e)",
        limit(n, Duration::from_millis(500)) + Duration::from_secs(60),
        async move { parked_rss(&w, n).await },
    )
    .await;
    Figures {
        warm_up,
        start,
        approve,
        steps,
        throughput: throughput_by,
        rss_idle_kib,
        parked_rss,
        parked: plan.parked,
    }
}

/// Logs the server's RSS after a phase: memory kept after load is part of
/// what parked runs are charged with in (e).
pub(crate) fn phase(t: &Target, what: &str) {
    eprintln!(
        "[{}]     RSS after {what}: {} MiB",
        t.name(),
        t.rss_kib() / 1024
    );
}
