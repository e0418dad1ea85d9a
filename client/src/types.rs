//! The request and response bodies of the server API, typed.
//!
//! Responses are read leniently: fields Smithers or an older host may leave
//! out are `Option`s or defaults, unknown statuses survive as
//! [`RunStatus::Other`], and fields this crate does not know are kept in
//! `extra` so that printing a response back (`--json`) loses nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this client does not know (a newer server, or Smithers).
            Other(String),
        }

        impl $name {
            /// The wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(other) => other,
                }
            }

            /// Parses a wire name; never fails.
            pub fn parse(raw: &str) -> Self {
                match raw {
                    $($wire => Self::$variant,)+
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Ok(Self::parse(&String::deserialize(deserializer)?))
            }
        }
    };
}

open_enum!(
    /// Status of a run.
    RunStatus {
        /// Executing.
        Running = "running",
        /// Parked until an approval is decided.
        WaitingApproval = "waiting-approval",
        /// Parked until a signal (or, on Smithers, a resume) arrives.
        WaitingEvent = "waiting-event",
        /// Completed successfully.
        Finished = "finished",
        /// Completed with a failure.
        Failed = "failed",
        /// Stopped by a cancel request.
        Cancelled = "cancelled",
        /// Replaced by a new run (Smithers `continue-as-new`).
        Continued = "continued",
    }
);

impl RunStatus {
    /// Nothing more will happen without a resume.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Finished | Self::Failed | Self::Cancelled | Self::Continued
        )
    }
}

open_enum!(
    /// State of a node.
    NodeState {
        /// Mounted, not started.
        Pending = "pending",
        /// Waiting for an approval decision.
        WaitingApproval = "waiting-approval",
        /// Waiting for a signal.
        WaitingEvent = "waiting-event",
        /// An attempt is running.
        InProgress = "in-progress",
        /// Output committed.
        Finished = "finished",
        /// Failed for good.
        Failed = "failed",
        /// Stopped by cancellation.
        Cancelled = "cancelled",
        /// Skipped.
        Skipped = "skipped",
    }
);

open_enum!(
    /// State of one attempt of a task.
    AttemptState {
        /// Running (or interrupted by a crash, until the run resumes).
        InProgress = "in-progress",
        /// Produced the output.
        Finished = "finished",
        /// Failed.
        Failed = "failed",
        /// Stopped by cancellation or a crash.
        Cancelled = "cancelled",
    }
);

/// A structured error as events and runs carry it (`RunFailed.error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// Machine-readable code (absent in some Smithers errors).
    #[serde(default)]
    pub code: Option<String>,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Node the error belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Everything else (`name`, `details`, `stack`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// `POST /v1/runs`: what to start.
///
/// ```
/// use serde_json::json;
/// use smithers_client::RunWorkflow;
///
/// let request = RunWorkflow::new("hello").input(json!({"name": "Ada"})).run_id("hello-1");
/// assert_eq!(request.workflow_path, "hello");
/// ```
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunWorkflow {
    /// Workflow path, relative to the server's root dir.
    pub workflow_path: String,
    /// Input (a JSON object); `{}` when `None`.
    pub input: Value,
    /// Run id to use; the server generates one when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// `{"maxConcurrency": n}` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
}

/// Per-run configuration of a start.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunConfig {
    /// Most tasks of the run in flight at once.
    pub max_concurrency: u32,
}

impl RunWorkflow {
    /// Starts `workflow_path` with input `{}`.
    pub fn new(workflow_path: impl Into<String>) -> Self {
        Self {
            workflow_path: workflow_path.into(),
            input: Value::Object(Map::new()),
            run_id: None,
            config: None,
        }
    }

    /// Sets the input.
    pub fn input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }

    /// Chooses the run id.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Limits the tasks in flight.
    pub fn max_concurrency(mut self, max: u32) -> Self {
        self.config = Some(RunConfig {
            max_concurrency: max,
        });
        self
    }
}

/// The answer to start, resume, approve and deny: the run, and `status:
/// "running"` when a resume found it already running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunAccepted {
    /// The run.
    pub run_id: String,
    /// Set by a resume of a run that already runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
}

/// An approval decision: `{iteration, note?, decidedBy?}`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Loop iteration of the node (0 outside loops).
    pub iteration: u32,
    /// A note stored with the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

impl Decision {
    /// A decision at iteration 0 with a note.
    pub fn with_note(note: impl Into<String>) -> Self {
        Self {
            note: Some(note.into()),
            ..Self::default()
        }
    }
}

/// The derived state of a run (`runState`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    /// `running`, `waiting-approval`, `stale`, `succeeded`...
    pub state: String,
    /// What the run waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Value>,
    /// Why it looks unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<Value>,
    /// Everything else (`runId`, `computedAt`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /v1/runs/:id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatusView {
    /// The run.
    pub run_id: String,
    /// Workflow name.
    #[serde(default)]
    pub workflow_name: String,
    /// Status.
    pub status: RunStatus,
    /// First start.
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    /// End of the last terminal transition.
    #[serde(default)]
    pub finished_at_ms: Option<i64>,
    /// Derived state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_state: Option<RunState>,
    /// Node count per state.
    #[serde(default)]
    pub summary: BTreeMap<String, u64>,
    /// Everything else (`workflowHash`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /v1/runs?limit&status&workflow`: which runs to list.
