use smithers_sdk::serde_json::json;
use smithers_sdk::{FlatKind, FlatNode, LoopOptions, TaskCtx};

use super::*;

fn render(ctx: &Ctx) -> Result<Vec<FlatNode>, String> {
    build(ctx).map_err(|e| e.to_string())?.render(ctx)
}

fn ids(ctx: &Ctx) -> Vec<String> {
    render(ctx).unwrap().into_iter().map(|n| n.id).collect()
}

fn run_task(ctx: &Ctx, id: &str, iteration: u32, attempt: u32) -> Result<Value, TaskError> {
    build(ctx)
        .unwrap()
        .run_task(&TaskCtx::new(ctx.clone(), id, iteration, attempt))
}

#[test]
fn every_node_kind_renders() {
    let ctx = Ctx::new(json!({"root": {"sequence": [
        {"task": {"id": "a", "retries": 2, "backoff": "linear", "initialDelayMs": 5, "timeoutMs": 100,
                  "continueOnFail": true, "skip": true, "label": "A", "meta": {"m": 1}}},
        {"parallel": {"max": 2, "children": [{"task": {"id": "b"}}, {"task": {"id": "c"}}]}},
        {"loop": {"id": "l", "max": 3, "onMax": "fail", "children": [{"task": {"id": "d"}}]}},
        {"approval": {"id": "gate", "onDeny": "continue", "title": "T", "allowedScopes": ["s"], "allowedUsers": ["u"]}},
        {"signal": {"id": "w", "name": "go"}},
        {"appendSequence": {"count": 2, "path": "lines.txt"}}
    ]}}));
    let nodes = render(&ctx).unwrap();
    let ids: Vec<_> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "$seq:0",
            "a",
            "$par:0.1",
            "b",
            "c",
            "l",
            "$seq:0.2.0",
            "d",
            "gate",
            "w",
            "$seq:0.5",
            "step-0",
            "step-1"
        ]
    );
    let FlatKind::Task(a) = &nodes[1].kind else {
        panic!()
    };
    assert_eq!(
        (a.retries, a.backoff, a.initial_delay_ms, a.timeout_ms),
        (2, Backoff::Linear, 5, Some(100))
    );
    assert!(a.continue_on_fail && a.skip);
    assert_eq!(nodes[2].kind, FlatKind::Parallel(Some(2)));
    assert_eq!(
        nodes[5].kind,
        FlatKind::Loop(LoopOptions {
            max_iterations: 3,
            until: false,
            on_max_reached: OnMaxReached::Fail
        })
    );
    let FlatKind::Approval(gate) = &nodes[8].kind else {
        panic!()
    };
    assert_eq!(gate.on_deny, OnDeny::Continue);
    assert_eq!(nodes[9].kind, FlatKind::WaitForSignal("go".into()));
}

#[test]
fn typos_and_bad_trees_are_render_errors() {
    let typo = Ctx::new(json!({"root": {"task": {"id": "a", "retires": 2}}}));
    assert!(
        render(&typo)
            .unwrap_err()
            .contains("unknown field `retires`")
    );
    let dup =
        Ctx::new(json!({"root": {"sequence": [{"task": {"id": "a"}}, {"task": {"id": "a"}}]}}));
    assert!(render(&dup).unwrap_err().contains("duplicate node id `a`"));
    assert!(
        render(&Ctx::new(json!({})))
            .unwrap_err()
            .contains("INVALID_INPUT")
    );
}

#[test]
fn if_branches_on_a_committed_output() {
    let script = json!({"root": {"sequence": [
        {"task": {"id": "a", "output": {"x": 1}}},
        {"if": {"node": "a", "path": "/x", "equals": 1, "then": {"task": {"id": "yes"}}, "else": {"task": {"id": "no"}}}},
        {"if": {"node": "a", "path": "/x", "equals": 2, "then": {"task": {"id": "never"}}}}
    ]}});
    assert_eq!(ids(&Ctx::new(script.clone())), ["$seq:0", "a", "no"]);
    let done = Ctx::new(script).with_output("a", 0, json!({"x": 1}));
    assert_eq!(ids(&done), ["$seq:0", "a", "yes"]);
    let absent_root =
        Ctx::new(json!({"root": {"if": {"node": "a", "then": {"task": {"id": "t"}}}}}));
    assert_eq!(ids(&absent_root), ["$seq:0"]);
}

#[test]
fn render_spin_false_renders_nothing_and_repeat_is_accepted() {
    // `renderSpin: true` never returns, so only its off state is rendered here;
    // the host tests exercise the spin against the render deadline.
    let script = json!({"root": {"sequence": [
        {"task": {"id": "a", "log": "x", "repeat": 3}},
        {"renderSpin": false}
    ]}});
    let ctx = Ctx::new(script);
    assert_eq!(ids(&ctx), ["$seq:0", "a"]);
    assert!(run_task(&ctx, "a", 0, 1).is_ok());
}

