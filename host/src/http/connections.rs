//! The open connections of one listener, and the two rules that keep a
//! client from holding them for free: the **idle timeout** (a connection with
//! no request in flight for that long is closed — before its first request
//! head is complete, between keep-alive requests, and on HTTP/2 when no
//! stream is open; so silent sockets, slowloris headers and a partial h2c
//! preface or frame are all cut by the same clock, whatever the protocol
//! sniffing or the h2 handshake would wait for) and the **connection limit**
//! (at the limit a new connection evicts the connection idle the longest,
//! so a fresh client — a `/health` probe — always gets in while idle
//! sockets are what fills the table; when every connection is busy, the
//! new one is closed at once).
//!
//! A connection is *busy* while a request is in flight: from the moment its
//! head is parsed until the last of its response body has been handed to
//! the connection (or dropped). So an open SSE stream is busy for as long as
//! it lasts (its limits are [`super::subscribers`]'), while a client that
//! stops reading an ordinary response is cut once the idle timeout passes
//! after the body was written. A WebSocket (an upgraded connection) stays
//! counted until its socket closes but is never cut here — its protocol
//! has its own deadlines. This module counts requests and tags each with
//! the client's address; it never looks at what they ask for.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Descriptors kept for everything but connections (database, compiled
/// code, sandbox pipes, the watcher) when the connection limit is fitted
/// to the process's descriptor limit.
const FD_RESERVE: usize = 256;
/// Longest interval between two warnings about refused connections.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Longest the accept loop waits for an evicted connection to close.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// How many connections a listener keeps, and for how long idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Most open connections (HTTP, streams and WebSockets together).
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// The address a request came from (`None` on a Unix socket, or when the
/// router is served without this module, as in unit tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(None)))
    }
}

/// What the watchdog and the eviction look at.
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: usize,
    /// When `in_flight` last became 0 (or the connection was accepted).
    idle_since: Instant,
    /// Answered 101: the socket now belongs to another protocol.
    upgraded: bool,
}

impl Activity {
    fn idle(&self) -> bool {
        self.in_flight == 0 && !self.upgraded
    }
}

/// One open connection.
pub struct Slot {
    activity: watch::Sender<Activity>,
    /// Cancelled to close the connection (eviction).
    evict: CancellationToken,
}

impl Slot {
    fn begin(&self) {
        self.activity.send_modify(|a| a.in_flight += 1);
    }

    fn end(&self) {
        self.activity.send_modify(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            if a.in_flight == 0 {
                a.idle_since = Instant::now();
            }
        });
    }

    /// Resolves when the connection has been idle for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        let mut activity = self.activity.subscribe();
        loop {
            let now = *activity.borrow_and_update();
            if now.idle() {
                tokio::select! {
                    _ = tokio::time::sleep_until(now.idle_since + timeout) => return,
                    changed = activity.changed() => if changed.is_err() { return },
                }
            } else if activity.changed().await.is_err() {
                return;
            }
        }
    }
}

#[derive(Default)]
struct Table {
    open: BTreeMap<u64, Arc<Slot>>,
    refused: u64,
    warned_at: Option<Instant>,
}

impl Table {
    /// The idle connection to close for a newcomer: the one idle longest
    /// among those not already being closed.
    fn idlest(&self) -> Option<&Arc<Slot>> {
        self.open
            .values()
            .filter(|slot| !slot.evict.is_cancelled())
            .filter_map(|slot| {
                let activity = *slot.activity.borrow();
                activity.idle().then_some((activity.idle_since, slot))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, slot)| slot)
    }

    fn closing(&self) -> bool {
        self.open.values().any(|slot| slot.evict.is_cancelled())
    }
}

/// The connections of one listener.
pub struct Registry {
    limits: ConnectionLimits,
    table: Mutex<Table>,
    next_id: AtomicU64,
    /// Signalled whenever a connection's place is freed.
    released: Notify,
}

/// Releases a connection's place in the registry when dropped. It travels
/// with the socket (see [`Socket`]) and is dropped after it, so a place is
/// free only once its descriptor is closed, and an upgraded connection
/// keeps its place until the WebSocket closes.
pub struct Lease {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.registry.table().open.remove(&self.id);
        self.registry.released.notify_one();
    }
}

impl Registry {
    /// A registry for `limits`, the limit fitted to the descriptors the
    /// process may open.
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        let max_connections = fit_to_fd_limit(limits.max_connections);
        Arc::new(Self {
            limits: ConnectionLimits {
                max_connections,
                ..limits
            },
            table: Mutex::default(),
            next_id: AtomicU64::new(0),
            released: Notify::new(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table inconsistent
        // (every change is one map operation), so a poisoned lock is usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection: a slot and its lease. When the table is
    /// full it closes the longest-idle connection and waits (bounded) until
    /// that one's descriptor is closed, so the open connections never
    /// exceed the limit; meanwhile newcomers wait in the listen backlog.
    /// `None` when every connection is busy (the caller closes the new one).
    pub async fn admit(self: &Arc<Self>) -> Option<(Arc<Slot>, Lease)> {
        let deadline = Instant::now() + EVICTION_WAIT;
        loop {
            {
                let mut table = self.table();
                if table.open.len() < self.limits.max_connections {
                    return Some(self.insert(&mut table));
                }
                match table.idlest() {
                    Some(victim) => victim.evict.cancel(),
                    None if table.closing() => {}
                    None => {
                        self.refused(&mut table);
                        return None;
                    }
                }
            }
            if tokio::time::timeout_at(deadline, self.released.notified())
                .await
                .is_err()
            {
                self.refused(&mut self.table());
                return None;
            }
        }
    }

    fn insert(self: &Arc<Self>, table: &mut Table) -> (Arc<Slot>, Lease) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            activity: watch::Sender::new(Activity {
                in_flight: 0,
                idle_since: Instant::now(),
                upgraded: false,
            }),
            evict: CancellationToken::new(),
        });
        table.open.insert(id, slot.clone());
        let lease = Lease {
            registry: self.clone(),
            id,
        };
        (slot, lease)
    }

