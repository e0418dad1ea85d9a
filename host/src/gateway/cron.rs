//! Cron schedules: durable in SQLite, fired by a polling scheduler that
//! claims each tick in the database before starting anything.
//!
//! A schedule row holds its next tick (`next_run_at_ms`). Firing is: read the
//! due rows, then for each one commit `ClaimCronTick` (an UPDATE that moves
//! the tick forward only if it still holds the value read), and only if that
//! commit succeeded start the run — with a run id derived from the schedule
//! and the tick, so even a bug elsewhere could not start one tick twice. A
//! restart reads the same rows: a tick claimed before the restart is never
//! fired again, and ticks missed while the gateway was down collapse into one
//! catch-up fire. Patterns have 5 fields (or 6, seconds first) and are
//! evaluated in UTC.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use croner::Cron;
use serde_json::{Value, json};

use super::Gateway;
use super::auth::Identity;
use super::events::GatewayEvent;
use super::rpc::{Caller, RpcCode, RpcError, required_string, run_input, string_param};
use crate::model::now_ms;
use crate::store::{CronRow, Op, StoreError};

/// Who cron runs are started by (`ctx.auth.triggeredBy`).
pub const CRON_TRIGGER: &str = "cron:gateway";

/// Parses a 5- or 6-field pattern.
pub fn parse_pattern(pattern: &str) -> Result<Cron, String> {
    Cron::new(pattern.trim())
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("invalid cron pattern {pattern:?}: {e}"))
}

