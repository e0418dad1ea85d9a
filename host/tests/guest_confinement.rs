//! The guest's own walls (WASI): only the root dir exists for it, it has no
//! environment, arguments or sockets, and a guest that loops, allocates or
//! recurses without bound, or traps, fails only its own task.

mod common;

use common::{TestHost, of_type};
use serde_json::{Value, json};
use smithers_host::model::{RunId, RunStatus};

fn probe(id: &str, behaviour: Value) -> Value {
    let mut task = json!({ "id": id, "continueOnFail": true });
    task.as_object_mut()
        .unwrap()
        .extend(behaviour.as_object().unwrap().clone());
    json!({ "task": task })
}

async fn run_probes(host: &TestHost, probes: Vec<Value>) -> RunId {
    let wf = host.install("fixture-scripted");
    let run = host
        .start(&wf, json!({ "root": { "sequence": probes } }))
        .await;
    assert_eq!(host.settle(&run).await.status, RunStatus::Finished);
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_sees_only_the_root_dir() {
    let host = TestHost::new();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    std::fs::write(host.root.path().join("inside.txt"), "hello").unwrap();
    // A symlink planted inside the root that points outside it.
    std::os::unix::fs::symlink(&secret, host.root.path().join("planted")).unwrap();
    std::os::unix::fs::symlink(outside.path(), host.root.path().join("planted-dir")).unwrap();
    let secret_path = secret.display().to_string();
    let run = run_probes(
        &host,
        vec![
            probe("inside", json!({ "readFile": "inside.txt" })),
            probe("absolute-inside", json!({ "readFile": "/inside.txt" })),
            probe("dotdot", json!({ "readFile": "../secret.txt" })),
            probe(
                "deep-dotdot",
                json!({ "readFile": "a/../../../../../../etc/passwd" }),
            ),
            probe("absolute-host", json!({ "readFile": secret_path })),
            probe("etc-passwd", json!({ "readFile": "/etc/passwd" })),
            probe("planted-link", json!({ "readFile": "planted" })),
            probe(
                "planted-dir",
                json!({ "readFile": "planted-dir/secret.txt" }),
            ),
            probe(
                "make-link",
                json!({ "symlink": { "target": secret_path, "link": "made" } }),
            ),
            probe("follow-made", json!({ "readFile": "made" })),
            probe(
                "make-relative-link",
                json!({ "symlink": { "target": "../../..", "link": "up" } }),
            ),
            probe("follow-relative", json!({ "listDir": "up" })),
            probe(
                "write-dotdot",
                json!({ "writeFile": { "path": "../escaped.txt", "content": "x" } }),
            ),
            probe("list-root", json!({ "listDir": "/" })),
            probe("env", json!({ "env": true })),
        ],
    )
    .await;
    let out = |node: &'static str| {
        let host = &host;
        let run = run.clone();
        async move {
            host.output(&run, node, 0)
                .await
                .unwrap_or_else(|| panic!("{node} has no output"))
        }
    };
    assert_eq!(out("inside").await["content"], "hello");
    assert_eq!(out("absolute-inside").await["content"], "hello");
    for node in [
        "dotdot",
        "deep-dotdot",
        "absolute-host",
        "etc-passwd",
        "planted-link",
        "planted-dir",
        "follow-made",
        "follow-relative",
        "write-dotdot",
    ] {
        let result = out(node).await;
        assert_eq!(result["ok"], false, "{node} escaped: {result}");
        assert!(
            !result.to_string().contains("top secret"),
            "{node} leaked: {result}"
        );
    }
    assert!(!outside.path().join("escaped.txt").exists());
    assert!(
        !host
            .root
            .path()
            .parent()
            .unwrap()
            .join("escaped.txt")
            .exists()
    );
    let entries = out("list-root").await["entries"].clone();
    assert!(
        entries.as_array().unwrap().contains(&json!("inside.txt")),
        "{entries}"
    );
    assert!(
        !entries.as_array().unwrap().contains(&json!("etc")),
        "{entries}"
    );
    let env = out("env").await;
    assert_eq!(env["vars"], json!([]), "no host environment: {env}");
    assert_eq!(env["args"], json!([]), "no arguments: {env}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_guests_fail_only_their_own_task() {
    // A small memory limit keeps the memory bomb quick.
    let host = TestHost::with(|c| c.max_memory_mb = 64);
    let run = run_probes(
        &host,
        vec![
            probe("memory-bomb", json!({ "allocForever": true })),
            probe("big-but-allowed", json!({ "allocMb": 16 })),
            probe("too-big", json!({ "allocMb": 200 })),
            probe("deep-recursion", json!({ "recurse": true })),
            probe("panic", json!({ "panic": "boom" })),
            probe("busy-loop", json!({ "spin": true, "timeoutMs": 200 })),
            probe("still-fine", json!({})),
        ],
    )
    .await;
    let events = host.events(&run).await;
    let code = |node: &str| -> String {
        of_type(&events, "NodeFailed")
            .iter()
            .find(|e| e["nodeId"] == node)
            .map(|e| e["error"]["code"].as_str().unwrap().to_string())
            .unwrap_or_else(|| "none".into())
    };
    assert_eq!(code("memory-bomb"), "GUEST_MEMORY_LIMIT");
    assert_eq!(code("too-big"), "GUEST_MEMORY_LIMIT");
    assert_eq!(code("big-but-allowed"), "none");
    assert_eq!(code("deep-recursion"), "GUEST_STACK_OVERFLOW");
    assert_eq!(code("panic"), "GUEST_TRAP");
    assert_eq!(code("busy-loop"), "TASK_TIMEOUT");
    assert!(host.output(&run, "still-fine", 0).await.is_some());
    let panic = of_type(&events, "NodeOutput")
        .into_iter()
        .find(|e| e["nodeId"] == "panic" && e["stream"] == "stderr");
    assert!(
        panic.is_some_and(|e| e["text"].as_str().unwrap().contains("boom")),
        "the panic message is captured from stderr"
    );
    // The host keeps serving.
    let wf = host.install("example-hello");
    let again = host.start(&wf, json!({ "name": "after" })).await;
    assert_eq!(host.settle(&again).await.status, RunStatus::Finished);
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_output_is_captured_capped_and_streamed_as_events() {
    let host = TestHost::new();
    let run = run_probes(
        &host,
        vec![probe(
            "chatty",
            json!({ "stdout": "to stdout", "stderr": "to stderr", "emit": { "progress": 0.5 }, "log": "a log line" }),
        )],
    )
    .await;
    let events = host.events(&run).await;
    let outputs: Vec<(String, String)> = of_type(&events, "NodeOutput")
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().unwrap().to_string(),
                e["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        outputs.contains(&("stdout".into(), "to stdout\n".into())),
        "{outputs:?}"
    );
    assert!(
        outputs.contains(&("stderr".into(), "to stderr\n".into())),
        "{outputs:?}"
    );
    assert!(
        outputs.contains(&("log".into(), "a log line".into())),
        "{outputs:?}"
    );
    let emitted = outputs.iter().find(|(s, _)| s == "emit").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&emitted.1).unwrap(),
        json!({ "progress": 0.5 })
    );
    // Task events are committed before the task's NodeFinished.
    let position = |kind: &str| events.iter().position(|e| e["type"] == kind).unwrap();
    assert!(position("NodeOutput") < position("NodeFinished"));
}
