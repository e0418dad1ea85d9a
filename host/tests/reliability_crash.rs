//! Crash-kill campaign: mixed workflows (sequential, parallel, approval,
//! denial, loop, bash, retry, signal, and the `parallel`, `approval` and
//! `loop` examples) run under concurrent load on the real server, which is
//! SIGKILLed at random moments and restarted each time.
//!
//! After every kill, with no host running, the database is opened and
//! checked against what the previous kill left: `PRAGMA integrity_check` is
//! `ok`, every run's event seqs run 0..n with no gap or duplicate, and every
//! event, committed output and terminal status seen before is still there,
//! unchanged. At the end every run has reached the state its kind should
//! reach, no `(node, iteration)` finished twice, each committed output is
//! the finishing attempt's, and the side-effect markers (`<node> <attempt>`
//! lines the tasks append) show that no committed attempt ran again.
//!
//! `RELIABILITY_KILLS` (default 20, the CI short form; the full form uses
//! 100+), `RELIABILITY_CONCURRENCY` (runs in flight, default 6) and
//! `RELIABILITY_SEED` (replays a kill schedule). The figures are printed.

mod common;
mod http_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use smithers_host::store::{Durability, Store};

use http_support::{Options, Server, script, task};

/// What the driver does for a parked run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    None,
    Approve,
    Deny,
    Signal,
}

/// One kind of run in the mix.
struct Kind {
    name: &'static str,
    workflow: &'static str,
    action: Action,
    /// The status the run must end in.
    expect: &'static str,
    /// Its tasks append `<node> <attempt>` to `marks/<run>.txt`.
    marked: bool,
    input: fn(&str) -> Value,
}

fn marker(run: &str) -> Value {
    json!({ "path": format!("marks/{run}.txt"), "withAttempt": true })
}

fn step(run: &str, id: &str, sleep_ms: u64) -> Value {
    task(
        id,
        json!({ "appendLine": marker(run), "sleepMs": sleep_ms }),
    )
}

const SCRIPTED: &str = "fixture-scripted.wasm";

const KINDS: &[Kind] = &[
    Kind {
        name: "sequential",
        workflow: SCRIPTED,
        action: Action::None,
        expect: "finished",
        marked: true,
        input: |run| {
            script(
                json!({ "sequence": (0..6).map(|i| step(run, &format!("s{i}"), 120)).collect::<Vec<_>>() }),
            )
        },
    },
    Kind {
        name: "parallel",
        workflow: SCRIPTED,
        action: Action::None,
        expect: "finished",
        marked: true,
        input: |run| {
            script(json!({ "sequence": [
                { "parallel": { "max": 3, "children": (0..6).map(|i| step(run, &format!("p{i}"), 150)).collect::<Vec<_>>() } },
                step(run, "join", 10),
            ]}))
        },
    },
    Kind {
        name: "approval",
        workflow: SCRIPTED,
        action: Action::Approve,
        expect: "finished",
        marked: true,
        input: |run| {
            script(json!({ "sequence": [
                step(run, "before", 20),
                { "approval": { "id": "gate" } },
                step(run, "after", 20),
            ]}))
        },
    },
    Kind {
        name: "denial",
        workflow: SCRIPTED,
        action: Action::Deny,
        expect: "failed",
        marked: true,
        input: |run| {
            script(json!({ "sequence": [
                step(run, "before", 20),
                { "approval": { "id": "gate" } },
                step(run, "never", 0),
            ]}))
        },
    },
    Kind {
        name: "loop",
        workflow: SCRIPTED,
        action: Action::None,
        expect: "finished",
        marked: true,
        input: |run| {
            script(json!({ "sequence": [
                { "loop": { "id": "refine", "max": 6, "untilNode": "draft", "untilPath": "/done", "children": [
                    task("draft", json!({ "appendLine": marker(run), "sleepMs": 100, "doneAtIteration": 3 })),
                ]}},
                step(run, "final", 10),
            ]}))
        },
    },
    Kind {
        name: "bash",
        workflow: SCRIPTED,
        action: Action::None,
        expect: "finished",
        marked: true,
        input: |run| {
            let bash = |id: &str| {
                task(
                    id,
                    json!({ "appendLine": marker(run), "bash": { "command": "sleep 0.05; echo $((6*7))" } }),
                )
            };
            script(json!({ "sequence": [bash("b1"), bash("b2")] }))
        },
    },
    Kind {
        name: "retry",
        workflow: SCRIPTED,
        action: Action::None,
        expect: "finished",
        marked: true,
        input: |run| {
            script(json!({ "sequence": [
                task("flaky", json!({ "appendLine": marker(run), "failAttempts": 1, "retries": 3,
                                      "backoff": "fixed", "initialDelayMs": 50, "sleepMs": 20 })),
                step(run, "after", 10),
            ]}))
        },
    },
    Kind {
        name: "signal",
        workflow: SCRIPTED,
        action: Action::Signal,
        expect: "finished",
        marked: true,
        input: |run| {
            script(json!({ "sequence": [
                step(run, "before", 20),
                { "signal": { "id": "wait", "name": "go" } },
                step(run, "after", 20),
            ]}))
        },
    },
    Kind {
        name: "example-parallel",
        workflow: "example-parallel.wasm",
        action: Action::None,
        expect: "finished",
        marked: false,
        input: |_| json!({ "sleepMs": 150 }),
    },
    Kind {
        name: "example-approval",
        workflow: "example-approval.wasm",
        action: Action::Approve,
        expect: "finished",
        marked: false,
        input: |_| json!({}),
    },
    Kind {
        name: "example-loop",
        workflow: "example-loop.wasm",
        action: Action::None,
        expect: "finished",
        marked: false,
        input: |_| json!({ "target": 4 }),
    },
];

