//! `loop`: refine a draft until it is good enough.
//!
//! Input: `{"target": 3, "maxIterations": 5, "failOnMax": false}` (all optional; these are the
//! defaults).
//!
//! * loop `refine` runs task `draft` once per iteration; at iteration `i` it outputs
//!   `{"iteration": i, "quality": i + 1}`;
//! * the loop is done when the latest draft's quality reaches `target`; after `maxIterations`
//!   passes without that it returns the last draft, or fails the run (`LOOP_MAX_REACHED`) if
//!   `failOnMax` is true;
//! * `final` outputs `{"final": <latest draft>}`.
//!
//! Shows: a loop with a render-time `until`, outputs keyed by iteration, the iteration a task
//! runs in.

use smithers_sdk::serde::{Deserialize, Serialize};
use smithers_sdk::serde_json::json;
use smithers_sdk::{Ctx, Node, OnMaxReached, TaskError, loop_, sequence, task};

#[derive(Deserialize)]
#[serde(crate = "smithers_sdk::serde", default, rename_all = "camelCase")]
struct Input {
    target: u32,
    max_iterations: u32,
    fail_on_max: bool,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            target: 3,
            max_iterations: 5,
            fail_on_max: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(crate = "smithers_sdk::serde")]
struct Draft {
    iteration: u32,
    quality: u32,
}

fn build(ctx: &Ctx) -> Result<Node, TaskError> {
    let input: Input = ctx.input()?;
    let target = input.target;
    let on_max = if input.fail_on_max {
        OnMaxReached::Fail
    } else {
        OnMaxReached::ReturnLast
    };
    let draft = task("draft", |t| {
        Ok(Draft {
            iteration: t.iteration(),
            quality: t.iteration() + 1,
        })
    });
    Ok(sequence([
        loop_("refine", draft)
            .until(move |ctx| {
                ctx.latest::<Draft>("draft")
                    .is_ok_and(|d| d.quality >= target)
            })
            .max_iterations(input.max_iterations)
            .on_max_reached(on_max),
        task("final", |t| {
            let draft: Draft = t.latest("draft")?;
            Ok(json!({ "final": draft }))
        }),
    ]))
}

smithers_sdk::workflow!(name: "loop", build: build);

#[cfg(test)]
mod tests {
    use smithers_sdk::{FlatKind, LoopOptions, TaskCtx};

    use super::*;

    fn loop_options(ctx: &Ctx) -> LoopOptions {
        let nodes = build(ctx).unwrap().render(ctx).unwrap();
        match &nodes[1].kind {
            FlatKind::Loop(options) => options.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drafts_improve_with_each_iteration() {
        let ctx = Ctx::new(json!({})).with_loop_iteration("refine", 2);
        let out = build(&ctx)
            .unwrap()
            .run_task(&TaskCtx::new(ctx, "draft", 2, 1))
            .unwrap();
        assert_eq!(out, json!({"iteration": 2, "quality": 3}));
    }

    #[test]
    fn done_once_the_latest_draft_reaches_the_target() {
        let mut ctx = Ctx::new(json!({"target": 2, "maxIterations": 4, "failOnMax": true}));
        assert_eq!(
            loop_options(&ctx),
            LoopOptions {
                max_iterations: 4,
                until: false,
                on_max_reached: OnMaxReached::Fail
            }
        );
        ctx = ctx.with_output("draft", 0, json!({"iteration": 0, "quality": 1}));
        assert!(!loop_options(&ctx).until);
        ctx = ctx.with_output("draft", 1, json!({"iteration": 1, "quality": 2}));
        assert!(loop_options(&ctx).until);
    }
}
