//! The writer thread: applies commits, assigns event seqs, publishes.
//!
//! Commits that queue up while a transaction runs are applied together in the
//! next transaction (group commit), each inside its own savepoint so that one
//! refused commit (a `Conflict`) does not take the others down.
//!
//! Being the only writer, it keeps each run's next event seq in memory
//! instead of reading and updating a counter row on every commit (one page
//! less written per commit).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

mod decisions;
mod gateway;

use super::hub::{EventHub, StoredEvent};
use super::{Commit, CommitOutcome, NodeUpdate, Op, StoreError, WriteRequest, journal, retention};
use crate::model::{ErrorInfo, Event, EventBody, RunId, RunStatus, now_ms};
use decisions::{cancel_run, decide_approval};

/// Most commits folded into one transaction.
const MAX_GROUP: usize = 64;

/// Runs whose next seq is remembered before the memo is dropped and rebuilt.
const MAX_REMEMBERED_RUNS: usize = 10_000;

/// Next event seq per run: what committed transactions established, and what
/// the transaction being built adds on top.
#[derive(Default)]
struct Seqs {
    committed: HashMap<RunId, u64>,
    pending: HashMap<RunId, u64>,
}

impl Seqs {
    fn next(&mut self, tx: &Transaction<'_>, run_id: &RunId) -> Result<u64, StoreError> {
        if let Some(next) = self
            .pending
            .get(run_id)
            .or_else(|| self.committed.get(run_id))
        {
            return Ok(*next);
        }
        let next: Option<i64> = tx
            .prepare_cached(
                "SELECT (SELECT COALESCE(MAX(seq) + 1, 0) FROM events WHERE run_id = ?1)
                 FROM runs WHERE run_id = ?1",
            )?
            .query_row([run_id.as_str()], |row| row.get(0))
            .optional()?;
        let next =
            next.ok_or_else(|| StoreError::NotFound(format!("run {run_id} does not exist")))?;
        Ok(next as u64)
    }

    fn transaction_committed(&mut self) {
        if self.committed.len() > MAX_REMEMBERED_RUNS {
            self.committed.clear();
        }
        self.committed.extend(self.pending.drain());
    }

    fn transaction_failed(&mut self) {
        self.pending.clear();
    }

    /// The run is gone: a new run with its id starts again from seq 0.
    fn forget(&mut self, run_id: &RunId) {
        self.committed.remove(run_id);
        self.pending.remove(run_id);
    }
}

/// A commit and where its outcome goes.
struct Queued {
    commit: Commit,
    reply: tokio::sync::oneshot::Sender<Result<CommitOutcome, StoreError>>,
}

pub(super) fn run(mut conn: Connection, path: &Path, rx: Receiver<WriteRequest>, hub: EventHub) {
    let mut seqs = Seqs::default();
    let mut next = rx.recv().ok();
    while let Some(request) = next.take() {
        let (commit, reply) = match request {
            WriteRequest::Maintain { job, reply } => {
                let _ = reply.send(retention::maintain(&conn, path, job));
                next = rx.recv().ok();
                continue;
            }
            WriteRequest::Commit { commit, reply } => (commit, reply),
        };
        let mut batch = vec![Queued { commit, reply }];
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(WriteRequest::Commit { commit, reply }) => batch.push(Queued { commit, reply }),
                // Maintenance runs outside a transaction: after this batch.
                Ok(maintain) => {
                    next = Some(maintain);
                    break;
                }
                Err(_) => break,
            }
        }
        apply_batch(&mut conn, batch, &hub, &mut seqs);
        if next.is_none() {
            next = rx.recv().ok();
        }
    }
}

fn apply_batch(conn: &mut Connection, batch: Vec<Queued>, hub: &EventHub, seqs: &mut Seqs) {
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            for request in batch {
                let _ = request
                    .reply
                    .send(Err(StoreError::Unavailable(message.clone())));
            }
            return;
        }
    };
    let mut results = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut storage_failure = None;
    for request in batch {
        if storage_failure.is_none() {
            let result = apply_in_savepoint(&tx, &request.commit, seqs);
            // The storage failed (disk full, read-only...): SQLite may have
            // rolled the whole transaction back already, and the commits
            // after this one would then run outside it, one by one. Nothing
            // of the batch is committed; every commit is refused.
            if let Err(StoreError::Unavailable(message)) = &result {
                storage_failure = Some(message.clone());
            } else if tx.is_autocommit() {
                storage_failure = Some("the transaction was rolled back".to_string());
            }
            results.push(result);
        }
        replies.push(request.reply);
    }
    if let Some(message) = storage_failure {
        let _ = tx.rollback();
        seqs.transaction_failed();
        tracing::error!(error = %message, "store commit failed");
        for reply in replies {
            let _ = reply.send(Err(StoreError::Unavailable(message.clone())));
        }
        return;
    }
    match tx.commit() {
        Ok(()) => {
            seqs.transaction_committed();
            for (result, reply) in results.into_iter().zip(replies) {
                if let Ok(outcome) = &result {
                    hub.publish(&outcome.events);
                }
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            seqs.transaction_failed();
            tracing::error!(error = %e, "store commit failed");
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(message.clone())));
            }
        }
    }
}

