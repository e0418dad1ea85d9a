//! Server mode over real HTTP: every route, every error code, auth, the
//! Host/Origin gate, body limits and path confinement, against the real
//! binary on an ephemeral port.

mod common;
mod http_support;

use std::time::Duration;

use serde_json::{Value, json};

use http_support::{Options, Server, output_after_stop, script, task};

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an envelope: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_without_auth_and_reports_the_sandbox() {
    let server = Server::with(Options {
        token: Some("sekret".into()),
        ..Options::default()
    });
    let response = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ok"], true);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["activeRuns"], 0);
    assert!(body.get("sandbox").is_some(), "{body}");
    // Once the start-up probe has run, the walls it measured are shown,
    // the seccomp filter and the fresh keyring among them.
    let mut walls = Value::Null;
    for _ in 0..100 {
        let body: Value = reqwest::get(server.url("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        walls = body["sandbox"]["walls"].clone();
        if !walls.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        walls["seccomp"]["deniedSyscalls"].as_u64().unwrap_or(0) > 50,
        "{walls}"
    );
    assert_eq!(walls["sessionKeyringIsolated"], true, "{walls}");
    // Not Host-gated either.
    let raw = server
        .raw("GET /health HTTP/1.1\r\nHost: evil.example", b"")
        .await;
    assert_eq!(raw.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_accepted_in_either_header_and_wrong_ones_refused() {
    let server = Server::with(Options {
        token: Some("sekret".into()),
        ..Options::default()
    });
    let client = reqwest::Client::new();
    let get = |headers: &'static [(&'static str, &'static str)], path: &'static str| {
        let mut request = client.get(server.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        async move { http_support::decode(request.send().await.unwrap()).await }
    };
    for headers in [
        &[("authorization", "Bearer sekret")][..],
        &[("authorization", "bearer sekret")][..],
        &[("authorization", "sekret")][..],
        &[("x-smithers-key", "sekret")][..],
    ] {
        let (status, body) = get(headers, "/v1/runs").await;
        assert_eq!(status, 200, "{headers:?}: {body}");
    }
    for headers in [
        &[][..],
        &[("authorization", "Bearer wrong")][..],
        &[("x-smithers-key", "wrong")][..],
        // Authorization wins when present.
        &[
            ("authorization", "Bearer wrong"),
            ("x-smithers-key", "sekret"),
        ][..],
    ] {
        let (status, body) = get(headers, "/v1/runs").await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(
            body,
            json!({"error": {"code": "UNAUTHORIZED", "message": "Missing or invalid authorization token"}})
        );
    }
    // Unknown routes and /metrics need the token too; Host is not gated with a token.
    assert_eq!(get(&[], "/nope").await.0, 401);
    assert_eq!(get(&[], "/metrics").await.0, 401);
    let raw = server
        .raw(
            "GET /v1/runs HTTP/1.1\r\nHost: evil.example\r\nx-smithers-key: sekret",
            b"",
        )
        .await;
    assert_eq!(raw.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_foreign_hosts_and_origins_are_forbidden() {
    let server = Server::start();
    let forbidden = server
        .raw("GET /v1/runs HTTP/1.1\r\nHost: evil.example", b"")
        .await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(
        forbidden.json(),
        json!({"error": {"code": "FORBIDDEN", "message": "Host is not allowed"}})
    );
    for origin in [
        "null",
        "http://evil.example",
        "http://127.0.0.1.evil.example",
    ] {
        let head = format!("GET /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}");
        let response = server.raw(&head, b"").await;
        assert_eq!(response.status, 403, "{origin}");
        assert_eq!(response.json()["error"]["message"], "Origin is not allowed");
    }
    for host in [
        "127.5.5.5:99",
        "foo.localhost",
        "localhost:7331",
        "[::1]:7331",
    ] {
        let head =
            format!("GET /v1/runs HTTP/1.1\r\nHost: {host}\r\nOrigin: http://localhost:3000");
        assert_eq!(server.raw(&head, b"").await.status, 200, "{host}");
    }
    drop(server);
    let trusting = Server::with(Options {
        env: vec![("SMITHERS_SERVER_TRUST_ANY_HOST".into(), "1".into())],
        ..Options::default()
    });
    let response = trusting
        .raw("GET /v1/runs HTTP/1.1\r\nHost: evil.example", b"")
        .await;
    assert_eq!(response.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_bind_without_a_token_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(common::host_binary())
        .args(["--host", "0.0.0.0", "--port", "0", "--root-dir"])
        .arg(root.path())
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("SMITHERS_API_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let server = Server::start();
    for (head, status) in [
        ("GET /v1/runs HTTP/1.1\r\nHost: 127.0.0.1", 200),
        ("GET /v1/runs/nope HTTP/1.1\r\nHost: 127.0.0.1", 404),
        ("GET /health HTTP/1.1\r\nHost: 127.0.0.1", 200),
        (
            "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1",
            400,
        ),
    ] {
        let body: &[u8] = if status == 400 { b"{" } else { b"" };
        let response = server.raw(head, body).await;
        assert_eq!(response.status, status, "{head}: {}", response.body);
        assert_eq!(
            response.header("content-type").as_deref(),
            Some("application/json"),
            "{head}"
        );
        assert_eq!(
            response.header("cache-control").as_deref(),
            Some("no-store"),
            "{head}"
        );
        assert_eq!(
            response.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{head}"
        );
    }
    let metrics = server
        .raw("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1", b"")
        .await;
    assert_eq!(
        metrics.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(metrics.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        metrics.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_with_413() {
    let server = Server::with(Options {
        max_body_bytes: Some(2000),
        ..Options::default()
    });
    let big = format!(
        r#"{{"workflowPath":"x.wasm","input":{{"pad":"{}"}}}}"#,
        "x".repeat(3000)
    );
    let (status, body) = server.post_raw("/v1/runs", big.clone()).await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"error": {"code": "PAYLOAD_TOO_LARGE", "message": "Request body exceeds 2000 bytes", "details": {"maxBytes": 2000}}})
    );
    // Streamed without a Content-Length: refused while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(500)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let (status, body) = server
        .post_raw(
            "/v1/runs",
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "PAYLOAD_TOO_LARGE");
    // A declared length over the limit is refused before the body is sent.
    let response = server
        .raw(
            "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000000",
            b"",
        )
        .await;
    assert_eq!(response.status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_deep_json_are_refused() {
    let server = Server::start();
    for broken in [&b"{"[..], b"{\"workflowPath\": }", b"\"\xff\xfe\""] {
        let (status, body) = server.post_raw("/v1/runs", broken.to_vec()).await;
        assert_eq!((status, error_code(&body)), (400, "INVALID_JSON"), "{body}");
    }
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let (status, body) = server.post_raw("/v1/runs", deep).await;
    assert_eq!((status, error_code(&body)), (400, "INVALID_REQUEST"));
    assert_eq!(body["error"]["details"], json!({"maxDepth": 32}));
    let (status, body) = server.post_raw("/v1/runs", "[".repeat(100_000)).await;
    assert_eq!((status, error_code(&body)), (400, "INVALID_REQUEST"));
    // An empty body is `{}`.
    let (status, body) = server.post_raw("/v1/runs", Vec::new()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "workflowPath must be a string");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_validates_its_body_and_the_workflow_before_answering() {
    let server = Server::start();
    let hello = server.install("example-hello");
    let cases = [
        (
            json!({}),
            400,
            "INVALID_REQUEST",
            "workflowPath must be a string",
        ),
        (
            json!([]),
            400,
            "INVALID_REQUEST",
            "workflowPath must be a string",
        ),
        (
            json!(null),
            400,
            "INVALID_REQUEST",
            "workflowPath must be a string",
        ),
        (
            json!({"workflowPath": 3}),
            400,
            "INVALID_REQUEST",
            "workflowPath must be a string",
        ),
        (
            json!({"workflowPath": hello, "input": [1]}),
            400,
            "INVALID_REQUEST",
            "input must be a JSON object",
        ),
        (
            json!({"workflowPath": hello, "input": null}),
            400,
            "INVALID_REQUEST",
            "input must be a JSON object",
        ),
        (
            json!({"workflowPath": hello, "config": {"maxConcurrency": 0}}),
            400,
            "INVALID_REQUEST",
            "config.maxConcurrency must be a positive number",
        ),
        (
            json!({"workflowPath": hello, "resume": true}),
            400,
            "RUN_ID_REQUIRED",
            "runId is required when resume is true",
        ),
        (
            json!({"workflowPath": hello, "resume": true, "runId": "ghost"}),
            404,
            "RUN_NOT_FOUND",
            "Run id does not exist",
        ),
    ];
    for (body, status, code, message) in cases {
        let (got, answer) = server.post("/v1/runs", body.clone()).await;
        assert_eq!(
            (got, error_code(&answer)),
            (status, code),
            "{body}: {answer}"
        );
        assert_eq!(answer["error"]["message"], message, "{body}");
    }
    let (status, body) = server
        .post("/v1/runs", json!({"workflowPath": "missing.wasm"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "WORKFLOW_NOT_FOUND"),
        "{body}"
    );

    std::fs::write(
        server.root.path().join("garbage.wasm"),
        b"\0asm not a component",
    )
    .unwrap();
    let (status, body) = server
        .post("/v1/runs", json!({"workflowPath": "garbage.wasm"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "WORKFLOW_INVALID_COMPONENT"),
        "{body}"
    );
    let no_exports = server.install("fixture-no-exports");
    let (status, body) = server
        .post("/v1/runs", json!({"workflowPath": no_exports}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "WORKFLOW_MISSING_EXPORTS"),
        "{body}"
    );

    let (status, body) = server
        .post("/v1/runs", json!({"workflowPath": hello, "runId": "custom-run-id-123", "config": {"maxConcurrency": 2}}))
        .await;
    assert_eq!((status, body), (200, json!({"runId": "custom-run-id-123"})));
    let (status, body) = server
        .post(
            "/v1/runs",
            json!({"workflowPath": hello, "runId": "custom-run-id-123"}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (409, "RUN_ALREADY_EXISTS"));
    assert_eq!(body["error"]["message"], "Run id already exists");
    let (status, body) = server
        .post("/v1/runs", json!({"workflowPath": hello, "runId": "a/b"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "INVALID_REQUEST"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_paths_outside_the_root_are_refused_including_symlinks() {
    let server = Server::start();
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::guest("example-hello"),
        outside.path().join("hello.wasm"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("hello.wasm"),
        server.root.path().join("link.wasm"),
    )
    .unwrap();
    let absolute = outside.path().join("hello.wasm").display().to_string();
    for path in [
        "../x.wasm",
        "/etc/passwd",
        "a/../../b.wasm",
        absolute.as_str(),
        "link.wasm",
    ] {
        let (status, body) = server.post("/v1/runs", json!({"workflowPath": path})).await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "WORKFLOW_PATH_OUTSIDE_ROOT"),
            "{path}: {body}"
        );
        assert_eq!(
            body["error"]["message"],
            "Workflow path must be within server root directory"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_are_404_route_not_found() {
    let server = Server::start();
    let client = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/v1/unknown-route"),
        ("GET", "/"),
        ("DELETE", "/v1/runs"),
        ("GET", "/v1/runs/x/cancel"),
        ("GET", "/v1/runs/"),
        ("PUT", "/health"),
    ] {
        let request = client.request(method.parse().unwrap(), server.url(path));
        let (status, body) = http_support::decode(request.send().await.unwrap()).await;
        assert_eq!(status, 404, "{method} {path}");
        assert_eq!(
            body,
            json!({"error": {"code": "NOT_FOUND", "message": "Route not found"}}),
            "{method} {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_scoped_routes_answer_404_for_unknown_runs() {
    let server = Server::start();
    let not_found = json!({"error": {"code": "NOT_FOUND", "message": "Run not found"}});
    for path in [
        "/v1/runs/ghost",
        "/v1/runs/ghost/frames",
        "/v1/runs/ghost/events",
    ] {
        assert_eq!(server.get(path).await, (404, not_found.clone()), "{path}");
    }
    for path in [
        "/v1/runs/ghost/cancel",
        "/v1/runs/ghost/nodes/gate/approve",
        "/v1/runs/ghost/nodes/gate/deny",
        "/v1/runs/ghost/signals/go",
        "/signal/ghost/go",
    ] {
        assert_eq!(
            server.post(path, json!({})).await,
            (404, not_found.clone()),
            "{path}"
        );
    }
    let (status, body) = server.post("/v1/runs/ghost/resume", json!({})).await;
    assert_eq!((status, error_code(&body)), (404, "RUN_NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_frames_describe_a_finished_run() {
    let server = Server::start();
    let hello = server.install("example-hello");
    let run = server.start_run(&hello, json!({"name": "Ada"})).await;
    let status = server.wait_status(&run, "finished").await;
    assert_eq!(status["runId"], run);
    assert_eq!(status["workflowName"], "hello");
    assert_eq!(status["runState"]["state"], "succeeded");
    assert_eq!(status["runState"]["runId"], run);
    assert!(
        status["runState"]["computedAt"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(status["summary"], json!({"finished": 1}));
    assert!(status["startedAtMs"].is_i64() && status["finishedAtMs"].is_i64());
    let hash = status["workflowHash"].as_str().unwrap();
    assert_eq!(hash.len(), 40);
    assert_eq!(status["workflowHashes"], json!([hash]));

    let (code, frames) = server.get(&format!("/v1/runs/{run}/frames")).await;
    assert_eq!(code, 200);
    let numbers: Vec<u64> = frames
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["frameNo"].as_u64().unwrap())
        .collect();
    assert!(
        numbers.len() >= 2 && numbers.windows(2).all(|w| w[0] > w[1]),
        "newest first: {numbers:?}"
    );
    assert!(frames[0]["xmlJson"].is_string() && frames[0]["xmlHash"].is_string());
    let (_, one) = server.get(&format!("/v1/runs/{run}/frames?limit=1")).await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (_, after) = server
        .get(&format!("/v1/runs/{run}/frames?limit=10&afterFrameNo=1"))
        .await;
    assert!(
        after
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["frameNo"].as_u64().unwrap() > 1)
    );
    for (query, message) in [
        ("limit=0", "Expected a positive integer, got \"0\""),
        ("limit=abc", "Expected a positive integer, got \"abc\""),
        ("afterFrameNo=abc", "Expected a number, got \"abc\""),
    ] {
        let (code, body) = server.get(&format!("/v1/runs/{run}/frames?{query}")).await;
        assert_eq!(
            (code, error_code(&body)),
            (400, "INVALID_REQUEST"),
            "{query}"
        );
        assert_eq!(body["error"]["message"], message);
    }
    let (code, body) = server
        .get(&format!("/v1/runs/{run}/events?afterSeq=abc"))
        .await;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["message"], "Expected a number, got \"abc\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_runs_filters_by_status_and_workflow_with_run_state() {
    let server = Server::start();
    let hello = server.install("example-hello");
    let approval = server.install("example-approval");
    let a = server.start_run(&hello, json!({})).await;
    let b = server.start_run(&hello, json!({})).await;
    let gated = server.start_run(&approval, json!({})).await;
    server.wait_status(&a, "finished").await;
    server.wait_status(&b, "finished").await;
    server.wait_status(&gated, "waiting-approval").await;

    let (code, all) = server.get("/v1/runs").await;
    assert_eq!(code, 200);
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["runId"], gated, "newest first");
    assert_eq!(all[0]["runState"]["state"], "waiting-approval");
    assert_eq!(all[0]["runState"]["blocked"]["kind"], "approval");
    assert_eq!(all[0]["runState"]["blocked"]["nodeId"], "gate");
    assert!(all[0]["workflowPath"].is_string() && all[0]["configJson"].is_string());
    let (_, limited) = server.get("/v1/runs?limit=2").await;
    assert_eq!(limited.as_array().unwrap().len(), 2);
    let (_, finished) = server.get("/v1/runs?limit=10&status=finished").await;
    let finished = finished.as_array().unwrap();
    assert_eq!(finished.len(), 2);
    assert!(
        finished
            .iter()
            .all(|r| r["status"] == "finished" && r["runState"]["state"] == "succeeded")
    );
    let (_, by_workflow) = server.get("/v1/runs?workflow=approval").await;
    assert_eq!(by_workflow.as_array().unwrap().len(), 1);
    let (code, body) = server.get("/v1/runs?limit=0").await;
    assert_eq!((code, error_code(&body)), (400, "INVALID_REQUEST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_resumes_the_run_without_an_explicit_resume() {
    let mut server = Server::start();
    let approval = server.install("example-approval");
    let run = server.start_run(&approval, json!({"target": "prod"})).await;
    let parked = server.wait_status(&run, "waiting-approval").await;
    assert_eq!(parked["runState"]["blocked"]["nodeId"], "gate");
    for alias in [
        "/v1/approvals",
        "/v1/approval/list",
        "/approval/list",
        "/approvals",
    ] {
        let (code, body) = server.get(alias).await;
        assert_eq!(code, 200, "{alias}");
        let approvals = body["approvals"].as_array().unwrap();
        assert_eq!(approvals.len(), 1, "{alias}: {body}");
        assert_eq!(approvals[0]["runId"], run);
        assert_eq!(approvals[0]["nodeId"], "gate");
        assert_eq!(approvals[0]["workflowName"], "approval");
        assert!(approvals[0]["waitingMs"].is_i64());
    }
    let (code, body) = server
        .post(
            &format!("/v1/runs/{run}/nodes/gate/approve"),
            json!({"iteration": 0, "note": "ship it", "decidedBy": "ada"}),
        )
        .await;
    assert_eq!((code, body), (200, json!({"runId": run})));
    server.wait_status(&run, "finished").await;
    let (_, body) = server.get("/v1/approvals").await;
    assert_eq!(body, json!({"approvals": []}));
    // An explicit resume afterwards is harmless.
    let (code, body) = server
        .post(&format!("/v1/runs/{run}/resume"), json!({}))
        .await;
    assert_eq!((code, body), (200, json!({"runId": run})));
    assert_eq!(server.status(&run).await["status"], "finished");

    server.terminate();
    let applied = output_after_stop(server.root.path(), server.state.path(), &run, "apply").await;
    assert_eq!(
        applied,
        Some(json!({"applied": "deploy prod", "approved_by": "ada"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_while_the_approved_run_is_driven_says_running() {
    let server = Server::start();
    let scripted = server.install("fixture-scripted");
    let input = script(json!({"sequence": [
        {"approval": {"id": "gate"}},
        task("slow", json!({"sleepMs": 1500})),
    ]}));
    let run = server.start_run(&scripted, input).await;
    server.wait_status(&run, "waiting-approval").await;
    let (code, _) = server
        .post(&format!("/v1/runs/{run}/nodes/gate/approve"), json!({}))
        .await;
    assert_eq!(code, 200);
    let (code, body) = server
        .post(&format!("/v1/runs/{run}/resume"), json!({}))
        .await;
    assert_eq!(
        (code, body),
        (200, json!({"runId": run, "status": "running"}))
    );
    let (code, body) = server
        .post(
            "/v1/runs",
            json!({"workflowPath": scripted, "runId": run, "resume": true}),
        )
        .await;
    assert_eq!(
        (code, body),
        (200, json!({"runId": run, "status": "running"}))
    );
    server.wait_status(&run, "finished").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deciding_a_node_that_is_not_waiting_is_409_node_not_waiting() {
    let server = Server::start();
    let hello = server.install("example-hello");
    let run = server.start_run(&hello, json!({})).await;
    server.wait_status(&run, "finished").await;
    for path in [
        "nodes/greet/approve",
        "nodes/greet/deny",
        "nodes/nope/approve",
    ] {
        let (code, body) = server
            .post(&format!("/v1/runs/{run}/{path}"), json!({}))
            .await;
        assert_eq!(
            (code, error_code(&body)),
            (409, "NODE_NOT_WAITING"),
            "{path}: {body}"
        );
    }
    let (code, body) = server
        .post(
            &format!("/v1/runs/{run}/nodes/greet/approve"),
            json!({"iteration": -1}),
        )
        .await;
    assert_eq!((code, error_code(&body)), (400, "INVALID_REQUEST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_fails_the_run_or_continues_per_on_deny() {
    let server = Server::start();
    let approval = server.install("example-approval");
    let run = server.start_run(&approval, json!({})).await;
    server.wait_status(&run, "waiting-approval").await;
    let (code, body) = server
        .post(
            &format!("/v1/runs/{run}/nodes/gate/deny"),
            json!({"note": "no", "decidedBy": "bob"}),
        )
        .await;
    assert_eq!((code, body), (200, json!({"runId": run})));
    let failed = server.wait_status(&run, "failed").await;
    assert_eq!(failed["runState"]["state"], "failed");
    // A second decision has nothing to decide.
    let (code, body) = server
        .post(&format!("/v1/runs/{run}/nodes/gate/deny"), json!({}))
        .await;
    assert_eq!((code, error_code(&body)), (409, "NODE_NOT_WAITING"));

    let scripted = server.install("fixture-scripted");
    let input = script(json!({"sequence": [
        {"approval": {"id": "gate", "onDeny": "continue"}},
        task("after", json!({})),
    ]}));
    let run = server.start_run(&scripted, input).await;
    server.wait_status(&run, "waiting-approval").await;
    let (code, _) = server
        .post(&format!("/v1/runs/{run}/nodes/gate/deny"), json!({}))
        .await;
    assert_eq!(code, 200);
    let finished = server.wait_status(&run, "finished").await;
    assert_eq!(finished["summary"]["finished"], 2, "{finished}");
    let events = server.all_events(&run).await;
    assert!(
        events
            .iter()
            .any(|e| e.kind() == "NodeFinished" && e.data["nodeId"] == "after")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_run_and_a_parked_run() {
    let server = Server::start();
    let scripted = server.install("fixture-scripted");
    let spinning = server
        .start_run(
            &scripted,
            script(
                json!({"sequence": [task("s", json!({"spin": true})), task("never", json!({}))]}),
            ),
        )
        .await;
    let mut sse = server
        .sse(&format!("/v1/runs/{spinning}/events"), &[])
        .await;
    while let Some(event) = sse.next_event().await {
        if event.kind() == "NodeStarted" {
            break;
        }
    }
    let (code, body) = server
        .post(&format!("/v1/runs/{spinning}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"won": true, "status": "cancelled", "terminalStatus": "cancelled", "repaired": true, "runId": spinning})
    );
    let rest = sse.events_until_end(Duration::from_secs(10)).await;
    assert_eq!(rest.last().unwrap().kind(), "RunCancelled");
    assert_eq!(server.status(&spinning).await["status"], "cancelled");
    let (code, body) = server
        .post(&format!("/v1/runs/{spinning}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["won"], false);
    assert_eq!(body["status"], "already-terminal");

    let parked = server
        .start_run(&scripted, script(json!({"approval": {"id": "gate"}})))
        .await;
    server.wait_status(&parked, "waiting-approval").await;
    let (code, body) = server
        .post(&format!("/v1/runs/{parked}/cancel"), json!({}))
        .await;
    assert_eq!((code, &body["won"]), (200, &json!(true)), "{body}");
    let status = server.status(&parked).await;
    assert_eq!(status["status"], "cancelled");
    let (_, approvals) = server.get("/v1/approvals").await;
    assert_eq!(approvals, json!({"approvals": []}));

    let hello = server.install("example-hello");
    let done = server.start_run(&hello, json!({})).await;
    server.wait_status(&done, "finished").await;
    let (code, body) = server
        .post(&format!("/v1/runs/{done}/cancel"), json!({}))
        .await;
    assert_eq!((code, error_code(&body)), (409, "RUN_NOT_ACTIVE"));
    assert_eq!(body["error"]["message"], "Run is not currently active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_wake_a_waiting_run_and_the_legacy_path_shares_the_sequence() {
    let mut server = Server::start();
    let signal = server.install("example-signal");
    let run = server.start_run(&signal, json!({})).await;
    let waiting = server.wait_status(&run, "waiting-event").await;
    assert_eq!(
        waiting["runState"]["blocked"],
        json!({"kind": "event", "nodeId": "wait"})
    );
    let (code, body) = server
        .post(&format!("/v1/runs/{run}/signals/other"), json!({"data": 1}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["seq"], 0);
    assert_eq!(body["signalName"], "other");
    assert_eq!(body["correlationId"], Value::Null);
    let (code, body) = server
        .post(
            &format!("/signal/{run}/go"),
            json!({"data": {"n": 1}, "correlationId": "c1", "receivedBy": "tester"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["runId"], run);
    assert_eq!(body["seq"], 1);
    assert_eq!(body["signalName"], "go");
    assert_eq!(body["correlationId"], "c1");
    assert!(body["receivedAtMs"].is_i64());
    server.wait_status(&run, "finished").await;
    let (code, body) = server
        .post(&format!("/v1/runs/{run}/signals/%20"), json!({}))
        .await;
    assert_eq!((code, error_code(&body)), (400, "INVALID_REQUEST"));

    server.terminate();
    let used = output_after_stop(server.root.path(), server.state.path(), &run, "use").await;
    assert_eq!(used, Some(json!({"received": {"n": 1}})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_approvals_and_requests_by_route() {
    let server = Server::start();
    let approval = server.install("example-approval");
    let run = server.start_run(&approval, json!({})).await;
    server.wait_status(&run, "waiting-approval").await;
    server
        .post(&format!("/v1/runs/{run}/nodes/gate/approve"), json!({}))
        .await;
    server.wait_status(&run, "finished").await;
    server.get("/v1/runs/ghost").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&text, "smithers_runs_finished_total") >= 1.0
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for name in [
        "smithers_runs_total",
        "smithers_runs_finished_total",
        "smithers_nodes_started",
        "smithers_nodes_finished",
        "smithers_events_emitted_total",
        "smithers_run_duration_ms_count",
        "smithers_node_duration_ms_count",
        "smithers_approvals_requested",
        "smithers_approvals_granted",
    ] {
        assert!(metric(&text, name) >= 1.0, "{name} in\n{text}");
    }
    assert_eq!(metric(&text, "smithers_runs_failed_total"), 0.0);
    assert_eq!(metric(&text, "smithers_approval_pending"), 0.0);
    assert!(text.contains("# TYPE smithers_http_requests counter"));
    assert!(text.contains(
        r#"smithers_http_requests{method="GET",route="/v1/runs/{run_id}",status_class="4xx",status_code="404"} 1"#
    ));
    assert!(
        text.contains(r#"smithers_http_request_duration_ms_count{method="POST",route="/v1/runs""#)
    );
    assert!(
        text.contains("smithers_compile_cache_misses_total 1"),
        "{text}"
    );
    assert!(text.contains("smithers_sse_subscribers 0"));
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(-1.0)
}
