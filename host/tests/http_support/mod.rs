//! Test support for server mode: the real `smithers-host` binary on an
//! ephemeral 127.0.0.1 port over temporary root and state dirs, a JSON
//! client, a raw HTTP/1.1 client (for headers reqwest won't send) and an SSE
//! reader.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common;

/// Options of a server under test.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub token: Option<String>,
    pub max_body_bytes: Option<usize>,
    /// Arguments after the common ones; `{root}` is replaced by the root dir.
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Guest packages copied into the root dir (as `<package>.wasm`) before
    /// the process starts.
    pub install: Vec<String>,
    /// Start the process with the root dir as its working directory.
    pub cwd_in_root: bool,
    /// A certificate (PEM) the test client trusts, for a server on HTTPS.
    pub ca_pem: Option<Vec<u8>>,
}

/// A running `smithers-host` process, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub base: String,
    pub root: tempfile::TempDir,
    pub state: tempfile::TempDir,
    logs: tempfile::TempDir,
    pub options: Options,
    pub client: reqwest::Client,
}

/// The test's HTTP client (no pooling), trusting `ca_pem` if given.
pub fn client(ca_pem: Option<&[u8]>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(0);
    if let Some(pem) = ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
    }
    builder.build().unwrap()
}

impl Server {
    pub fn start() -> Self {
        Self::with(Options::default())
    }

    pub fn with(options: Options) -> Self {
        let client = client(options.ca_pem.as_deref());
        let mut server = Self {
            child: None,
            addr: String::new(),
            base: String::new(),
            root: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            options,
            client,
        };
        for package in server.options.install.clone() {
            server.install(&package);
        }
        server.spawn();
        server
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(common::host_binary());
        cmd.arg("--port")
            .arg("0")
            .arg("--root-dir")
            .arg(self.root.path())
            .arg("--state-dir")
            .arg(self.state.path())
            .env_remove("SMITHERS_API_KEY")
            .env_remove("SMITHERS_SERVER_TRUST_ANY_HOST")
            .env("SMITHERS_LOG", "warn,smithers_host=info");
        if let Some(token) = &self.options.token {
            cmd.arg("--auth-token").arg(token);
        }
        if let Some(max) = self.options.max_body_bytes {
            cmd.arg("--max-body-bytes").arg(max.to_string());
        }
        let root = self.root.path().display().to_string();
        cmd.args(
            self.options
                .extra_args
                .iter()
                .map(|a| a.replace("{root}", &root)),
        );
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        if self.options.cwd_in_root {
            cmd.current_dir(self.root.path());
        }
        cmd
    }