    fn refused(&self, table: &mut Table) {
        table.refused += 1;
        if table.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                limit = self.limits.max_connections,
                refused = table.refused,
                "connection limit reached and every connection is busy: closing new connections"
            );
            table.warned_at = Some(Instant::now());
        }
    }
}

/// Serves `connection` until it ends, is evicted, or stays idle for the
/// idle timeout (then it is dropped, which closes the socket unless it was
/// upgraded — an upgrade ends `connection` first).
pub async fn supervise<F, E>(
    slot: Arc<Slot>,
    idle_timeout: Duration,
    connection: F,
    peer: Option<SocketAddr>,
) where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(?peer, error = %e, "connection ended with an error");
            }
        }
        _ = slot.idle_for(idle_timeout) => {
            tracing::debug!(?peer, "closing a connection idle for {idle_timeout:?}");
        }
        _ = slot.evict.cancelled() => {
            tracing::debug!(?peer, "closing the longest-idle connection to admit a new one");
        }
    }
}

/// Raises the soft descriptor limit to the hard one, then returns `wanted`,
/// or less when the descriptors cannot hold that many connections besides
/// [`FD_RESERVE`] (running out of descriptors would stop `accept`, and with
/// it `/health`, instead of evicting idle connections).
fn fit_to_fd_limit(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => tracing::debug!(error = %e, "cannot raise RLIMIT_NOFILE"),
        }
    }
    let Some(soft) = limit.current else {
        return wanted;
    };
    let room = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_RESERVE)
        .max(1);
    if wanted > room {
        tracing::warn!(
            wanted,
            allowed = room,
            rlimit_nofile = soft,
            "the connection limit exceeds what the descriptor limit can hold; lowered. \
             Raise the hard RLIMIT_NOFILE, or lower the connection limit (and keep the \
             stream limits below it)"
        );
        return room;
    }
    wanted
}

/// The router's service, counting each request as in flight on its
/// connection until the response body is done, and tagging it with the
/// client's address.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    slot: Arc<Slot>,
    client: ClientAddr,
}

impl<S> Counted<S> {
    /// Wraps `inner` for the connection of `slot` from `peer`.
    pub fn new(inner: S, slot: Arc<Slot>, peer: Option<SocketAddr>) -> Self {
        Self {
            inner,
            slot,
            client: ClientAddr(peer.map(|p| p.ip())),
        }
    }
}

/// One request in flight; ends when dropped.
struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl<S, B> hyper::service::Service<Request<B>> for Counted<S>
where
    S: hyper::service::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn call(&self, mut request: Request<B>) -> Self::Future {
        self.slot.begin();
        let in_flight = InFlight(self.slot.clone());
        request.extensions_mut().insert(self.client);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                in_flight.0.activity.send_modify(|a| a.upgraded = true);
            }
            Ok(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is done.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client socket holding its connection's [`Lease`].
pub struct Socket<S> {
    io: S,
    _lease: Lease,
}

impl<S> Socket<S> {
    /// `io`, counted until dropped.
    pub fn new(io: S, lease: Lease) -> Self {
        Self { io, _lease: lease }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Socket<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Arc<Registry> {
        Arc::new(Registry {
            limits: ConnectionLimits {
                idle_timeout: Duration::from_secs(30),
                max_connections: max,
            },
            table: Mutex::default(),
            next_id: AtomicU64::new(0),
            released: Notify::new(),
        })
    }

    /// Drops `lease` when its connection is evicted, as `supervise` does.
    fn serve(slot: &Arc<Slot>, lease: Lease) {
        let evict = slot.evict.clone();
        tokio::spawn(async move {
            evict.cancelled().await;
            drop(lease);
        });
    }

    #[tokio::test]
    async fn at_the_limit_the_longest_idle_connection_makes_room() {
        let registry = registry(2);
        let (first, a) = registry.admit().await.unwrap();
        serve(&first, a);
        let (second, b) = registry.admit().await.unwrap();
        serve(&second, b);
        second.begin();
        let (_third, _c) = registry.admit().await.expect("an idle one is evicted");
        assert!(first.evict.is_cancelled());
        assert!(!second.evict.is_cancelled());
        assert_eq!(registry.table().open.len(), 2);
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_new_ones_are_refused() {
        let registry = registry(1);
        let (busy, lease) = registry.admit().await.unwrap();
        serve(&busy, lease);
        busy.begin();
        assert!(registry.admit().await.is_none());
        busy.end();
        assert!(registry.admit().await.is_some());
    }

    #[tokio::test]
    async fn upgraded_connections_are_never_evicted_and_leases_free_their_place() {
        let registry = registry(1);
        let (ws, lease) = registry.admit().await.unwrap();
        ws.activity.send_modify(|a| a.upgraded = true);
        assert!(registry.admit().await.is_none());
        drop(lease);
        assert!(registry.admit().await.is_some());
    }

    #[tokio::test]
    async fn the_watchdog_fires_only_after_an_idle_stretch() {
        let registry = registry(4);
        let (slot, _lease) = registry.admit().await.unwrap();
        slot.begin();
        let idle = slot.idle_for(Duration::from_millis(100));
        tokio::pin!(idle);
        // Busy for five idle timeouts: no timeout.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut idle)
                .await
                .is_err()
        );
        slot.end();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), &mut idle)
                .await
                .is_ok()
        );
    }
}
