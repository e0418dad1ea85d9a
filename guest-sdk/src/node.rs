//! The tree builders. A workflow is a function from [`Ctx`] to a [`Node`]; a node is built by
//! one of the free functions here and refined with chained methods.
//!
//! Every builder returns the same type, [`Node`], so that children of different kinds sit in
//! one array (`sequence([task(..), approval(..)])`) and a branch is a plain `if`. The price is
//! that an option can be chained onto a node of the wrong kind (`approval(..).retries(2)`);
//! that is reported by `render` as an error naming the node, never silently ignored.

use serde::Serialize;
use serde_json::Value;

use crate::{Ctx, TaskCtx, TaskError};

/// A task's closure, with its value already serialized to JSON text.
pub(crate) type TaskFn = Box<dyn Fn(&TaskCtx) -> Result<String, TaskError>>;
/// A loop's `until` predicate.
pub(crate) type UntilFn = Box<dyn Fn(&Ctx) -> bool>;

/// One node of a workflow tree, built by [`task`], [`sequence`], [`parallel`], [`loop_`],
/// [`approval`] or [`wait_for_signal`].
///
/// The chained methods each apply to some kinds only (their docs say which); chaining one
/// onto another kind makes `render` fail with a message naming the node.
#[must_use = "a node does nothing until it is part of the tree the build function returns"]
pub struct Node {
    pub(crate) id: Option<String>,
    pub(crate) kind: Kind,
    /// The first option chained onto a node of the wrong kind: (method, kinds it applies to).
    pub(crate) misuse: Option<(&'static str, &'static str)>,
}

pub(crate) enum Kind {
    Task {
        options: TaskOptions,
        run: TaskFn,
    },
    Approval(ApprovalOptions),
    WaitForSignal(String),
    Sequence(Vec<Node>),
    Parallel {
        max_concurrency: Option<u32>,
        children: Vec<Node>,
    },
    Loop {
        body: Box<Node>,
        max_iterations: u32,
        on_max_reached: OnMaxReached,
        until: Option<UntilFn>,
    },
}

impl Kind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Kind::Task { .. } => "task",
            Kind::Approval(_) => "approval",
            Kind::WaitForSignal(_) => "wait-for-signal",
            Kind::Sequence(_) => "sequence",
            Kind::Parallel { .. } => "parallel",
            Kind::Loop { .. } => "loop",
        }
    }

    /// The kind's name with its article, for messages: "an approval node".
    pub(crate) fn described(&self) -> String {
        let name = self.name();
        let article = if name.starts_with('a') { "an" } else { "a" };
        format!("{article} {name} node")
    }
}

/// How the delay between two attempts of a task grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backoff {
    /// Always the initial delay.
    Fixed,
    /// `initial * n` before attempt n + 1.
    Linear,
    /// `initial * 2^(n-1)` before attempt n + 1 (the default).
    #[default]
    Exponential,
}

/// What a loop does when it reaches its maximum iterations and `until` is still false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMaxReached {
    /// Finish the loop; the last iteration's outputs stand (the default).
    #[default]
    ReturnLast,
    /// Fail the run with `LOOP_MAX_REACHED`.
    Fail,
}

/// What a denied approval does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDeny {
    /// The approval node fails, and with it the run (the default).
    #[default]
    Fail,
    /// The node finishes with the negative decision as its output.
    Continue,
    /// The node is marked skipped; the run goes on.
    Skip,
}

/// Options of a task node, as sent to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// Extra attempts after the first one fails (default 0).
    pub retries: u32,
    /// Growth of the delay between attempts (default exponential).
    pub backoff: Backoff,
    /// Delay before the first retry, in milliseconds (default 1000).
    pub initial_delay_ms: u64,
    /// Wall-clock limit of one attempt, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// A failure of this task does not fail the run.
    pub continue_on_fail: bool,
    /// The task is skipped.
    pub skip: bool,
    /// Display label.
    pub label: Option<String>,
    /// Arbitrary metadata, stored with each attempt.
    pub meta: Option<Value>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            retries: 0,
            backoff: Backoff::Exponential,
            initial_delay_ms: 1000,
            timeout_ms: None,
            continue_on_fail: false,
            skip: false,
            label: None,
            meta: None,
        }
    }
}