fn apply_in_savepoint(
    tx: &Transaction<'_>,
    commit: &Commit,
    seqs: &mut Seqs,
) -> Result<CommitOutcome, StoreError> {
    tx.prepare_cached("SAVEPOINT one_commit")?.execute([])?;
    match apply(tx, commit, seqs) {
        Ok(outcome) => {
            tx.prepare_cached("RELEASE one_commit")?.execute([])?;
            if let Some(last) = outcome.events.last() {
                seqs.pending.insert(commit.run_id.clone(), last.seq + 1);
            }
            if outcome.collected.is_some_and(|step| step.done) {
                seqs.forget(&commit.run_id);
            }
            Ok(outcome)
        }
        Err(e) => {
            if tx.is_autocommit() {
                // SQLite rolled the transaction back on its own (disk full,
                // I/O error): there is no savepoint left to roll back to.
                return Err(e);
            }
            tx.prepare_cached("ROLLBACK TO one_commit")?.execute([])?;
            tx.prepare_cached("RELEASE one_commit")?.execute([])?;
            Err(e)
        }
    }
}

/// Collects the events a commit produces, then stores them with seqs.
struct Pending<'a> {
    run_id: &'a RunId,
    events: Vec<EventBody>,
    outcome: CommitOutcome,
}

fn apply(
    tx: &Transaction<'_>,
    commit: &Commit,
    seqs: &mut Seqs,
) -> Result<CommitOutcome, StoreError> {
    let now = now_ms();
    let mut pending = Pending {
        run_id: &commit.run_id,
        events: Vec::new(),
        outcome: CommitOutcome::default(),
    };
    for op in &commit.ops {
        apply_op(tx, &mut pending, op, now)?;
    }
    pending.events.extend(commit.events.iter().cloned());
    let Pending {
        run_id,
        events,
        mut outcome,
    } = pending;
    if !events.is_empty() {
        let first = seqs.next(tx, run_id)?;
        outcome.events = store_events(tx, run_id, first, events, now)?;
    }
    Ok(outcome)
}

fn store_events(
    tx: &Transaction<'_>,
    run_id: &RunId,
    first: u64,
    events: Vec<EventBody>,
    now: i64,
) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (run_id, seq, timestamp_ms, type, payload_json) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut stored = Vec::with_capacity(events.len());
    for (offset, body) in events.into_iter().enumerate() {
        let seq = first + offset as u64;
        let event_type = body.type_name().to_string();
        let event = Event {
            run_id: run_id.clone(),
            seq,
            timestamp_ms: now,
            body,
        };
        let json = event.to_json();
        insert.execute(params![run_id.as_str(), seq as i64, now, event_type, json])?;
        stored.push(Arc::new(StoredEvent {
            run_id: run_id.clone(),
            seq,
            event_type,
            timestamp_ms: now,
            json,
        }));
    }
    Ok(stored)
}

