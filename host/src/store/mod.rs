//! Durable state: the only module that speaks SQL.
//!
//! One writer thread owns the read-write connection; every mutation arrives
//! as a [`Commit`] (a list of typed [`Op`]s plus the events they produce) and
//! is applied in one transaction. Events get their per-run `seq` inside that
//! transaction and are published to live listeners only after it committed,
//! so a listener never sees an event that a crash could take back.
//!
//! Reads go through a small pool of read-only connections (WAL lets them run
//! beside the writer). The store knows nothing about scheduling: it records
//! what the engine decided and answers queries.

mod checkpointer;
mod hub;
mod journal;
mod outputs;
mod read;
mod retention;
mod schema;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::model::{AttemptState, ErrorInfo, EventBody, NodeKey, NodeState, RunId, RunStatus};

pub use hub::{EventHub, StoredEvent, Subscription};
pub use journal::HttpCall;
pub use outputs::{AttemptRow, Bounded, Bounds, IterationRow, OutputRow};
pub use read::{ApprovalRow, CronRow, FrameRow, NodeRow, Reader, RunRow, RunSnapshot, SignalRow};
pub use retention::{
    AutoVacuum, COLLECTING_OWNER, Candidate, CollectRule, CollectStep, DiskUsage, Maintenance,
    Removed, disk_usage,
};

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: a committed transaction survives a
    /// crash of the process (SIGKILL, panic); the last ones may be lost on
    /// power failure.
    Normal,
    /// `synchronous=FULL`: every commit is fsynced; survives power failure.
    Full,
}

impl Durability {
    /// Name used in logs and benchmark output.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Normal => "WAL, synchronous=NORMAL (survives process crashes)",
            Self::Full => "WAL, synchronous=FULL (fsync per commit, survives power loss)",
        }
    }
}

/// Errors of the store, already carrying their meaning so callers map them
/// without matching strings.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row the operation needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation conflicts with the current state (e.g. run not active,
    /// approval already decided, run id taken).
    #[error("{0}")]
    Conflict(String),
    /// The database refused the operation for another reason than the
    /// storage under it (a bug, a corrupt file...).
    #[error("database error: {0}")]
    Database(rusqlite::Error),
    /// The database could not commit (e.g. disk full, read-only file system).
    #[error("the database cannot commit: {0}")]
    Unavailable(String),
    /// The writer thread is gone (the host is shutting down).
    #[error("the store is closed")]
    Closed,
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The database file was written by a newer version of smithers-host.
    #[error("{0}")]
    Incompatible(String),
}

impl From<rusqlite::Error> for StoreError {
    /// Failures of the storage under the database (disk full, read-only file
    /// or file system, I/O error, cannot open a file) are `Unavailable`: the
    /// host reports them as such and keeps serving reads.
    fn from(error: rusqlite::Error) -> Self {
        if is_storage_failure(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Database(error)
        }
    }
}

/// Whether SQLite failed because of the storage, not the statement.
pub(crate) fn is_storage_failure(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        error.sqlite_error_code(),
        Some(DiskFull | ReadOnly | SystemIoFailure | CannotOpen | PermissionDenied)
    )
}

/// A new run row.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id.
    pub run_id: RunId,
    /// `describe().name`.
    pub workflow_name: String,
    /// Path as the client gave it, resolved under the root dir.
    pub workflow_path: String,
    /// Component hash at start.
    pub workflow_hash: String,
    /// Input JSON text.
    pub input_json: String,
    /// Run configuration JSON (max concurrency, root dir, network...).
    pub config_json: String,
    /// Who started the run, when known.
    pub auth_json: Option<String>,
    /// Lease owner (this host).
    pub owner_id: String,
}

