//! Domain types shared by every layer: identities, states and events.
//!
//! These are the nouns of the wire format. Their serde names are exactly what
//! clients see (`"waiting-approval"`, `"NodeStarted"`, `runId`), so a rename
//! here is a protocol change.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Identity of a run: any non-empty string of at most [`RunId::MAX_LEN`] bytes
/// without control characters or `/` (it appears in URL paths).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// Longest accepted run id (the contract's engine limit).
    pub const MAX_LEN: usize = 256;

    /// Validates a client-supplied id.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("runId must not be empty".into());
        }
        if raw.len() > Self::MAX_LEN {
            return Err(format!("runId must be at most {} bytes", Self::MAX_LEN));
        }
        if raw.chars().any(|c| c.is_control() || c == '/') {
            return Err("runId must not contain '/' or control characters".into());
        }
        Ok(Self(raw.to_string()))
    }

    /// A fresh random id (UUID v4, as Smithers does).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identity of workflow code: sha1 (hex) of the component bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ComponentHash(String);

impl ComponentHash {
    /// Hashes component bytes.
    pub fn of(bytes: &[u8]) -> Self {
        use sha1::{Digest, Sha1};
        Self(hex::encode(Sha1::digest(bytes)))
    }

    /// Wraps a hash read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ComponentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Key of a node's state and output within a run: node id and loop iteration.
///
/// The id is shared (`Arc<str>`): the scheduler builds keys for every node it
/// visits on every step, and cloning a key must not allocate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    /// Node id as rendered by the workflow.
    pub node_id: Arc<str>,
    /// Iteration of the enclosing loop (0 outside loops).
    pub iteration: u32,
}

impl NodeKey {
    /// Builds a key.
    pub fn new(node_id: impl Into<Arc<str>>, iteration: u32) -> Self {
        Self {
            node_id: node_id.into(),
            iteration,
        }
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.node_id, self.iteration)
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// The wire (and database) name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }

            /// Parses a wire name.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($wire => Some(Self::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Persisted status of a run.
    RunStatus {
        /// A driver is executing it (or it crashed and awaits recovery).
        Running = "running",
        /// Parked until an approval is decided.
        WaitingApproval = "waiting-approval",
        /// Parked until a signal arrives.
        WaitingEvent = "waiting-event",
        /// Completed successfully.
        Finished = "finished",
        /// Completed with a failure.
        Failed = "failed",
        /// Stopped by a cancel request.
        Cancelled = "cancelled",
    }
);

impl RunStatus {
    /// No further progress will happen without a resume.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Cancelled)
    }

    /// Parked, waiting for outside input.
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::WaitingApproval | Self::WaitingEvent)
    }
}

wire_enum!(
    /// State of a node at one iteration.
    NodeState {
        /// Mounted, not started.
        Pending = "pending",
        /// An approval was requested and not decided.
        WaitingApproval = "waiting-approval",
        /// Waiting for a signal.
        WaitingEvent = "waiting-event",
        /// An attempt is running.
        InProgress = "in-progress",
        /// Output committed.
        Finished = "finished",
        /// Failed for good (retries exhausted, not retryable, or denied).
        Failed = "failed",
        /// Stopped by cancellation.
        Cancelled = "cancelled",
        /// Skipped by `skip-if` or a denial with `on-deny: skip`.
        Skipped = "skipped",
    }
);

wire_enum!(
    /// State of one attempt of a task.
    AttemptState {
        /// Started, not ended (or interrupted by a crash).
        InProgress = "in-progress",
        /// Produced the output.
        Finished = "finished",
        /// Failed.
        Failed = "failed",
        /// Stopped by cancellation or interrupted by a crash.
        Cancelled = "cancelled",
    }
);

wire_enum!(
    /// State of an approval request.
    ApprovalStatus {
        /// Waiting for a decision.
        Requested = "requested",
        /// Approved.
        Approved = "approved",
        /// Denied.
        Denied = "denied",
    }
);

