//! Read-side views of runs that clients see but nothing stores: the derived
//! `runState` (Smithers' `RunStateView`) and wire timestamps.
//!
//! Everything here but [`RunFacts::read`] is a pure function of rows already
//! read, so it is cheap to call per listed run and testable without a
//! database. It must never write.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::Engine;
use crate::model::{NodeState, RunStatus};
use crate::sandbox::SandboxPolicy;
use crate::store::{Reader, RunRow, StoreError};

/// A `running` run whose lease is older than this is considered stale
/// (Smithers' `RUN_HEARTBEAT_STALE_MS`).
pub const HEARTBEAT_STALE_MS: i64 = 30_000;

/// Smithers' derived run state (`GET /v1/runs/:id` → `runState`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStateView {
    /// The run.
    pub run_id: String,
    /// When this view was computed (ISO 8601, UTC, milliseconds).
    pub computed_at: String,
    /// `running`, `waiting-approval`, `waiting-event`, `stale`, `orphaned`,
    /// `failed`, `cancelled`, `succeeded` or `unknown`.
    pub state: &'static str,
    /// What the run waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Value>,
    /// Why the run looks unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<Value>,
}

/// What the derivation needs beyond the run row.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// Pending approvals of the run: (node id, requested at ms), oldest first.
    pub pending_approvals: Vec<(String, i64)>,
    /// A node waiting for a signal, with the signal name when known.
    pub waiting_event_node: Option<String>,
}

impl RunFacts {
    /// Reads what [`derive_run_state`] needs beyond the row, only when the
    /// run's status makes it relevant (so listing finished runs reads nothing).
    pub fn read(r: &Reader<'_>, run: &RunRow) -> Result<Self, StoreError> {
        let mut facts = Self::default();
        match run.status {
            RunStatus::WaitingApproval => {
                facts.pending_approvals = r.requested_approvals(&run.run_id)?
            }
            RunStatus::WaitingEvent => {
                facts.waiting_event_node = r
                    .nodes(&run.run_id)?
                    .into_iter()
                    .find(|n| n.state == NodeState::WaitingEvent)
                    .map(|n| n.key.node_id.to_string());
            }
            _ => {}
        }
        Ok(facts)
    }
}

/// Derives the run state from its row (Smithers `computeRunStateFromRow`,
/// contract §5.4). `owner_alive` tells whether a lease owner id names a live
/// process, to tell a `stale` run (owner alive but silent) from an `orphaned`
/// one.
pub fn derive_run_state(
    run: &RunRow,
    facts: &RunFacts,
    now_ms: i64,
    owner_alive: impl Fn(&str) -> bool,
) -> RunStateView {
    let (state, blocked, unhealthy) = match run.status {
        RunStatus::Finished => ("succeeded", None, None),
        RunStatus::Failed => ("failed", None, None),
        RunStatus::Cancelled => ("cancelled", None, None),
        RunStatus::WaitingApproval => {
            let blocked = facts.pending_approvals.first().map(|(node_id, at)| {
                json!({ "kind": "approval", "nodeId": node_id, "requestedAt": iso8601_ms(*at) })
            });
            ("waiting-approval", blocked, None)
        }
        RunStatus::WaitingEvent => {
            let blocked = match &facts.waiting_event_node {
                Some(node_id) => json!({ "kind": "event", "nodeId": node_id }),
                None => json!({ "kind": "external-trigger" }),
            };
            ("waiting-event", Some(blocked), None)
        }
        RunStatus::Running => {
            let last_alive = run
                .heartbeat_at_ms
                .unwrap_or(0)
                .max(run.started_at_ms.unwrap_or(0));
            if last_alive <= 0 {
                ("unknown", None, None)
            } else if now_ms - last_alive <= HEARTBEAT_STALE_MS {
                ("running", None, None)
            } else {
                let alive = run.runtime_owner_id.as_deref().is_some_and(&owner_alive);
                let unhealthy = json!({
                    "kind": "engine-heartbeat-stale",
                    "lastHeartbeatAt": iso8601_ms(last_alive),
                });
                (
                    if alive { "stale" } else { "orphaned" },
                    None,
                    Some(unhealthy),
                )
            }
        }
    };
    RunStateView {
        run_id: run.run_id.to_string(),
        computed_at: iso8601_ms(now_ms),
        state,
        blocked,
        unhealthy,
    }
}

