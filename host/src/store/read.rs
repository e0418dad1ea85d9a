//! Read-only queries on pooled connections.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde_json::Value;

use super::hub::StoredEvent;
use super::{NodeSummary, StoreError, decode_json, schema};
use crate::model::{ApprovalStatus, NodeKey, NodeState, RunId, RunStatus, now_ms};

/// A fixed set of read-only connections handed out one at a time.
pub(super) struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
}

impl ReadPool {
    pub(super) fn open(path: &Path, size: usize) -> Result<Self, StoreError> {
        let idle = (0..size)
            .map(|_| schema::open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            idle: Mutex::new(idle),
            path: path.to_path_buf(),
        })
    }

    pub(super) fn with<R>(
        &self,
        query: impl FnOnce(&Reader<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let pooled = self.idle.lock().expect("pool lock").pop();
        // Under a burst every pooled connection may be busy; a short-lived
        // extra one is cheaper than making the caller wait.
        let conn = match pooled {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = query(&Reader { conn: &conn });
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < 8 {
            idle.push(conn);
        }
        result
    }
}

/// A read-only view of the database.
pub struct Reader<'c> {
    pub(super) conn: &'c Connection,
}

/// A run row, serialized as `GET /v1/runs` lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    /// Run id.
    pub run_id: RunId,
    /// `describe().name` of the workflow.
    pub workflow_name: String,
    /// Workflow path (resolved under the root dir).
    pub workflow_path: String,
    /// Hash of the component the run currently uses.
    pub workflow_hash: String,
    /// Status.
    pub status: RunStatus,
    /// Creation time.
    pub created_at_ms: i64,
    /// First start.
    pub started_at_ms: Option<i64>,
    /// End of the last terminal transition.
    pub finished_at_ms: Option<i64>,
    /// Last lease refresh.
    pub heartbeat_at_ms: Option<i64>,
    /// Host driving the run.
    pub runtime_owner_id: Option<String>,
    /// Error of a failed run (JSON text, as Smithers stores it).
    pub error_json: Option<String>,
    /// Run configuration (JSON text).
    pub config_json: String,
    /// Cancel time.
    pub cancel_requested_at_ms: Option<i64>,
    /// Input (JSON text).
    #[serde(skip)]
    pub input_json: String,
    /// Who started the run (JSON text).
    #[serde(skip)]
    pub auth_json: Option<String>,
    /// Highest frame number committed.
    #[serde(skip)]
    pub last_frame_no: u64,
    /// Next event seq (number of events).
    #[serde(skip)]
    pub next_seq: u64,
}

const RUN_COLUMNS: &str =
    "run_id, workflow_name, workflow_path, workflow_hash, status, created_at_ms,
    started_at_ms, finished_at_ms, heartbeat_at_ms, owner_id, error_json, config_json,
    cancel_requested_at_ms, input_json, auth_json,
    (SELECT COALESCE(MAX(json_extract(payload_json, '$.frameNo')), 0) FROM events
        WHERE events.run_id = runs.run_id AND type = 'FrameCommitted'),
    (SELECT COALESCE(MAX(seq) + 1, 0) FROM events WHERE events.run_id = runs.run_id)";

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    let status: String = row.get(4)?;
    Ok(RunRow {
        run_id: RunId::parse(&row.get::<_, String>(0)?).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        workflow_name: row.get(1)?,
        workflow_path: row.get(2)?,
        workflow_hash: row.get(3)?,
        status: RunStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown status {status}").into(),
            )
        })?,
        created_at_ms: row.get(5)?,
        started_at_ms: row.get(6)?,
        finished_at_ms: row.get(7)?,
        heartbeat_at_ms: row.get(8)?,
        runtime_owner_id: row.get(9)?,
        error_json: row.get(10)?,
        config_json: row.get(11)?,
        cancel_requested_at_ms: row.get(12)?,
        input_json: row.get(13)?,
        auth_json: row.get(14)?,
        last_frame_no: row.get::<_, i64>(15)? as u64,
        next_seq: row.get::<_, i64>(16)? as u64,
    })
}

/// A node row.
#[derive(Debug, Clone)]
pub struct NodeRow {
    /// Node and iteration.
    pub key: NodeKey,
    /// State.
    pub state: NodeState,
    /// Last attempt number.
    pub last_attempt: Option<u32>,
    /// Committed output (JSON text).
    pub output_json: Option<String>,
    /// Error of the last failure (JSON text).
    pub error_json: Option<String>,
    /// Earliest start of the next attempt.
    pub retry_at_ms: Option<i64>,
    /// Display label.
    pub label: Option<String>,
}

