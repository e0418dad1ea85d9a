//! The Gateway: a multi-workflow control plane compatible with Smithers'
//! `Gateway` and its published client (`smithers-orchestrator/gateway-client`).
//!
//! Workflows are registered by key in a TOML file ([`config`]); clients
//! authenticate once ([`auth`]: static tokens, HS256 JWTs or a trusted
//! proxy, each granting a role and scopes) and call RPC methods over
//! `POST /v1/rpc/<method>`, `POST /rpc` or a WebSocket on the same origin
//! ([`ws`]), where they also stream run events with resume-on-reconnect.
//! Schedules ([`cron`]) and signed webhooks ([`webhook`]) start runs as the
//! `system` role. Every run the gateway starts carries `ctx.auth =
//! {triggeredBy, role, scopes, createdAt}`.
//!
//! This module owns the shared [`Gateway`] state, the HTTP routes and the
//! accept loop. It holds no run state: runs, events, approvals and schedules
//! live in the store, so a restart loses nothing and every stream resumes
//! from the database.

pub mod auth;
pub mod auth_config;
pub mod bounds;
pub mod config;
pub mod cron;
pub mod events;
pub mod jwt;
mod methods;
pub mod rpc;
pub mod trust;
pub mod webhook;
pub mod webhook_auth;
pub mod ws;

mod serve;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use self::auth::{Authenticator, Identity};
use self::config::{GatewayConfig, WorkflowConfig};
use self::events::EventBridge;
use self::rpc::{RpcCode, RpcError};
pub use self::serve::{GatewayError, serve};
use crate::engine::{Engine, EngineError, StartRequest};
use crate::http::metrics::Metrics;
use crate::model::{RunId, now_ms};
use crate::store::RunRow;

/// Features advertised in `hello` and `/health`.
pub const FEATURES: [&str; 2] = ["streaming", "runs"];

/// Why a SIGHUP reload left `[auth]` as it was.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    /// The reloaded file has no `[auth]` section.
    #[error(
        "the reloaded config has no [auth] section; keeping the current one (turning authentication off needs a restart)"
    )]
    AuthRemoved,
}

/// A registered workflow.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Its key.
    pub key: String,
    /// As configured.
    pub config: WorkflowConfig,
    /// Resolved path (what runs record as `workflowPath`).
    pub path: String,
    /// `describe().name` when it was loaded.
    pub workflow_name: String,
}

/// Counters the gateway adds to `/metrics`.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// HTTP and event metrics shared with server mode.
    pub http: Arc<Metrics>,
    ws_active: AtomicU64,
    ws_total: AtomicU64,
    rpc_calls: AtomicU64,
    backpressure: AtomicU64,
    cron_fired: AtomicU64,
    webhooks_accepted: AtomicU64,
    webhooks_rejected: AtomicU64,
}

impl GatewayMetrics {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket opened.
    pub fn ws_opened(&self) {
        Self::bump(&self.ws_active);
        Self::bump(&self.ws_total);
    }

