//! The gateway over real HTTP against the real binary: every RPC method and
//! its legacy alias, both RPC routes, the operational routes, each auth mode
//! with allowed and denied scopes, per-approval restrictions, `ctx.auth`,
//! and signed webhooks.

mod common;
mod gateway_support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use gateway_support::{Gateway, Ws, script, task};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const TWO_WORKFLOWS: &str = r#"
heartbeat_ms = 500
[listen]
port = 0
[workflows.approval]
path = "example-approval.wasm"
description = "prepare, approve, apply"
[workflows.scripted]
path = "fixture-scripted.wasm"
"#;

fn now_ms() -> i64 {
    smithers_host::model::now_ms()
}

#[tokio::test]
async fn operational_routes_answer_and_the_host_gate_guards_everything_but_health() {
    let gw = Gateway::start(TWO_WORKFLOWS, &["example-approval", "fixture-scripted"]);
    let response = gw.client.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(response.headers()["x-smithers-api-version"], "v1");
    let (status, health) = gateway_support::decode(response).await;
    assert_eq!(status, 200);
    assert_eq!(health["ok"], true);
    assert_eq!(health["protocol"], 1);
    assert_eq!(health["features"], json!(["streaming", "runs"]));
    assert_eq!(health["workflowsTotal"], 2);
    assert_eq!(health["identity"]["backend"], "smithers-host");

    let (status, workflows) = gw.get("/workflows", &[]).await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = workflows["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["approval", "scripted"]);
    assert_eq!(
        workflows["workflows"][0]["description"],
        "prepare, approve, apply"
    );

    let metrics = gw.client.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("smithers_gateway_connections_active"),
        "{text}"
    );
    assert!(text.contains("smithers_runs_total"), "{text}");

    // Without auth only loopback Host/Origin may drive the gateway.
    let evil = [("host", "evil.example")];
    let (status, body) = gw.get("/workflows", &evil).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("FORBIDDEN")));
    assert_eq!(body["error"]["message"], "Host is not allowed");
    let (status, frame) = gw.post("/v1/rpc/listRuns", json!({}), &evil).await;
    assert_eq!(status, 403);
    assert_eq!(frame["type"], "res");
    assert_eq!(frame["ok"], false);
    assert_eq!(frame["error"]["code"], "FORBIDDEN");
    let (status, _) = gw
        .post(
            "/v1/rpc/listRuns",
            json!({}),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = gw.get("/health", &evil).await;
    assert_eq!(status, 200);
    let (status, body) = gw.get("/nope", &[]).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("NOT_FOUND")));
}

