//! A run's events: the typed [`Event`] and the [`EventStream`] that follows
//! `GET /v1/runs/:id/events` across dropped connections.
//!
//! The stream's promise is "every event exactly once, in order": it tracks
//! the last seq it yielded, reconnects with `Last-Event-ID` (and `afterSeq`,
//! which Smithers reads instead) after a drop, drops anything at or below
//! that seq, and reconnects again on a gap instead of skipping. The seq comes
//! from the `id:` line, else the payload's `seq`, else (Smithers sends
//! neither) from counting, which matches Smithers' 0-based `afterSeq`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;

use crate::sse::{Message, Parser};
use crate::types::{ErrorInfo, RunStatus};
use crate::{Client, Error};

/// What a run's event says happened, for the types this client knows.
/// Every event also keeps its full JSON in [`Event::json`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
#[non_exhaustive]
pub enum EventKind {
    /// The run started or resumed.
    RunStarted {
        /// Workflow name (absent on Smithers).
        #[serde(default)]
        workflow_name: Option<String>,
        /// This start is a resume.
        #[serde(default)]
        resumed: bool,
    },
    /// The component for this start was loaded.
    WorkflowLoaded {
        /// Component hash.
        #[serde(default)]
        hash: String,
        /// Compile (or load) time.
        #[serde(default)]
        compile_ms: u64,
    },
    /// The run parked.
    RunStatusChanged {
        /// The new status.
        status: RunStatus,
    },
    /// The run finished.
    RunFinished {},
    /// The run failed.
    RunFailed {
        /// Why.
        #[serde(default)]
        error: Option<ErrorInfo>,
    },
    /// The run was cancelled.
    RunCancelled {},
    /// The run continued as a new run (Smithers).
    RunContinuedAsNew {
        /// The new run.
        #[serde(default)]
        new_run_id: Option<String>,
    },
    /// A render of the workflow tree was stored.
    FrameCommitted {
        /// Frame number.
        frame_no: u64,
    },
    /// A node was mounted.
    NodePending {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
    },
    /// An attempt started.
    NodeStarted {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
        /// Attempt, from 1.
        #[serde(default)]
        attempt: u32,
    },
    /// An attempt produced the node's output.
    NodeFinished {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
        /// Attempt.
        #[serde(default)]
        attempt: u32,
    },
    /// An attempt failed.
    NodeFailed {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
        /// Attempt.
        #[serde(default)]
        attempt: u32,
        /// Why.
        #[serde(default)]
        error: Option<ErrorInfo>,
    },
    /// Another attempt will follow.
    NodeRetrying {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
        /// The next attempt.
        #[serde(default)]
        attempt: u32,
    },
    /// A node was stopped by cancellation.
    NodeCancelled {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
        /// The attempt that was running.
        #[serde(default)]
        attempt: Option<u32>,
    },
    /// A node was skipped.
    NodeSkipped {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
    },
    /// An approval node waits for a decision.
    NodeWaitingApproval {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
    },
    /// A signal node waits for its signal.
    NodeWaitingEvent {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
        /// The awaited signal.
        #[serde(default)]
        signal_name: Option<String>,
    },
    /// An approval was requested.
    ApprovalRequested {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
    },
    /// An approval was granted.
    ApprovalGranted {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
        /// Note of the decider.
        #[serde(default)]
        note: Option<String>,
    },
    /// An approval was denied.
    ApprovalDenied {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
        /// Note of the decider.
        #[serde(default)]
        note: Option<String>,
    },
    /// A signal was delivered.
    SignalReceived {
        /// Signal name.
        signal_name: String,
    },
    /// A loop moved to its next iteration.
    LoopIterationStarted {
        /// Loop node id.
        node_id: String,
        /// The new iteration.
        iteration: u32,
    },
    /// Text a task produced.
    NodeOutput {
        /// Node id.
        node_id: String,
        /// Loop iteration.
        #[serde(default)]
        iteration: u32,
        /// The text.
        text: String,
        /// `stdout`, `stderr`, `emit` or `log`.
        stream: String,
    },
    /// A tool call started.
    ToolCallStarted {
        /// Node id.
        node_id: String,
        /// Tool name.
        tool_name: String,
    },
    /// A tool call ended.
    ToolCallFinished {
        /// Node id.
        node_id: String,
        /// Tool name.
        tool_name: String,
        /// `success` or `error`.
        status: String,
    },
    /// The host refused an outbound HTTP request of a task.
    HttpDenied {
        /// Node id.
        node_id: String,
        /// Request method.
        method: String,
        /// The host the request's URL named.
        host: String,
        /// The URL's port.
        port: u16,
        /// `not-allowed` or `non-public-address`.
        reason: String,
    },
    /// A re-executed task's outbound HTTP calls stopped matching its
    /// journal; calls go out from `callSeq` on.
    HttpReplayDiverged {
        /// Node id.
        node_id: String,
        /// Seq (from 0) of the first call that differed.
        call_seq: u32,
        /// Calls answered from the journal before it.
        replayed: u32,
    },
    /// A type this client does not know (its name); read [`Event::json`].
    #[serde(skip_deserializing)]
    Other(String),
}