    /// A WebSocket closed.
    pub fn ws_closed(&self) {
        self.ws_active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open WebSocket connections (authenticated or not).
    pub fn ws_active_count(&self) -> u64 {
        self.ws_active.load(Ordering::Relaxed)
    }

    /// An RPC was called.
    pub fn rpc_called(&self) {
        Self::bump(&self.rpc_calls);
    }

    /// A slow consumer lost a stream.
    pub fn backpressure_disconnect(&self) {
        Self::bump(&self.backpressure);
    }

    /// A cron tick started a run.
    pub fn cron_fired(&self) {
        Self::bump(&self.cron_fired);
    }

    /// A webhook delivery was accepted.
    pub fn webhook_accepted(&self) {
        Self::bump(&self.webhooks_accepted);
    }

    /// A webhook delivery was refused.
    pub fn webhook_rejected(&self) {
        Self::bump(&self.webhooks_rejected);
    }

    /// Prometheus text: server-mode metrics plus the gateway's own.
    pub fn render(&self, engine: &Engine) -> String {
        use std::fmt::Write as _;
        let mut out = self.http.render(engine);
        for (name, kind, help, value) in [
            (
                "smithers_gateway_connections_active",
                "gauge",
                "Open WebSocket connections",
                &self.ws_active,
            ),
            (
                "smithers_gateway_connections_total",
                "counter",
                "WebSocket connections opened",
                &self.ws_total,
            ),
            (
                "smithers_gateway_rpc_total",
                "counter",
                "WebSocket and HTTP RPC calls",
                &self.rpc_calls,
            ),
            (
                "smithers_gateway_backpressure_disconnects_total",
                "counter",
                "Run streams dropped for slow consumers",
                &self.backpressure,
            ),
            (
                "smithers_gateway_cron_triggers_total",
                "counter",
                "Cron ticks that started a run",
                &self.cron_fired,
            ),
            (
                "smithers_gateway_webhooks_accepted_total",
                "counter",
                "Webhook deliveries accepted",
                &self.webhooks_accepted,
            ),
            (
                "smithers_gateway_webhooks_rejected_total",
                "counter",
                "Webhook deliveries refused",
                &self.webhooks_rejected,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The shared state of a running gateway.
pub struct Gateway {
    /// The engine (and through it the store).
    pub engine: Engine,
    /// The configuration.
    pub config: GatewayConfig,
    /// Credential checks; replaced when `[auth]` is reloaded (SIGHUP).
    auth: std::sync::RwLock<Arc<Authenticator>>,
    /// Event fan-out and `stateVersion`.
    pub events: EventBridge,
    /// Metrics.
    pub metrics: GatewayMetrics,
    /// Cancelled at shutdown: closes sockets, streams and background tasks.
    pub shutdown: CancellationToken,
    workflows: BTreeMap<String, Registered>,
    by_path: HashMap<String, String>,
    root_dir: PathBuf,
    started_at_ms: i64,
    connections: std::sync::Mutex<Connections>,
    trust_any_host: bool,
}

/// Authenticated WebSockets: in all, and per credential.
#[derive(Debug, Default)]
struct Connections {
    total: usize,
    per_credential: HashMap<String, usize>,
}

/// An authenticated WebSocket's place; give it back with
/// [`Gateway::connection_closed`].
#[derive(Debug)]
pub struct ConnectionSlot {
    credential: Option<String>,
}

impl Gateway {
    /// Loads (and so validates and precompiles) every registered workflow.
    pub async fn open(engine: Engine, config: GatewayConfig) -> Result<Self, GatewayError> {
        let trust_any_host = std::env::var("SMITHERS_GATEWAY_TRUST_ANY_HOST")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        let mut workflows = BTreeMap::new();
        let mut by_path = HashMap::new();
        for (key, workflow) in &config.workflows {
            let (path, loaded) =
                engine
                    .load_workflow(&workflow.path)
                    .await
                    .map_err(|e| GatewayError::Workflow {
                        key: key.clone(),
                        message: e.to_string(),
                    })?;
            let path = path.display().to_string();
            by_path.entry(path.clone()).or_insert_with(|| key.clone());
            workflows.insert(
                key.clone(),
                Registered {
                    key: key.clone(),
                    config: workflow.clone(),
                    path,
                    workflow_name: loaded.workflow.info.name.clone(),
                },
            );
        }
        Ok(Self {
            auth: std::sync::RwLock::new(Arc::new(Authenticator::new(
                config.auth.clone(),
                config.listen.insecure,
                trust_any_host,
            ))),
            trust_any_host,
            root_dir: engine.root_dir().to_path_buf(),
            engine,
            config,
            events: EventBridge::default(),
            metrics: GatewayMetrics::default(),
            shutdown: CancellationToken::new(),
            workflows,
            by_path,
            started_at_ms: now_ms(),
            connections: std::sync::Mutex::default(),
        })
    }

    /// The current credential checks.
    pub fn auth(&self) -> Arc<Authenticator> {
        self.auth.read().expect("auth lock").clone()
    }

    /// Replaces the `[auth]` section with a reloaded (already validated)
    /// one: new requests and `connect` frames use it; sockets already
    /// connected keep their identity. A reload never drops authentication:
    /// a file without `[auth]` while auth is on is refused and the current
    /// section stays (turning auth off takes a restart).
    pub fn reload_auth(&self, auth: Option<config::AuthConfig>) -> Result<(), ReloadRefused> {
        if auth.is_none() && self.auth().is_configured() {
            return Err(ReloadRefused::AuthRemoved);
        }
        let next = Authenticator::new(auth, self.config.listen.insecure, self.trust_any_host);
        tracing::info!(mode = next.mode(), "reloaded [auth]");
        *self.auth.write().expect("auth lock") = Arc::new(next);
        Ok(())
    }

    /// A registered workflow by key.
    pub fn registered(&self, key: &str) -> Option<&Registered> {
        self.workflows.get(key)
    }

    /// Every registered workflow, by key.
    pub fn workflows(&self) -> impl Iterator<Item = &Registered> {
        self.workflows.values()
    }

    /// The key a run's resolved workflow path was registered under.
    pub fn key_of_path(&self, path: &str) -> Option<&str> {
        self.by_path.get(path).map(String::as_str)
    }

    /// Workflow summaries (`listWorkflows`, `GET /workflows`), by key.
    pub fn workflow_summaries(&self, include_system: bool) -> Vec<Value> {
        self.workflows()
            .filter(|w| include_system || !w.config.system)
            .map(|w| {
                json!({
                    "key": w.key,
                    "readableName": w.config.name.clone().unwrap_or_else(|| w.workflow_name.clone()),
                    "description": w.config.description,
                    "hasUi": false,
                    "uiPath": null,
                    "system": w.config.system,
                    "workflowName": w.workflow_name,
                    "schedule": w.config.schedule,
                    "webhook": w.config.webhook.is_some(),
                })
            })
            .collect()
    }

    /// Who answers: lets a client check it reached the gateway it meant.
    pub fn identity(&self) -> Value {
        json!({
            "workspaceRoot": self.root_dir,
            "backend": "smithers-host",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "startedAtMs": self.started_at_ms,
        })
    }

    /// `GET /health` and the `health` RPC.
    pub fn health(&self, http: bool) -> Value {
        let mut body = json!({
            "protocol": ws::PROTOCOL,
            "features": FEATURES,
            "stateVersion": self.events.state_version(),
            "identity": self.identity(),
            "workflowsLoaded": self.workflows.len(),
            "workflowsTotal": self.workflows.len(),
            "http": self.engine.runtime().http_summary(),
            "recovering": self.engine.recovering(),
        });
        if http {
            body["ok"] = json!(true);
        } else {
            body["uptimeMs"] = json!(now_ms() - self.started_at_ms);
        }
        body
    }

    /// The `hello` snapshot: live runs and pending approvals (each only
    /// when `identity` may list them), `stateVersion`.
    pub async fn snapshot(&self, identity: &Identity) -> Result<Value, RpcError> {
        let runs = match identity.may_call("listRuns") {
            true => methods::list_runs(self, &json!({ "filter": { "limit": 1000 } })).await?,
            false => json!([]),
        };
        let live: Vec<Value> = runs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                matches!(
                    r["status"].as_str(),
                    Some("running" | "waiting-approval" | "waiting-event")
                )
            })
            .cloned()
            .collect();
        Ok(json!({
            "runs": live,
            "approvals": match identity.may_call("listApprovals") {
                true => methods::pending_approvals(self).await?,
                false => Vec::new(),
            },
            "stateVersion": self.events.state_version(),
        }))
    }

    /// A run's `getRun` view (the `snapshot` of `run.gap_resync`).
    pub async fn run_snapshot(&self, run_id: &RunId) -> Result<Value, RpcError> {
        methods::get_run(self, &json!({ "runId": run_id })).await
    }

    /// One run's row; `NOT_FOUND` when unknown.
    pub async fn run(&self, run_id: &RunId) -> Result<RunRow, RpcError> {
        let id = run_id.clone();
        self.engine
            .store()
            .read(move |r| r.run(&id))
            .await?
            .ok_or_else(|| RpcError::run_not_found(run_id.as_str()))
    }

    /// Starts a run of a registered workflow with `ctx.auth = auth`; answers
    /// `{runId, workflow, system}`.
    pub async fn start_run(
        &self,
        key: &str,
        input: Value,
        auth: Value,
        run_id: Option<String>,
        max_concurrency: Option<u32>,
    ) -> Result<Value, RpcError> {
        let workflow = self
            .registered(key)
            .ok_or_else(|| RpcError::new(RpcCode::NotFound, format!("Unknown workflow: {key}")))?;
        let started = self
            .engine
            .start(StartRequest {
                workflow_path: workflow.config.path.clone(),
                input: Some(input),
                run_id,
                max_concurrency,
                auth: Some(auth),
            })
            .await;
        match started {
            Ok(run_id) => {
                Ok(json!({ "runId": run_id, "workflow": key, "system": workflow.config.system }))
            }
            Err(EngineError::RunAlreadyExists(id)) => Err(RpcError::new(
                RpcCode::Conflict,
                format!("Run {id} already exists"),
            )
            .with_details(json!({ "runId": id, "workflow": key }))),
            Err(e) => Err(e.into()),
        }
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, Connections> {
        // Counters only, updated before anything can panic: usable if poisoned.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an authenticated connection slot for `identity`, or
    /// `CONNECTION_LIMIT` when the gateway (`max_connections`) or the
    /// identity's credential (`max_connections_per_token`; its token id,
    /// else its user id) is at its limit.
    pub fn connection_opened(&self, identity: &Identity) -> Result<ConnectionSlot, RpcError> {
        let limits = &self.config.limits;
        let credential = identity
            .token_id
            .clone()
            .or_else(|| identity.user_id.as_ref().map(|u| format!("user:{u}")));
        let mut connections = self.connections();
        if connections.total >= limits.max_connections {
            return Err(RpcError::new(
                RpcCode::ConnectionLimit,
                "Gateway connection limit reached",
            ));
        }
        if let Some(credential) = &credential {
            let open = connections
                .per_credential
                .entry(credential.clone())
                .or_default();
            if *open >= limits.max_connections_per_token {
                return Err(RpcError::new(
                    RpcCode::ConnectionLimit,
                    format!(
                        "Connection limit reached for this token ({} WebSockets)",
                        limits.max_connections_per_token
                    ),
                ));
            }
            *open += 1;
        }
        connections.total += 1;
        Ok(ConnectionSlot { credential })
    }

    /// Releases an authenticated connection slot.
    pub fn connection_closed(&self, slot: ConnectionSlot) {
        let mut connections = self.connections();
        connections.total = connections.total.saturating_sub(1);
        if let Some(credential) = slot.credential
            && let Some(open) = connections.per_credential.get_mut(&credential)
        {
            *open = open.saturating_sub(1);
            if *open == 0 {
                connections.per_credential.remove(&credential);
            }
        }
    }
}

/// A 500 for a cause that must not reach the client.
pub(crate) fn internal_error(cause: &dyn std::fmt::Display) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    crate::http::error::ApiError::internal(cause).into_response()
}
