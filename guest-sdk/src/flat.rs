//! From a built tree to what the host receives: a flat, pre-order list of nodes with parent
//! indices, containers given generated ids, loop predicates evaluated, and the tree checked.
//! Also the reverse lookup `run-task` needs: the closure of a task, by id.
//!
//! Everything here is plain Rust (no bindings), so it is tested natively and authors can test
//! their own trees with [`Node::render`] and [`Node::run_task`].

use std::collections::HashSet;

use serde_json::Value;

use crate::node::{ApprovalOptions, Kind, LoopOptions, TaskFn, TaskOptions};
use crate::{Ctx, Node, TaskCtx, TaskError};

/// One node of the flat list sent to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatNode {
    /// Stable, unique id.
    pub id: String,
    /// Index of the parent in the list; `None` for the root.
    pub parent: Option<u32>,
    /// Kind and options.
    pub kind: FlatKind,
}

/// The kind of a [`FlatNode`] and its options.
#[derive(Debug, Clone, PartialEq)]
pub enum FlatKind {
    /// A task.
    Task(TaskOptions),
    /// An approval.
    Approval(ApprovalOptions),
    /// A wait for the signal with this name.
    WaitForSignal(String),
    /// A sequence.
    Sequence,
    /// A parallel group, with its maximum concurrency.
    Parallel(Option<u32>),
    /// A loop, with `until` evaluated.
    Loop(LoopOptions),
}

impl Node {
    /// The tree as the host receives it: pre-order, parents by index, containers given
    /// generated ids, each loop's `until` evaluated against `ctx`.
    ///
    /// Fails (with a message naming the node) on an empty, reserved (`$...`) or duplicate id,
    /// a loop inside a loop (not supported in this version), a loop with `max_iterations`
    /// 0, or an option chained onto a node of the wrong kind.
    pub fn render(&self, ctx: &Ctx) -> Result<Vec<FlatNode>, String> {
        let mut flat = Flattener {
            ctx,
            nodes: Vec::new(),
            path: String::from("0"),
        };
        flat.visit(self, None, None)?;
        // Checked once at the end with borrowed ids: render runs on every
        // step, and cloning every id into a set adds up.
        let mut seen = HashSet::with_capacity(flat.nodes.len());
        if let Some(dup) = flat.nodes.iter().find(|n| !seen.insert(n.id.as_str())) {
            return Err(format!(
                "duplicate node id `{}`: every node needs a unique id",
                dup.id
            ));
        }
        Ok(flat.nodes)
    }

    /// Runs the task `ctx.node_id()` of this tree and returns its output. This is what the
    /// host's `run-task` does after rebuilding the tree.
    pub fn run_task(&self, ctx: &TaskCtx) -> Result<Value, TaskError> {
        let text = self.run_task_json(ctx)?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Runs the task `ctx.node_id()` and returns its output as JSON text.
    pub(crate) fn run_task_json(&self, ctx: &TaskCtx) -> Result<String, TaskError> {
        let run = self.find_task(ctx.node_id()).ok_or_else(|| {
            TaskError::new(format!("the workflow has no task `{}`", ctx.node_id()))
                .code("TASK_NOT_FOUND")
                .not_retryable()
        })?;
        run(ctx)
    }

    fn find_task(&self, id: &str) -> Option<&TaskFn> {
        match &self.kind {
            Kind::Task { run, .. } => (self.id.as_deref() == Some(id)).then_some(run),
            Kind::Sequence(children) | Kind::Parallel { children, .. } => {
                children.iter().find_map(|child| child.find_task(id))
            }
            Kind::Loop { body, .. } => body.find_task(id),
            Kind::Approval(_) | Kind::WaitForSignal(_) => None,
        }
    }
}

struct Flattener<'c> {
    ctx: &'c Ctx,
    nodes: Vec<FlatNode>,
    /// Position of the node being visited (`0`, `0.1`, ...), used to name
    /// containers; one buffer extended and truncated along the walk.
    path: String,
}

