//! `fixture-scripted`: a workflow whose tree is described by its run input, so that host tests
//! can script any shape (and any task behaviour, good or bad) without a new guest crate.
//! The format is documented in README.md beside this crate.

mod run;
mod spec;

use std::rc::Rc;

use smithers_sdk::serde_json::Value;
use smithers_sdk::{
    Backoff, Ctx, Node, OnDeny, OnMaxReached, TaskError, approval, loop_, parallel, sequence, task,
    wait_for_signal,
};

use crate::spec::{
    AppendLineSpec, AppendSequenceSpec, BackoffSpec, OnDenySpec, OnMaxSpec, Script, Spec, TaskSpec,
};

fn build(ctx: &Ctx) -> Result<Node, TaskError> {
    let script: Script = ctx.input()?;
    // A root `if` without `else` whose condition is false leaves nothing to run.
    Ok(node(script.root, ctx).unwrap_or_else(|| sequence([])))
}

/// The node for `spec`; `None` for an `if` whose chosen branch is absent.
fn node(spec: Spec, ctx: &Ctx) -> Option<Node> {
    Some(match spec {
        Spec::Task(spec) => scripted_task(*spec),
        Spec::Sequence(children) => sequence(nodes(children, ctx)),
        Spec::Parallel(spec) => {
            let mut group = parallel(nodes(spec.children, ctx));
            if let Some(max) = spec.max {
                group = group.max_concurrency(max);
            }
            if let Some(id) = spec.id {
                group = group.id(id);
            }
            group
        }
        Spec::Loop(spec) => {
            let (until_node, path, equals) = (spec.until_node, spec.until_path, spec.until_equals);
            loop_(spec.id, sequence(nodes(spec.children, ctx)))
                .max_iterations(spec.max)
                .on_max_reached(match spec.on_max {
                    OnMaxSpec::ReturnLast => OnMaxReached::ReturnLast,
                    OnMaxSpec::Fail => OnMaxReached::Fail,
                })
                .until(move |ctx| {
                    until_node
                        .as_deref()
                        .is_some_and(|node| latest_at(ctx, node, &path).as_ref() == Some(&equals))
                })
        }
        Spec::Approval(spec) => {
            let mut gate = approval(spec.id)
                .on_deny(match spec.on_deny {
                    OnDenySpec::Fail => OnDeny::Fail,
                    OnDenySpec::Continue => OnDeny::Continue,
                    OnDenySpec::Skip => OnDeny::Skip,
                })
                .allowed_scopes(spec.allowed_scopes)
                .allowed_users(spec.allowed_users);
            if let Some(title) = spec.title {
                gate = gate.title(title);
            }
            if let Some(summary) = spec.summary {
                gate = gate.summary(summary);
            }
            if let Some(meta) = spec.meta {
                gate = gate.meta(meta);
            }
            gate
        }
        Spec::Signal(spec) => wait_for_signal(spec.id, spec.name),
        Spec::If(spec) => {
            let branch = if latest_at(ctx, &spec.node, &spec.path).as_ref() == Some(&spec.equals) {
                Some(spec.then)
            } else {
                spec.otherwise
            };
            return branch.and_then(|branch| node(branch, ctx));
        }
        Spec::AppendSequence(spec) => append_sequence(spec),
        Spec::RenderSpin(true) => run::spin(),
        Spec::RenderSpin(false) => return None,
    })
}

fn nodes(specs: Vec<Spec>, ctx: &Ctx) -> Vec<Node> {
    specs
        .into_iter()
        .filter_map(|spec| node(spec, ctx))
        .collect()
}

/// The value at JSON pointer `path` in the latest output of `node`.
fn latest_at(ctx: &Ctx, node: &str, path: &str) -> Option<Value> {
    ctx.latest::<Value>(node).ok()?.pointer(path).cloned()
}

fn scripted_task(spec: TaskSpec) -> Node {
    let spec = Rc::new(spec);
    let mut node = task(spec.id.clone(), {
        let spec = Rc::clone(&spec);
        move |t| run::run(&spec, t)
    });
    if let Some(retries) = spec.retries {
        node = node.retries(retries);
    }
    if spec.backoff.is_some() || spec.initial_delay_ms.is_some() {
        let backoff = match spec.backoff.unwrap_or(BackoffSpec::Exponential) {
            BackoffSpec::Fixed => Backoff::Fixed,
            BackoffSpec::Linear => Backoff::Linear,
            BackoffSpec::Exponential => Backoff::Exponential,
        };
        node = node.backoff(backoff, spec.initial_delay_ms.unwrap_or(1000));
    }
    if let Some(timeout_ms) = spec.timeout_ms {
        node = node.timeout_ms(timeout_ms);
    }
    if spec.continue_on_fail {
        node = node.continue_on_fail();
    }
    if let Some(label) = &spec.label {
        node = node.label(label.clone());
    }
    if let Some(meta) = &spec.meta {
        node = node.meta(meta.clone());
    }
    node.skip_if(spec.skip)
}

/// `count` tasks, each appending its id as a line to `path`, then sleeping.
fn append_sequence(spec: AppendSequenceSpec) -> Node {
    sequence((0..spec.count).map(|i| {
        scripted_task(TaskSpec {
            id: format!("{}{i}", spec.id_prefix),
            append_line: Some(AppendLineSpec {
                path: spec.path.clone(),
                line: None,
                with_attempt: false,
            }),
            sleep_ms: Some(spec.sleep_ms),
            ..TaskSpec::default()
        })
    }))
}

smithers_sdk::workflow!(name: "scripted", build: build);

#[cfg(test)]
mod tests;
