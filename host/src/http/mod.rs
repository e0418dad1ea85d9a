//! Server mode: the Smithers-compatible HTTP API over the engine.
//!
//! This module is the only place that knows status codes, headers and the
//! wire shapes of requests; it never writes SQL and holds no run state of its
//! own (runs, events and approvals live in the store, so a restart loses
//! nothing). Map: [`router`] assembles the routes and layers; `runs`,
//! `approvals`, `events` and `outputs` hold the handlers; `extract` the body and query
//! parsing; `auth` the token and Host/Origin checks; `error` the envelope;
//! `metrics` the Prometheus text; `ops` `/health`, `/metrics` and fallbacks;
//! `listen` the accept loop, `connections` the connection limit and idle
//! timeout, `subscribers` the SSE stream limits;
//! `serve` the single-run routes of serve mode (`smithers-host up --serve`),
//! built from the same handlers. [`serve()`] binds, recovers interrupted runs
//! and serves until shutdown.

pub mod approvals;
pub mod auth;
pub mod connections;
pub mod error;
pub mod events;
pub mod extract;
pub mod listen;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod outputs;
pub mod runs;
pub mod serve;
pub mod subscribers;
pub mod tls;
pub mod workflows;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use self::auth::AccessPolicy;
use self::connections::ConnectionLimits;
use self::error::ApiError;
use self::extract::BodyLimits;
use self::metrics::Metrics;
use self::subscribers::{StreamLimits, Subscribers};
use crate::app::App;
use crate::engine::Engine;
use crate::sandbox::SandboxStatus;

/// Longest prefix of a request path written to the debug log.
const LOGGED_PATH_CHARS: usize = 200;

/// How the server listens and whom it serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Interface to bind (`127.0.0.1` by default).
    pub host: String,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Token every request but `/health` must present.
    pub auth_token: Option<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Allow a non-loopback bind without a token, and drop the Host/Origin gate.
    pub insecure: bool,
    /// `SMITHERS_SERVER_TRUST_ANY_HOST`: drop the Host/Origin gate only.
    pub trust_any_host: bool,
    /// Connection limit and idle timeout.
    pub connections: ConnectionLimits,
    /// SSE stream limits.
    pub streams: StreamLimits,
    /// Most bytes of outputs one answer of the node and outputs routes
    /// carries (a single larger output still goes alone in its page).
    pub max_output_page_bytes: u64,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<tls::TlsFiles>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 7331,
            auth_token: None,
            max_body_bytes: 1024 * 1024,
            insecure: false,
            trust_any_host: false,
            connections: ConnectionLimits::default(),
            streams: StreamLimits::default(),
            max_output_page_bytes: crate::engine::outputs::Page::DEFAULT_MAX_BYTES,
            tls: None,
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Non-loopback bind without a token and without `--insecure`.
    #[error(
        "refusing to listen on {0} without an auth token: anyone who can reach it could run workflows. \
         Set --auth-token (or SMITHERS_API_KEY), bind 127.0.0.1, or pass --insecure"
    )]
    InsecureBind(String),
    /// A limit is zero, or the streams could take every connection.
    #[error("{0}")]
    InvalidLimit(String),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl ServerConfig {
    /// Refuses an unauthenticated bind beyond loopback unless `insecure`,
    /// limits that would lock every client out, and unusable TLS files.
    pub fn validate(&self) -> Result<(), ServeError> {
        if let Some(files) = &self.tls {
            files.acceptor()?;
        }
        let token = self.auth_token.as_deref().is_some_and(|t| !t.is_empty());
        if !auth::is_loopback_host(bind_host(&self.host)) && !token && !self.insecure {
            return Err(ServeError::InsecureBind(self.host.clone()));
        }
        let (connections, streams) = (&self.connections, &self.streams);
        if connections.idle_timeout.is_zero()
            || connections.max_connections == 0
            || streams.max_total == 0
            || streams.max_per_client == 0
            || self.max_output_page_bytes == 0
        {
            return Err(ServeError::InvalidLimit(
                "--idle-timeout-secs, --max-connections, --max-sse-subscribers, \
                 --max-sse-per-client and --max-output-page-bytes must be positive"
                    .into(),
            ));
        }
        // Open streams keep their connections busy; if they could take every
        // one, nothing (not even /health) would get in.
        if streams.max_total >= connections.max_connections {
            return Err(ServeError::InvalidLimit(format!(
                "--max-sse-subscribers ({}) must be below --max-connections ({}), \
                 or open streams could take every connection",
                streams.max_total, connections.max_connections
            )));
        }
        Ok(())
    }
}

