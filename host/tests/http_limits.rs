//! Denial of service over the network, against the real binary: metric
//! labels from a closed set. Every bound is checked on the host side: its
//! `/metrics` text and its peak RSS.

mod common;
mod gateway_support;
mod http_support;

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use http_support::{Options, Server};

/// Methods a metric label may name.
const METHOD_LABELS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

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

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
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
    let response = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth("metrics-secret")
        .send()
        .await
        .unwrap();
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
    assert!(methods.contains("other"), "{methods:?}");
    let routes = label_values(&text, "route");
    for route in &routes {
        assert!(
            route == "unmatched" || route.starts_with('/') && route.len() < 64,
            "route label is not a template: {}",
            &route[..route.len().min(80)]
        );
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
    let response = gw
        .client
        .get(gw.url("/metrics"))
        .bearer_auth("gateway-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.len() < 256 * 1024,
        "/metrics grew to {} bytes",
        text.len()
    );
    let methods = label_values(&text, "method");
    assert!(
        methods.iter().all(|m| METHOD_LABELS.contains(&m.as_str())),
        "method labels outside the closed set: {} values",
        methods.len()
    );
    let routes = label_values(&text, "route");
    assert!(
        routes
            .iter()
            .all(|r| r == "unmatched" || r.starts_with('/') && r.len() < 64),
        "{} route values",
        routes.len()
    );
}