/// An approval row.
#[derive(Debug, Clone)]
pub struct ApprovalRow {
    /// Node and iteration.
    pub key: NodeKey,
    /// Status.
    pub status: ApprovalStatus,
    /// Note of the decider.
    pub note: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Request JSON.
    pub request_json: String,
}

/// A signal row.
#[derive(Debug, Clone)]
pub struct SignalRow {
    /// Sequence within the run.
    pub seq: u64,
    /// Name.
    pub name: String,
    /// Payload JSON text.
    pub payload_json: String,
    /// The node that consumed it, if any.
    pub consumed_by: Option<NodeKey>,
}

/// Everything the engine needs to continue a run.
#[derive(Debug, Clone)]
pub struct RunSnapshot {
    /// The run row.
    pub run: RunRow,
    /// All node rows.
    pub nodes: Vec<NodeRow>,
    /// All approval rows.
    pub approvals: Vec<ApprovalRow>,
    /// All signals, by seq.
    pub signals: Vec<SignalRow>,
    /// Loop states: (loop id, iteration, done).
    pub loops: Vec<(String, u32, bool)>,
}

/// A frame as `GET /v1/runs/:id/frames` returns it (Smithers' row shape).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrameRow {
    /// Run id.
    pub run_id: String,
    /// Frame number.
    pub frame_no: u64,
    /// Commit time.
    pub created_at_ms: i64,
    /// Canonical tree JSON (text).
    pub xml_json: String,
    /// sha256 of `xml_json`.
    pub xml_hash: String,
    /// Always `full`: stored trees are deduplicated by hash instead.
    pub encoding: &'static str,
    /// Mounted task ids `["id::iteration"]` (JSON text).
    pub mounted_task_ids_json: String,
    /// Task index (JSON text).
    pub task_index_json: String,
    /// What caused the render (JSON text).
    pub note: String,
}

/// A gateway cron schedule, in the gateway's wire shape.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CronRow {
    /// Schedule id.
    pub cron_id: String,
    /// Cron pattern.
    pub pattern: String,
    /// Registered workflow key.
    #[serde(rename = "workflow")]
    pub workflow_key: String,
    /// Fires only when enabled.
    pub enabled: bool,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last fire (scheduled or manual).
    pub last_run_at_ms: Option<i64>,
    /// Next tick to fire.
    pub next_run_at_ms: Option<i64>,
    /// Why the last fire failed (JSON text).
    pub error_json: Option<String>,
}

/// A pending approval as `GET /v1/approvals` lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingApprovalRow {
    /// Run id.
    pub run_id: String,
    /// Approval node id.
    pub node_id: String,
    /// Loop iteration.
    pub iteration: u32,
    /// Workflow name.
    pub workflow_name: String,
    /// Run status.
    pub run_status: String,
    /// Node label or id.
    pub label: String,
    /// Request title (label or id when none).
    pub request_title: String,
    /// Request summary.
    pub request_summary: Option<String>,
    /// Request time.
    pub requested_at_ms: i64,
    /// Time waited so far.
    pub waiting_ms: i64,
    /// Always null for pending approvals.
    pub note: Option<String>,
    /// Always null for pending approvals.
    pub decided_by: Option<String>,
    /// The full request (title, summary, allowed scopes/users, meta).
    pub request: Value,
}

