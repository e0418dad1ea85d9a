//! The pure scheduler: given a rendered tree and what is known about the
//! run, decide what happens next. No I/O, no clocks (time comes in), so every
//! rule here is unit-tested without a runtime or a database.
//!
//! Rules: sequence children run in order; parallel children run at once, at
//! most `max-concurrency` tasks in flight inside the parallel (and at most the
//! run's limit overall); a loop runs its children once per iteration until
//! `until` holds or `max-iterations` is reached; approvals and signals block
//! their branch until the outside world answers.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::tree::{ApprovalSpec, Kind, TaskSpec, Tree};
use crate::model::{ErrorInfo, NodeKey, NodeState};
use crate::runtime::{OnDeny, OnMaxReached};

/// What the scheduler knows about one node at one iteration.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// Persisted state (`None`: never mounted).
    pub state: Option<NodeState>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Earliest start of the next attempt.
    pub retry_at_ms: Option<i64>,
    /// Error of the last failure.
    pub error: Option<ErrorInfo>,
    /// Committed output (JSON text).
    pub output: Option<String>,
}

/// A loop's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStatus {
    /// Current iteration.
    pub iteration: u32,
    /// Completed for good.
    pub done: bool,
}

/// A decided approval.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Approved or denied.
    pub approved: bool,
    /// Note of the decider.
    pub note: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
}

/// A signal not consumed yet.
#[derive(Debug, Clone)]
pub struct PendingSignal {
    /// Its seq.
    pub seq: u64,
    /// Its name.
    pub name: String,
    /// Its payload (JSON text).
    pub payload: String,
}

/// The scheduler's input.
pub struct View<'a> {
    pub nodes: &'a HashMap<NodeKey, NodeStatus>,
    pub loops: &'a HashMap<String, LoopStatus>,
    pub decisions: &'a HashMap<NodeKey, Decision>,
    pub signals: &'a [PendingSignal],
    pub inflight: &'a HashSet<NodeKey>,
    /// Most tasks in flight for the whole run.
    pub max_concurrency: u32,
    pub now_ms: i64,
}

/// A task to start now.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub key: NodeKey,
    pub attempt: u32,
    pub spec: TaskSpec,
}

/// A change of run state that alters the render context: applied, then the
/// workflow is rendered again before anything else is decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A task is skipped (`skip-if`).
    Skip(NodeKey),
    /// A decided approval completes its node with the decision as output.
    FinishApproval {
        key: NodeKey,
        output: String,
        skipped: bool,
    },
    /// A denied approval with `on-deny: fail` fails its node.
    FailApproval { key: NodeKey, error: ErrorInfo },
    /// A signal is consumed by a waiting node; its payload becomes the output.
    ConsumeSignal {
        key: NodeKey,
        seq: u64,
        payload: String,
    },
    /// A loop moves on to `iteration`.
    AdvanceLoop { loop_id: String, iteration: u32 },
    /// A loop is complete.
    CompleteLoop { loop_id: String, iteration: u32 },
}

/// What blocks the run when nothing can progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Blocked {
    /// Waiting for a signal.
    Event,
    /// Waiting for an approval (reported in preference to signals).
    Approval,
}

/// Overall verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every node is done.
    Finished,
    /// The run cannot succeed.
    Failed(ErrorInfo),
    /// Work remains.
    Progress,
}

/// The scheduler's output.
#[derive(Debug, Clone)]
pub struct Plan {
    pub outcome: Outcome,
    /// Apply these and render again before starting anything.
    pub changes: Vec<Change>,
    /// Tasks to start (only meaningful when `changes` is empty).
    pub starts: Vec<Start>,
    /// Nodes seen for the first time (id, iteration, label).
    pub mounted: Vec<(NodeKey, Option<String>)>,
    /// Approvals reached and not yet requested.
    pub request_approvals: Vec<(NodeKey, ApprovalSpec)>,
    /// Signal nodes reached and not yet marked waiting.
    pub wait_signals: Vec<(NodeKey, String)>,
    /// Strongest reason the run is blocked on the outside world, if it is.
    pub blocked: Option<Blocked>,
    /// Earliest pending retry.
    pub wake_at_ms: Option<i64>,
    /// Keys of failures tolerated by `continue-on-fail`.
    pub failed_children: Vec<NodeKey>,
}

/// Status of a subtree, ordered by precedence when combining siblings.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    Done,
    Waiting,
    Active,
    Failed(ErrorInfo),
}

impl Status {
    fn rank(&self) -> u8 {
        match self {
            Status::Done => 0,
            Status::Waiting => 1,
            Status::Active => 2,
            Status::Failed(_) => 3,
        }
    }
}

