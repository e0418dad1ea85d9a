//! The gateway's HTTP surface and accept loop: `/health`, `/metrics`,
//! `/workflows`, the RPC routes, webhooks and the WebSocket upgrade on `/`,
//! served on TCP or a Unix socket until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use super::auth::Identity;
use super::config::{GatewayConfig, bind_host};
use super::rpc::{self, Caller, RpcCode, RpcError, response_error, response_ok};
use super::{Gateway, bounds, cron, events, webhook, ws};
use crate::app::App;
use crate::http::auth::is_loopback_host;
use crate::http::connections::ConnectionLimits;
use crate::http::error::json_response;
use crate::http::listen::{Listener, Peer, accept_until};
use crate::http::metrics::CONTENT_TYPE;
use crate::http::ops;

/// Unauthenticated sockets allowed beyond `max_connections`.
const PRE_AUTH_SLACK: usize = 64;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A registered workflow cannot be loaded.
    #[error("workflow {key}: {message}")]
    Workflow {
        /// Its key.
        key: String,
        /// Why.
        message: String,
    },
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] crate::http::tls::TlsError),
    /// The schedules cannot be stored.
    #[error("cannot store the cron schedules: {0}")]
    Store(#[from] crate::store::StoreError),
}

type Shared = Arc<Gateway>;

/// The route table with its layers.
pub fn router(gateway: Shared) -> Router {
    let metrics = gateway.metrics.http.clone();
    Router::new()
        .route("/", get(upgrade))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/workflows", get(workflows))
        .route("/v1/rpc/{method}", post(rpc_method))
        .route("/rpc", post(rpc_envelope))
        .route("/webhooks/{key}", post(webhook_delivery))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::not_found)
        .with_state(gateway)
        .layer(CatchPanicLayer::custom(ops::panic_response))
        .layer(middleware::from_fn_with_state(metrics, observe))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-smithers-api-version"),
            HeaderValue::from_static(rpc::API_VERSION),
        ))
}

async fn observe(
    State(metrics): State<Arc<crate::http::metrics::Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    metrics.record_http(&method, &route, response.status().as_u16(), ms);
    response
}

/// The connection's peer, as the accept loop recorded it (`None` for a
/// router served some other way: never a trusted proxy then).
type PeerOf = Option<Extension<Peer>>;

fn peer(extension: PeerOf) -> Option<Peer> {
    extension.map(|Extension(peer)| peer)
}

/// Host/Origin gate, credentials and the method's scope.
fn authorize(
    gateway: &Gateway,
    headers: &HeaderMap,
    peer: Option<Peer>,
    method: &str,
) -> Result<Identity, RpcError> {
    let auth = gateway.auth();
    auth.check_request(headers)?;
    let identity = auth.authenticate(headers, peer, None)?;
    if !identity.may_call(method) {
        return Err(RpcError::missing_scope(method));
    }
    Ok(identity)
}

/// `{error: {code, message}}` for the non-RPC routes.
fn plain_error(error: &RpcError) -> Response {
    json_response(
        error.status,
        &json!({ "error": { "code": error.code, "message": error.message } }),
    )
}

/// `GET /health`: no auth, no Host gate (probes).
async fn health(State(gateway): State<Shared>) -> Response {
    json_response(StatusCode::OK, &gateway.health(true))
}

/// `GET /metrics`: Prometheus text (needs `run:read` when auth is on).
async fn metrics_text(State(gateway): State<Shared>, from: PeerOf, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&gateway, &headers, peer(from), "health") {
        return plain_error(&e);
    }
    let mut response = gateway.metrics.render(&gateway.engine).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// `GET /workflows`: `{workflows: [...]}`.
async fn workflows(State(gateway): State<Shared>, from: PeerOf, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&gateway, &headers, peer(from), "listWorkflows") {
        return plain_error(&e);
    }
    json_response(
        StatusCode::OK,
        &json!({ "workflows": gateway.workflow_summaries(false) }),
    )
}

/// `GET /`: the WebSocket. Host/Origin are checked before the upgrade;
/// credentials arrive in the `connect` frame (or the upgrade's headers).
async fn upgrade(
    State(gateway): State<Shared>,
    from: PeerOf,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return ops::not_found().await.into_response();
    };
    if let Err(e) = gateway.auth().check_request(&headers) {
        return plain_error(&e);
    }
    let open = gateway.metrics.ws_active_count() as usize;
    if open >= gateway.config.limits.max_connections + PRE_AUTH_SLACK {
        let error = RpcError::new(RpcCode::ConnectionLimit, "Gateway connection limit reached");
        return plain_error(&error);
    }
    let max = gateway.config.limits.max_payload_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| ws::serve(gateway, socket, headers, peer(from)))
}

