//! Gateway events: the engine's committed events renamed the way Smithers'
//! gateway names them (`node.started`, `approval.requested`,
//! `run.completed`, ...), plus gateway-level events (`cron.triggered`).
//!
//! One bridge task reads the store's all-runs broadcast, bumps the global
//! `stateVersion` and republishes each event to every WebSocket connection
//! whose identity may read it ([`readable_by`]);
//! connections that cannot keep up lose their socket, never the engine's
//! time. Per-run streams (`streamRunEvents`) do not use this broadcast: they
//! follow the store directly, so their replay is exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::Gateway;
use super::auth::Identity;
use crate::store::StoredEvent;

/// Broadcast capacity before a connection is considered too slow.
const CAPACITY: usize = 4096;

/// An event as connections receive it.
#[derive(Debug, Clone)]
pub struct GatewayEvent {
    /// Gateway event name.
    pub event: String,
    /// Payload.
    pub payload: Value,
    /// The run it concerns, if any (for `subscribe` filters and streams).
    pub run_id: Option<String>,
    /// Global version after this event.
    pub state_version: u64,
}

impl GatewayEvent {
    /// An event that is not a run's stored event.
    pub fn global(event: &str, payload: Value) -> Self {
        let run_id = payload
            .get("runId")
            .and_then(Value::as_str)
            .map(str::to_string);
        Self {
            event: event.into(),
            payload,
            run_id,
            state_version: 0,
        }
    }
}

/// The RPC methods a client must be allowed to call to receive an event:
/// the ones that would return what the event carries. Run events need
/// `getRun` (`run:read`), task outputs `getNodeOutput`, approval events
/// `listApprovals`; `cron.triggered` names a run, so it needs `cronList`
/// and `listRuns`. An event not listed here needs `getRun`.
pub fn read_methods(event: &str) -> &'static [&'static str] {
    match event {
        "cron.triggered" => &["cronList", "listRuns"],
        "task.output" => &["getNodeOutput"],
        e if e.starts_with("approval.") => &["listApprovals"],
        _ => &["getRun"],
    }
}

/// True when `identity` may receive `event` (see [`read_methods`]).
pub fn readable_by(identity: &Identity, event: &str) -> bool {
    read_methods(event).iter().all(|m| identity.may_call(m))
}

/// Fan-out of gateway events and the global `stateVersion`.
pub struct EventBridge {
    tx: broadcast::Sender<Arc<GatewayEvent>>,
    state_version: AtomicU64,
}

impl Default for EventBridge {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            state_version: AtomicU64::new(0),
        }
    }
}

impl EventBridge {
    /// Versions and publishes an event.
    pub fn publish(&self, mut event: GatewayEvent) {
        event.state_version = self.state_version.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.tx.send(Arc::new(event));
    }

    /// Events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<GatewayEvent>> {
        self.tx.subscribe()
    }

    /// The current global version.
    pub fn state_version(&self) -> u64 {
        self.state_version.load(Ordering::SeqCst)
    }
}