/// A structured error as it appears in `NodeFailed.error`, `RunFailed.error`
/// and `errorJson`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// Always `"SmithersError"`, for compatibility with Smithers' errorToJson.
    pub name: String,
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Node the error belongs to, when it is a node's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ErrorInfo {
    /// Builds an error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: "SmithersError".into(),
            code: code.into(),
            message: message.into(),
            node_id: None,
            details: None,
        }
    }

    /// Attributes the error to a node.
    pub fn for_node(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The payload of an event, tagged by `type` exactly as Smithers names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum EventBody {
    /// A run started or resumed.
    RunStarted {
        /// `workflowName` of the run.
        workflow_name: String,
        /// Hash of the component the run now uses.
        workflow_hash: String,
        /// True when this start is a resume.
        resumed: bool,
    },
    /// The component for this start or resume was loaded.
    WorkflowLoaded {
        /// Component hash.
        hash: String,
        /// `memory`, `disk` or `compiled`.
        source: String,
        /// Compile (or deserialize) time in milliseconds.
        compile_ms: u64,
    },
    /// The run parked.
    RunStatusChanged {
        /// New status.
        status: RunStatus,
    },
    /// The run finished.
    RunFinished {
        /// Number of failed children tolerated by `continue-on-fail`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_children: Option<u32>,
        /// Their keys, `"nodeId::iteration"`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_child_keys: Option<Vec<String>>,
    },
    /// The run failed.
    RunFailed {
        /// Why.
        error: ErrorInfo,
    },
    /// The run was cancelled.
    RunCancelled {},
    /// A render of the workflow tree was stored.
    FrameCommitted {
        /// Frame number, from 1, continuing across resumes.
        frame_no: u64,
        /// sha256 of the frame's canonical tree JSON and task index.
        xml_hash: String,
        /// What caused the render.
        trigger: Value,
    },
    /// A node was mounted.
    NodePending {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
    },
    /// An attempt started.
    NodeStarted {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Attempt, from 1.
        attempt: u32,
    },
    /// An attempt produced the node's output.
    NodeFinished {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Attempt, from 1.
        attempt: u32,
    },
    /// An attempt failed.
    NodeFailed {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Attempt, from 1.
        attempt: u32,
        /// Why.
        error: ErrorInfo,
    },
    /// Another attempt will follow.
    NodeRetrying {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// The next attempt number.
        attempt: u32,
        /// Delay before it starts.
        delay_ms: u64,
    },
    /// A node was stopped by cancellation.
    NodeCancelled {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// The attempt that was running, if any.
        attempt: Option<u32>,
        /// Why (`run-cancelled`, `run-failed`).
        reason: String,
    },
    /// A node was skipped.
    NodeSkipped {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
    },
    /// An approval node is waiting for a decision.
    NodeWaitingApproval {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// The approval request.
        request: Value,
    },
    /// A signal node is waiting for its signal.
    NodeWaitingEvent {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Name of the awaited signal.
        signal_name: String,
    },
    /// An approval was requested.
    ApprovalRequested {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// The approval request.
        request: Value,
    },
    /// An approval was granted.
    ApprovalGranted {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Note of the decider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// Who decided.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decided_by: Option<String>,
    },
    /// An approval was denied.
    ApprovalDenied {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Note of the decider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// Who decided.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decided_by: Option<String>,
    },
    /// A signal was delivered to the run.
    SignalReceived {
        /// Signal name.
        signal_name: String,
        /// Signal sequence number within the run.
        signal_seq: u64,
        /// Correlation id given by the sender.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// A loop moved to its next iteration.
    LoopIterationStarted {
        /// Loop node id.
        node_id: String,
        /// The new iteration.
        iteration: u32,
    },
    /// Text or data a task produced (stdout, stderr, `emit`, `log`).
    NodeOutput {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Attempt.
        attempt: u32,
        /// The text (JSON text for `emit`).
        text: String,
        /// `stdout`, `stderr`, `emit` or `log`.
        stream: String,
    },
    /// A tool call started.
    ToolCallStarted {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Attempt.
        attempt: u32,
        /// Unique id of the call.
        tool_call_id: String,
        /// `bash`.
        tool_name: String,
        /// Number of the call within the attempt, from 0. On the wire
        /// `toolCallSeq`: `seq` is the event's own place in the run's log.
        #[serde(rename = "toolCallSeq")]
        seq: u32,
    },
    /// A tool call ended.
    ToolCallFinished {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Attempt.
        attempt: u32,
        /// Unique id of the call.
        tool_call_id: String,
        /// `bash`.
        tool_name: String,
        /// Number of the call within the attempt (`toolCallSeq`).
        #[serde(rename = "toolCallSeq")]
        seq: u32,
        /// `success` or `error`.
        status: String,
        /// Exit code when the command ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Wall-clock duration.
        duration_ms: u64,
        /// Output was truncated.
        truncated: bool,
        /// Error when the call produced no outcome.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// The host refused an outbound HTTP request of a task (the task's call
    /// failed with `HTTP_DENIED`; nothing was sent).
    HttpDenied {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Attempt.
        attempt: u32,
        /// Request method.
        method: String,
        /// `http` or `https`.
        scheme: String,
        /// The host named by the request's URL.
        host: String,
        /// The URL's port (or the scheme's default).
        port: u16,
        /// `not-allowed` (no pattern allows it) or `non-public-address`
        /// (the name resolves only to addresses no pattern names).
        reason: String,
        /// The refused address, for `non-public-address`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// A re-executed task asked for a different outbound HTTP call than its
    /// interrupted attempt had journaled: replay stopped, and that call and
    /// every later one go out (the journal from there on is forgotten).
    HttpReplayDiverged {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        iteration: u32,
        /// Attempt.
        attempt: u32,
        /// Seq (from 0) of the first call that differed.
        call_seq: u32,
        /// Calls answered from the journal before it.
        replayed: u32,
    },
}

impl EventBody {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::RunStarted { .. } => "RunStarted",
            Self::WorkflowLoaded { .. } => "WorkflowLoaded",
            Self::RunStatusChanged { .. } => "RunStatusChanged",
            Self::RunFinished { .. } => "RunFinished",
            Self::RunFailed { .. } => "RunFailed",
            Self::RunCancelled {} => "RunCancelled",
            Self::FrameCommitted { .. } => "FrameCommitted",
            Self::NodePending { .. } => "NodePending",
            Self::NodeStarted { .. } => "NodeStarted",
            Self::NodeFinished { .. } => "NodeFinished",
            Self::NodeFailed { .. } => "NodeFailed",
            Self::NodeRetrying { .. } => "NodeRetrying",
            Self::NodeCancelled { .. } => "NodeCancelled",
            Self::NodeSkipped { .. } => "NodeSkipped",
            Self::NodeWaitingApproval { .. } => "NodeWaitingApproval",
            Self::NodeWaitingEvent { .. } => "NodeWaitingEvent",
            Self::ApprovalRequested { .. } => "ApprovalRequested",
            Self::ApprovalGranted { .. } => "ApprovalGranted",
            Self::ApprovalDenied { .. } => "ApprovalDenied",
            Self::SignalReceived { .. } => "SignalReceived",
            Self::LoopIterationStarted { .. } => "LoopIterationStarted",
            Self::NodeOutput { .. } => "NodeOutput",
            Self::ToolCallStarted { .. } => "ToolCallStarted",
            Self::ToolCallFinished { .. } => "ToolCallFinished",
            Self::HttpDenied { .. } => "HttpDenied",
            Self::HttpReplayDiverged { .. } => "HttpReplayDiverged",
        }
    }

    /// Ends the run's event stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::RunFinished { .. } | Self::RunFailed { .. } | Self::RunCancelled {}
        )
    }
}

