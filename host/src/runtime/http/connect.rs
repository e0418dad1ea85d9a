//! Sending one outbound request the way the policy says: check the URL's
//! authority, resolve the name ourselves, keep only the addresses the
//! policy allows, connect to one of *those* socket addresses (so a name
//! that resolves differently on a second lookup — DNS rebinding — changes
//! nothing), speak HTTP/1.1 (over TLS for `https`), and read the whole
//! response body up to the cap before the guest sees any of it.
//!
//! The authority comes from the request's URL only: every `Host` header the
//! guest set is replaced by the URL's authority. This module never follows
//! a redirect (wasi:http does not either; the SDK's helper does, each hop a
//! new request checked here) and never emits events: it returns a
//! [`SendError::Denied`] that the caller reports.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use http::uri::{PathAndQuery, Scheme as UriScheme};
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, WasiBody};

use super::policy::{HttpPolicy, Scheme, address_allowed};
use super::secrets::Secrets;

/// Largest request body a guest may send (the host reads it whole).
pub(super) const MAX_REQUEST_BODY_BYTES: u64 = 10 * 1024 * 1024;

/// Where a request goes, as its URL says.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// Method, uppercase.
    pub method: String,
    /// Scheme.
    pub scheme: Scheme,
    /// Host as written in the URL, without IPv6 brackets.
    pub host: String,
    /// Port (explicit or the scheme's default).
    pub port: u16,
}

impl Target {
    /// Reads the target from the request's URL (never from its headers).
    pub fn of<B>(request: &Request<B>) -> Result<Self, Error> {
        let uri = request.uri();
        let scheme = match uri.scheme() {
            Some(s) if *s == UriScheme::HTTPS => Scheme::Https,
            Some(s) if *s == UriScheme::HTTP => Scheme::Http,
            _ => return Err(Error::HttpProtocolError),
        };
        let host = uri.host().filter(|h| !h.is_empty());
        let host = host.ok_or(Error::HttpRequestUriInvalid)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(Self {
            method: request.method().as_str().to_ascii_uppercase(),
            scheme,
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(scheme.default_port()),
        })
    }

