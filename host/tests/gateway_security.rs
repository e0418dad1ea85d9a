//! The gateway's trust model attacked over real sockets against the real
//! binary: identity headers from a peer that is not a configured proxy,
//! browser requests from foreign origins, unsafe configs, run events and
//! outputs sent to connections without read scope, replayed and stale
//! webhooks, JWTs without a usable `exp`, SIGHUP reloads that would drop
//! `[auth]`, and Smithers' input bounds and codes on the gateway surface.

mod common;
mod gateway_support;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use gateway_support::{Gateway, Ws, script, task};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_tungstenite::tungstenite;

fn now_secs() -> i64 {
    smithers_host::model::now_ms() / 1000
}

/// Polls `probe` until it holds (bounded), showing the gateway's log if not.
async fn eventually<F, Fut>(gw: &Gateway, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !probe().await {
        assert!(Instant::now() < deadline, "{what}; log:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- 11: trusted proxies, Origin checks, unsafe configs -------------------

fn proxy_config(proxies: &str) -> String {
    format!(
        "[listen]\nport = 0\n[auth]\nmode = \"trusted-proxy\"\ntrusted_proxies = {proxies}\n\
         [workflows.scripted]\npath = \"fixture-scripted.wasm\"\n"
    )
}

#[tokio::test]
async fn identity_headers_are_believed_only_from_a_configured_proxy_address() {
    // The test connects from 127.0.0.1, which is not the configured proxy.
    let mut gw = Gateway::start(&proxy_config("[\"10.9.9.9/32\"]"), &["fixture-scripted"]);
    let forged = [
        ("x-user-id", "mallory"),
        ("x-user-scopes", "*"),
        ("x-user-role", "admin"),
        // Headers naming the proxy do not make the peer the proxy.
        ("x-forwarded-for", "10.9.9.9"),
        ("x-real-ip", "10.9.9.9"),
        ("forwarded", "for=10.9.9.9"),
    ];
    let (status, frame) = gw
        .post(
            "/v1/rpc/launchRun",
            json!({"workflow": "scripted", "runId": "forged"}),
            &forged,
        )
        .await;
    assert_eq!(status, 401, "{frame}");
    assert_eq!(frame["error"]["code"], "UNAUTHORIZED");
    assert_eq!(
        frame["error"]["message"],
        "Request did not come from a trusted proxy"
    );
    assert_eq!(gw.get("/workflows", &forged).await.0, 401);
    // The WebSocket takes the same decision at `connect`.
    let mut ws = Ws::open(&gw.ws_url()).await;
    assert_eq!(
        ws.connect(None, None).await.unwrap_err()["error"]["code"],
        "UNAUTHORIZED"
    );

    // Once 127.0.0.1 is a configured proxy, the same headers are believed,
    // and the refused launch had started nothing.
    gw.reload(&proxy_config("[\"127.0.0.1\"]"));
    let reader = [("x-user-id", "carol"), ("x-user-scopes", "run:read")];
    eventually(&gw, "127.0.0.1 never became a trusted proxy", || async {
        gw.post("/v1/rpc/listRuns", json!({}), &reader).await.0 == 200
    })
    .await;
    let (_, frame) = gw.post("/v1/rpc/listRuns", json!({}), &reader).await;
    assert_eq!(frame["payload"], json!([]));
    let (status, frame) = gw
        .post("/v1/rpc/getRun", json!({"runId": "forged"}), &reader)
        .await;
    assert_eq!(status, 404, "{frame}");
}

#[tokio::test]
async fn a_browser_request_from_another_origin_is_refused_even_with_a_valid_token() {
    let config = "[listen]\nport = 0\n[auth]\nmode = \"token\"\n\
                  [auth.tokens.operator-token-0123456789]\nrole = \"operator\"\nscopes = [\"*\"]\n\
                  [workflows.scripted]\npath = \"fixture-scripted.wasm\"\n";
    let gw = Gateway::start(config, &["fixture-scripted"]);
    let token = ("authorization", "Bearer operator-token-0123456789");
    let launch =
        json!({"workflow": "scripted", "runId": "csrf", "input": script(task("a", json!({})))});
    for evil in ["https://evil.example", "null"] {
        let (status, frame) = gw
            .post(
                "/v1/rpc/launchRun",
                launch.clone(),
                &[token, ("origin", evil)],
            )
            .await;
        assert_eq!(status, 403, "{evil}: {frame}");
        assert_eq!(frame["error"]["message"], "Origin is not allowed");
    }
    let (status, frame) = gw
        .post("/v1/rpc/getRun", json!({"runId": "csrf"}), &[token])
        .await;
    assert_eq!(status, 404, "the refused launch started a run: {frame}");
    // A WebSocket upgrade from a foreign page is refused before it opens.
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(gw.ws_url()).unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!(
            "a foreign-origin upgrade was accepted: {:?}",
            other.map(|_| ())
        ),
    }
    // The gateway's own origin (what a same-origin page sends) passes.
    let own = gw.base.clone();
    let (status, frame) = gw
        .post(
            "/v1/rpc/launchRun",
            launch,
            &[token, ("origin", own.as_str())],
        )
        .await;
    assert_eq!(status, 200, "{frame}");
}

/// Starts the binary on `config` and returns its stderr once it exited;
/// panics if it starts listening instead.
fn refused_config(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    std::fs::create_dir(dir.path().join("root")).unwrap();
    refused_start(&path, &dir.path().join("root"), dir.path())
}

/// Starts the gateway on the config file at `path` and returns its stderr
/// once it exited; panics if it starts listening instead.
fn refused_start(path: &std::path::Path, root: &std::path::Path, dir: &std::path::Path) -> String {
    let config = std::fs::read_to_string(path).unwrap_or_default();
    let (code, stderr) = common::refused(
        Command::new(common::host_binary())
            .arg("gateway")
            .arg("--config")
            .arg(path)
            .arg("--root-dir")
            .arg(root)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("SHORT_JWT_SECRET", "too-short"),
        &format!("the gateway accepted this config:\n{config}"),
    );
    assert_ne!(code, Some(0), "{config}");
    stderr
}

#[test]
fn unsafe_auth_configs_are_refused_before_the_gateway_listens() {
    let secret = "0123456789abcdef0123456789abcdef";
    for (config, why) in [
        (
            "[listen]\nhost = \"0.0.0.0\"\nport = 0\n[auth]\nmode = \"trusted-proxy\"\n".to_string(),
            "needs trusted_proxies",
        ),
        (
            "[listen]\nport = 0\n[auth]\nmode = \"trusted-proxy\"\ntrusted_proxies = [\"0.0.0.0/0\"]\n"
                .to_string(),
            "trusts every address",
        ),
        (
            "[listen]\nport = 0\n[auth]\nmode = \"jwt\"\nsecret_env = \"SHORT_JWT_SECRET\"\n\
             issuer = \"i\"\naudience = \"a\"\n"
                .to_string(),
            "at least 32",
        ),
        (
            format!("[listen]\nport = 0\n[auth]\nmode = \"jwt\"\nsecret = \"{secret}\"\nissuer = \"i\"\n"),
            "auth.audience is required",
        ),
    ] {
        let stderr = refused_config(&config);
        assert!(stderr.contains(why), "{config}\n→ {stderr}");
        assert!(!stderr.contains("too-short"), "the secret leaked: {stderr}");
    }
}

/// A workflow can write anything in the root dir: a gateway config there
/// (or a link to one there) would let it issue itself tokens.
#[test]
fn a_config_file_inside_the_root_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let config = "[listen]\nport = 0\n[auth]\nmode = \"token\"\n\
                  [auth.tokens.planted-token-0123456789]\nrole = \"operator\"\nscopes = [\"*\"]\n";
    let planted = root.join("gateway.toml");
    std::fs::write(&planted, config).unwrap();
    let link = dir.path().join("gateway.toml");
    std::os::unix::fs::symlink(&planted, &link).unwrap();
    for path in [&planted, &link] {
        let stderr = refused_start(path, &root, dir.path());
        assert!(
            stderr.contains("is inside the root dir") && stderr.contains("keep the file outside"),
            "{}: {stderr}",
            path.display()
        );
        assert!(
            !stderr.contains("planted-token"),
            "the file's content was echoed: {stderr}"
        );
    }
}

// ---- 12: WebSocket events pass the read-scope check -----------------------

const SCOPED: &str = r#"
heartbeat_ms = 200
[listen]
port = 0
[auth]
mode = "token"
[auth.tokens.admin-token-0123456789]
role = "operator"
scopes = ["*"]
[auth.tokens.reader-token-012345678]
role = "viewer"
scopes = ["run:read"]
[auth.tokens.empty-token-0123456789]
role = "viewer"
scopes = []
[auth.tokens.cronly-token-012345678]
role = "viewer"
scopes = ["cron:read"]
[workflows.scripted]
path = "fixture-scripted.wasm"
"#;
const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "reader-token-012345678";
const EMPTY: &str = "empty-token-0123456789";
const CRONLY: &str = "cronly-token-012345678";

/// Every frame that arrives within `window` (the socket stays open).
async fn frames_within(ws: &mut Ws, window: Duration) -> Vec<Value> {
    let mut frames: Vec<Value> = ws.pending.drain(..).collect();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.socket.next()).await {
        if let tungstenite::Message::Text(text) = message {
            frames.push(serde_json::from_str(&text).unwrap());
        }
    }
    frames
}

