//! Denial of service over the network, against the real binary: metric
//! labels from a closed set, idle/slow/partial connections cut after the
//! idle timeout (HTTP/1 and h2c), the global connection limit (the host's
//! descriptors stay bounded and `/health` keeps answering), and subscriber
//! limits (SSE in server and serve mode, WebSockets per token in the
//! gateway). Every bound is checked on the host side: its open descriptors
//! (`/proc/<pid>/fd`), its peak RSS, its `/metrics` text and gauges.

mod common;
mod gateway_support;
mod http_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use http_support::{Options, Server};

/// The HTTP/2 connection preface a prior-knowledge (h2c) client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
const H2_EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
/// Methods a metric label may name.
const METHOD_LABELS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// A `/proc/<pid>/status` field in KiB (`VmHWM`, `VmRSS`).
fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The largest descriptor count seen over `window` (accepts and closes are
/// asynchronous, so one sample could miss a peak).
async fn peak_fds(pid: i32, window: Duration) -> usize {
    let until = Instant::now() + window;
    let mut peak = 0;
    while Instant::now() < until {
        peak = peak.max(open_fds(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

/// Waits (bounded) until the host holds at most `max` descriptors.
async fn fds_drop_to(pid: i32, max: usize, limit: Duration) -> usize {
    let until = Instant::now() + limit;
    loop {
        let now = open_fds(pid);
        if now <= max || Instant::now() > until {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when the peer closed `stream` within `limit`; with `trickle`, one
/// byte of it is written every 300 ms meanwhile (a slowloris client).
async fn closed_within(stream: &mut TcpStream, limit: Duration, trickle: Option<&[u8]>) -> bool {
    let until = Instant::now() + limit;
    let mut next = 0;
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(300));
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => {}
        }
        if let Some(bytes) = trickle {
            let byte = [bytes[next % bytes.len()]];
            next += 1;
            if stream.write_all(&byte).await.is_err() {
                return true;
            }
        }
    }
    false
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// `GET /health` over a fresh connection (bounded); its status.
async fn health(base: &str) -> u16 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    match client.get(format!("{base}/health")).send().await {
        Ok(response) => response.status().as_u16(),
        Err(e) => panic!("/health did not answer: {e}"),
    }
}

/// The values of `label` over every sample line of `text`.
fn label_values(text: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let start = l.find(&needle)? + needle.len();
            let end = l[start..].find('"')? + start;
            Some(l[start..end].to_string())
        })
        .collect()
}

/// Sends `count` requests with long, unique methods on unique paths (each on
/// its own connection, no credentials), and returns how many got an answer.
async fn unique_method_flood(addr: &str, count: usize, method_len: usize) -> usize {
    let mut answered = 0;
    for i in 0..count {
        let method = format!("M{i:05}{}", "X".repeat(method_len));
        let path = if i % 2 == 0 {
            format!("/v1/runs/r{i}")
        } else {
            format!("/nowhere/{i}/{}", "p".repeat(64))
        };
        let head =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let mut stream = connect(addr).await;
        if stream.write_all(head.as_bytes()).await.is_err() {
            continue;
        }
        let mut response = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
        if matches!(read, Ok(Ok(_))) && response.starts_with(b"HTTP/1.1 ") {
            answered += 1;
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_stay_in_a_closed_set_whatever_methods_and_paths_clients_send() {
    let server = Server::with(Options {
        token: Some("metrics-secret".into()),
        ..Options::default()
    });
    let pid = server.pid();
    let (code, _) = server.get("/metrics").await;
    assert_eq!(code, 200);
    let peak_before = status_kib(pid, "VmHWM");

    // 300 unauthenticated requests, each with a unique 16 KB method and a
    // unique path: before the fix each became a label set of its own.
    let answered = unique_method_flood(&server.addr, 300, 16 * 1024).await;
    assert!(answered > 0, "the host answered none of the requests");
    let text = closed_set_metrics(&server.client, &server.url("/metrics"), "metrics-secret").await;
    let methods = label_values(&text, "method");
    assert!(methods.contains("other"), "{methods:?}");
    let routes = label_values(&text, "route");
    for route in &routes {
        assert!(
            !route.contains("/r0") && !route.contains("nowhere"),
            "{route}"
        );
    }
    assert!(routes.contains("/v1/runs/{run_id}"), "{routes:?}");
    assert!(routes.contains("unmatched"), "{routes:?}");
    // Host side: rendering /metrics did not balloon the process either.
    let peak_after = status_kib(pid, "VmHWM");
    assert!(
        peak_after < peak_before + 48 * 1024,
        "peak RSS grew from {peak_before} KiB to {peak_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_metric_labels_stay_in_a_closed_set() {
    let gw = gateway_support::Gateway::start(
        "[listen]\nport = 0\n[auth]\nmode = \"token\"\n\
         [auth.tokens.gateway-secret]\nrole = \"operator\"\nscopes = [\"*\"]\n",
        &[],
    );
    let addr = gw.base.trim_start_matches("http://").to_string();
    let answered = unique_method_flood(&addr, 200, 8 * 1024).await;
    assert!(answered > 0);
    closed_set_metrics(&gw.client, &gw.url("/metrics"), "gateway-secret").await;
}

/// Fetches `/metrics` and checks it stayed small and that every method and
/// route label is from the closed set; returns the text.
async fn closed_set_metrics(client: &reqwest::Client, url: &str, token: &str) -> String {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.len() < 256 * 1024,
        "/metrics grew to {} bytes after the flood",
        text.len()
    );
    let methods = label_values(&text, "method");
    assert!(
        methods.iter().all(|m| METHOD_LABELS.contains(&m.as_str())),
        "method labels outside the closed set: {:?}",
        methods
            .iter()
            .map(|m| &m[..m.len().min(40)])
            .collect::<Vec<_>>()
    );
    for route in &label_values(&text, "route") {
        assert!(
            route == "unmatched" || route.starts_with('/') && route.len() < 64,
            "route label is not a template: {}",
            &route[..route.len().min(80)]
        );
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_partial_connections_are_cut_after_the_idle_timeout() {
    let server = Server::with(Options {
        extra_args: vec!["--idle-timeout-secs".into(), "1".into()],
        ..Options::default()
    });
    let pid = server.pid();
    assert_eq!(health(&server.base).await, 200);
    let baseline = fds_drop_to(pid, 0, Duration::from_millis(500)).await;

    let addr = server.addr.as_str();
    let mut silent = connect(addr).await;
    let mut partial_line = connect(addr).await;
    partial_line.write_all(b"GET /health HT").await.unwrap();
    let mut slowloris = connect(addr).await;
    slowloris
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut h2_partial_preface = connect(addr).await;
    h2_partial_preface
        .write_all(&H2_PREFACE[..10])
        .await
        .unwrap();
    let mut h2_partial_frame = connect(addr).await;
    h2_partial_frame.write_all(H2_PREFACE).await.unwrap();
    h2_partial_frame
        .write_all(&H2_EMPTY_SETTINGS[..5])
        .await
        .unwrap();
    let mut h2_no_stream = connect(addr).await;
    h2_no_stream.write_all(H2_PREFACE).await.unwrap();
    h2_no_stream.write_all(&H2_EMPTY_SETTINGS).await.unwrap();
    let mut keep_alive = connect(addr).await;
    keep_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    keep_alive.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let opened = open_fds(pid);
    assert!(opened >= baseline + 7, "{opened} fds, baseline {baseline}");

    let limit = Duration::from_secs(10);
    assert!(closed_within(&mut silent, limit, None).await, "silent");
    assert!(
        closed_within(&mut partial_line, limit, None).await,
        "partial request line"
    );
    assert!(
        closed_within(&mut slowloris, limit, Some(b"X-Slow: y\r\n")).await,
        "slowloris headers"
    );
    assert!(
        closed_within(&mut h2_partial_preface, limit, None).await,
        "partial h2c preface"
    );
    assert!(
        closed_within(&mut h2_partial_frame, limit, None).await,
        "h2c partial SETTINGS frame"
    );
    assert!(
        closed_within(&mut h2_no_stream, limit, None).await,
        "h2c connection without a stream"
    );
    assert!(
        closed_within(&mut keep_alive, limit, None).await,
        "idle keep-alive"
    );
    let after = fds_drop_to(pid, baseline, Duration::from_secs(5)).await;
    assert!(after <= baseline, "{after} fds left, baseline {baseline}");
    assert_eq!(health(&server.base).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_responses_is_cut_after_the_idle_timeout() {
    let server = Server::with(Options {
        extra_args: vec!["--idle-timeout-secs".into(), "1".into()],
        ..Options::default()
    });
    let pid = server.pid();
    assert_eq!(health(&server.base).await, 200);
    let baseline = fds_drop_to(pid, 0, Duration::from_millis(500)).await;

    // 300 pipelined requests for a 50 KB document, and a small receive
    // buffer that is never read: the host's writes stall for good, with a
    // request in flight the whole time.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr.parse().unwrap()).await.unwrap();
    let request = "GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(300);
    stream.write_all(request.as_bytes()).await.unwrap();
    let held = peak_fds(pid, Duration::from_millis(300)).await;
    assert!(
        held > baseline,
        "the connection is open ({held} fds, baseline {baseline})"
    );

    let after = fds_drop_to(pid, baseline, Duration::from_secs(15)).await;
    assert!(
        after <= baseline,
        "the stalled connection is still held: {after} fds, baseline {baseline}"
    );
    assert_eq!(health(&server.base).await, 200);
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_beyond_the_connection_limit_keep_fds_bounded_and_health_answers() {
    let server = Server::with(Options {
        extra_args: vec![
            "--max-connections".into(),
            "64".into(),
            "--max-sse-subscribers".into(),
            "16".into(),
            "--idle-timeout-secs".into(),
            "60".into(),
        ],
        ..Options::default()
    });
    let pid = server.pid();
    assert_eq!(health(&server.base).await, 200);
    let baseline = fds_drop_to(pid, 0, Duration::from_millis(500)).await;

    let mut sockets = Vec::new();
    for _ in 0..200 {
        sockets.push(connect(&server.addr).await);
    }
    let peak = peak_fds(pid, Duration::from_secs(1)).await;
    assert!(
        peak <= baseline + 64 + 8,
        "200 idle sockets: {peak} fds in the host (baseline {baseline}, limit 64)"
    );
    // A fresh client still gets an answer: the longest-idle socket makes room.
    assert_eq!(health(&server.base).await, 200);
    assert!(peak_fds(pid, Duration::from_millis(300)).await <= baseline + 64 + 8);
    let mut closed = 0;
    for socket in &mut sockets {
        if closed_within(socket, Duration::from_millis(50), None).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 200 - 64,
        "only {closed} of 200 idle sockets were closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_bounds_connections_and_cuts_idle_and_partial_ones() {
    let gw = gateway_support::Gateway::start(
        "[listen]\nport = 0\n[limits]\nmax_connections = 8\n\
         max_open_connections = 64\nidle_timeout_ms = 1000\n",
        &[],
    );
    let pid = gw.pid();
    assert_eq!(health(&gw.base).await, 200);
    let baseline = fds_drop_to(pid, 0, Duration::from_millis(500)).await;
    let addr = gw.base.trim_start_matches("http://").to_string();

    let mut sockets = Vec::new();
    for i in 0..200 {
        let mut socket = connect(&addr).await;
        if i % 3 == 0 {
            socket.write_all(H2_PREFACE).await.unwrap();
            socket.write_all(&H2_EMPTY_SETTINGS[..4]).await.unwrap();
        }
        sockets.push(socket);
    }
    let peak = peak_fds(pid, Duration::from_millis(500)).await;
    assert!(
        peak <= baseline + 64 + 8,
        "200 sockets: {peak} fds in the gateway (baseline {baseline}, limit 64)"
    );
    assert_eq!(health(&gw.base).await, 200);
    for (i, socket) in sockets.iter_mut().enumerate() {
        assert!(
            closed_within(socket, Duration::from_secs(10), None).await,
            "socket {i} still open after the idle timeout"
        );
    }
    let after = fds_drop_to(pid, baseline, Duration::from_secs(5)).await;
    assert!(after <= baseline, "{after} fds left, baseline {baseline}");
}

/// Opens `GET path` as an SSE stream from `local` (a loopback address).
async fn open_stream(
    base: &str,
    path: &str,
    token: Option<&str>,
    local: [u8; 4],
) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(local))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut request = client.get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn refused(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TOO_MANY_STREAMS", "{body}");
    body
}

fn gauge(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_subscribers_beyond_the_client_and_global_limits_get_429() {
    let server = Server::with(Options {
        token: Some("sse-secret".into()),
        install: vec!["example-approval".into()],
        extra_args: vec![
            "--max-sse-subscribers".into(),
            "3".into(),
            "--max-sse-per-client".into(),
            "2".into(),
        ],
        ..Options::default()
    });
    let run = server
        .start_run("example-approval.wasm", json!({ "target": "prod" }))
        .await;
    server.wait_status(&run, "waiting-approval").await;
    let path = format!("/v1/runs/{run}/events");
    let token = Some("sse-secret");
    let a = [127, 0, 0, 1];
    let b = [127, 0, 0, 2];

    let first = open_stream(&server.base, &path, token, a).await;
    assert_eq!(first.status(), 200);
    let second = open_stream(&server.base, &path, token, a).await;
    assert_eq!(second.status(), 200);
    let body = refused(open_stream(&server.base, &path, token, a).await).await;
    assert_eq!(body["error"]["details"]["limit"], 2, "{body}");
    let third = open_stream(&server.base, &path, token, b).await;
    assert_eq!(third.status(), 200, "another client still has room");
    let body = refused(open_stream(&server.base, &path, token, b).await).await;
    assert_eq!(body["error"]["details"]["limit"], 3, "{body}");

    // Host side: exactly three streams are held open.
    let (code, metrics) = server.get("/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        gauge(metrics.as_str().unwrap(), "smithers_sse_subscribers"),
        3
    );

    // A subscriber that leaves frees its slot.
    drop(first);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let again = open_stream(&server.base, &path, token, a).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(Instant::now() < until, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((second, third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_mode_refuses_sse_subscribers_beyond_the_limit() {
    let server = Server::with(Options {
        install: vec!["example-approval".into()],
        extra_args: vec![
            "up".into(),
            "{root}/example-approval.wasm".into(),
            "--serve".into(),
            "--input".into(),
            json!({ "target": "prod" }).to_string(),
            "--max-sse-subscribers".into(),
            "1".into(),
        ],
        ..Options::default()
    });
    let first = open_stream(&server.base, "/events", None, [127, 0, 0, 1]).await;
    assert_eq!(first.status(), 200);
    let body = refused(open_stream(&server.base, "/events", None, [127, 0, 0, 2]).await).await;
    assert_eq!(body["error"]["details"]["limit"], 1, "{body}");
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_websockets_beyond_the_per_token_limit_are_refused() {
    let gw = gateway_support::Gateway::start(
        "[listen]\nport = 0\n[limits]\nmax_connections_per_token = 2\n\
         [auth]\nmode = \"token\"\n\
         [auth.tokens.token-a]\nrole = \"operator\"\nscopes = [\"*\"]\n\
         [auth.tokens.token-b]\nrole = \"operator\"\nscopes = [\"*\"]\n",
        &[],
    );
    let (first, _) = gw.connect(Some("token-a")).await;
    let (_second, _) = gw.connect(Some("token-a")).await;
    let mut third = gateway_support::Ws::open(&gw.ws_url()).await;
    let refusal = third
        .connect(Some("token-a"), None)
        .await
        .expect_err("a third socket for token-a is refused");
    assert_eq!(refusal["error"]["code"], "CONNECTION_LIMIT", "{refusal}");
    assert!(
        third.next_frame().await.is_none(),
        "the refused socket is closed"
    );
    let (_other, _) = gw.connect(Some("token-b")).await;

    // Host side: the refused socket is gone, the three accepted stay.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = gw
            .client
            .get(gw.url("/metrics"))
            .bearer_auth("token-b")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if gauge(&text, "smithers_gateway_connections_active") == 3 {
            break;
        }
        assert!(Instant::now() < until, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Closing one frees its slot for the same token.
    drop(first);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ws = gateway_support::Ws::open(&gw.ws_url()).await;
        if ws.connect(Some("token-a"), None).await.is_ok() {
            break;
        }
        assert!(Instant::now() < until, "token-a never got its slot back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refuses_websocket_upgrades_beyond_the_open_socket_limit() {
    // max_connections 1 leaves room for 1 + 64 sockets, authenticated or not.
    let gw = gateway_support::Gateway::start(
        "[listen]\nport = 0\n[limits]\nmax_connections = 1\nauth_deadline_ms = 60000\n",
        &[],
    );
    let mut sockets = Vec::new();
    for _ in 0..65 {
        sockets.push(gateway_support::Ws::open(&gw.ws_url()).await);
    }
    match tokio_tungstenite::connect_async(gw.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "CONNECTION_LIMIT", "{body}");
        }
        Err(e) => panic!("refused the wrong way: {e}"),
        Ok(_) => panic!("a 66th WebSocket was accepted"),
    }
    let (_, metrics) = gw.get("/metrics", &[]).await;
    assert_eq!(
        gauge(
            metrics.as_str().unwrap(),
            "smithers_gateway_connections_active"
        ),
        65
    );
    drop(sockets);
}
