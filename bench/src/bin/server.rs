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
use smithers_client::{Client, Decision, EventKind, RunStatus, RunWorkflow, StreamOptions};

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
                let mut events = self.client.stream_events(run);
                let mut last = None;
                while let Some(event) = tokio::time::timeout(WAIT, events.next())
                    .await
                    .expect("terminal event in time")
                {
                    last = Some(event.expect("event"));
                }
                match last.map(|e| e.kind) {
                    Some(EventKind::RunFinished {}) => RunStatus::Finished,
                    Some(EventKind::RunFailed { .. }) => RunStatus::Failed,
                    _ => RunStatus::Other("unknown".into()),
                }
            }
            Kind::Smithers => loop {
                let status = self.client.get_status(run).await.expect("status").status;
                if status.is_terminal() {
                    return status;
                }
                assert!(Instant::now() < deadline, "{run} did not end in time");
                tokio::time::sleep(Duration::from_millis(20)).await;
            },
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
        let mut events = t.client.stream_events(&run);
        loop {
            let event = tokio::time::timeout(WAIT, events.next())
                .await
                .expect("RunStarted in time")
                .expect("stream open")
                .expect("event");
            if matches!(event.kind, EventKind::RunStarted { .. }) {
                break;
            }
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
        let mut events = t.client.stream_events_with(
            &run,
            StreamOptions {
                idle_timeout: WAIT,
                ..StreamOptions::default()
            },
        );
        // Parked: the run's status changed, not just the node's (Smithers
        // ignores a resume until the run has parked).
        loop {
            let event = next(&mut events).await;
            if matches!(event.kind, EventKind::RunStatusChanged { ref status } if *status == RunStatus::WaitingApproval)
            {
                break;
            }
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

async fn next(events: &mut smithers_client::EventStream) -> smithers_client::Event {
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
        let view = t.client.get_status(&run).await.expect("status");
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
/// for `duration` (or `max_runs` in all); completed runs per second.
async fn throughput(t: &Arc<Target>, concurrency: usize, duration: Duration, max_runs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let t = t.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline && done.load(Ordering::Relaxed) < max_runs {
                let run = t.start("hello", json!({})).await;
                let status = t.wait_terminal(&run).await;
                assert_eq!(status, RunStatus::Finished);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// (e) Starts `count` approval runs (32 at a time), waits until every one
/// is parked, and returns the server's RSS then (KiB) and the time it took.
async fn parked_rss(t: &Arc<Target>, count: usize) -> (u64, Duration) {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let t = t.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut runs = Vec::new();
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < count {
                runs.push(t.start("approval", json!({})).await);
            }
            let deadline = Instant::now() + WAIT * 2;
            for run in runs {
                loop {
                    let status = t.client.get_status(&run).await.expect("status").status;
                    if status == RunStatus::WaitingApproval {
                        break;
                    }
                    assert!(!status.is_terminal(), "{run} ended: {status}");
                    assert!(Instant::now() < deadline, "{run} did not park in time");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
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
            start: if quick { 5 } else { 30 },
            approve: if quick { 3 } else { 20 },
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

/// Everything measured on one server.
#[derive(Debug, Default, Clone)]
struct Figures {
    start: Option<Summary>,
    approve: Option<Summary>,
    /// N → (per step from the server's record, per step wall clock), ms.
    steps: BTreeMap<u64, (f64, f64)>,
    /// Concurrency → runs/s.
    throughput: BTreeMap<usize, f64>,
    rss_idle_kib: u64,
    rss_parked_kib: u64,
    parked: usize,
    park_time: Duration,
}

async fn measure(t: Target, plan: &Plan) -> Figures {
    let t = Arc::new(t);
    let mut f = Figures {
        parked: plan.parked,
        ..Figures::default()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.rss_idle_kib = t.rss_kib();
    eprintln!("[{}] idle RSS {} MiB", t.name(), f.rss_idle_kib / 1024);
    // Warm-up: load (compile, import) every workflow once.
    for _ in 0..3 {
        let run = t.start("hello", json!({})).await;
        t.wait_terminal(&run).await;
    }
    let run = t.start("fibo", json!({ "n": 3 })).await;
    t.wait_terminal(&run).await;
    let run = t.start("approval", json!({})).await;
    loop {
        let status = t.client.get_status(&run).await.expect("status").status;
        if status == RunStatus::WaitingApproval {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.approve(&run).await;
    t.wait_terminal(&run).await;

    phase(&t, "warm-up");
    eprintln!(
        "[{}] (a) start → RunStarted, {} samples",
        t.name(),
        plan.start
    );
    f.start = Some(start_latency(&t, plan.start).await);
    phase(&t, "(a)");
    for &(n, reps) in &plan.steps {
        eprintln!("[{}] (b) fibo N={n}, {reps} runs", t.name());
        f.steps.insert(n, step_overhead(&t, n, reps).await);
    }
    phase(&t, "(b)");
    eprintln!(
        "[{}] (c) approve → NodeStarted, {} samples",
        t.name(),
        plan.approve
    );
    f.approve = Some(approve_latency(&t, plan.approve).await);
    phase(&t, "(c)");
    for c in [1, 8, 64] {
        eprintln!("[{}] (d) hello runs/s at concurrency {c}", t.name());
        let rate = throughput(&t, c, plan.throughput, plan.max_runs).await;
        f.throughput.insert(c, rate);
        phase(&t, &format!("(d) at concurrency {c}"));
    }
    eprintln!("[{}] (e) parking {} approval runs", t.name(), plan.parked);
    let (rss, took) = parked_rss(&t, plan.parked).await;
    f.rss_parked_kib = rss;
    f.park_time = took;
    f
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
/// better ours is), target ratio.
struct Row {
    label: String,
    ours: String,
    theirs: String,
    ratio: f64,
    target: Option<f64>,
}

fn lower_is_better(label: &str, ours: f64, theirs: f64, unit: &str, target: Option<f64>) -> Row {
    Row {
        label: label.into(),
        ours: format!("{ours:.3} {unit}"),
        theirs: format!("{theirs:.1} {unit}"),
        ratio: theirs / ours,
        target,
    }
}

fn peer_rows(ours: &Figures, theirs: &Figures) -> Vec<Row> {
    let mut rows = Vec::new();
    let (a, b) = (ours.start.unwrap(), theirs.start.unwrap());
    rows.push(lower_is_better(
        "(a) start → RunStarted p50",
        ms(a.p50),
        ms(b.p50),
        "ms",
        Some(10.0),
    ));
    rows.push(lower_is_better(
        "(a) start → RunStarted p95",
        ms(a.p95),
        ms(b.p95),
        "ms",
        None,
    ));
    for (n, (o, _)) in &ours.steps {
        if let Some((s, _)) = theirs.steps.get(n) {
            rows.push(lower_is_better(
                &format!("(b) per-step overhead, N = {n}"),
                *o,
                *s,
                "ms",
                Some(10.0),
            ));
        }
    }
    let (a, b) = (ours.approve.unwrap(), theirs.approve.unwrap());
    rows.push(lower_is_better(
        "(c) approve → NodeStarted p50",
        ms(a.p50),
        ms(b.p50),
        "ms",
        Some(10.0),
    ));
    rows.push(lower_is_better(
        "(c) approve → NodeStarted p95",
        ms(a.p95),
        ms(b.p95),
        "ms",
        None,
    ));
    for (c, o) in &ours.throughput {
        let s = theirs.throughput[c];
        rows.push(Row {
            label: format!("(d) hello runs/s, concurrency {c}"),
            ours: format!("{o:.0} /s"),
            theirs: format!("{s:.1} /s"),
            ratio: o / s,
            target: None,
        });
    }
    rows.push(Row {
        label: "(e) RSS idle".into(),
        ours: format!("{:.1} MiB", mib(ours.rss_idle_kib)),
        theirs: format!("{:.1} MiB", mib(theirs.rss_idle_kib)),
        ratio: theirs.rss_idle_kib as f64 / ours.rss_idle_kib as f64,
        target: Some(5.0),
    });
    rows.push(Row {
        label: format!("(e) RSS with {} parked runs", ours.parked),
        ours: format!("{:.1} MiB", mib(ours.rss_parked_kib)),
        theirs: format!("{:.1} MiB", mib(theirs.rss_parked_kib)),
        ratio: theirs.rss_parked_kib as f64 / ours.rss_parked_kib as f64,
        target: Some(5.0),
    });
    rows
}

fn peer_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | smithers-host | Smithers 0.32.0 | ours is | target | met |\n|---|---:|---:|---:|---:|:-:|\n",
    );
    for r in rows {
        let target = r.target.map(|t| format!("≥ {t:.0}×")).unwrap_or_default();
        let met = match r.target {
            Some(t) if r.ratio >= t => "yes",
            Some(_) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.1}× | {target} | {met} |\n",
            r.label, r.ours, r.theirs, r.ratio
        ));
    }
    out
}

/// A horizontal bar chart of the ratios (log scale), hand-written SVG.
fn chart(rows: &[Row], caption: &str) -> String {
    let (left, width, row_h, top) = (300.0, 420.0, 26.0, 46.0);
    let max = rows
        .iter()
        .map(|r| r.ratio)
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
        let met = r.target.is_none_or(|t| r.ratio >= t);
        let color = if met { "#2a7ab0" } else { "#d9822b" };
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{}\">{:.1}×</text>\n",
            left - 8.0,
            y + 16.0,
            xml_escape(&r.label),
            y + 4.0,
            scale(r.ratio).max(1.0),
            row_h - 8.0,
            left + scale(r.ratio).max(1.0) + 6.0,
            y + 16.0,
            r.ratio
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn ours_alone_table(f: &Figures) -> String {
    let (s, a) = (f.start.unwrap(), f.approve.unwrap());
    let best = f.throughput.values().copied().fold(0.0, f64::max);
    let check = |ok: bool| if ok { "yes" } else { "**no**" };
    let mut out = String::from("| figure | measured | target | met |\n|---|---:|---:|:-:|\n");
    out.push_str(&format!(
        "| `POST /v1/runs` → `RunStarted` on SSE | p50 {:.2} ms, p95 {:.2} ms | p50 ≤ 2 ms | {} |\n",
        ms(s.p50),
        ms(s.p95),
        check(ms(s.p50) <= 2.0)
    ));
    out.push_str(&format!(
        "| approve → next `NodeStarted` on SSE | p50 {:.2} ms, p95 {:.2} ms | p50 ≤ 5 ms | {} |\n",
        ms(a.p50),
        ms(a.p95),
        check(ms(a.p50) <= 5.0)
    ));
    let rates: Vec<String> = f
        .throughput
        .iter()
        .map(|(c, r)| format!("{r:.0} at c={c}"))
        .collect();
    out.push_str(&format!(
        "| sustained `hello` runs/s | {} | ≥ 500 | {} |\n",
        rates.join(", "),
        check(best >= 500.0)
    ));
    out.push_str(&format!(
        "| RSS with {} parked `approval` runs | {:.1} MiB (idle {:.1} MiB; parking took {:.1} s) | ≤ 200 MB | {} |\n",
        f.parked,
        mib(f.rss_parked_kib),
        mib(f.rss_idle_kib),
        f.park_time.as_secs_f64(),
        check(f.rss_parked_kib as f64 * 1024.0 <= 200e6)
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
            format!(
                "{}{section}{}",
                &text[..s],
                text[e + end.len()..].trim_start_matches('\n')
            )
        }
        _ => format!(
            "{}\n{heading}\n\n{section}",
            text.trim_end_matches('\n').to_string() + "\n"
        ),
    };
    std::fs::write(&path, text).expect("write bench/README.md");
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
    let machine = machine();
    println!("machine: {machine}");

    if !peer {
        let figures = measure(Target::ours(&components), &Plan::ours_alone(quick)).await;
        let table = ours_alone_table(&figures);
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
                     {} on {machine}, commit {}.\n\n{table}\n",
                    Plan::ours_alone(quick).start,
                    Plan::ours_alone(quick).throughput.as_secs(),
                    today(),
                    commit()
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
    let table = peer_table(&rows);
    println!("\n{table}");
    for (label, f) in [("smithers-host", &ours), ("Smithers", &theirs)] {
        let walls: Vec<String> = f
            .steps
            .iter()
            .map(|(n, (_, wall))| format!("N={n}: {wall:.3} ms"))
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
                .map(|(n, (_, wall))| format!("N={n} {wall:.2} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        write_section(
            "peer-bench",
            "## Side by side with Smithers (issue 7)",
            &format!(
                "```sh\n{command}\n```\n\n\
                 One command installs the pinned Smithers (`bench/peer/package.json`, lock file, \
                 `npm ci` into the git-ignored `bench/peer/node_modules`), builds the release binary and \
                 runs the same workloads against both servers on 127.0.0.1, one after the other, through \
                 the same Rust client. Smithers runs `bench/peer/server.ts` (`startServer`, no server db, \
                 `NODE_ENV=production`) with the TSX twins of `examples/hello`, `fibo` and `approval` in \
                 `bench/peer/workflows/`. Run on {date}, {machine}, commit {}.\n\n{table}\n\
                 ![ratios](peer/results.svg)\n\n\
                 How each figure is taken:\n\n\
                 - (a) time from sending `POST /v1/runs` (hello) to `RunStarted` read from \
                 `GET /v1/runs/:id/events`, opened as soon as the POST answers; {} samples each, one run at a time.\n\
                 - (b) `fibo` with N sequential tasks: the server's own record, `(finishedAtMs - startedAtMs) / N`, \
                 median of {}/{} runs (ours/Smithers) per N. Wall clock per step as the client saw it: \
                 ours {}; Smithers {}.\n\
                 - (c) with the approval run parked (`RunStatusChanged` to `waiting-approval` seen on SSE): \
                 time from sending approve (Smithers: approve, then `POST /v1/runs` with `resume: true`, \
                 since it does not continue by itself) to the next `NodeStarted` on the open SSE stream; {} samples.\n\
                 - (d) C clients in a loop: start `hello`, wait until it ended (ours: the SSE stream's \
                 terminal event; Smithers: `GET /v1/runs/:id` every 20 ms, faster than its 500 ms SSE \
                 poll), for {} s per C.\n\
                 - (e) RSS (VmRSS of the server and its children) right after start, and after {} \
                 `approval` runs all parked at the gate.\n",
                commit(),
                Plan::peer(quick, Kind::Ours).start,
                Plan::peer(quick, Kind::Ours)
                    .steps
                    .first()
                    .map_or(0, |s| s.1),
                Plan::peer(quick, Kind::Smithers)
                    .steps
                    .first()
                    .map_or(0, |s| s.1),
                walls(&ours),
                walls(&theirs),
                Plan::peer(quick, Kind::Ours).approve,
                Plan::peer(quick, Kind::Ours).throughput.as_secs(),
                Plan::peer(quick, Kind::Ours).parked,
            ),
        );
    }
}
