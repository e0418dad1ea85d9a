//! `POST /v1/workflows/preflight` over HTTP: reports live runs of a replaced
//! workflow without touching them, and refuses bad paths with envelopes.

mod common;
mod http_support;

use http_support::Server;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn preflight_reports_each_live_run_and_changes_nothing() {
    let server = Server::start();
    let flow = server.root.path().join("flow.wasm");
    std::fs::copy(common::guest("fixture-v1"), &flow).unwrap();
    let run = server.start_run("flow.wasm", json!({})).await;
    server.wait_status(&run, "waiting-approval").await;

    let (code, report) = server
        .post(
            "/v1/workflows/preflight",
            json!({ "workflowPath": "flow.wasm" }),
        )
        .await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["runs"][0]["runId"], run.as_str());
    assert_eq!(report["runs"][0]["verdict"], "compatible");

    // A version without the approval the run waits at diverges.
    std::fs::copy(common::guest("example-hello"), &flow).unwrap();
    let (code, report) = server
        .post(
            "/v1/workflows/preflight",
            json!({ "workflowPath": "flow.wasm" }),
        )
        .await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["runs"][0]["verdict"], "divergent", "{report}");
    assert!(
        report["runs"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("gate"),
        "{report}"
    );
    assert_eq!(
        server.status(&run).await["status"],
        "waiting-approval",
        "preflight is read-only"
    );

    let (code, body) = server
        .post(
            "/v1/workflows/preflight",
            json!({ "workflowPath": "../x.wasm" }),
        )
        .await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (400, Some("WORKFLOW_PATH_OUTSIDE_ROOT"))
    );
    let (code, body) = server.post("/v1/workflows/preflight", json!({})).await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (400, Some("INVALID_REQUEST"))
    );
}
