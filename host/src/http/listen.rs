//! The accept loop both HTTP surfaces share (server and serve mode, and the
//! gateway): TCP or Unix-socket listeners, HTTP/1 and HTTP/2 (h2c prior
//! knowledge) with WebSocket upgrades, every connection admitted through
//! the listener's [`Registry`] (connection limit, idle timeout), TLS when
//! the operator gave a certificate, and a graceful, bounded drain at
//! shutdown. It knows nothing of routes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_http::add_extension::AddExtension;

use super::connections::{ConnectionLimits, Counted, Registry, Socket, supervise};
use super::tls::TlsSocket;

/// Longest the drain at shutdown waits for open connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where connections come from.
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A TCP socket speaking TLS.
    Tls(TcpListener, TlsAcceptor),
    /// A Unix socket, removed when the loop ends.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// A TCP listener, with TLS when `tls` is given.
    pub fn tcp(listener: TcpListener, tls: Option<TlsAcceptor>) -> Self {
        match tls {
            Some(acceptor) => Self::Tls(listener, acceptor),
            None => Self::Tcp(listener),
        }
    }
}

/// Who is on the other end of a connection, put into every request's
/// extensions: the gateway's trusted-proxy mode trusts identity headers by
/// this address, never by a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix-socket peer (no address).
    Unix,
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

/// Accepts connections until `shutdown`, then cancels `stop` (which ends
/// event streams and background work) and drains the connections (bounded).
pub async fn accept_until(
    listener: Listener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    stop: &CancellationToken,
) {
    let registry = Registry::new(limits);
    let limits = registry.limits();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/1 enforces a deadline on each request head itself; the registry's
    // idle timeout is what covers the rest (protocol sniffing, h2).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    // Pings find dead peers under long-lived h2 streams (SSE).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        let context = Context {
            builder: &builder,
            graceful: &graceful,
            router: &router,
            registry: &registry,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                match &listener {
                    Listener::Tls(_, acceptor) => {
                        let stream = TlsSocket::new(acceptor, stream);
                        context.serve(stream, Peer::Tcp(peer)).await;
                    }
                    _ => context.serve(stream, Peer::Tcp(peer)).await,
                }
            }
            Ok(Accepted::Unix(stream)) => context.serve(stream, Peer::Unix).await,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    drop(listener);
    stop.cancel();
    tracing::info!("shutting down: draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) | Listener::Tls(l, _) => {
            l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer))
        }
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// What serving one accepted connection needs.
struct Context<'a> {
    builder: &'a auto::Builder<TokioExecutor>,
    graceful: &'a GracefulShutdown,
    router: &'a Router,
    registry: &'a Arc<Registry>,
}

impl Context<'_> {
    /// Admits `stream` (or closes it when every connection is busy) and
    /// serves it on its own task.
    async fn serve<S>(&self, stream: S, peer: Peer)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some((slot, lease)) = self.registry.admit().await else {
            return;
        };
        let address = match peer {
            Peer::Tcp(address) => Some(address),
            Peer::Unix => None,
        };
        let service = Counted::new(
            TowerToHyperService::new(AddExtension::new(self.router.clone(), peer)),
            slot.clone(),
            address,
        );
        let idle_timeout = self.registry.limits().idle_timeout;
        let io = TokioIo::new(Socket::new(stream, lease));
        let connection = self.builder.serve_connection_with_upgrades(io, service);
        let connection = self.graceful.watch(connection.into_owned());
        tokio::spawn(supervise(slot, idle_timeout, connection, address));
    }
}