fn run_status(
    tx: &Transaction<'_>,
    run_id: &RunId,
) -> Result<(RunStatus, Option<String>), StoreError> {
    let row: Option<(String, Option<String>)> = tx
        .prepare_cached("SELECT status, owner_id FROM runs WHERE run_id = ?1")?
        .query_row([run_id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (status, owner) =
        row.ok_or_else(|| StoreError::NotFound(format!("run {run_id} does not exist")))?;
    let status = RunStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown run status {status:?}")))?;
    Ok((status, owner))
}

fn error_json(error: &Option<ErrorInfo>) -> Option<String> {
    error
        .as_ref()
        .map(|e| serde_json::to_string(e).expect("errors serialize"))
}

fn apply_op(
    tx: &Transaction<'_>,
    pending: &mut Pending<'_>,
    op: &Op,
    now: i64,
) -> Result<(), StoreError> {
    let run = pending.run_id.as_str();
    match op {
        Op::InsertRun(new) => {
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO runs (run_id, workflow_name, workflow_path, workflow_hash, status,
                    input_json, config_json, auth_json, created_at_ms, started_at_ms, heartbeat_at_ms, owner_id)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?8, ?8, ?9)",
                params![
                    new.run_id.as_str(),
                    new.workflow_name,
                    new.workflow_path,
                    new.workflow_hash,
                    new.input_json,
                    new.config_json,
                    new.auth_json,
                    now,
                    new.owner_id
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "run {} already exists",
                    new.run_id
                )));
            }
        }
        Op::ClaimRun {
            owner_id,
            workflow_hash,
            steal_running,
        } => {
            let (status, owner) = run_status(tx, pending.run_id)?;
            if status == RunStatus::Running && !*steal_running && owner.as_deref() != Some(owner_id)
            {
                return Err(StoreError::Conflict(format!(
                    "run {run} is already running"
                )));
            }
            tx.execute(
                "UPDATE runs SET status = 'running', owner_id = ?2, heartbeat_at_ms = ?3,
                    started_at_ms = COALESCE(started_at_ms, ?3), finished_at_ms = NULL,
                    error_json = NULL, cancel_requested_at_ms = NULL, workflow_hash = ?4
                 WHERE run_id = ?1",
                params![run, owner_id, now, workflow_hash],
            )?;
        }
        Op::AssertOwner { owner_id } => {
            let (status, owner) = run_status(tx, pending.run_id)?;
            if status != RunStatus::Running || owner.as_deref() != Some(owner_id.as_str()) {
                return Err(StoreError::Conflict(format!(
                    "run {run} is {status} and no longer driven by this host"
                )));
            }
        }
        Op::RecordVersion { hash } => {
            tx.execute(
                "INSERT OR IGNORE INTO run_versions (run_id, hash, first_used_at_ms) VALUES (?1, ?2, ?3)",
                params![run, hash, now],
            )?;
        }
        Op::SetRunStatus { status, error } => {
            let (current, _) = run_status(tx, pending.run_id)?;
            if current.is_terminal() && *status != current {
                return Err(StoreError::Conflict(format!(
                    "run {run} is already {current}"
                )));
            }
            if status.is_terminal() {
                tx.execute(
                    "UPDATE runs SET status = ?2, error_json = ?3, finished_at_ms = ?4,
                        heartbeat_at_ms = NULL, owner_id = NULL WHERE run_id = ?1",
                    params![run, status.as_str(), error_json(error), now],
                )?;
            } else if status.is_waiting() {
                tx.execute(
                    "UPDATE runs SET status = ?2, heartbeat_at_ms = NULL, owner_id = NULL WHERE run_id = ?1",
                    params![run, status.as_str()],
                )?;
            } else {
                tx.execute(
                    "UPDATE runs SET status = ?2 WHERE run_id = ?1",
                    params![run, status.as_str()],
                )?;
            }
        }
        Op::UpsertNode(NodeUpdate {
            key,
            state,
            label,
            last_attempt,
            output_json,
            error,
            retry_at_ms,
        }) => {
            let (set_retry, retry) = match retry_at_ms {
                Some(value) => (1, *value),
                None => (0, None),
            };
            tx.prepare_cached(
                "INSERT INTO nodes (run_id, node_id, iteration, state, last_attempt, updated_at_ms,
                    label, output_json, error_json, retry_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?11)
                 ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET
                    state = excluded.state,
                    updated_at_ms = excluded.updated_at_ms,
                    last_attempt = COALESCE(excluded.last_attempt, nodes.last_attempt),
                    label = COALESCE(excluded.label, nodes.label),
                    output_json = COALESCE(excluded.output_json, nodes.output_json),
                    error_json = COALESCE(excluded.error_json, nodes.error_json),
                    retry_at_ms = CASE WHEN ?10 THEN excluded.retry_at_ms ELSE nodes.retry_at_ms END",
            )?
            .execute(params![
                run,
                key.node_id,
                key.iteration,
                state.as_str(),
                last_attempt,
                now,
                label,
                output_json,
                error_json(error),
                set_retry,
                retry
            ])?;
        }
        Op::StartAttempt {
            key,
            attempt,
            meta_json,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO attempts (run_id, node_id, iteration, attempt, state, started_at_ms, meta_json)
                 VALUES (?1, ?2, ?3, ?4, 'in-progress', ?5, ?6)",
            )?
            .execute(params![run, key.node_id, key.iteration, attempt, now, meta_json])?;
            journal::on_attempt_start(tx, run, key, *attempt)?;
        }
        Op::RecordHttpCall { key, call } => journal::record(tx, run, key, call, now)?,
        Op::DropHttpCalls { key, from_seq } => journal::drop_from(tx, run, key, *from_seq)?,
        Op::EndAttempt {
            key,
            attempt,
            state,
            error,
        } => {
            tx.prepare_cached(
                "UPDATE attempts SET state = ?5, finished_at_ms = ?6, error_json = ?7
                 WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3 AND attempt = ?4",
            )?
            .execute(params![
                run,
                key.node_id,
                key.iteration,
                attempt,
                state.as_str(),
                now,
                error_json(error)
            ])?;
        }
        Op::AbandonInterruptedAttempts => {
            let interrupted: Vec<(String, u32)> = tx
                .prepare(
                    "UPDATE attempts SET state = 'cancelled', finished_at_ms = ?2,
                        error_json = '{\"name\":\"SmithersError\",\"code\":\"ATTEMPT_INTERRUPTED\",\"message\":\"the host stopped while this attempt was running\"}'
                     WHERE run_id = ?1 AND state = 'in-progress' RETURNING node_id, iteration",
                )?
                .query_map(params![run, now], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (node_id, iteration) in interrupted {
                tx.execute(
                    "UPDATE nodes SET state = 'pending', updated_at_ms = ?4
                     WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3 AND state = 'in-progress'",
                    params![run, node_id, iteration, now],
                )?;
            }
        }
        Op::StoreTree {
            tree_hash,
            tree_json,
            task_index_json,
        } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO frame_trees (tree_hash, tree_json, task_index_json) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![tree_hash, tree_json, task_index_json])?;
        }
        Op::RequestApproval {
            key,
            label,
            request_json,
        } => {
            tx.execute(
                "INSERT OR IGNORE INTO approvals (run_id, node_id, iteration, status, label, requested_at_ms, request_json)
                 VALUES (?1, ?2, ?3, 'requested', ?4, ?5, ?6)",
                params![run, key.node_id, key.iteration, label, now, request_json],
            )?;
        }
        Op::DecideApproval {
            key,
            approved,
            note,
            decided_by,
        } => decide_approval(tx, pending, key, *approved, note, decided_by, now)?,
        Op::InsertSignal {
            name,
            payload_json,
            correlation_id,
            received_by,
        } => {
            let seq: i64 = tx
                .query_row(
                    "UPDATE runs SET next_signal_seq = next_signal_seq + 1 WHERE run_id = ?1
                     RETURNING next_signal_seq - 1",
                    [run],
                    |row| row.get(0),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("run {run} does not exist")))?;
            tx.execute(
                "INSERT INTO signals (run_id, seq, signal_name, correlation_id, payload_json, received_at_ms, received_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![run, seq, name, correlation_id, payload_json, now, received_by],
            )?;
            pending.outcome.signal_seq = Some(seq as u64);
            pending.outcome.signal_received_at_ms = Some(now);
            pending.events.push(EventBody::SignalReceived {
                signal_name: name.clone(),
                signal_seq: seq as u64,
                correlation_id: correlation_id.clone(),
            });
        }
        Op::ConsumeSignal { seq, key } => {
            let updated = tx.execute(
                "UPDATE signals SET consumed_node_id = ?3, consumed_iteration = ?4
                 WHERE run_id = ?1 AND seq = ?2 AND consumed_node_id IS NULL",
                params![run, *seq as i64, key.node_id, key.iteration],
            )?;
            if updated == 0 {
                return Err(StoreError::Conflict(format!(
                    "signal {seq} of run {run} was already consumed"
                )));
            }
        }
        Op::SetLoop {
            loop_id,
            iteration,
            done,
        } => {
            tx.execute(
                "INSERT INTO loops (run_id, loop_id, iteration, done, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, loop_id) DO UPDATE SET
                    iteration = excluded.iteration, done = excluded.done, updated_at_ms = excluded.updated_at_ms",
                params![run, loop_id, iteration, done, now],
            )?;
        }
        Op::CancelRun => cancel_run(tx, pending, now)?,
        Op::Heartbeat { owner_id } => {
            tx.execute(
                "UPDATE runs SET heartbeat_at_ms = ?2 WHERE owner_id = ?1 AND status = 'running'",
                params![owner_id, now],
            )?;
        }
        Op::UpsertCron { .. }
        | Op::DeleteCron { .. }
        | Op::ClaimCronTick { .. }
        | Op::RecordCronRun { .. }
        | Op::ClaimWebhookDelivery { .. }
        | Op::ReleaseWebhookDelivery { .. } => gateway::apply(tx, op, now)?,
        Op::CollectRun { rule, max_rows } => {
            let step = retention::collect_step(tx, pending.run_id, rule, *max_rows)?;
            pending.outcome.collected = Some(step);
        }
    }
    Ok(())
}
