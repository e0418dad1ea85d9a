//! `fibo`: the orchestration benchmark workload.
//!
//! Input: `{"n": 10}` (optional; default 10).
//!
//! `n` sequential tasks `fibo-0` .. `fibo-<n-1>`, each computing fibo(10) iteratively and
//! outputting `{"i": i, "fibo": 55}`. The work per task is negligible, so a run measures the
//! host: render, schedule, instantiate, commit.

use std::hint::black_box;

use smithers_sdk::serde::Deserialize;
use smithers_sdk::serde_json::json;
use smithers_sdk::{Ctx, Node, TaskError, sequence, task};

#[derive(Deserialize)]
#[serde(crate = "smithers_sdk::serde", default)]
struct Input {
    n: u32,
}

impl Default for Input {
    fn default() -> Self {
        Input { n: 10 }
    }
}

/// fibo(n), iteratively.
fn fibo(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

fn build(ctx: &Ctx) -> Result<Node, TaskError> {
    let input: Input = ctx.input()?;
    Ok(sequence((0..input.n).map(|i| {
        // `black_box` keeps the compiler from folding the work into a constant.
        task(format!("fibo-{i}"), move |_| {
            Ok(json!({ "i": i, "fibo": fibo(black_box(10)) }))
        })
    })))
}

smithers_sdk::workflow!(name: "fibo", build: build);

#[cfg(test)]
mod tests {
    use smithers_sdk::TaskCtx;

    use super::*;

    #[test]
    fn n_tasks_each_computing_fibo_10() {
        let ctx = Ctx::new(json!({"n": 3}));
        let nodes = build(&ctx).unwrap().render(&ctx).unwrap();
        assert_eq!(nodes.len(), 4);
        let out = build(&ctx)
            .unwrap()
            .run_task(&TaskCtx::new(ctx, "fibo-2", 0, 1))
            .unwrap();
        assert_eq!(out, json!({"i": 2, "fibo": 55}));
    }

    #[test]
    fn ten_tasks_by_default() {
        let ctx = Ctx::new(json!(null));
        assert_eq!(build(&ctx).unwrap().render(&ctx).unwrap().len(), 11);
    }
}
