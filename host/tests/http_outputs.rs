//! What a run produced, over HTTP against the real binary:
//! `GET /v1/runs/:id/nodes/:node` (a node at each iteration: state,
//! attempts, output, error) and `GET /v1/runs/:id/outputs` (every output),
//! paged within `--max-output-page-bytes`, refused in the error envelope,
//! behind the token like every route.

mod common;
mod http_support;

use serde_json::{Value, json};

use http_support::{Options, Server, script, task};

const SCRIPTED: &str = "fixture-scripted.wasm";

fn scripted_server(extra_args: &[&str]) -> Server {
    Server::with(Options {
        install: vec!["fixture-scripted".into()],
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    })
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// A retried task, a three-pass loop and a task that fails for good.
fn retries_loop_and_failure() -> Value {
    script(json!({ "sequence": [
        task("flaky", json!({
            "failAttempts": 2, "retries": 3, "backoff": "fixed", "initialDelayMs": 10,
            "output": { "ok": true },
        })),
        { "loop": { "id": "refine", "max": 5, "untilNode": "draft", "untilPath": "/done",
                    "children": [task("draft", json!({ "doneAtIteration": 2 }))] } },
        task("broken", json!({ "fail": "boom", "continueOnFail": true })),
    ] }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_its_state_attempts_output_and_error_at_each_iteration() {
    let server = scripted_server(&[]);
    let run = server.start_run(SCRIPTED, retries_loop_and_failure()).await;
    let status = server.wait_status(&run, "finished").await;

    let (code_, flaky) = server.get(&format!("/v1/runs/{run}/nodes/flaky")).await;
    assert_eq!(code_, 200, "{flaky}");
    assert_eq!(
        (flaky["runId"].as_str(), flaky["nodeId"].as_str()),
        (Some(run.as_str()), Some("flaky"))
    );
    assert_eq!(flaky["nextCursor"], Value::Null);
    let only = &flaky["iterations"][0];
    assert_eq!(flaky["iterations"].as_array().unwrap().len(), 1);
    assert_eq!(only["state"], "finished");
    assert_eq!(only["output"], json!({ "ok": true }));
    assert_eq!(
        only["error"],
        Value::Null,
        "a retried failure is not the node's error"
    );
    assert_eq!(only["attemptCount"], 3);
    let attempts = only["attempts"].as_array().unwrap();
    let states: Vec<&str> = attempts
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "failed", "finished"]);
    assert_eq!(
        attempts[0]["error"]["message"],
        "planned failure on attempt 1"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a["finishedAtMs"].as_i64() >= a["startedAtMs"].as_i64())
    );

    // Every iteration of a loop's task, in order, each with its own output.
    let (_, draft) = server.get(&format!("/v1/runs/{run}/nodes/draft")).await;
    let iterations = draft["iterations"].as_array().unwrap();
    let numbers: Vec<u64> = iterations
        .iter()
        .map(|i| i["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [0, 1, 2]);
    for it in iterations {
        assert_eq!(it["output"]["iteration"], it["iteration"], "{it}");
    }
    let (_, second) = server
        .get(&format!("/v1/runs/{run}/nodes/draft?iteration=1"))
        .await;
    assert_eq!(second["iterations"].as_array().unwrap().len(), 1);
    assert_eq!(second["iterations"][0]["output"]["iteration"], 1);

    // Paged by `limit`, continued by `cursor`.
    let (_, first) = server
        .get(&format!("/v1/runs/{run}/nodes/draft?limit=2"))
        .await;
    assert_eq!(first["iterations"].as_array().unwrap().len(), 2);
    let cursor = first["nextCursor"]
        .as_str()
        .expect("more iterations")
        .to_string();
    let (_, rest) = server
        .get(&format!(
            "/v1/runs/{run}/nodes/draft?limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["iterations"][0]["iteration"], 2);
    assert_eq!(rest["nextCursor"], Value::Null);

    // A node that failed for good says why, and has no output.
    let (_, broken) = server.get(&format!("/v1/runs/{run}/nodes/broken")).await;
    assert_eq!(broken["iterations"][0]["state"], "failed");
    assert_eq!(broken["iterations"][0]["error"]["message"], "boom");
    assert_eq!(broken["iterations"][0]["output"], Value::Null);

    // Refusals, in the envelope.
    for (path, status_, expected) in [
        (format!("/v1/runs/{run}/nodes/nope"), 404, "NODE_NOT_FOUND"),
        (
            format!("/v1/runs/{run}/nodes/draft?iteration=7"),
            404,
            "NODE_NOT_FOUND",
        ),
        (
            "/v1/runs/ghost/nodes/draft".to_string(),
            404,
            "RUN_NOT_FOUND",
        ),
        (
            format!("/v1/runs/{run}/nodes/draft?iteration=-1"),
            400,
            "INVALID_REQUEST",
        ),
        (
            format!("/v1/runs/{run}/nodes/draft?cursor=abc"),
            400,
            "INVALID_REQUEST",
        ),
        (
            format!("/v1/runs/{run}/nodes/draft?limit=0"),
            400,
            "INVALID_REQUEST",
        ),
    ] {
        let (got, body) = server.get(&path).await;
        assert_eq!((got, code(&body)), (status_, expected), "{path}: {body}");
    }
    // An unknown node id is quoted bounded, not echoed whole.
    let long = "n".repeat(4000);
    let (got, body) = server.get(&format!("/v1/runs/{run}/nodes/{long}")).await;
    assert_eq!((got, code(&body)), (404, "NODE_NOT_FOUND"));
    assert!(body.to_string().len() < 600, "{body}");

    // The Smithers-compatible status answer is unchanged: no outputs in it.
    let keys: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "finishedAtMs",
            "runId",
            "runState",
            "startedAtMs",
            "status",
            "summary",
            "workflowHash",
            "workflowHashes",
            "workflowName",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_come_in_pages_bounded_by_items_and_by_bytes() {
    let server = scripted_server(&["--max-output-page-bytes", "4096"]);
    let pad = |id: &str, bytes: usize| task(id, json!({ "output": { "pad": "x".repeat(bytes) } }));
    let run = server
        .start_run(
            SCRIPTED,
            script(json!({ "sequence": [
                pad("o0", 1500), pad("o1", 1500), pad("o2", 1500),
                pad("big", 10_000),
                pad("o3", 1500), pad("o4", 1500), pad("o5", 1500),
                { "approval": { "id": "gate" } },
            ] })),
        )
        .await;
    // Parked at the approval: the outputs so far are readable mid-run.
    server.wait_status(&run, "waiting-approval").await;

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/runs/{run}/outputs?cursor={c}"),
            None => format!("/v1/runs/{run}/outputs"),
        };
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let outputs = page["outputs"].as_array().unwrap();
        assert!(
            !outputs.is_empty(),
            "a page with a cursor before it is never empty"
        );
        let bytes: usize = outputs.iter().map(|o| o["output"].to_string().len()).sum();
        assert!(
            outputs.len() == 1 || bytes <= 4096,
            "page {pages} holds {bytes} bytes in {} outputs",
            outputs.len()
        );
        for output in outputs {
            assert_eq!(output["state"], "finished");
            seen.push(output["nodeId"].as_str().unwrap().to_string());
            if output["nodeId"] == "big" {
                assert_eq!(outputs.len(), 1, "an output over the budget comes alone");
                assert_eq!(output["output"]["pad"].as_str().unwrap().len(), 10_000);
            }
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(
        seen,
        ["o0", "o1", "o2", "big", "o3", "o4", "o5"],
        "each once, in mount order"
    );
    assert!(
        pages >= 4,
        "{pages} pages for 7 outputs over a 4096-byte budget"
    );

    let (_, one) = server.get(&format!("/v1/runs/{run}/outputs?limit=1")).await;
    assert_eq!(one["outputs"].as_array().unwrap().len(), 1);
    assert!(one["nextCursor"].is_string());

    // The approval's decision becomes an output too, once decided.
    let (status, _) = server
        .post(&format!("/v1/runs/{run}/nodes/gate/approve"), json!({}))
        .await;
    assert_eq!(status, 200);
    server.wait_status(&run, "finished").await;
    let (_, gate) = server.get(&format!("/v1/runs/{run}/nodes/gate")).await;
    assert_eq!(gate["iterations"][0]["state"], "finished");
    assert!(gate["iterations"][0]["output"].is_object(), "{gate}");

    for (path, status_, expected) in [
        ("/v1/runs/ghost/outputs".to_string(), 404, "RUN_NOT_FOUND"),
        (
            format!("/v1/runs/{run}/outputs?cursor=-3"),
            400,
            "INVALID_REQUEST",
        ),
        (
            format!("/v1/runs/{run}/outputs?limit=abc"),
            400,
            "INVALID_REQUEST",
        ),
    ] {
        let (got, body) = server.get(&path).await;
        assert_eq!((got, code(&body)), (status_, expected), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_routes_need_the_token_like_every_other_route() {
    let server = Server::with(Options {
        token: Some("sekret".into()),
        install: vec!["example-hello".into()],
        ..Options::default()
    });
    let run = server
        .start_run("example-hello.wasm", json!({ "name": "Ada" }))
        .await;
    server.wait_status(&run, "finished").await;
    for path in [
        format!("/v1/runs/{run}/outputs"),
        format!("/v1/runs/{run}/nodes/greet"),
    ] {
        let anonymous = reqwest::get(server.url(&path)).await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "{path}");
        let (status, body) = server.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, outputs) = server.get(&format!("/v1/runs/{run}/outputs")).await;
    assert_eq!(
        outputs["outputs"][0]["output"],
        json!({ "greeting": "Hello, Ada!" })
    );
}
