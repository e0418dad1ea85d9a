//! The durable engine: starts, resumes, cancels and unblocks runs.
//!
//! Each active run has one driver task (see `run.rs`) that loops render →
//! schedule → run tasks → commit. This module owns the registry of active
//! drivers and the operations clients invoke: it turns requests into store
//! commits and makes sure a run that can progress has exactly one driver.
//! It knows nothing about HTTP.

pub mod events;
pub mod outputs;
pub mod preflight;
mod recovery;
pub mod retention;
mod run;
mod schedule;
mod state;
mod tree;
pub mod views;
pub mod watcher;
pub mod workflows;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::model::{EventBody, NodeKey, RunId, RunStatus};
use crate::runtime::build::{BuildError, BuildSettings, GuestBuilder};
use crate::runtime::{InputViolation, LoadError, Loaded, Runtime};
use crate::sandbox::SandboxPolicy;
use crate::store::{Commit, NewRun, Op, RunRow, Store, StoreError};

/// How often active runs refresh their lease.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Engine settings.
#[derive(Clone)]
pub struct EngineConfig {
    /// Canonical root dir: workflows must live under it; tasks see only it.
    pub root_dir: PathBuf,
    /// Policy of the bash tool.
    pub sandbox: Arc<SandboxPolicy>,
    /// How guest crates are built (confined; target dir, sources, limits).
    pub build: BuildSettings,
    /// Default most tasks in flight per run.
    pub max_concurrency: u32,
    /// How much of the root dir listing the workflows may look at.
    pub scan: workflows::ScanLimits,
}

/// Errors of engine operations, by meaning.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The run input does not match the workflow's input schema.
    #[error(transparent)]
    InvalidInput(#[from] InputViolation),
    /// `workflowPath` resolves outside the root dir.
    #[error("Workflow path must be within server root directory: {0}")]
    WorkflowPathOutsideRoot(String),
    /// `workflowPath` names nothing.
    #[error("workflow not found: {0}")]
    WorkflowNotFound(String),
    /// The component cannot be loaded.
    #[error("{0}")]
    WorkflowLoad(#[from] LoadError),
    /// The guest crate does not build.
    #[error("{0}")]
    WorkflowBuild(#[from] BuildError),
    /// No such run.
    #[error("Run not found: {0}")]
    RunNotFound(RunId),
    /// The run id is taken.
    #[error("Run id already exists: {0}")]
    RunAlreadyExists(RunId),
    /// The run is finished or failed.
    #[error("Run is not currently active: {0} is {1}")]
    RunNotActive(RunId, RunStatus),
    /// Approve/deny of a node that is not waiting.
    #[error("{0}")]
    NotWaitingForApproval(String),
    /// The run never mounted this node (at this iteration).
    #[error("Node not found: {node_id}{}", iteration.map(|i| format!(" at iteration {i}")).unwrap_or_default())]
    NodeNotFound {
        /// The node asked for.
        node_id: String,
        /// The iteration asked for, if any.
        iteration: Option<u32>,
    },
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
    /// The host is shutting down.
    #[error("the host is shutting down")]
    ShuttingDown,
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// What a start request carries.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Path of a `.wasm` component or a guest crate, under the root dir.
    pub workflow_path: String,
    /// Run input (a JSON object).
    pub input: Option<Value>,
    /// Client-chosen id.
    pub run_id: Option<String>,
    /// Override of the run's task concurrency.
    pub max_concurrency: Option<u32>,
    /// Who started the run (exposed to the workflow as `ctx.auth`).
    pub auth: Option<Value>,
}

/// Result of a resume request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// A driver now runs it.
    Resumed,
    /// A driver already runs it; nothing changed.
    AlreadyRunning,
    /// It finished; there is nothing to resume.
    Finished,
}

/// Result of a cancel request (Smithers' `finalizeCancelledRun` shape).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelOutcome {
    /// This request cancelled the run.
    pub won: bool,
    /// `cancelled` or `already-terminal`.
    pub status: &'static str,
    /// Always `cancelled`.
    pub terminal_status: &'static str,
    /// A driver was stopped.
    pub repaired: bool,
    /// The run.
    pub run_id: RunId,
}