#[tokio::test]
async fn every_rpc_method_works_over_http_with_its_alias_and_envelope() {
    let gw = Gateway::start(TWO_WORKFLOWS, &["example-approval", "fixture-scripted"]);

    // health, listWorkflows, and the {id, method, params} envelope.
    let health = gw.call("health", json!({})).await;
    assert_eq!(health["protocol"], 1);
    let listed = gw.call("listWorkflows", json!({})).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let (status, frame) = gw
        .post(
            "/rpc",
            json!({"id": "req-1", "method": "workflows.list", "params": {}}),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(frame["id"], "req-1");
    assert_eq!(frame["apiVersion"], "v1");
    assert_eq!(frame["payload"][0]["key"], "approval");

    // launchRun and its refusals.
    let launched = gw
        .call(
            "launchRun",
            json!({"workflow": "approval", "options": {"runId": "r1"}}),
        )
        .await;
    assert_eq!(
        launched,
        json!({"runId": "r1", "workflow": "approval", "system": false})
    );
    let (status, frame) = gw
        .rpc(
            "launchRun",
            json!({"workflow": "approval", "runId": "r1"}),
            None,
        )
        .await;
    assert_eq!((status, &frame["error"]["code"]), (409, &json!("CONFLICT")));
    let (status, frame) = gw.rpc("launchRun", json!({"workflow": "nope"}), None).await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("NOT_FOUND"))
    );
    let (status, frame) = gw
        .rpc(
            "launchRun",
            json!({"workflow": "approval", "input": [1]}),
            None,
        )
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (400, &json!("INVALID_INPUT"))
    );
    let (status, frame) = gw.rpc("launchRun", json!({}), None).await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (400, &json!("INVALID_REQUEST"))
    );

    // getRun, listRuns, listApprovals while the run waits.
    gw.wait_status("r1", "waiting-approval").await;
    let run = gw.call("runs.get", json!({"runId": "r1"})).await;
    assert_eq!(run["workflowKey"], "approval");
    assert_eq!(run["runState"]["state"], "waiting-approval");
    assert_eq!(run["summary"]["finished"], 1);
    let (status, frame) = gw.rpc("getRun", json!({"runId": "missing"}), None).await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("NOT_FOUND"))
    );
    let runs = gw
        .call("listRuns", json!({"filter": {"workflow": "approval"}}))
        .await;
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["runId"], "r1");
    let none = gw
        .call(
            "runs.list",
            json!({"filter": {"workflow": "approval", "offset": 1}}),
        )
        .await;
    assert_eq!(none, json!([]));
    let approvals = gw.call("listApprovals", json!({})).await;
    assert_eq!(approvals.as_array().unwrap().len(), 1);
    assert_eq!(approvals[0]["nodeId"], "gate");
    assert_eq!(approvals[0]["workflowKey"], "approval");
    assert_eq!(approvals[0]["requestTitle"], "Apply the plan?");
    let filtered = gw
        .call("approvals.list", json!({"filter": {"runId": "other"}}))
        .await;
    assert_eq!(filtered, json!([]));

    // getNodeOutput: produced, pending, unknown node, unknown iteration.
    let output = gw
        .call("getNodeOutput", json!({"runId": "r1", "nodeId": "prepare"}))
        .await;
    assert_eq!(output["status"], "produced");
    assert_eq!(output["row"]["plan"], "deploy staging");
    let pending = gw
        .call(
            "devtools.getNodeOutput",
            json!({"runId": "r1", "nodeId": "gate"}),
        )
        .await;
    assert_eq!(pending["status"], "pending");
    let (status, frame) = gw
        .rpc(
            "getNodeOutput",
            json!({"runId": "r1", "nodeId": "ghost"}),
            None,
        )
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("NodeNotFound"))
    );
    let (status, frame) = gw
        .rpc(
            "getNodeOutput",
            json!({"runId": "r1", "nodeId": "prepare", "iteration": 3}),
            None,
        )
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("IterationNotFound"))
    );

    // Frames (legacy frames.list / frames.get) and runs.rerun.
    let frames = gw.call("frames.list", json!({"runId": "r1"})).await;
    let newest = frames[0]["frameNo"].as_u64().unwrap();
    assert!(newest >= 1, "{frames}");
    let last = gw.call("frames.get", json!({"runId": "r1"})).await;
    assert_eq!(last["frameNo"], newest);
    let first = gw
        .call("frames.get", json!({"runId": "r1", "frameNo": 1}))
        .await;
    assert_eq!(first["frameNo"], 1);
    let (status, frame) = gw
        .rpc("frames.get", json!({"runId": "r1", "frameNo": 999}), None)
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("NOT_FOUND"))
    );
    let rerun = gw
        .call("runs.rerun", json!({"runId": "r1", "newRunId": "r1-again"}))
        .await;
    assert_eq!(rerun["runId"], "r1-again");
    gw.wait_status("r1-again", "waiting-approval").await;
    gw.call("cancelRun", json!({"runId": "r1-again"})).await;

    // resumeRun of a parked run is accepted and harmless.
    let resumed = gw.call("resumeRun", json!({"runId": "r1"})).await;
    assert_eq!(resumed["status"], "resume_requested");

    // submitApproval decides and the run continues by itself; a second
    // decision is AlreadyDecided.
    gw.wait_status("r1", "waiting-approval").await;
    let decided = gw
        .call(
            "submitApproval",
            json!({"runId": "r1", "nodeId": "gate", "decision": {"approved": true, "note": "ok"}}),
        )
        .await;
    assert_eq!(
        decided,
        json!({"runId": "r1", "nodeId": "gate", "iteration": 0, "approved": true})
    );
    gw.wait_status("r1", "finished").await;
    let (status, frame) = gw
        .rpc(
            "approvals.decide",
            json!({"runId": "r1", "nodeId": "gate", "approved": false}),
            None,
        )
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (409, &json!("AlreadyDecided"))
    );
    assert_eq!(frame["error"]["status"], "approved");
    let applied = gw
        .call("getNodeOutput", json!({"runId": "r1", "nodeId": "apply"}))
        .await;
    assert_eq!(applied["row"]["applied"], "deploy staging");
    let again = gw.call("resumeRun", json!({"runId": "r1"})).await;
    assert_eq!(again["status"], "already_terminal");

    // submitSignal (via the legacy runs.create / signals.send aliases).
    let waiting = gw
        .call(
            "runs.create",
            json!({"workflow": "scripted", "runId": "s1",
                   "input": script(json!({"signal": {"id": "w", "name": "go"}}))}),
        )
        .await;
    assert_eq!(waiting["runId"], "s1");
    gw.wait_status("s1", "waiting-event").await;
    let receipt = gw
        .call(
            "signals.send",
            json!({"runId": "s1", "signalName": "go", "payload": {"x": 1}}),
        )
        .await;
    assert_eq!(receipt["signalName"], "go");
    assert_eq!(receipt["seq"], 0);
    gw.wait_status("s1", "finished").await;
    let signalled = gw
        .call("getNodeOutput", json!({"runId": "s1", "nodeId": "w"}))
        .await;
    assert_eq!(signalled["row"], json!({"x": 1}));
    let (status, frame) = gw
        .rpc(
            "submitSignal",
            json!({"runId": "ghost", "signalName": "go"}),
            None,
        )
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("NOT_FOUND"))
    );

    // cancelRun: cancels, then reports already-terminal; finished runs are
    // not active; unknown runs are RunNotFound.
    gw.call("launchRun", json!({"workflow": "approval", "runId": "c1"}))
        .await;
    gw.wait_status("c1", "waiting-approval").await;
    let cancelled = gw.call("cancelRun", json!({"runId": "c1"})).await;
    assert_eq!(cancelled["won"], true);
    assert_eq!(cancelled["status"], "cancelled");
    let twice = gw.call("runs.cancel", json!({"runId": "c1"})).await;
    assert_eq!(twice["status"], "already-terminal");
    let (status, frame) = gw.rpc("cancelRun", json!({"runId": "r1"}), None).await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (409, &json!("RUN_NOT_ACTIVE"))
    );
    let (status, frame) = gw.rpc("cancelRun", json!({"runId": "ghost"}), None).await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("RunNotFound"))
    );

    // Cron schedules over RPC.
    let created = gw
        .call(
            "cronCreate",
            json!({"workflow": "scripted", "pattern": "0 0 1 1 *", "cronId": "yearly"}),
        )
        .await;
    assert_eq!(created["cronId"], "yearly");
    assert_eq!(created["workflow"], "scripted");
    assert_eq!(created["workflowPath"], "gateway:scripted");
    assert_eq!(created["enabled"], true);
    assert!(created["nextRunAtMs"].as_i64().unwrap() > now_ms());
    let listed = gw
        .call("cron.list", json!({"filter": {"workflow": "scripted"}}))
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (status, frame) = gw
        .rpc(
            "cronCreate",
            json!({"workflow": "scripted", "pattern": "every day"}),
            None,
        )
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (400, &json!("INVALID_REQUEST"))
    );
    let (status, frame) = gw
        .rpc(
            "cron.add",
            json!({"workflow": "nope", "pattern": "* * * * *"}),
            None,
        )
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("NOT_FOUND"))
    );
    let triggered = gw
        .call(
            "cronRun",
            json!({"cronId": "yearly", "input": script(task("t", json!({"echoAuth": true})))}),
        )
        .await;
    assert_eq!(triggered["workflow"], "scripted");
    let run_id = triggered["runId"].as_str().unwrap().to_string();
    gw.wait_status(&run_id, "finished").await;
    let after = gw.call("cronList", json!({})).await;
    assert!(after[0]["lastRunAtMs"].is_i64(), "{after}");
    assert_eq!(
        gw.call("cronDelete", json!({"cronId": "yearly"})).await["removed"],
        true
    );
    let (status, frame) = gw
        .rpc("cron.remove", json!({"cronId": "yearly"}), None)
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("NOT_FOUND"))
    );

    // ctx.auth of a run started over RPC without auth: the loopback operator.
    let output = gw
        .call("getNodeOutput", json!({"runId": run_id, "nodeId": "t"}))
        .await;
    let auth = &output["row"]["auth"];
    assert_eq!(auth["triggeredBy"], "gateway");
    assert_eq!(auth["role"], "operator");
    assert_eq!(auth["scopes"], json!(["*"]));
    assert!(auth["createdAt"].is_string());

    // Unknown methods, HTTP-only limits, malformed bodies.
    let (status, frame) = gw.rpc("noSuchMethod", json!({}), None).await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (404, &json!("METHOD_NOT_FOUND"))
    );
    let (status, frame) = gw
        .rpc("streamRunEvents", json!({"runId": "r1"}), None)
        .await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (400, &json!("INVALID_REQUEST"))
    );
    let response = gw
        .client
        .post(gw.url("/v1/rpc/getRun"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    let (status, frame) = gateway_support::decode(response).await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (400, &json!("INVALID_INPUT"))
    );
    let (status, frame) = gw.post("/rpc", json!([1, 2]), &[]).await;
    assert_eq!(
        (status, &frame["error"]["code"]),
        (400, &json!("INVALID_REQUEST"))
    );
}