#[test]
fn loop_is_done_when_the_until_node_has_the_value() {
    let script = json!({"root": {"loop": {"id": "l", "untilNode": "t", "untilPath": "/done",
        "children": [{"task": {"id": "t", "doneAtIteration": 2}}]}}});
    let until = |ctx: &Ctx| match &render(ctx).unwrap()[0].kind {
        FlatKind::Loop(options) => options.until,
        other => panic!("{other:?}"),
    };
    let ctx = Ctx::new(script);
    assert!(!until(&ctx));
    let out = run_task(&ctx, "t", 1, 1).unwrap();
    assert_eq!(
        out,
        json!({"node": "t", "iteration": 1, "attempt": 1, "done": false})
    );
    let ctx = ctx.with_output("t", 1, out);
    assert!(!until(&ctx));
    let out = run_task(&ctx, "t", 2, 1).unwrap();
    assert!(until(&ctx.with_output("t", 2, out)));

    let never =
        Ctx::new(json!({"root": {"loop": {"id": "l", "children": [{"task": {"id": "t"}}]}}}))
            .with_output("t", 0, json!(true));
    assert!(!until(&never));
}

#[test]
fn planned_failures_and_retryability() {
    let ctx = Ctx::new(json!({"root": {"sequence": [
        {"task": {"id": "flaky", "failAttempts": 2}},
        {"task": {"id": "broken", "fail": "nope", "notRetryable": true}}
    ]}}));
    let err = run_task(&ctx, "flaky", 0, 2).unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        ("TASK_FAILED", "planned failure on attempt 2")
    );
    assert!(err.retryable);
    assert_eq!(
        run_task(&ctx, "flaky", 0, 3).unwrap(),
        json!({"node": "flaky", "iteration": 0, "attempt": 3})
    );
    let err = run_task(&ctx, "broken", 0, 1).unwrap_err();
    assert_eq!(err.message, "nope");
    assert!(!err.retryable);
}

#[test]
fn outputs_and_echoes() {
    let ctx = Ctx::new(json!({"root": {"sequence": [
        {"task": {"id": "a", "output": {"v": 1}}},
        {"task": {"id": "b", "echoOutputs": ["a", "zzz"]}},
        {"task": {"id": "c", "output": 7, "echoOutputs": ["a"]}}
    ]}}))
    .with_output("a", 0, json!({"v": 1}));
    assert_eq!(run_task(&ctx, "a", 0, 1).unwrap(), json!({"v": 1}));
    assert_eq!(
        run_task(&ctx, "b", 0, 1).unwrap(),
        json!({"node": "b", "iteration": 0, "attempt": 1, "seen": {"a": {"v": 1}, "zzz": null}})
    );
    assert_eq!(
        run_task(&ctx, "c", 0, 1).unwrap(),
        json!({"output": 7, "seen": {"a": {"v": 1}}})
    );
}

#[test]
fn file_behaviours_report_instead_of_failing() {
    let dir = std::env::temp_dir().join(format!("fixture-scripted-{}", std::process::id()));
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let ctx = Ctx::new(json!({"root": {"sequence": [
        {"task": {"id": "write", "writeFile": {"path": path("sub/f.txt"), "content": "hi"}}},
        {"task": {"id": "read", "readFile": path("sub/f.txt")}},
        {"task": {"id": "link", "symlink": {"target": path("sub/f.txt"), "link": path("l.txt")}}},
        {"task": {"id": "list", "listDir": path("")}},
        {"task": {"id": "missing", "readFile": path("nope.txt")}},
        {"task": {"id": "append", "appendLine": {"path": path("lines.txt"), "withAttempt": true}}},
        {"task": {"id": "bash", "bash": {"command": "true"}}}
    ]}}));
    assert_eq!(run_task(&ctx, "write", 0, 1).unwrap(), json!({"ok": true}));
    assert_eq!(
        run_task(&ctx, "read", 0, 1).unwrap(),
        json!({"ok": true, "content": "hi"})
    );
    assert_eq!(run_task(&ctx, "link", 0, 1).unwrap(), json!({"ok": true}));
    assert_eq!(
        run_task(&ctx, "list", 0, 1).unwrap(),
        json!({"ok": true, "entries": ["l.txt", "sub"]})
    );
    let missing = run_task(&ctx, "missing", 0, 1).unwrap();
    assert_eq!(missing["ok"], json!(false));
    assert!(missing["error"].is_string());
    run_task(&ctx, "append", 0, 1).unwrap();
    run_task(&ctx, "append", 0, 2).unwrap();
    assert_eq!(
        std::fs::read_to_string(path("lines.txt")).unwrap(),
        "append 1\nappend 2\n"
    );
    // Natively there is no host: the tool error's code becomes the task error's code.
    assert_eq!(
        run_task(&ctx, "bash", 0, 1).unwrap_err().code,
        "TOOL_UNAVAILABLE"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn alloc_mb_allocates_and_still_returns() {
    let ctx = Ctx::new(json!({"root": {"task": {"id": "a", "allocMb": 2, "output": "ok"}}}));
    assert_eq!(run_task(&ctx, "a", 0, 1).unwrap(), json!("ok"));
}
