//! What a run produced, typed: one node at each of its iterations
//! (`GET /v1/runs/:id/nodes/:node`) and the run's outputs
//! (`GET /v1/runs/:id/outputs`). Both answers come a bounded page at a time;
//! pass a page's `next_cursor` back as `cursor` to read on.
//!
//! These routes are smithers-host additions: a Smithers server answers them
//! with 404 `NOT_FOUND`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::types::{AttemptState, NodeState};

/// Which page of a node's iterations.
#[derive(Debug, Clone, Default)]
pub struct NodeQuery {
    /// Only this loop iteration.
    pub iteration: Option<u32>,
    /// Continue after an earlier page (its `next_cursor`).
    pub cursor: Option<String>,
    /// Most iterations (server default 100, at most 1000).
    pub limit: Option<u32>,
}

impl NodeQuery {
    /// Only `iteration`.
    pub fn iteration(iteration: u32) -> Self {
        Self {
            iteration: Some(iteration),
            ..Self::default()
        }
    }
}

/// Which page of a run's outputs.
#[derive(Debug, Clone, Default)]
pub struct OutputsQuery {
    /// Continue after an earlier page (its `next_cursor`).
    pub cursor: Option<String>,
    /// Most outputs (server default 100, at most 1000).
    pub limit: Option<u32>,
}

/// A node at each of its iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// The run.
    pub run_id: String,
    /// The node.
    pub node_id: String,
    /// Its iterations in order (one outside loops).
    #[serde(default)]
    pub iterations: Vec<IterationView>,
    /// Where the next page starts; `None` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A node at one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IterationView {
    /// Loop iteration (0 outside loops).
    #[serde(default)]
    pub iteration: u32,
    /// State.
    pub state: NodeState,
    /// Display label.
    #[serde(default)]
    pub label: Option<String>,
    /// Last attempt number.
    #[serde(default)]
    pub last_attempt: Option<u32>,
    /// Last change.
    #[serde(default)]
    pub updated_at_ms: Option<i64>,
    /// Committed output (`None` before there is one).
    #[serde(default)]
    pub output: Option<Value>,
    /// Why the node failed (only while it is failed).
    #[serde(default)]
    pub error: Option<Value>,
    /// The latest attempts, oldest first.
    #[serde(default)]
    pub attempts: Vec<AttemptView>,
    /// How many attempts there were in all.
    #[serde(default)]
    pub attempt_count: u32,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// State.
    pub state: AttemptState,
    /// Start.
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    /// End.
    #[serde(default)]
    pub finished_at_ms: Option<i64>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<Value>,
}

/// A page of a run's outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputsPage {
    /// The run.
    pub run_id: String,
    /// Outputs in the order their nodes were first mounted.
    #[serde(default)]
    pub outputs: Vec<OutputView>,
    /// Where the next page starts; `None` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One committed output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputView {
    /// The node.
    pub node_id: String,
    /// Loop iteration.
    #[serde(default)]
    pub iteration: u32,
    /// `finished` (or `skipped`).
    pub state: NodeState,
    /// Display label.
    #[serde(default)]
    pub label: Option<String>,
    /// The output.
    pub output: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_view_reads_the_server_shape_and_keeps_what_it_does_not_know() {
        let raw = json!({
            "runId": "r", "nodeId": "flaky", "nextCursor": null, "future": 1,
            "iterations": [{
                "iteration": 0, "state": "finished", "label": null, "lastAttempt": 2,
                "updatedAtMs": 5, "output": {"ok": true}, "error": null, "attemptCount": 2,
                "attempts": [
                    {"attempt": 1, "state": "failed", "startedAtMs": 1, "finishedAtMs": 2,
                     "error": {"code": "TASK_FAILED", "message": "boom"}},
                    {"attempt": 2, "state": "finished", "startedAtMs": 3, "finishedAtMs": 4, "error": null}
                ]
            }]
        });
        let view: NodeView = serde_json::from_value(raw).unwrap();
        let first = &view.iterations[0];
        assert_eq!(first.state, NodeState::Finished);
        assert_eq!(first.output, Some(json!({"ok": true})));
        assert_eq!(first.attempts[0].state, AttemptState::Failed);
        assert_eq!(first.attempts[0].error.as_ref().unwrap()["message"], "boom");
        assert_eq!(view.extra["future"], 1);
    }

    #[test]
    fn an_outputs_page_reads_the_server_shape() {
        let raw = json!({"runId": "r", "nextCursor": "7", "outputs": [
            {"nodeId": "greet", "iteration": 0, "state": "finished", "label": null,
             "output": {"greeting": "Hello, Ada!"}}
        ]});
        let page: OutputsPage = serde_json::from_value(raw).unwrap();
        assert_eq!(page.next_cursor.as_deref(), Some("7"));
        assert_eq!(page.outputs[0].output["greeting"], "Hello, Ada!");
    }
}