#[derive(Debug, Clone, Default)]
pub struct ListRuns {
    /// At most this many (server default 50).
    pub limit: Option<u32>,
    /// Only runs with this status.
    pub status: Option<String>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
}

/// One run of `GET /v1/runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run.
    pub run_id: String,
    /// Workflow name.
    #[serde(default)]
    pub workflow_name: String,
    /// Workflow path.
    #[serde(default)]
    pub workflow_path: Option<String>,
    /// Status.
    pub status: RunStatus,
    /// Creation time.
    #[serde(default)]
    pub created_at_ms: Option<i64>,
    /// First start.
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    /// End.
    #[serde(default)]
    pub finished_at_ms: Option<i64>,
    /// Derived state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_state: Option<RunState>,
    /// Everything else (`heartbeatAtMs`, `errorJson`, `configJson`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /v1/runs/:id/frames`: which frames.
#[derive(Debug, Clone, Default)]
pub struct FramesQuery {
    /// At most this many, newest first (the PI client's `tail`, default 20).
    pub limit: Option<u32>,
    /// Only frames numbered above this.
    pub after_frame_no: Option<u64>,
}

/// One render frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Frame {
    /// The run.
    pub run_id: String,
    /// Frame number, from 1.
    pub frame_no: u64,
    /// Commit time.
    #[serde(default)]
    pub created_at_ms: i64,
    /// The rendered tree, canonical JSON text.
    #[serde(default)]
    pub xml_json: String,
    /// sha256 of `xml_json`.
    #[serde(default)]
    pub xml_hash: String,
    /// Everything else (`mountedTaskIdsJson`, `taskIndexJson`, `note`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/runs/:id/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelOutcome {
    /// The run.
    pub run_id: String,
    /// This request cancelled it (false: it was already cancelled).
    #[serde(default)]
    pub won: Option<bool>,
    /// `cancelled` or `already-terminal`.
    #[serde(default)]
    pub status: Option<String>,
    /// Everything else (`terminalStatus`, `repaired`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A signal: `{data, correlationId?, receivedBy?}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    /// Payload (any JSON).
    pub data: Value,
    /// Correlation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_by: Option<String>,
}

impl Signal {
    /// A signal carrying `data`.
    pub fn new(data: Value) -> Self {
        Self {
            data,
            correlation_id: None,
            received_by: None,
        }
    }
}

/// The receipt of a signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalReceipt {
    /// The run.
    pub run_id: String,
    /// Signal seq within the run.
    pub seq: u64,
    /// Name.
    pub signal_name: String,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Receive time.
    pub received_at_ms: i64,
}

/// One pending approval of `GET /v1/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingApproval {
    /// The run.
    pub run_id: String,
    /// The approval node.
    pub node_id: String,
    /// Loop iteration.
    #[serde(default)]
    pub iteration: u32,
    /// Workflow name.
    #[serde(default)]
    pub workflow_name: String,
    /// Status of the run.
    #[serde(default)]
    pub run_status: Option<RunStatus>,
    /// Node label.
    #[serde(default)]
    pub label: Option<String>,
    /// Title of the request.
    #[serde(default)]
    pub request_title: Option<String>,
    /// Summary of the request.
    #[serde(default)]
    pub request_summary: Option<String>,
    /// When it was requested.
    #[serde(default)]
    pub requested_at_ms: i64,
    /// How long it has waited, when the server answered.
    #[serde(default)]
    pub waiting_ms: i64,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize)]
pub(crate) struct ApprovalList {
    pub approvals: Vec<PendingApproval>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_statuses_survive_a_round_trip() {
        let status: RunStatus = serde_json::from_value(json!("waiting-timer")).unwrap();
        assert_eq!(status, RunStatus::Other("waiting-timer".into()));
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!("waiting-timer")
        );
        assert!(RunStatus::parse("continued").is_terminal());
        assert!(!RunStatus::parse("waiting-approval").is_terminal());
    }

    #[test]
    fn status_views_keep_fields_they_do_not_know() {
        let raw = json!({"runId":"r","workflowName":"w","status":"finished","startedAtMs":1,
            "finishedAtMs":2,"summary":{"finished":1},"workflowHash":"abc"});
        let view: RunStatusView = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(view.status, RunStatus::Finished);
        assert_eq!(view.extra["workflowHash"], "abc");
        assert_eq!(serde_json::to_value(&view).unwrap(), raw);
    }

    #[test]
    fn a_start_request_omits_what_is_unset() {
        let body = serde_json::to_value(RunWorkflow::new("hello")).unwrap();
        assert_eq!(body, json!({"workflowPath": "hello", "input": {}}));
    }
}