/// Result of a signal delivery.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalReceipt {
    /// The run.
    pub run_id: RunId,
    /// Signal seq within the run.
    pub seq: u64,
    /// Signal name.
    pub signal_name: String,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Receive time.
    pub received_at_ms: i64,
}

/// An approval decision.
#[derive(Debug, Clone)]
pub struct ApprovalDecision {
    /// Approval node.
    pub node_id: String,
    /// Loop iteration.
    pub iteration: u32,
    /// Approve or deny.
    pub approved: bool,
    /// Note.
    pub note: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
}

/// A driver's registration.
struct ActiveRun {
    /// Stops the driver and its tasks (cancel or shutdown).
    halt: CancellationToken,
    /// Outside input arrived (decision, signal).
    wake: Notify,
    /// Set with `wake`; checked under the registry lock before parking.
    dirty: AtomicBool,
    /// Flips to true when the driver exits.
    finished: watch::Sender<bool>,
}

pub(crate) struct EngineInner {
    store: Store,
    runtime: Arc<Runtime>,
    config: EngineConfig,
    builder: GuestBuilder,
    /// What is known of the workflows under the root dir (last builds).
    catalog: workflows::Catalog,
    owner_id: String,
    active: Mutex<HashMap<RunId, Arc<ActiveRun>>>,
    shutting_down: AtomicBool,
    /// Interrupted runs are being resumed (see `recovery`).
    recovering: AtomicBool,
    background: CancellationToken,
}

