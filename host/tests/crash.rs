//! Crash test: SIGKILL the host at random points of a long sequential run,
//! restart it each time, and check that the run finishes with every
//! committed output intact and no committed task executed twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use smithers_host::model::RunId;
use smithers_host::store::{Durability, Store};

const STEPS: usize = 150;
const KILLS: usize = 24;

/// A tiny deterministic generator, seeded from the clock and printed so a
/// failing sequence of kill points can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn spawn(root: &std::path::Path, state: &std::path::Path, args: &[&str]) -> Child {
    Command::new(common::host_binary())
        .current_dir(root)
        .args(args)
        .arg("--root-dir")
        .arg(root)
        .arg("--state-dir")
        .arg(state)
        .arg("--json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn smithers-host")
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_repeats_no_committed_task() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::guest("fixture-scripted"),
        root.path().join("scripted.wasm"),
    )
    .unwrap();
    // Each step appends "<id> <attempt>" to lines.txt (its side-effect
    // marker), then works for a while so kills land mid-task too.
    let steps: Vec<Value> = (0..STEPS)
        .map(|i| {
            json!({ "task": {
                "id": format!("step-{i}"),
                "appendLine": { "path": "lines.txt", "withAttempt": true },
                "sleepMs": 40
            }})
        })
        .collect();
    let input = json!({ "root": { "sequence": steps } }).to_string();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("kill schedule seed: {seed}");
    let mut rng = Rng(seed);

    // Compile the component once so that restarts load it from the disk
    // cache and the kills land in the run, not in the compiler.
    let warm = spawn(
        root.path(),
        state.path(),
        &[
            "run",
            "scripted.wasm",
            "--input",
            r#"{"root":{"task":{"id":"warm"}}}"#,
        ],
    )
    .wait_with_output()
    .unwrap();
    assert!(warm.status.success());

    let mut child = spawn(
        root.path(),
        state.path(),
        &[
            "run",
            "scripted.wasm",
            "--run-id",
            "crash",
            "--input",
            &input,
        ],
    );
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(Instant::now() < deadline, "crash test took too long");
        std::thread::sleep(Duration::from_millis(60 + rng.next(300)));
        if let Some(status) = child.try_wait().unwrap() {
            // The run ended by itself: it must have finished.
            assert!(status.success(), "host exited with {status}");
            break;
        }
        if kills < KILLS {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
            // Killed before the run was even stored? Start it again.
            let stored = Command::new(common::host_binary())
                .args(["status", "crash", "--json", "--root-dir"])
                .arg(root.path())
                .arg("--state-dir")
                .arg(state.path())
                .output()
                .unwrap()
                .status
                .success();
            child = if stored {
                spawn(root.path(), state.path(), &["resume", "crash"])
            } else {
                spawn(
                    root.path(),
                    state.path(),
                    &[
                        "run",
                        "scripted.wasm",
                        "--run-id",
                        "crash",
                        "--input",
                        &input,
                    ],
                )
            };
        }
    }
    assert!(
        kills >= 20,
        "only {kills} kills happened before the run finished; slow the steps down"
    );

    // Inspect the database the killed hosts left behind.
    let store = Store::open(&state.path().join("smithers.db"), Durability::Normal).unwrap();
    let run_id = RunId::parse("crash").unwrap();
    let (run, nodes, events, integrity) = store
        .read_blocking(|r| {
            Ok((
                r.run(&run_id)?.unwrap(),
                r.nodes(&run_id)?,
                r.events_after(&run_id, -1, u32::MAX)?,
                r.integrity_check()?,
            ))
        })
        .unwrap();
    assert_eq!(integrity, "ok");
    assert_eq!(run.status.as_str(), "finished");

    // Every step finished exactly once, and its committed output is the
    // output of the attempt that finished.
    let events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.json).unwrap())
        .collect();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "event seqs gap-free"
    );
    let mut finished: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "NodeFinished") {
        let previous = finished.insert(
            e["nodeId"].as_str().unwrap().to_string(),
            e["attempt"].as_u64().unwrap(),
        );
        assert!(previous.is_none(), "{} finished twice", e["nodeId"]);
    }
    assert_eq!(finished.len(), STEPS);
    for node in &nodes {
        let attempt = finished[&*node.key.node_id];
        let output: Value = serde_json::from_str(node.output_json.as_deref().unwrap()).unwrap();
        assert_eq!(output["node"], &*node.key.node_id);
        assert_eq!(
            output["attempt"], attempt,
            "output of {} is the finishing attempt's",
            node.key.node_id
        );
    }

    // Side effects: each step's line appears once per attempt that ran; a
    // repeat is only allowed for attempts interrupted by a kill, and the
    // committed attempt wrote exactly once.
    let lines = std::fs::read_to_string(root.path().join("lines.txt")).unwrap();
    let mut written: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in lines.lines() {
        let (id, attempt) = line.rsplit_once(' ').expect("line with attempt");
        written
            .entry(id.to_string())
            .or_default()
            .push(attempt.parse().unwrap());
    }
    let mut repeated = 0;
    for (id, attempts) in &written {
        let distinct: BTreeSet<u64> = attempts.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            attempts.len(),
            "{id} wrote the same attempt twice: {attempts:?}"
        );
        let committed = finished[id];
        assert_eq!(attempts.iter().filter(|a| **a == committed).count(), 1);
        assert!(
            attempts.iter().all(|a| *a <= committed),
            "{id} ran after it committed: {attempts:?}"
        );
        repeated += attempts.len() - 1;
    }
    assert_eq!(written.len(), STEPS);
    assert!(
        repeated <= kills,
        "{repeated} repeated attempts for {kills} kills"
    );
    let resumes = events
        .iter()
        .filter(|e| e["type"] == "RunStarted" && e["resumed"] == true)
        .count();
    assert!(
        resumes * 2 >= kills,
        "only {resumes} of {kills} kills interrupted the run"
    );
    println!(
        "{kills} kills, {resumes} resumes, {repeated} interrupted attempts repeated, {} events",
        events.len()
    );
}
