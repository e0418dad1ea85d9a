//! Workflows as things the server knows, against the real binary:
//! `GET /v1/workflows` lists components (loaded, with the input schema their
//! SDK derived) and crates (not built by a listing; built by
//! `GET /v1/workflows/:path`, then reported from that build until their
//! sources change); `POST /v1/runs` and the CLI's `run` refuse an input that
//! does not match the schema with `INVALID_INPUT` and a JSON pointer, and
//! store nothing; a hostile root dir (a FIFO named `x.wasm`, symlinks out,
//! thousands of directories) neither hangs nor blows up the listing.

mod common;
mod gateway_support;
mod http_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http_support::{Options, Server};
use serde_json::{Value, json};

/// A guest crate with no dependencies whose build fails at once, with a
/// message we can look for.
fn failing_crate(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"greet\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        "compile_error!(\"greet is not written yet\");\n",
    )
    .unwrap();
}

fn entry<'a>(list: &'a Value, path: &str) -> &'a Value {
    list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["path"] == path)
        .unwrap_or_else(|| panic!("{path} is not listed: {list}"))
}

/// Files under `dir`, recursively (0 if it does not exist).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            _ => 1,
        })
        .sum()
}

fn host(args: &[&str]) -> std::process::Output {
    Command::new(common::host_binary())
        .args(args)
        .env_remove("SMITHERS_API_KEY")
        .env("SMITHERS_LOG", "warn")
        .output()
        .expect("run smithers-host")
}

