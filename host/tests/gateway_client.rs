//! The published Smithers gateway client (`smithers-orchestrator@0.32.0`,
//! export `gateway-client`), unchanged, against the real gateway: it launches
//! a run, streams its events over the WebSocket, approves the gate and sees
//! a second decision refused. The client and bun live in
//! `tests/gateway-client` (installed with `npm install` there; this test
//! runs it itself when they are missing). When they cannot be installed the test
//! says so loudly and skips.

mod common;
mod gateway_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gateway_support::Gateway;
use serde_json::{Value, json};

fn client_dir() -> PathBuf {
    common::workspace_root().join("tests/gateway-client")
}

/// The bun binary from `tests/gateway-client/node_modules`, installing it
/// (`npm install`, which keeps the committed lockfile) when missing;
/// `Err(why)` when that is impossible.
fn bun() -> Result<PathBuf, String> {
    let dir = client_dir();
    let bun = dir.join("node_modules/.bin/bun");
    let client = dir.join("node_modules/@smithers-orchestrator/gateway-client/package.json");
    if bun.is_file() && client.is_file() {
        return Ok(bun);
    }
    let npm = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("npm is not available ({e})"))?;
    if !npm.status.success() {
        return Err(format!(
            "`npm install` in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&npm.stderr)
        ));
    }
    if bun.is_file() && client.is_file() {
        Ok(bun)
    } else {
        Err("npm install succeeded but bun or the client is missing".into())
    }
}

#[tokio::test]
async fn the_published_client_launches_streams_and_approves() {
    let bun = match bun() {
        Ok(bun) => bun,
        Err(why) => {
            // Straight to the process's stderr: the test harness captures
            // `eprintln!` of passing tests, and this must be seen.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n==================== SKIPPED ====================\n\
                 the published gateway client could not be installed, so it was NOT run:\n{why}\n\
                 =================================================\n"
            );
            return;
        }
    };
    let config = r#"
heartbeat_ms = 1000
[listen]
port = 0
[auth]
mode = "token"
[auth.tokens.client-token]
role = "operator"
scopes = ["run:read", "run:write", "approval:submit"]
user_id = "published-client"
[workflows.approval]
path = "example-approval.wasm"
"#;
    let gw = Gateway::start(config, &["example-approval"]);
    let run = tokio::task::spawn_blocking({
        let base = gw.base.clone();
        move || {
            Command::new(bun)
                .args(["run", "client.ts"])
                .current_dir(client_dir())
                .env("GATEWAY_URL", base)
                .env("GATEWAY_TOKEN", "client-token")
                .env("WORKFLOW", "approval")
                .output()
                .expect("run bun")
        }
    });
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the client finishes within 90 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client failed:\n{stdout}\n{stderr}\ngateway log:\n{}",
        gw.log()
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}"));
    assert_eq!(result["protocol"], 1);
    assert_eq!(result["gapless"], true, "{result}");
    assert!(result["events"].as_u64().unwrap() > 10, "{result}");
    for name in [
        "approval.requested",
        "approval.decided",
        "node.finished",
        "run.completed",
    ] {
        assert!(
            result["names"].as_array().unwrap().contains(&json!(name)),
            "{name} in {result}"
        );
    }
    assert_eq!(result["approvalsListed"], 1);
    assert_eq!(result["approved"]["approved"], true);
    assert_eq!(result["completed"]["status"], "finished");
    assert_eq!(
        result["secondDecision"],
        json!({"code": "AlreadyDecided", "status": 409})
    );
    assert_eq!(result["status"], "finished");
    // The approval was recorded as the client's user.
    let run_id = result["runId"].as_str().unwrap();
    let (_, frame) = gw
        .rpc(
            "getNodeOutput",
            json!({"runId": run_id, "nodeId": "apply"}),
            Some("client-token"),
        )
        .await;
    assert_eq!(
        frame["payload"]["row"]["approved_by"], "published-client",
        "{frame}"
    );
}