/// The engine handle. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl Engine {
    /// Creates the engine and starts the heartbeat.
    pub fn new(store: Store, runtime: Arc<Runtime>, config: EngineConfig) -> Self {
        let builder = GuestBuilder::new(config.build.clone(), config.sandbox.clone());
        let inner = Arc::new(EngineInner {
            store,
            runtime,
            builder,
            catalog: workflows::Catalog::default(),
            owner_id: format!("pid:{}:{}", std::process::id(), uuid::Uuid::new_v4()),
            config,
            active: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            recovering: AtomicBool::new(false),
            background: CancellationToken::new(),
        });
        let heartbeat = inner.clone();
        tokio::spawn(async move { heartbeat.heartbeat_loop().await });
        Self { inner }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    /// The root dir.
    pub fn root_dir(&self) -> &Path {
        &self.inner.config.root_dir
    }

    /// This host's lease owner id.
    pub fn owner_id(&self) -> &str {
        &self.inner.owner_id
    }

    /// Number of runs with a live driver.
    pub fn active_runs(&self) -> usize {
        self.inner.active.lock().expect("registry").len()
    }

    /// True when a driver is running this run.
    pub fn is_active(&self, run_id: &RunId) -> bool {
        self.inner
            .active
            .lock()
            .expect("registry")
            .contains_key(run_id)
    }

    /// Starts a run. Returns once the run is stored and its driver spawned.
    pub async fn start(&self, request: StartRequest) -> Result<RunId, EngineError> {
        let inner = &self.inner;
        inner.check_running()?;
        let input = match request.input {
            None => Value::Object(Default::default()),
            Some(Value::Object(map)) => Value::Object(map),
            Some(_) => {
                return Err(EngineError::InvalidRequest(
                    "input must be a JSON object".into(),
                ));
            }
        };
        if request.max_concurrency == Some(0) {
            return Err(EngineError::InvalidRequest(
                "config.maxConcurrency must be a positive number".into(),
            ));
        }
        let run_id = match &request.run_id {
            Some(raw) => RunId::parse(raw).map_err(EngineError::InvalidRequest)?,
            None => RunId::generate(),
        };
        let (path, loaded) = inner.load_workflow(&request.workflow_path).await?;
        // Before anything is stored: a refused input leaves no run behind.
        if let Some(schema) = &loaded.workflow.input_schema {
            schema.check(&input)?;
        }
        let slot = inner
            .reserve(&run_id)
            .ok_or_else(|| EngineError::RunAlreadyExists(run_id.clone()))?;
        let max_concurrency = request
            .max_concurrency
            .unwrap_or(inner.config.max_concurrency);
        let config = serde_json::json!({
            "maxConcurrency": max_concurrency,
            "rootDir": inner.config.root_dir,
            "allowNetwork": inner.config.sandbox.allow_network,
        });
        let workflow = loaded.workflow.clone();
        let commit = Commit::new(run_id.clone())
            .op(Op::InsertRun(NewRun {
                run_id: run_id.clone(),
                workflow_name: workflow.info.name.clone(),
                workflow_path: path.display().to_string(),
                workflow_hash: workflow.hash.to_string(),
                input_json: input.to_string(),
                config_json: config.to_string(),
                auth_json: request.auth.as_ref().map(Value::to_string),
                owner_id: inner.owner_id.clone(),
            }))
            .op(Op::RecordVersion {
                hash: workflow.hash.to_string(),
            })
            .event(EventBody::RunStarted {
                workflow_name: workflow.info.name.clone(),
                workflow_hash: workflow.hash.to_string(),
                resumed: false,
            })
            .event(loaded_event(&loaded));
        if let Err(e) = inner.store.commit(commit).await {
            inner.release(&run_id);
            return Err(match e {
                StoreError::Conflict(_) => EngineError::RunAlreadyExists(run_id),
                other => other.into(),
            });
        }
        let state = state::RunState::new(
            run_id.as_str(),
            input.to_string(),
            request.auth.as_ref().map(Value::to_string),
        );
        run::spawn(
            inner.clone(),
            run_id.clone(),
            workflow,
            state,
            max_concurrency,
            slot,
            "start",
        );
        Ok(run_id)
    }

    /// Resumes a parked, failed, cancelled or interrupted run with the
    /// workflow's current version. `workflow_path` overrides the stored path.
    pub async fn resume(
        &self,
        run_id: &RunId,
        workflow_path: Option<&str>,
    ) -> Result<ResumeOutcome, EngineError> {
        self.inner.clone().resume(run_id, workflow_path).await
    }

    /// Cancels a run: stops its tasks and records `RunCancelled`.
    pub async fn cancel(&self, run_id: &RunId) -> Result<CancelOutcome, EngineError> {
        let inner = &self.inner;
        let result = inner
            .store
            .commit(Commit::new(run_id.clone()).op(Op::CancelRun))
            .await;
        match result {
            Ok(_) => {
                let active = inner.active.lock().expect("registry").get(run_id).cloned();
                if let Some(active) = &active {
                    active.halt.cancel();
                }
                Ok(CancelOutcome {
                    won: true,
                    status: "cancelled",
                    terminal_status: "cancelled",
                    repaired: active.is_some(),
                    run_id: run_id.clone(),
                })
            }
            Err(StoreError::NotFound(_)) => Err(EngineError::RunNotFound(run_id.clone())),
            Err(StoreError::Conflict(_)) => {
                let run = inner.run(run_id).await?;
                if run.status == RunStatus::Cancelled {
                    Ok(CancelOutcome {
                        won: false,
                        status: "already-terminal",
                        terminal_status: "cancelled",
                        repaired: false,
                        run_id: run_id.clone(),
                    })
                } else {
                    Err(EngineError::RunNotActive(run_id.clone(), run.status))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Records an approval decision and lets the run continue on its own.
    pub async fn decide(
        &self,
        run_id: &RunId,
        decision: ApprovalDecision,
    ) -> Result<(), EngineError> {
        let inner = &self.inner;
        inner.check_running()?;
        let key = NodeKey::new(decision.node_id, decision.iteration);
        let result = inner
            .store
            .commit(Commit::new(run_id.clone()).op(Op::DecideApproval {
                key,
                approved: decision.approved,
                note: decision.note,
                decided_by: decision.decided_by,
            }))
            .await;
        match result {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => return Err(EngineError::RunNotFound(run_id.clone())),
            Err(StoreError::Conflict(message)) => {
                return Err(EngineError::NotWaitingForApproval(message));
            }
            Err(e) => return Err(e.into()),
        }
        inner.clone().wake_or_resume(run_id).await;
        Ok(())
    }

    /// Delivers a signal and lets a waiting run continue on its own.
    pub async fn signal(
        &self,
        run_id: &RunId,
        name: &str,
        payload: Value,
        correlation_id: Option<String>,
        received_by: Option<String>,
    ) -> Result<SignalReceipt, EngineError> {
        let inner = &self.inner;
        inner.check_running()?;
        let name = name.trim();
        if name.is_empty() {
            return Err(EngineError::InvalidRequest(
                "signal name must not be empty".into(),
            ));
        }
        let correlation_id = correlation_id
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        let outcome = inner
            .store
            .commit(Commit::new(run_id.clone()).op(Op::InsertSignal {
                name: name.to_string(),
                payload_json: payload.to_string(),
                correlation_id: correlation_id.clone(),
                received_by,
            }))
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => EngineError::RunNotFound(run_id.clone()),
                other => other.into(),
            })?;
        // Any non-terminal run may have a branch waiting for this signal
        // (even one parked on an approval in another branch).
        let run = inner.run(run_id).await?;
        if !run.status.is_terminal() {
            inner.clone().wake_or_resume(run_id).await;
        }
        Ok(SignalReceipt {
            run_id: run_id.clone(),
            seq: outcome.signal_seq.unwrap_or(0),
            signal_name: name.to_string(),
            correlation_id,
            received_at_ms: outcome.signal_received_at_ms.unwrap_or(0),
        })
    }

    /// Waits until no driver runs this run (finished, parked or failed).
    pub async fn wait_idle(&self, run_id: &RunId) {
        let receiver = {
            let active = self.inner.active.lock().expect("registry");
            match active.get(run_id) {
                Some(run) => run.finished.subscribe(),
                None => return,
            }
        };
        let mut receiver = receiver;
        let _ = receiver.wait_for(|finished| *finished).await;
    }

    /// Stops every driver without touching run state: runs stay `running`
    /// and are resumed by the next host on this state dir.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.background.cancel();
        let drivers: Vec<Arc<ActiveRun>> = self
            .inner
            .active
            .lock()
            .expect("registry")
            .values()
            .cloned()
            .collect();
        for driver in &drivers {
            driver.halt.cancel();
        }
        for driver in drivers {
            let mut finished = driver.finished.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(10), finished.wait_for(|f| *f)).await;
        }
    }
}

