//! Server-mode benchmarks, over HTTP against real server processes on
//! 127.0.0.1, measured with `smithers-client` (the same client code for
//! every server):
//!
//! * `server` (issue 5): our release binary alone. `POST /v1/runs` →
//!   `RunStarted` seen on SSE, approve → next `NodeStarted` on SSE, sustained
//!   `hello` runs/s, RSS with 10 000 parked approval runs.
//! * `server --peer` (issue 7): the same workloads side by side against the
//!   real Smithers server (`bench/peer`, installed by `bench/peer/run.sh`),
//!   plus per-step overhead of N sequential tasks, and a chart.
//!
//! Run: `bench/peer/run.sh` (the peer table), or
//! `cargo run --release -p smithers-bench --bin server [-- --write]` after
//! `cargo build --release -p smithers-host`. `--write` puts the figures into
//! bench/README.md (and the chart into bench/peer/results.svg). `--quick`
//! shrinks every sample for a smoke run. Every loop is bounded in count and
//! time; nothing listens beyond loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use smithers_bench::{Summary, build_example, machine, summarize, workspace_root};
use smithers_client::{
    Client, Decision, Event, EventKind, EventStream, RunStatus, RunWorkflow, StreamOptions,
};
use tokio::task::JoinSet;

/// Longest any single wait may take before the benchmark gives up.
const WAIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    Smithers,
}

/// A server process under test, killed on drop.
struct Target {
    kind: Kind,
    child: Child,
    client: Client,
    _dirs: Vec<tempfile::TempDir>,
    /// How often `wait_terminal` polls Smithers, in ms (see [`throughput`]).
    poll_ms: AtomicU64,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's stdout until the line starting with `prefix` and
/// returns the URL after it.
fn wait_listening(child: &mut Child, prefix: &str) -> String {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            if let Some(url) = line.strip_prefix(&prefix) {
                let _ = tx.send(url.trim().to_string());
                break;
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the server announces its address within 120 s")
}

impl Target {
    /// Our release binary on a fresh root and state dir, with the example
    /// components copied in.
    fn ours(components: &[(&str, PathBuf)]) -> Self {
        let binary = std::env::current_exe()
            .expect("current exe")
            .with_file_name("smithers-host");
        assert!(
            binary.is_file(),
            "{} is missing: cargo build --release -p smithers-host",
            binary.display()
        );
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        for (name, path) in components {
            std::fs::copy(path, root.path().join(format!("{name}.wasm"))).unwrap();
        }
        let mut child = Command::new(binary)
            .args([
                "--port",
                "0",
                "--host",
                "127.0.0.1",
                "--no-watch",
                "--root-dir",
            ])
            .arg(root.path())
            .arg("--state-dir")
            .arg(state.path())
            .env_remove("SMITHERS_API_KEY")
            .env("SMITHERS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start smithers-host");
        let url = wait_listening(&mut child, "smithers-host listening on ");
        Self {
            kind: Kind::Ours,
            child,
            client: Client::new(&url).unwrap(),
            _dirs: vec![root, state],
            poll_ms: AtomicU64::new(20),
        }
    }

    /// The pinned Smithers server (`bench/peer/server.ts`) under bun, with
    /// NODE_ENV=production (React's production build) and no auto-install.
    fn smithers(peer: &Path) -> Self {
        let bun = peer.join("node_modules/.bin/bun");
        assert!(
            bun.is_file(),
            "{} is missing: run bench/peer/run.sh (it installs the pinned Smithers)",
            bun.display()
        );
        // Under bench/peer so that the workflows resolve the pinned
        // node_modules by walking up (never bun's auto-install).
        let scratch = peer.join(".install");
        std::fs::create_dir_all(&scratch).unwrap();
        let root = tempfile::tempdir_in(&scratch).unwrap();
        let db = tempfile::tempdir_in(&scratch).unwrap();
        for name in ["hello", "fibo", "approval"] {
            std::fs::copy(
                peer.join("workflows").join(format!("{name}.tsx")),
                root.path().join(format!("{name}.tsx")),
            )
            .unwrap();
        }
        let mut child = Command::new(bun)
            .current_dir(peer)
            .args(["--no-install", "run", "server.ts"])
            .env("ROOT_DIR", root.path())
            .env("PEER_DB_DIR", db.path())
            .env("PORT", "0")
            .env("NODE_ENV", "production")
            .env_remove("SMITHERS_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bun");
        let url = wait_listening(&mut child, "smithers listening on ");
        Self {
            kind: Kind::Smithers,
            child,
            client: Client::new(&url).unwrap(),
            _dirs: vec![root, db],
            poll_ms: AtomicU64::new(20),
        }
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Ours => "smithers-host",
            Kind::Smithers => "Smithers",
        }
    }

    fn workflow(&self, name: &str) -> String {
        match self.kind {
            Kind::Ours => format!("{name}.wasm"),
            Kind::Smithers => format!("{name}.tsx"),
        }
    }

    async fn start(&self, name: &str, input: serde_json::Value) -> String {
        self.client
            .run_workflow(&RunWorkflow::new(self.workflow(name)).input(input))
            .await
            .unwrap_or_else(|e| panic!("{}: start {name}: {e}", self.name()))
            .run_id
    }

    /// Approves `gate`; Smithers also needs an explicit resume.
    async fn approve(&self, run: &str) {
        self.client
            .approve(run, "gate", &Decision::default())
            .await
            .unwrap_or_else(|e| panic!("{}: approve: {e}", self.name()));
        if self.kind == Kind::Smithers {
            self.client
                .resume(run, Some(&self.workflow("approval")))
                .await
                .unwrap_or_else(|e| panic!("Smithers: resume: {e}"));
        }
    }

    /// Waits until the run ended, as fast as the server lets a client know:
    /// our SSE pushes the terminal event; Smithers' SSE polls its database
    /// every 500 ms, so it is polled through `GET /v1/runs/:id` every 20 ms
    /// instead (its best case).
    async fn wait_terminal(&self, run: &str) -> RunStatus {
        let deadline = Instant::now() + WAIT;
        match self.kind {
            Kind::Ours => {
                let (mut events, first) = self.events(run).await;
                let mut last = first;
                while let Some(event) = tokio::time::timeout(WAIT, events.next())
                    .await
                    .expect("terminal event in time")
                {
                    last = event.expect("event");
                }
                match last.kind {
                    EventKind::RunFinished {} => RunStatus::Finished,
                    EventKind::RunFailed { .. } => RunStatus::Failed,
                    _ => RunStatus::Other("unknown".into()),
                }
            }
            Kind::Smithers => loop {
                let status = self.status(run).await;
                if status.is_terminal() {
                    return status;
                }
                assert!(Instant::now() < deadline, "{run} did not end in time");
                let poll = self.poll_ms.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(poll)).await;
            },
        }
    }

