//! A task attempt's life inside the driver: its start is committed (attempt
//! row, node state, `NodeStarted`), it runs in its own wasmtime store on the
//! driver's `JoinSet`, its streamed events are committed as they come, and
//! its result becomes ops and events carried by the driver's next commit,
//! or a retry with backoff. Nothing here commits a step by itself: the
//! driver owns when a step is written.
//!
//! Every attempt has a deadline (the task's `timeoutMs`, or the host's
//! default, never more than the host's maximum) and charges what it streams
//! and returns to the run's output budget.

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Driver;
use crate::engine::schedule::Start;
use crate::engine::tree::TaskSpec;
use crate::model::{AttemptState, ErrorInfo, EventBody, NodeKey, NodeState, RunId, now_ms};
use crate::runtime::{Backoff, GuestFault, OutputBudget, TaskContext, TaskEnv, TaskError};
use crate::store::{Commit, NodeUpdate, Op};

/// A task attempt in flight.
pub(super) struct Inflight {
    pub(super) attempt: u32,
    spec: TaskSpec,
    pub(super) cancel: CancellationToken,
}

/// What an attempt returned.
pub(super) struct Finished {
    key: NodeKey,
    attempt: u32,
    result: Result<Result<String, TaskError>, GuestFault>,
}

impl Driver {
    pub(super) fn prepare_starts(&mut self, starts: &[Start], step: &mut Commit) -> Vec<Start> {
        for start in starts {
            step.push_op(Op::StartAttempt {
                key: start.key.clone(),
                attempt: start.attempt,
                meta_json: Some(
                    json!({
                        "kind": "task",
                        "retries": start.spec.retries,
                        "timeoutMs": start.spec.timeout_ms,
                        "label": start.spec.label,
                        "meta": start.spec.meta.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
                        "workflowHash": self.workflow.hash.as_str(),
                    })
                    .to_string(),
                ),
            });
            step.push_op(Op::UpsertNode(NodeUpdate {
                last_attempt: Some(start.attempt),
                retry_at_ms: Some(None),
                ..NodeUpdate::new(&start.key, NodeState::InProgress)
            }));
            step.push_event(EventBody::NodeStarted {
                node_id: start.key.node_id.to_string(),
                iteration: start.key.iteration,
                attempt: start.attempt,
            });
            let node = self.state.node_mut(&start.key);
            node.state = Some(NodeState::InProgress);
            node.attempts = start.attempt;
            node.retry_at_ms = None;
        }
        starts.to_vec()
    }

    pub(super) fn launch(&mut self, start: Start) {
        let cancel = self.slot.halt.child_token();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let limits = &self.engine.runtime.config().limits;
        let env = TaskEnv {
            root_dir: self.engine.config.root_dir.clone(),
            sandbox: self.engine.config.sandbox.clone(),
            events: events_tx,
            cancel: cancel.clone(),
            timeout: limits.task_deadline(start.spec.timeout_ms),
            budget: self.budget.clone(),
            node_id: start.key.node_id.to_string(),
            iteration: start.key.iteration,
            attempt: start.attempt,
            run_id: self.run_id.to_string(),
            journal: std::sync::Arc::new(super::journal::StoreJournal {
                store: self.engine.store.clone(),
                run_id: self.run_id.clone(),
                owner_id: self.engine.owner_id.clone(),
                key: start.key.clone(),
                attempt: start.attempt,
                budget: self.budget.clone(),
            }),
        };
        let ctx = TaskContext {
            render: self.state.render_context().clone(),
            node_id: start.key.node_id.to_string(),
            iteration: start.key.iteration,
            attempt: start.attempt,
        };
        let runtime = self.engine.runtime.clone();
        let workflow = self.workflow.clone();
        let store = self.engine.store.clone();
        let run_id = self.run_id.clone();
        let owner_id = self.engine.owner_id.clone();
        let budget = self.budget.clone();
        let key = start.key.clone();
        let attempt = start.attempt;
        self.inflight.insert(
            start.key.clone(),
            Inflight {
                attempt,
                spec: start.spec,
                cancel,
            },
        );
        self.tasks.spawn(async move {
            let call = runtime.run_task(&workflow, &ctx, env);
            let forward = forward_task_events(store, run_id, owner_id, budget, events_rx);
            let (result, ()) = tokio::join!(call, forward);
            Finished {
                key,
                attempt,
                result,
            }
        });
    }

