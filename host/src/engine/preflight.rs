//! Upgrade preflight: would a new version of a workflow break the runs that
//! are still in flight? Each live run is re-rendered against the new version
//! with its committed state, and the result is compared with what the run
//! has already done. Read-only: no run is touched.

use serde::Serialize;

use super::state::RunState;
use super::tree::{Kind, Tree};
use super::{Engine, EngineError};
use crate::model::{NodeState, RunStatus};
use crate::store::RunSnapshot;

/// The verdict for one run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunVerdict {
    /// The run.
    pub run_id: String,
    /// Its status.
    pub status: RunStatus,
    /// Hash it currently runs with.
    pub current_hash: String,
    /// `compatible` or `divergent`.
    pub verdict: &'static str,
    /// The first reason it diverges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The preflight of one workflow path.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreflightReport {
    /// Resolved workflow path.
    pub workflow_path: String,
    /// Hash of the new version.
    pub hash: String,
    /// Workflow name of the new version.
    pub workflow_name: String,
    /// One verdict per non-terminal run of the workflow.
    pub runs: Vec<RunVerdict>,
}

impl PreflightReport {
    /// True when every run is compatible.
    pub fn all_compatible(&self) -> bool {
        self.runs.iter().all(|r| r.verdict == "compatible")
    }
}

impl Engine {
    /// Checks every live run of `workflow_path` against the file's current
    /// version.
    pub async fn preflight(&self, workflow_path: &str) -> Result<PreflightReport, EngineError> {
        let (path, loaded) = self.load_workflow(workflow_path).await?;
        let path = path.display().to_string();
        let key = path.clone();
        let snapshots = self
            .store()
            .read(move |r| {
                r.live_runs_of(&key)?
                    .into_iter()
                    .filter_map(|run| r.snapshot(&run.run_id).transpose())
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut runs = Vec::with_capacity(snapshots.len());
        for snapshot in snapshots {
            let reason = self.divergence(&loaded.workflow, &snapshot).await;
            runs.push(RunVerdict {
                run_id: snapshot.run.run_id.to_string(),
                status: snapshot.run.status,
                current_hash: snapshot.run.workflow_hash.clone(),
                verdict: if reason.is_none() {
                    "compatible"
                } else {
                    "divergent"
                },
                reason,
            });
        }
        Ok(PreflightReport {
            workflow_path: path,
            hash: loaded.workflow.hash.to_string(),
            workflow_name: loaded.workflow.info.name.clone(),
            runs,
        })
    }

    /// The first reason the new version cannot continue this run, if any.
    async fn divergence(
        &self,
        workflow: &crate::runtime::Workflow,
        snapshot: &RunSnapshot,
    ) -> Option<String> {
        let state = RunState::from_snapshot(snapshot);
        let tree = match self
            .runtime()
            .render(workflow, state.render_context())
            .await
        {
            Ok(Ok(nodes)) => match Tree::from_wire(nodes) {
                Ok(tree) => tree,
                Err(e) => return Some(format!("render returns an invalid tree: {e}")),
            },
            Ok(Err(message)) => return Some(format!("render fails: {message}")),
            Err(fault) => return Some(format!("render fails: {}", fault.message)),
        };
        let mut nodes = snapshot.nodes.clone();
        nodes.sort_by(|a, b| {
            (&a.key.node_id, a.key.iteration).cmp(&(&b.key.node_id, b.key.iteration))
        });
        for node in &nodes {
            let id = &node.key.node_id;
            let found = tree.node(id).map(|n| &n.kind);
            match node.state {
                NodeState::WaitingApproval if !matches!(found, Some(Kind::Approval(_))) => {
                    return Some(format!(
                        "node {id} is waiting for approval but is no longer an approval in the new version"
                    ));
                }
                NodeState::WaitingEvent if !matches!(found, Some(Kind::Signal(_))) => {
                    return Some(format!(
                        "node {id} is waiting for a signal but is no longer a signal node in the new version"
                    ));
                }
                NodeState::Finished | NodeState::Failed | NodeState::Skipped if found.is_none() => {
                    return Some(format!(
                        "committed node {id} is no longer in the workflow tree"
                    ));
                }
                _ => {}
            }
        }
        None
    }
}