fn loaded_event(loaded: &Loaded) -> EventBody {
    EventBody::WorkflowLoaded {
        hash: loaded.workflow.hash.to_string(),
        source: loaded.source.as_str().into(),
        compile_ms: loaded.compile_ms,
    }
}

impl EngineInner {
    fn check_running(&self) -> Result<(), EngineError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            Err(EngineError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    async fn run(&self, run_id: &RunId) -> Result<RunRow, EngineError> {
        let id = run_id.clone();
        self.store
            .read(move |r| r.run(&id))
            .await?
            .ok_or_else(|| EngineError::RunNotFound(run_id.clone()))
    }

    /// Claims the driver slot of a run; `None` if a driver already has it.
    fn reserve(&self, run_id: &RunId) -> Option<Arc<ActiveRun>> {
        let mut active = self.active.lock().expect("registry");
        if active.contains_key(run_id) {
            return None;
        }
        let slot = Arc::new(ActiveRun {
            halt: self.background.child_token(),
            wake: Notify::new(),
            dirty: AtomicBool::new(false),
            finished: watch::channel(false).0,
        });
        active.insert(run_id.clone(), slot.clone());
        Some(slot)
    }

    fn release(&self, run_id: &RunId) {
        if let Some(slot) = self.active.lock().expect("registry").remove(run_id) {
            slot.finished.send_replace(true);
        }
    }

    /// Resumes a run. A `running` run without a driver in this process is
    /// taken over: the state dir lock guarantees its owner is dead.
    async fn resume(
        self: Arc<Self>,
        run_id: &RunId,
        workflow_path: Option<&str>,
    ) -> Result<ResumeOutcome, EngineError> {
        self.check_running()?;
        let run = self.run(run_id).await?;
        if run.runtime_owner_id.as_deref() == Some(crate::store::COLLECTING_OWNER) {
            // Retention began removing it; the next pass finishes the job.
            return Err(EngineError::RunNotFound(run_id.clone()));
        }
        if run.status == RunStatus::Finished {
            return Ok(ResumeOutcome::Finished);
        }
        let Some(slot) = self.reserve(run_id) else {
            return Ok(ResumeOutcome::AlreadyRunning);
        };
        match self
            .clone()
            .resume_reserved(run_id, run, workflow_path, slot)
            .await
        {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                self.release(run_id);
                Err(e)
            }
        }
    }