fn bind_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// The engine (and through it the store).
    pub engine: Engine,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Body limits.
    pub limits: BodyLimits,
    /// What the bash sandbox enforces, once probed.
    pub sandbox: Arc<RwLock<Option<SandboxStatus>>>,
    /// Cancelled at shutdown: ends SSE streams so the drain completes.
    pub shutdown: CancellationToken,
    /// Open SSE streams and their limits.
    pub streams: Arc<Subscribers>,
    /// Most bytes of outputs per answer of the node and outputs routes.
    pub output_page_bytes: u64,
}

impl ApiState {
    /// State for an engine served with `config`'s limits, with fresh metrics.
    pub fn new(engine: Engine, config: &ServerConfig) -> Self {
        Self {
            engine,
            metrics: Arc::new(Metrics::default()),
            limits: BodyLimits {
                max_bytes: config.max_body_bytes,
            },
            sandbox: Arc::new(RwLock::new(None)),
            shutdown: CancellationToken::new(),
            streams: Subscribers::new(config.streams),
            output_page_bytes: config.max_output_page_bytes,
        }
    }
}

impl FromRef<ApiState> for BodyLimits {
    fn from_ref(state: &ApiState) -> Self {
        state.limits
    }
}

/// A 200 JSON response, fields in declaration order.
pub fn ok(body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

/// The server-mode route table (contract §1.3) with its layers.
pub fn router(state: ApiState, policy: AccessPolicy) -> Router {
    let routes = Router::new()
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/runs", post(runs::start).get(runs::list))
        .route("/v1/runs/{run_id}", get(runs::status))
        .route("/v1/runs/{run_id}/resume", post(runs::resume))
        .route("/v1/runs/{run_id}/cancel", post(runs::cancel))
        .route("/v1/runs/{run_id}/events", get(events::stream))
        .route("/v1/runs/{run_id}/frames", get(runs::frames))
        .route("/v1/runs/{run_id}/outputs", get(outputs::outputs))
        .route("/v1/runs/{run_id}/nodes/{node_id}", get(outputs::node))
        .route(
            "/v1/runs/{run_id}/nodes/{node_id}/approve",
            post(approvals::approve),
        )
        .route(
            "/v1/runs/{run_id}/nodes/{node_id}/deny",
            post(approvals::deny),
        )
        .route("/v1/runs/{run_id}/signals/{name}", post(approvals::signal))
        .route("/signal/{run_id}/{name}", post(approvals::signal))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approval/list", get(approvals::list))
        .route("/approval/list", get(approvals::list))
        .route("/approvals", get(approvals::list))
        .route("/v1/workflows", get(workflows::list))
        .route("/v1/workflows/{path}", get(workflows::one))
        .route("/v1/workflows/preflight", post(workflows::preflight));
    finish(routes, state, policy)
}

/// Adds what every surface shares to a route table: the 404 fallback, panic
/// catching, auth and Host/Origin gate, metrics, and the security headers.
pub fn finish(routes: Router<ApiState>, state: ApiState, policy: AccessPolicy) -> Router {
    let metrics = state.metrics.clone();
    routes
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::not_found)
        .with_state(state)
        .layer(CatchPanicLayer::custom(ops::panic_response))
        .layer(middleware::from_fn_with_state(
            Arc::new(policy),
            auth::guard,
        ))
        .layer(middleware::from_fn_with_state(metrics, observe))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

/// Records the request in the HTTP metrics and logs one line at debug.
async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    // The path is the client's: log a bounded prefix of it.
    let path: String = request
        .uri()
        .path()
        .chars()
        .take(LOGGED_PATH_CHARS)
        .collect();
    let response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    metrics.record_http(&method, &route, status, ms);
    let method = metrics::method_label(&method);
    tracing::debug!(method, %path, %route, status, ms, "request");
    response
}

