//! `signal`: wait for an external event.
//!
//! Input: none needed.
//!
//! * `prepare` outputs `{"ready": true}`;
//! * `wait` parks the run until a signal named `go` arrives; the signal's payload becomes its
//!   output;
//! * `use` outputs `{"received": <the payload>}`.
//!
//! Shows: `wait_for_signal` and reading a signal's payload.

use smithers_sdk::serde_json::{Value, json};
use smithers_sdk::{Ctx, Node, sequence, task, wait_for_signal};

fn build(_ctx: &Ctx) -> Node {
    sequence([
        task("prepare", |_| Ok(json!({ "ready": true }))),
        wait_for_signal("wait", "go"),
        task("use", |t| {
            let payload: Value = t.latest("wait")?;
            Ok(json!({ "received": payload }))
        }),
    ])
}

smithers_sdk::workflow!(name: "signal", build: build);

#[cfg(test)]
mod tests {
    use smithers_sdk::TaskCtx;

    use super::*;

    #[test]
    fn use_returns_the_signal_payload() {
        let ctx = Ctx::new(json!({})).with_output("wait", 0, json!({"n": 1}));
        let out = build(&ctx)
            .run_task(&TaskCtx::new(ctx, "use", 0, 1))
            .unwrap();
        assert_eq!(out, json!({"received": {"n": 1}}));
    }
}
