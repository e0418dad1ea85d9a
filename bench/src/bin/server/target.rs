//! The servers under test: our release binary and the real Smithers server
//! (bun), each on 127.0.0.1 with fresh directories, killed on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use smithers_client::{
    Client, Decision, Event, EventKind, EventStream, RunStatus, RunWorkflow, StreamOptions,
};

use crate::WAIT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ours,
    Smithers,
}

/// A server process under test, killed on drop.
pub(crate) struct Target {
    pub(crate) kind: Kind,
    pub(crate) child: Child,
    pub(crate) client: Client,
    pub(crate) _dirs: Vec<tempfile::TempDir>,
    /// How often `wait_terminal` polls Smithers, in ms (see [`throughput`]).
    pub(crate) poll_ms: AtomicU64,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's stdout until the line starting with `prefix` and
/// returns the URL after it.
pub(crate) fn wait_listening(child: &mut Child, prefix: &str) -> String {
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
    pub(crate) fn ours(components: &[(&str, PathBuf)]) -> Self {
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
    pub(crate) fn smithers(peer: &Path) -> Self {
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

    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            Kind::Ours => "smithers-host",
            Kind::Smithers => "Smithers",
        }
    }

    pub(crate) fn workflow(&self, name: &str) -> String {
        match self.kind {
            Kind::Ours => format!("{name}.wasm"),
            Kind::Smithers => format!("{name}.tsx"),
        }
    }

    pub(crate) async fn start(&self, name: &str, input: serde_json::Value) -> String {
        self.client
            .run_workflow(&RunWorkflow::new(self.workflow(name)).input(input))
            .await
            .unwrap_or_else(|e| panic!("{}: start {name}: {e}", self.name()))
            .run_id
    }

    /// Approves `gate`; Smithers also needs an explicit resume.
    pub(crate) async fn approve(&self, run: &str) {
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
    pub(crate) async fn wait_terminal(&self, run: &str) -> RunStatus {
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
    pub(crate) async fn status(&self, run: &str) -> RunStatus {
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
    pub(crate) async fn events(&self, run: &str) -> (EventStream, Event) {
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
    pub(crate) fn rss_kib(&self) -> u64 {
        tree_rss_kib(self.child.id())
    }
}

pub(crate) fn tree_rss_kib(root: u32) -> u64 {
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

/// Whether an error means the server does not know the run yet.
pub(crate) fn not_yet(e: &smithers_client::Error) -> bool {
    matches!(e, smithers_client::Error::Api { status: 404, .. })
}