/// Reads a body up to the limit.
async fn read_body(gateway: &Gateway, headers: &HeaderMap, body: Body) -> Result<Bytes, RpcError> {
    let max = gateway.config.limits.max_body_bytes;
    let too_large = || {
        RpcError::new(
            RpcCode::PayloadTooLarge,
            format!("Gateway request payload exceeds {max} bytes."),
        )
        .with_details(json!({ "maxBytes": max }))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let read = axum::body::to_bytes(body, max);
    match tokio::time::timeout(crate::http::extract::BODY_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(RpcError::invalid("Timed out reading the request body")),
    }
}

fn frame_response(status: StatusCode, frame: &Value) -> Response {
    json_response(status, frame)
}

/// `POST /v1/rpc/<method>` (params as the body) and `POST /rpc` (`{id,
/// method, params}`): the answer is always a `res` frame, with the status
/// of its error code. The checks run in Smithers' order: Host/Origin,
/// credentials, body size, JSON and its bounds, method name, scope.
async fn rpc_call(
    gateway: Shared,
    headers: HeaderMap,
    peer: Option<Peer>,
    body: Body,
    forced: Option<String>,
) -> Response {
    // Echoed in the answer: only a short printable one is taken.
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| bounds::check_frame_id(v).is_ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let fail =
        |id: &str, error: RpcError| frame_response(error.status, &response_error(id, &error));
    let auth = gateway.auth();
    if let Err(e) = auth.check_request(&headers) {
        return fail(&request_id, e);
    }
    let identity = match auth.authenticate(&headers, peer, None) {
        Ok(identity) => identity,
        Err(e) => return fail(&request_id, e),
    };
    let bytes = match read_body(&gateway, &headers, body).await {
        Ok(bytes) => bytes,
        Err(e) => return fail(&request_id, e),
    };
    let body = match bytes.is_empty() {
        true => Ok(json!({})),
        false => bounds::parse_frame(&bytes),
    };
    let body = match body {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => {
            return fail(
                &request_id,
                RpcError::invalid("RPC body must be a JSON object"),
            );
        }
        Err(e) => return fail(&request_id, e),
    };
    let id = match body.get("id").and_then(Value::as_str) {
        Some(id) => match bounds::check_frame_id(id) {
            Ok(()) => id.to_string(),
            Err(e) => return fail(&request_id, e),
        },
        None => request_id,
    };
    let (method, params) = match forced {
        Some(method) if body.get("method").is_none() => (method, body.clone()),
        Some(method) => (method, body.get("params").cloned().unwrap_or(Value::Null)),
        None => match bounds::method_name(body.get("method")) {
            Ok(method) => (
                method.to_string(),
                body.get("params").cloned().unwrap_or(Value::Null),
            ),
            Err(e) => return fail(&id, e),
        },
    };
    if let Err(e) = bounds::check_method(&method) {
        return fail(&id, e);
    }
    gateway.metrics.rpc_called();
    if !identity.may_call(&method) {
        return fail(&id, RpcError::missing_scope(&method));
    }
    let caller = Caller {
        identity,
        websocket: false,
    };
    match rpc::dispatch(&gateway, &caller, &method, &params).await {
        Ok(payload) => frame_response(StatusCode::OK, &response_ok(&id, payload)),
        Err(error) => fail(&id, error),
    }
}

async fn rpc_method(
    State(gateway): State<Shared>,
    Path(method): Path<String>,
    from: PeerOf,
    headers: HeaderMap,
    body: Body,
) -> Response {
    rpc_call(gateway, headers, peer(from), body, Some(method)).await
}

async fn rpc_envelope(
    State(gateway): State<Shared>,
    from: PeerOf,
    headers: HeaderMap,
    body: Body,
) -> Response {
    rpc_call(gateway, headers, peer(from), body, None).await
}

/// `POST /webhooks/:key`: the signature is the credential (no token, no
/// Host gate: providers post from anywhere).
async fn webhook_delivery(
    State(gateway): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(&gateway, &headers, body).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return json_response(
                e.status,
                &json!({ "ok": false, "error": { "code": e.code, "message": e.message } }),
            );
        }
    };
    webhook::handle(&gateway, &key, &headers, bytes).await
}