/// One event of a run's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in the run's log, from 0.
    pub seq: u64,
    /// The run.
    pub run_id: String,
    /// Commit time (epoch ms).
    pub timestamp_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// The event as the server sent it.
    pub json: Value,
}

impl Event {
    /// Reads an event payload; `seq` is used when the payload has none.
    pub fn from_json(json: Value, seq: u64) -> Self {
        let type_name = json.get("type").and_then(Value::as_str).unwrap_or("");
        let kind = serde_json::from_value::<EventKind>(json.clone())
            .unwrap_or_else(|_| EventKind::Other(type_name.to_string()));
        Self {
            seq: json.get("seq").and_then(Value::as_u64).unwrap_or(seq),
            run_id: json
                .get("runId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            timestamp_ms: json
                .get("timestampMs")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            kind,
            json,
        }
    }

    /// The `type` name (`NodeStarted`...).
    pub fn type_name(&self) -> &str {
        self.json.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The run ends with this event: its stream ends after it.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.kind,
            EventKind::RunFinished {}
                | EventKind::RunFailed { .. }
                | EventKind::RunCancelled {}
                | EventKind::RunContinuedAsNew { .. }
        )
    }

    /// The node (id, iteration) the event is about, if any.
    pub fn node(&self) -> Option<(&str, u32)> {
        let id = self.json.get("nodeId")?.as_str()?;
        let iteration = self
            .json
            .get("iteration")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Some((id, iteration as u32))
    }
}

/// How an [`EventStream`] behaves after a dropped connection.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Resume after this seq (`None`: from the first event).
    pub after_seq: Option<u64>,
    /// Delay before the first reconnect; doubles on each failure in a row.
    pub initial_delay: Duration,
    /// Longest delay between reconnects.
    pub max_delay: Duration,
    /// Failed reconnects in a row (no event received) before giving up with
    /// [`Error::StreamLost`].
    pub max_attempts: u32,
    /// A connection silent for this long is considered dropped (the server
    /// sends a keep-alive every 10 s).
    pub idle_timeout: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            after_seq: None,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_attempts: 20,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// The events of a run, each exactly once and in order, ending after the
/// terminal event (`RunFinished`, `RunFailed`, `RunCancelled`). Created by
/// [`Client::stream_events`].
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>,
}

impl Stream for EventStream {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStream")
    }
}

