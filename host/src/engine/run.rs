//! The driver of one run: render → schedule → run tasks → commit → re-render.
//!
//! A driver is the only writer of its run's progress while it holds the
//! run's slot in the registry. Everything it decides is committed (with the
//! events that announce it) before anything depends on it: an attempt row
//! exists before the task runs, and a task's output is committed before the
//! next render that could depend on it. To keep a step cheap, a finished
//! task's commit is folded into the next render's commit (one transaction per
//! step); the fold is flushed before the driver waits or exits.
//!
//! A run may store only so much (see `budget.rs`): when it has stored its
//! limit, the driver fails it with `OUTPUT_LIMIT_EXCEEDED`.

mod attempts;
mod budget;
mod changes;
mod journal;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::schedule::{self, Blocked, Outcome, Plan, View};
use super::state::RunState;
use super::tree::Tree;
use super::{ActiveRun, EngineInner};
use crate::model::{
    AttemptState, ErrorInfo, EventBody, NodeKey, NodeState, RunId, RunStatus, now_ms,
};
use crate::runtime::{LimitExceeded, Node, OUTPUT_LIMIT_EXCEEDED, OutputBudget, Workflow};
use crate::store::{Commit, NodeUpdate, Op, StoreError};
use attempts::{Finished, Inflight};

/// The previous render, to recognise an unchanged tree.
struct LastFrame {
    /// What the guest returned.
    wire: Vec<Node>,
    /// Its validated tree.
    tree: Arc<Tree>,
    /// Loop iterations and hash of the last frame stored for it.
    frame: Option<(Vec<(String, u32)>, String)>,
}

/// Why the driver stopped.
enum Exit {
    /// Finished, failed or parked: nothing more to do.
    Settled,
    /// Cancelled or shut down, or no longer the owner.
    Halted,
}

/// First and longest delay between two tries of a commit the storage refused.
const STORAGE_RETRY_FIRST: Duration = Duration::from_millis(100);
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(5);

pub(super) fn spawn(
    engine: Arc<EngineInner>,
    run_id: RunId,
    workflow: Arc<Workflow>,
    state: RunState,
    max_concurrency: u32,
    slot: Arc<ActiveRun>,
    reason: &'static str,
) {
    let budget = OutputBudget::new(engine.runtime.config().limits.max_run_stored_bytes, 0);
    let driver = Driver {
        carry: Commit::new(run_id.clone()).op(Op::AssertOwner {
            owner_id: engine.owner_id.clone(),
        }),
        budget: Arc::new(budget),
        resumed: reason == "resume",
        engine,
        run_id,
        workflow,
        state,
        max_concurrency,
        slot,
        inflight: HashMap::new(),
        tasks: JoinSet::new(),
        trigger: json!({ "reason": reason }),
        last_frame: None,
    };
    tokio::spawn(driver.run());
}

struct Driver {
    engine: Arc<EngineInner>,
    run_id: RunId,
    workflow: Arc<Workflow>,
    state: RunState,
    max_concurrency: u32,
    slot: Arc<ActiveRun>,
    inflight: HashMap<NodeKey, Inflight>,
    tasks: JoinSet<Finished>,
    /// Ops and events waiting to ride along with the next commit.
    carry: Commit,
    /// Why the next render happens.
    trigger: Value,
    /// The previous render and its frame hash.
    last_frame: Option<LastFrame>,
    /// What the run may still store, shared with its task calls.
    budget: Arc<OutputBudget>,
    /// The run was resumed: what it stored before counts.
    resumed: bool,
}

impl Driver {
    async fn run(mut self) {
        let exit = match self.drive().await {
            Ok(exit) => exit,
            Err(e) => {
                tracing::error!(run = %self.run_id, error = %e, "run driver stopped on a storage error");
                Exit::Halted
            }
        };
        // Dropping the task set aborts attempts still in flight (their bash
        // process trees die with them).
        self.tasks.shutdown().await;
        // On a graceful shutdown, keep the outputs of tasks that already
        // finished: committing them now spares re-running them on restart.
        if matches!(exit, Exit::Halted)
            && self.engine.shutting_down.load(Ordering::SeqCst)
            && !self.carry.events.is_empty()
        {
            let _ = self.commit(Commit::new(self.run_id.clone())).await;
        }
        if matches!(exit, Exit::Halted) {
            tracing::debug!(run = %self.run_id, "run driver halted");
        }
        self.engine.release(&self.run_id);
    }

    fn owner_op(&self) -> Op {
        Op::AssertOwner {
            owner_id: self.engine.owner_id.clone(),
        }
    }

