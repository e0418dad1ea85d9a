//! Ops that decide for a run's parked nodes: an approval decision, and a
//! cancellation (which denies the requested approvals on its way).

use rusqlite::{OptionalExtension, Transaction, params};

use super::{Pending, run_status};
use crate::model::{ApprovalStatus, AttemptState, EventBody, NodeKey, NodeState};
use crate::store::StoreError;

pub(super) fn decide_approval(
    tx: &Transaction<'_>,
    pending: &mut Pending<'_>,
    key: &NodeKey,
    approved: bool,
    note: &Option<String>,
    decided_by: &Option<String>,
    now: i64,
) -> Result<(), StoreError> {
    let run = pending.run_id.as_str();
    let (status, _) = run_status(tx, pending.run_id)?;
    if status.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "node {} is not waiting for approval: run {run} is {status}",
            key.node_id
        )));
    }
    let node_state: Option<String> = tx
        .query_row(
            "SELECT state FROM nodes WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            params![run, key.node_id, key.iteration],
            |row| row.get(0),
        )
        .optional()?;
    let updated = if node_state.as_deref() == Some(NodeState::WaitingApproval.as_str()) {
        tx.execute(
            "UPDATE approvals SET status = ?4, decided_at_ms = ?5, note = ?6, decided_by = ?7
             WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3 AND status = 'requested'",
            params![
                run,
                key.node_id,
                key.iteration,
                if approved {
                    ApprovalStatus::Approved.as_str()
                } else {
                    ApprovalStatus::Denied.as_str()
                },
                now,
                note,
                decided_by
            ],
        )?
    } else {
        0
    };
    if updated == 0 {
        return Err(StoreError::Conflict(format!(
            "node {} (iteration {}) is not waiting for approval",
            key.node_id, key.iteration
        )));
    }
    tx.execute(
        "UPDATE nodes SET state = 'pending', updated_at_ms = ?4
         WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
        params![run, key.node_id, key.iteration, now],
    )?;
    let (node_id, iteration, note, decided_by) = (
        key.node_id.to_string(),
        key.iteration,
        note.clone(),
        decided_by.clone(),
    );
    pending.events.push(if approved {
        EventBody::ApprovalGranted {
            node_id,
            iteration,
            note,
            decided_by,
        }
    } else {
        EventBody::ApprovalDenied {
            node_id,
            iteration,
            note,
            decided_by,
        }
    });
    Ok(())
}

pub(super) fn cancel_run(
    tx: &Transaction<'_>,
    pending: &mut Pending<'_>,
    now: i64,
) -> Result<(), StoreError> {
    let run = pending.run_id.as_str();
    let (status, _) = run_status(tx, pending.run_id)?;
    if status.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "run {run} is already {status}"
        )));
    }
    let attempts: Vec<(String, u32, u32)> = tx
        .prepare(
            "UPDATE attempts SET state = ?2, finished_at_ms = ?3
             WHERE run_id = ?1 AND state = 'in-progress' RETURNING node_id, iteration, attempt",
        )?
        .query_map(params![run, AttemptState::Cancelled.as_str(), now], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    for (node_id, iteration, attempt) in attempts {
        tx.execute(
            "UPDATE nodes SET state = 'cancelled', updated_at_ms = ?4
             WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            params![run, node_id, iteration, now],
        )?;
        pending.events.push(EventBody::NodeCancelled {
            node_id,
            iteration,
            attempt: Some(attempt),
            reason: "run-cancelled".into(),
        });
    }
    let approvals: Vec<(String, u32)> = tx
        .prepare(
            "UPDATE approvals SET status = 'denied', decided_at_ms = ?2, note = 'run cancelled',
                decided_by = 'smithers:cancel'
             WHERE run_id = ?1 AND status = 'requested' RETURNING node_id, iteration",
        )?
        .query_map(params![run, now], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (node_id, iteration) in approvals {
        tx.execute(
            "UPDATE nodes SET state = 'cancelled', updated_at_ms = ?4
             WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            params![run, node_id, iteration, now],
        )?;
        pending.events.push(EventBody::ApprovalDenied {
            node_id: node_id.clone(),
            iteration,
            note: Some("run cancelled".into()),
            decided_by: Some("smithers:cancel".into()),
        });
        pending.events.push(EventBody::NodeCancelled {
            node_id,
            iteration,
            attempt: None,
            reason: "run-cancelled".into(),
        });
    }
    tx.execute(
        "UPDATE nodes SET state = 'cancelled', updated_at_ms = ?2
         WHERE run_id = ?1 AND state IN ('waiting-event')",
        params![run, now],
    )?;
    tx.execute(
        "UPDATE runs SET status = 'cancelled', finished_at_ms = ?2, cancel_requested_at_ms = ?2,
            heartbeat_at_ms = NULL, owner_id = NULL WHERE run_id = ?1",
        params![run, now],
    )?;
    pending.events.push(EventBody::RunCancelled {});
    Ok(())
}
