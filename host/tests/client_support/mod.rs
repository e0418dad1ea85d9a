//! Test support for the client tests: the real `smithers-host` binary on a
//! fixed 127.0.0.1 port (so a restart keeps the client's URL) over temporary
//! root and state dirs, and a `smithers_client::Client` pointed at it.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use smithers_client::{Client, Event, EventKind, StreamOptions};

use crate::common;

/// A running host, killed on drop.
pub struct Host {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    pub root: tempfile::TempDir,
    pub state: tempfile::TempDir,
    logs: tempfile::TempDir,
    token: Option<String>,
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Host {
    pub fn start() -> Self {
        Self::with_token(None)
    }

    pub fn with_token(token: Option<&str>) -> Self {
        let port = free_port();
        let mut host = Self {
            child: None,
            port,
            url: format!("http://127.0.0.1:{port}"),
            root: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            token: token.map(str::to_string),
        };
        host.spawn();
        host
    }

    /// Starts the process on the same port and dirs; waits until it listens.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join("server.log"))
            .unwrap();
        let mut cmd = Command::new(common::host_binary());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--root-dir")
            .arg(self.root.path())
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--no-watch")
            .env_remove("SMITHERS_API_KEY")
            .env_remove("SMITHERS_SERVER_TRUST_ANY_HOST")
            .env("SMITHERS_LOG", "warn,smithers_host=info")
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(token) = &self.token {
            cmd.arg("--auth-token").arg(token);
        }
        let mut child = cmd.spawn().expect("spawn smithers-host");
        if common::wait_for_line(&mut child, "smithers-host listening on").is_none() {
            panic!("host did not start; log:\n{}", self.log());
        }
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to close streams or flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Copies a guest into the root dir; returns its workflow path.
    pub fn install(&self, package: &str) -> String {
        let name = format!("{package}.wasm");
        std::fs::copy(common::guest(package), self.root.path().join(&name)).unwrap();
        name
    }

    /// A client with the host's token, if any.
    pub fn client(&self) -> Client {
        let mut builder = Client::builder().base_url(&self.url);
        if let Some(token) = &self.token {
            builder = builder.api_key(token);
        }
        builder.build().unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every event of a run until its stream ends (bounded).
pub async fn all_events(client: &Client, run: &str) -> Vec<Event> {
    tokio::time::timeout(Duration::from_secs(60), async {
        client
            .stream_events(run)
            .map(|e| e.expect("event"))
            .collect::<Vec<_>>()
            .await
    })
    .await
    .expect("the stream ends within 60 s")
}

/// Reads events until one satisfies `pred` (bounded); returns those read.
pub async fn events_until(
    stream: &mut smithers_client::EventStream,
    pred: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = stream.next().await {
            let event = event.expect("event");
            let done = pred(&event);
            seen.push(event);
            if done {
                return;
            }
        }
        panic!("stream ended before the awaited event: {:?}", types(&seen));
    })
    .await
    .expect("the awaited event arrives within 60 s");
    seen
}

/// Event type names, in order.
pub fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(Event::type_name).collect()
}

/// True for `NodeWaitingApproval`.
pub fn waiting_approval(event: &Event) -> bool {
    matches!(event.kind, EventKind::NodeWaitingApproval { .. })
}

/// Reconnect quickly in tests.
pub fn fast_reconnect() -> StreamOptions {
    StreamOptions {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        max_attempts: 100,
        ..StreamOptions::default()
    }
}
