//! Cost of an outbound HTTP call made by a workflow through the host, and of
//! answering calls from the replay journal.
//!
//! A plain HTTP/1.1 server on 127.0.0.1 answers `GET /step?i=N` with a few
//! bytes. Three figures, each a distribution over the calls:
//!
//! - **direct**: this process sends the GET itself (a fresh connection per
//!   call, hyper's HTTP/1.1 client, as the host does);
//! - **through the host**: the `fixture-http` guest sends the same GETs one
//!   after the other through `wasi:http`, so each goes through the policy,
//!   the host's connection, the size cap, secret redaction and the journal
//!   write; the guest times each call itself;
//! - **replay**: a host is stopped while the guest waits on its 11th call,
//!   a new host resumes the run, and its attempt answers the first 10 calls
//!   from the journal (the guest times them the same way).
//!
//! Run: `cargo run --release -p smithers-bench --bin http_call [-- CALLS]`

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde_json::{Value, json};
use smithers_bench::{BenchHost, build_package, machine, ms, summarize};
use smithers_host::app::App;
use smithers_host::engine::StartRequest;
use smithers_host::model::{RunId, RunStatus};
use smithers_host::runtime::http::{HttpPolicy, Pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEFAULT_CALLS: u32 = 300;
const JOURNAL: u32 = 10;

/// A tiny HTTP/1.1 server; the first request for `?i={hold}` never gets an
/// answer.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    async fn start(hold: Option<u32>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            let held: Arc<Mutex<HashSet<u32>>> = Arc::default();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (record, held) = (record.clone(), held.clone());
                tokio::spawn(serve(stream, hold, record, held));
            }
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/step", self.addr)
    }

    fn saw(&self, query: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|q| q == query)
    }
}

async fn serve(
    mut stream: TcpStream,
    hold: Option<u32>,
    seen: Arc<Mutex<Vec<String>>>,
    held: Arc<Mutex<HashSet<u32>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let query = head
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once('?'))
        .map_or(String::new(), |(_, q)| q.to_string());
    let index: Option<u32> = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("i="))
        .and_then(|i| i.parse().ok());
    seen.lock().unwrap().push(query.clone());
    if hold.is_some() && index == hold && held.lock().unwrap().insert(index.unwrap()) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let body = format!("ok {query}");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

/// One GET from this process, the way the host sends one.
async fn direct_get(addr: SocketAddr, i: u32) -> Duration {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(format!("/step?i={i}&tag=d"))
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    let elapsed = started.elapsed();
    driver.abort();
    elapsed
}

fn allow(upstream: &Upstream) -> HttpPolicy {
    HttpPolicy {
        allow: vec![
            format!("http://{}", upstream.addr)
                .parse::<Pattern>()
                .unwrap(),
        ],
        ..HttpPolicy::default()
    }
}

fn open(component: &Path, upstream: &Upstream) -> BenchHost {
    let policy = Arc::new(allow(upstream));
    BenchHost::open(&[("http", component)], |config| config.http = policy)
}

async fn start(app: &App, upstream: &Upstream, count: u32) -> RunId {
    app.engine
        .start(StartRequest {
            workflow_path: "http.wasm".into(),
            input: Some(json!({ "sequence": { "url": upstream.url(), "count": count } })),
            ..Default::default()
        })
        .await
        .expect("start")
}

/// Per-call durations the guest measured, once the run finished.
async fn call_times(app: &App, run: &RunId) -> Vec<Duration> {
    app.engine.wait_idle(run).await;
    let id = run.clone();
    let (row, nodes) = app
        .engine
        .store()
        .read(move |r| Ok((r.run(&id)?, r.nodes(&id)?)))
        .await
        .unwrap();
    assert_eq!(
        row.unwrap().status,
        RunStatus::Finished,
        "the run did not finish"
    );
    let output: Value = serde_json::from_str(nodes[0].output_json.as_deref().unwrap()).unwrap();
    output["micros"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Duration::from_micros(m.as_u64().unwrap()))
        .collect()
}

fn line(what: &str, samples: &mut [Duration]) -> Duration {
    let s = summarize(samples);
    println!(
        "{what:<34} x{:<4} median {} | p95 {} | min {} | max {}",
        samples.len(),
        ms(s.p50),
        ms(s.p95),
        ms(s.min),
        ms(s.max)
    );
    s.p50
}

#[tokio::main]
async fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("CALLS must be a number"))
        .unwrap_or(DEFAULT_CALLS);
    println!("machine: {}", machine());
    let component = build_package("fixture-http", "fixture_http").await;

    let upstream = Upstream::start(None).await;
    for i in 0..20 {
        direct_get(upstream.addr, i).await;
    }
    let mut direct = Vec::new();
    for i in 0..calls {
        direct.push(direct_get(upstream.addr, i).await);
    }

    let host = open(&component, &upstream);
    let warm = start(&host.app, &upstream, 20).await;
    call_times(&host.app, &warm).await;
    let run = start(&host.app, &upstream, calls).await;
    let mut mediated = call_times(&host.app, &run).await;
    host.app.close().await;

    // Replay: the 11th call is held, the host stops (as on SIGTERM: the
    // attempt is left interrupted), a new host resumes the run.
    let held = Upstream::start(Some(JOURNAL)).await;
    let first = open(&component, &held);
    let run = start(&first.app, &held, JOURNAL + 1).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !held.saw(&format!("i={JOURNAL}&tag=a")) {
        assert!(Instant::now() < deadline, "the 11th call never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let BenchHost { app, root, state } = first;
    app.close().await;
    let policy = Arc::new(allow(&held));
    let second = BenchHost::reopen(root, state, |config| config.http = policy);
    let resumed = second.app.engine.recover().await.expect("recover");
    assert_eq!(resumed, vec![run.clone()]);
    let times = call_times(&second.app, &run).await;
    let seen = held.seen.lock().unwrap().len();
    assert_eq!(seen, JOURNAL as usize + 2, "replayed calls went out again");
    let mut replayed = times[..JOURNAL as usize].to_vec();
    let total: Duration = replayed.iter().sum();
    second.app.close().await;

    println!();
    let direct_p50 = line("direct GET (this process)", &mut direct);
    let mediated_p50 = line("through the host (guest's view)", &mut mediated);
    line("answered from the journal", &mut replayed);
    println!(
        "added by the host: {} at the median; replay of a {JOURNAL}-call journal: {} in all",
        ms(mediated_p50.saturating_sub(direct_p50)),
        ms(total)
    );
}