impl Reader<'_> {
    /// One run.
    pub fn run(&self, run_id: &RunId) -> Result<Option<RunRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"))?
            .query_row([run_id.as_str()], run_row)
            .optional()?)
    }

    /// Newest runs first, optionally filtered by status and workflow name.
    pub fn runs(
        &self,
        limit: u32,
        status: Option<&str>,
        workflow: Option<&str>,
    ) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow_name = ?2)
             ORDER BY created_at_ms DESC, rowid DESC LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(params![status, workflow, limit], run_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Non-terminal runs started from this workflow path, oldest first.
    pub fn live_runs_of(&self, workflow_path: &str) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE workflow_path = ?1 AND status NOT IN ('finished', 'failed', 'cancelled')
             ORDER BY created_at_ms, rowid"
        ))?;
        let rows = stmt
            .query_map([workflow_path], run_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Runs a previous host process left behind (crash recovery): those left
    /// `running` whose lease is not held by `owner_id`, and parked runs whose
    /// outside input arrived but was not acted on: an approval decided while
    /// its node has not settled yet, or an unconsumed signal a waiting node waits for
    /// (the host died between committing the decision or signal and resuming
    /// the run, which it does in a second step).
    pub fn runs_to_recover(&self, owner_id: &str) -> Result<Vec<RunId>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.run_id FROM runs r
             WHERE (r.status = 'running' AND (r.owner_id IS NULL OR r.owner_id != ?1))
                OR (r.status IN ('waiting-approval', 'waiting-event') AND (
                    EXISTS (SELECT 1 FROM approvals a
                        JOIN nodes n ON n.run_id = a.run_id AND n.node_id = a.node_id
                                    AND n.iteration = a.iteration
                        WHERE a.run_id = r.run_id AND a.status != 'requested'
                          AND n.state NOT IN ('finished', 'failed', 'skipped', 'cancelled'))
                    OR EXISTS (SELECT 1 FROM nodes n
                        JOIN events e ON e.run_id = n.run_id AND e.type = 'NodeWaitingEvent'
                                     AND json_extract(e.payload_json, '$.nodeId') = n.node_id
                        JOIN signals s ON s.run_id = n.run_id AND s.consumed_node_id IS NULL
                                      AND s.signal_name = json_extract(e.payload_json, '$.signalName')
                        WHERE n.run_id = r.run_id AND n.state = 'waiting-event')))
             ORDER BY r.created_at_ms",
        )?;
        let ids = stmt
            .query_map([owner_id], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter()
            .map(|id| RunId::parse(&id).map_err(StoreError::Corrupt))
            .collect()
    }

    /// Events with `seq > after_seq`, oldest first.
    pub fn events_after(
        &self,
        run_id: &RunId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, type, timestamp_ms, payload_json FROM events
             WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![run_id.as_str(), after_seq, limit], |row| {
                Ok(StoredEvent {
                    run_id: run_id.clone(),
                    seq: row.get::<_, i64>(0)? as u64,
                    event_type: row.get(1)?,
                    timestamp_ms: row.get(2)?,
                    json: row.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Counts of node states.
    pub fn node_summary(&self, run_id: &RunId) -> Result<NodeSummary, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM nodes WHERE run_id = ?1 GROUP BY state")?;
        let rows = stmt
            .query_map([run_id.as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<NodeSummary, _>>()?;
        Ok(rows)
    }

    /// Nodes of a run, in node id order.
    pub fn nodes(&self, run_id: &RunId) -> Result<Vec<NodeRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT node_id, iteration, state, last_attempt, output_json, error_json, retry_at_ms, label
             FROM nodes WHERE run_id = ?1 ORDER BY node_id, iteration",
        )?;
        let rows = stmt
            .query_map([run_id.as_str()], |row| {
                let state: String = row.get(2)?;
                Ok(NodeRow {
                    key: NodeKey::new(row.get::<_, String>(0)?, row.get(1)?),
                    state: NodeState::parse(&state).unwrap_or(NodeState::Pending),
                    last_attempt: row.get(3)?,
                    output_json: row.get(4)?,
                    error_json: row.get(5)?,
                    retry_at_ms: row.get(6)?,
                    label: row.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Everything the engine needs to continue a run.
    pub fn snapshot(&self, run_id: &RunId) -> Result<Option<RunSnapshot>, StoreError> {
        let Some(run) = self.run(run_id)? else {
            return Ok(None);
        };
        let nodes = self.nodes(run_id)?;
        let approvals = self
            .conn
            .prepare_cached(
                "SELECT node_id, iteration, status, note, decided_by, request_json
                 FROM approvals WHERE run_id = ?1",
            )?
            .query_map([run_id.as_str()], |row| {
                let status: String = row.get(2)?;
                Ok(ApprovalRow {
                    key: NodeKey::new(row.get::<_, String>(0)?, row.get(1)?),
                    status: ApprovalStatus::parse(&status).unwrap_or(ApprovalStatus::Requested),
                    note: row.get(3)?,
                    decided_by: row.get(4)?,
                    request_json: row.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let signals = self
            .conn
            .prepare_cached(
                "SELECT seq, signal_name, payload_json, consumed_node_id, consumed_iteration
                 FROM signals WHERE run_id = ?1 ORDER BY seq",
            )?
            .query_map([run_id.as_str()], |row| {
                let consumed: Option<String> = row.get(3)?;
                let iteration: Option<u32> = row.get(4)?;
                Ok(SignalRow {
                    seq: row.get::<_, i64>(0)? as u64,
                    name: row.get(1)?,
                    payload_json: row.get(2)?,
                    consumed_by: consumed.map(|id| NodeKey::new(id, iteration.unwrap_or(0))),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let loops = self
            .conn
            .prepare_cached("SELECT loop_id, iteration, done FROM loops WHERE run_id = ?1")?
            .query_map([run_id.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(RunSnapshot {
            run,
            nodes,
            approvals,
            signals,
            loops,
        }))
    }

    /// Frames newest first, optionally only those after `after_frame_no`:
    /// the run's `FrameCommitted` events joined with their stored trees.
    pub fn frames(
        &self,
        run_id: &RunId,
        limit: u32,
        after_frame_no: Option<i64>,
    ) -> Result<Vec<FrameRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.frame_no, f.timestamp_ms, f.tree_hash, f.trigger_json, t.tree_json, t.task_index_json
             FROM (SELECT json_extract(payload_json, '$.frameNo') AS frame_no, timestamp_ms,
                          json_extract(payload_json, '$.xmlHash') AS tree_hash,
                          json(json_extract(payload_json, '$.trigger')) AS trigger_json, seq
                   FROM events WHERE run_id = ?1 AND type = 'FrameCommitted') f
             JOIN frame_trees t ON t.tree_hash = f.tree_hash
             WHERE ?2 IS NULL OR f.frame_no > ?2
             ORDER BY f.seq DESC LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![run_id.as_str(), after_frame_no, limit], |row| {
                let task_index_json: String = row.get(5)?;
                Ok(FrameRow {
                    run_id: run_id.to_string(),
                    frame_no: row.get::<_, i64>(0)? as u64,
                    created_at_ms: row.get(1)?,
                    xml_hash: row.get(2)?,
                    note: row.get(3)?,
                    xml_json: row.get(4)?,
                    encoding: "full",
                    mounted_task_ids_json: mounted_ids(&task_index_json),
                    task_index_json,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Pending approvals of non-terminal runs, oldest request first.
    pub fn pending_approvals(&self, limit: u32) -> Result<Vec<PendingApprovalRow>, StoreError> {
        let now = now_ms();
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.run_id, a.node_id, a.iteration, r.workflow_name, r.status, a.label,
                    a.requested_at_ms, a.request_json
             FROM approvals a JOIN runs r ON r.run_id = a.run_id
             WHERE a.status = 'requested' AND r.status NOT IN ('finished', 'failed', 'cancelled')
             ORDER BY a.requested_at_ms, a.run_id, a.node_id, a.iteration LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit], |row| {
                let node_id: String = row.get(1)?;
                let label: Option<String> = row.get(5)?;
                let requested_at_ms: i64 = row.get(6)?;
                let request_json: String = row.get(7)?;
                let request: Value = serde_json::from_str(&request_json).unwrap_or(Value::Null);
                let label = label.unwrap_or_else(|| node_id.clone());
                let title = request
                    .get("title")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| label.clone());
                Ok(PendingApprovalRow {
                    run_id: row.get(0)?,
                    iteration: row.get(2)?,
                    workflow_name: row.get(3)?,
                    run_status: row.get(4)?,
                    request_title: title,
                    request_summary: request
                        .get("summary")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    requested_at_ms,
                    waiting_ms: (now - requested_at_ms).max(0),
                    note: None,
                    decided_by: None,
                    label,
                    node_id,
                    request,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Requested (undecided) approvals of one run: (node id, requested at
    /// ms), oldest first.
    pub fn requested_approvals(&self, run_id: &RunId) -> Result<Vec<(String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT node_id, COALESCE(requested_at_ms, 0) FROM approvals
             WHERE run_id = ?1 AND status = 'requested'
             ORDER BY requested_at_ms, node_id, iteration",
        )?;
        let rows = stmt
            .query_map([run_id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Component hashes a run has used, in first-use order.
    pub fn run_versions(&self, run_id: &RunId) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT hash FROM run_versions WHERE run_id = ?1 ORDER BY first_used_at_ms, hash",
        )?;
        let rows = stmt
            .query_map([run_id.as_str()], |row| row.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Bytes a run has stored: its events, its nodes' outputs, the frame
    /// trees its frames name and its journaled HTTP calls. What the engine counts against a run's
    /// stored-bytes limit when it resumes the run.
    pub fn stored_bytes(&self, run_id: &RunId) -> Result<u64, StoreError> {
        let bytes: i64 = self
            .conn
            .prepare_cached(
                "SELECT
                   (SELECT COALESCE(SUM(LENGTH(CAST(payload_json AS BLOB))), 0)
                      FROM events WHERE run_id = ?1)
                 + (SELECT COALESCE(SUM(LENGTH(CAST(output_json AS BLOB))), 0)
                      FROM nodes WHERE run_id = ?1)
                 + (SELECT COALESCE(SUM(LENGTH(CAST(tree_json AS BLOB))
                                      + LENGTH(CAST(task_index_json AS BLOB))), 0)
                      FROM frame_trees WHERE tree_hash IN (
                        SELECT json_extract(payload_json, '$.xmlHash') FROM events
                         WHERE run_id = ?1 AND type = 'FrameCommitted'))
                 + (SELECT COALESCE(SUM(LENGTH(request_digest) + LENGTH(CAST(headers_json AS BLOB))
                                      + LENGTH(body)), 0)
                      FROM http_calls WHERE run_id = ?1)",
            )?
            .query_row([run_id.as_str()], |row| row.get(0))?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// The approval request of a node, if any.
    pub fn approval(
        &self,
        run_id: &RunId,
        key: &NodeKey,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT status, note, decided_by, request_json FROM approvals
                 WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            )?
            .query_row(
                params![run_id.as_str(), key.node_id, key.iteration],
                |row| {
                    let status: String = row.get(0)?;
                    Ok(ApprovalRow {
                        key: key.clone(),
                        status: ApprovalStatus::parse(&status).unwrap_or(ApprovalStatus::Requested),
                        note: row.get(1)?,
                        decided_by: row.get(2)?,
                        request_json: row.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Newest runs first, skipping `offset`, optionally filtered by status
    /// and by resolved workflow path (the gateway's workflow key).
    pub fn runs_page(
        &self,
        limit: u32,
        offset: u32,
        status: Option<&str>,
        workflow_path: Option<&str>,
    ) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow_path = ?2)
             ORDER BY created_at_ms DESC, rowid DESC LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt
            .query_map(params![status, workflow_path, limit, offset], run_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Non-terminal runs of a workflow path with a node waiting for the
    /// signal `signal_name`, oldest first.
    pub fn runs_waiting_for_signal(
        &self,
        workflow_path: &str,
        signal_name: &str,
    ) -> Result<Vec<RunId>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT r.run_id, r.created_at_ms FROM runs r
             JOIN nodes n ON n.run_id = r.run_id AND n.state = 'waiting-event'
             WHERE r.workflow_path = ?1 AND r.status NOT IN ('finished', 'failed', 'cancelled')
               AND EXISTS (SELECT 1 FROM events e
                   WHERE e.run_id = r.run_id AND e.type = 'NodeWaitingEvent'
                     AND json_extract(e.payload_json, '$.nodeId') = n.node_id
                     AND json_extract(e.payload_json, '$.signalName') = ?2)
             ORDER BY r.created_at_ms, r.run_id",
        )?;
        let ids = stmt
            .query_map(params![workflow_path, signal_name], |row| {
                row.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter()
            .map(|id| RunId::parse(&id).map_err(StoreError::Corrupt))
            .collect()
    }

    /// Gateway cron schedules, oldest first.
    pub fn crons(&self) -> Result<Vec<CronRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT cron_id, pattern, workflow_key, enabled, created_at_ms, last_run_at_ms,
                    next_run_at_ms, error_json
             FROM gateway_crons ORDER BY created_at_ms, cron_id",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok(CronRow {
                    cron_id: row.get(0)?,
                    pattern: row.get(1)?,
                    workflow_key: row.get(2)?,
                    enabled: row.get(3)?,
                    created_at_ms: row.get(4)?,
                    last_run_at_ms: row.get(5)?,
                    next_run_at_ms: row.get(6)?,
                    error_json: row.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Counts runs per status (for metrics).
    pub fn run_status_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT status, COUNT(*) FROM runs GROUP BY status")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Runs `PRAGMA integrity_check` and returns its verdict (`"ok"` when sound).
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))?)
    }

    /// Decodes a run's input.
    pub fn decode(raw: &str) -> Result<Value, StoreError> {
        decode_json(raw)
    }
}

/// `["id::iteration", ...]` from a task index.
fn mounted_ids(task_index_json: &str) -> String {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(task_index_json) else {
        return "[]".into();
    };
    let ids: Vec<String> = items
        .iter()
        .filter_map(|item| {
            Some(format!(
                "{}::{}",
                item.get("nodeId")?.as_str()?,
                item.get("iteration")?.as_u64()?
            ))
        })
        .collect();
    serde_json::to_string(&ids).expect("strings serialize")
}