    /// `host[:port]` as a `Host` header says it (the port only when it is
    /// not the scheme's default).
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Why the policy refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Denial {
    /// No pattern allows this method, scheme, host and port.
    NotAllowed,
    /// Allowed by name, but the name resolves only to non-public addresses
    /// that no pattern names (this one among them).
    NonPublicAddress(IpAddr),
}

/// A request that did not produce a response.
#[derive(Debug)]
pub(super) enum SendError {
    /// The policy refused it; nothing was sent.
    Denied(Denial),
    /// It failed on the way (DNS, connect, TLS, HTTP, size cap).
    Failed(Error),
}

impl From<Error> for SendError {
    fn from(e: Error) -> Self {
        SendError::Failed(e)
    }
}

/// Sends the request (`parts` and its whole `body`) to `target` if the
/// policy allows it, and returns the response with its whole body (at most
/// `policy.max_response_bytes`). Secrets bound to `target` replace their
/// placeholders in the request; no secret's value is left in the response.
/// The caller bounds the time.
pub(super) async fn send(
    policy: &HttpPolicy,
    secrets: &Secrets,
    target: &Target,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<(http::response::Parts, Bytes), SendError> {
    let pattern = policy
        .allows(&target.method, target.scheme, &target.host, target.port)
        .ok_or(SendError::Denied(Denial::NotAllowed))?;
    let resolved = resolve(target).await?;
    let vetted: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|addr| address_allowed(pattern, addr.ip()))
        .collect();
    if vetted.is_empty() {
        let first = resolved[0].ip();
        return Err(SendError::Denied(Denial::NonPublicAddress(first)));
    }
    let mut request = with_secrets(secrets, target, parts, body)?;
    let stream = connect(&vetted).await?;
    let stream: Box<dyn Stream> = match target.scheme {
        Scheme::Http => Box::new(stream),
        Scheme::Https => Box::new(tls(stream, &target.host).await?),
    };

    // The origin-form request line carries only the path; the authority
    // goes in one `Host` header, taken from the URL.
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = http::Uri::from(path);
    let host =
        HeaderValue::from_str(&target.authority()).map_err(|_| Error::HttpRequestUriInvalid)?;
    let headers = request.headers_mut();
    headers.remove(header::HOST);
    headers.insert(header::HOST, host);

    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(Error::from)?;
    // Drives the connection until the body is read; aborted with this
    // future (deadline, cancelled task) so no socket outlives the call.
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender.send_request(request).await.map_err(Error::from)?;
    let (mut parts, body) = response.into_parts();
    let mut body = read_capped(body, &parts.headers, policy.max_response_bytes).await?;
    drop(driver);
    redact(secrets, &mut parts.headers, &mut body);
    Ok((parts, body))
}

/// Reads the body a guest wrote for its request, whole: the host digests it
/// for the replay journal and may put a secret in it.
pub(super) async fn read_request_body(body: WasiBody) -> Result<Bytes, Error> {
    Ok(
        http_body_util::Limited::new(body, MAX_REQUEST_BODY_BYTES as usize)
            .collect()
            .await
            .map_err(|_| Error::HttpRequestBodySize(Some(MAX_REQUEST_BODY_BYTES)))?
            .to_bytes(),
    )
}

/// A body the guest reads: bytes the host already holds.
pub(super) fn whole_body(bytes: Bytes) -> WasiBody {
    Full::new(bytes)
        .map_err(|never: std::convert::Infallible| -> Error { match never {} })
        .boxed_unsync()
}

/// Puts the values of the secrets bound to `target` in place of their
/// placeholders: in header values, and in the body for secrets allowed
/// there.
fn with_secrets(
    secrets: &Secrets,
    target: &Target,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Error> {
    for value in parts.headers.values_mut() {
        if let Some(real) = secrets.substitute_headers(target, value.as_bytes()) {
            *value = HeaderValue::from_bytes(&real).map_err(|_| {
                Error::InternalError(Some("a secret's value is not a valid header value".into()))
            })?;
        }
    }
    let mut body = body;
    if secrets.body_bound_to(target)
        && let Some(real) = secrets.substitute_body(target, &body)
    {
        // The length changed; hyper sets it from the whole body.
        parts.headers.remove(header::CONTENT_LENGTH);
        body = Bytes::from(real);
    }
    Ok(Request::from_parts(parts, Full::new(body)))
}

/// Replaces every secret's value coming back by its placeholder.
fn redact(secrets: &Secrets, headers: &mut http::HeaderMap, body: &mut Bytes) {
    if secrets.is_empty() {
        return;
    }
    for value in headers.values_mut() {
        if let Some(redacted) = secrets.redact_bytes(value.as_bytes()) {
            // A placeholder is ASCII, so a valid value stays valid; if it
            // ever did not, the value is dropped rather than kept.
            *value = HeaderValue::from_bytes(&redacted)
                .unwrap_or_else(|_| HeaderValue::from_static("[redacted]"));
        }
    }
    if let Some(redacted) = secrets.redact_bytes(body) {
        *body = Bytes::from(redacted);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
}

/// Every address the URL's host stands for: the literal itself, or what the
/// system resolver answers.
async fn resolve(target: &Target) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| Error::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    Ok(addrs)
}

/// Connects to the first vetted address that answers.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(Error::ConnectionRefused, Error::Connect))
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// TLS with the public web roots (webpki-roots: the same set whatever the
/// host machine trusts), verifying the URL's host.
async fn tls(
    stream: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    use rustls::pki_types::ServerName;
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => {
            ServerName::try_from(host.to_string()).map_err(|_| Error::HttpRequestUriInvalid)?
        }
    };
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
        .map_err(Error::Tls)
}

/// Reads the whole body, refusing it as soon as it is known to exceed
/// `cap` (from `Content-Length`, or while reading).
async fn read_capped(
    mut body: hyper::body::Incoming,
    headers: &http::HeaderMap,
    cap: u64,
) -> Result<Bytes, Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > cap) {
        return Err(Error::HttpResponseBodySize(Some(length)));
    }
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Error::from)?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() as u64 + data.len() as u64 > cap {
                return Err(Error::HttpResponseBodySize(None));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.freeze())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The future type the wasi:http hook returns.
pub(super) type BoxFuture<T> = Box<dyn Future<Output = T> + Send>;

/// A boxed future that is already complete (the hook's I/O future: we
/// read the whole body before answering, so nothing is left to drive).
pub(super) fn done() -> BoxFuture<Result<(), Error>> {
    Box::new(std::future::ready(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> Request<()> {
        Request::builder().uri(uri).body(()).unwrap()
    }

    #[test]
    fn the_target_comes_from_the_url() {
        let t = Target::of(&request("http://Example.com:8080/x?y")).unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Http, "Example.com", 8080)
        );
        assert_eq!(t.authority(), "Example.com:8080");
        let t = Target::of(&request("https://[::1]/")).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 443));
        assert_eq!(t.authority(), "[::1]");
        let t = Target::of(&request("https://user@api.example.com/")).unwrap();
        assert_eq!(t.host, "api.example.com");
        assert!(Target::of(&request("/relative")).is_err());
    }
}
