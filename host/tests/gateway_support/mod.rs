//! Test support for the gateway: the real `smithers-host gateway` binary on
//! an ephemeral 127.0.0.1 port over temporary root and state dirs, an RPC
//! client for both HTTP routes, and a WebSocket client speaking the
//! gateway's frames.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common;

/// A running gateway process, killed on drop.
pub struct Gateway {
    child: Option<Child>,
    pub base: String,
    pub root: tempfile::TempDir,
    pub state: tempfile::TempDir,
    logs: tempfile::TempDir,
    config: String,
    env: Vec<(String, String)>,
    pub client: reqwest::Client,
}

impl Gateway {
    /// Starts a gateway whose config is `config` (TOML). `guests` are copied
    /// into the root dir first as `<package>.wasm`.
    pub fn start(config: &str, guests: &[&str]) -> Self {
        Self::start_with_env(config, guests, &[])
    }

    pub fn start_with_env(config: &str, guests: &[&str], env: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().unwrap();
        for package in guests {
            std::fs::copy(
                common::guest(package),
                root.path().join(format!("{package}.wasm")),
            )
            .unwrap();
        }
        let mut gateway = Self {
            child: None,
            base: String::new(),
            root,
            state: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            config: config.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        };
        gateway.spawn();
        gateway
    }

    fn config_path(&self) -> PathBuf {
        self.logs.path().join("gateway.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.logs.path().join("gateway.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process (again) and waits for its "listening on" line.
    pub fn spawn(&mut self) {
        std::fs::write(self.config_path(), &self.config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(common::host_binary());
        cmd.arg("gateway")
            .arg("--config")
            .arg(self.config_path())
            .arg("--root-dir")
            .arg(self.root.path())
            .arg("--state-dir")
            .arg(self.state.path())
            .env_remove("SMITHERS_API_KEY")
            .env_remove("SMITHERS_GATEWAY_TRUST_ANY_HOST")
            .env("SMITHERS_LOG", "warn,smithers_host=info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn smithers-host gateway");
        let url = common::wait_for_line(&mut child, "smithers-host gateway listening on ")
            .unwrap_or_else(|| panic!("gateway did not start; log:\n{}", self.log()));
        self.base = url;
        self.child = Some(child);
    }

    /// Rewrites the config file and sends SIGHUP (the gateway re-reads
    /// its `[auth]`).
    pub fn reload(&mut self, config: &str) {
        self.config = config.to_string();
        std::fs::write(self.config_path(), &self.config).unwrap();
        let pid = self.child.as_ref().expect("running").id() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }

    /// SIGTERM, then waits for a clean exit (bounded).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "gateway exited with {status}:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not stop after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn ws_url(&self) -> String {
        format!("{}/", self.base.replacen("http://", "ws://", 1))
    }

    /// `POST /v1/rpc/<method>` with `params` as the body; (status, frame).
    pub async fn rpc(&self, method: &str, params: Value, token: Option<&str>) -> (u16, Value) {
        let headers = auth_headers(token);
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post(&format!("/v1/rpc/{method}"), params, &pairs)
            .await
    }

    /// An RPC that must succeed; its payload.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let (status, frame) = self.rpc(method, params, None).await;
        assert_eq!(status, 200, "{method}: {frame}\n{}", self.log());
        assert_eq!(frame["ok"], true, "{frame}");
        frame["payload"].clone()
    }

    pub async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.client.post(self.url(path)).json(&body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        decode(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.client.get(self.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        decode(request.send().await.unwrap()).await
    }

    /// Polls `getRun` until the run has `status` (bounded).
    pub async fn wait_status(&self, run: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, frame) = self.rpc("getRun", json!({ "runId": run }), None).await;
            let payload = &frame["payload"];
            if payload["status"] == want {
                return payload.clone();
            }
            assert!(
                Instant::now() < deadline,
                "run {run} never reached {want}: {frame}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Opens a WebSocket and completes `connect`; returns (client, hello).
    pub async fn connect(&self, token: Option<&str>) -> (Ws, Value) {
        let mut ws = Ws::open(&self.ws_url()).await;
        let hello = ws.connect(token, None).await.expect("connect succeeds");
        (ws, hello)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn auth_headers(token: Option<&str>) -> Vec<(&'static str, String)> {
    token
        .map(|t| vec![("authorization", format!("Bearer {t}"))])
        .unwrap_or_default()
}

pub async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client of the gateway protocol.
pub struct Ws {
    pub socket: Socket,
    next_id: u64,
    /// Event frames received while waiting for a response.
    pub pending: std::collections::VecDeque<Value>,
    pub challenge: Value,
}

impl Ws {
    /// Opens the socket and reads `connect.challenge`.
    pub async fn open(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket opens");
        let mut ws = Self {
            socket,
            next_id: 0,
            pending: Default::default(),
            challenge: Value::Null,
        };
        let challenge = ws.next_frame().await.expect("a challenge frame");
        assert_eq!(challenge["type"], "event");
        assert_eq!(challenge["event"], "connect.challenge");
        ws.challenge = challenge;
        ws
    }

    /// The next frame (bounded wait); `None` when the socket closed.
    pub async fn next_frame(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("a frame within 30 s");
            match message {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next event frame (pending ones first).
    pub async fn next_event(&mut self) -> Option<Value> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        loop {
            let frame = self.next_frame().await?;
            if frame["type"] == "event" {
                return Some(frame);
            }
        }
    }

    /// Sends a request and returns its `res` frame, queueing events.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = format!("{method}-{}", self.next_id);
        let frame = json!({ "type": "req", "id": id, "method": method, "params": params });
        self.socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
        loop {
            let frame = self.next_frame().await.expect("socket open for a response");
            if frame["type"] == "res" && frame["id"] == id {
                return frame;
            }
            if frame["type"] == "event" {
                self.pending.push_back(frame);
            }
        }
    }

    /// `connect`; the hello payload, or the error frame.
    pub async fn connect(
        &mut self,
        token: Option<&str>,
        subscribe: Option<Vec<&str>>,
    ) -> Result<Value, Value> {
        let mut params = json!({
            "minProtocol": 1, "maxProtocol": 1,
            "client": { "id": "gateway-tests", "version": "0", "platform": "rust" },
        });
        if let Some(token) = token {
            params["auth"] = json!({ "token": token });
        }
        if let Some(subscribe) = subscribe {
            params["subscribe"] = json!(subscribe);
        }
        let res = self.request("connect", params).await;
        if res["ok"] == true {
            Ok(res["payload"].clone())
        } else {
            Err(res)
        }
    }

    /// Subscribes to a run's events; the `res` frame.
    pub async fn stream(&mut self, run: &str, after_seq: Option<u64>) -> Value {
        let mut params = json!({ "runId": run });
        if let Some(after) = after_seq {
            params["afterSeq"] = json!(after);
        }
        self.request("streamRunEvents", params).await
    }

    /// The next `run.*` stream frame other than heartbeats.
    pub async fn next_run_frame(&mut self) -> Option<Value> {
        loop {
            let frame = self.next_event().await?;
            match frame["event"].as_str() {
                Some("run.event" | "run.gap_resync" | "run.error") => return Some(frame),
                _ => continue,
            }
        }
    }
}

/// A scripted-fixture input: `{"root": root}`.
pub fn script(root: Value) -> Value {
    json!({ "root": root })
}

/// A scripted task node.
pub fn task(id: &str, extra: Value) -> Value {
    let mut spec = json!({ "id": id });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({ "task": spec })
}
