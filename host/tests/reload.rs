//! Hot reload by content hash: a resumed run uses the file's current
//! version, the compiled-code cache survives restarts and rejects corrupt
//! entries, concurrent loads compile once, and preflight predicts which live
//! runs a new version would break.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestHost, of_type};
use serde_json::{Value, json};
use smithers_host::app::{App, AppConfig};
use smithers_host::engine::{ApprovalDecision, StartRequest};
use smithers_host::model::RunStatus;

fn approve(node: &str) -> ApprovalDecision {
    ApprovalDecision {
        node_id: node.into(),
        iteration: 0,
        approved: true,
        note: None,
        decided_by: Some("test".into()),
    }
}

fn loaded_sources(events: &[Value]) -> Vec<String> {
    of_type(events, "WorkflowLoaded")
        .iter()
        .map(|e| e["source"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_run_resumes_with_the_current_version_and_keeps_committed_outputs() {
    let host = TestHost::new();
    let flow = host.root.path().join("flow.wasm");
    std::fs::copy(common::guest("fixture-v1"), &flow).unwrap();
    let run = host.start("flow.wasm", json!({})).await;
    assert_eq!(host.settle(&run).await.status, RunStatus::WaitingApproval);
    let prepared = host.output(&run, "prepare", 0).await.unwrap();

    // Replace the workflow while the run is parked, then approve.
    std::fs::copy(common::guest("fixture-v2"), &flow).unwrap();
    host.app.engine.decide(&run, approve("gate")).await.unwrap();
    let row = wait_for(&host, &run, RunStatus::Finished).await;
    assert_eq!(
        host.output(&run, "finish", 0).await.unwrap()["version"],
        2,
        "v2's task ran"
    );
    assert_eq!(
        host.output(&run, "prepare", 0).await.unwrap(),
        prepared,
        "v1's output is intact"
    );
    let id = run.clone();
    let versions = host
        .app
        .engine
        .store()
        .read(move |r| r.run_versions(&id))
        .await
        .unwrap();
    assert_eq!(
        versions.len(),
        2,
        "the run records both hashes: {versions:?}"
    );
    assert_eq!(versions[1], row.workflow_hash);
    let events = host.events(&run).await;
    let hashes: Vec<&str> = of_type(&events, "WorkflowLoaded")
        .iter()
        .map(|e| e["hash"].as_str().unwrap())
        .collect();
    assert_eq!(
        hashes,
        versions.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

fn open(root: &Path, state: &Path) -> App {
    let mut config = AppConfig::new(root);
    config.state_dir = Some(state.to_path_buf());
    config.launcher = Some(common::host_binary());
    App::open(config).unwrap()
}

async fn run_hello(app: &App) -> Vec<Value> {
    let run = app
        .engine
        .start(StartRequest {
            workflow_path: "hello.wasm".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.engine.wait_idle(&run).await;
    let id = run.clone();
    let rows = app
        .engine
        .store()
        .read(move |r| r.events_after(&id, -1, 1000))
        .await
        .unwrap();
    rows.iter()
        .map(|e| serde_json::from_str(&e.json).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_disk_cache_survives_restarts_and_corrupt_entries_are_recompiled() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::guest("example-hello"),
        root.path().join("hello.wasm"),
    )
    .unwrap();

    let app = open(root.path(), state.path());
    assert_eq!(loaded_sources(&run_hello(&app).await), ["compiled"]);
    assert_eq!(loaded_sources(&run_hello(&app).await), ["memory"]);
    app.close().await;

    let app = open(root.path(), state.path());
    assert_eq!(loaded_sources(&run_hello(&app).await), ["disk"]);
    app.close().await;

    // Truncate the cache entry: the next host must notice and recompile.
    let entry = cache_entries(&state.path().join("cache"));
    assert_eq!(entry.len(), 1, "{entry:?}");
    let bytes = std::fs::read(&entry[0]).unwrap();
    std::fs::write(&entry[0], &bytes[..bytes.len() / 2]).unwrap();
    let app = open(root.path(), state.path());
    assert_eq!(loaded_sources(&run_hello(&app).await), ["compiled"]);
    assert_eq!(app.engine.runtime().cache_stats().disk_rejects, 1);
    app.close().await;

    // Swap in a valid entry of another component under this name.
    std::fs::copy(common::guest("fixture-v1"), root.path().join("v1.wasm")).unwrap();
    let app = open(root.path(), state.path());
    let run = app
        .engine
        .start(StartRequest {
            workflow_path: "v1.wasm".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.engine.wait_idle(&run).await;
    app.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let entries = cache_entries(&state.path().join("cache"));
    let hello_entry = entries.iter().find(|p| **p == entry[0]).unwrap().clone();
    let other = entries.iter().find(|p| **p != entry[0]).unwrap().clone();
    std::fs::copy(&other, &hello_entry).unwrap();
    let app = open(root.path(), state.path());
    assert_eq!(
        loaded_sources(&run_hello(&app).await),
        ["compiled"],
        "a foreign entry is not trusted"
    );
    app.close().await;
}

fn cache_entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for fingerprint in std::fs::read_dir(dir).unwrap().flatten() {
        for entry in std::fs::read_dir(fingerprint.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "cwasm") {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_starts_of_a_new_hash_compile_it_once() {
    let host = TestHost::new();
    let wf = host.install("example-hello");
    let starts = (0..8).map(|_| {
        let engine = host.app.engine.clone();
        let wf = wf.clone();
        tokio::spawn(async move {
            engine
                .start(StartRequest {
                    workflow_path: wf,
                    ..Default::default()
                })
                .await
                .unwrap()
        })
    });
    let runs: Vec<_> = futures::future::join_all(starts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut sources = Vec::new();
    for run in &runs {
        host.settle(run).await;
        sources.extend(loaded_sources(&host.events(run).await));
    }
    assert_eq!(host.app.engine.runtime().cache_stats().compiles, 1);
    assert_eq!(
        sources.iter().filter(|s| *s == "compiled").count(),
        1,
        "{sources:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_reports_compatible_and_divergent_parked_runs_without_touching_them() {
    let host = TestHost::new();
    let flow = host.root.path().join("flow.wasm");
    std::fs::copy(common::guest("fixture-scripted"), &flow).unwrap();
    let parked = |root: Value| json!({ "root": root });
    let gate = json!({ "approval": { "id": "gate" } });
    // Three parked runs of the same workflow file, in different states.
    let shapes = [
        json!({ "sequence": [ { "task": { "id": "prepare" } }, gate.clone() ] }),
        json!({ "sequence": [ { "task": { "id": "prepare" } }, { "signal": { "id": "wait", "name": "go" } } ] }),
        json!({ "sequence": [ { "task": { "id": "setup" } }, gate.clone() ] }),
    ];
    let mut runs = Vec::new();
    for shape in shapes {
        let run = host.start("flow.wasm", parked(shape)).await;
        host.settle(&run).await;
        runs.push(run);
    }
    // Same version: everything is compatible.
    let report = host.app.engine.preflight("flow.wasm").await.unwrap();
    assert_eq!(report.runs.len(), 3);
    assert!(report.all_compatible(), "{report:?}");

    // The new version is fixture-v2: prepare -> gate -> finish.
    std::fs::copy(common::guest("fixture-v2"), &flow).unwrap();
    let before: Vec<_> = futures::future::join_all(runs.iter().map(|r| host.run(r))).await;
    let report = host.app.engine.preflight("flow.wasm").await.unwrap();
    let verdict = |i: usize| {
        report
            .runs
            .iter()
            .find(|v| v.run_id == runs[i].as_str())
            .unwrap()
    };
    // Run 0 committed `prepare` and waits at `gate`: both exist in v2.
    assert_eq!(verdict(0).verdict, "compatible", "{report:?}");
    // Run 1 waits for a signal node v2 does not have.
    assert_eq!(verdict(1).verdict, "divergent");
    assert!(
        verdict(1).reason.as_deref().unwrap().contains("wait"),
        "{report:?}"
    );
    // Run 2 committed `setup`, which v2 does not have.
    assert_eq!(verdict(2).verdict, "divergent");
    assert!(
        verdict(2)
            .reason
            .as_deref()
            .unwrap()
            .contains("committed node setup"),
        "{report:?}"
    );
    let after: Vec<_> = futures::future::join_all(runs.iter().map(|r| host.run(r))).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.status, b.next_seq, &b.workflow_hash),
            (a.status, a.next_seq, &a.workflow_hash),
            "preflight changed a run"
        );
    }
}

async fn wait_for(
    host: &TestHost,
    run: &smithers_host::model::RunId,
    status: RunStatus,
) -> smithers_host::store::RunRow {
    for _ in 0..1000 {
        let row = host.run(run).await;
        if row.status == status {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run never reached {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_precompiles_a_changed_component_before_it_is_started() {
    let host = TestHost::new();
    let _watch = host.app.engine.watch(false).unwrap();
    std::fs::copy(
        common::guest("example-hello"),
        host.root.path().join("fresh.wasm"),
    )
    .unwrap();
    // Wait for the background compile to land in the cache.
    for _ in 0..600 {
        if host.app.engine.runtime().cache_stats().compiles == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let run = host.start("fresh.wasm", json!({})).await;
    host.settle(&run).await;
    assert_eq!(loaded_sources(&host.events(&run).await), ["memory"]);
}

/// Writes a standalone copy of the `hello` example crate into `dir`.
fn hello_crate(dir: &Path, body: &str) {
    let sdk = common::workspace_root().join("guest-sdk");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"dev-hello\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nsmithers-sdk = {{ path = {:?} }}\n\n[workspace]\n",
            sdk.display().to_string()
        ),
    )
    .unwrap();
    // Pin dependency versions to the repository's so builds reuse artifacts.
    std::fs::copy(
        common::workspace_root().join("Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), body).unwrap();
}

const HELLO_SOURCE: &str = r#"
use smithers_sdk::serde_json::json;
use smithers_sdk::{Ctx, Node, task};

fn build(_ctx: &Ctx) -> Node {
    task("greet", |_t| Ok(json!({ "greeting": "GREETING" })))
}

smithers_sdk::workflow!(name: "dev-hello", build: build);
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_dev_crate_that_stops_compiling_reports_the_compiler_error_and_the_host_keeps_serving() {
    let build_dir = common::guests_dir()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let host = TestHost::with(|c| {
        c.build_dir = Some(build_dir);
        // The crate depends on the repository's SDK by path.
        c.build_sources = vec![common::workspace_root()];
    });
    let krate = host.root.path().join("flow");
    hello_crate(&krate, &HELLO_SOURCE.replace("GREETING", "v1"));
    let run = host.start("flow", json!({})).await;
    host.settle(&run).await;
    assert_eq!(
        host.output(&run, "greet", 0).await.unwrap()["greeting"],
        "v1"
    );

    // Break it: the next start reports the compiler's own message.
    std::fs::write(
        krate.join("src/lib.rs"),
        HELLO_SOURCE.replace("json!({", "json!({ oops "),
    )
    .unwrap();
    let err = host
        .app
        .engine
        .start(StartRequest {
            workflow_path: "flow".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, smithers_host::engine::EngineError::WorkflowBuild(_)),
        "{message}"
    );
    assert!(message.contains("error"), "{message}");
    assert!(
        message.contains("src/lib.rs"),
        "the compiler's message names the file: {message}"
    );

    // The host keeps serving other workflows, and the fixed crate again.
    let wf = host.install("example-hello");
    let other = host.start(&wf, json!({})).await;
    assert_eq!(host.settle(&other).await.status, RunStatus::Finished);
    std::fs::write(
        krate.join("src/lib.rs"),
        HELLO_SOURCE.replace("GREETING", "v2"),
    )
    .unwrap();
    let run = host.start("flow", json!({})).await;
    host.settle(&run).await;
    assert_eq!(
        host.output(&run, "greet", 0).await.unwrap()["greeting"],
        "v2"
    );
}