/// Options of a loop node, as sent to the host (with `until` already evaluated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopOptions {
    /// Upper bound of iterations.
    pub max_iterations: u32,
    /// The loop is done.
    pub until: bool,
    /// Behaviour at `max_iterations`.
    pub on_max_reached: OnMaxReached,
}

/// Options of an approval node, as sent to the host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApprovalOptions {
    /// Title shown to whoever decides.
    pub title: Option<String>,
    /// Longer explanation shown to whoever decides.
    pub summary: Option<String>,
    /// What a denial does.
    pub on_deny: OnDeny,
    /// Scopes allowed to decide (empty: anyone who may submit approvals).
    pub allowed_scopes: Vec<String>,
    /// Users allowed to decide (empty: anyone who may submit approvals).
    pub allowed_users: Vec<String>,
    /// Arbitrary metadata, included in the approval request.
    pub meta: Option<Value>,
}

/// A task: runs `run` when the host schedules it, and its value (any [`Serialize`]) becomes
/// the node's output.
///
/// The closure runs in a fresh instance of the component, from a fresh render of the tree:
/// it must not rely on state from the build function other than what it captures. Capture
/// owned values with `move`. A panic inside it traps the component; the host reports the
/// attempt as failed (and retries it if `retries` allows).
///
/// Options: [`retries`](Node::retries), [`backoff`](Node::backoff),
/// [`timeout_ms`](Node::timeout_ms), [`continue_on_fail`](Node::continue_on_fail),
/// [`skip_if`](Node::skip_if), [`label`](Node::label), [`meta`](Node::meta).
pub fn task<T, F>(id: impl Into<String>, run: F) -> Node
where
    T: Serialize,
    F: Fn(&TaskCtx) -> Result<T, TaskError> + 'static,
{
    let run: TaskFn = Box::new(move |ctx| {
        let value = run(ctx)?;
        serde_json::to_string(&value).map_err(|err| {
            TaskError::new(format!(
                "the task's value does not serialize to JSON: {err}"
            ))
            .code("INVALID_OUTPUT")
            .not_retryable()
        })
    });
    Node::new(
        Some(id.into()),
        Kind::Task {
            options: TaskOptions::default(),
            run,
        },
    )
}

/// Children that run one after the other.
///
/// Its id is generated from its position in the tree (`$seq:0.1`) unless set with
/// [`id`](Node::id); give one when a branch may move it.
pub fn sequence(children: impl IntoIterator<Item = Node>) -> Node {
    Node::new(None, Kind::Sequence(children.into_iter().collect()))
}

/// Children that run at the same time; limit with
/// [`max_concurrency`](Node::max_concurrency).
///
/// Its id is generated from its position in the tree (`$par:0.1`) unless set with
/// [`id`](Node::id).
pub fn parallel(children: impl IntoIterator<Item = Node>) -> Node {
    Node::new(
        None,
        Kind::Parallel {
            max_concurrency: None,
            children: children.into_iter().collect(),
        },
    )
}

/// A loop: runs `body` (use a [`sequence`] for several nodes) once per iteration until
/// [`until`](Node::until) holds or [`max_iterations`](Node::max_iterations) (default 5) is
/// reached; then [`on_max_reached`](Node::on_max_reached) decides (default: return the last).
///
/// Outputs of nodes inside the loop are keyed by the loop's iteration: read them with
/// [`Ctx::output`] / [`Ctx::latest`], and [`TaskCtx::iteration`] tells a task which pass it
/// runs in. Loops do not nest in this version.
pub fn loop_(id: impl Into<String>, body: Node) -> Node {
    Node::new(
        Some(id.into()),
        Kind::Loop {
            body: Box::new(body),
            max_iterations: 5,
            on_max_reached: OnMaxReached::ReturnLast,
            until: None,
        },
    )
}

