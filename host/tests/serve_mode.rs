//! Serve mode (`smithers-host up WORKFLOW --serve`) end to end over HTTP:
//! the single-run route table, SSE with ids and resume, approve, deny,
//! cancel, signals, auth and the envelope.

mod common;
mod http_support;

use http_support::{Options, Server};
use serde_json::{Value, json};

fn up(package: &str, input: Value, extra: &[&str]) -> Server {
    let mut args: Vec<String> = vec![
        "up".into(),
        format!("{{root}}/{package}.wasm"),
        "--serve".into(),
        "--run-id".into(),
        "served".into(),
        "--input".into(),
        input.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Server::with(Options {
        install: vec![package.into()],
        extra_args: args,
        ..Options::default()
    })
}

async fn wait_for_status(server: &Server, want: &str) -> Value {
    for _ in 0..500 {
        let (code, body) = server.get("/").await;
        assert_eq!(code, 200, "{body}");
        if body["status"] == want {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("run never reached {want}: {}", server.get("/").await.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_mode_runs_one_workflow_and_approve_finishes_it() {
    let server = up("example-approval", json!({ "target": "prod" }), &[]);
    let (code, health) = server.get("/health").await;
    assert_eq!((code, &health["ok"]), (200, &json!(true)));
    let status = wait_for_status(&server, "waiting-approval").await;
    assert_eq!(status["runId"], "served");
    assert_eq!(status["workflowName"], "approval");
    assert_eq!(status["summary"]["waiting-approval"], 1);

    // Approve over HTTP: the run finishes by itself.
    let (code, body) = server
        .post(
            "/approve/gate",
            json!({ "note": "ship it", "decidedBy": "alice" }),
        )
        .await;
    assert_eq!((code, body), (200, json!({ "runId": "served" })));
    wait_for_status(&server, "finished").await;

    // The full stream, with ids from 0, ends after RunFinished.
    let mut sse = server.sse("/events", &[]).await;
    let events = sse
        .events_until_end(std::time::Duration::from_secs(10))
        .await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().kind(), "RunFinished");
    assert!(events.iter().any(|e| e.kind() == "ApprovalGranted"));
    // Resuming after a seq (query or Last-Event-ID) sends exactly the rest.
    let mut tail = server.sse("/events?afterSeq=3", &[]).await;
    let rest = tail
        .events_until_end(std::time::Duration::from_secs(10))
        .await;
    assert_eq!(rest.first().unwrap().seq(), 4);
    assert_eq!(rest.len(), events.len() - 4);
    let mut tail = server.sse("/events", &[("last-event-id", "5")]).await;
    assert_eq!(
        tail.events_until_end(std::time::Duration::from_secs(10))
            .await
            .first()
            .unwrap()
            .seq(),
        6
    );

    let (code, frames) = server.get("/frames?limit=2").await;
    assert_eq!(code, 200);
    assert_eq!(frames.as_array().unwrap().len(), 2);
    let (code, frames) = server.get("/frames?limit=0").await;
    assert_eq!(code, 200, "serve mode treats a bad limit as the default");
    assert!(frames.as_array().unwrap().len() > 2);

    // Deciding again, or cancelling a finished run, is a conflict.
    let (code, body) = server.post("/approve/gate", json!({})).await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (409, Some("NODE_NOT_WAITING"))
    );
    let (code, body) = server.post("/cancel", json!({})).await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (409, Some("RUN_NOT_ACTIVE"))
    );

    let (code, body) = server.get("/nope").await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("smithers_runs_finished_total")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_mode_deny_fails_the_run_and_cancel_stops_a_parked_one() {
    let server = up("example-approval", json!({}), &[]);
    wait_for_status(&server, "waiting-approval").await;
    let (code, _) = server.post("/deny/gate", json!({ "note": "no" })).await;
    assert_eq!(code, 200);
    wait_for_status(&server, "failed").await;

    let server = up("example-approval", json!({}), &[]);
    wait_for_status(&server, "waiting-approval").await;
    let (code, body) = server.post("/cancel", json!({})).await;
    assert_eq!(
        (code, &body["status"]),
        (200, &json!("cancelled")),
        "{body}"
    );
    wait_for_status(&server, "cancelled").await;
    let (code, _) = server.post("/cancel", json!({})).await;
    assert_eq!(code, 409, "a second cancel is not active any more");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_mode_cancels_a_running_task_and_delivers_signals() {
    let server = up(
        "fixture-scripted",
        json!({ "root": { "sequence": [ { "task": { "id": "spin", "spin": true } } ] } }),
        &[],
    );
    wait_for_status(&server, "running").await;
    let (code, body) = server.post("/cancel", json!({})).await;
    assert_eq!((code, body["won"].as_bool()), (200, Some(true)), "{body}");
    wait_for_status(&server, "cancelled").await;

    let server = up("example-signal", json!({}), &[]);
    wait_for_status(&server, "waiting-event").await;
    let (code, receipt) = server
        .post("/signal/go", json!({ "data": { "x": 1 } }))
        .await;
    assert_eq!(
        (code, &receipt["signalName"]),
        (200, &json!("go")),
        "{receipt}"
    );
    wait_for_status(&server, "finished").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_mode_honours_the_auth_token_but_not_for_health() {
    let server = up("example-hello", json!({}), &["--auth-token", "s3cret"]);
    let (code, body) = server.get("/").await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    assert_eq!(server.get("/health").await.0, 200);
    let ok = server
        .client
        .get(server.url("/"))
        .header("x-smithers-key", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok = server
        .client
        .get(server.url("/"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}