const TOKENS: &str = r#"
[listen]
port = 0
[auth]
mode = "token"
[auth.tokens.admin-token]
role = "operator"
scopes = ["*"]
user_id = "root"
[auth.tokens.reader-token]
role = "viewer"
scopes = ["run:read", "cron:read"]
[auth.tokens.writer-token]
role = "ci"
scopes = ["run:write"]
user_id = "ci-bot"
[auth.tokens.alice-token]
role = "reviewer"
scopes = ["run:read", "approval:submit"]
user_id = "alice"
[auth.tokens.bob-token]
role = "reviewer"
scopes = ["run:read", "approval:submit", "team:qa"]
user_id = "bob"
[auth.tokens.expired-token]
role = "operator"
scopes = ["*"]
expires_at_ms = 1000
[auth.tokens.revoked-token]
role = "operator"
scopes = ["*"]
revoked_at_ms = 1000
[workflows.scripted]
path = "fixture-scripted.wasm"
"#;

#[tokio::test]
async fn token_mode_grants_roles_and_scopes_and_enforces_approval_restrictions() {
    let gw = Gateway::start(TOKENS, &["fixture-scripted"]);
    let code = |frame: &Value| frame["error"]["code"].as_str().unwrap_or("").to_string();

    // Credentials: missing, unknown, expired, revoked.
    let (status, frame) = gw.rpc("listRuns", json!({}), None).await;
    assert_eq!((status, code(&frame)), (401, "UNAUTHORIZED".into()));
    assert_eq!(frame["error"]["message"], "A bearer token is required");
    let (status, frame) = gw.rpc("listRuns", json!({}), Some("nope")).await;
    assert_eq!(
        (status, frame["error"]["message"].clone()),
        (401, json!("Invalid token"))
    );
    let (status, frame) = gw.rpc("listRuns", json!({}), Some("expired-token")).await;
    assert_eq!(status, 401);
    assert_eq!(frame["error"]["refresh"], "smithers token issue");
    let (status, frame) = gw.rpc("listRuns", json!({}), Some("revoked-token")).await;
    assert_eq!(
        (status, frame["error"]["message"].clone()),
        (401, json!("Token has been revoked"))
    );
    let (status, _) = gw
        .post(
            "/v1/rpc/listRuns",
            json!({}),
            &[("x-smithers-key", "reader-token")],
        )
        .await;
    assert_eq!(status, 200);
    // With auth on, any Host is fine; /health never needs a token.
    let (status, _) = gw
        .post(
            "/v1/rpc/listRuns",
            json!({}),
            &[
                ("host", "gw.example"),
                ("authorization", "Bearer reader-token"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(gw.get("/health", &[]).await.0, 200);
    assert_eq!(gw.get("/workflows", &[]).await.0, 401);

    // Scopes: reader may read, not write; writer may launch, not approve.
    let (status, frame) = gw
        .rpc(
            "launchRun",
            json!({"workflow": "scripted"}),
            Some("reader-token"),
        )
        .await;
    assert_eq!((status, code(&frame)), (403, "FORBIDDEN".into()));
    assert_eq!(frame["error"]["requiredScope"], "run:write");
    let (status, _) = gw.rpc("cronList", json!({}), Some("reader-token")).await;
    assert_eq!(status, 200);
    let (status, frame) = gw
        .rpc(
            "submitSignal",
            json!({"runId": "any", "signalName": "go"}),
            Some("reader-token"),
        )
        .await;
    assert_eq!(
        (status, frame["error"]["requiredScope"].clone()),
        (403, json!("signal:submit"))
    );
    let (status, frame) = gw
        .rpc(
            "cronCreate",
            json!({"workflow": "scripted", "pattern": "* * * * *"}),
            Some("reader-token"),
        )
        .await;
    assert_eq!(
        (status, frame["error"]["requiredScope"].clone()),
        (403, json!("cron:write"))
    );

    let input = script(json!({"sequence": [
        task("who", json!({"echoAuth": true})),
        {"approval": {"id": "by-alice", "allowedUsers": ["alice"]}},
        {"approval": {"id": "by-qa", "allowedScopes": ["team:qa"]}},
    ]}));
    let (status, frame) = gw
        .rpc(
            "launchRun",
            json!({"workflow": "scripted", "runId": "t1", "input": input}),
            Some("writer-token"),
        )
        .await;
    assert_eq!(status, 200, "{frame}");
    wait_for(&gw, "t1", "waiting-approval", "admin-token").await;
    // ctx.auth carries who launched it.
    let (_, frame) = gw
        .rpc(
            "getNodeOutput",
            json!({"runId": "t1", "nodeId": "who"}),
            Some("reader-token"),
        )
        .await;
    let auth = &frame["payload"]["row"]["auth"];
    assert_eq!(auth["triggeredBy"], "ci-bot");
    assert_eq!(auth["role"], "ci");
    assert_eq!(auth["scopes"], json!(["run:write"]));

    let decide = |node: &str| json!({"runId": "t1", "nodeId": node, "approved": true});
    let (status, frame) = gw
        .rpc("submitApproval", decide("by-alice"), Some("writer-token"))
        .await;
    assert_eq!(
        (status, frame["error"]["requiredScope"].clone()),
        (403, json!("approval:submit"))
    );
    let (status, frame) = gw
        .rpc("submitApproval", decide("by-alice"), Some("bob-token"))
        .await;
    assert_eq!((status, code(&frame)), (403, "FORBIDDEN".into()));
    assert_eq!(
        frame["error"]["message"],
        "User is not allowed to decide this approval"
    );
    let (status, frame) = gw
        .rpc("submitApproval", decide("by-alice"), Some("alice-token"))
        .await;
    assert_eq!(status, 200, "{frame}");
    wait_for_pending(&gw, "t1", "by-qa").await;
    let (status, frame) = gw
        .rpc("submitApproval", decide("by-qa"), Some("alice-token"))
        .await;
    assert_eq!(
        (status, frame["error"]["message"].clone()),
        (403, json!("Connection is missing required approval scope"))
    );
    let (status, frame) = gw
        .rpc("submitApproval", decide("by-qa"), Some("bob-token"))
        .await;
    assert_eq!(status, 200, "{frame}");
    wait_for(&gw, "t1", "finished", "admin-token").await;

    // The same rules over the WebSocket.
    let mut ws = Ws::open(&gw.ws_url()).await;
    let early = ws.request("listRuns", json!({})).await;
    assert_eq!(early["error"]["message"], "Connect first");
    let refused = ws.connect(Some("nope"), None).await.unwrap_err();
    assert_eq!(refused["error"]["code"], "UNAUTHORIZED");
    assert!(
        ws.next_frame().await.is_none(),
        "socket closes after a failed connect"
    );
    let mut ws = Ws::open(&gw.ws_url()).await;
    let hello = ws.connect(Some("reader-token"), None).await.unwrap();
    assert_eq!(hello["auth"]["role"], "viewer");
    assert_eq!(hello["auth"]["scopes"], json!(["run:read", "cron:read"]));
    let denied = ws
        .request("launchRun", json!({"workflow": "scripted"}))
        .await;
    assert_eq!(denied["error"]["code"], "FORBIDDEN");
    let runs = ws.request("listRuns", json!({})).await;
    assert_eq!(runs["ok"], true);
}

async fn wait_for(gw: &Gateway, run: &str, want: &str, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, frame) = gw.rpc("getRun", json!({"runId": run}), Some(token)).await;
        if frame["payload"]["status"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{run} never reached {want}: {frame}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for_pending(gw: &Gateway, run: &str, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, frame) = gw
            .rpc(
                "listApprovals",
                json!({"filter": {"runId": run}}),
                Some("admin-token"),
            )
            .await;
        if frame["payload"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["nodeId"] == node))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{node} never pending: {frame}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

const JWT_SECRET: &str = "jwt-secret-0123456789abcdef0123456789";

fn jwt(secret: &str, claims: Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let head = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", b64.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn jwt_mode_checks_signature_time_issuer_audience_and_scopes() {
    let config = r#"
[listen]
port = 0
[auth]
mode = "jwt"
secret_env = "GATEWAY_TEST_JWT_SECRET"
issuer = "https://issuer.test"
audience = "smithers-gateway"
default_scopes = ["run:read"]
[workflows.scripted]
path = "fixture-scripted.wasm"
"#;
    let gw = Gateway::start_with_env(
        config,
        &["fixture-scripted"],
        &[("GATEWAY_TEST_JWT_SECRET", JWT_SECRET)],
    );
    let now = now_ms() / 1000;
    let claims = |extra: Value| {
        let mut c = json!({"iss": "https://issuer.test", "aud": "smithers-gateway", "sub": "deployer", "exp": now + 600});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let writer = jwt(
        JWT_SECRET,
        claims(json!({"scope": "run:read run:write", "role": "ci"})),
    );
    let input = script(task("who", json!({"echoAuth": true})));
    let (status, frame) = gw
        .rpc(
            "launchRun",
            json!({"workflow": "scripted", "runId": "j1", "input": input}),
            Some(&writer),
        )
        .await;
    assert_eq!(status, 200, "{frame}");
    wait_for_token(&gw, "j1", &writer).await;
    let (_, frame) = gw
        .rpc(
            "getNodeOutput",
            json!({"runId": "j1", "nodeId": "who"}),
            Some(&writer),
        )
        .await;
    let auth = &frame["payload"]["row"]["auth"];
    assert_eq!(auth["triggeredBy"], "deployer");
    assert_eq!(auth["role"], "ci");
    assert_eq!(auth["scopes"], json!(["run:read", "run:write"]));

    // No scope claim: the default scopes (read only); default role.
    let reader = jwt(JWT_SECRET, claims(json!({})));
    let (status, frame) = gw
        .rpc("launchRun", json!({"workflow": "scripted"}), Some(&reader))
        .await;
    assert_eq!(
        (status, frame["error"]["code"].clone()),
        (403, json!("FORBIDDEN"))
    );
    assert_eq!(gw.rpc("listRuns", json!({}), Some(&reader)).await.0, 200);

    // Inside the 60 s clock skew an expired token passes; beyond, not.
    let lenient = jwt(JWT_SECRET, claims(json!({"exp": now - 20})));
    assert_eq!(gw.rpc("listRuns", json!({}), Some(&lenient)).await.0, 200);
    for (bad, why) in [
        (jwt("other-secret", claims(json!({}))), "signature"),
        (
            jwt(JWT_SECRET, claims(json!({"exp": now - 3600}))),
            "expired",
        ),
        (
            jwt(JWT_SECRET, claims(json!({"nbf": now + 3600}))),
            "not valid yet",
        ),
        (
            jwt(JWT_SECRET, claims(json!({"iss": "https://elsewhere"}))),
            "issuer",
        ),
        (
            jwt(JWT_SECRET, claims(json!({"aud": ["someone-else"]}))),
            "audience",
        ),
        ("not.a.jwt".to_string(), "malformed"),
    ] {
        let (status, frame) = gw.rpc("listRuns", json!({}), Some(&bad)).await;
        assert_eq!(status, 401, "{why}: {frame}");
        assert_eq!(frame["error"]["code"], "UNAUTHORIZED", "{why}");
    }
    let expired = jwt(JWT_SECRET, claims(json!({"exp": now - 3600})));
    let (_, frame) = gw.rpc("listRuns", json!({}), Some(&expired)).await;
    assert_eq!(frame["error"]["refresh"], "smithers token issue");
}

async fn wait_for_token(gw: &Gateway, run: &str, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, frame) = gw.rpc("getRun", json!({"runId": run}), Some(token)).await;
        if frame["payload"]["status"] == "finished" {
            return;
        }
        assert!(Instant::now() < deadline, "{frame}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn trusted_proxy_mode_takes_identity_from_headers_and_fails_closed() {
    let config = r#"
[listen]
port = 0
[auth]
mode = "trusted-proxy"
trusted_proxies = ["127.0.0.1"]
[workflows.scripted]
path = "fixture-scripted.wasm"
"#;
    let gw = Gateway::start(config, &["fixture-scripted"]);
    let as_user = |scopes: &'static str| {
        vec![
            ("x-user-id", "carol"),
            ("x-user-scopes", scopes),
            ("x-user-role", "engineer"),
        ]
    };
    // No scopes header and no default: refused, never an implicit "*".
    let (status, frame) = gw
        .post("/v1/rpc/listRuns", json!({}), &[("x-user-id", "carol")])
        .await;
    assert_eq!(
        (status, frame["error"]["code"].clone()),
        (401, json!("UNAUTHORIZED"))
    );
    let (status, frame) = gw
        .post(
            "/v1/rpc/launchRun",
            json!({"workflow": "scripted"}),
            &as_user("run:read"),
        )
        .await;
    assert_eq!(
        (status, frame["error"]["requiredScope"].clone()),
        (403, json!("run:write"))
    );
    let input = script(task("who", json!({"echoAuth": true})));
    let (status, frame) = gw
        .post(
            "/v1/rpc/launchRun",
            json!({"workflow": "scripted", "runId": "p1", "input": input}),
            &as_user("run:read,run:write"),
        )
        .await;
    assert_eq!(status, 200, "{frame}");
    gw.wait_status_with("p1", "finished", &as_user("run:read"))
        .await;
    let (_, frame) = gw
        .post(
            "/v1/rpc/getNodeOutput",
            json!({"runId": "p1", "nodeId": "who"}),
            &as_user("run:read"),
        )
        .await;
    let auth = &frame["payload"]["row"]["auth"];
    assert_eq!(auth["triggeredBy"], "carol");
    assert_eq!(auth["role"], "engineer");
    assert_eq!(auth["scopes"], json!(["run:read", "run:write"]));
}

trait WaitWith {
    async fn wait_status_with(&self, run: &str, want: &str, headers: &[(&str, &str)]);
}

impl WaitWith for Gateway {
    async fn wait_status_with(&self, run: &str, want: &str, headers: &[(&str, &str)]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, frame) = self
                .post("/v1/rpc/getRun", json!({"runId": run}), headers)
                .await;
            if frame["payload"]["status"] == want {
                return;
            }
            assert!(Instant::now() < deadline, "{frame}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The default (`timestamped`) webhook headers: a fresh delivery id, now,
/// and the signature of `<id>.<timestamp>.<body>`.
fn sign(secret: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let id = uuid_like();
    let ts = (now_ms() / 1000).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for part in [id.as_bytes(), b".", ts.as_bytes(), b".", body] {
        mac.update(part);
    }
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    vec![
        ("x-smithers-delivery", id),
        ("x-smithers-timestamp", ts),
        ("x-hub-signature-256", signature),
    ]
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "delivery-{}-{}",
        now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test]
async fn webhooks_start_runs_and_deliver_signals_only_when_signed() {
    let config = r#"
[listen]
port = 0
[workflows.hook]
path = "fixture-scripted.wasm"
[workflows.hook.webhook]
secret_env = "GATEWAY_TEST_HOOK_SECRET"
[workflows.hook.webhook.signal]
name = "go"
run_id_path = "run"
payload_path = "data"
[workflows.hook.webhook.run]
input_path = "input"
"#;
    let secret = "hook-secret";
    let gw = Gateway::start_with_env(
        config,
        &["fixture-scripted"],
        &[("GATEWAY_TEST_HOOK_SECRET", secret)],
    );
    let post = |body: Value, signature: Option<Vec<(&'static str, String)>>| {
        let bytes = body.to_string().into_bytes();
        let mut request = gw.client.post(gw.url("/webhooks/hook")).body(bytes);
        for (name, value) in signature.unwrap_or_default() {
            request = request.header(name, value);
        }
        async move { gateway_support::decode(request.send().await.unwrap()).await }
    };
    let input = script(json!({"sequence": [
        task("who", json!({"echoAuth": true})),
        {"signal": {"id": "w", "name": "go"}},
    ]}));
    let start = json!({"input": input});

    // Bad and missing signatures: 401, nothing started.
    let (status, body) = post(
        start.clone(),
        Some(sign("wrong", start.to_string().as_bytes())),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"ok": false, "error": {"code": "UNAUTHORIZED", "message": "Webhook signature verification failed"}})
    );
    let (status, _) = post(start.clone(), None).await;
    assert_eq!(status, 401);
    assert_eq!(gw.call("listRuns", json!({})).await, json!([]));

    // A good signature starts a run as the system role.
    let (status, body) = post(
        start.clone(),
        Some(sign(secret, start.to_string().as_bytes())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verified"], true);
    assert_eq!(body["delivered"], json!([]));
    let run = body["started"]["runId"].as_str().unwrap().to_string();
    gw.wait_status(&run, "waiting-event").await;
    let who = gw
        .call("getNodeOutput", json!({"runId": run, "nodeId": "who"}))
        .await;
    assert_eq!(who["row"]["auth"]["triggeredBy"], "webhook:hook");
    assert_eq!(who["row"]["auth"]["role"], "system");

    // A signed delivery naming the run signals it instead of starting one.
    let signal = json!({"run": run, "data": {"deployed": "v2"}});
    let (status, body) = post(
        signal.clone(),
        Some(sign(secret, signal.to_string().as_bytes())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matchedRunIds"], json!([run]));
    assert_eq!(body["delivered"][0]["signalName"], "go");
    assert_eq!(body["started"], Value::Null);
    gw.wait_status(&run, "finished").await;
    let w = gw
        .call("getNodeOutput", json!({"runId": run, "nodeId": "w"}))
        .await;
    assert_eq!(w["row"], json!({"deployed": "v2"}));
    assert_eq!(
        gw.call("listRuns", json!({}))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (status, body) = gw.post("/webhooks/unknown", json!({}), &[]).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("NOT_FOUND"))
    );
}

#[tokio::test]
async fn a_unix_socket_serves_the_same_routes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gw.sock");
    let config = format!(
        "[listen]\nsocket = \"{}\"\n[workflows.scripted]\npath = \"fixture-scripted.wasm\"\n",
        socket.display()
    );
    let gw = Gateway::start(&config, &["fixture-scripted"]);
    assert_eq!(gw.base, format!("unix:{}", socket.display()));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only the owner may connect");
    let request = |head: String| {
        let socket = socket.clone();
        async move {
            let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut raw = String::new();
            tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut raw))
                .await
                .unwrap()
                .unwrap();
            raw
        }
    };
    let health =
        request("GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into())
            .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"protocol\":1"), "{health}");
    let body = r#"{"workflow":"scripted","input":{"root":{"task":{"id":"a"}}}}"#;
    let launched = request(format!(
        "POST /v1/rpc/launchRun HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(launched.starts_with("HTTP/1.1 200"), "{launched}");
    assert!(launched.contains("\"workflow\":\"scripted\""), "{launched}");
}

#[tokio::test]
async fn a_token_revoked_in_the_config_is_refused_after_sighup() {
    let config = |revoked: &str| {
        format!(
            "[listen]\nport = 0\n[auth]\nmode = \"token\"\n\
             [auth.tokens.keep]\nrole = \"operator\"\nscopes = [\"*\"]\n\
             [auth.tokens.leaver]\nrole = \"operator\"\nscopes = [\"*\"]\n{revoked}\n\
             [workflows.scripted]\npath = \"fixture-scripted.wasm\"\n"
        )
    };
    let mut gw = Gateway::start(&config(""), &["fixture-scripted"]);
    assert_eq!(gw.rpc("listRuns", json!({}), Some("leaver")).await.0, 200);
    gw.reload(&config("revoked_at_ms = 1"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, frame) = gw.rpc("listRuns", json!({}), Some("leaver")).await;
        if status == 401 {
            assert_eq!(frame["error"]["message"], "Token has been revoked");
            break;
        }
        assert!(Instant::now() < deadline, "never revoked:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.rpc("listRuns", json!({}), Some("keep")).await.0, 200);
    // A broken file is ignored: the last good auth stays.
    gw.reload("[auth]\nmode = \"nonsense\"\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.rpc("listRuns", json!({}), Some("keep")).await.0, 200);
    assert!(gw.log().contains("config not reloaded"), "{}", gw.log());
}
