//! Outbound HTTP for guests, through the host.
//!
//! A workflow gets `wasi:http/outgoing-handler` and `wasi:http/types` (from
//! `wasmtime-wasi-http`; no incoming handler, no sockets), so any guest
//! language's HTTP client works, and every request it makes reaches
//! [`Hooks::send_request`] here instead of the network. There the
//! operator's [`HttpPolicy`] decides (closed by default), the host resolves
//! and connects to a vetted address itself (`connect.rs`), bounds the time
//! and the response size, and reports each refusal as an `HttpDenied` event
//! of the task's run. Every response a task gets is journaled first, and a
//! re-executed attempt is answered from that journal (`replay.rs`).
//!
//! What this module must never do: take a policy from anywhere but the
//! operator, let a guest-set `Host` header choose the destination, or let a
//! `render` (which must be pure) reach the network.

mod connect;
pub mod policy;
mod replay;
mod secrets;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::HeaderName;
use tokio::sync::mpsc::UnboundedSender;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpCtx,
    WasiHttpHooks, WasiHttpView,
};

pub use policy::{HttpPolicy, Pattern, PatternError, PolicySummary};
pub use replay::{CallJournal, JournalFuture, RecordedCall};
pub use secrets::{SecretSpec, SecretSummary, Secrets};

use crate::model::EventBody;
use connect::{BoxFuture, Denial, SendError, Target};
use replay::{Answer, Replay};

/// Most `HttpDenied` events one attempt records; later refusals are still
/// refused and logged, but a guest retrying in a loop cannot flood its
/// run's event log.
const MAX_DENIAL_EVENTS: u32 = 100;

/// Links `wasi:http/outgoing-handler` and `wasi:http/types` (nothing else of
/// wasi:http: a workflow is not an HTTP server).
pub(super) fn add_to_linker<T: WasiHttpView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

/// The wasi:http state of one store.
pub(super) struct HttpState {
    pub(super) ctx: WasiHttpCtx,
    pub(super) hooks: Hooks,
}

impl HttpState {
    /// For a `describe`/`render` store: every request refused.
    pub(super) fn closed(policy: Arc<HttpPolicy>, secrets: Arc<Secrets>) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                policy,
                secrets,
                task: None,
            },
        }
    }

    /// For a task store: the policy applies, refusals are reported.
    pub(super) fn for_task(
        policy: Arc<HttpPolicy>,
        secrets: Arc<Secrets>,
        task: TaskAttribution,
    ) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                policy,
                secrets,
                task: Some(Arc::new(TaskSide {
                    replay: Replay::new(task.journal.clone()),
                    attribution: task,
                    denials: AtomicU32::new(0),
                    next_seq: AtomicU32::new(0),
                })),
            },
        }
    }
}

/// Which run, node and attempt a task's requests belong to.
pub(super) struct TaskAttribution {
    pub(super) events: UnboundedSender<EventBody>,
    pub(super) run_id: String,
    pub(super) node_id: String,
    pub(super) iteration: u32,
    pub(super) attempt: u32,
    /// Where its calls are journaled for replay.
    pub(super) journal: Arc<dyn CallJournal>,
}

struct TaskSide {
    attribution: TaskAttribution,
    denials: AtomicU32,
    /// Seq of the attempt's next call, in the order the guest makes them.
    next_seq: AtomicU32,
    replay: Replay,
}

impl TaskSide {
    fn report(&self, target: &Target, denial: &Denial) {
        let a = &self.attribution;
        let (reason, address) = match denial {
            Denial::NotAllowed => ("not-allowed", None),
            Denial::NonPublicAddress(ip) => ("non-public-address", Some(ip.to_string())),
        };
        tracing::warn!(
            run = %a.run_id,
            node = %a.node_id,
            method = %target.method,
            host = %target.host,
            port = target.port,
            reason,
            "outbound HTTP request denied"
        );
        if self.denials.fetch_add(1, Ordering::Relaxed) >= MAX_DENIAL_EVENTS {
            return;
        }
        let _ = a.events.send(EventBody::HttpDenied {
            node_id: a.node_id.clone(),
            iteration: a.iteration,
            attempt: a.attempt,
            method: target.method.clone(),
            scheme: target.scheme.as_str().into(),
            host: target.host.clone(),
            port: target.port,
            reason: reason.into(),
            address,
        });
    }
}

