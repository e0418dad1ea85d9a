//! The driver's in-memory copy of a run's state, rebuilt from the database on
//! every (re)start and kept in step with what the driver commits, so that a
//! step needs no database reads.

use std::collections::HashMap;

use super::schedule::{Decision, LoopStatus, NodeStatus, PendingSignal};
use crate::model::{ApprovalStatus, ErrorInfo, NodeKey, NodeState};
use crate::runtime::{LoopState, Output, RenderContext};
use crate::store::RunSnapshot;

/// Everything the scheduler and the render context need.
#[derive(Debug, Default)]
pub struct RunState {
    pub nodes: HashMap<NodeKey, NodeStatus>,
    pub loops: HashMap<String, LoopStatus>,
    pub decisions: HashMap<NodeKey, Decision>,
    pub signals: Vec<PendingSignal>,
    pub frame_no: u64,
    pub input_json: String,
    pub auth_json: Option<String>,
}

impl RunState {
    /// Rebuilds the state of a run from its rows.
    pub fn from_snapshot(snapshot: &RunSnapshot) -> Self {
        let mut state = Self {
            frame_no: snapshot.run.last_frame_no,
            input_json: snapshot.run.input_json.clone(),
            auth_json: snapshot.run.auth_json.clone(),
            ..Self::default()
        };
        for row in &snapshot.nodes {
            state.nodes.insert(
                row.key.clone(),
                NodeStatus {
                    state: Some(row.state),
                    attempts: row.last_attempt.unwrap_or(0),
                    retry_at_ms: row.retry_at_ms,
                    error: row
                        .error_json
                        .as_deref()
                        .and_then(|raw| serde_json::from_str::<ErrorInfo>(raw).ok()),
                    output: row.output_json.clone(),
                },
            );
        }
        for (loop_id, iteration, done) in &snapshot.loops {
            state.loops.insert(
                loop_id.clone(),
                LoopStatus {
                    iteration: *iteration,
                    done: *done,
                },
            );
        }
        for approval in &snapshot.approvals {
            if approval.status == ApprovalStatus::Requested {
                continue;
            }
            state.decisions.insert(
                approval.key.clone(),
                Decision {
                    approved: approval.status == ApprovalStatus::Approved,
                    note: approval.note.clone(),
                    decided_by: approval.decided_by.clone(),
                },
            );
        }
        state.signals = snapshot
            .signals
            .iter()
            .filter(|s| s.consumed_by.is_none())
            .map(|s| PendingSignal {
                seq: s.seq,
                name: s.name.clone(),
                payload: s.payload_json.clone(),
            })
            .collect();
        state
    }

    /// Resets nodes that a resume should run again: failed and cancelled
    /// tasks (a failed run resumed is a retry), keeping their attempt count.
    pub fn reopen_failed(&mut self) -> Vec<NodeKey> {
        let mut reopened = Vec::new();
        for (key, status) in &mut self.nodes {
            if matches!(status.state, Some(NodeState::Failed | NodeState::Cancelled)) {
                status.state = Some(NodeState::Pending);
                status.retry_at_ms = None;
                reopened.push(key.clone());
            }
        }
        self.decisions
            .retain(|key, decision| decision.approved || !reopened.contains(key));
        reopened
    }

    /// The context `render` and `run-task` see.
    pub fn render_context(&self, run_id: &str) -> RenderContext {
        let mut outputs: Vec<Output> = self
            .nodes
            .iter()
            .filter_map(|(key, status)| {
                status.output.as_ref().map(|value| Output {
                    node_id: key.node_id.clone(),
                    iteration: key.iteration,
                    value: value.clone(),
                })
            })
            .collect();
        outputs.sort_by(|a, b| (&a.node_id, a.iteration).cmp(&(&b.node_id, b.iteration)));
        let mut loops: Vec<LoopState> = self
            .loops
            .iter()
            .map(|(id, s)| LoopState {
                loop_id: id.clone(),
                iteration: s.iteration,
            })
            .collect();
        loops.sort_by(|a, b| a.loop_id.cmp(&b.loop_id));
        RenderContext {
            run_id: run_id.to_string(),
            input: self.input_json.clone(),
            outputs,
            loops,
            auth: self.auth_json.clone(),
        }
    }

    /// Mutable status of a node, created on first use.
    pub fn node_mut(&mut self, key: &NodeKey) -> &mut NodeStatus {
        self.nodes.entry(key.clone()).or_default()
    }
}