/// A human decision: parks the run until someone approves or denies.
///
/// Its output is the decision, `{"approved": bool, "note": string|null, "decidedBy":
/// string|null}` (read it as an [`ApprovalDecision`](crate::ApprovalDecision)).
///
/// Options: [`title`](Node::title), [`summary`](Node::summary), [`on_deny`](Node::on_deny),
/// [`allowed_scopes`](Node::allowed_scopes), [`allowed_users`](Node::allowed_users),
/// [`meta`](Node::meta).
pub fn approval(id: impl Into<String>) -> Node {
    Node::new(Some(id.into()), Kind::Approval(ApprovalOptions::default()))
}

/// Parks the run until a signal named `signal` arrives; its payload becomes the node's
/// output.
pub fn wait_for_signal(id: impl Into<String>, signal: impl Into<String>) -> Node {
    Node::new(Some(id.into()), Kind::WaitForSignal(signal.into()))
}

const TASKS: &str = "task nodes";
const TASKS_AND_APPROVALS: &str = "task and approval nodes";
const APPROVALS: &str = "approval nodes";
const LOOPS: &str = "loop nodes";
const PARALLELS: &str = "parallel nodes";

impl Node {
    fn new(id: Option<String>, kind: Kind) -> Self {
        Node {
            id,
            kind,
            misuse: None,
        }
    }

    fn misused(mut self, method: &'static str, applies_to: &'static str) -> Self {
        self.misuse.get_or_insert((method, applies_to));
        self
    }

    fn task_options(mut self, method: &'static str, set: impl FnOnce(&mut TaskOptions)) -> Self {
        match &mut self.kind {
            Kind::Task { options, .. } => {
                set(options);
                self
            }
            _ => self.misused(method, TASKS),
        }
    }

    fn approval_options(
        mut self,
        method: &'static str,
        set: impl FnOnce(&mut ApprovalOptions),
    ) -> Self {
        match &mut self.kind {
            Kind::Approval(options) => {
                set(options);
                self
            }
            _ => self.misused(method, APPROVALS),
        }
    }

    /// Sets the id (any kind). Containers get a generated one otherwise.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Task: extra attempts after the first one fails.
    pub fn retries(self, retries: u32) -> Self {
        self.task_options("retries", |o| o.retries = retries)
    }

    /// Task: how the delay between attempts grows, and the first delay in milliseconds.
    pub fn backoff(self, backoff: Backoff, initial_delay_ms: u64) -> Self {
        self.task_options("backoff", |o| {
            o.backoff = backoff;
            o.initial_delay_ms = initial_delay_ms;
        })
    }

    /// Task: wall-clock limit of one attempt, in milliseconds.
    pub fn timeout_ms(self, timeout_ms: u64) -> Self {
        self.task_options("timeout_ms", |o| o.timeout_ms = Some(timeout_ms))
    }

    /// Task: a failure of this task does not fail the run.
    pub fn continue_on_fail(self) -> Self {
        self.task_options("continue_on_fail", |o| o.continue_on_fail = true)
    }

    /// Task: skip it when `skip` is true (evaluated at each render, so it may depend on
    /// outputs).
    pub fn skip_if(self, skip: bool) -> Self {
        self.task_options("skip_if", |o| o.skip = skip)
    }

    /// Task: display label.
    pub fn label(self, label: impl Into<String>) -> Self {
        self.task_options("label", |o| o.label = Some(label.into()))
    }

    /// Task or approval: arbitrary metadata (stored with each attempt, or included in the
    /// approval request).
    pub fn meta(mut self, meta: Value) -> Self {
        match &mut self.kind {
            Kind::Task { options, .. } => options.meta = Some(meta),
            Kind::Approval(options) => options.meta = Some(meta),
            _ => return self.misused("meta", TASKS_AND_APPROVALS),
        }
        self
    }