impl Flattener<'_> {
    /// Appends `node` and its descendants. `in_loop` is the index (in
    /// `nodes`) of the enclosing loop, if any.
    fn visit(
        &mut self,
        node: &Node,
        parent: Option<u32>,
        in_loop: Option<usize>,
    ) -> Result<(), String> {
        let id = match (&node.id, &node.kind) {
            (Some(id), _) => id.clone(),
            (None, Kind::Sequence(_)) => format!("$seq:{}", self.path),
            (None, Kind::Parallel { .. }) => format!("$par:{}", self.path),
            // Only containers are built without an id.
            (None, kind) => return Err(format!("{} has no id", kind.described())),
        };
        if let Some((method, applies_to)) = node.misuse {
            return Err(format!(
                "`.{method}()` applies to {applies_to}, but `{id}` is {}",
                node.kind.described()
            ));
        }
        if id.is_empty() {
            return Err(format!("{} has an empty id", node.kind.described()));
        }
        if node.id.is_some() && id.starts_with('$') {
            return Err(format!(
                "node id `{id}`: ids starting with `$` are reserved for generated ids"
            ));
        }

        let index = self.nodes.len();
        let wire_index = u32::try_from(index).map_err(|_| "the tree is too large".to_owned())?;
        let (kind, children): (FlatKind, &[Node]) = match &node.kind {
            Kind::Task { options, .. } => (FlatKind::Task(options.clone()), &[]),
            Kind::Approval(options) => (FlatKind::Approval(options.clone()), &[]),
            Kind::WaitForSignal(signal) => (FlatKind::WaitForSignal(signal.clone()), &[]),
            Kind::Sequence(children) => (FlatKind::Sequence, children),
            Kind::Parallel {
                max_concurrency,
                children,
            } => (FlatKind::Parallel(*max_concurrency), children),
            Kind::Loop {
                body,
                max_iterations,
                on_max_reached,
                until,
            } => {
                if let Some(outer) = in_loop {
                    return Err(format!(
                        "loop `{id}` is inside loop `{}`: nested loops are not supported in \
                         this version of smithers",
                        self.nodes[outer].id
                    ));
                }
                if *max_iterations == 0 {
                    return Err(format!(
                        "loop `{id}` has max_iterations 0; it must be at least 1"
                    ));
                }
                let options = LoopOptions {
                    max_iterations: *max_iterations,
                    until: until.as_ref().is_some_and(|until| until(self.ctx)),
                    on_max_reached: *on_max_reached,
                };
                (FlatKind::Loop(options), std::slice::from_ref(&**body))
            }
        };
        self.nodes.push(FlatNode { id, parent, kind });

        let in_loop = match node.kind {
            Kind::Loop { .. } => Some(index),
            _ => in_loop,
        };
        let path_len = self.path.len();
        for (position, child) in children.iter().enumerate() {
            use std::fmt::Write;
            let _ = write!(self.path, ".{position}");
            self.visit(child, Some(wire_index), in_loop)?;
            self.path.truncate(path_len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        Backoff, OnDeny, OnMaxReached, approval, loop_, parallel, sequence, task, wait_for_signal,
    };

    fn ok(_: &TaskCtx) -> Result<u32, TaskError> {
        Ok(1)
    }

    fn shape(nodes: &[FlatNode]) -> Vec<(String, Option<u32>)> {
        nodes.iter().map(|n| (n.id.clone(), n.parent)).collect()
    }

    #[test]
    fn tree_flattens_in_pre_order_with_parent_indices_and_generated_container_ids() {
        let tree = sequence([
            task("a", ok),
            parallel([task("b", ok), task("c", ok)]).max_concurrency(2),
            loop_("l", sequence([task("d", ok), approval("gate")])),
            wait_for_signal("w", "go"),
        ]);
        let nodes = tree.render(&Ctx::new(json!({}))).unwrap();
        assert_eq!(
            shape(&nodes),
            [
                ("$seq:0", None),
                ("a", Some(0)),
                ("$par:0.1", Some(0)),
                ("b", Some(2)),
                ("c", Some(2)),
                ("l", Some(0)),
                ("$seq:0.2.0", Some(5)),
                ("d", Some(6)),
                ("gate", Some(6)),
                ("w", Some(0)),
            ]
            .map(|(id, parent)| (id.to_owned(), parent))
        );
        assert_eq!(nodes[2].kind, FlatKind::Parallel(Some(2)));
        assert_eq!(nodes[9].kind, FlatKind::WaitForSignal("go".into()));
    }

    #[test]
    fn explicit_container_ids_replace_generated_ones() {
        let tree = sequence([parallel([task("a", ok)]).id("fan-out")]).id("main");
        let nodes = tree.render(&Ctx::new(json!({}))).unwrap();
        assert_eq!(nodes[0].id, "main");
        assert_eq!(nodes[1].id, "fan-out");
    }

    #[test]
    fn options_reach_the_flat_nodes() {
        let tree = sequence([
            task("t", ok)
                .retries(3)
                .backoff(Backoff::Linear, 50)
                .timeout_ms(900)
                .continue_on_fail()
                .skip_if(true)
                .label("T")
                .meta(json!({"k": 1})),
            approval("g")
                .title("Title")
                .summary("Sum")
                .on_deny(OnDeny::Skip)
                .allowed_scopes(["deploy"])
                .allowed_users(vec!["ada".to_owned()])
                .meta(json!(2)),
        ]);
        let nodes = tree.render(&Ctx::new(json!({}))).unwrap();
        assert_eq!(
            nodes[1].kind,
            FlatKind::Task(TaskOptions {
                retries: 3,
                backoff: Backoff::Linear,
                initial_delay_ms: 50,
                timeout_ms: Some(900),
                continue_on_fail: true,
                skip: true,
                label: Some("T".into()),
                meta: Some(json!({"k": 1})),
            })
        );
        assert_eq!(
            nodes[2].kind,
            FlatKind::Approval(ApprovalOptions {
                title: Some("Title".into()),
                summary: Some("Sum".into()),
                on_deny: OnDeny::Skip,
                allowed_scopes: vec!["deploy".into()],
                allowed_users: vec!["ada".into()],
                meta: Some(json!(2)),
            })
        );
    }

    #[test]
    fn loop_until_is_evaluated_against_the_context() {
        let tree = || {
            loop_("l", task("d", ok))
                .until(|ctx| ctx.latest::<u32>("d").is_ok_and(|v| v >= 3))
                .max_iterations(7)
                .on_max_reached(OnMaxReached::Fail)
        };
        let before = tree().render(&Ctx::new(json!({}))).unwrap();
        assert_eq!(
            before[0].kind,
            FlatKind::Loop(LoopOptions {
                max_iterations: 7,
                until: false,
                on_max_reached: OnMaxReached::Fail
            })
        );
        let ctx = Ctx::new(json!({}))
            .with_output("d", 0, json!(1))
            .with_output("d", 1, json!(3));
        let after = tree().render(&ctx).unwrap();
        assert!(matches!(
            after[0].kind,
            FlatKind::Loop(LoopOptions { until: true, .. })
        ));
    }

    #[test]
    fn invalid_trees_are_render_errors() {
        let ctx = Ctx::new(json!({}));
        let cases = [
            (
                sequence([task("a", ok), task("a", ok)]),
                "duplicate node id `a`",
            ),
            (sequence([task("", ok)]), "empty id"),
            (sequence([task("$x", ok)]), "reserved"),
            (
                loop_("outer", sequence([loop_("inner", task("a", ok))])),
                "nested loops are not supported",
            ),
            (
                loop_("l", task("a", ok)).max_iterations(0),
                "max_iterations 0",
            ),
            (
                sequence([approval("g").retries(2)]),
                "`.retries()` applies to task nodes, but `g` is an approval node",
            ),
            (
                sequence([task("t", ok).title("x")]),
                "`.title()` applies to approval nodes",
            ),
            (
                sequence([]).until(|_| true),
                "`.until()` applies to loop nodes, but `$seq:0`",
            ),
        ];
        for (tree, expected) in cases {
            let err = tree.render(&ctx).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn run_task_finds_the_closure_by_id_anywhere_in_the_tree() {
        let tree = sequence([
            task("a", |_| Ok("a")),
            loop_(
                "l",
                parallel([task("b", |t: &TaskCtx| {
                    Ok(json!({"it": t.iteration(), "attempt": t.attempt()}))
                })]),
            ),
        ]);
        let ctx = TaskCtx::new(Ctx::new(json!({})), "b", 4, 2);
        assert_eq!(tree.run_task(&ctx).unwrap(), json!({"it": 4, "attempt": 2}));
        let missing = TaskCtx::new(Ctx::new(json!({})), "l", 0, 1);
        let err = tree.run_task(&missing).unwrap_err();
        assert_eq!(err.code, "TASK_NOT_FOUND");
        assert!(!err.retryable);
    }

    #[test]
    fn task_errors_pass_through_unchanged() {
        let tree = task("a", |_| -> Result<(), TaskError> {
            Err(TaskError::new("no").code("X"))
        });
        let err = tree
            .run_task(&TaskCtx::new(Ctx::new(json!({})), "a", 0, 1))
            .unwrap_err();
        assert_eq!((err.code.as_str(), err.message.as_str()), ("X", "no"));
    }

    #[test]
    fn a_value_that_does_not_serialize_is_invalid_output() {
        use std::collections::HashMap;
        let tree = task("a", |_| Ok(HashMap::from([((1, 2), 3)])));
        let err = tree
            .run_task(&TaskCtx::new(Ctx::new(json!({})), "a", 0, 1))
            .unwrap_err();
        assert_eq!(err.code, "INVALID_OUTPUT");
    }
}