    /// A run's status. Smithers starts a run after answering the POST and
    /// answers 404 until its engine has written the run's row: that counts
    /// as "not started yet" (retried every 2 ms, for up to [`WAIT`]).
    async fn status(&self, run: &str) -> RunStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client.get_status(run).await {
                Ok(view) => return view.status,
                Err(e) if not_yet(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => panic!("status of {run}: {e}"),
            }
        }
    }

    /// A run's event stream and its first event; a 404 (see
    /// [`Target::status`]) is retried every 2 ms, for up to [`WAIT`].
    async fn events(&self, run: &str) -> (EventStream, Event) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut events = self.client.stream_events_with(
                run,
                StreamOptions {
                    idle_timeout: WAIT,
                    ..StreamOptions::default()
                },
            );
            match tokio::time::timeout(WAIT, events.next())
                .await
                .expect("first event in time")
            {
                Some(Ok(event)) => return (events, event),
                Some(Err(e)) if not_yet(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Some(Err(e)) => panic!("events of {run}: {e}"),
                None => panic!("the event stream of {run} ended before its first event"),
            }
        }
    }

    /// Resident memory of the server and its children, in KiB.
    fn rss_kib(&self) -> u64 {
        tree_rss_kib(self.child.id())
    }
}

fn tree_rss_kib(root: u32) -> u64 {
    let mut parents: BTreeMap<u32, u32> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        parents.insert(pid, ppid);
    }
    let in_tree = |mut pid: u32| loop {
        if pid == root {
            return true;
        }
        match parents.get(&pid) {
            Some(&ppid) if ppid != 0 && ppid != pid => pid = ppid,
            _ => return false,
        }
    };
    parents
        .keys()
        .filter(|pid| in_tree(**pid))
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .unwrap_or(0)
        })
        .sum()
}