/// Republishes every committed engine event until shutdown.
pub async fn bridge(gateway: Arc<Gateway>) {
    let mut events = gateway.engine.store().hub().subscribe_all();
    loop {
        let next = tokio::select! {
            _ = gateway.shutdown.cancelled() => return,
            next = events.recv() => next,
        };
        match next {
            Ok(stored) => {
                let (event, payload) = map_event(&stored);
                gateway.events.publish(GatewayEvent {
                    event,
                    payload,
                    run_id: Some(stored.run_id.to_string()),
                    state_version: 0,
                });
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    skipped = n,
                    "gateway event bridge lagged; live events were skipped (run streams are unaffected)"
                );
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// The gateway name and payload of a stored event. Types Smithers' gateway
/// maps get its names and payload shapes; the others keep their full stored
/// payload under a snake-cased name (`FrameCommitted` → `frame.committed`).
pub fn map_event(stored: &StoredEvent) -> (String, Value) {
    let raw: Value = serde_json::from_str(&stored.json).unwrap_or(Value::Null);
    let field = |name: &str| raw.get(name).cloned().unwrap_or(Value::Null);
    let run_id = stored.run_id.as_str();
    let node = |state: &str| json!({ "runId": run_id, "nodeId": field("nodeId"), "state": state, "iteration": field("iteration") });
    let (name, payload) = match stored.event_type.as_str() {
        "NodePending" => ("node.pending", node("pending")),
        "NodeStarted" => ("node.started", node("in-progress")),
        "NodeFinished" => ("node.finished", node("finished")),
        "NodeFailed" => {
            let mut p = node("failed");
            p["error"] = field("error");
            ("node.failed", p)
        }
        "NodeSkipped" => ("node.skipped", node("skipped")),
        "NodeCancelled" => ("node.cancelled", node("cancelled")),
        "NodeRetrying" => {
            let mut p = node("in-progress");
            p["attempt"] = field("attempt");
            ("node.retrying", p)
        }
        "NodeWaitingApproval" => ("node.waiting_approval", node("waiting")),
        "NodeOutput" => (
            "task.output",
            json!({ "runId": run_id, "nodeId": field("nodeId"), "iteration": field("iteration"),
                    "output": field("text"), "stream": field("stream") }),
        ),
        "ApprovalRequested" => (
            "approval.requested",
            json!({ "runId": run_id, "nodeId": field("nodeId"), "iteration": field("iteration") }),
        ),
        "ApprovalGranted" | "ApprovalDenied" => (
            "approval.decided",
            json!({ "runId": run_id, "nodeId": field("nodeId"), "iteration": field("iteration"),
                    "approved": stored.event_type == "ApprovalGranted" }),
        ),
        "RunFinished" => {
            let mut p = json!({ "runId": run_id, "status": "finished" });
            if raw
                .get("failedChildren")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                > 0
            {
                p["failedChildren"] = field("failedChildren");
                p["failedChildKeys"] = field("failedChildKeys");
            }
            ("run.completed", p)
        }
        "RunFailed" => (
            "run.completed",
            json!({ "runId": run_id, "status": "failed", "error": field("error") }),
        ),
        "RunCancelled" => (
            "run.completed",
            json!({ "runId": run_id, "status": "cancelled" }),
        ),
        other => return (snake_name(other), raw),
    };
    (name.to_string(), payload)
}

/// `RunStatusChanged` → `run.status_changed`.
fn snake_name(event_type: &str) -> String {
    let mut out = String::new();
    let mut first_word = true;
    for (i, c) in event_type.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(if first_word { '.' } else { '_' });
            first_word = false;
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunId;

    fn stored(event_type: &str, json: Value) -> StoredEvent {
        StoredEvent {
            run_id: RunId::parse("r").unwrap(),
            seq: 0,
            event_type: event_type.into(),
            timestamp_ms: 0,
            json: json.to_string(),
        }
    }

    #[test]
    fn events_get_smithers_gateway_names() {
        let (name, payload) = map_event(&stored(
            "NodeStarted",
            json!({"type": "NodeStarted", "nodeId": "a", "iteration": 0}),
        ));
        assert_eq!(name, "node.started");
        assert_eq!(payload["state"], "in-progress");
        let (name, payload) = map_event(&stored("RunCancelled", json!({"type": "RunCancelled"})));
        assert_eq!(name, "run.completed");
        assert_eq!(payload, json!({"runId": "r", "status": "cancelled"}));
        let (name, _) = map_event(&stored("ApprovalDenied", json!({"nodeId": "g"})));
        assert_eq!(name, "approval.decided");
        let (name, payload) = map_event(&stored(
            "RunStatusChanged",
            json!({"type": "RunStatusChanged", "status": "waiting-approval"}),
        ));
        assert_eq!(name, "run.status_changed");
        assert_eq!(payload["status"], "waiting-approval");
        assert_eq!(snake_name("FrameCommitted"), "frame.committed");
        assert_eq!(snake_name("LoopIterationStarted"), "loop.iteration_started");
    }
}
