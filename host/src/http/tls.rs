//! TLS for the HTTP surfaces (`--tls-cert`/`--tls-key`): rustls with the
//! ring provider, HTTP/2 and HTTP/1.1 offered by ALPN.
//!
//! The handshake runs inside the connection's own task, on its first read
//! or write ([`TlsSocket`]), never in the accept loop: a client that opens
//! a connection and says nothing holds one connection slot until the idle
//! timeout closes it, and delays nobody else.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;

/// The certificate chain and private key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS could not be set up. Names the file, never quotes it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("TLS {what} {path}: {reason}")]
    File {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the pair (key does not match, unsupported key...).
    #[error("TLS certificate {cert} with key {key}: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
}

/// Largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

impl TlsFiles {
    /// The pair, when both files are named.
    pub fn pair(cert: Option<&PathBuf>, key: Option<&PathBuf>) -> Option<Self> {
        Some(Self {
            cert: cert?.clone(),
            key: key?.clone(),
        })
    }

    /// Reads both files and builds the acceptor.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let file_error = |what, path: &Path, reason: String| TlsError::File {
            what,
            path: path.to_path_buf(),
            reason,
        };
        let cert_pem =
            read_bounded(&self.cert).map_err(|e| file_error("certificate", &self.cert, e))?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error("certificate", &self.cert, format!("bad PEM: {e}")))?;
        if certs.is_empty() {
            return Err(file_error(
                "certificate",
                &self.cert,
                "holds no CERTIFICATE block".into(),
            ));
        }
        let key_pem = read_bounded(&self.key).map_err(|e| file_error("key", &self.key, e))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            file_error("key", &self.key, "holds no usable PRIVATE KEY block".into())
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Pair {
                cert: self.cert.clone(),
                key: self.key.clone(),
                reason: e.to_string(),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_PEM_BYTES {
        return Err("larger than 1 MiB".into());
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// A server-side TLS stream whose handshake completes on first use.
pub struct TlsSocket<S> {
    state: State<S>,
}

enum State<S> {
    Handshaking(Box<tokio_rustls::Accept<S>>),
    Ready(Box<tokio_rustls::server::TlsStream<S>>),
    Failed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsSocket<S> {
    /// Starts (lazily) the handshake of `stream`.
    pub fn new(acceptor: &TlsAcceptor, stream: S) -> Self {
        Self {
            state: State::Handshaking(Box::new(acceptor.accept(stream))),
        }
    }

    fn poll_stream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut tokio_rustls::server::TlsStream<S>>> {
        if let State::Handshaking(accept) = &mut self.state {
            match ready!(Pin::new(accept.as_mut()).poll(cx)) {
                Ok(stream) => self.state = State::Ready(Box::new(stream)),
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    self.state = State::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match &mut self.state {
            State::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsSocket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsSocket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            // Nothing was said over TLS yet: dropping the socket is the close.
            _ => Poll::Ready(Ok(())),
        }
    }
}