    async fn resume_reserved(
        self: Arc<Self>,
        run_id: &RunId,
        run: RunRow,
        workflow_path: Option<&str>,
        slot: Arc<ActiveRun>,
    ) -> Result<ResumeOutcome, EngineError> {
        let path = workflow_path.unwrap_or(&run.workflow_path).to_string();
        let (_, loaded) = self.load_workflow(&path).await?;
        let workflow = loaded.workflow.clone();
        let commit = Commit::new(run_id.clone())
            .op(Op::ClaimRun {
                owner_id: self.owner_id.clone(),
                workflow_hash: workflow.hash.to_string(),
                steal_running: true,
            })
            .op(Op::AbandonInterruptedAttempts)
            .op(Op::RecordVersion {
                hash: workflow.hash.to_string(),
            })
            .event(EventBody::RunStarted {
                workflow_name: workflow.info.name.clone(),
                workflow_hash: workflow.hash.to_string(),
                resumed: true,
            })
            .event(loaded_event(&loaded));
        match self.store.commit(commit).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                self.release(run_id);
                return Ok(ResumeOutcome::AlreadyRunning);
            }
            Err(e) => return Err(e.into()),
        }
        let id = run_id.clone();
        let snapshot = self
            .store
            .read(move |r| r.snapshot(&id))
            .await?
            .ok_or_else(|| EngineError::RunNotFound(run_id.clone()))?;
        let mut state = state::RunState::from_snapshot(&snapshot);
        if matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
            state.reopen_failed();
        }
        let max_concurrency = serde_json::from_str::<Value>(&run.config_json)
            .ok()
            .and_then(|c| c.get("maxConcurrency").and_then(Value::as_u64))
            .map_or(self.config.max_concurrency, |m| m.max(1) as u32);
        run::spawn(
            self.clone(),
            run_id.clone(),
            workflow,
            state,
            max_concurrency,
            slot,
            "resume",
        );
        Ok(ResumeOutcome::Resumed)
    }

    /// After outside input: wake the driver, or resume the parked run.
    async fn wake_or_resume(self: Arc<Self>, run_id: &RunId) {
        let active = self.active.lock().expect("registry").get(run_id).cloned();
        if let Some(active) = active {
            active.dirty.store(true, Ordering::SeqCst);
            active.wake.notify_one();
            return;
        }
        if let Err(e) = self.clone().resume(run_id, None).await {
            tracing::error!(run = %run_id, error = %e, "cannot resume run after input");
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.background.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if self.active.lock().expect("registry").is_empty() {
                continue;
            }
            if let Err(e) = self.store.heartbeat(&self.owner_id).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }
}