/// The first tick strictly after `after_ms`.
pub fn next_tick(pattern: &str, after_ms: i64) -> Option<i64> {
    let cron = parse_pattern(pattern).ok()?;
    let after = Utc.timestamp_millis_opt(after_ms).single()?;
    cron.find_next_occurrence(&after, false)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The id of a schedule declared in the config file.
pub fn config_cron_id(key: &str) -> String {
    format!("gateway:{key}")
}

/// Brings the config's schedules into the database: upserts `gateway:<key>`
/// for each scheduled workflow (an unchanged pattern keeps its next tick, so
/// a restart neither skips nor repeats it) and deletes `gateway:*` rows whose
/// workflow lost its schedule.
pub async fn sync_config(gateway: &Gateway) -> Result<(), StoreError> {
    let existing = gateway.engine.store().read(|r| r.crons()).await?;
    let now = now_ms();
    let mut ops = Vec::new();
    for workflow in gateway.workflows() {
        if let Some(pattern) = &workflow.config.schedule {
            ops.push(Op::UpsertCron {
                cron_id: config_cron_id(&workflow.key),
                workflow_key: workflow.key.clone(),
                pattern: pattern.trim().to_string(),
                enabled: true,
                next_run_at_ms: next_tick(pattern, now),
            });
        }
    }
    for row in existing {
        let declared = row
            .cron_id
            .strip_prefix("gateway:")
            .and_then(|key| gateway.registered(key))
            .is_some_and(|w| w.config.schedule.is_some());
        if row.cron_id.starts_with("gateway:") && !declared {
            ops.push(Op::DeleteCron {
                cron_id: row.cron_id,
            });
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    gateway.engine.store().apply_unscoped(ops).await
}

/// Polls due schedules until the gateway shuts down.
pub async fn scheduler(gateway: Arc<Gateway>, poll: Duration) {
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = gateway.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = fire_due(&gateway).await {
            tracing::warn!(error = %e, "cron sweep failed");
        }
    }
}

async fn fire_due(gateway: &Gateway) -> Result<(), StoreError> {
    let now = now_ms();
    let rows = gateway.engine.store().read(|r| r.crons()).await?;
    for row in rows {
        let Some(tick) = row.next_run_at_ms.filter(|t| *t <= now) else {
            continue;
        };
        if !row.enabled {
            continue;
        }
        let claim = Op::ClaimCronTick {
            cron_id: row.cron_id.clone(),
            expected_next_run_at_ms: tick,
            next_run_at_ms: next_tick(&row.pattern, now.max(tick)),
        };
        match gateway.engine.store().apply_unscoped(vec![claim]).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
        fire(gateway, &row, tick).await;
    }
    Ok(())
}

/// Starts the run of a claimed tick (run id `cron-<id>-<tick>`).
async fn fire(gateway: &Gateway, row: &CronRow, tick: i64) {
    let run_id = format!("cron-{}-{tick}", row.cron_id.replace(['/', ':'], "-"));
    let (identity, triggered_by) = Identity::system(CRON_TRIGGER);
    let started = gateway
        .start_run(
            &row.workflow_key,
            json!({}),
            identity.run_auth(&triggered_by),
            Some(run_id),
            None,
        )
        .await;
    match started {
        Ok(run) => {
            gateway.metrics.cron_fired();
            tracing::info!(cron = %row.cron_id, workflow = %row.workflow_key, run = %run["runId"], "cron fired");
            gateway.events.publish(GatewayEvent::global(
                "cron.triggered",
                json!({ "cronId": row.cron_id, "workflow": row.workflow_key, "runId": run["runId"] }),
            ));
        }
        Err(e) => {
            tracing::error!(cron = %row.cron_id, error = %e.message, "cron fire failed");
            let error = json!({ "code": e.code, "message": e.message }).to_string();
            let _ = gateway
                .engine
                .store()
                .apply_unscoped(vec![Op::RecordCronRun {
                    cron_id: row.cron_id.clone(),
                    error_json: Some(error),
                }])
                .await;
        }
    }
}

fn wire(row: CronRow) -> Value {
    let mut value = serde_json::to_value(&row).expect("cron rows serialize");
    value["workflowPath"] = json!(format!("gateway:{}", row.workflow_key));
    value
}

async fn find(gateway: &Gateway, cron_id: &str) -> Result<CronRow, RpcError> {
    let rows = gateway.engine.store().read(|r| r.crons()).await?;
    rows.into_iter()
        .find(|r| r.cron_id == cron_id)
        .ok_or_else(|| RpcError::new(RpcCode::NotFound, format!("Cron not found: {cron_id}")))
}

/// `cronList {filter?: {workflow?}}`.
pub async fn list(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let workflow = params
        .get("filter")
        .and_then(|f| string_param(f, "workflow"));
    let rows = gateway.engine.store().read(|r| r.crons()).await?;
    Ok(Value::Array(
        rows.into_iter()
            .filter(|r| workflow.as_deref().is_none_or(|w| r.workflow_key == w))
            .map(wire)
            .collect(),
    ))
}

/// `cronCreate {workflow, pattern, cronId?, enabled?}`.
pub async fn create(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let (Some(key), Some(pattern)) = (
        string_param(params, "workflow"),
        string_param(params, "pattern"),
    ) else {
        return Err(RpcError::invalid("workflow and pattern are required"));
    };
    if gateway.registered(&key).is_none() {
        return Err(RpcError::new(
            RpcCode::NotFound,
            format!("Unknown workflow: {key}"),
        ));
    }
    parse_pattern(&pattern).map_err(RpcError::invalid)?;
    let cron_id =
        string_param(params, "cronId").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let enabled = params
        .get("enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    gateway
        .engine
        .store()
        .apply_unscoped(vec![Op::UpsertCron {
            cron_id: cron_id.clone(),
            workflow_key: key,
            pattern: pattern.trim().to_string(),
            enabled,
            next_run_at_ms: next_tick(&pattern, now_ms()),
        }])
        .await?;
    Ok(wire(find(gateway, &cron_id).await?))
}

/// `cronDelete {cronId}`.
pub async fn delete(gateway: &Gateway, params: &Value) -> Result<Value, RpcError> {
    let cron_id = required_string(params, "cronId")?;
    match gateway
        .engine
        .store()
        .apply_unscoped(vec![Op::DeleteCron {
            cron_id: cron_id.clone(),
        }])
        .await
    {
        Ok(()) => Ok(json!({ "cronId": cron_id, "removed": true })),
        Err(StoreError::NotFound(_)) => Err(RpcError::new(
            RpcCode::NotFound,
            format!("Cron not found: {cron_id}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `cronRun {cronId? | workflow, input?}`: starts a run now, as the caller.
pub async fn trigger(
    gateway: &Gateway,
    caller: &Caller,
    params: &Value,
) -> Result<Value, RpcError> {
    let cron = match string_param(params, "cronId") {
        Some(id) => Some(find(gateway, &id).await?),
        None => None,
    };
    let key = cron
        .as_ref()
        .map(|c| c.workflow_key.clone())
        .or_else(|| string_param(params, "workflow"))
        .ok_or_else(|| RpcError::invalid("cronId or workflow is required"))?;
    let input = run_input(params.get("input"))?;
    let triggered_by = caller.identity.triggered_by();
    let run = gateway
        .start_run(
            &key,
            input,
            caller.identity.run_auth(&triggered_by),
            None,
            None,
        )
        .await?;
    if let Some(cron) = cron {
        gateway
            .engine
            .store()
            .apply_unscoped(vec![Op::RecordCronRun {
                cron_id: cron.cron_id,
                error_json: None,
            }])
            .await?;
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_with_and_without_seconds_give_the_next_tick() {
        // 2026-01-05 08:00:00 UTC is a Monday.
        let monday_8 = Utc
            .with_ymd_and_hms(2026, 1, 5, 8, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(next_tick("0 8 * * 1-5", monday_8 - 1), Some(monday_8));
        assert_eq!(
            next_tick("0 8 * * 1-5", monday_8),
            Some(monday_8 + 24 * 3600 * 1000)
        );
        assert_eq!(next_tick("* * * * * *", 1_000), Some(2_000));
        assert_eq!(next_tick("* * * * * *", 1_500), Some(2_000));
        assert!(parse_pattern("nope").is_err());
    }
}