    /// Parallel: at most this many children run at once.
    pub fn max_concurrency(mut self, max: u32) -> Self {
        match &mut self.kind {
            Kind::Parallel {
                max_concurrency, ..
            } => {
                *max_concurrency = Some(max);
                self
            }
            _ => self.misused("max_concurrency", PARALLELS),
        }
    }

    /// Loop: the loop is done when `until` returns true. It is evaluated at each render
    /// against the outputs committed so far (typically with [`Ctx::latest`]).
    pub fn until(mut self, until: impl Fn(&Ctx) -> bool + 'static) -> Self {
        match &mut self.kind {
            Kind::Loop { until: slot, .. } => {
                *slot = Some(Box::new(until));
                self
            }
            _ => self.misused("until", LOOPS),
        }
    }

    /// Loop: upper bound of iterations (at least 1; default 5).
    pub fn max_iterations(mut self, max: u32) -> Self {
        match &mut self.kind {
            Kind::Loop { max_iterations, .. } => {
                *max_iterations = max;
                self
            }
            _ => self.misused("max_iterations", LOOPS),
        }
    }

    /// Loop: what happens at `max_iterations` when `until` is still false.
    pub fn on_max_reached(mut self, on_max: OnMaxReached) -> Self {
        match &mut self.kind {
            Kind::Loop { on_max_reached, .. } => {
                *on_max_reached = on_max;
                self
            }
            _ => self.misused("on_max_reached", LOOPS),
        }
    }

    /// Approval: title shown to whoever decides.
    pub fn title(self, title: impl Into<String>) -> Self {
        self.approval_options("title", |o| o.title = Some(title.into()))
    }

    /// Approval: longer explanation shown to whoever decides.
    pub fn summary(self, summary: impl Into<String>) -> Self {
        self.approval_options("summary", |o| o.summary = Some(summary.into()))
    }

    /// Approval: what a denial does (default [`OnDeny::Fail`]).
    pub fn on_deny(self, on_deny: OnDeny) -> Self {
        self.approval_options("on_deny", |o| o.on_deny = on_deny)
    }

    /// Approval: only callers with one of these scopes may decide.
    pub fn allowed_scopes<S: Into<String>>(self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.approval_options("allowed_scopes", |o| {
            o.allowed_scopes = scopes.into_iter().map(Into::into).collect();
        })
    }

    /// Approval: only these users may decide.
    pub fn allowed_users<S: Into<String>>(self, users: impl IntoIterator<Item = S>) -> Self {
        self.approval_options("allowed_users", |o| {
            o.allowed_users = users.into_iter().map(Into::into).collect();
        })
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Node");
        s.field("kind", &self.kind.name()).field("id", &self.id);
        match &self.kind {
            Kind::Sequence(children) | Kind::Parallel { children, .. } => {
                s.field("children", children);
            }
            Kind::Loop { body, .. } => {
                s.field("body", body);
            }
            _ => {}
        }
        s.finish()
    }
}

/// What a build function may return: a [`Node`], or a `Result` whose error (any
/// [`Display`](std::fmt::Display), e.g. [`TaskError`] from [`Ctx::input`]) fails the render.
#[diagnostic::on_unimplemented(
    message = "a build function must return `Node` or `Result<Node, E>` with `E: Display`, not `{Self}`"
)]
pub trait BuildOutput {
    /// The root node, or why there is none.
    fn into_root(self) -> Result<Node, String>;
}

impl BuildOutput for Node {
    fn into_root(self) -> Result<Node, String> {
        Ok(self)
    }
}

impl<E: std::fmt::Display> BuildOutput for Result<Node, E> {
    fn into_root(self) -> Result<Node, String> {
        self.map_err(|err| err.to_string())
    }
}