/// True when a lease owner id (`pid:<pid>:<uuid>`) names a process alive on
/// this machine. Ids of another shape are assumed alive (we cannot tell).
pub fn owner_alive_locally(owner_id: &str) -> bool {
    let Some(pid) = owner_id
        .strip_prefix("pid:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|pid| pid.parse::<i32>().ok())
    else {
        return true;
    };
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => match rustix::process::test_kill_process(pid) {
            Ok(()) => true,
            Err(e) => e == rustix::io::Errno::PERM,
        },
        None => false,
    }
}

/// Epoch milliseconds as ISO 8601 UTC with milliseconds, the format of
/// JavaScript's `Date.prototype.toISOString` (`2026-11-22T22:47:26.269Z`).
pub fn iso8601_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Civil-from-days (Howard Hinnant), valid for the whole i64 day range we use.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

impl Engine {
    /// The bash tool's policy (for probing the sandbox at start).
    pub fn sandbox_policy(&self) -> &Arc<SandboxPolicy> {
        &self.inner.config.sandbox
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunId;

    fn row(status: RunStatus) -> RunRow {
        RunRow {
            run_id: RunId::parse("r1").unwrap(),
            workflow_name: "wf".into(),
            workflow_path: "/root/wf.wasm".into(),
            workflow_hash: "h".into(),
            status,
            created_at_ms: 1_000,
            started_at_ms: Some(1_000),
            finished_at_ms: None,
            heartbeat_at_ms: Some(1_000),
            runtime_owner_id: Some("pid:1:x".into()),
            error_json: None,
            config_json: "{}".into(),
            cancel_requested_at_ms: None,
            input_json: "{}".into(),
            auth_json: None,
            last_frame_no: 0,
            next_seq: 0,
        }
    }

    #[test]
    fn iso_timestamps_match_javascript_to_iso_string() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_795_387_646_269), "2026-11-22T22:47:26.269Z");
        assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn terminal_statuses_map_to_smithers_states() {
        let facts = RunFacts::default();
        let state = |s| derive_run_state(&row(s), &facts, 2_000, |_| true).state;
        assert_eq!(state(RunStatus::Finished), "succeeded");
        assert_eq!(state(RunStatus::Failed), "failed");
        assert_eq!(state(RunStatus::Cancelled), "cancelled");
    }

    #[test]
    fn parked_runs_say_what_blocks_them() {
        let facts = RunFacts {
            pending_approvals: vec![("gate".into(), 0), ("later".into(), 5)],
            waiting_event_node: None,
        };
        let view = derive_run_state(&row(RunStatus::WaitingApproval), &facts, 2_000, |_| true);
        assert_eq!(view.state, "waiting-approval");
        assert_eq!(
            view.blocked,
            Some(
                json!({"kind": "approval", "nodeId": "gate", "requestedAt": "1970-01-01T00:00:00.000Z"})
            )
        );
        let facts = RunFacts {
            waiting_event_node: Some("wait".into()),
            ..RunFacts::default()
        };
        let view = derive_run_state(&row(RunStatus::WaitingEvent), &facts, 2_000, |_| true);
        assert_eq!(
            view.blocked,
            Some(json!({"kind": "event", "nodeId": "wait"}))
        );
    }

    #[test]
    fn running_runs_go_stale_or_orphaned_when_the_heartbeat_stops() {
        let facts = RunFacts::default();
        let fresh = derive_run_state(
            &row(RunStatus::Running),
            &facts,
            1_000 + HEARTBEAT_STALE_MS,
            |_| true,
        );
        assert_eq!((fresh.state, fresh.unhealthy), ("running", None));
        let late = 1_001 + HEARTBEAT_STALE_MS;
        let stale = derive_run_state(&row(RunStatus::Running), &facts, late, |_| true);
        assert_eq!(stale.state, "stale");
        assert_eq!(stale.unhealthy.unwrap()["kind"], "engine-heartbeat-stale");
        assert_eq!(
            derive_run_state(&row(RunStatus::Running), &facts, late, |_| false).state,
            "orphaned"
        );
        let mut ownerless = row(RunStatus::Running);
        ownerless.runtime_owner_id = None;
        assert_eq!(
            derive_run_state(&ownerless, &facts, late, |_| true).state,
            "orphaned"
        );
        let mut never = row(RunStatus::Running);
        (never.started_at_ms, never.heartbeat_at_ms) = (None, None);
        assert_eq!(
            derive_run_state(&never, &facts, late, |_| true).state,
            "unknown"
        );
    }

    #[test]
    fn owner_liveness_reads_the_pid_of_the_lease() {
        assert!(owner_alive_locally(&format!(
            "pid:{}:abc",
            std::process::id()
        )));
        assert!(!owner_alive_locally("pid:2147483646:abc"));
        assert!(owner_alive_locally("worker-1"));
    }
}