/// One typed mutation.
#[derive(Debug, Clone)]
pub enum Op {
    /// Inserts a run in status `running`; `Conflict` if the id exists.
    InsertRun(NewRun),
    /// Takes over a non-running run (resume): sets `running`, owner and
    /// heartbeat, clears the finish time; `Conflict` if it is running.
    ClaimRun {
        /// New owner.
        owner_id: String,
        /// Hash the resumed run now uses.
        workflow_hash: String,
        /// Also take a `running` run whose owner is not `owner_id` (crash
        /// recovery of a run left behind by a dead host).
        steal_running: bool,
    },
    /// Fails with `Conflict` unless the run is `running` and owned by `owner_id`.
    AssertOwner {
        /// Expected owner.
        owner_id: String,
    },
    /// Records that the run executed with this component hash.
    RecordVersion {
        /// Component hash.
        hash: String,
    },
    /// Sets the run status; terminal statuses also set `finished_at_ms` and
    /// drop the lease, waiting ones drop the lease.
    SetRunStatus {
        /// New status.
        status: RunStatus,
        /// Error for `failed`.
        error: Option<ErrorInfo>,
    },
    /// Inserts or updates a node row.
    UpsertNode(NodeUpdate),
    /// Inserts an attempt in `in-progress`; empties the node's HTTP journal
    /// unless the attempt before it was interrupted.
    StartAttempt {
        /// Node and iteration.
        key: NodeKey,
        /// Attempt number.
        attempt: u32,
        /// Task metadata.
        meta_json: Option<String>,
    },
    /// Ends an attempt.
    EndAttempt {
        /// Node and iteration.
        key: NodeKey,
        /// Attempt number.
        attempt: u32,
        /// Final state.
        state: AttemptState,
        /// Why it failed.
        error: Option<ErrorInfo>,
    },
    /// Journals a completed outbound HTTP call of a task (see `journal`).
    RecordHttpCall {
        /// Node and iteration.
        key: NodeKey,
        /// The call.
        call: HttpCall,
    },
    /// Forgets a node's journaled HTTP calls from `from_seq` on: replay
    /// diverged there.
    DropHttpCalls {
        /// Node and iteration.
        key: NodeKey,
        /// First seq forgotten.
        from_seq: u32,
    },
    /// Marks every in-progress attempt of the run `cancelled` and resets its
    /// node to `pending`: the attempts a crash interrupted will be retried.
    AbandonInterruptedAttempts,
    /// Stores a frame's tree (canonical JSON and task index) under its hash,
    /// once per distinct tree. The frame itself is its `FrameCommitted` event.
    StoreTree {
        /// sha256 of the canonical tree JSON.
        tree_hash: String,
        /// Canonical tree JSON.
        tree_json: String,
        /// Task index JSON.
        task_index_json: String,
    },
    /// Inserts a `requested` approval (no-op if one exists for the key).
    RequestApproval {
        /// Node and iteration.
        key: NodeKey,
        /// Display label.
        label: Option<String>,
        /// Request JSON.
        request_json: String,
    },
    /// Decides a `requested` approval whose node is `waiting-approval`, sets
    /// the node `pending` and emits `ApprovalGranted`/`ApprovalDenied`.
    /// `Conflict` if there is nothing to decide.
    DecideApproval {
        /// Node and iteration.
        key: NodeKey,
        /// The decision.
        approved: bool,
        /// Note of the decider.
        note: Option<String>,
        /// Who decided.
        decided_by: Option<String>,
    },
    /// Stores a signal with the next signal seq and emits `SignalReceived`.
    InsertSignal {
        /// Signal name.
        name: String,
        /// Payload JSON text.
        payload_json: String,
        /// Correlation id.
        correlation_id: Option<String>,
        /// Who sent it.
        received_by: Option<String>,
    },
    /// Assigns a stored signal to the node that consumed it.
    ConsumeSignal {
        /// Signal seq.
        seq: u64,
        /// Consuming node.
        key: NodeKey,
    },
    /// Sets a loop's iteration and completion.
    SetLoop {
        /// Loop node id.
        loop_id: String,
        /// Current iteration.
        iteration: u32,
        /// The loop is complete.
        done: bool,
    },
    /// Cancels a non-terminal run: in-progress attempts and nodes become
    /// `cancelled` (`NodeCancelled`), requested approvals are denied
    /// (`ApprovalDenied` + `NodeCancelled`), then `RunCancelled`.
    /// `Conflict` when the run is already terminal.
    CancelRun,
    /// Refreshes the lease of every running run owned by `owner_id`.
    Heartbeat {
        /// Owner.
        owner_id: String,
    },
    /// Creates a gateway cron schedule, or updates its workflow, pattern and
    /// enabled flag. `next_run_at_ms` is written on insert, and on update
    /// only when the pattern changed (an unchanged schedule keeps its claim
    /// token across restarts). Touches no run.
    UpsertCron {
        /// Schedule id.
        cron_id: String,
        /// Registered workflow key.
        workflow_key: String,
        /// Cron pattern.
        pattern: String,
        /// Fires only when enabled.
        enabled: bool,
        /// First tick for a new or changed pattern.
        next_run_at_ms: Option<i64>,
    },
    /// Deletes a gateway cron schedule; `NotFound` if absent. Touches no run.
    DeleteCron {
        /// Schedule id.
        cron_id: String,
    },
    /// Claims one tick of an enabled schedule: moves `next_run_at_ms` from
    /// `expected_next_run_at_ms` to `next_run_at_ms` and records the fire
    /// time. `Conflict` when the stored value differs (the tick was already
    /// claimed) or the schedule is disabled or gone. Touches no run.
    ClaimCronTick {
        /// Schedule id.
        cron_id: String,
        /// The tick being claimed, as read.
        expected_next_run_at_ms: i64,
        /// The following tick.
        next_run_at_ms: Option<i64>,
    },
    /// Records a manual trigger or a failed fire of a schedule (`error_json`
    /// set on failure, cleared otherwise). Touches no run.
    RecordCronRun {
        /// Schedule id.
        cron_id: String,
        /// Why the fire failed.
        error_json: Option<String>,
    },
    /// Records a webhook delivery as accepted until `expires_at_ms`, after
    /// pruning the expired ones. `Conflict` when the same delivery is
    /// already recorded (a replay). Touches no run.
    ClaimWebhookDelivery {
        /// Registered workflow key.
        workflow_key: String,
        /// What identifies the delivery.
        delivery_key: String,
        /// Until when a replay of it must be refused.
        expires_at_ms: i64,
    },
    /// Forgets a claimed delivery whose processing failed, so the sender's
    /// retry is processed. Touches no run.
    ReleaseWebhookDelivery {
        /// Registered workflow key.
        workflow_key: String,
        /// What identifies the delivery.
        delivery_key: String,
    },
    /// Removes at most `max_rows` rows of a terminal run the rule takes
    /// (events, frames, nodes and outputs, attempts, signals, approvals,
    /// loops, versions), then the run itself once nothing of it is left; the
    /// outcome's `collected` says what went. `Conflict` when the rule does
    /// not take the run (it was resumed, or is not old enough). Emits no
    /// event.
    CollectRun {
        /// Which runs may go.
        rule: CollectRule,
        /// Most rows removed by this op.
        max_rows: u32,
    },
}

