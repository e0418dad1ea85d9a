//! Durable replay of outbound HTTP calls, against the real binary: the
//! `tests/guests/http` fixture makes a sequence of GETs to a counting server
//! this test starts on 127.0.0.1, the host is SIGKILLed in the middle, and
//! the restarted host answers the calls it had journaled without calling out
//! again. Also: a guest that asks for something else after the restart
//! stops replay there (with an event), and a retry after a failure calls out
//! afresh.

mod common;
mod http_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use http_support::{Options, Server};
use serde_json::{Value, json};

const FIXTURE: &str = "fixture-http";

/// A server whose `/step?i=&tag=` answers `{tag}{i}-hit{n}` (n: how many
/// times it saw that call) and, when `hold` names a call, keeps the first
/// request for it waiting (until the host that sent it is killed).
#[derive(Clone)]
struct Counter {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, u32>>>,
}

impl Counter {
    async fn start(hold: Option<&str>) -> Self {
        let hits: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let seen = hits.clone();
        let hold = hold.map(str::to_string);
        let app = Router::new().route(
            "/step",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let seen = seen.clone();
                let hold = hold.clone();
                async move {
                    let call = format!("{}{}", q["tag"], q["i"]);
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        let n = seen.entry(call.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    if hold.as_deref() == Some(call.as_str()) && n == 1 {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                    format!("{call}-hit{n}")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, hits }
    }

    fn hits(&self, call: &str) -> u32 {
        self.hits.lock().unwrap().get(call).copied().unwrap_or(0)
    }

    async fn wait_for(&self, call: &str, server: &Server) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.hits(call) == 0 {
            assert!(
                Instant::now() < deadline,
                "the host never called {call}; log:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn host(&self) -> Server {
        Server::with(Options {
            install: vec![FIXTURE.into()],
            extra_args: vec!["--http-allow".into(), format!("http://{}", self.addr)],
            ..Options::default()
        })
    }

    fn sequence(&self, count: u32, extra: Value) -> Value {
        let mut spec = json!({ "url": format!("http://{}/step", self.addr), "count": count });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "sequence": spec })
    }
}

/// The `fetch` node as `GET /v1/runs/:id/nodes/fetch` shows it.
async fn node(server: &Server, run: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/runs/{run}/nodes/fetch")).await;
    assert_eq!(status, 200, "{body}");
    body["iterations"][0].clone()
}

/// The bodies the task got.
async fn output(server: &Server, run: &str) -> Value {
    node(server, run).await["output"]["bodies"].clone()
}

fn bodies(calls: &[&str]) -> Value {
    json!(calls)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_between_calls_does_not_repeat_the_calls_it_journaled() {
    let counter = Counter::start(Some("a3")).await;
    let mut server = counter.host();
    let run = server
        .start_run(&format!("{FIXTURE}.wasm"), counter.sequence(10, json!({})))
        .await;
    // The first three calls were answered (and journaled); the fourth is
    // on its way when the host dies.
    counter.wait_for("a3", &server).await;
    server.kill9();
    server.spawn();
    server.wait_status(&run, "finished").await;

    for call in ["a0", "a1", "a2"] {
        assert_eq!(counter.hits(call), 1, "{call} was sent again");
    }
    // The call the kill interrupted had no response to journal: it is sent
    // again, and so is everything after it, once.
    assert_eq!(counter.hits("a3"), 2);
    for i in 4..10 {
        assert_eq!(counter.hits(&format!("a{i}")), 1);
    }
    // The guest got the first three answers as they were the first time.
    let expected = [
        "a0-hit1", "a1-hit1", "a2-hit1", "a3-hit2", "a4-hit1", "a5-hit1", "a6-hit1", "a7-hit1",
        "a8-hit1", "a9-hit1",
    ];
    assert_eq!(output(&server, &run).await, bodies(&expected));
    let events = server.all_events(&run).await;
    assert!(
        !events.iter().any(|e| e.kind() == "HttpReplayDiverged"),
        "nothing diverged"
    );
    // The interrupted attempt, then the one that replayed.
    let fetch = node(&server, &run).await;
    let states: Vec<&str> = fetch["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["cancelled", "finished"], "{fetch}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_asks_something_else_stops_replay_there() {
    let counter = Counter::start(Some("a3")).await;
    let mut server = counter.host();
    std::fs::write(server.root.path().join("tags.txt"), "a").unwrap();
    let input = counter.sequence(5, json!({ "tagFile": "tags.txt" }));
    let run = server.start_run(&format!("{FIXTURE}.wasm"), input).await;
    counter.wait_for("a3", &server).await;
    server.kill9();
    // After the restart the workflow asks the same first call, then others.
    std::fs::write(server.root.path().join("tags.txt"), "a,b").unwrap();
    server.spawn();
    server.wait_status(&run, "finished").await;

    assert_eq!(counter.hits("a0"), 1, "replayed");
    for call in ["a1", "a2", "a3", "b1", "b2", "b3", "b4"] {
        assert_eq!(counter.hits(call), 1, "{call}");
    }
    assert_eq!(
        output(&server, &run).await,
        bodies(&["a0-hit1", "b1-hit1", "b2-hit1", "b3-hit1", "b4-hit1"])
    );
    let events = server.all_events(&run).await;
    let diverged: Vec<&Value> = events
        .iter()
        .filter(|e| e.kind() == "HttpReplayDiverged")
        .map(|e| &e.data)
        .collect();
    assert_eq!(diverged.len(), 1, "{diverged:?}");
    assert_eq!(diverged[0]["nodeId"], "fetch");
    assert_eq!(diverged[0]["callSeq"], 1);
    assert_eq!(diverged[0]["replayed"], 1);
    assert_eq!(diverged[0]["attempt"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_a_failure_calls_out_afresh() {
    let counter = Counter::start(None).await;
    let server = counter.host();
    let input = counter.sequence(3, json!({ "failOn": "a2-hit1" }));
    let mut input = input;
    input["retries"] = json!(1);
    let run = server.start_run(&format!("{FIXTURE}.wasm"), input).await;
    server.wait_status(&run, "finished").await;
    for call in ["a0", "a1", "a2"] {
        assert_eq!(counter.hits(call), 2, "{call}");
    }
    assert_eq!(
        output(&server, &run).await,
        bodies(&["a0-hit2", "a1-hit2", "a2-hit2"])
    );
}
