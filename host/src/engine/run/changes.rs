//! What the driver writes for a plan's decisions that are not task runs:
//! skipped nodes, decided approvals, consumed signals and loop progress
//! (`apply_changes`), and approval and signal waits (`request_inputs`).
//! Each becomes ops and events in the step being built and the matching
//! change of the driver's in-memory state; nothing here commits.

use serde_json::{Value, json};

use super::{Driver, node_op};
use crate::engine::schedule::{Change, Plan};
use crate::model::{EventBody, NodeState};
use crate::store::{Commit, NodeUpdate, Op};

impl Driver {
    pub(super) fn apply_changes(&mut self, changes: &[Change], step: &mut Commit) {
        for change in changes {
            match change {
                Change::Skip(key) => {
                    step.push_op(node_op(key, NodeState::Skipped));
                    step.push_event(EventBody::NodeSkipped {
                        node_id: key.node_id.to_string(),
                        iteration: key.iteration,
                    });
                    self.state.node_mut(key).state = Some(NodeState::Skipped);
                    self.trigger = json!({ "reason": "node-skipped", "nodeId": &*key.node_id });
                }
                Change::FinishApproval {
                    key,
                    output,
                    skipped,
                } => {
                    let state = if *skipped {
                        NodeState::Skipped
                    } else {
                        NodeState::Finished
                    };
                    step.push_op(Op::UpsertNode(NodeUpdate {
                        output_json: Some(output.clone()),
                        ..NodeUpdate::new(key, state)
                    }));
                    step.push_event(if *skipped {
                        EventBody::NodeSkipped {
                            node_id: key.node_id.to_string(),
                            iteration: key.iteration,
                        }
                    } else {
                        EventBody::NodeFinished {
                            node_id: key.node_id.to_string(),
                            iteration: key.iteration,
                            attempt: 1,
                        }
                    });
                    self.state.node_mut(key).state = Some(state);
                    self.state.set_output(key, output.clone());
                    self.trigger = json!({ "reason": "approval-decided", "nodeId": &*key.node_id });
                }
                Change::FailApproval { key, error } => {
                    step.push_op(Op::UpsertNode(NodeUpdate {
                        error: Some(error.clone()),
                        ..NodeUpdate::new(key, NodeState::Failed)
                    }));
                    step.push_event(EventBody::NodeFailed {
                        node_id: key.node_id.to_string(),
                        iteration: key.iteration,
                        attempt: 1,
                        error: error.clone(),
                    });
                    let node = self.state.node_mut(key);
                    node.state = Some(NodeState::Failed);
                    node.error = Some(error.clone());
                    self.trigger = json!({ "reason": "approval-decided", "nodeId": &*key.node_id });
                }
                Change::ConsumeSignal { key, seq, payload } => {
                    step.push_op(Op::ConsumeSignal {
                        seq: *seq,
                        key: key.clone(),
                    });
                    step.push_op(Op::UpsertNode(NodeUpdate {
                        output_json: Some(payload.clone()),
                        ..NodeUpdate::new(key, NodeState::Finished)
                    }));
                    step.push_event(EventBody::NodeFinished {
                        node_id: key.node_id.to_string(),
                        iteration: key.iteration,
                        attempt: 1,
                    });
                    self.state.node_mut(key).state = Some(NodeState::Finished);
                    self.state.set_output(key, payload.clone());
                    self.state.signals.retain(|s| s.seq != *seq);
                    self.trigger = json!({ "reason": "signal", "nodeId": &*key.node_id });
                }
                Change::AdvanceLoop { loop_id, iteration } => {
                    step.push_op(Op::SetLoop {
                        loop_id: loop_id.clone(),
                        iteration: *iteration,
                        done: false,
                    });
                    step.push_event(EventBody::LoopIterationStarted {
                        node_id: loop_id.clone(),
                        iteration: *iteration,
                    });
                    self.state.set_loop(loop_id, *iteration, false);
                    self.trigger = json!({ "reason": "loop-advanced", "nodeId": loop_id, "iteration": iteration });
                }
                Change::CompleteLoop { loop_id, iteration } => {
                    step.push_op(Op::SetLoop {
                        loop_id: loop_id.clone(),
                        iteration: *iteration,
                        done: true,
                    });
                    self.state.set_loop(loop_id, *iteration, true);
                    self.trigger = json!({ "reason": "loop-completed", "nodeId": loop_id });
                }
            }
        }
    }

    pub(super) fn request_inputs(&mut self, plan: &Plan, step: &mut Commit) {
        for (key, spec) in &plan.request_approvals {
            let request = json!({
                "mode": "approve",
                "title": spec.title.clone().unwrap_or_else(|| key.node_id.to_string()),
                "summary": spec.summary,
                "onDeny": match spec.on_deny {
                    crate::runtime::OnDeny::Fail => "fail",
                    crate::runtime::OnDeny::Continue => "continue",
                    crate::runtime::OnDeny::Skip => "skip",
                },
                "allowedScopes": spec.allowed_scopes,
                "allowedUsers": spec.allowed_users,
                "metadata": spec.meta.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
            });
            step.push_op(Op::RequestApproval {
                key: key.clone(),
                label: spec.title.clone(),
                request_json: request.to_string(),
            });
            step.push_op(node_op(key, NodeState::WaitingApproval));
            step.push_event(EventBody::ApprovalRequested {
                node_id: key.node_id.to_string(),
                iteration: key.iteration,
                request: request.clone(),
            });
            step.push_event(EventBody::NodeWaitingApproval {
                node_id: key.node_id.to_string(),
                iteration: key.iteration,
                request,
            });
            self.state.node_mut(key).state = Some(NodeState::WaitingApproval);
        }
        for (key, name) in &plan.wait_signals {
            step.push_op(node_op(key, NodeState::WaitingEvent));
            step.push_event(EventBody::NodeWaitingEvent {
                node_id: key.node_id.to_string(),
                iteration: key.iteration,
                signal_name: name.clone(),
            });
            self.state.node_mut(key).state = Some(NodeState::WaitingEvent);
        }
    }
}