    /// Turns an attempt's result into ops and events carried by the next commit.
    pub(super) fn complete(&mut self, done: Finished) {
        let Some(inflight) = self.inflight.remove(&done.key) else {
            return;
        };
        let key = done.key;
        let attempt = done.attempt;
        let failure = match done.result {
            Ok(Ok(output)) => match serde_json::from_str::<Value>(&output) {
                Ok(_) => {
                    self.carry.push_op(Op::EndAttempt {
                        key: key.clone(),
                        attempt,
                        state: AttemptState::Finished,
                        error: None,
                    });
                    self.carry.push_op(Op::UpsertNode(NodeUpdate {
                        output_json: Some(output.clone()),
                        last_attempt: Some(attempt),
                        ..NodeUpdate::new(&key, NodeState::Finished)
                    }));
                    self.carry.push_event(EventBody::NodeFinished {
                        node_id: key.node_id.to_string(),
                        iteration: key.iteration,
                        attempt,
                    });
                    self.state.node_mut(&key).state = Some(NodeState::Finished);
                    self.state.set_output(&key, output);
                    self.trigger = json!({ "reason": "task-finished", "nodeId": &*key.node_id, "iteration": key.iteration });
                    return;
                }
                Err(e) => (
                    ErrorInfo::new(
                        "INVALID_OUTPUT",
                        format!("the task returned invalid JSON: {e}"),
                    ),
                    false,
                ),
            },
            Ok(Err(task_error)) => {
                let mut error = ErrorInfo::new(task_error.code, task_error.message);
                if let Some(details) = task_error
                    .details
                    .and_then(|d| serde_json::from_str(&d).ok())
                {
                    error = error.with_details(details);
                }
                (error, task_error.retryable)
            }
            Err(fault) => {
                let retryable = fault.retryable();
                (ErrorInfo::new(fault.code, fault.message), retryable)
            }
        };
        let (error, retryable) = failure;
        let error = error.for_node(key.node_id.to_string());
        drop(inflight.cancel);
        let retry = retryable && attempt <= inflight.spec.retries;
        self.carry.push_op(Op::EndAttempt {
            key: key.clone(),
            attempt,
            state: AttemptState::Failed,
            error: Some(error.clone()),
        });
        self.carry.push_event(EventBody::NodeFailed {
            node_id: key.node_id.to_string(),
            iteration: key.iteration,
            attempt,
            error: error.clone(),
        });
        let node = self.state.node_mut(&key);
        node.error = Some(error.clone());
        if retry {
            let delay = backoff_delay(&inflight.spec, attempt);
            let retry_at = now_ms() + delay as i64;
            node.state = Some(NodeState::Pending);
            node.retry_at_ms = Some(retry_at);
            self.carry.push_op(Op::UpsertNode(NodeUpdate {
                error: Some(error),
                retry_at_ms: Some(Some(retry_at)),
                ..NodeUpdate::new(&key, NodeState::Pending)
            }));
            self.carry.push_event(EventBody::NodeRetrying {
                node_id: key.node_id.to_string(),
                iteration: key.iteration,
                attempt: attempt + 1,
                delay_ms: delay,
            });
        } else {
            node.state = Some(NodeState::Failed);
            self.carry.push_op(Op::UpsertNode(NodeUpdate {
                error: Some(error),
                ..NodeUpdate::new(&key, NodeState::Failed)
            }));
        }
        self.trigger =
            json!({ "reason": "task-failed", "nodeId": &*key.node_id, "iteration": key.iteration });
    }
}

/// Delay before the attempt after `attempt`.
fn backoff_delay(spec: &TaskSpec, attempt: u32) -> u64 {
    const MAX_DELAY_MS: u64 = 5 * 60 * 1000;
    let base = spec.initial_delay_ms;
    let delay = match spec.backoff {
        Backoff::Fixed => base,
        Backoff::Linear => base.saturating_mul(attempt as u64),
        Backoff::Exponential => base.saturating_mul(1u64 << (attempt.saturating_sub(1)).min(32)),
    };
    delay.min(MAX_DELAY_MS)
}

/// Commits a task's streamed events (output, tool calls) as they come, and
/// charges the run for the tool call events (the runtime charged each
/// `NodeOutput` before sending it).
async fn forward_task_events(
    store: crate::store::Store,
    run_id: RunId,
    owner_id: String,
    budget: std::sync::Arc<OutputBudget>,
    mut events: mpsc::UnboundedReceiver<EventBody>,
) {
    while let Some(first) = events.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = events.try_recv() {
            batch.push(more);
        }
        let mut commit = Commit::new(run_id.clone()).op(Op::AssertOwner {
            owner_id: owner_id.clone(),
        });
        commit.events = batch;
        match store.commit(commit).await {
            Ok(outcome) => {
                let stored: usize = outcome
                    .events
                    .iter()
                    .filter(|e| e.event_type != "NodeOutput")
                    .map(|e| e.json.len())
                    .sum();
                budget.charge(stored as u64);
            }
            Err(e) => tracing::debug!(run = %run_id, error = %e, "task events dropped"),
        }
    }
}
