//! `parallel`: fan out, then join.
//!
//! Input: `{"sleepMs": 200}` (optional; default 200).
//!
//! * `work-0` .. `work-3` run in a parallel group, at most 2 at a time; each sleeps `sleepMs`
//!   and outputs its index squared (`0`, `1`, `4`, `9`);
//! * `join` outputs `{"sum": 14}`.
//!
//! Shows: a generated list of tasks, `max_concurrency`, reading sibling outputs. With the
//! default input the group takes about 2 × 200 ms.

use std::time::Duration;

use smithers_sdk::serde::Deserialize;
use smithers_sdk::serde_json::json;
use smithers_sdk::{Ctx, Node, TaskError, parallel, sequence, task};

const WORKERS: u64 = 4;

#[derive(Deserialize)]
#[serde(crate = "smithers_sdk::serde", default, rename_all = "camelCase")]
struct Input {
    sleep_ms: u64,
}

impl Default for Input {
    fn default() -> Self {
        Input { sleep_ms: 200 }
    }
}

fn build(_ctx: &Ctx) -> Node {
    let workers = (0..WORKERS).map(|i| {
        task(format!("work-{i}"), move |t| {
            let input: Input = t.input()?;
            std::thread::sleep(Duration::from_millis(input.sleep_ms));
            Ok(i * i)
        })
    });
    sequence([
        parallel(workers).max_concurrency(2),
        task("join", |t| {
            let sum = (0..WORKERS)
                .map(|i| t.latest::<u64>(&format!("work-{i}")))
                .sum::<Result<u64, TaskError>>()?;
            Ok(json!({ "sum": sum }))
        }),
    ])
}

smithers_sdk::workflow!(name: "parallel", build: build);

#[cfg(test)]
mod tests {
    use smithers_sdk::{FlatKind, TaskCtx};

    use super::*;

    #[test]
    fn four_workers_at_most_two_at_once_then_a_join() {
        let ctx = Ctx::new(json!({}));
        let nodes = build(&ctx).render(&ctx).unwrap();
        assert_eq!(nodes[1].kind, FlatKind::Parallel(Some(2)));
        let ids: Vec<_> = nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "$seq:0", "$par:0.0", "work-0", "work-1", "work-2", "work-3", "join"
            ]
        );
    }

    #[test]
    fn workers_square_their_index_and_join_sums() {
        let mut ctx = Ctx::new(json!({"sleepMs": 0}));
        for i in 0..WORKERS {
            let id = format!("work-{i}");
            let out = build(&ctx)
                .run_task(&TaskCtx::new(ctx.clone(), &id, 0, 1))
                .unwrap();
            assert_eq!(out, json!(i * i));
            ctx = ctx.with_output(id, 0, out);
        }
        let sum = build(&ctx)
            .run_task(&TaskCtx::new(ctx, "join", 0, 1))
            .unwrap();
        assert_eq!(sum, json!({"sum": 14}));
    }
}