/// The hooks wasmtime-wasi-http calls; the policy lives here.
pub(super) struct Hooks {
    policy: Arc<HttpPolicy>,
    secrets: Arc<Secrets>,
    task: Option<Arc<TaskSide>>,
}

impl WasiHttpHooks for Hooks {
    /// wasmtime's defaults, except `Host`: guests (and the HTTP clients they
    /// use) may set it, and it is then replaced by the URL's authority
    /// before the request leaves (`connect.rs`), which a test checks.
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(|name: &HeaderName| {
            name != http::header::HOST && DEFAULT_FORBIDDEN_HEADERS.contains(name)
        })
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: BoxFuture<Result<(), Error>>,
    ) -> BoxFuture<Result<(http::Response<WasiBody>, BoxFuture<Result<(), Error>>), Error>> {
        let policy = self.policy.clone();
        let secrets = self.secrets.clone();
        let task = self.task.clone();
        // Numbered here, as the guest makes the call (the future may run
        // later, alongside others): the seq is what replay matches on.
        let seq = task
            .as_ref()
            .map_or(0, |t| t.next_seq.fetch_add(1, Ordering::Relaxed));
        Box::new(async move {
            let target = Target::of(&request)?;
            let Some(task) = task else {
                tracing::debug!(host = %target.host, "HTTP request from describe/render refused");
                return Err(Error::HttpRequestDenied);
            };
            // Checked before replay too: an operator who has closed a door
            // since the journal was written closes it for replayed calls.
            if policy
                .allows(&target.method, target.scheme, &target.host, target.port)
                .is_none()
            {
                task.report(&target, &Denial::NotAllowed);
                return Err(Error::HttpRequestDenied);
            }
            let (parts, body) = request.into_parts();
            let body = connect::read_request_body(body).await?;
            let digest = replay::digest(parts.method.as_str(), &parts.uri, &parts.headers, &body);
            match task
                .replay
                .answer(seq, &digest)
                .await
                .map_err(journal_failed)?
            {
                Answer::Replay(call) => return Ok((recorded(&target, call)?, connect::done())),
                Answer::Live => {}
            }
            // One deadline for the whole call, from resolving the name to the
            // last byte of the body (the guest's own request options can
            // only be shorter: it may stop waiting whenever it likes).
            let send = connect::send(&policy, &secrets, &target, parts, body);
            let (parts, body) = match tokio::time::timeout(policy.timeout, send).await {
                Ok(Ok(response)) => response,
                Ok(Err(SendError::Failed(e))) => return Err(e),
                Ok(Err(SendError::Denied(denial))) => {
                    task.report(&target, &denial);
                    return Err(match denial {
                        Denial::NotAllowed => Error::HttpRequestDenied,
                        Denial::NonPublicAddress(_) => Error::DestinationIpProhibited,
                    });
                }
                Err(_elapsed) => return Err(Error::HttpResponseTimeout),
            };
            task.replay
                .record(seq, digest, parts.status, &parts.headers, &body)
                .await
                .map_err(journal_failed)?;
            let response = http::Response::from_parts(parts, connect::whole_body(body));
            Ok((response, connect::done()))
        })
    }
}

/// A journaled response, as the guest gets it again.
fn recorded(target: &Target, call: RecordedCall) -> Result<http::Response<WasiBody>, Error> {
    tracing::debug!(host = %target.host, seq = call.seq, "HTTP call answered from the journal");
    let unreadable = |reason: String| Error::InternalError(Some(reason));
    let headers = replay::headers_from_json(&call.headers_json).map_err(unreadable)?;
    let status = http::StatusCode::from_u16(call.status)
        .map_err(|_| unreadable("a journaled response has a bad status".into()))?;
    let mut response = http::Response::new(connect::whole_body(call.body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The call fails rather than hand the guest a response that a crash
/// would make it ask for again.
fn journal_failed(reason: String) -> Error {
    tracing::warn!(%reason, "an outbound HTTP call could not be journaled");
    Error::InternalError(Some(format!(
        "the call could not be journaled for replay: {reason}"
    )))
}
