//! `approval`: a human gate between preparing and applying a change.
//!
//! Input: `{"target": "production"}` (optional; defaults to `staging`).
//!
//! * `prepare` outputs the plan, `{"plan": "deploy <target>", "steps": 3}`;
//! * `gate` parks the run until someone approves or denies (a denial fails the run); its title
//!   and summary show the plan once it exists;
//! * `apply` reads both outputs and returns `{"applied": <plan>, "approved_by": <decidedBy or
//!   null>}`.
//!
//! Shows: typed outputs between tasks, an approval with render-time details, reading the
//! decision.

use smithers_sdk::serde::{Deserialize, Serialize};
use smithers_sdk::serde_json::json;
use smithers_sdk::{ApprovalDecision, Ctx, Node, OnDeny, approval, sequence, task};

#[derive(Deserialize)]
#[serde(crate = "smithers_sdk::serde", default)]
struct Input {
    target: String,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            target: "staging".to_owned(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(crate = "smithers_sdk::serde")]
struct Plan {
    plan: String,
    steps: u32,
}

fn build(ctx: &Ctx) -> Node {
    let summary = match ctx.latest::<Plan>("prepare") {
        Ok(plan) => format!("Plan: {} ({} steps)", plan.plan, plan.steps),
        Err(_) => "The plan is being prepared.".to_owned(),
    };
    sequence([
        task("prepare", |t| {
            let input: Input = t.input()?;
            Ok(Plan {
                plan: format!("deploy {}", input.target),
                steps: 3,
            })
        }),
        approval("gate")
            .title("Apply the plan?")
            .summary(summary)
            .on_deny(OnDeny::Fail),
        task("apply", |t| {
            let plan: Plan = t.latest("prepare")?;
            let decision: ApprovalDecision = t.latest("gate")?;
            Ok(json!({ "applied": plan.plan, "approved_by": decision.decided_by }))
        }),
    ])
}

smithers_sdk::workflow!(name: "approval", build: build);

#[cfg(test)]
mod tests {
    use smithers_sdk::{FlatKind, TaskCtx};

    use super::*;

    #[test]
    fn apply_reports_the_plan_and_who_approved_it() {
        let ctx = Ctx::new(json!({"target": "prod"}));
        let plan = build(&ctx)
            .run_task(&TaskCtx::new(ctx.clone(), "prepare", 0, 1))
            .unwrap();
        assert_eq!(plan, json!({"plan": "deploy prod", "steps": 3}));

        let ctx = ctx.with_output("prepare", 0, plan).with_output(
            "gate",
            0,
            json!({"approved": true, "note": null, "decidedBy": "ada"}),
        );
        let applied = build(&ctx)
            .run_task(&TaskCtx::new(ctx, "apply", 0, 1))
            .unwrap();
        assert_eq!(
            applied,
            json!({"applied": "deploy prod", "approved_by": "ada"})
        );
    }

    #[test]
    fn the_gate_shows_the_plan_once_prepared() {
        let ctx = Ctx::new(json!({})).with_output(
            "prepare",
            0,
            json!({"plan": "deploy staging", "steps": 3}),
        );
        let nodes = build(&ctx).render(&ctx).unwrap();
        let FlatKind::Approval(gate) = &nodes[2].kind else {
            panic!("{nodes:?}")
        };
        assert_eq!(
            gate.summary.as_deref(),
            Some("Plan: deploy staging (3 steps)")
        );
        assert_eq!(gate.on_deny, OnDeny::Fail);
    }
}