async fn bind(config: &GatewayConfig) -> Result<(Listener, String), GatewayError> {
    if let Some(path) = &config.listen.socket {
        let addr = format!("unix:{}", path.display());
        let bind_error = |source| GatewayError::Bind {
            addr: addr.clone(),
            source,
        };
        // A socket file left by a previous process would make bind fail.
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt as _;
            m.file_type().is_socket()
        }) {
            std::fs::remove_file(path).map_err(bind_error)?;
        }
        let listener = tokio::net::UnixListener::bind(path).map_err(bind_error)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(bind_error)?;
        }
        return Ok((Listener::Unix(listener, path.clone()), addr));
    }
    let tls = config
        .listen
        .tls()
        .map(|files| files.acceptor())
        .transpose()?;
    let host = bind_host(&config.listen.host);
    if tls.is_none() && config.auth.is_some() && !is_loopback_host(host) {
        tracing::warn!(
            host = %config.listen.host,
            "listening beyond loopback without TLS: tokens cross the network in clear text; \
             set listen.tls_cert and listen.tls_key, or put a TLS proxy in front"
        );
    }
    let addr = format!("{}:{}", config.listen.host, config.listen.port);
    let listener = tokio::net::TcpListener::bind((host, config.listen.port))
        .await
        .map_err(|source| GatewayError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| GatewayError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    Ok((Listener::tcp(listener, tls), format!("{scheme}://{local}")))
}

/// Serves the gateway until `shutdown` resolves: loads the workflows, binds,
/// syncs the schedules, resumes interrupted runs, prints `smithers-host
/// gateway listening on <url>` on stdout and accepts connections. With
/// `config_path`, SIGHUP re-reads that file and applies its `[auth]` section
/// (new tokens, revocations) without a restart. At shutdown it closes
/// sockets and streams, drains requests and closes the app; runs stay
/// durable.
pub async fn serve(
    app: App,
    config: GatewayConfig,
    config_path: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let gateway = match Gateway::open(app.engine.clone(), config).await {
        Ok(gateway) => Arc::new(gateway),
        Err(e) => {
            app.close().await;
            return Err(e);
        }
    };
    let (listener, url) = match bind(&gateway.config).await {
        Ok(bound) => bound,
        Err(e) => {
            app.close().await;
            return Err(e);
        }
    };
    cron::sync_config(&gateway).await?;
    match gateway
        .engine
        .store()
        .read(|r| r.pending_approvals(u32::MAX))
        .await
    {
        Ok(pending) => gateway
            .metrics
            .http
            .set_pending_approvals(pending.len() as i64),
        Err(e) => tracing::warn!(error = %e, "cannot count pending approvals"),
    }
    tokio::spawn(
        gateway
            .metrics
            .http
            .clone()
            .follow_events(gateway.engine.clone(), gateway.shutdown.clone()),
    );
    tokio::spawn(events::bridge(gateway.clone()));
    let poll = Duration::from_millis(gateway.config.heartbeat_ms.clamp(100, 1000));
    tokio::spawn(cron::scheduler(gateway.clone(), poll));
    // Off the listener's path: `/health` answers while runs are resumed.
    gateway.engine.recover_in_background();
    if let Some(path) = config_path {
        reload_auth_on_sighup(gateway.clone(), path);
    }
    announce(&url, &gateway);
    let router = router(gateway.clone());
    let limits = &gateway.config.limits;
    let connections = ConnectionLimits {
        idle_timeout: Duration::from_millis(limits.idle_timeout_ms),
        max_connections: limits.max_open_connections,
    };
    accept_until(listener, router, connections, shutdown, &gateway.shutdown).await;
    app.close().await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Re-reads the config on SIGHUP and applies its `[auth]`; a file that no
/// longer parses or validates, or that lacks `[auth]` while auth is on, is
/// logged and ignored (the current auth stays). The handler is
/// installed before this returns, so a SIGHUP after the "listening" line can
/// never take the default action (terminate).
fn reload_auth_on_sighup(gateway: Shared, path: std::path::PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; [auth] reloads need a restart");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = gateway.shutdown.cancelled() => return,
                _ = hangups.recv() => {}
            }
            if crate::app::resolves_inside(&path, &gateway.root_dir) {
                tracing::error!(
                    path = %path.display(),
                    "SIGHUP: the config file now resolves inside the root dir, which workflows \
                     can write; not reloaded, the current [auth] stays"
                );
                continue;
            }
            let reloaded = GatewayConfig::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|config| gateway.reload_auth(config.auth).map_err(|e| e.to_string()));
            if let Err(error) = reloaded {
                tracing::error!(%error, "SIGHUP: config not reloaded; the current [auth] stays");
            }
        }
    });
}

fn announce(url: &str, gateway: &Gateway) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "smithers-host gateway listening on {url}");
    let _ = stdout.flush();
    tracing::info!(%url, auth = gateway.auth().mode(), workflows = gateway.config.workflows.len(), "gateway listening");
}