/// A stored event: its place in the run's log plus its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Run it belongs to.
    pub run_id: RunId,
    /// Position in the run's log, from 0, gap-free.
    pub seq: u64,
    /// When it was committed (epoch ms).
    pub timestamp_ms: i64,
    /// The payload.
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// The wire JSON: `{"runId", "seq", "timestampMs", "type", ...fields}`.
    ///
    /// Equivalent to serializing the struct, but splices the three envelope
    /// fields in front of the body's own object instead of going through
    /// serde's (buffering) `flatten`: every commit serializes its events.
    pub fn to_json(&self) -> String {
        let body = serde_json::to_string(&self.body).expect("events always serialize");
        let run_id = serde_json::to_string(&self.run_id).expect("strings serialize");
        // An internally tagged enum always serializes to an object with at
        // least `type`, so the body is `{"type":...}`.
        format!(
            "{{\"runId\":{run_id},\"seq\":{},\"timestampMs\":{},{}",
            self.seq,
            self.timestamp_ms,
            &body[1..]
        )
    }
}

/// Milliseconds since the Unix epoch, the unit of every `*Ms` field.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_type_tag_and_camel_case_fields() {
        let event = Event {
            run_id: RunId::parse("r1").unwrap(),
            seq: 3,
            timestamp_ms: 42,
            body: EventBody::NodeStarted {
                node_id: "a".into(),
                iteration: 0,
                attempt: 1,
            },
        };
        let json: Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(json["type"], "NodeStarted");
        assert_eq!(json["runId"], "r1");
        assert_eq!(json["nodeId"], "a");
        assert_eq!(json["seq"], 3);
        assert_eq!(json["timestampMs"], 42);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn a_tool_call_event_has_one_seq_the_events() {
        let event = Event {
            run_id: RunId::parse("r1").unwrap(),
            seq: 5,
            timestamp_ms: 42,
            body: EventBody::ToolCallStarted {
                node_id: "a".into(),
                iteration: 0,
                attempt: 1,
                tool_call_id: "c".into(),
                tool_name: "bash".into(),
                seq: 0,
            },
        };
        let text = event.to_json();
        assert_eq!(text.matches("\"seq\"").count(), 1, "{text}");
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["seq"], 5);
        assert_eq!(json["toolCallSeq"], 0);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn run_ids_reject_slashes_and_overlong_values() {
        assert!(RunId::parse("a/b").is_err());
        assert!(RunId::parse("").is_err());
        assert!(RunId::parse(&"x".repeat(257)).is_err());
        assert!(RunId::parse("smi_abc-123").is_ok());
    }

    #[test]
    fn statuses_round_trip_their_wire_names() {
        for status in [
            RunStatus::Running,
            RunStatus::WaitingApproval,
            RunStatus::WaitingEvent,
            RunStatus::Finished,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(
            serde_json::to_string(&NodeState::InProgress).unwrap(),
            "\"in-progress\""
        );
    }
}
