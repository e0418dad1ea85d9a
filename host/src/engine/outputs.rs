//! What a run produced, as clients see it: one node's iterations (state,
//! attempts, output, error) and the run's outputs, page by page.
//!
//! These are the engine's read verbs for outputs, so that the HTTP handlers
//! and the command line speak only engine and wire types. Every answer is
//! bounded by a [`Page`] (items and bytes; see `store::outputs`) and says
//! where the next page starts with an opaque [`Cursor`]. Nothing here
//! writes, and stored JSON is decoded, never echoed as text.

use serde::Serialize;
use serde_json::Value;

use super::{Engine, EngineError};
use crate::model::{AttemptState, NodeState, RunId};
use crate::store::{AttemptRow, Bounds, IterationRow, OutputRow, StoreError};

/// Latest attempts shown per iteration; `attemptCount` tells how many there were.
pub const ATTEMPTS_PER_ITERATION: u32 = 20;

/// Where a page continues: pass a `nextCursor` back as `cursor`. Numeric
/// inside, a string on the wire so clients treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(u64);

impl Cursor {
    /// Reads a cursor a previous answer gave.
    pub fn parse(raw: &str) -> Option<Self> {
        raw.parse().ok().map(Self)
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// How much one answer may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Continue after a previous page.
    pub cursor: Option<Cursor>,
    /// Most items (clamped to `1..=MAX_LIMIT`).
    pub limit: u32,
    /// Most bytes of stored JSON, once one item is in.
    pub max_bytes: u64,
}

impl Page {
    /// Items per page when the client names no limit.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// Most items a client may ask for.
    pub const MAX_LIMIT: u32 = 1000;
    /// Default of `--max-output-page-bytes`.
    pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

    /// The first page, with the default item limit.
    pub fn first(max_bytes: u64) -> Self {
        Self {
            cursor: None,
            limit: Self::DEFAULT_LIMIT,
            max_bytes,
        }
    }

    fn bounds(self) -> Bounds {
        Bounds {
            after: self.cursor.map(|c| c.0),
            limit: self.limit.clamp(1, Self::MAX_LIMIT),
            max_bytes: self.max_bytes,
        }
    }
}

/// `GET /v1/runs/:id/nodes/:node`: a node at each of its iterations.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// The run.
    pub run_id: RunId,
    /// The node.
    pub node_id: String,
    /// Its iterations in order (one outside loops).
    pub iterations: Vec<IterationView>,
    /// Where the next page starts; `null` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// A node at one iteration.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IterationView {
    /// Loop iteration (0 outside loops).
    pub iteration: u32,
    /// State.
    pub state: NodeState,
    /// Display label.
    pub label: Option<String>,
    /// Last attempt number.
    pub last_attempt: Option<u32>,
    /// Last change.
    pub updated_at_ms: i64,
    /// Committed output.
    pub output: Option<Value>,
    /// Why the node failed (only when `state` is `failed`).
    pub error: Option<Value>,
    /// The latest attempts, oldest first.
    pub attempts: Vec<AttemptView>,
    /// How many attempts there were in all.
    pub attempt_count: u32,
}

/// One attempt.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// State.
    pub state: AttemptState,
    /// Start.
    pub started_at_ms: i64,
    /// End.
    pub finished_at_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<Value>,
}

/// `GET /v1/runs/:id/outputs`: a page of the run's outputs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputsPage {
    /// The run.
    pub run_id: RunId,
    /// Outputs in the order their nodes were first mounted.
    pub outputs: Vec<OutputView>,
    /// Where the next page starts; `null` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// One committed output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputView {
    /// The node.
    pub node_id: String,
    /// Loop iteration.
    pub iteration: u32,
    /// `finished` (or `skipped`, with the output a skipped node gets).
    pub state: NodeState,
    /// Display label.
    pub label: Option<String>,
    /// The output.
    pub output: Value,
}

/// Stored JSON as a value (a value the host stored is always JSON; should
/// it not be, it is shown as the string it is).
fn decode(raw: String) -> Value {
    serde_json::from_str(&raw).unwrap_or(Value::String(raw))
}

impl From<AttemptRow> for AttemptView {
    fn from(row: AttemptRow) -> Self {
        Self {
            attempt: row.attempt,
            state: row.state,
            started_at_ms: row.started_at_ms,
            finished_at_ms: row.finished_at_ms,
            error: row.error_json.map(decode),
        }
    }
}

impl From<IterationRow> for IterationView {
    fn from(row: IterationRow) -> Self {
        // The stored error outlives a successful retry; it explains only a failed node.
        let error = row
            .error_json
            .filter(|_| row.state == NodeState::Failed)
            .map(decode);
        Self {
            iteration: row.iteration,
            state: row.state,
            label: row.label,
            last_attempt: row.last_attempt,
            updated_at_ms: row.updated_at_ms,
            output: row.output_json.map(decode),
            error,
            attempts: row.attempts.into_iter().map(AttemptView::from).collect(),
            attempt_count: row.attempt_count,
        }
    }
}

impl From<OutputRow> for OutputView {
    fn from(row: OutputRow) -> Self {
        Self {
            node_id: row.key.node_id.to_string(),
            iteration: row.key.iteration,
            state: row.state,
            label: row.label,
            output: decode(row.output_json),
        }
    }
}