    /// Commits the carried ops plus `commit`'s, in one transaction.
    ///
    /// When the storage cannot commit (disk full, read-only), nothing of the
    /// commit was applied: the run keeps what it holds in memory and retries
    /// with a growing delay until the commit goes through or the run is
    /// halted (cancel, shutdown), so that a full disk pauses runs instead of
    /// stranding them.
    async fn commit(&mut self, extra: Commit) -> Result<bool, StoreError> {
        let fresh = Commit::new(self.run_id.clone()).op(self.owner_op());
        let mut commit = std::mem::replace(&mut self.carry, fresh);
        commit.ops.extend(extra.ops);
        commit.events.extend(extra.events);
        let mut delay = STORAGE_RETRY_FIRST;
        loop {
            match self.engine.store.commit(commit.clone()).await {
                Ok(outcome) => {
                    self.charge_events(&outcome);
                    return Ok(true);
                }
                // The run was cancelled or taken over: stop quietly.
                Err(StoreError::Conflict(_)) => return Ok(false),
                Err(StoreError::Unavailable(message)) if !self.halted() => {
                    tracing::warn!(
                        run = %self.run_id, error = %message, retry_in = ?delay,
                        "cannot commit; the run waits for the storage"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.slot.halt.cancelled() => {
                            return Err(StoreError::Unavailable(message));
                        }
                    }
                    delay = (delay * 2).min(STORAGE_RETRY_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn halted(&self) -> bool {
        self.slot.halt.is_cancelled()
    }

    async fn drive(&mut self) -> Result<Exit, StoreError> {
        if self.resumed {
            self.count_stored().await?;
        }
        loop {
            if self.halted() {
                return Ok(Exit::Halted);
            }
            if self.budget.exceeded() {
                let error = self.output_limit_error();
                return self.fail(error).await;
            }
            let tree = match self.render().await {
                Ok(tree) => tree,
                Err(error) => return self.fail(error).await,
            };
            let plan = schedule::plan(
                &tree,
                &View {
                    nodes: &self.state.nodes,
                    loops: &self.state.loops,
                    decisions: &self.state.decisions,
                    signals: &self.state.signals,
                    inflight: &self.inflight.keys().cloned().collect::<HashSet<_>>(),
                    max_concurrency: self.max_concurrency,
                    now_ms: now_ms(),
                },
            );
            let mut step = Commit::new(self.run_id.clone());
            if let Err(exceeded) = self.frame(&tree, &mut step) {
                let error = ErrorInfo::new(OUTPUT_LIMIT_EXCEEDED, exceeded.to_string());
                return self.fail(error).await;
            }
            self.mount(&plan, &mut step);
            match &plan.outcome {
                Outcome::Failed(error) => {
                    let error = error.clone();
                    self.carry.ops.extend(step.ops);
                    self.carry.events.extend(step.events);
                    return self.fail(error).await;
                }
                Outcome::Finished => {
                    let failed: Vec<String> =
                        plan.failed_children.iter().map(|k| k.to_string()).collect();
                    step.push_op(Op::SetRunStatus {
                        status: RunStatus::Finished,
                        error: None,
                    });
                    step.push_event(EventBody::RunFinished {
                        failed_children: (!failed.is_empty()).then_some(failed.len() as u32),
                        failed_child_keys: (!failed.is_empty()).then_some(failed),
                    });
                    self.commit(step).await?;
                    return Ok(Exit::Settled);
                }
                Outcome::Progress => {}
            }
            if !plan.changes.is_empty() {
                self.apply_changes(&plan.changes, &mut step);
                if !self.commit(step).await? {
                    return Ok(Exit::Halted);
                }
                continue;
            }
            self.request_inputs(&plan, &mut step);
            let started = self.prepare_starts(&plan.starts, &mut step);
            if !self.commit(step).await? {
                return Ok(Exit::Halted);
            }
            for start in started {
                self.launch(start);
            }
            if self.inflight.is_empty() && plan.wake_at_ms.is_none() {
                match plan.blocked {
                    Some(blocked) => {
                        if self.park(blocked).await? {
                            return Ok(Exit::Settled);
                        }
                        continue;
                    }
                    None => {
                        return self
                            .fail(ErrorInfo::new(
                                "SCHEDULER_STALLED",
                                "the workflow has unfinished nodes but nothing can run; this is a bug",
                            ))
                            .await;
                    }
                }
            }
            if !self.wait(plan.wake_at_ms).await? {
                return Ok(Exit::Halted);
            }
        }
    }

    /// Renders and returns the validated tree; a render identical to the
    /// previous one reuses its tree (and, in `frame`, its frame).
    async fn render(&mut self) -> Result<Arc<Tree>, ErrorInfo> {
        let rendered = self
            .engine
            .runtime
            .render(&self.workflow, self.state.render_context())
            .await;
        match rendered {
            Ok(Ok(wire)) => {
                if let Some(last) = self.last_frame.as_ref().filter(|last| last.wire == wire) {
                    return Ok(last.tree.clone());
                }
                let tree = Arc::new(Tree::from_wire(wire.clone()).map_err(|m| {
                    ErrorInfo::new(
                        "RENDER_INVALID",
                        format!("render returned an invalid tree: {m}"),
                    )
                })?);
                self.last_frame = Some(LastFrame {
                    wire,
                    tree: tree.clone(),
                    frame: None,
                });
                Ok(tree)
            }
            Ok(Err(message)) => Err(ErrorInfo::new(
                "RENDER_FAILED",
                format!("render failed: {message}"),
            )),
            // A render that loops is stopped at its deadline, and the run
            // fails with a code of its own rather than a generic failure.
            Err(fault) if fault.code == "RENDER_TIMEOUT" => {
                Err(ErrorInfo::new(fault.code, fault.message))
            }
            Err(fault) => Err(ErrorInfo::new(
                "RENDER_FAILED",
                format!("render failed: {}", fault.message),
            )
            .with_details(json!({ "cause": fault.code }))),
        }
    }

    /// Adds the frame of `tree` to `step`; fails when a new tree does not
    /// fit in what the run may still store.
    fn frame(&mut self, tree: &Tree, step: &mut Commit) -> Result<(), LimitExceeded> {
        // Most renders return the tree of the previous one (a static
        // workflow always does): then, unless a loop moved on (the task
        // index carries iterations), its canonical JSON and hash are reused
        // and the stored tree is not written again.
        let mut loops: Vec<(String, u32)> = self
            .state
            .loops
            .iter()
            .map(|(id, s)| (id.clone(), s.iteration))
            .collect();
        loops.sort();
        let last = self
            .last_frame
            .as_mut()
            .expect("render sets the last frame");
        let tree_hash = match &last.frame {
            Some((seen_loops, hash)) if *seen_loops == loops => hash.clone(),
            _ => {
                let state_loops = &self.state.loops;
                let iteration_of = |position: usize| {
                    tree.nodes[position]
                        .enclosing_loop
                        .and_then(|l| state_loops.get(&*tree.nodes[l].id))
                        .map_or(0, |s| s.iteration)
                };
                let (tree_json, task_index_json, hash) =
                    tree.frame(&self.workflow.info.name, iteration_of);
                let size = tree_json.len() + task_index_json.len();
                self.budget.try_charge("the frame's tree", size as u64)?;
                last.frame = Some((loops, hash.clone()));
                step.push_op(Op::StoreTree {
                    tree_hash: hash.clone(),
                    tree_json,
                    task_index_json,
                });
                hash
            }
        };
        self.state.frame_no += 1;
        let trigger = std::mem::replace(&mut self.trigger, json!({ "reason": "stability-check" }));
        step.push_event(EventBody::FrameCommitted {
            frame_no: self.state.frame_no,
            xml_hash: tree_hash,
            trigger,
        });
        Ok(())
    }

    fn mount(&mut self, plan: &Plan, step: &mut Commit) {
        for (key, label) in &plan.mounted {
            step.push_op(Op::UpsertNode(NodeUpdate {
                label: label.clone(),
                ..NodeUpdate::new(key, NodeState::Pending)
            }));
            step.push_event(EventBody::NodePending {
                node_id: key.node_id.to_string(),
                iteration: key.iteration,
            });
            self.state.node_mut(key).state = Some(NodeState::Pending);
        }
    }

    /// Waits for a task to end, outside input, a retry timer or a halt.
    /// Returns false when the driver must stop.
    async fn wait(&mut self, wake_at_ms: Option<i64>) -> Result<bool, StoreError> {
        let sleep = async {
            match wake_at_ms {
                Some(at) => {
                    tokio::time::sleep(Duration::from_millis((at - now_ms()).max(0) as u64)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.slot.halt.cancelled() => Ok(false),
            Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                let mut finished = vec![joined];
                // Fold every attempt that already ended into the same step.
                while let Some(more) = self.tasks.try_join_next() {
                    finished.push(more);
                }
                for joined in finished {
                    match joined {
                        Ok(done) => self.complete(done),
                        Err(e) if e.is_cancelled() => {}
                        Err(e) => tracing::error!(run = %self.run_id, error = %e, "task join failed"),
                    }
                }
                Ok(!self.halted())
            }
            _ = self.slot.wake.notified() => {
                self.reload_inputs().await?;
                Ok(true)
            }
            _ = sleep => {
                self.trigger = json!({ "reason": "retry" });
                Ok(true)
            }
        }
    }

    /// Re-reads decisions and signals after outside input.
    async fn reload_inputs(&mut self) -> Result<(), StoreError> {
        self.slot.dirty.store(false, Ordering::SeqCst);
        let id = self.run_id.clone();
        let Some(snapshot) = self.engine.store.read(move |r| r.snapshot(&id)).await? else {
            return Ok(());
        };
        let fresh = RunState::from_snapshot(&snapshot);
        self.state.decisions = fresh.decisions;
        self.state.signals = fresh.signals;
        for (key, status) in fresh.nodes {
            // Decisions reset approval nodes to pending; keep everything else
            // (the driver's own view is newer than the database's).
            if status.state == Some(NodeState::Pending)
                && self.state.nodes.get(&key).and_then(|s| s.state)
                    == Some(NodeState::WaitingApproval)
            {
                self.state.node_mut(&key).state = Some(NodeState::Pending);
            }
        }
        self.trigger = json!({ "reason": "input" });
        Ok(())
    }

    /// Parks the run. Returns true when the driver may exit, false when input
    /// arrived meanwhile and the run continues.
    async fn park(&mut self, blocked: Blocked) -> Result<bool, StoreError> {
        let status = match blocked {
            Blocked::Approval => RunStatus::WaitingApproval,
            Blocked::Event => RunStatus::WaitingEvent,
        };
        let step = Commit::new(self.run_id.clone())
            .op(Op::SetRunStatus {
                status,
                error: None,
            })
            .event(EventBody::RunStatusChanged { status });
        if !self.commit(step).await? {
            return Ok(true);
        }
        // Input that raced with parking either set `dirty` before we look
        // (we continue) or finds no driver and resumes the run itself.
        let continue_running = {
            let mut active = self.engine.active.lock().expect("registry");
            if self.slot.dirty.swap(false, Ordering::SeqCst) {
                true
            } else {
                active.remove(&self.run_id);
                self.slot.finished.send_replace(true);
                false
            }
        };
        if !continue_running {
            return Ok(true);
        }
        let claimed = self
            .engine
            .store
            .commit(
                Commit::new(self.run_id.clone())
                    .op(Op::ClaimRun {
                        owner_id: self.engine.owner_id.clone(),
                        workflow_hash: self.workflow.hash.to_string(),
                        steal_running: false,
                    })
                    .event(EventBody::RunStatusChanged {
                        status: RunStatus::Running,
                    }),
            )
            .await;
        match claimed {
            Ok(_) => {
                self.reload_inputs().await?;
                Ok(false)
            }
            Err(StoreError::Conflict(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Fails the run: stops tasks still running, then records `RunFailed`.
    async fn fail(&mut self, error: ErrorInfo) -> Result<Exit, StoreError> {
        let mut step = Commit::new(self.run_id.clone());
        for (key, inflight) in self.inflight.drain() {
            inflight.cancel.cancel();
            step.push_op(Op::EndAttempt {
                key: key.clone(),
                attempt: inflight.attempt,
                state: AttemptState::Cancelled,
                error: None,
            });
            step.push_op(node_op(&key, NodeState::Cancelled));
            step.push_event(EventBody::NodeCancelled {
                node_id: key.node_id.to_string(),
                iteration: key.iteration,
                attempt: Some(inflight.attempt),
                reason: "run-failed".into(),
            });
        }
        self.tasks.shutdown().await;
        let run_error = match &error.node_id {
            Some(node) if !error.message.contains(node.as_str()) => ErrorInfo {
                message: format!("Task {node} failed: {}", error.message),
                ..error.clone()
            },
            _ => error.clone(),
        };
        step.push_op(Op::SetRunStatus {
            status: RunStatus::Failed,
            error: Some(run_error.clone()),
        });
        step.push_event(EventBody::RunFailed { error: run_error });
        self.commit(step).await?;
        Ok(Exit::Settled)
    }
}

/// An `UpsertNode` that only changes the state.
pub(super) fn node_op(key: &NodeKey, state: NodeState) -> Op {
    Op::UpsertNode(NodeUpdate::new(key, state))
}