struct Planner<'a> {
    tree: &'a Tree,
    view: &'a View<'a>,
    plan: Plan,
    /// Budgets of enclosing parallels (and the run), innermost last.
    budgets: Vec<u32>,
    consumed: HashSet<u64>,
}

/// Plans the next step.
pub fn plan(tree: &Tree, view: &View<'_>) -> Plan {
    let run_budget = view
        .max_concurrency
        .max(1)
        .saturating_sub(view.inflight.len() as u32);
    let mut planner = Planner {
        tree,
        view,
        plan: Plan {
            outcome: Outcome::Progress,
            changes: Vec::new(),
            starts: Vec::new(),
            mounted: Vec::new(),
            request_approvals: Vec::new(),
            wait_signals: Vec::new(),
            blocked: None,
            wake_at_ms: None,
            failed_children: Vec::new(),
        },
        budgets: vec![run_budget],
        consumed: HashSet::new(),
    };
    let status = planner.sequence(&tree.roots);
    let mut plan = planner.plan;
    plan.outcome = match status {
        Status::Done if view.inflight.is_empty() && plan.changes.is_empty() => Outcome::Finished,
        Status::Failed(error) => Outcome::Failed(error),
        _ => Outcome::Progress,
    };
    if !plan.changes.is_empty() {
        plan.starts.clear();
    }
    plan
}