/// (a) `POST /v1/runs` until `RunStarted` arrives on the run's SSE stream
/// (opened right after the POST answers, as a client does).
async fn start_latency(t: &Target, samples: usize) -> Summary {
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
async fn approve_latency(t: &Target, samples: usize) -> Summary {
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

/// Whether an error means the server does not know the run yet.
fn not_yet(e: &smithers_client::Error) -> bool {
    matches!(e, smithers_client::Error::Api { status: 404, .. })
}

async fn next(events: &mut EventStream) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event")
}

/// (b) Per-step overhead of `fibo` with N steps: the server's own record
/// (`finishedAtMs - startedAtMs`) divided by N, median of `reps` runs.
async fn step_overhead(t: &Target, n: u64, reps: usize) -> (f64, f64) {
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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// (d) `concurrency` clients each starting `hello` and waiting for its end,
/// for `duration` (or `max_runs` in all); completed runs per second. The
/// workers live in a `JoinSet`: dropping this future (a time limit) aborts them.
async fn throughput(t: &Arc<Target>, concurrency: usize, duration: Duration, max_runs: u64) -> f64 {
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
async fn join_all(mut workers: JoinSet<()>) {
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
async fn parked_rss(t: &Arc<Target>, count: usize) -> (u64, Duration) {
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

/// Sample sizes.
struct Plan {
    start: usize,
    approve: usize,
    steps: Vec<(u64, usize)>,
    throughput: Duration,
    max_runs: u64,
    parked: usize,
}

impl Plan {
    fn ours_alone(quick: bool) -> Self {
        Self {
            start: if quick { 20 } else { 200 },
            approve: if quick { 20 } else { 200 },
            steps: Vec::new(),
            throughput: Duration::from_secs(if quick { 2 } else { 10 }),
            max_runs: 100_000,
            parked: if quick { 500 } else { 10_000 },
        }
    }

    fn peer(quick: bool, kind: Kind) -> Self {
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
type Outcome<T> = Result<T, String>;

/// Runs one workload in its own task under a time limit: a panic (a failed
/// request, a run that failed, a wait that expired) or the limit becomes the
/// figure's `Err`, and the task is aborted, so one misbehaving workload can
/// neither hang the benchmark nor lose the other figures.
async fn bounded<T, F>(t: &Target, what: &str, limit: Duration, work: F) -> Outcome<T>
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

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut short: String = line.chars().take(160).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

/// Everything measured on one server.
#[derive(Debug, Clone)]
struct Figures {
    warm_up: Outcome<()>,
    start: Outcome<Summary>,
    approve: Outcome<Summary>,
    /// N → (per step from the server's record, per step wall clock), ms.
    steps: BTreeMap<u64, Outcome<(f64, f64)>>,
    /// Concurrency → runs/s.
    throughput: BTreeMap<usize, Outcome<f64>>,
    rss_idle_kib: u64,
    /// RSS with the parked runs (KiB), and the time parking them took.
    parked_rss: Outcome<(u64, Duration)>,
    parked: usize,
}

/// The time limit of a loop of `count` samples, each allowed `each`.
fn limit(count: usize, each: Duration) -> Duration {
    Duration::from_secs(30) + each * count as u32
}

async fn measure(t: Target, plan: &Plan) -> Figures {
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
fn phase(t: &Target, what: &str) {
    eprintln!(
        "[{}]     RSS after {what}: {} MiB",
        t.name(),
        t.rss_kib() / 1024
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One row of a comparison: label, ours, theirs, ratio (how many times
/// better ours is; none when either side has no figure), target ratio.
struct Row {
    label: String,
    ours: String,
    theirs: String,
    ratio: Option<f64>,
    target: Option<f64>,
}

/// Which way a figure is better.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// A row from two outcomes: `show` formats a value (ours, theirs may use
/// other precision), `better` says how the ratio is taken.
fn row(
    label: &str,
    ours: &Outcome<f64>,
    theirs: &Outcome<f64>,
    show: (&dyn Fn(f64) -> String, &dyn Fn(f64) -> String),
    better: Better,
    target: Option<f64>,
) -> Row {
    let text = |o: &Outcome<f64>, f: &dyn Fn(f64) -> String| match o {
        Ok(v) => f(*v),
        Err(why) => why.clone(),
    };
    let ratio = match (ours, theirs, better) {
        (Ok(o), Ok(t), Better::Lower) => Some(t / o),
        (Ok(o), Ok(t), Better::Higher) => Some(o / t),
        _ => None,
    };
    Row {
        label: label.into(),
        ours: text(ours, show.0),
        theirs: text(theirs, show.1),
        ratio,
        target,
    }
}

fn peer_rows(ours: &Figures, theirs: &Figures) -> Vec<Row> {
    let millis = (
        &(|v: f64| format!("{v:.3} ms")) as &dyn Fn(f64) -> String,
        &(|v: f64| format!("{v:.1} ms")) as &dyn Fn(f64) -> String,
    );
    let per_sec = (
        &(|v: f64| format!("{v:.0} /s")) as &dyn Fn(f64) -> String,
        &(|v: f64| format!("{v:.1} /s")) as &dyn Fn(f64) -> String,
    );
    let mebi = (
        &(|v: f64| format!("{v:.1} MiB")) as &dyn Fn(f64) -> String,
        &(|v: f64| format!("{v:.1} MiB")) as &dyn Fn(f64) -> String,
    );
    let p50 = |s: &Outcome<Summary>| s.as_ref().map(|s| ms(s.p50)).map_err(Clone::clone);
    let p95 = |s: &Outcome<Summary>| s.as_ref().map(|s| ms(s.p95)).map_err(Clone::clone);
    let missing = || Err("not measured".to_string());

    let mut rows = vec![
        row(
            "(a) start → RunStarted p50",
            &p50(&ours.start),
            &p50(&theirs.start),
            millis,
            Better::Lower,
            Some(10.0),
        ),
        row(
            "(a) start → RunStarted p95",
            &p95(&ours.start),
            &p95(&theirs.start),
            millis,
            Better::Lower,
            None,
        ),
    ];
    let per_step = |f: &Figures, n: &u64| {
        f.steps
            .get(n)
            .map_or_else(missing, |o| o.as_ref().map(|s| s.0).map_err(Clone::clone))
    };
    for n in ours.steps.keys() {
        rows.push(row(
            &format!("(b) per-step overhead, N = {n}"),
            &per_step(ours, n),
            &per_step(theirs, n),
            millis,
            Better::Lower,
            Some(10.0),
        ));
    }
    rows.push(row(
        "(c) approve → NodeStarted p50",
        &p50(&ours.approve),
        &p50(&theirs.approve),
        millis,
        Better::Lower,
        Some(10.0),
    ));
    rows.push(row(
        "(c) approve → NodeStarted p95",
        &p95(&ours.approve),
        &p95(&theirs.approve),
        millis,
        Better::Lower,
        None,
    ));
    let rate = |f: &Figures, c: &usize| f.throughput.get(c).cloned().unwrap_or_else(missing);
    for c in ours.throughput.keys() {
        rows.push(row(
            &format!("(d) hello runs/s, concurrency {c}"),
            &rate(ours, c),
            &rate(theirs, c),
            per_sec,
            Better::Higher,
            None,
        ));
    }
    rows.push(row(
        "(e) RSS idle",
        &Ok(mib(ours.rss_idle_kib)),
        &Ok(mib(theirs.rss_idle_kib)),
        mebi,
        Better::Lower,
        Some(5.0),
    ));
    let parked = |f: &Figures| {
        f.parked_rss
            .as_ref()
            .map(|(kib, _)| mib(*kib))
            .map_err(Clone::clone)
    };
    rows.push(row(
        &format!("(e) RSS with {} parked runs", ours.parked),
        &parked(ours),
        &parked(theirs),
        mebi,
        Better::Lower,
        Some(5.0),
    ));
    rows
}

fn peer_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | smithers-host | Smithers 0.32.0 | ours is | target | met |\n|---|---:|---:|---:|---:|:-:|\n",
    );
    for r in rows {
        let target = r.target.map(|t| format!("≥ {t:.0}×")).unwrap_or_default();
        let met = match (r.target, r.ratio) {
            (Some(t), Some(ratio)) if ratio >= t => "yes",
            (Some(_), Some(_)) => "**no**",
            (Some(_), None) => "n/a",
            (None, _) => "",
        };
        let ratio = r.ratio.map(|v| format!("{v:.1}×")).unwrap_or("–".into());
        out.push_str(&format!(
            "| {} | {} | {} | {ratio} | {target} | {met} |\n",
            r.label, r.ours, r.theirs
        ));
    }
    out
}

/// A horizontal bar chart of the ratios (log scale), hand-written SVG.
fn chart(rows: &[Row], caption: &str) -> String {
    let (left, width, row_h, top) = (300.0, 420.0, 26.0, 46.0);
    let max = rows
        .iter()
        .filter_map(|r| r.ratio)
        .fold(10.0f64, f64::max)
        .log10()
        .ceil();
    let scale = |ratio: f64| (ratio.max(1.0).log10() / max) * width;
    let height = top + rows.len() as f64 * row_h + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">smithers-host vs Smithers 0.32.0: how many times better (log scale)</text>\n\
         <text x=\"10\" y=\"36\" fill=\"#555\">{caption}</text>\n",
        w = left + width + 90.0,
    );
    for decade in 0..=max as u32 {
        let x = left + scale(10f64.powi(decade as i32));
        svg.push_str(&format!(
            "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/>\n<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}×</text>\n",
            height - 30.0,
            height - 16.0,
            10u64.pow(decade)
        ));
    }
    let ten = left + scale(10.0);
    svg.push_str(&format!(
        "<line x1=\"{ten}\" y1=\"{top}\" x2=\"{ten}\" y2=\"{}\" stroke=\"#c00\" stroke-dasharray=\"4 3\"/>\n",
        height - 30.0
    ));
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            left - 8.0,
            y + 16.0,
            xml_escape(&r.label),
        ));
        let Some(ratio) = r.ratio else {
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" fill=\"#c00\">no figure: {}</text>\n",
                left + 6.0,
                y + 16.0,
                xml_escape(if is_failure(&r.theirs) {
                    &r.theirs
                } else {
                    &r.ours
                }),
            ));
            continue;
        };
        let met = r.target.is_none_or(|t| ratio >= t);
        let color = if met { "#2a7ab0" } else { "#d9822b" };
        let bar = scale(ratio).max(1.0);
        svg.push_str(&format!(
            "<rect x=\"{left}\" y=\"{}\" width=\"{bar:.1}\" height=\"{}\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{}\">{ratio:.1}×</text>\n",
            y + 4.0,
            row_h - 8.0,
            left + bar + 6.0,
            y + 16.0,
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Whether a cell holds why there is no figure rather than a figure.
fn is_failure(cell: &str) -> bool {
    ["failed", "no result", "not measured"]
        .iter()
        .any(|p| cell.starts_with(p))
}

/// "5/3/3 runs at N = 10/100/400": runs per N of a plan.
fn reps(plan: &Plan) -> String {
    let join = |f: &dyn Fn(&(u64, usize)) -> String| {
        plan.steps.iter().map(f).collect::<Vec<_>>().join("/")
    };
    format!(
        "{} runs at N = {}",
        join(&|s| s.1.to_string()),
        join(&|s| s.0.to_string())
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn ours_alone_table(f: &Figures) -> String {
    let check = |ok: bool| if ok { "yes" } else { "**no**" };
    let latency = |o: &Outcome<Summary>, target_ms: f64| match o {
        Ok(s) => (
            format!("p50 {:.2} ms, p95 {:.2} ms", ms(s.p50), ms(s.p95)),
            check(ms(s.p50) <= target_ms),
        ),
        Err(why) => (why.clone(), "n/a"),
    };
    let mut out = String::from("| figure | measured | target | met |\n|---|---:|---:|:-:|\n");
    let (text, met) = latency(&f.start, 2.0);
    out.push_str(&format!(
        "| `POST /v1/runs` → `RunStarted` on SSE | {text} | p50 ≤ 2 ms | {met} |\n"
    ));
    let (text, met) = latency(&f.approve, 5.0);
    out.push_str(&format!(
        "| approve → next `NodeStarted` on SSE | {text} | p50 ≤ 5 ms | {met} |\n"
    ));
    let best = f
        .throughput
        .values()
        .filter_map(|r| r.as_ref().ok().copied())
        .fold(0.0, f64::max);
    let rates: Vec<String> = f
        .throughput
        .iter()
        .map(|(c, r)| match r {
            Ok(r) => format!("{r:.0} at c={c}"),
            Err(why) => format!("c={c}: {why}"),
        })
        .collect();
    out.push_str(&format!(
        "| sustained `hello` runs/s | {} | ≥ 500 | {} |\n",
        rates.join(", "),
        check(best >= 500.0)
    ));
    let (text, met) = match &f.parked_rss {
        Ok((kib, took)) => (
            format!(
                "{:.1} MiB (idle {:.1} MiB; parking took {:.1} s)",
                mib(*kib),
                mib(f.rss_idle_kib),
                took.as_secs_f64()
            ),
            check(*kib as f64 * 1024.0 <= 200e6),
        ),
        Err(why) => (why.clone(), "n/a"),
    };
    out.push_str(&format!(
        "| RSS with {} parked `approval` runs | {text} | ≤ 200 MB | {met} |\n",
        f.parked
    ));
    out
}

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`
/// in bench/README.md, or appends a new section.
fn write_section(name: &str, heading: &str, body: &str) {
    let path = workspace_root().join("bench/README.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let section = format!("{start}\n{body}{end}\n");
    let text = match (text.find(&start), text.find(&end)) {
        (Some(s), Some(e)) if s < e => {
            // Whatever followed the section keeps one blank line before it.
            let rest = text[e + end.len()..].trim_start_matches('\n');
            let gap = if rest.is_empty() { "" } else { "\n" };
            format!("{}{section}{gap}{rest}", &text[..s])
        }
        _ => format!(
            "{}\n{heading}\n\n{section}",
            text.trim_end_matches('\n').to_string() + "\n"
        ),
    };
    std::fs::write(&path, text).expect("write bench/README.md");
}

/// The 1-minute load average: other work on the same cores skews every figure.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    // One line per panic: a failed workload is reported by `bounded`.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let peer = args.iter().any(|a| a == "--peer");
    let quick = args.iter().any(|a| a == "--quick");
    let write = args.iter().any(|a| a == "--write");
    let command = format!(
        "{}{}",
        if peer {
            "bench/peer/run.sh"
        } else {
            "cargo run --release -p smithers-bench --bin server --"
        },
        args.iter()
            .filter(|a| *a != "--peer")
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );
    let components: Vec<(&str, PathBuf)> = vec![
        ("hello", build_example("hello").await),
        ("fibo", build_example("fibo").await),
        ("approval", build_example("approval").await),
    ];
    let load_before = load_average();
    let machine = machine();
    println!("machine: {machine}, load average {load_before}");

    if !peer {
        let figures = measure(Target::ours(&components), &Plan::ours_alone(quick)).await;
        let mut table = ours_alone_table(&figures);
        if let Err(why) = &figures.warm_up {
            table.push_str(&format!("\nwarm-up: {why}\n"));
        }
        println!("\n{table}");
        if write {
            write_section(
                "server-bench",
                "## Server mode over HTTP (issue 5)",
                &format!(
                    "```sh\ncargo build --release -p smithers-host\n{command}\n```\n\n\
                     The release binary on 127.0.0.1, driven by `smithers-client` from another process \
                     (2 cores shared by both). {} start and approve samples (each run waited to its end \
                     before the next), `hello` throughput for {} s per concurrency, durability `normal`. \
                     {} on {machine}, commit {}; 1-minute load average {load_before} before, {} after \
                     (other engineers' builds share the cores).\n\n{table}\n",
                    Plan::ours_alone(quick).start,
                    Plan::ours_alone(quick).throughput.as_secs(),
                    today(),
                    commit(),
                    load_average()
                ),
            );
        }
        return;
    }

    let peer_dir = workspace_root().join("bench/peer");
    let ours = measure(Target::ours(&components), &Plan::peer(quick, Kind::Ours)).await;
    let theirs = measure(
        Target::smithers(&peer_dir),
        &Plan::peer(quick, Kind::Smithers),
    )
    .await;
    let rows = peer_rows(&ours, &theirs);
    let mut table = peer_table(&rows);
    for (label, f) in [("smithers-host", &ours), ("Smithers", &theirs)] {
        if let Err(why) = &f.warm_up {
            table.push_str(&format!("\n{label}'s warm-up: {why}\n"));
        }
    }
    println!("\n{table}");
    for (label, f) in [("smithers-host", &ours), ("Smithers", &theirs)] {
        let walls: Vec<String> = f
            .steps
            .iter()
            .map(|(n, o)| match o {
                Ok((_, wall)) => format!("N={n}: {wall:.3} ms"),
                Err(why) => format!("N={n}: {why}"),
            })
            .collect();
        println!(
            "{label}: per-step wall clock (POST → end seen by the client, / N): {}",
            walls.join(", ")
        );
    }
    if write {
        let date = today();
        std::fs::write(
            peer_dir.join("results.svg"),
            chart(
                &rows,
                &format!("{date}, {machine}; blue: target met or none, orange: missed"),
            ),
        )
        .expect("write the chart");
        let walls = |f: &Figures| {
            f.steps
                .iter()
                .map(|(n, o)| match o {
                    Ok((_, wall)) => format!("N={n} {wall:.2} ms"),
                    Err(why) => format!("N={n} {why}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        write_section(
            "peer-bench",
            "## Side by side with Smithers (issue 7)",
            &format!(
                "```sh\n{command}\n```\n\n\
                 One command installs the pinned Smithers (`bench/peer/package.json`, lock file, \
                 `npm install --no-save` into the git-ignored `bench/peer/node_modules`), builds the release binary and \
                 runs the same workloads against both servers on 127.0.0.1, one after the other, through \
                 the same Rust client. Smithers runs `bench/peer/server.ts` (`startServer`, no server db, \
                 `NODE_ENV=production`) with the TSX twins of `examples/hello`, `fibo` and `approval` in \
                 `bench/peer/workflows/`. Run on {date}, {machine}, commit {}; 1-minute load average {load_before} \
                 before, {} after (other engineers' builds share the cores).\n\n{table}\n\
                 ![ratios](peer/results.svg)\n\n\
                 How each figure is taken:\n\n\
                 - (a) time from sending `POST /v1/runs` (hello) to `RunStarted` read from \
                 `GET /v1/runs/:id/events`, opened as soon as the POST answers; {} samples each, one run at a time. \
                 Smithers answers the POST before its engine has written the run, and 404 until then: the \
                 stream is re-opened every 2 ms until it exists.\n\
                 - (b) `fibo` with N sequential tasks: the server's own record, `(finishedAtMs - startedAtMs) / N`, \
                 median of {} (ours) and {} (Smithers). Wall clock per step as the client saw it: \
                 ours {}; Smithers {}.\n\
                 - (c) with the approval run parked (`RunStatusChanged` to `waiting-approval` seen on SSE): \
                 time from sending approve (Smithers: approve, then `POST /v1/runs` with `resume: true`, \
                 since it does not continue by itself) to the next `NodeStarted` on the open SSE stream; {} samples. Smithers' SSE reads its \
                 database every 500 ms, which is most of its figure: that is when a client of its server learns \
                 that the run went on.\n\
                 - (d) C clients in a loop: start `hello`, wait until it ended (ours: the SSE stream's \
                 terminal event; Smithers: `GET /v1/runs/:id` every 20 ms per client, faster than its 500 ms SSE \
                 poll; 160 ms per client at C = 64, so that polls stay ≤ 400/s), for {} s per C.\n\
                 - (e) RSS (VmRSS of the server and its children) right after start, and after {} \
                 `approval` runs all parked at the gate.\n",
                commit(),
                load_average(),
                Plan::peer(quick, Kind::Ours).start,
                reps(&Plan::peer(quick, Kind::Ours)),
                reps(&Plan::peer(quick, Kind::Smithers)),
                walls(&ours),
                walls(&theirs),
                Plan::peer(quick, Kind::Ours).approve,
                Plan::peer(quick, Kind::Ours).throughput.as_secs(),
                Plan::peer(quick, Kind::Ours).parked,
            ),
        );
    }
}
