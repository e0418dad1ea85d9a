//! Outbound HTTP from workflows, through the host, against the real binary:
//! `tests/guests/http` sends the request its run input describes with the
//! SDK's `tools::http`, to small HTTP servers this test starts on
//! 127.0.0.1 (no internet). Each test checks what the workflow got and what
//! the servers saw: closed by default, the operator's patterns (flags and
//! `--config`), redirects checked hop by hop, names that resolve to
//! loopback, the `Host` header, the size cap and the deadline.

mod common;
mod http_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http_support::{Options, Server, SseEvent};
use serde_json::{Value, json};

const FIXTURE: &str = "fixture-http";

/// What an upstream server saw: each request's path and `Host` header, and
/// what `/echo-auth` received (`Authorization` and body).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>, Arc<Mutex<Vec<String>>>);

impl Seen {
    fn requests(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }

    fn received(&self) -> Vec<String> {
        self.1.lock().unwrap().clone()
    }
}

/// A real HTTP server on 127.0.0.1:0, served until the test ends.
struct Upstream {
    addr: SocketAddr,
    seen: Seen,
}

impl Upstream {
    async fn start() -> Self {
        let seen = Seen::default();
        let record = seen.clone();
        let received = seen.1.clone();
        let app = Router::new()
            .route(
                "/echo-auth",
                post(move |headers: HeaderMap, body: String| async move {
                    let auth = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    received.lock().unwrap().push(format!("{auth}|{body}"));
                    ([("x-echo", auth.clone())], format!("{auth}|{body}"))
                }),
            )
            .route("/hello", get(|| async { "hello from upstream" }))
            .route(
                "/host",
                get(|headers: HeaderMap| async move {
                    let hosts: Vec<String> = headers
                        .get_all(header::HOST)
                        .iter()
                        .map(|v| v.to_str().unwrap_or("?").to_string())
                        .collect();
                    hosts.join(",")
                }),
            )
            .route(
                "/redirect",
                get(|Query(q): Query<HashMap<String, String>>| async move {
                    (StatusCode::FOUND, [(header::LOCATION, q["to"].clone())])
                }),
            )
            .route("/big", get(|| async { "x".repeat(4096) }))
            .route(
                "/stream",
                get(|| async {
                    // No Content-Length: the cap must hold while reading.
                    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 1024]));
                    Body::from_stream(futures::stream::iter(chunks))
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    "too late"
                }),
            )
            .route("/echo", post(|body: String| async move { body }))
            .layer(middleware::from_fn(move |request: Request, next: Next| {
                let record = record.clone();
                async move {
                    let host = request
                        .headers()
                        .get(header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    record
                        .0
                        .lock()
                        .unwrap()
                        .push((request.uri().path().to_string(), host));
                    next.run(request).await.into_response()
                }
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The pattern that allows this server: its IP literal and port.
    fn pattern(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn host(args: &[String]) -> Server {
    Server::with(Options {
        install: vec![FIXTURE.into()],
        extra_args: args.to_vec(),
        ..Options::default()
    })
}

/// What one `fetch` run ended with.
struct Fetch {
    status: Value,
    events: Vec<SseEvent>,
}

impl Fetch {
    /// The task's output (it emits it), when it succeeded.
    fn output(&self) -> Value {
        let emitted = self
            .events
            .iter()
            .find(|e| e.kind() == "NodeOutput" && e.data["stream"] == "emit")
            .unwrap_or_else(|| panic!("no output; run {}", self.status));
        serde_json::from_str(emitted.data["text"].as_str().unwrap()).unwrap()
    }

    /// The task's error (code, message), when it failed.
    fn error(&self) -> (String, String) {
        let failed = self
            .events
            .iter()
            .find(|e| e.kind() == "NodeFailed")
            .unwrap_or_else(|| panic!("the task did not fail; run {}", self.status));
        let error = &failed.data["error"];
        (
            error["code"].as_str().unwrap().to_string(),
            error["message"].as_str().unwrap().to_string(),
        )
    }

    fn denials(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e.kind() == "HttpDenied")
            .map(|e| &e.data)
            .collect()
    }
}

async fn fetch(server: &Server, request: Value) -> Fetch {
    let run = server.start_run(&format!("{FIXTURE}.wasm"), request).await;
    let events = server.all_events(&run).await;
    Fetch {
        status: server.status(&run).await,
        events,
    }
}

fn port(addr: SocketAddr) -> u64 {
    u64::from(addr.port())
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_by_default_every_request_is_denied_and_reported() {
    let upstream = Upstream::start().await;
    let server = host(&[]);
    let (_, health) = server.get("/health").await;
    assert_eq!(health["http"]["enabled"], false, "{health}");
    assert_eq!(health["http"]["allow"], json!([]), "{health}");

    let run = fetch(&server, json!({ "url": upstream.url("/hello") })).await;
    assert_eq!(run.status["status"], "failed", "{}", run.status);
    let (code, message) = run.error();
    assert_eq!(code, "HTTP_DENIED", "{message}");
    assert!(message.contains(&upstream.addr.to_string()), "{message}");
    let denials = run.denials();
    assert_eq!(denials.len(), 1, "{denials:?}");
    let denied = denials[0];
    assert_eq!(denied["nodeId"], "fetch");
    assert_eq!(denied["iteration"], 0);
    assert_eq!(denied["method"], "GET");
    assert_eq!(denied["scheme"], "http");
    assert_eq!(denied["host"], "127.0.0.1");
    assert_eq!(denied["port"], port(upstream.addr));
    assert_eq!(denied["reason"], "not-allowed");
    assert!(
        upstream.seen.requests().is_empty(),
        "a denied request was sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_request_reaches_the_server_and_its_body_the_task() {
    let upstream = Upstream::start().await;
    // The policy comes from the operator's config file and flags together.
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("smithers.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nallow = [\"{}\"]\ntimeout = \"7s\"\nmax_response_bytes = 65536\n",
            upstream.pattern()
        ),
    )
    .unwrap();
    let server = host(&[
        "--config".into(),
        config.display().to_string(),
        "--http-allow".into(),
        "GET,POST *.example.com".into(),
    ]);
    let (_, health) = server.get("/health").await;
    let http = &health["http"];
    assert_eq!(http["enabled"], true, "{health}");
    assert_eq!(
        http["allow"],
        json!([
            format!("http://{}", upstream.addr),
            "GET,POST https://*.example.com:443"
        ]),
        "{health}"
    );
    assert_eq!(http["timeoutMs"], 7000);
    assert_eq!(http["maxResponseBytes"], 65536);

    let run = fetch(&server, json!({ "url": upstream.url("/hello") })).await;
    assert_eq!(run.status["status"], "finished", "{}", run.status);
    let output = run.output();
    assert_eq!(output["status"], 200);
    assert_eq!(output["body"], "hello from upstream");
    assert!(run.denials().is_empty());

    let run = fetch(
        &server,
        json!({ "method": "POST", "url": upstream.url("/echo"), "body": "ping ".repeat(3000) }),
    )
    .await;
    assert_eq!(
        run.output()["body"],
        "ping ".repeat(3000),
        "the request body arrives whole"
    );
    assert_eq!(upstream.seen.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_allowed_authority_and_methods_get_through() {
    let allowed = Upstream::start().await;
    let other = Upstream::start().await;
    let server = host(&["--http-allow".into(), format!("GET {}", allowed.pattern())]);

    let run = fetch(&server, json!({ "url": other.url("/hello") })).await;
    let (code, message) = run.error();
    assert_eq!(code, "HTTP_DENIED");
    assert!(message.contains(&other.addr.to_string()), "{message}");
    assert_eq!(run.denials()[0]["port"], port(other.addr));

    let run = fetch(
        &server,
        json!({ "method": "POST", "url": allowed.url("/echo"), "body": "x" }),
    )
    .await;
    assert_eq!(run.error().0, "HTTP_DENIED");
    assert_eq!(run.denials()[0]["method"], "POST");

    let run = fetch(
        &server,
        json!({ "url": allowed.url("/hello").replace("http://", "https://") }),
    )
    .await;
    assert_eq!(run.error().0, "HTTP_DENIED", "https is another scheme");

    assert!(other.seen.requests().is_empty());
    assert!(allowed.seen.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_followed_only_within_the_allowlist() {
    let allowed = Upstream::start().await;
    let other = Upstream::start().await;
    let server = host(&["--http-allow".into(), allowed.pattern()]);

    let within = format!("/redirect?to={}", allowed.url("/hello"));
    let run = fetch(&server, json!({ "url": allowed.url(&within) })).await;
    let output = run.output();
    assert_eq!(output["body"], "hello from upstream");
    assert_eq!(output["url"], allowed.url("/hello"));

    let away = format!("/redirect?to={}", other.url("/hello"));
    let run = fetch(&server, json!({ "url": allowed.url(&away) })).await;
    let (code, message) = run.error();
    assert_eq!(code, "HTTP_DENIED", "{message}");
    assert!(message.contains(&other.addr.to_string()), "{message}");
    assert_eq!(run.denials()[0]["port"], port(other.addr));
    assert!(
        other.seen.requests().is_empty(),
        "the redirect was followed"
    );

    // With redirects off, the guest sees the redirect itself.
    let run = fetch(
        &server,
        json!({ "url": allowed.url(&away), "maxRedirects": 0 }),
    )
    .await;
    assert_eq!(run.output()["status"], 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_resolving_to_loopback_needs_a_pattern_naming_the_address() {
    let upstream = Upstream::start().await;
    let by_name = format!("http://localhost:{}", upstream.addr.port());
    let server = host(&[
        "--http-allow".into(),
        by_name.clone(),
        "--http-allow".into(),
        upstream.pattern(),
    ]);

    let run = fetch(&server, json!({ "url": format!("{by_name}/hello") })).await;
    let (code, message) = run.error();
    assert_eq!(code, "HTTP_DENIED", "{message}");
    assert!(message.contains("localhost"), "{message}");
    let denied = run.denials()[0];
    assert_eq!(denied["reason"], "non-public-address");
    let address = denied["address"].as_str().unwrap();
    assert!(address == "127.0.0.1" || address == "::1", "{address}");
    assert!(upstream.seen.requests().is_empty(), "localhost was reached");

    let run = fetch(&server, json!({ "url": upstream.url("/hello") })).await;
    assert_eq!(run.output()["body"], "hello from upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_set_host_header_cannot_redirect_an_allowed_authority() {
    let upstream = Upstream::start().await;
    let server = host(&["--http-allow".into(), upstream.pattern()]);
    let run = fetch(
        &server,
        json!({
            "url": upstream.url("/host"),
            "headers": [["Host", "evil.example:1234"], ["host", "metadata.internal"]],
        }),
    )
    .await;
    let output = run.output();
    assert_eq!(output["body"], upstream.addr.to_string(), "{output}");
    assert_eq!(
        upstream.seen.requests(),
        vec![("/host".to_string(), upstream.addr.to_string())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_over_cap_response_or_a_slow_one_fails_with_a_clear_error() {
    let upstream = Upstream::start().await;
    let server = host(&[
        "--http-allow".into(),
        upstream.pattern(),
        "--max-http-response-bytes".into(),
        "2048".into(),
        "--http-timeout".into(),
        "1s".into(),
    ]);

    let run = fetch(&server, json!({ "url": upstream.url("/big") })).await;
    let (code, message) = run.error();
    assert_eq!(code, "HTTP_RESPONSE_TOO_LARGE", "{message}");
    assert!(message.contains("4096 bytes"), "{message}");

    let run = fetch(&server, json!({ "url": upstream.url("/stream") })).await;
    let (code, message) = run.error();
    assert_eq!(code, "HTTP_RESPONSE_TOO_LARGE", "{message}");

    let started = std::time::Instant::now();
    let run = fetch(&server, json!({ "url": upstream.url("/slow") })).await;
    let (code, message) = run.error();
    assert_eq!(code, "HTTP_TIMEOUT", "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the deadline held"
    );

    // Under the cap, the same host still answers.
    let run = fetch(&server, json!({ "url": upstream.url("/hello") })).await;
    assert_eq!(run.output()["status"], 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_only_their_destinations_and_never_the_guest_or_the_record() {
    const VALUE: &str = "sk-live-9f8e7d6c5b4a3f2e1d0c";
    let bound = Upstream::start().await;
    let other = Upstream::start().await;
    let server = Server::with(Options {
        install: vec![FIXTURE.into()],
        extra_args: vec![
            "--http-allow".into(),
            bound.pattern(),
            "--http-allow".into(),
            other.pattern(),
            "--secret".into(),
            format!("API_KEY=SMITHERS_TEST_API_KEY@{}+body", bound.pattern()),
        ],
        env: vec![("SMITHERS_TEST_API_KEY".into(), VALUE.into())],
        ..Options::default()
    });
    let (_, health) = server.get("/health").await;
    let secret = &health["http"]["secrets"][0];
    assert_eq!(secret["name"], "API_KEY", "{health}");
    assert_eq!(secret["boundTo"], json!([bound.pattern()]));
    assert_eq!(secret["inBody"], true);

    let request = |upstream: &Upstream| {
        json!({
            "method": "POST",
            "url": upstream.url("/echo-auth"),
            "headers": [["authorization", "Bearer ${secret:API_KEY}"]],
            "body": "key=${secret:API_KEY}",
        })
    };
    let to_bound = fetch(&server, request(&bound)).await;
    let to_other = fetch(&server, request(&other)).await;

    // The bound destination got the value, in the header and the body ...
    assert_eq!(
        bound.seen.received(),
        vec![format!("Bearer {VALUE}|key={VALUE}")]
    );
    // ... the guest saw only its placeholder, even in what came back ...
    let output = to_bound.output();
    let placeholder = output["headers"]["x-echo"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    assert!(
        placeholder.starts_with("smithers-secret-API_KEY-"),
        "{output}"
    );
    assert_eq!(
        output["body"],
        format!("Bearer {placeholder}|key={placeholder}")
    );
    // ... and a destination it is not bound to got the placeholder.
    assert_eq!(
        other.seen.received(),
        vec![format!("Bearer {placeholder}|key={placeholder}")]
    );
    assert_eq!(to_other.output()["status"], 200);

    // The value is nowhere in the run's record, the host's answers or files.
    let mut places = vec![
        ("/health", health.to_string()),
        (
            "/metrics",
            server
                .client
                .get(server.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        ),
        ("the host's log", server.log()),
    ];
    for run in [&to_bound, &to_other] {
        let events: Vec<String> = run.events.iter().map(|e| e.data.to_string()).collect();
        places.push(("the run's events", events.join("\n")));
        places.push(("the run's status", run.status.to_string()));
    }
    for entry in walk(server.state.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        places.push(("a state file", String::from_utf8_lossy(&bytes).into_owned()));
    }
    for (place, text) in places {
        assert!(!text.contains(VALUE), "the secret's value is in {place}");
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_bad_pattern_or_config_stops_the_host_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let config = dir.path().join("smithers.toml");
    std::fs::write(&config, "[http]\nallow = [\"ftp://x\"]\n").unwrap();
    for args in [
        vec!["--http-allow".to_string(), "x.com/path".to_string()],
        vec!["--config".to_string(), config.display().to_string()],
    ] {
        let output = std::process::Command::new(common::host_binary())
            .args(["runs", "--root-dir"])
            .arg(&root)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("invalid HTTP allow pattern"), "{stderr}");
    }

    // A policy a workflow could have written (a file in the root dir, or a
    // symlink to one) is refused, valid as it is.
    std::fs::write(root.join("smithers.toml"), "[http]\nallow = [\"*\"]\n").unwrap();
    std::os::unix::fs::symlink(root.join("smithers.toml"), dir.path().join("link.toml")).unwrap();
    for config in [root.join("smithers.toml"), dir.path().join("link.toml")] {
        let output = std::process::Command::new(common::host_binary())
            .args(["runs", "--root-dir"])
            .arg(&root)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{config:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("inside the root dir"), "{stderr}");
    }
}