fn run_frames(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["event"] != "tick" && f["event"] != "connect.challenge")
        .collect()
}

#[tokio::test]
async fn websocket_events_reach_only_connections_that_may_read_them() {
    let gw = Gateway::start(SCOPED, &["fixture-scripted"]);
    let admin = Some(ADMIN);
    // A parked run, so that `hello` has something to show.
    let parked = json!({"workflow": "scripted", "runId": "parked",
        "input": script(json!({"approval": {"id": "gate"}}))});
    assert_eq!(gw.rpc("launchRun", parked, admin).await.0, 200);
    eventually(&gw, "the run never parked", || async {
        let (_, frame) = gw.rpc("getRun", json!({"runId": "parked"}), admin).await;
        frame["payload"]["status"] == "waiting-approval"
    })
    .await;

    let (mut reader, hello) = gw.connect(Some(READER)).await;
    assert_eq!(hello["snapshot"]["runs"][0]["runId"], "parked");
    let (mut blind, mut hellos) = (Vec::new(), Vec::new());
    for token in [EMPTY, CRONLY] {
        let (ws, hello) = gw.connect(Some(token)).await;
        blind.push(ws);
        hellos.push(hello);
    }

    let secret = json!({"secret": "s3cr3t-task-output"});
    let input = script(task("leak", json!({"emit": secret})));
    let launch = json!({"workflow": "scripted", "runId": "leaky", "input": input});
    assert_eq!(gw.rpc("launchRun", launch, admin).await.0, 200);
    // The reader sees the run, its output included, up to its end.
    let mut seen = Vec::new();
    loop {
        let frame = reader.next_event().await.expect("reader socket open");
        if frame["event"] == "tick" {
            continue;
        }
        let done = frame["event"] == "run.completed" && frame["payload"]["runId"] == "leaky";
        seen.push(frame);
        if done {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|f| f["event"] == "task.output" && f.to_string().contains("s3cr3t-task-output")),
        "{seen:?}"
    );
    // The others got nothing of it (the broadcast reached the reader first
    // or at the same time; give theirs a generous while to arrive).
    for (ws, token) in blind.iter_mut().zip([EMPTY, CRONLY]) {
        let frames = frames_within(ws, Duration::from_secs(2)).await;
        let leaked = run_frames(&frames);
        assert!(leaked.is_empty(), "{token} received {leaked:?}");
        assert!(
            frames.iter().any(|f| f["event"] == "tick"),
            "{token}'s socket went quiet: {frames:?}"
        );
        let refused = ws.stream("leaky", Some(0)).await;
        assert_eq!(refused["error"]["code"], "FORBIDDEN", "{token}");
    }
    // Nor did their `hello` show the parked run or its approval.
    for (hello, token) in hellos.iter().zip([EMPTY, CRONLY]) {
        assert_eq!(hello["snapshot"]["runs"], json!([]), "{token}");
        assert_eq!(hello["snapshot"]["approvals"], json!([]), "{token}");
    }
}