/// Longest node id an error quotes: the id comes from the client.
const QUOTED_ID_CHARS: usize = 128;

/// `id`, cut to [`QUOTED_ID_CHARS`].
fn bounded(id: &str) -> String {
    match id.char_indices().nth(QUOTED_ID_CHARS) {
        Some((end, _)) => format!("{}…", &id[..end]),
        None => id.to_string(),
    }
}

/// What a node read found, before it becomes a view or an error.
enum NodeLookup {
    NoRun,
    NoNode,
    Found(crate::store::Bounded<IterationRow>),
}

impl Engine {
    /// A node of a run at each of its iterations (only `iteration` when
    /// given), a page at a time. `RunNotFound` for an unknown run,
    /// `NodeNotFound` for a node (or iteration) the run never mounted.
    pub async fn node(
        &self,
        run_id: &RunId,
        node_id: &str,
        iteration: Option<u32>,
        page: Page,
    ) -> Result<NodeView, EngineError> {
        let (id, node) = (run_id.clone(), node_id.to_string());
        let lookup = self
            .store()
            .read(move |r| {
                if r.run(&id)?.is_none() {
                    return Ok(NodeLookup::NoRun);
                }
                let found = r.node_iterations(
                    &id,
                    &node,
                    iteration,
                    page.bounds(),
                    ATTEMPTS_PER_ITERATION,
                )?;
                let known =
                    !found.rows.is_empty() || (iteration.is_none() && r.has_node(&id, &node)?);
                Ok::<_, StoreError>(if known {
                    NodeLookup::Found(found)
                } else {
                    NodeLookup::NoNode
                })
            })
            .await?;
        let found = match lookup {
            NodeLookup::NoRun => return Err(EngineError::RunNotFound(run_id.clone())),
            NodeLookup::NoNode => {
                return Err(EngineError::NodeNotFound {
                    node_id: bounded(node_id),
                    iteration,
                });
            }
            NodeLookup::Found(found) => found,
        };
        let next_cursor = found
            .more
            .then(|| {
                found
                    .rows
                    .last()
                    .map(|row| Cursor(u64::from(row.iteration)))
            })
            .flatten();
        Ok(NodeView {
            run_id: run_id.clone(),
            node_id: node_id.to_string(),
            iterations: found.rows.into_iter().map(IterationView::from).collect(),
            next_cursor,
        })
    }

    /// A page of the run's committed outputs. `RunNotFound` for an unknown run.
    pub async fn outputs(&self, run_id: &RunId, page: Page) -> Result<OutputsPage, EngineError> {
        let id = run_id.clone();
        let found = self
            .store()
            .read(move |r| match r.run(&id)? {
                Some(_) => r.outputs(&id, page.bounds()).map(Some),
                None => Ok(None),
            })
            .await?
            .ok_or_else(|| EngineError::RunNotFound(run_id.clone()))?;
        let next_cursor = found
            .more
            .then(|| found.rows.last().map(|row| Cursor(row.cursor)))
            .flatten();
        Ok(OutputsPage {
            run_id: run_id.clone(),
            outputs: found.rows.into_iter().map(OutputView::from).collect(),
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeKey;

    #[test]
    fn cursors_are_strings_on_the_wire_and_read_back() {
        assert_eq!(serde_json::to_value(Cursor(42)).unwrap(), "42");
        assert_eq!(Cursor::parse("42"), Some(Cursor(42)));
        for bad in ["", "-1", "x", "1.5", "99999999999999999999"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_unknown_node_is_quoted_bounded() {
        assert_eq!(bounded("gate"), "gate");
        let long = "x".repeat(10_000);
        assert_eq!(bounded(&long).chars().count(), QUOTED_ID_CHARS + 1);
    }

    #[test]
    fn a_page_asks_for_at_least_one_and_at_most_the_maximum() {
        let page = |limit| Page {
            limit,
            ..Page::first(10)
        };
        assert_eq!(page(0).bounds().limit, 1);
        assert_eq!(page(5_000).bounds().limit, Page::MAX_LIMIT);
    }

    #[test]
    fn a_node_shows_its_error_only_while_it_is_failed() {
        let row = |state| IterationRow {
            iteration: 0,
            state,
            label: None,
            last_attempt: Some(2),
            updated_at_ms: 0,
            output_json: Some(r#"{"ok":true}"#.into()),
            error_json: Some(r#"{"code":"TASK_FAILED","message":"boom"}"#.into()),
            attempts: Vec::new(),
            attempt_count: 2,
        };
        let finished = IterationView::from(row(NodeState::Finished));
        assert_eq!(finished.error, None);
        assert_eq!(finished.output, Some(serde_json::json!({"ok": true})));
        let failed = IterationView::from(row(NodeState::Failed));
        assert_eq!(failed.error.unwrap()["message"], "boom");
        let output = OutputView::from(OutputRow {
            cursor: 7,
            key: NodeKey::new("a", 3),
            state: NodeState::Finished,
            label: None,
            output_json: "[1]".into(),
        });
        assert_eq!(
            serde_json::to_value(output).unwrap(),
            serde_json::json!({"nodeId": "a", "iteration": 3, "state": "finished", "label": null, "output": [1]})
        );
    }
}