impl Planner<'_> {
    fn iteration_of(&self, position: usize) -> u32 {
        self.tree.nodes[position]
            .enclosing_loop
            .and_then(|l| self.view.loops.get(&*self.tree.nodes[l].id))
            .map_or(0, |s| s.iteration)
    }

    fn key(&self, position: usize) -> NodeKey {
        NodeKey::new(
            self.tree.nodes[position].id.clone(),
            self.iteration_of(position),
        )
    }

    fn node(&mut self, position: usize) -> Status {
        let node = &self.tree.nodes[position];
        match &node.kind {
            Kind::Task(spec) => self.task(position, spec),
            Kind::Approval(spec) => self.approval(position, spec),
            Kind::Signal(name) => self.signal(position, name),
            Kind::Sequence => self.sequence(&node.children),
            Kind::Parallel(max) => self.parallel(position, *max),
            Kind::Loop(_) => self.r#loop(position),
        }
    }

    fn sequence(&mut self, children: &[usize]) -> Status {
        for &child in children {
            match self.node(child) {
                Status::Done => continue,
                other => return other,
            }
        }
        Status::Done
    }

    fn parallel(&mut self, position: usize, max: Option<u32>) -> Status {
        let children = self.tree.nodes[position].children.clone();
        let inside = self.inflight_below(position);
        let budget = max.map_or(u32::MAX, |m| m.saturating_sub(inside));
        self.budgets.push(budget);
        let mut combined = Status::Done;
        for child in children {
            let status = self.node(child);
            if status.rank() > combined.rank() {
                combined = status;
            }
        }
        self.budgets.pop();
        combined
    }

    fn r#loop(&mut self, position: usize) -> Status {
        let node = &self.tree.nodes[position];
        let Kind::Loop(spec) = &node.kind else {
            unreachable!("loop() is only called on loops")
        };
        let state = self.view.loops.get(&*node.id).copied().unwrap_or_default();
        if state.done {
            return Status::Done;
        }
        if spec.until {
            self.plan.changes.push(Change::CompleteLoop {
                loop_id: node.id.to_string(),
                iteration: state.iteration,
            });
            return Status::Active;
        }
        let (id, max, on_max) = (
            node.id.to_string(),
            spec.max_iterations,
            spec.on_max_reached,
        );
        let children = node.children.clone();
        match self.sequence(&children) {
            Status::Done => {
                if state.iteration + 1 < max {
                    self.plan.changes.push(Change::AdvanceLoop {
                        loop_id: id,
                        iteration: state.iteration + 1,
                    });
                    Status::Active
                } else {
                    match on_max {
                        OnMaxReached::ReturnLast => {
                            self.plan.changes.push(Change::CompleteLoop {
                                loop_id: id,
                                iteration: state.iteration,
                            });
                            Status::Active
                        }
                        OnMaxReached::Fail => Status::Failed(
                            ErrorInfo::new(
                                "LOOP_MAX_REACHED",
                                format!("loop {id} reached its maximum of {max} iterations"),
                            )
                            .for_node(id),
                        ),
                    }
                }
            }
            other => other,
        }
    }

    fn status(&self, key: &NodeKey) -> Option<&NodeStatus> {
        self.view.nodes.get(key)
    }

    fn mount(&mut self, key: &NodeKey, label: Option<&String>) {
        if self.status(key).and_then(|s| s.state).is_none() {
            self.plan.mounted.push((key.clone(), label.cloned()));
        }
    }

    fn task(&mut self, position: usize, spec: &TaskSpec) -> Status {
        let key = self.key(position);
        self.mount(&key, spec.label.as_ref());
        let status = self.status(&key).cloned().unwrap_or_default();
        match status.state {
            Some(NodeState::Finished | NodeState::Skipped) => return Status::Done,
            Some(NodeState::Failed) => {
                if spec.continue_on_fail {
                    self.plan.failed_children.push(key);
                    return Status::Done;
                }
                let error = status.error.unwrap_or_else(|| {
                    ErrorInfo::new("TASK_FAILED", format!("task {} failed", key.node_id))
                });
                return Status::Failed(error.for_node(&*key.node_id));
            }
            _ => {}
        }
        if spec.skip {
            self.plan.changes.push(Change::Skip(key));
            return Status::Active;
        }
        if self.view.inflight.contains(&key) {
            return Status::Active;
        }
        if let Some(at) = status.retry_at_ms.filter(|at| *at > self.view.now_ms) {
            self.plan.wake_at_ms = Some(self.plan.wake_at_ms.map_or(at, |w| w.min(at)));
            return Status::Active;
        }
        if self.budgets.iter().all(|b| *b > 0) {
            for budget in &mut self.budgets {
                *budget -= 1;
            }
            self.plan.starts.push(Start {
                key,
                attempt: status.attempts + 1,
                spec: spec.clone(),
            });
        }
        Status::Active
    }

    fn approval(&mut self, position: usize, spec: &ApprovalSpec) -> Status {
        let key = self.key(position);
        self.mount(&key, spec.title.as_ref());
        let status = self.status(&key).cloned().unwrap_or_default();
        match status.state {
            Some(NodeState::Finished | NodeState::Skipped) => return Status::Done,
            Some(NodeState::Failed) => {
                let error = status
                    .error
                    .unwrap_or_else(|| ErrorInfo::new("APPROVAL_DENIED", "approval denied"));
                return Status::Failed(error.for_node(&*key.node_id));
            }
            _ => {}
        }
        if let Some(decision) = self.view.decisions.get(&key) {
            let output = json!({
                "approved": decision.approved,
                "note": decision.note,
                "decidedBy": decision.decided_by,
            })
            .to_string();
            let change = match (decision.approved, spec.on_deny) {
                (true, _) | (false, OnDeny::Continue) => Change::FinishApproval {
                    key,
                    output,
                    skipped: false,
                },
                (false, OnDeny::Skip) => Change::FinishApproval {
                    key,
                    output,
                    skipped: true,
                },
                (false, OnDeny::Fail) => Change::FailApproval {
                    error: ErrorInfo::new(
                        "APPROVAL_DENIED",
                        match &decision.note {
                            Some(note) => format!("approval {} was denied: {note}", key.node_id),
                            None => format!("approval {} was denied", key.node_id),
                        },
                    )
                    .for_node(key.node_id.to_string()),
                    key,
                },
            };
            self.plan.changes.push(change);
            return Status::Active;
        }
        if status.state != Some(NodeState::WaitingApproval) {
            self.plan.request_approvals.push((key, spec.clone()));
        }
        self.block(Blocked::Approval);
        Status::Waiting
    }

    fn signal(&mut self, position: usize, name: &str) -> Status {
        let key = self.key(position);
        self.mount(&key, None);
        let status = self.status(&key).cloned().unwrap_or_default();
        if matches!(status.state, Some(NodeState::Finished | NodeState::Skipped)) {
            return Status::Done;
        }
        let available = self
            .view
            .signals
            .iter()
            .find(|s| s.name == name && !self.consumed.contains(&s.seq));
        if let Some(signal) = available {
            self.consumed.insert(signal.seq);
            self.plan.changes.push(Change::ConsumeSignal {
                key,
                seq: signal.seq,
                payload: signal.payload.clone(),
            });
            return Status::Active;
        }
        if status.state != Some(NodeState::WaitingEvent) {
            self.plan.wait_signals.push((key, name.to_string()));
        }
        self.block(Blocked::Event);
        Status::Waiting
    }

    fn block(&mut self, reason: Blocked) {
        self.plan.blocked = Some(self.plan.blocked.map_or(reason, |b| b.max(reason)));
    }

    fn inflight_below(&self, position: usize) -> u32 {
        let mut count = 0;
        let mut stack = self.tree.nodes[position].children.clone();
        while let Some(child) = stack.pop() {
            let node = &self.tree.nodes[child];
            if matches!(node.kind, Kind::Task(_)) && self.view.inflight.contains(&self.key(child)) {
                count += 1;
            }
            stack.extend(node.children.iter().copied());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::tests::{container, task};
    use super::*;
    use crate::runtime::{ApprovalOptions, LoopOptions, Node, NodeKind};

    struct Fixture {
        nodes: HashMap<NodeKey, NodeStatus>,
        loops: HashMap<String, LoopStatus>,
        decisions: HashMap<NodeKey, Decision>,
        signals: Vec<PendingSignal>,
        inflight: HashSet<NodeKey>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                nodes: HashMap::new(),
                loops: HashMap::new(),
                decisions: HashMap::new(),
                signals: Vec::new(),
                inflight: HashSet::new(),
            }
        }

        fn set(&mut self, id: &str, iteration: u32, state: NodeState) {
            self.nodes.insert(
                NodeKey::new(id, iteration),
                NodeStatus {
                    state: Some(state),
                    attempts: 1,
                    output: (state == NodeState::Finished).then(|| "1".to_string()),
                    ..Default::default()
                },
            );
        }

        fn plan(&self, wire: Vec<Node>) -> Plan {
            let tree = Tree::from_wire(wire).unwrap();
            plan(
                &tree,
                &View {
                    nodes: &self.nodes,
                    loops: &self.loops,
                    decisions: &self.decisions,
                    signals: &self.signals,
                    inflight: &self.inflight,
                    max_concurrency: 8,
                    now_ms: 1000,
                },
            )
        }
    }

    fn started(plan: &Plan) -> Vec<String> {
        plan.starts
            .iter()
            .map(|s| s.key.node_id.to_string())
            .collect()
    }

    fn seq3() -> Vec<Node> {
        vec![
            container("s", None, NodeKind::Sequence),
            task("a", Some(0)),
            task("b", Some(0)),
            task("c", Some(0)),
        ]
    }

    #[test]
    fn sequence_starts_only_the_first_unfinished_task() {
        let mut f = Fixture::new();
        let plan = f.plan(seq3());
        assert_eq!(started(&plan), ["a"]);
        assert_eq!(plan.mounted.len(), 1, "only reached nodes are mounted");
        f.set("a", 0, NodeState::Finished);
        assert_eq!(started(&f.plan(seq3())), ["b"]);
        f.set("b", 0, NodeState::Finished);
        f.set("c", 0, NodeState::Finished);
        assert_eq!(f.plan(seq3()).outcome, Outcome::Finished);
    }

    #[test]
    fn parallel_respects_max_concurrency_counting_inflight_tasks() {
        let wire = vec![
            container("p", None, NodeKind::Parallel(Some(2))),
            task("w0", Some(0)),
            task("w1", Some(0)),
            task("w2", Some(0)),
            task("w3", Some(0)),
        ];
        let mut f = Fixture::new();
        assert_eq!(started(&f.plan(wire.clone())), ["w0", "w1"]);
        f.inflight.insert(NodeKey::new("w0", 0));
        f.inflight.insert(NodeKey::new("w1", 0));
        assert!(f.plan(wire.clone()).starts.is_empty());
        f.inflight.remove(&NodeKey::new("w0", 0));
        f.set("w0", 0, NodeState::Finished);
        assert_eq!(started(&f.plan(wire)), ["w2"]);
    }

    #[test]
    fn failure_fails_the_run_unless_continue_on_fail() {
        let mut f = Fixture::new();
        f.set("a", 0, NodeState::Failed);
        assert!(
            matches!(f.plan(seq3()).outcome, Outcome::Failed(e) if e.node_id.as_deref() == Some("a"))
        );
        let mut wire = seq3();
        if let NodeKind::Task(o) = &mut wire[1].kind {
            o.continue_on_fail = true;
        }
        let plan = f.plan(wire);
        assert_eq!(started(&plan), ["b"]);
        assert_eq!(plan.failed_children, [NodeKey::new("a", 0)]);
    }

    #[test]
    fn retries_wait_for_their_backoff() {
        let mut f = Fixture::new();
        f.nodes.insert(
            NodeKey::new("a", 0),
            NodeStatus {
                state: Some(NodeState::Pending),
                attempts: 1,
                retry_at_ms: Some(5000),
                ..Default::default()
            },
        );
        let plan = f.plan(seq3());
        assert!(plan.starts.is_empty());
        assert_eq!(plan.wake_at_ms, Some(5000));
        f.nodes.get_mut(&NodeKey::new("a", 0)).unwrap().retry_at_ms = Some(500);
        let plan = f.plan(seq3());
        assert_eq!(plan.starts[0].attempt, 2);
    }

    fn approval_flow(on_deny: OnDeny) -> Vec<Node> {
        vec![
            container("s", None, NodeKind::Sequence),
            task("prepare", Some(0)),
            container(
                "gate",
                Some(0),
                NodeKind::Approval(ApprovalOptions {
                    title: Some("Ship?".into()),
                    summary: None,
                    on_deny,
                    allowed_scopes: vec![],
                    allowed_users: vec![],
                    meta: None,
                }),
            ),
            task("apply", Some(0)),
        ]
    }

    #[test]
    fn approvals_block_then_complete_with_the_decision_as_output() {
        let mut f = Fixture::new();
        f.set("prepare", 0, NodeState::Finished);
        let plan = f.plan(approval_flow(OnDeny::Fail));
        assert_eq!(plan.blocked, Some(Blocked::Approval));
        assert_eq!(plan.request_approvals.len(), 1);
        f.set("gate", 0, NodeState::WaitingApproval);
        assert!(
            f.plan(approval_flow(OnDeny::Fail))
                .request_approvals
                .is_empty()
        );
        f.decisions.insert(
            NodeKey::new("gate", 0),
            Decision {
                approved: false,
                note: Some("no".into()),
                decided_by: None,
            },
        );
        let plan = f.plan(approval_flow(OnDeny::Fail));
        assert!(
            matches!(&plan.changes[0], Change::FailApproval { error, .. } if error.code == "APPROVAL_DENIED")
        );
        let plan = f.plan(approval_flow(OnDeny::Skip));
        assert!(matches!(
            &plan.changes[0],
            Change::FinishApproval { skipped: true, .. }
        ));
    }

    #[test]
    fn signals_are_consumed_once_in_seq_order() {
        let wire = vec![
            container("p", None, NodeKind::Parallel(None)),
            container("w1", Some(0), NodeKind::WaitForSignal("go".into())),
            container("w2", Some(0), NodeKind::WaitForSignal("go".into())),
        ];
        let mut f = Fixture::new();
        let plan = f.plan(wire.clone());
        assert_eq!(plan.blocked, Some(Blocked::Event));
        assert_eq!(plan.wait_signals.len(), 2);
        f.signals.push(PendingSignal {
            seq: 4,
            name: "go".into(),
            payload: "{}".into(),
        });
        let plan = f.plan(wire);
        assert_eq!(
            plan.changes,
            vec![Change::ConsumeSignal {
                key: NodeKey::new("w1", 0),
                seq: 4,
                payload: "{}".into()
            }]
        );
    }

    fn refine(until: bool, on_max: OnMaxReached) -> Vec<Node> {
        vec![
            container(
                "refine",
                None,
                NodeKind::Loop(LoopOptions {
                    max_iterations: 3,
                    until,
                    on_max_reached: on_max,
                }),
            ),
            task("draft", Some(0)),
        ]
    }

    #[test]
    fn loops_iterate_until_done_or_max() {
        let mut f = Fixture::new();
        let plan = f.plan(refine(false, OnMaxReached::Fail));
        assert_eq!(plan.starts[0].key, NodeKey::new("draft", 0));
        f.set("draft", 0, NodeState::Finished);
        let plan = f.plan(refine(false, OnMaxReached::Fail));
        assert_eq!(
            plan.changes,
            vec![Change::AdvanceLoop {
                loop_id: "refine".into(),
                iteration: 1
            }]
        );
        f.loops.insert(
            "refine".into(),
            LoopStatus {
                iteration: 2,
                done: false,
            },
        );
        f.set("draft", 2, NodeState::Finished);
        assert!(matches!(
            f.plan(refine(false, OnMaxReached::Fail)).outcome,
            Outcome::Failed(e) if e.code == "LOOP_MAX_REACHED"
        ));
        assert!(matches!(
            f.plan(refine(false, OnMaxReached::ReturnLast)).changes[0],
            Change::CompleteLoop { iteration: 2, .. }
        ));
        assert!(matches!(
            f.plan(refine(true, OnMaxReached::Fail)).changes[0],
            Change::CompleteLoop { .. }
        ));
    }

    #[test]
    fn skipped_tasks_do_not_start() {
        let mut wire = seq3();
        if let NodeKind::Task(o) = &mut wire[1].kind {
            o.skip = true;
        }
        let plan = Fixture::new().plan(wire);
        assert_eq!(plan.changes, vec![Change::Skip(NodeKey::new("a", 0))]);
        assert!(plan.starts.is_empty());
    }
}
