//! Disk-full and read-only state dir, for real: the state dir is a small
//! tmpfs mounted in a user and mount namespace (no root needed), held by a
//! `sleep` process; the host runs inside that namespace (`nsenter`) and the
//! test fills the tmpfs from outside through `/proc/<holder>/root`.
//!
//! Disk full: writes are refused with `503 STORAGE_UNAVAILABLE` envelopes
//! (never a 5xx without the envelope, never a crash), reads keep working,
//! runs in flight pause instead of failing, and nothing is half committed:
//! the database passes `PRAGMA integrity_check`, every run's events are
//! gap-free and every committed output has its `NodeFinished`. Once space
//! is back, writes are accepted again and every run finishes, with no
//! restart.
//!
//! Read-only: a state dir on a read-only mount is refused at startup with
//! an error naming it (the host never runs with a database it cannot
//! commit to).
//!
//! Skipped (with a message) where user namespaces are not available.

mod common;
mod http_support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smithers_host::store::{Durability, Store};

use http_support::{decode, script, task};

/// Whether a user+mount namespace can mount a tmpfs here (some kernels
/// allow the namespace but not the mount, e.g. under AppArmor's
/// `restrict_unprivileged_userns`).
fn namespaces_available() -> bool {
    let probe = tempfile::tempdir().unwrap();
    let ok = Command::new("unshare")
        .args(["-Urm", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1m tmpfs '{}' && mount --bind '{0}' '{0}' && mount -o remount,bind,ro '{0}'",
            probe.path().display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipped: no user and mount namespaces with tmpfs and bind mounts here");
    }
    ok
}

/// A user+mount namespace where `dir` is a tmpfs of `size`.
struct Namespace {
    holder: Child,
}

impl Namespace {
    fn new(dir: &Path, size: &str) -> Self {
        let mut holder = Command::new("unshare")
            .args(["-Urm", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size} tmpfs '{}' && echo ready && exec sleep 100000",
                dir.display()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the tmpfs could not be mounted");
        Self { holder }
    }

    /// `path` as the namespace sees it, from outside.
    fn inside(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.holder.id())).join(path.strip_prefix("/").unwrap())
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--preserve-credentials", "-U", "-m", "-t"])
            .arg(self.holder.id().to_string())
            .arg("--")
            .arg(program);
        cmd
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The host, started in the namespace.
struct Host {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Host {
    fn start(ns: &Namespace, root: &Path, state: &Path, log: &Path) -> Self {
        let mut child = ns
            .command(&common::host_binary())
            .args(["--port", "0", "--root-dir"])
            .arg(root)
            .arg("--state-dir")
            .arg(state)
            .env_remove("SMITHERS_API_KEY")
            .env("SMITHERS_LOG", "warn,smithers_host=info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("smithers-host listening on http://") {
                        break addr.trim().to_string();
                    }
                }
                _ => panic!(
                    "the host did not start:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
            }
        };
        // Keep draining stdout, so that the host never writes to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            base: format!("http://{addr}"),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        decode(
            reqwest::get(format!("{}{path}", self.base))
                .await
                .expect("GET answered"),
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        decode(
            reqwest::Client::new()
                .post(format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await
                .expect("POST answered"),
        )
        .await
    }

    async fn wait_status(&self, run: &str, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (_, body) = self.get(&format!("/v1/runs/{run}")).await;
            if body["status"] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{run} never reached {want}: {body}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills the file system of `dir` to the last byte; returns the filler.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    while !chunk.is_empty() {
        if file.write_all(&chunk).is_err() {
            let half = chunk.len() / 2;
            chunk.truncate(half);
        }
    }
    let _ = file.sync_all();
    filler
}

/// The checks of a database no host has open: integrity, gap-free events,
/// every committed output with its `NodeFinished`. Returns the run count.
fn check_database(db: &Path) -> usize {
    let store = Store::open(db, Durability::Normal).expect("open the database");
    let checked = store.read_blocking(|r| {
        assert_eq!(r.integrity_check()?, "ok");
        let runs = r.runs(u32::MAX, None, None)?;
        for run in &runs {
            let events = r.events_after(&run.run_id, -1, u32::MAX)?;
            let events: Vec<Value> = events
                .iter()
                .map(|e| serde_json::from_str(&e.json).unwrap())
                .collect();
            for (i, event) in events.iter().enumerate() {
                assert_eq!(event["seq"], i, "{}: {events:?}", run.run_id);
            }
            for node in r.nodes(&run.run_id)? {
                if node.output_json.is_some() && &*node.key.node_id != "gate" {
                    assert!(
                        events.iter().any(|e| e["type"] == "NodeFinished"
                            && e["nodeId"] == *node.key.node_id
                            && e["iteration"] == node.key.iteration),
                        "{}: output of {} without NodeFinished",
                        run.run_id,
                        node.key
                    );
                }
            }
        }
        Ok(runs.len())
    });
    store.close();
    checked.unwrap()
}

fn assert_unavailable(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(
        body["error"]["code"], "STORAGE_UNAVAILABLE",
        "{what}: {body}"
    );
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_writes_with_an_envelope_keeps_reads_and_commits_nothing_partial() {
    if !namespaces_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::guest("fixture-scripted"),
        root.path().join("scripted.wasm"),
    )
    .unwrap();
    let ns = Namespace::new(state.path(), "24m");
    let host = Host::start(
        &ns,
        root.path(),
        state.path(),
        &logs.path().join("host.log"),
    );

    let start = |id: &str, input: Value| json!({ "workflowPath": "scripted.wasm", "runId": id, "input": input });
    let steps = |n: usize, sleep_ms: u64| {
        script(json!({ "sequence": (0..n)
            .map(|i| task(&format!("s{i}"), json!({ "sleepMs": sleep_ms })))
            .collect::<Vec<_>>() }))
    };
    let (status, body) = host.post("/v1/runs", start("before", steps(3, 0))).await;
    assert_eq!(status, 200, "{body}");
    host.wait_status("before", "finished", Duration::from_secs(60))
        .await;
    let gated =
        script(json!({ "sequence": [{ "approval": { "id": "gate" } }, task("after", json!({}))] }));
    let (status, body) = host.post("/v1/runs", start("parked", gated)).await;
    assert_eq!(status, 200, "{body}");
    host.wait_status("parked", "waiting-approval", Duration::from_secs(30))
        .await;
    // A run that commits all along, caught by the full disk mid-way.
    let (status, body) = host.post("/v1/runs", start("busy", steps(60, 50))).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let filler = fill(&ns.inside(state.path()));

    // Writes: refused with the envelope sooner or later (SQLite may still
    // reuse WAL space it holds for a few commits), never anything else.
    let mut refused = 0;
    let mut accepted = 0;
    for i in 0..200 {
        let (status, body) = host
            .post("/v1/runs", start(&format!("during-{i}"), steps(1, 0)))
            .await;
        if status == 200 {
            accepted += 1;
        } else {
            assert_unavailable(status, &body, "start on a full disk");
            refused += 1;
            if refused >= 3 {
                break;
            }
        }
    }
    assert!(refused >= 3, "the full disk never refused a start");
    let (status, body) = host
        .post("/v1/runs/parked/nodes/gate/approve", json!({}))
        .await;
    assert_unavailable(status, &body, "approve on a full disk");
    // Reads keep working, and the refused approval left the run parked.
    let (status, body) = host.get("/v1/runs/before").await;
    assert_eq!((status, &body["status"]), (200, &json!("finished")));
    let (status, body) = host.get("/v1/runs?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = host.get("/v1/approvals").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approvals"][0]["runId"], "parked", "{body}");
    let (status, _) = host.get("/health").await;
    assert_eq!(status, 200);
    let (status, body) = host.get("/v1/runs/before/frames?limit=5").await;
    assert_eq!(status, 200, "{body}");
    // The busy run pauses: it neither fails nor finishes while the disk is full.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, busy) = host.get("/v1/runs/busy").await;
    assert_eq!(busy["status"], "running", "{busy}");
    println!(
        "disk full: {accepted} starts accepted before the first refusal, {refused} refused \
         with 503 STORAGE_UNAVAILABLE; reads answered"
    );

    // Space comes back: the host carries on without a restart.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = host
        .post("/v1/runs/parked/nodes/gate/approve", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = host.post("/v1/runs", start("after", steps(2, 0))).await;
    assert_eq!(status, 200, "{body}");
    for run in ["parked", "busy", "after"] {
        host.wait_status(run, "finished", Duration::from_secs(60))
            .await;
    }
    for i in 0..accepted {
        host.wait_status(&format!("during-{i}"), "finished", Duration::from_secs(60))
            .await;
    }
    let log = host.log();
    assert!(
        !log.contains("panicked") && !log.contains("internal error"),
        "{log}"
    );
    assert!(log.contains("the run waits for the storage"), "{log}");
    drop(host);

    // SQLite resolves `/proc/<pid>/root` as a symlink to `/`: check a copy.
    let copy = tempfile::tempdir().unwrap();
    for file in ["smithers.db", "smithers.db-wal"] {
        let from = ns.inside(state.path()).join(file);
        if from.exists() {
            std::fs::copy(from, copy.path().join(file)).unwrap();
        }
    }
    let runs = check_database(&copy.path().join("smithers.db"));
    assert_eq!(runs, 4 + accepted);
}

#[test]
fn a_read_only_state_dir_is_refused_at_startup_with_a_clear_error() {
    if !namespaces_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let output = Command::new("unshare")
        .args(["-Urm", "sh", "-c"])
        .arg(format!(
            "mount --bind '{state}' '{state}' && mount -o remount,bind,ro '{state}' && exec '{bin}' --port 0 --root-dir '{root}' --state-dir '{state}'",
            state = state.path().display(),
            root = root.path().display(),
            bin = common::host_binary().display(),
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&state.path().display().to_string()) && stderr.contains("Read-only"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
}