impl EventStream {
    pub(crate) fn new(client: Client, run_id: String, options: StreamOptions) -> Self {
        let follower = Follower {
            client,
            run_id,
            last_seq: options.after_seq,
            options,
            conn: None,
            failures: 0,
            last_error: None,
            done: false,
        };
        let inner = futures::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

struct Connection {
    body: ByteStream,
    parser: Parser,
    /// Events yielded from this connection.
    yielded: u64,
}

/// Why a connection ended.
enum Ended {
    /// Closed by the server or broken.
    Dropped(Option<Error>),
    /// Sent something other than the next event (a gap).
    Gap { expected: u64, got: u64 },
}

struct Follower {
    client: Client,
    run_id: String,
    /// Last seq yielded (or the starting point).
    last_seq: Option<u64>,
    options: StreamOptions,
    conn: Option<Connection>,
    /// Reconnects in a row without an event.
    failures: u32,
    last_error: Option<Error>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if self.done {
                return None;
            }
            if self.conn.is_none() {
                match self.connect().await {
                    Ok(conn) => self.conn = Some(conn),
                    Err(e) if !e.is_transient() => return self.fail(e),
                    Err(e) => {
                        if let Some(lost) = self.back_off(e).await {
                            return self.fail(lost);
                        }
                        continue;
                    }
                }
            }
            let mut conn = self.conn.take()?;
            match self.read(&mut conn).await {
                Ok(event) => {
                    self.conn = Some(conn);
                    self.failures = 0;
                    self.last_error = None;
                    if event.is_terminal() {
                        self.done = true;
                    }
                    return Some(Ok(event));
                }
                Err(Ended::Gap { expected, got }) => {
                    let e = Error::Decode {
                        url: self.run_id.clone(),
                        message: format!("event seq {got} arrived where {expected} was expected"),
                    };
                    if let Some(lost) = self.back_off(e).await {
                        return self.fail(lost);
                    }
                }
                Err(Ended::Dropped(cause)) => {
                    let yielded = conn.yielded;
                    if yielded == 0 {
                        // Nothing new on this connection: either the run has
                        // ended before our resume point, or the server is
                        // going away. Ask it which.
                        match self.client.get_status(&self.run_id).await {
                            Ok(view) if view.status.is_terminal() => {
                                self.done = true;
                                return None;
                            }
                            Ok(_) => {}
                            Err(e) if !e.is_transient() => return self.fail(e),
                            Err(e) => self.last_error = Some(e),
                        }
                    }
                    let cause =
                        cause
                            .or_else(|| self.last_error.take())
                            .unwrap_or_else(|| Error::Decode {
                                url: self.run_id.clone(),
                                message: "the event stream closed before the run ended".into(),
                            });
                    if yielded > 0 {
                        // Progress was made: reconnect at once, as if fresh.
                        self.failures = 0;
                        continue;
                    }
                    if let Some(lost) = self.back_off(cause).await {
                        return self.fail(lost);
                    }
                }
            }
        }
    }

    fn fail(&mut self, error: Error) -> Option<Result<Event, Error>> {
        self.done = true;
        Some(Err(error))
    }

    /// Sleeps before the next attempt; `Some` when attempts are exhausted.
    async fn back_off(&mut self, cause: Error) -> Option<Error> {
        self.failures += 1;
        if self.failures > self.options.max_attempts {
            return Some(Error::StreamLost {
                run_id: self.run_id.clone(),
                attempts: self.options.max_attempts,
                last: Box::new(cause),
            });
        }
        self.last_error = Some(cause);
        let factor = 1u32 << (self.failures - 1).min(16);
        let delay = self
            .options
            .initial_delay
            .saturating_mul(factor)
            .min(self.options.max_delay);
        tokio::time::sleep(delay).await;
        None
    }