/// A node row change. `None` fields keep their stored value.
#[derive(Debug, Clone)]
pub struct NodeUpdate {
    /// Node and iteration.
    pub key: NodeKey,
    /// New state.
    pub state: NodeState,
    /// Display label.
    pub label: Option<String>,
    /// Last attempt number.
    pub last_attempt: Option<u32>,
    /// Committed output (JSON text).
    pub output_json: Option<String>,
    /// Error of the last failure.
    pub error: Option<ErrorInfo>,
    /// Earliest start of the next attempt (`Some(None)` clears it).
    pub retry_at_ms: Option<Option<i64>>,
}

impl NodeUpdate {
    /// A change of state only.
    pub fn new(key: &NodeKey, state: NodeState) -> Self {
        Self {
            key: key.clone(),
            state,
            label: None,
            last_attempt: None,
            output_json: None,
            error: None,
            retry_at_ms: None,
        }
    }
}

/// A batch of ops and events applied atomically to one run.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Target run.
    pub run_id: RunId,
    /// Mutations, in order.
    pub ops: Vec<Op>,
    /// Events appended after the ops' own events.
    pub events: Vec<EventBody>,
}

impl Commit {
    /// An empty commit for `run_id`.
    pub fn new(run_id: RunId) -> Self {
        Self {
            run_id,
            ops: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Adds an op.
    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Adds an event.
    pub fn event(mut self, event: EventBody) -> Self {
        self.events.push(event);
        self
    }

    /// Adds an op in place.
    pub fn push_op(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Adds an event in place.
    pub fn push_event(&mut self, event: EventBody) {
        self.events.push(event);
    }
}

/// What a commit produced.
#[derive(Debug, Clone, Default)]
pub struct CommitOutcome {
    /// The stored events, with their seqs, in order.
    pub events: Vec<Arc<StoredEvent>>,
    /// Seq of the signal an `InsertSignal` stored.
    pub signal_seq: Option<u64>,
    /// Receive time of that signal.
    pub signal_received_at_ms: Option<i64>,
    /// What a `CollectRun` removed.
    pub collected: Option<CollectStep>,
}

/// Summary counts of node states (`{"finished": 3, "pending": 1}`).
pub type NodeSummary = BTreeMap<String, u64>;

/// A pending approval as listed by `GET /v1/approvals`.
pub type PendingApproval = read::PendingApprovalRow;

/// What the writer thread is asked to do.
enum WriteRequest {
    /// Apply a commit (grouped with the ones queued behind it).
    Commit {
        commit: Commit,
        reply: oneshot::Sender<Result<CommitOutcome, StoreError>>,
    },
    /// Work on the file between commits; answers the bytes returned.
    Maintain {
        job: Maintenance,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<std::sync::mpsc::Sender<WriteRequest>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<checkpointer::Checkpointer>>,
    readers: read::ReadPool,
    hub: EventHub,
}

impl Store {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let conn = schema::open_writer(path, durability)?;
        let readers = read::ReadPool::open(path, 4)?;
        let checkpointer = checkpointer::Checkpointer::start(path, checkpointer::RESTART_BYTES)?;
        let hub = EventHub::default();
        let (tx, rx) = std::sync::mpsc::channel::<WriteRequest>();
        let thread_hub = hub.clone();
        let thread_path = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("smithers-store-writer".into())
            .spawn(move || writer::run(conn, &thread_path, rx, thread_hub))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(handle)),
                checkpointer: Mutex::new(Some(checkpointer)),
                readers,
                hub,
            }),
        })
    }

    /// Applies a commit in one transaction and publishes its events.
    pub async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteRequest::Commit { commit, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Has the writer work on the database file between commits (see
    /// [`Maintenance`]); answers the bytes returned to the file system.
    pub async fn maintain(&self, job: Maintenance) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteRequest::Maintain { job, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn send(&self, request: WriteRequest) -> Result<(), StoreError> {
        let guard = self.inner.writer.lock().expect("writer lock");
        let sender = guard.as_ref().ok_or(StoreError::Closed)?;
        sender.send(request).map_err(|_| StoreError::Closed)
    }

    /// Sizes of the database file and of its WAL.
    pub fn disk_usage(&self) -> DiskUsage {
        disk_usage(&self.inner.path)
    }

    /// Refreshes the lease of every running run owned by `owner_id`.
    pub async fn heartbeat(&self, owner_id: &str) -> Result<(), StoreError> {
        // The op touches no single run and emits no events; the commit's run
        // id is only a label.
        let label = RunId::parse("heartbeat").expect("valid label");
        self.commit(Commit::new(label).op(Op::Heartbeat {
            owner_id: owner_id.to_string(),
        }))
        .await
        .map(|_| ())
    }

    /// Applies ops that touch no single run and emit no events (gateway
    /// schedules and webhook deliveries), in one transaction.
    pub async fn apply_unscoped(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        // As for the heartbeat, the commit's run id is only a label.
        let label = RunId::parse("unscoped").expect("valid label");
        let mut commit = Commit::new(label);
        for op in ops {
            commit.push_op(op);
        }
        self.commit(commit).await.map(|_| ())
    }

    /// Live event listeners.
    pub fn hub(&self) -> &EventHub {
        &self.inner.hub
    }

    /// Runs a read query on a pooled read-only connection.
    pub async fn read<R, F>(&self, query: F) -> Result<R, StoreError>
    where
        F: FnOnce(&read::Reader<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(query))
            .await
            .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }

    /// Runs a read query on the current thread.
    pub fn read_blocking<R>(
        &self,
        query: impl FnOnce(&read::Reader<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.inner.readers.with(query)
    }

    /// Stops the writer after it has applied every queued commit.
    pub fn close(&self) {
        self.inner.writer.lock().expect("writer lock").take();
        if let Some(handle) = self.inner.writer_thread.lock().expect("thread lock").take() {
            let _ = handle.join();
        }
        if let Some(checkpointer) = self
            .inner
            .checkpointer
            .lock()
            .expect("checkpointer lock")
            .take()
        {
            checkpointer.stop();
        }
    }
}

/// Decodes a stored JSON column.
fn decode_json(raw: &str) -> Result<Value, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_webhook_delivery_is_claimed_once_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite"), Durability::Normal).unwrap();
        let claim = |key: &str, expires_at_ms: i64| {
            store.apply_unscoped(vec![Op::ClaimWebhookDelivery {
                workflow_key: "hook".into(),
                delivery_key: key.into(),
                expires_at_ms,
            }])
        };
        let later = crate::model::now_ms() + 60_000;
        claim("id:a", later).await.unwrap();
        assert!(matches!(
            claim("id:a", later).await,
            Err(StoreError::Conflict(_))
        ));
        // Another workflow's delivery of the same id is another delivery.
        store
            .apply_unscoped(vec![Op::ClaimWebhookDelivery {
                workflow_key: "other".into(),
                delivery_key: "id:a".into(),
                expires_at_ms: later,
            }])
            .await
            .unwrap();
        // An expired claim is pruned by the next claim, so the table holds
        // only live ones (the timestamp check refuses expired deliveries).
        claim("id:old", 1).await.unwrap();
        claim("id:old", 1).await.unwrap();
        // A released claim (its processing failed) can be claimed again.
        store
            .apply_unscoped(vec![Op::ReleaseWebhookDelivery {
                workflow_key: "hook".into(),
                delivery_key: "id:a".into(),
            }])
            .await
            .unwrap();
        claim("id:a", later).await.unwrap();
        store.close();
    }

    fn sqlite_error(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn storage_failures_are_unavailable_and_other_errors_are_not() {
        for code in [
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_IOERR_WRITE,
            rusqlite::ffi::SQLITE_CANTOPEN,
            rusqlite::ffi::SQLITE_PERM,
        ] {
            let error = StoreError::from(sqlite_error(code));
            assert!(
                matches!(error, StoreError::Unavailable(_)),
                "{code}: {error:?}"
            );
        }
        for code in [
            rusqlite::ffi::SQLITE_CONSTRAINT,
            rusqlite::ffi::SQLITE_ERROR,
        ] {
            let error = StoreError::from(sqlite_error(code));
            assert!(
                matches!(error, StoreError::Database(_)),
                "{code}: {error:?}"
            );
        }
    }
}
