//! The gateway's own rows (cron schedules, webhook deliveries): ops that
//! touch no run, applied by the writer like any other.

use rusqlite::{Transaction, params};

use crate::store::{Op, StoreError};

/// Applies a gateway op (the writer dispatches only those here).
pub(super) fn apply(tx: &Transaction<'_>, op: &Op, now: i64) -> Result<(), StoreError> {
    match op {
        Op::UpsertCron {
            cron_id,
            workflow_key,
            pattern,
            enabled,
            next_run_at_ms,
        } => {
            tx.execute(
                "INSERT INTO gateway_crons (cron_id, workflow_key, pattern, enabled, created_at_ms, next_run_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (cron_id) DO UPDATE SET
                    workflow_key = excluded.workflow_key,
                    enabled = excluded.enabled,
                    next_run_at_ms = CASE WHEN gateway_crons.pattern = excluded.pattern
                        THEN gateway_crons.next_run_at_ms ELSE excluded.next_run_at_ms END,
                    pattern = excluded.pattern",
                params![cron_id, workflow_key, pattern, enabled, now, next_run_at_ms],
            )?;
        }
        Op::DeleteCron { cron_id } => {
            let deleted = tx.execute("DELETE FROM gateway_crons WHERE cron_id = ?1", [cron_id])?;
            if deleted == 0 {
                return Err(StoreError::NotFound(format!(
                    "cron {cron_id} does not exist"
                )));
            }
        }
        Op::ClaimCronTick {
            cron_id,
            expected_next_run_at_ms,
            next_run_at_ms,
        } => {
            let claimed = tx.execute(
                "UPDATE gateway_crons SET next_run_at_ms = ?3, last_run_at_ms = ?4, error_json = NULL
                 WHERE cron_id = ?1 AND enabled = 1 AND next_run_at_ms = ?2",
                params![cron_id, expected_next_run_at_ms, next_run_at_ms, now],
            )?;
            if claimed == 0 {
                return Err(StoreError::Conflict(format!(
                    "tick {expected_next_run_at_ms} of cron {cron_id} is already claimed"
                )));
            }
        }
        Op::RecordCronRun {
            cron_id,
            error_json,
        } => {
            let updated = tx.execute(
                "UPDATE gateway_crons SET last_run_at_ms = ?2, error_json = ?3 WHERE cron_id = ?1",
                params![cron_id, now, error_json],
            )?;
            if updated == 0 {
                return Err(StoreError::NotFound(format!(
                    "cron {cron_id} does not exist"
                )));
            }
        }
        Op::ClaimWebhookDelivery {
            workflow_key,
            delivery_key,
            expires_at_ms,
        } => {
            tx.prepare_cached("DELETE FROM gateway_webhook_deliveries WHERE expires_at_ms <= ?1")?
                .execute([now])?;
            let claimed = tx
                .prepare_cached(
                    "INSERT INTO gateway_webhook_deliveries
                        (workflow_key, delivery_key, received_at_ms, expires_at_ms)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?
                .execute(params![workflow_key, delivery_key, now, expires_at_ms])?;
            if claimed == 0 {
                return Err(StoreError::Conflict(format!(
                    "webhook delivery {delivery_key} of {workflow_key} was already accepted"
                )));
            }
        }
        Op::ReleaseWebhookDelivery {
            workflow_key,
            delivery_key,
        } => {
            tx.execute(
                "DELETE FROM gateway_webhook_deliveries WHERE workflow_key = ?1 AND delivery_key = ?2",
                params![workflow_key, delivery_key],
            )?;
        }
        other => unreachable!("not a gateway op: {other:?}"),
    }
    Ok(())
}