    async fn connect(&mut self) -> Result<Connection, Error> {
        let mut url = self.client.url(&["v1", "runs", &self.run_id, "events"])?;
        if let Some(seq) = self.last_seq {
            // Smithers reads only `afterSeq`; `Last-Event-ID` is the standard.
            url.query_pairs_mut()
                .append_pair("afterSeq", &seq.to_string());
        }
        let mut request = self.client.get_request(url.clone());
        if let Some(seq) = self.last_seq {
            request = request.header("Last-Event-ID", seq.to_string());
        }
        let response = request
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|source| Error::Transport {
                url: url.to_string(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(Error::from_answer(status.as_u16(), url.as_str(), &body));
        }
        Ok(Connection {
            body: Box::pin(response.bytes_stream()),
            parser: Parser::new(),
            yielded: 0,
        })
    }

    /// The next new event of the connection.
    async fn read(&mut self, conn: &mut Connection) -> Result<Event, Ended> {
        loop {
            while let Some(message) = conn.parser.next_message() {
                if let Some(event) = self.accept(message)? {
                    conn.yielded += 1;
                    return Ok(event);
                }
            }
            match tokio::time::timeout(self.options.idle_timeout, conn.body.next()).await {
                Ok(Some(Ok(bytes))) => conn.parser.push(&bytes),
                Ok(Some(Err(source))) => {
                    return Err(Ended::Dropped(Some(Error::Transport {
                        url: self.run_id.clone(),
                        source,
                    })));
                }
                Ok(None) => return Err(Ended::Dropped(None)),
                Err(_) => {
                    return Err(Ended::Dropped(Some(Error::Decode {
                        url: self.run_id.clone(),
                        message: format!(
                            "no data for {:?} (not even a keep-alive)",
                            self.options.idle_timeout
                        ),
                    })));
                }
            }
        }
    }

    /// Turns a message into the next event; `None` for duplicates and
    /// messages that are not events.
    fn accept(&mut self, message: Message) -> Result<Option<Event>, Ended> {
        let Some(data) = message.data else {
            return Ok(None);
        };
        if message.event.as_deref().is_some_and(|e| e != "smithers") {
            return Ok(None);
        }
        let expected = self.last_seq.map_or(0, |s| s + 1);
        let json: Value = match serde_json::from_str(&data) {
            Ok(json) => json,
            Err(e) => {
                return Err(Ended::Dropped(Some(Error::Decode {
                    url: self.run_id.clone(),
                    message: format!("event is not JSON: {e}"),
                })));
            }
        };
        let id = message.id.and_then(|id| id.trim().parse::<u64>().ok());
        let mut event = Event::from_json(json, expected);
        if let Some(id) = id {
            event.seq = id;
        }
        if self.last_seq.is_some_and(|last| event.seq <= last) {
            return Ok(None);
        }
        if event.seq != expected {
            return Err(Ended::Gap {
                expected,
                got: event.seq,
            });
        }
        self.last_seq = Some(event.seq);
        Ok(Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_events_are_typed_and_unknown_ones_keep_their_name() {
        let e = Event::from_json(
            json!({"type":"NodeStarted","runId":"r","seq":4,"timestampMs":9,"nodeId":"a","iteration":0,"attempt":1}),
            0,
        );
        assert_eq!(e.seq, 4);
        assert_eq!(
            e.kind,
            EventKind::NodeStarted {
                node_id: "a".into(),
                iteration: 0,
                attempt: 1
            }
        );
        assert_eq!(e.node(), Some(("a", 0)));
        let e = Event::from_json(
            json!({"type":"SnapshotCaptured","runId":"r","frameNo":1}),
            7,
        );
        assert_eq!(e.kind, EventKind::Other("SnapshotCaptured".into()));
        assert_eq!(e.seq, 7);
        assert_eq!(e.type_name(), "SnapshotCaptured");
    }

    #[test]
    fn smithers_events_without_seq_or_ids_parse() {
        let e = Event::from_json(
            json!({"type":"RunStarted","runId":"run-1","timestampMs":1,"correlation":{"runId":"run-1"}}),
            0,
        );
        assert!(matches!(e.kind, EventKind::RunStarted { .. }));
        let e = Event::from_json(
            json!({"type":"RunFailed","runId":"r","timestampMs":1,"error":{"name":"SmithersError","message":"Task failed: gate","code":"SESSION_ERROR"}}),
            3,
        );
        assert!(e.is_terminal());
        match e.kind {
            EventKind::RunFailed { error: Some(error) } => {
                assert_eq!(error.code.as_deref(), Some("SESSION_ERROR"))
            }
            other => panic!("{other:?}"),
        }
    }
}
