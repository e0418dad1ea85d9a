//! The driver's in-memory copy of a run's state, rebuilt from the database on
//! every (re)start and kept in step with what the driver commits, so that a
//! step needs no database reads.

use std::collections::HashMap;

use super::schedule::{Decision, LoopStatus, NodeStatus, PendingSignal};
use crate::model::{ApprovalStatus, ErrorInfo, NodeKey, NodeState};
use crate::runtime::{LoopState, Output, RenderContext};
use crate::store::RunSnapshot;

/// Everything the scheduler and the render context need.
///
/// The render context is kept up to date as outputs and loops change, rather
/// than rebuilt (and its outputs re-sorted) before every render.
#[derive(Debug)]
pub struct RunState {
    pub nodes: HashMap<NodeKey, NodeStatus>,
    pub loops: HashMap<String, LoopStatus>,
    pub decisions: HashMap<NodeKey, Decision>,
    pub signals: Vec<PendingSignal>,
    pub frame_no: u64,
    ctx: RenderContext,
}

impl RunState {
    /// The state of a run that has not done anything yet.
    pub fn new(run_id: &str, input_json: String, auth_json: Option<String>) -> Self {
        Self {
            nodes: HashMap::new(),
            loops: HashMap::new(),
            decisions: HashMap::new(),
            signals: Vec::new(),
            frame_no: 0,
            ctx: RenderContext {
                run_id: run_id.to_string(),
                input: input_json,
                outputs: Vec::new(),
                loops: Vec::new(),
                auth: auth_json,
            },
        }
    }

    /// Rebuilds the state of a run from its rows.
    pub fn from_snapshot(snapshot: &RunSnapshot) -> Self {
        let mut state = Self::new(
            snapshot.run.run_id.as_str(),
            snapshot.run.input_json.clone(),
            snapshot.run.auth_json.clone(),
        );
        state.frame_no = snapshot.run.last_frame_no;
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
            state.set_loop(loop_id, *iteration, *done);
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
        let mut outputs: Vec<Output> = state
            .nodes
            .iter()
            .filter_map(|(key, status)| {
                status.output.as_ref().map(|value| Output {
                    node_id: key.node_id.to_string(),
                    iteration: key.iteration,
                    value: value.clone(),
                })
            })
            .collect();
        outputs.sort_by(|a, b| (&a.node_id, a.iteration).cmp(&(&b.node_id, b.iteration)));
        state.ctx.outputs = outputs;
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

    /// The context `render` and `run-task` see (outputs sorted by node id,
    /// then iteration).
    pub fn render_context(&self) -> &RenderContext {
        &self.ctx
    }

    /// Records a node's committed output.
    pub fn set_output(&mut self, key: &NodeKey, value: String) {
        self.node_mut(key).output = Some(value.clone());
        let outputs = &mut self.ctx.outputs;
        let at = outputs.binary_search_by(|o| {
            (o.node_id.as_str(), o.iteration).cmp(&(&*key.node_id, key.iteration))
        });
        match at {
            Ok(at) => outputs[at].value = value,
            Err(at) => outputs.insert(
                at,
                Output {
                    node_id: key.node_id.to_string(),
                    iteration: key.iteration,
                    value,
                },
            ),
        }
    }

    /// Records a loop's iteration and completion.
    pub fn set_loop(&mut self, loop_id: &str, iteration: u32, done: bool) {
        self.loops
            .insert(loop_id.to_string(), LoopStatus { iteration, done });
        let loops = &mut self.ctx.loops;
        match loops.iter_mut().find(|l| l.loop_id == loop_id) {
            Some(state) => state.iteration = iteration,
            None => {
                loops.push(LoopState {
                    loop_id: loop_id.to_string(),
                    iteration,
                });
                loops.sort_by(|a, b| a.loop_id.cmp(&b.loop_id));
            }
        }
    }

    /// Mutable status of a node, created on first use.
    pub fn node_mut(&mut self, key: &NodeKey) -> &mut NodeStatus {
        self.nodes.entry(key.clone()).or_default()
    }
}