    /// Starts the process and waits for its "listening on" line.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn smithers-host");
        let url = common::wait_for_line(&mut child, "smithers-host listening on ")
            .unwrap_or_else(|| panic!("server did not start; log:\n{}", self.log()));
        let (_, addr) = url.split_once("://").expect("a URL");
        self.addr = addr.to_string();
        self.base = url;
        self.child = Some(child);
    }

    pub fn log_path(&self) -> PathBuf {
        self.logs.path().join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit (bounded); returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Copies a guest into the root dir; returns its workflow path.
    pub fn install(&self, package: &str) -> String {
        let name = format!("{package}.wasm");
        std::fs::copy(common::guest(package), self.root.path().join(&name)).unwrap();
        name
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.options.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .authed(self.client.get(self.url(path)))
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .authed(self.client.post(self.url(path)).json(&body))
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .authed(self.client.post(self.url(path)).body(body))
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    /// Starts a run; panics unless 200.
    pub async fn start_run(&self, workflow: &str, input: Value) -> String {
        let (status, body) = self
            .post(
                "/v1/runs",
                json!({ "workflowPath": workflow, "input": input }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["runId"].as_str().unwrap().to_string()
    }

    pub async fn status(&self, run: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/runs/{run}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls until the run has `status` (bounded).
    pub async fn wait_status(&self, run: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let body = self.status(run).await;
            if body["status"] == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "run {run} never reached {want}: {body}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every event of a (terminated) run, from a full SSE replay.
    pub async fn all_events(&self, run: &str) -> Vec<SseEvent> {
        let mut sse = self.sse(&format!("/v1/runs/{run}/events"), &[]).await;
        sse.events_until_end(Duration::from_secs(60)).await
    }

    /// Opens an SSE stream; panics unless 200.
    pub async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> SseReader {
        let mut request = self.authed(self.client.get(self.url(path)));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        SseReader::new(response)
    }

    /// A raw HTTP/1.1 request (`Connection: close` is added).
    pub async fn raw(&self, head: &str, body: &[u8]) -> RawResponse {
        raw_request(&self.addr, head, body).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// A raw response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends `head` (request line and headers, without the final blank line)
/// plus `body`, and reads the whole response.
pub async fn raw_request(addr: &str, head: &str, body: &[u8]) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{}\r\nConnection: close\r\n\r\n", head.trim_end()).into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    RawResponse {
        status,
        head: head.to_string(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// One SSE event (a block with `data:`).
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: Value,
}

impl SseEvent {
    pub fn seq(&self) -> u64 {
        self.data["seq"].as_u64().unwrap()
    }

    pub fn kind(&self) -> &str {
        self.data["type"].as_str().unwrap()
    }
}

/// A block of an SSE stream as sent.
#[derive(Debug, Clone, Default)]
pub struct SseBlock {
    pub lines: Vec<String>,
}

/// Reads an SSE response block by block.
pub struct SseReader {
    pub content_type: String,
    pub cache_control: String,
    stream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: String,
    pub ended: bool,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        Self {
            content_type: header("content-type"),
            cache_control: header("cache-control"),
            stream: Box::pin(response.bytes_stream()),
            buf: String::new(),
            ended: false,
        }
    }

    /// The next block (`None` at the end of the stream).
    pub async fn next_block(&mut self) -> Option<SseBlock> {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                return Some(SseBlock {
                    lines: block
                        .trim_end_matches('\n')
                        .lines()
                        .map(str::to_string)
                        .collect(),
                });
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(_)) | None => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// The next event, skipping `retry:` blocks and comments.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let block = self.next_block().await?;
            let field = |name: &str| {
                block
                    .lines
                    .iter()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
            };
            let Some(data) = field("data") else { continue };
            return Some(SseEvent {
                event: field("event"),
                id: field("id"),
                data: serde_json::from_str(&data).unwrap(),
            });
        }
    }

    /// Every remaining event until the server ends the stream (bounded).
    pub async fn events_until_end(&mut self, limit: Duration) -> Vec<SseEvent> {
        let mut events = Vec::new();
        tokio::time::timeout(limit, async {
            while let Some(event) = self.next_event().await {
                events.push(event);
            }
        })
        .await
        .expect("stream ends in time");
        events
    }
}

/// A scripted-fixture input: `{"root": root}`.
pub fn script(root: Value) -> Value {
    json!({ "root": root })
}

pub fn task(id: &str, extra: Value) -> Value {
    let mut spec = json!({ "id": id });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({ "task": spec })
}

/// Opens the server's state dir in-process (the server must be stopped) and
/// returns a node's committed output.
pub async fn output_after_stop(root: &Path, state: &Path, run: &str, node: &str) -> Option<Value> {
    let mut config = smithers_host::app::AppConfig::new(root);
    config.state_dir = Some(state.to_path_buf());
    let app = smithers_host::app::App::open(config).expect("open the state dir");
    let run_id = smithers_host::model::RunId::parse(run).unwrap();
    let nodes = app
        .engine
        .store()
        .read(move |r| r.nodes(&run_id))
        .await
        .unwrap();
    let output = nodes
        .into_iter()
        .find(|n| &*n.key.node_id == node)
        .and_then(|n| n.output_json)
        .map(|o| serde_json::from_str(&o).unwrap());
    app.close().await;
    output
}