#[tokio::test]
async fn a_stream_stops_when_its_connection_reconnects_without_read_scope() {
    let gw = Gateway::start(SCOPED, &["fixture-scripted"]);
    let input = script(json!({"sequence": [
        {"signal": {"id": "w", "name": "go"}},
        task("after", json!({"emit": {"secret": "after-the-downgrade"}})),
    ]}));
    let launch = json!({"workflow": "scripted", "runId": "waits", "input": input});
    assert_eq!(gw.rpc("launchRun", launch, Some(ADMIN)).await.0, 200);
    let (mut ws, _) = gw.connect(Some(READER)).await;
    assert_eq!(ws.stream("waits", Some(0)).await["ok"], true);
    // The same socket now authenticates with a token that may read nothing.
    ws.connect(Some(EMPTY), None).await.unwrap();
    eventually(&gw, "the run never waited for its signal", || async {
        let (_, f) = gw
            .rpc("getRun", json!({"runId": "waits"}), Some(ADMIN))
            .await;
        f["payload"]["status"] == "waiting-event"
    })
    .await;
    let (status, frame) = gw
        .rpc(
            "submitSignal",
            json!({"runId": "waits", "signalName": "go", "data": {}}),
            Some(ADMIN),
        )
        .await;
    assert_eq!(status, 200, "{frame}");
    eventually(&gw, "the run never finished", || async {
        let (_, f) = gw
            .rpc("getRun", json!({"runId": "waits"}), Some(ADMIN))
            .await;
        f["payload"]["status"] == "finished"
    })
    .await;
    let frames = frames_within(&mut ws, Duration::from_secs(2)).await;
    let text = serde_json::to_string(&frames).unwrap();
    assert!(!text.contains("after-the-downgrade"), "{text}");
    assert!(
        frames
            .iter()
            .any(|f| f["event"] == "run.error" && f["payload"]["error"]["code"] == "FORBIDDEN"),
        "{text}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| f["event"] == "run.event" && f["payload"]["event"] == "run.completed"),
        "{text}"
    );
}