/// Serves `app` until `shutdown` resolves: binds, resumes runs a previous
/// process left running, prints `smithers-host listening on http://ADDR` on
/// stdout, then accepts connections. At shutdown it stops accepting, ends
/// event streams, drains in-flight requests and closes the app; runs stay
/// durable and the next start resumes them.
pub async fn serve(
    app: App,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let bound = bind(&config).await?;
    if let Some(url) = bound.url() {
        // Lets a local command refused by the state dir's lock name the
        // `smithers-host client` command that reaches this server instead.
        if let Err(e) = app
            .state_dir
            .record_server(&url, config.auth_token.is_some())
        {
            tracing::warn!(error = %e, "cannot record the server's address in the state dir");
        }
    }
    let state = ApiState::new(app.engine.clone(), &config);
    start_background(&state).await;
    // Off the listener's path: `/health` answers while runs are resumed.
    state.engine.recover_in_background();
    let router = router(state.clone(), config.access_policy());
    run(app, bound, router, &state, config.connections, shutdown).await;
    Ok(())
}

/// A bound listener and, with `--tls-cert`, its TLS acceptor.
pub struct Bound {
    /// The TCP listener.
    pub listener: TcpListener,
    /// Present when the server speaks HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Bound {
    /// `http://ADDR` or `https://ADDR`, as a local client reaches it (an
    /// unspecified address becomes loopback).
    pub fn url(&self) -> Option<String> {
        let mut addr = self.listener.local_addr().ok()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Some(format!("{scheme}://{addr}"))
    }
}

/// Binds the configured address after refusing an unsafe configuration and
/// loading the TLS certificate, if any (before anything listens).
pub async fn bind(config: &ServerConfig) -> Result<Bound, ServeError> {
    config.validate()?;
    let tls = config
        .tls
        .as_ref()
        .map(tls::TlsFiles::acceptor)
        .transpose()?;
    let token = config.auth_token.is_some();
    if tls.is_none() && token && !auth::is_loopback_host(bind_host(&config.host)) {
        tracing::warn!(
            host = %config.host,
            "listening beyond loopback without TLS: the auth token crosses the network in \
             clear text; pass --tls-cert and --tls-key, or put a TLS proxy in front"
        );
    }
    let listener = TcpListener::bind((bind_host(&config.host), config.port))
        .await
        .map_err(|source| ServeError::Bind {
            addr: format!("{}:{}", config.host, config.port),
            source,
        })?;
    Ok(Bound { listener, tls })
}

/// Announces the address, serves `router` until `shutdown`, then closes the app.
pub async fn run(
    app: App,
    bound: Bound,
    router: Router,
    state: &ApiState,
    connections: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    if let (Some(url), Ok(addr)) = (bound.url(), bound.listener.local_addr()) {
        announce(&url, addr, bound.tls.is_some());
    }
    listen::accept_until(
        listen::Listener::tcp(bound.listener, bound.tls),
        router,
        connections,
        shutdown,
        &state.shutdown,
    )
    .await;
    app.close().await;
    tracing::info!("server stopped");
}

impl ServerConfig {
    /// Who may call the API, from the token and gate settings.
    pub fn access_policy(&self) -> AccessPolicy {
        AccessPolicy::new(self.auth_token.clone(), self.insecure, self.trust_any_host)
    }
}

/// The URL a client on this machine uses to reach `addr` (loopback when
/// the server listens on every interface).
fn announce(url: &str, addr: SocketAddr, tls: bool) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let scheme = if tls { "https" } else { "http" };
    let _ = writeln!(stdout, "smithers-host listening on {scheme}://{addr}");
    let _ = stdout.flush();
    tracing::info!(%addr, %url, tls, "listening");
}

/// Starts the metrics follower and the sandbox probe.
pub async fn start_background(state: &ApiState) {
    let engine = state.engine.clone();
    match engine.store().read(|r| r.pending_approvals(u32::MAX)).await {
        Ok(pending) => state.metrics.set_pending_approvals(pending.len() as i64),
        Err(e) => tracing::warn!(error = %e, "cannot count pending approvals"),
    }
    tokio::spawn(
        state
            .metrics
            .clone()
            .follow_events(engine.clone(), state.shutdown.clone()),
    );
    let slot = state.sandbox.clone();
    tokio::spawn(async move {
        let status = crate::sandbox::probe(engine.sandbox_policy()).await;
        if status.available {
            tracing::info!("{status}");
        } else {
            tracing::warn!("{status}");
        }
        *slot.write().expect("sandbox status lock") = Some(status);
    });
}
