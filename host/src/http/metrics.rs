//! Prometheus metrics, hand-rolled: Smithers' event-driven `smithers_*`
//! names (contract §8.7), HTTP request counts and latencies by route, SSE
//! subscribers, compile-cache counters and the database's size.
//!
//! Event metrics are fed by one background task reading the store's
//! all-runs broadcast, so the engine never waits for metrics; if that task
//! lags behind a burst it skips what it missed and counts the loss in
//! `smithers_metrics_events_dropped_total`. Every catalogued metric is always
//! printed (zero-filled), as Smithers does.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::store::StoredEvent;

/// Upper bounds (ms) of every duration histogram's buckets.
const BUCKETS_MS: [f64; 18] = [
    1.0,
    2.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    900_000.0,
    3_600_000.0,
];

/// Prometheus text exposition content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A cumulative histogram of durations in milliseconds.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_MS.len()],
    /// Sum in microseconds, to keep fractions of HTTP latencies.
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, ms: f64) {
        let ms = ms.max(0.0);
        for (bound, bucket) in BUCKETS_MS.iter().zip(&self.buckets) {
            if ms <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us
            .fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS_MS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// Event-driven counters, in exposition order: (name, help).
const EVENT_COUNTERS: [(&str, &str); 18] = [
    ("smithers_runs_total", "Runs started"),
    ("smithers_runs_resumed_total", "Runs resumed"),
    ("smithers_runs_finished_total", "Runs finished"),
    ("smithers_runs_failed_total", "Runs failed"),
    ("smithers_runs_cancelled_total", "Runs cancelled"),
    ("smithers_errors_total", "Run failures"),
    ("smithers_nodes_started", "Task attempts started"),
    ("smithers_nodes_finished", "Task attempts finished"),
    ("smithers_nodes_failed", "Task attempts failed"),
    ("smithers_node_retries_total", "Task retries scheduled"),
    ("smithers_events_emitted_total", "Events committed"),
    ("smithers_approvals_requested", "Approvals requested"),
    ("smithers_approvals_granted", "Approvals granted"),
    ("smithers_approvals_denied", "Approvals denied"),
    ("smithers_signals_received_total", "Signals delivered"),
    ("smithers_tool_calls_total", "Tool calls finished"),
    ("smithers_tool_calls_errors_total", "Tool calls that failed"),
    (
        "smithers_metrics_events_dropped_total",
        "Events the metrics task skipped after lagging",
    ),
];

#[derive(Debug, Clone, Copy)]
enum Counter {
    RunsTotal,
    RunsResumed,
    RunsFinished,
    RunsFailed,
    RunsCancelled,
    Errors,
    NodesStarted,
    NodesFinished,
    NodesFailed,
    NodeRetries,
    Events,
    ApprovalsRequested,
    ApprovalsGranted,
    ApprovalsDenied,
    Signals,
    ToolCalls,
    ToolCallErrors,
    Dropped,
}

/// Labels of an HTTP request metric. Every value comes from a closed set
/// (a method of [`method_label`], a route template, a status code), so no
/// client can add label sets by sending odd methods or paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status_code: u16,
}

/// The metric label of a request method: the standard ones by name, any
/// other (extension methods, garbage) as `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Debug, Default)]
struct HttpStats {
    requests: AtomicU64,
    duration: Histogram,
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: [AtomicU64; EVENT_COUNTERS.len()],
    nodes_active: AtomicI64,
    approvals_pending: AtomicI64,
    sse_subscribers: AtomicI64,
    run_duration: Histogram,
    node_duration: Histogram,
    http: Mutex<HashMap<HttpLabels, std::sync::Arc<HttpStats>>>,
}

impl Metrics {
    fn inc(&self, counter: Counter) {
        self.counters[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one HTTP request. `route` must be a route template or
    /// `unmatched`, never a raw path.
    pub fn record_http(
        &self,
        method: &axum::http::Method,
        route: &str,
        status: u16,
        duration_ms: f64,
    ) {
        let labels = HttpLabels {
            method: method_label(method),
            route: route.to_string(),
            status_code: status,
        };
        let stats = self
            .http
            .lock()
            .expect("metrics lock")
            .entry(labels)
            .or_default()
            .clone();
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.duration.observe(duration_ms);
    }

    /// Counts an SSE stream for as long as the guard lives.
    pub fn sse_subscriber(self: &std::sync::Arc<Self>) -> SubscriberGuard {
        self.sse_subscribers.fetch_add(1, Ordering::Relaxed);
        SubscriberGuard(self.clone())
    }

    /// Sets the pending approvals gauge (at start, from the database).
    pub fn set_pending_approvals(&self, count: i64) {
        self.approvals_pending.store(count, Ordering::Relaxed);
    }

    /// Updates the event metrics from the store's broadcast until `stop`.
    pub async fn follow_events(
        self: std::sync::Arc<Self>,
        engine: Engine,
        stop: CancellationToken,
    ) {
        let mut events = engine.store().hub().subscribe_all();
        let mut tracker = Tracker::default();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) => tracker.observe(&self, &event),
                Err(RecvError::Lagged(missed)) => {
                    self.counters[Counter::Dropped as usize].fetch_add(missed, Ordering::Relaxed);
                    tracing::warn!(missed, "metrics fell behind the event stream");
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// The exposition text.
    pub fn render(&self, engine: &Engine) -> String {
        let mut out = String::with_capacity(8192);
        for ((name, help), value) in EVENT_COUNTERS.iter().zip(&self.counters) {
            metric_header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let gauges = [
            (
                "smithers_runs_active",
                "Runs with a live driver",
                engine.active_runs() as i64,
            ),
            (
                "smithers_nodes_active",
                "Task attempts in flight",
                self.nodes_active.load(Ordering::Relaxed),
            ),
            (
                "smithers_approval_pending",
                "Approvals waiting for a decision",
                self.approvals_pending.load(Ordering::Relaxed),
            ),
            (
                "smithers_sse_subscribers",
                "Open SSE event streams",
                self.sse_subscribers.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            metric_header(&mut out, name, help, "gauge");
            let _ = writeln!(out, "{name} {}", value.max(0));
        }
        metric_header(
            &mut out,
            "smithers_run_duration_ms",
            "Run durations (start or resume to end)",
            "histogram",
        );
        self.run_duration
            .render(&mut out, "smithers_run_duration_ms", "");
        metric_header(
            &mut out,
            "smithers_node_duration_ms",
            "Task attempt durations",
            "histogram",
        );
        self.node_duration
            .render(&mut out, "smithers_node_duration_ms", "");
        let cache = engine.runtime().cache_stats();
        metric_header(
            &mut out,
            "smithers_compile_cache_hits_total",
            "Component loads served from a cache",
            "counter",
        );
        let _ = writeln!(
            out,
            "smithers_compile_cache_hits_total{{source=\"memory\"}} {}",
            cache.memory_hits
        );
        let _ = writeln!(
            out,
            "smithers_compile_cache_hits_total{{source=\"disk\"}} {}",
            cache.disk_hits
        );
        metric_header(
            &mut out,
            "smithers_compile_cache_misses_total",
            "Component compilations",
            "counter",
        );
        let _ = writeln!(
            out,
            "smithers_compile_cache_misses_total {}",
            cache.compiles
        );
        let database = engine.database_size();
        metric_header(
            &mut out,
            "smithers_db_size_bytes",
            "Size of the database, by file (main, wal)",
            "gauge",
        );
        for (file, bytes) in [("main", database.file_bytes), ("wal", database.wal_bytes)] {
            let _ = writeln!(out, "smithers_db_size_bytes{{file=\"{file}\"}} {bytes}");
        }
        self.render_http(&mut out);
        out
    }

    fn render_http(&self, out: &mut String) {
        let http: BTreeMap<HttpLabels, std::sync::Arc<HttpStats>> = self
            .http
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let label_text = |l: &HttpLabels| {
            format!(
                "method=\"{}\",route=\"{}\",status_class=\"{}xx\",status_code=\"{}\"",
                l.method,
                escape(&l.route),
                l.status_code / 100,
                l.status_code
            )
        };
        metric_header(
            out,
            "smithers_http_requests",
            "HTTP requests served",
            "counter",
        );
        for (labels, stats) in &http {
            let _ = writeln!(
                out,
                "smithers_http_requests{{{}}} {}",
                label_text(labels),
                stats.requests.load(Ordering::Relaxed)
            );
        }
        metric_header(
            out,
            "smithers_http_request_duration_ms",
            "HTTP request durations",
            "histogram",
        );
        for (labels, stats) in &http {
            stats.duration.render(
                out,
                "smithers_http_request_duration_ms",
                &label_text(labels),
            );
        }
    }
}

/// Decrements the SSE subscriber gauge on drop.
#[derive(Debug)]
pub struct SubscriberGuard(std::sync::Arc<Metrics>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.sse_subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

fn metric_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The payload fields the metrics need.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    node_id: Option<String>,
    iteration: Option<u32>,
    resumed: Option<bool>,
    status: Option<String>,
}

/// Start times of runs and attempts in flight, owned by the metrics task.
#[derive(Default)]
struct Tracker {
    runs: HashMap<String, i64>,
    nodes: HashMap<(String, String, u32), i64>,
}

impl Tracker {
    fn observe(&mut self, metrics: &Metrics, event: &StoredEvent) {
        metrics.inc(Counter::Events);
        let run = event.run_id.as_str();
        let at = event.timestamp_ms;
        let fields = || serde_json::from_str::<Fields>(&event.json).unwrap_or_default();
        let node_key = |f: &Fields| {
            (
                run.to_string(),
                f.node_id.clone().unwrap_or_default(),
                f.iteration.unwrap_or(0),
            )
        };
        match event.event_type.as_str() {
            "RunStarted" => {
                let resumed = fields().resumed.unwrap_or(false);
                metrics.inc(if resumed {
                    Counter::RunsResumed
                } else {
                    Counter::RunsTotal
                });
                self.runs.insert(run.to_string(), at);
            }
            "RunFinished" | "RunFailed" | "RunCancelled" => {
                metrics.inc(match event.event_type.as_str() {
                    "RunFinished" => Counter::RunsFinished,
                    "RunFailed" => Counter::RunsFailed,
                    _ => Counter::RunsCancelled,
                });
                if event.event_type == "RunFailed" {
                    metrics.inc(Counter::Errors);
                }
                if let Some(started) = self.runs.remove(run) {
                    metrics.run_duration.observe((at - started) as f64);
                }
                self.nodes.retain(|(r, _, _), _| r != run);
                self.sync_nodes_active(metrics);
            }
            "NodeStarted" => {
                metrics.inc(Counter::NodesStarted);
                self.nodes.insert(node_key(&fields()), at);
                self.sync_nodes_active(metrics);
            }
            "NodeFinished" | "NodeFailed" | "NodeCancelled" => {
                match event.event_type.as_str() {
                    "NodeFinished" => metrics.inc(Counter::NodesFinished),
                    "NodeFailed" => metrics.inc(Counter::NodesFailed),
                    _ => {}
                }
                if let Some(started) = self.nodes.remove(&node_key(&fields())) {
                    metrics.node_duration.observe((at - started) as f64);
                }
                self.sync_nodes_active(metrics);
            }
            "NodeRetrying" => metrics.inc(Counter::NodeRetries),
            "ApprovalRequested" => {
                metrics.inc(Counter::ApprovalsRequested);
                metrics.approvals_pending.fetch_add(1, Ordering::Relaxed);
            }
            "ApprovalGranted" | "ApprovalDenied" => {
                metrics.inc(if event.event_type == "ApprovalGranted" {
                    Counter::ApprovalsGranted
                } else {
                    Counter::ApprovalsDenied
                });
                metrics.approvals_pending.fetch_sub(1, Ordering::Relaxed);
            }
            "SignalReceived" => metrics.inc(Counter::Signals),
            "ToolCallFinished" => {
                metrics.inc(Counter::ToolCalls);
                if fields().status.as_deref() != Some("success") {
                    metrics.inc(Counter::ToolCallErrors);
                }
            }
            _ => {}
        }
    }

    fn sync_nodes_active(&self, metrics: &Metrics) {
        metrics
            .nodes_active
            .store(self.nodes.len() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunId;

    fn event(seq: u64, kind: &str, at: i64, json: &str) -> StoredEvent {
        StoredEvent {
            run_id: RunId::parse("r").unwrap(),
            seq,
            event_type: kind.into(),
            timestamp_ms: at,
            json: json.into(),
        }
    }

    #[test]
    fn events_drive_the_smithers_counters_and_histograms() {
        let metrics = Metrics::default();
        let mut tracker = Tracker::default();
        for e in [
            event(0, "RunStarted", 100, r#"{"resumed":false}"#),
            event(1, "NodeStarted", 110, r#"{"nodeId":"a","iteration":0}"#),
            event(2, "NodeFinished", 140, r#"{"nodeId":"a","iteration":0}"#),
            event(3, "ApprovalRequested", 150, "{}"),
            event(4, "ApprovalGranted", 160, "{}"),
            event(5, "RunFinished", 200, "{}"),
        ] {
            tracker.observe(&metrics, &e);
        }
        let count = |c: Counter| metrics.counters[c as usize].load(Ordering::Relaxed);
        assert_eq!(count(Counter::Events), 6);
        assert_eq!(count(Counter::RunsTotal), 1);
        assert_eq!(count(Counter::RunsFinished), 1);
        assert_eq!(count(Counter::NodesStarted), 1);
        assert_eq!(count(Counter::NodesFinished), 1);
        assert_eq!(count(Counter::ApprovalsGranted), 1);
        assert_eq!(metrics.approvals_pending.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.run_duration.count.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.run_duration.sum_us.load(Ordering::Relaxed), 100_000);
        assert_eq!(metrics.node_duration.sum_us.load(Ordering::Relaxed), 30_000);
    }

    #[test]
    fn http_labels_name_only_known_methods() {
        let metrics = Metrics::default();
        for raw in ["GET", "PROPFIND", "get", "M0XXXXXXXXXXXXXXXX"] {
            let method = axum::http::Method::from_bytes(raw.as_bytes()).unwrap();
            metrics.record_http(&method, "unmatched", 401, 1.0);
        }
        let mut out = String::new();
        metrics.render_http(&mut out);
        assert!(out.contains("smithers_http_requests{method=\"GET\",route=\"unmatched\""));
        assert!(out.contains("smithers_http_requests{method=\"other\",route=\"unmatched\",status_class=\"4xx\",status_code=\"401\"} 3\n"), "{out}");
        assert!(!out.contains("PROPFIND") && !out.contains("XXXX"), "{out}");
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(3.0);
        h.observe(700.0);
        let mut out = String::new();
        h.render(&mut out, "x", "route=\"/a\"");
        assert!(out.contains("x_bucket{route=\"/a\",le=\"5\"} 1\n"), "{out}");
        assert!(
            out.contains("x_bucket{route=\"/a\",le=\"1000\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"/a\",le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_count{route=\"/a\"} 2\n"), "{out}");
        assert!(out.contains("x_sum{route=\"/a\"} 703\n"), "{out}");
    }
}