/// xorshift, seeded from the clock and printed so a schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A planned run and what the driver knows of it.
struct Planned {
    id: String,
    kind: &'static Kind,
    /// The start was acknowledged (200 or RUN_ALREADY_EXISTS).
    stored: bool,
    /// Last status seen.
    status: String,
}

/// Keeps `concurrency` runs in flight and unblocks parked ones; survives
/// being dropped at any await (its state lives in `plan`).
async fn drive(
    client: &reqwest::Client,
    base: &str,
    plan: &mut Vec<Planned>,
    concurrency: usize,
    launch: bool,
    rng: &mut Rng,
) {
    loop {
        let listed = async {
            let response = client
                .get(format!("{base}/v1/runs?limit=100000"))
                .send()
                .await
                .ok()?;
            response.json::<Vec<Value>>().await.ok()
        }
        .await;
        if let Some(runs) = listed {
            let statuses: BTreeMap<&str, &str> = runs
                .iter()
                .filter_map(|r| Some((r["runId"].as_str()?, r["status"].as_str()?)))
                .collect();
            for run in plan.iter_mut() {
                if let Some(status) = statuses.get(run.id.as_str()) {
                    run.stored = true;
                    run.status = status.to_string();
                }
            }
        }
        let in_flight = plan
            .iter()
            .filter(|r| !r.stored || !is_terminal(&r.status))
            .count();
        for _ in in_flight..if launch { concurrency } else { 0 } {
            let kind = &KINDS[rng.below(KINDS.len() as u64) as usize];
            let id = format!("{}-{}", kind.name, plan.len());
            plan.push(Planned {
                id,
                kind,
                stored: false,
                status: String::new(),
            });
        }
        let mut requests = Vec::new();
        for run in plan.iter() {
            let request = if !run.stored {
                client.post(format!("{base}/v1/runs")).json(&json!({
                    "workflowPath": run.kind.workflow,
                    "runId": run.id,
                    "input": (run.kind.input)(&run.id),
                }))
            } else {
                match (run.status.as_str(), run.kind.action) {
                    ("waiting-approval", Action::Approve) => client
                        .post(format!("{base}/v1/runs/{}/nodes/gate/approve", run.id))
                        .json(&json!({ "note": "campaign" })),
                    ("waiting-approval", Action::Deny) => client
                        .post(format!("{base}/v1/runs/{}/nodes/gate/deny", run.id))
                        .json(&json!({})),
                    ("waiting-event", Action::Signal) => client
                        .post(format!("{base}/v1/runs/{}/signals/go", run.id))
                        .json(&json!({ "data": { "from": "campaign" } })),
                    _ => continue,
                }
            };
            requests.push(request.send());
        }
        futures::future::join_all(requests).await;
        if !launch && plan.iter().all(|r| r.stored && is_terminal(&r.status)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "finished" | "failed" | "cancelled")
}

async fn warm_up(server: &Server) {
    let workflows = [
        (SCRIPTED, script(task("w", json!({})))),
        ("example-parallel.wasm", json!({ "sleepMs": 1 })),
        ("example-approval.wasm", json!({})),
        ("example-loop.wasm", json!({})),
    ];
    for (i, (workflow, input)) in workflows.into_iter().enumerate() {
        let (status, body) = server
            .post(
                "/v1/runs",
                json!({ "workflowPath": workflow, "input": input, "runId": format!("warm-{i}") }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server
        .post("/v1/runs/warm-2/nodes/gate/approve", json!({}))
        .await;
    assert!(status == 200 || status == 409);
    for i in 0..4 {
        server.wait_status(&format!("warm-{i}"), "finished").await;
    }
}

/// What the database held at one kill.
#[derive(Default)]
struct Snapshot {
    /// Run → status.
    statuses: BTreeMap<String, String>,
    /// Run → event JSON by seq.
    events: BTreeMap<String, Vec<Value>>,
    /// (run, node, iteration) → committed output text.
    outputs: BTreeMap<(String, String, u32), String>,
}

/// Opens the state dir's database (no host running), checks it on its own,
/// and returns what it holds.
fn snapshot(state: &std::path::Path) -> Result<Snapshot, String> {
    let store = Store::open(&state.join("smithers.db"), Durability::Normal)
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let read = store.read_blocking(|r| {
        let integrity = r.integrity_check()?;
        let mut snap = Snapshot::default();
        for run in r.runs(u32::MAX, None, None)? {
            let id = run.run_id.to_string();
            let events = r.events_after(&run.run_id, -1, u32::MAX)?;
            snap.events.insert(
                id.clone(),
                events
                    .iter()
                    .map(|e| serde_json::from_str(&e.json).expect("event JSON"))
                    .collect(),
            );
            for node in r.nodes(&run.run_id)? {
                if let Some(output) = node.output_json {
                    snap.outputs.insert(
                        (id.clone(), node.key.node_id.to_string(), node.key.iteration),
                        output,
                    );
                }
            }
            snap.statuses.insert(id, run.status.as_str().to_string());
        }
        Ok((integrity, snap))
    });
    store.close();
    let (integrity, snap) = read.map_err(|e| format!("cannot read the database: {e}"))?;
    if integrity != "ok" {
        return Err(format!("integrity_check: {integrity}"));
    }
    for (run, events) in &snap.events {
        for (expected, event) in events.iter().enumerate() {
            if event["seq"].as_u64() != Some(expected as u64) {
                let listing: Vec<String> = events
                    .iter()
                    .map(|e| format!("{} {}", e["seq"], e["type"]))
                    .collect();
                return Err(format!(
                    "{run}: event at position {expected} has seq {}: {listing:?}",
                    event["seq"]
                ));
            }
        }
    }
    Ok(snap)
}

/// Nothing committed before may be lost or changed.
fn compare(before: &Snapshot, after: &Snapshot) -> Result<(), String> {
    for (run, events) in &before.events {
        let now = after
            .events
            .get(run)
            .ok_or_else(|| format!("run {run} disappeared"))?;
        if now.len() < events.len() || now[..events.len()] != events[..] {
            return Err(format!("{run}: committed events were lost or changed"));
        }
    }
    for (key, output) in &before.outputs {
        match after.outputs.get(key) {
            Some(now) if now == output => {}
            Some(now) => return Err(format!("{key:?}: output changed from {output} to {now}")),
            None => return Err(format!("{key:?}: committed output lost")),
        }
    }
    for (run, status) in &before.statuses {
        if is_terminal(status) && after.statuses.get(run) != Some(status) {
            return Err(format!(
                "{run}: terminal status {status} became {:?}",
                after.statuses.get(run)
            ));
        }
    }
    Ok(())
}

/// The final checks of one run; returns how many interrupted attempts
/// were executed again.
fn check_run(root: &std::path::Path, run: &Planned, snap: &Snapshot) -> Result<usize, String> {
    let status = snap
        .statuses
        .get(&run.id)
        .ok_or("the run was never stored")?;
    if status != run.kind.expect {
        return Err(format!("ended {status}, expected {}", run.kind.expect));
    }
    let events = &snap.events[&run.id];
    let last = events.last().ok_or("no events")?;
    let terminal = if status == "finished" {
        "RunFinished"
    } else {
        "RunFailed"
    };
    if last["type"] != terminal {
        return Err(format!("last event is {}, not {terminal}", last["type"]));
    }
    // (node, iteration) → finishing attempt, from the event log.
    let mut finished: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "NodeFinished") {
        let key = (
            e["nodeId"].as_str().unwrap_or_default().to_string(),
            e["iteration"].as_u64().unwrap_or(0),
        );
        let attempt = e["attempt"]
            .as_u64()
            .ok_or("NodeFinished without attempt")?;
        if finished.insert(key.clone(), attempt).is_some() {
            return Err(format!("{key:?} finished twice"));
        }
    }
    for ((r, node, iteration), output) in &snap.outputs {
        if r != &run.id || !run.kind.marked {
            continue;
        }
        let output: Value = serde_json::from_str(output).map_err(|e| e.to_string())?;
        let attempt = finished
            .get(&(node.clone(), u64::from(*iteration)))
            .ok_or_else(|| format!("{node}#{iteration} has an output but no NodeFinished"))?;
        if node == "gate" || node == "wait" {
            // An approval's decision or a signal's payload.
            continue;
        }
        if node.starts_with('b') && run.kind.name == "bash" {
            if output["exitCode"] != 0 || output["stdout"] != "42\n" {
                return Err(format!("{node}: bash output {output}"));
            }
        } else if output["node"] != node.as_str()
            || output["iteration"] != *iteration
            || output["attempt"] != *attempt
        {
            return Err(format!(
                "{node}#{iteration}: output {output} is not attempt {attempt}'s"
            ));
        }
    }
    if !run.kind.marked {
        return Ok(0);
    }
    // Side effects: node → attempts that wrote a marker.
    let marks = std::fs::read_to_string(root.join(format!("marks/{}.txt", run.id)))
        .map_err(|e| format!("no markers: {e}"))?;
    let mut written: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in marks.lines() {
        let (node, attempt) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("bad marker {line:?}"))?;
        written.entry(node.to_string()).or_default().push(
            attempt
                .parse()
                .map_err(|_| format!("bad marker {line:?}"))?,
        );
    }
    let mut repeated = 0;
    for (node, attempts) in &written {
        let committed: Vec<u64> = finished
            .iter()
            .filter(|((n, _), _)| n == node)
            .map(|(_, a)| *a)
            .collect();
        if committed.len() == 1 {
            // One iteration: each attempt ran once, the committed one exactly
            // once, and nothing ran after the commit.
            let attempt = committed[0];
            let distinct: BTreeSet<u64> = attempts.iter().copied().collect();
            if distinct.len() != attempts.len() {
                return Err(format!("{node} ran one attempt twice: {attempts:?}"));
            }
            if attempts.iter().any(|a| *a > attempt) {
                return Err(format!(
                    "{node} ran after attempt {attempt} committed: {attempts:?}"
                ));
            }
            if !attempts.contains(&attempt) {
                return Err(format!(
                    "{node}: committed attempt {attempt} left no marker: {attempts:?}"
                ));
            }
            let planned_failures = u64::from(node == "flaky");
            repeated += attempts.len().saturating_sub(1 + planned_failures as usize);
        } else if committed.is_empty() {
            // Only interrupted attempts (a denied run's skipped node never runs).
            if status == "finished" {
                return Err(format!("{node} wrote markers but never finished"));
            }
            repeated += attempts.len();
        } else {
            // A loop body: one commit per iteration, each with a marker.
            if attempts.len() < committed.len() {
                return Err(format!(
                    "{node}: {} iterations committed, {} markers",
                    committed.len(),
                    attempts.len()
                ));
            }
            repeated += attempts.len() - committed.len();
        }
    }
    for ((node, _), _) in finished.iter() {
        if node != "gate" && node != "wait" && !written.contains_key(node) {
            return Err(format!("{node} finished without its side effect"));
        }
    }
    Ok(repeated)
}

#[test]
fn sigkill_under_mixed_concurrent_load_loses_nothing_and_repeats_no_committed_task() {
    let kills_wanted = env_or("RELIABILITY_KILLS", 20);
    let concurrency = env_or("RELIABILITY_CONCURRENCY", 6) as usize;
    let seed = env_or(
        "RELIABILITY_SEED",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    ) | 1;
    println!("crash: {kills_wanted} kills, concurrency {concurrency}, RELIABILITY_SEED={seed}");
    let mut rng = Rng(seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut server = Server::with(Options {
        install: vec![
            "fixture-scripted".into(),
            "example-parallel".into(),
            "example-approval".into(),
            "example-loop".into(),
        ],
        ..Default::default()
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Compile every component once, so that restarts load them from the
    // disk cache and kills land in runs, not in the compiler.
    runtime.block_on(warm_up(&server));
    let started = Instant::now();
    let mut plan: Vec<Planned> = Vec::new();
    let mut previous = Snapshot::default();
    let mut kills = 0;
    let mut snapshots_checked = 0;
    while kills < kills_wanted {
        let up_for = Duration::from_millis(250 + rng.below(1000));
        let base = server.base.clone();
        runtime.block_on(async {
            let _ = tokio::time::timeout(
                up_for,
                drive(&client, &base, &mut plan, concurrency, true, &mut rng),
            )
            .await;
        });
        server.kill9();
        kills += 1;
        let snap = snapshot(server.state.path())
            .and_then(|snap| compare(&previous, &snap).map(|()| snap))
            .unwrap_or_else(|e| panic!("after kill {kills}: {e}\n{}", server.log()));
        previous = snap;
        snapshots_checked += 1;
        server.spawn();
    }
    // Let every run reach its end (bounded).
    let base = server.base.clone();
    let drained = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(180),
            drive(&client, &base, &mut plan, concurrency, false, &mut rng),
        )
        .await
        .is_ok()
    });
    let load_ms = started.elapsed().as_millis();
    server.kill9();
    let last = snapshot(server.state.path()).unwrap_or_else(|e| panic!("final: {e}"));
    compare(&previous, &last).unwrap_or_else(|e| panic!("final: {e}"));
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");

    let mut anomalies = Vec::new();
    let mut repeated = 0;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &plan {
        *by_kind.entry(run.kind.name).or_default() += 1;
        match check_run(server.root.path(), run, &last) {
            Ok(n) => repeated += n,
            Err(e) => anomalies.push(format!("{}: {e}", run.id)),
        }
    }
    let events: usize = last.events.values().map(Vec::len).sum();
    let resumes = last
        .events
        .values()
        .flatten()
        .filter(|e| e["type"] == "RunStarted" && e["resumed"] == true)
        .count();
    println!(
        "crash: {kills} SIGKILLs survived in {:.1} s; {} runs ({}), {events} events, \
         {resumes} resumes, {repeated} interrupted attempts re-executed, \
         {snapshots_checked} database snapshots checked, anomalies: {}",
        load_ms as f64 / 1000.0,
        plan.len(),
        by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        anomalies.len()
    );
    assert!(
        drained,
        "runs did not all end within 180 s: {:?}",
        plan.iter()
            .filter(|r| !is_terminal(&r.status))
            .map(|r| (&r.id, &r.status))
            .collect::<Vec<_>>()
    );
    assert!(
        anomalies.is_empty(),
        "RELIABILITY_SEED={seed}\n{}\n{log}",
        anomalies.join("\n")
    );
}