#[tokio::test(flavor = "multi_thread")]
async fn workflows_are_listed_with_their_schema_and_crates_are_built_only_when_asked() {
    let server = Server::start();
    let root = server.root.path();
    std::fs::create_dir_all(root.join("flows")).unwrap();
    std::fs::copy(
        common::guest("example-hello"),
        root.join("flows/hello.wasm"),
    )
    .unwrap();
    failing_crate(&root.join("greet"));
    let build_dir = server.state.path().join("build");

    let (code, list) = server.get("/v1/workflows").await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["truncated"], false);
    assert_eq!(list["workflows"].as_array().unwrap().len(), 2, "{list}");
    let hello = entry(&list, "flows/hello.wasm");
    assert_eq!(
        (&hello["kind"], &hello["state"], &hello["name"]),
        (&json!("component"), &json!("ready"), &json!("hello"))
    );
    assert_eq!(hello["hash"].as_str().unwrap().len(), 40, "{hello}");
    // The schema the SDK derived from hello's `Input` type.
    let schema = &hello["inputSchema"];
    assert_eq!(schema["properties"]["name"]["type"], "string", "{schema}");
    assert_eq!(schema["properties"]["name"]["default"], "world", "{schema}");
    let greet = entry(&list, "greet");
    assert_eq!(
        (&greet["kind"], &greet["state"], &greet["inputSchema"]),
        (&json!("crate"), &json!("not-built"), &Value::Null),
        "a listing reports the crate without building it"
    );
    assert_eq!(files_under(&build_dir), 0, "a listing ran cargo");

    // One workflow, by its percent-encoded path: the same entry.
    let (code, one) = server.get("/v1/workflows/flows%2Fhello.wasm").await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(&one, hello);

    // Asking for the crate builds it (confined); the compiler's verdict is
    // the answer, and later listings report it while the sources stand.
    let (code, built) = server.get("/v1/workflows/greet").await;
    assert_eq!(code, 200, "{built}");
    assert_eq!(built["state"], "failed", "{built}");
    assert_eq!(built["error"]["code"], "WORKFLOW_BUILD_FAILED", "{built}");
    let message = built["error"]["message"].as_str().unwrap();
    assert!(message.contains("greet is not written yet"), "{message}");
    assert!(files_under(&build_dir) > 0, "GET of a crate builds it");
    let (_, list) = server.get("/v1/workflows").await;
    assert_eq!(entry(&list, "greet"), &built);
    std::fs::write(root.join("greet/src/lib.rs"), "// edited\n").unwrap();
    let (_, list) = server.get("/v1/workflows").await;
    assert_eq!(entry(&list, "greet")["state"], "outdated", "{list}");
    let (code, body) = server.get("/v1/workflows?build=maybe").await;
    assert_eq!(
        (code, &body["error"]["code"]),
        (400, &json!("INVALID_REQUEST"))
    );

    // A start checks the input against the schema before storing anything.
    let (code, body) = server
        .post(
            "/v1/runs",
            json!({ "workflowPath": "flows/hello.wasm", "input": { "name": 3 } }),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], "INVALID_INPUT", "{body}");
    assert_eq!(error["details"]["pointer"], "/name", "{body}");
    assert!(
        error["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("string"),
        "{body}"
    );
    let (_, runs) = server.get("/v1/runs").await;
    assert_eq!(runs, json!([]), "a refused input leaves no run behind");
    let run = server
        .start_run("flows/hello.wasm", json!({ "name": "Ada" }))
        .await;
    server.wait_status(&run, "finished").await;
    let run = server.start_run("flows/hello.wasm", json!({})).await;
    server.wait_status(&run, "finished").await;

    // The remote CLI shows the same.
    let out = host(&["client", "--url", &server.base, "workflows"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("flows/hello.wasm"), "{stdout}");
    assert!(stdout.contains("name?: string"), "{stdout}");
    assert!(stdout.contains("outdated"), "{stdout}");
    let out = host(&[
        "client",
        "--url",
        &server.base,
        "--json",
        "workflows",
        "flows/hello.wasm",
    ]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["inputSchema"], *schema);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_run_checks_the_input_against_the_schema_before_starting() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let hello = root.path().join("hello.wasm");
    std::fs::copy(common::guest("example-hello"), &hello).unwrap();
    let (root_arg, state_arg) = (
        root.path().to_str().unwrap(),
        state.path().to_str().unwrap(),
    );
    let common_args = ["--root-dir", root_arg, "--state-dir", state_arg];
    let run = |input: &str| {
        let mut args = vec!["run", hello.to_str().unwrap(), "--input", input];
        args.extend(common_args);
        host(&args)
    };

    let out = run(r#"{"name": ["Ada"]}"#);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("input schema at /name"), "{stderr}");
    let mut args = vec!["runs", "--json"];
    args.extend(common_args);
    let listed: Value = serde_json::from_slice(&host(&args).stdout).unwrap();
    assert_eq!(listed, json!([]), "nothing was started");

    let out = run(r#"{"name": "Ada"}"#);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_launch_refuses_an_input_that_does_not_match_the_schema() {
    let gw = gateway_support::Gateway::start(
        "[listen]\nport = 0\n[workflows.hello]\npath = \"example-hello.wasm\"\n",
        &["example-hello"],
    );
    let (status, frame) = gw
        .rpc(
            "launchRun",
            json!({ "workflow": "hello", "input": { "name": false } }),
            None,
        )
        .await;
    assert_eq!(status, 400, "{frame}");
    assert_eq!(frame["error"]["code"], "INVALID_INPUT", "{frame}");
    assert_eq!(frame["error"]["details"]["pointer"], "/name", "{frame}");
    let runs = gw.call("listRuns", json!({})).await;
    assert_eq!(runs, json!([]), "nothing was started");
    gw.call(
        "launchRun",
        json!({ "workflow": "hello", "input": { "name": "Ada" } }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_root_dir_neither_hangs_nor_blows_up_the_listing() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::guest("example-hello"),
        outside.path().join("secret.wasm"),
    )
    .unwrap();
    failing_crate(&outside.path().join("krate"));
    let server = Server::with(Options {
        extra_args: vec!["--max-scan-entries".into(), "1000".into()],
        install: vec!["example-hello".into()],
        ..Options::default()
    });
    let root = server.root.path();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("x.wasm"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.wasm"), root.join("escape.wasm"))
        .unwrap();
    for i in 0..5000 {
        std::fs::create_dir_all(root.join(format!("junk/{i}"))).unwrap();
    }

    let response = tokio::time::timeout(
        Duration::from_secs(30),
        server.client.get(server.url("/v1/workflows")).send(),
    )
    .await
    .expect("the listing answers within 30 s")
    .unwrap();
    let text = response.text().await.unwrap();
    assert!(text.len() < 16 * 1024, "{} bytes", text.len());
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["truncated"], true, "the entry bound stopped the walk");
    let paths: Vec<&str> = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["escape.wasm", "example-hello.wasm"], "{list}");
    assert_eq!(entry(&list, "example-hello.wasm")["state"], "ready");
    let escape = entry(&list, "escape.wasm");
    assert_eq!(escape["state"], "failed", "{escape}");
    assert_eq!(escape["error"]["code"], "WORKFLOW_PATH_OUTSIDE_ROOT");
    assert_eq!(escape["hash"], Value::Null, "nothing outside was loaded");

    let long = "x".repeat(5000);
    for (path, status, code) in [
        (long.as_str(), 400, "INVALID_REQUEST"),
        ("x.wasm", 404, "NOT_FOUND"),
        ("out%2Fsecret.wasm", 400, "WORKFLOW_PATH_OUTSIDE_ROOT"),
        ("out%2Fkrate", 400, "WORKFLOW_PATH_OUTSIDE_ROOT"),
        ("..%2Fx.wasm", 400, "WORKFLOW_PATH_OUTSIDE_ROOT"),
        ("junk", 404, "NOT_FOUND"),
    ] {
        let (got, body) = tokio::time::timeout(
            Duration::from_secs(10),
            server.get(&format!("/v1/workflows/{path}")),
        )
        .await
        .unwrap_or_else(|_| panic!("GET {path} answers at once"));
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(
            body.to_string().len() < 1024,
            "the path is quoted bounded: {body}"
        );
    }
    let (code, _) = server.get("/health").await;
    assert_eq!(code, 200);
}