// ---- 13: webhooks: signed timestamp and delivery id, replay window, dedupe

const HOOK_SECRET: &str = "hook-secret-0123456789abcdef";

fn hook_config(extra: &str) -> String {
    format!(
        "[listen]\nport = 0\n[workflows.hook]\npath = \"fixture-scripted.wasm\"\n\
         [workflows.hook.webhook]\nsecret_env = \"GATEWAY_TEST_HOOK_SECRET\"\n{extra}\n\
         [workflows.hook.webhook.run]\ninput_path = \"input\"\n"
    )
}

fn hmac_hex(parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    for part in parts {
        mac.update(part);
    }
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Headers of a `timestamped` delivery: id, timestamp, signature.
fn stamped(id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = ts.to_string();
    let signature = hmac_hex(&[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    vec![
        ("x-smithers-delivery", id.to_string()),
        ("x-smithers-timestamp", ts),
        ("x-hub-signature-256", signature),
    ]
}

async fn deliver(gw: &Gateway, body: &[u8], headers: &[(&'static str, String)]) -> (u16, Value) {
    let mut request = gw.client.post(gw.url("/webhooks/hook")).body(body.to_vec());
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    gateway_support::decode(request.send().await.unwrap()).await
}

async fn run_count(gw: &Gateway) -> usize {
    gw.call("listRuns", json!({}))
        .await
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_signed_webhook_sent_three_times_starts_one_run_even_after_a_restart() {
    let mut gw = Gateway::start_with_env(
        &hook_config(""),
        &["fixture-scripted"],
        &[("GATEWAY_TEST_HOOK_SECRET", HOOK_SECRET)],
    );
    let body = json!({"input": script(task("a", json!({})))}).to_string();
    let headers = stamped("delivery-1", now_secs(), body.as_bytes());
    let (status, first) = deliver(&gw, body.as_bytes(), &headers).await;
    assert_eq!(status, 200, "{first}");
    assert!(first["started"]["runId"].is_string(), "{first}");
    for _ in 0..2 {
        let (status, again) = deliver(&gw, body.as_bytes(), &headers).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["duplicate"], true, "{again}");
        assert_eq!(again["started"], Value::Null);
    }
    assert_eq!(run_count(&gw).await, 1);
    // The dedupe is durable: a restart forgets nothing.
    gw.stop();
    gw.spawn();
    let (_, again) = deliver(&gw, body.as_bytes(), &headers).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(run_count(&gw).await, 1);

    // A correctly signed delivery dated outside the 5-minute window, before
    // or after now, is refused and starts nothing.
    for (id, ts) in [("old", now_secs() - 301), ("future", now_secs() + 301)] {
        let (status, refused) =
            deliver(&gw, body.as_bytes(), &stamped(id, ts, body.as_bytes())).await;
        assert_eq!(status, 401, "{refused}");
        assert_eq!(
            refused["error"]["message"],
            "Webhook timestamp is outside the replay window"
        );
    }
    // Moving a captured signature to a fresh id or timestamp breaks it.
    let mut moved = headers.clone();
    moved[0].1 = "delivery-2".into();
    assert_eq!(deliver(&gw, body.as_bytes(), &moved).await.0, 401);
    let mut redated = headers.clone();
    redated[1].1 = (now_secs() + 1).to_string();
    assert_eq!(deliver(&gw, body.as_bytes(), &redated).await.0, 401);
    // A body-only signature (no id, no timestamp) is not enough.
    let body_only = [("x-hub-signature-256", hmac_hex(&[body.as_bytes()]))];
    assert_eq!(deliver(&gw, body.as_bytes(), &body_only).await.0, 401);
    assert_eq!(run_count(&gw).await, 1);
    // A new delivery of the same body is a new event.
    let fresh = stamped("delivery-2", now_secs(), body.as_bytes());
    let (status, second) = deliver(&gw, body.as_bytes(), &fresh).await;
    assert_eq!(
        (status, second["duplicate"].clone()),
        (200, Value::Null),
        "{second}"
    );
    assert_eq!(run_count(&gw).await, 2);
}

#[tokio::test]
async fn smithers_style_body_signatures_are_deduplicated_by_body() {
    let gw = Gateway::start_with_env(
        &hook_config("scheme = \"body\""),
        &["fixture-scripted"],
        &[("GATEWAY_TEST_HOOK_SECRET", HOOK_SECRET)],
    );
    let body = json!({"input": script(task("a", json!({})))}).to_string();
    let signed = [("x-hub-signature-256", hmac_hex(&[body.as_bytes()]))];
    let mut started = 0;
    for _ in 0..3 {
        let (status, answer) = deliver(&gw, body.as_bytes(), &signed).await;
        assert_eq!(status, 200, "{answer}");
        started += usize::from(answer["started"]["runId"].is_string());
    }
    assert_eq!(started, 1);
    assert_eq!(run_count(&gw).await, 1);
}

// ---- 14: JWT claims and SIGHUP reloads ------------------------------------

const JWT_SECRET: &str = "jwt-secret-0123456789abcdef-0123456789";

fn jwt(claims: Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let head = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", b64.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn jwts_without_a_numeric_exp_or_dated_in_the_future_are_refused() {
    let config = "[listen]\nport = 0\n[auth]\nmode = \"jwt\"\nsecret_env = \"GATEWAY_TEST_JWT\"\n\
                  issuer = \"https://issuer.test\"\naudience = \"smithers-gateway\"\n";
    let gw = Gateway::start_with_env(config, &[], &[("GATEWAY_TEST_JWT", JWT_SECRET)]);
    let now = now_secs();
    let claims = |extra: Value| {
        let mut c = json!({"iss": "https://issuer.test", "aud": "smithers-gateway",
                           "scope": "*", "exp": now + 600});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    assert_eq!(
        gw.rpc("listRuns", json!({}), Some(&jwt(claims(json!({})))))
            .await
            .0,
        200
    );
    for (extra, why) in [
        (json!({"exp": null}), "no exp claim"),
        (json!({"exp": "never"}), "exp claim must be a number"),
        (json!({"exp": [now + 600]}), "exp claim must be a number"),
        (json!({"iat": now + 3600}), "issued in the future"),
        (json!({"iat": "now"}), "iat claim must be a number"),
        (json!({"nbf": true}), "nbf claim must be a number"),
        (json!({"aud": null}), "audience"),
        (json!({"iss": null}), "issuer"),
    ] {
        let (status, frame) = gw
            .rpc("listRuns", json!({}), Some(&jwt(claims(extra.clone()))))
            .await;
        assert_eq!(status, 401, "{extra}: {frame}");
        let message = frame["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{extra}: {message}");
    }
}

fn token_config(token: &str) -> String {
    format!(
        "[listen]\nport = 0\n[auth]\nmode = \"token\"\n[auth.tokens.{token}]\n\
         role = \"operator\"\nscopes = [\"*\"]\n"
    )
}

#[tokio::test]
async fn sighup_with_a_missing_or_broken_auth_section_keeps_the_current_auth() {
    let first = "first-token-0123456789";
    let mut gw = Gateway::start(&token_config(first), &[]);
    assert_eq!(gw.rpc("listRuns", json!({}), None).await.0, 401);

    let refusals = |gw: &Gateway| gw.log().matches("SIGHUP: config not reloaded").count();
    for (broken, why) in [
        ("[listen]\nport = 0\n".to_string(), "no [auth] section"),
        (
            "[listen]\nport = 0\n[auth]\nmode = \"jwt\"\nsecret = \"short\"\nissuer = \"i\"\naudience = \"a\"\n"
                .to_string(),
            "at least 32",
        ),
        ("[listen]\nport = 0\n[auth]\nmode = \"nonsense\"\n".to_string(), "nonsense"),
    ] {
        let before = refusals(&gw);
        gw.reload(&broken);
        eventually(&gw, "the reload was not logged", || async {
            refusals(&gw) > before
        })
        .await;
        assert!(gw.log().contains(why), "{why}:\n{}", gw.log());
        let (status, frame) = gw.rpc("listRuns", json!({}), None).await;
        assert_eq!(status, 401, "auth dropped by {broken:?}: {frame}");
        assert_eq!(gw.rpc("listRuns", json!({}), Some(first)).await.0, 200);
    }
    // A good reload still applies.
    let second = "second-token-0123456789";
    gw.reload(&token_config(second));
    eventually(&gw, "the good reload never applied", || async {
        gw.rpc("listRuns", json!({}), Some(second)).await.0 == 200
    })
    .await;
    assert_eq!(gw.rpc("listRuns", json!({}), Some(first)).await.0, 401);
}

// ---- 15: Smithers' input bounds and codes on the gateway surface ---------

const BARE: &str = "[listen]\nport = 0\n";

/// `POST /rpc` with a raw body; the gateway must still answer afterwards.
async fn raw_rpc(gw: &Gateway, body: Vec<u8>) -> (u16, Value) {
    let response = gw
        .client
        .post(gw.url("/rpc"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let answer = gateway_support::decode(response).await;
    assert_eq!(gw.get("/health", &[]).await.0, 200);
    answer
}

fn assert_invalid_input(answer: (u16, Value), message: &str) {
    let (status, frame) = answer;
    assert_eq!(status, 400, "{frame}");
    assert_eq!(frame["type"], "res");
    assert_eq!(frame["ok"], false);
    assert_eq!(frame["error"]["code"], "INVALID_INPUT", "{frame}");
    assert_eq!(frame["error"]["message"], message, "{frame}");
}

#[tokio::test]
async fn a_missing_method_is_invalid_input() {
    let gw = Gateway::start(BARE, &[]);
    let answer = raw_rpc(&gw, br#"{"id":"1","params":{}}"#.to_vec()).await;
    assert_invalid_input(answer, "Gateway method name must be a string.");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_invalid_input() {
    let gw = Gateway::start(BARE, &[]);
    let answer = raw_rpc(&gw, b"{\"method\": listRuns".to_vec()).await;
    assert_invalid_input(answer, "Gateway RPC payload must be valid JSON.");
}

#[tokio::test]
async fn a_body_over_one_mib_is_payload_too_large() {
    let gw = Gateway::start(BARE, &[]);
    let padding = "x".repeat(1024 * 1024);
    let body = json!({"method": "listRuns", "params": {"pad": padding}}).to_string();
    let (status, frame) = raw_rpc(&gw, body.into_bytes()).await;
    assert_eq!(status, 413, "{frame}");
    assert_eq!(frame["error"]["code"], "PayloadTooLarge", "{frame}");
    assert_eq!(
        frame["error"]["message"],
        "Gateway request payload exceeds 1048576 bytes."
    );
}

#[tokio::test]
async fn json_deeper_than_32_is_invalid_input() {
    let gw = Gateway::start(BARE, &[]);
    // {"method", "params": {"a": [[...]]}}: the innermost array is at depth 33.
    let nested = format!("{}{}", "[".repeat(31), "]".repeat(31));
    let body = format!(r#"{{"method":"listRuns","params":{{"a":{nested}}}}}"#);
    let answer = raw_rpc(&gw, body.into_bytes()).await;
    assert_invalid_input(
        answer,
        "gateway frame exceeds the maximum JSON depth of 32.",
    );
    let ok = format!("{}{}", "[".repeat(30), "]".repeat(30));
    let body = format!(r#"{{"method":"listRuns","params":{{"a":{ok}}}}}"#);
    assert_eq!(raw_rpc(&gw, body.into_bytes()).await.0, 200);
}

#[tokio::test]
async fn an_array_over_256_items_is_invalid_input() {
    let gw = Gateway::start(BARE, &[]);
    let body = json!({"method": "listRuns", "params": {"filter": {"tags": vec![0; 257]}}});
    let answer = raw_rpc(&gw, body.to_string().into_bytes()).await;
    assert_invalid_input(
        answer,
        "gateway frame contains an array exceeding 256 items.",
    );
    let body = json!({"method": "listRuns", "params": {"filter": {"tags": vec![0; 256]}}});
    assert_eq!(raw_rpc(&gw, body.to_string().into_bytes()).await.0, 200);
}

#[tokio::test]
async fn a_string_over_16_kib_is_invalid_input() {
    let gw = Gateway::start(BARE, &[]);
    let body = json!({"method": "listRuns", "params": {"note": "x".repeat(16 * 1024 + 1)}});
    let answer = raw_rpc(&gw, body.to_string().into_bytes()).await;
    assert_invalid_input(
        answer,
        "gateway frame contains a string exceeding 16384 characters.",
    );
    // Over WebSocket too, with the same code (Smithers answers a frame it
    // could not read with the id "invalid").
    let (mut ws, _) = gw.connect(None).await;
    let frame = json!({"type": "req", "id": "big", "method": "listRuns",
                       "params": {"note": "x".repeat(16 * 1024 + 1)}});
    futures::SinkExt::send(
        &mut ws.socket,
        tungstenite::Message::Text(frame.to_string().into()),
    )
    .await
    .unwrap();
    let res = loop {
        let frame = ws.next_frame().await.expect("socket open");
        if frame["type"] == "res" {
            break frame;
        }
    };
    assert_eq!(res["id"], "invalid", "{res}");
    assert_eq!(res["error"]["code"], "INVALID_INPUT", "{res}");
    assert_eq!(ws.request("health", json!({})).await["ok"], true);
}

#[tokio::test]
async fn a_method_name_over_64_characters_is_invalid_input() {
    let gw = Gateway::start(BARE, &[]);
    let long = "a".repeat(65);
    let answer = raw_rpc(&gw, json!({"method": long}).to_string().into_bytes()).await;
    assert_invalid_input(
        answer,
        "method exceeds the maximum length of 64 characters.",
    );
    let (status, frame) = gw.rpc(&long, json!({}), None).await;
    assert_eq!(
        (status, frame["error"]["code"].clone()),
        (400, json!("INVALID_INPUT"))
    );
    // A well-formed unknown method stays 404.
    let (status, frame) = gw.rpc("noSuchMethod", json!({}), None).await;
    assert_eq!(
        (status, frame["error"]["code"].clone()),
        (404, json!("METHOD_NOT_FOUND"))
    );
}

#[tokio::test]
async fn a_correctly_signed_webhook_body_that_is_not_json_is_invalid_input() {
    let gw = Gateway::start_with_env(
        &hook_config(""),
        &["fixture-scripted"],
        &[("GATEWAY_TEST_HOOK_SECRET", HOOK_SECRET)],
    );
    let body = b"this is not json";
    let (status, answer) = deliver(&gw, body, &stamped("d-1", now_secs(), body)).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer,
        json!({"ok": false, "error": {"code": "INVALID_INPUT", "message": "Webhook payload must be valid JSON."}})
    );
    assert_eq!(run_count(&gw).await, 0);
}
