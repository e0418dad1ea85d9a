//! HTTP requests from a task, sent by the host (`wasi:http`) under the operator's policy.
//!
//! Nothing leaves unless the operator allowed the destination (`--http-allow`): a refused
//! request fails with [`ToolError`] code `HTTP_DENIED` naming the host, and the host records
//! an `HttpDenied` event for the run. The host also bounds the time of each request and the
//! size of its response (`HTTP_TIMEOUT`, `HTTP_RESPONSE_TOO_LARGE`).
//!
//! ```no_run
//! use smithers_sdk::tools::http;
//!
//! # fn task() -> Result<(), smithers_sdk::TaskError> {
//! let response = http::get("https://api.example.com/status")?;
//! if response.status == 200 {
//!     let status: smithers_sdk::serde_json::Value = response.json()?;
//! }
//! let created = http::request(
//!     http::Request::post("https://api.example.com/items")
//!         .header("content-type", "application/json")
//!         .body(r#"{"name":"x"}"#),
//! )?;
//! # Ok(()) }
//! ```
//!
//! Redirects (301, 302, 303, 307, 308) are followed up to [`Request::max_redirects`] times
//! (5 by default); each hop is a new request that the host checks against its policy like
//! the first, so a redirect to a host the operator did not allow fails with `HTTP_DENIED`.
//! `Authorization` and `Cookie` headers are dropped when a redirect leaves the original
//! origin. The `Host` header is always the URL's authority, whatever a request sets.
//!
//! Credentials come from the operator's secrets: put the placeholder [`secret`](super::secret)
//! returns where the secret belongs (`.header("authorization", format!("Bearer {key}"))`);
//! the host puts the real value in its place only in requests to where the secret is bound,
//! and the task never sees the value, not even in a response that echoes it.

use serde::de::DeserializeOwned;

use super::ToolError;

/// Redirects followed unless [`Request::max_redirects`] says otherwise.
const DEFAULT_MAX_REDIRECTS: u32 = 5;

/// An HTTP request to send with [`request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request {
    /// Method (`GET`, `POST`, ...).
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Headers, in order (a name may repeat).
    pub headers: Vec<(String, String)>,
    /// Body (empty: none).
    pub body: Vec<u8>,
    /// Most redirects followed (0: a redirect is returned as the response).
    pub max_redirects: u32,
}

impl Request {
    /// A request with this method and URL, no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new("GET", url)
    }

    /// A `POST` request (set its body with [`Request::body`]).
    pub fn post(url: impl Into<String>) -> Self {
        Request::new("POST", url)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON, with `content-type: application/json`.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Result<Self, ToolError> {
        self.body = serde_json::to_vec(value).map_err(|e| ToolError {
            code: "INVALID_INPUT".into(),
            message: format!("the request body does not serialize to JSON: {e}"),
        })?;
        Ok(self.header("content-type", "application/json"))
    }

    /// Sets how many redirects are followed (0: none).
    #[must_use]
    pub fn max_redirects(mut self, max: u32) -> Self {
        self.max_redirects = max;
        self
    }
}

/// The response to a request (after redirects), with its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, in order, names lowercase (values decoded as lossy UTF-8).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// The URL that answered (differs from the request's after a redirect).
    pub url: String,
}

impl Response {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded as JSON (`INVALID_OUTPUT` when it is not that shape).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ToolError> {
        serde_json::from_slice(&self.body).map_err(|e| ToolError {
            code: "INVALID_OUTPUT".into(),
            message: format!(
                "the response body from {} is not the expected JSON: {e}",
                self.url
            ),
        })
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, ToolError> {
    request(Request::get(url))
}

/// `POST url` with this body.
pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Result<Response, ToolError> {
    request(Request::post(url).body(body))
}

/// Sends a request through the host, following redirects as [`Request::max_redirects`]
/// allows. Any status is a response; only a request that got none is an error.
pub fn request(request: Request) -> Result<Response, ToolError> {
    let mut current = request;
    let origin = Url::parse(&current.url)?.origin();
    let mut hops = 0;
    loop {
        let url = Url::parse(&current.url)?;
        let response = host::send(&current, &url)?;
        let location = match response.status {
            301 | 302 | 303 | 307 | 308 => response.header("location").map(str::to_owned),
            _ => None,
        };
        let Some(location) = location else {
            return Ok(response);
        };
        if hops >= current.max_redirects {
            if current.max_redirects == 0 {
                return Ok(response);
            }
            return Err(ToolError {
                code: "HTTP_TOO_MANY_REDIRECTS".into(),
                message: format!(
                    "more than {} redirects from {}",
                    current.max_redirects, origin
                ),
            });
        }
        hops += 1;
        let next = url.join(&location)?;
        if next.origin() != origin {
            // Credentials meant for one origin never follow a redirect to another.
            current.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("authorization") && !name.eq_ignore_ascii_case("cookie")
            });
        }
        // 303 always, and 301/302 after a POST, become a GET without a body, as browsers do.
        if response.status == 303
            || (matches!(response.status, 301 | 302) && current.method.eq_ignore_ascii_case("POST"))
        {
            current.method = "GET".into();
            current.body.clear();
            current.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("content-type")
                    && !name.eq_ignore_ascii_case("content-length")
            });
        }
        current.url = next.to_string();
    }
}

/// An absolute http(s) URL, split the way `wasi:http` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    authority: String,
    path_with_query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url, ToolError> {
        let invalid = |why: &str| ToolError {
            code: "INVALID_INPUT".into(),
            message: format!("{why}: {}", url.chars().take(200).collect::<String>()),
        };
        let (https, rest) = if let Some(rest) = strip_prefix_ci(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(url, "http://") {
            (false, rest)
        } else {
            return Err(invalid("not an absolute http:// or https:// URL"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() || authority.contains(char::is_whitespace) {
            return Err(invalid("the URL has no host"));
        }
        let path_with_query = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Url {
            https,
            authority: authority.to_owned(),
            path_with_query,
        })
    }

    /// `scheme://authority`, lowercase.
    fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority.to_ascii_lowercase())
    }

    /// The URL a `Location` header points to, relative to this one.
    fn join(&self, location: &str) -> Result<Url, ToolError> {
        let scheme = if self.https { "https:" } else { "http:" };
        if let Some(rest) = location.strip_prefix("//") {
            return Url::parse(&format!("{scheme}//{rest}"));
        }
        if strip_prefix_ci(location, "http://").is_some()
            || strip_prefix_ci(location, "https://").is_some()
        {
            return Url::parse(location);
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let base = self.path_with_query.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Url::parse(&format!("{}{}", self.origin(), path))
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin(), self.path_with_query)
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Requests through `wasi:http/outgoing-handler`.
#[cfg(target_arch = "wasm32")]
mod host {
    use super::{Request, Response, ToolError, Url};
    use crate::__private::http_bindings::wasi::http::outgoing_handler;
    use crate::__private::http_bindings::wasi::http::types::{
        ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use crate::__private::http_bindings::wasi::io::streams::StreamError;

    /// Bytes handed to the host per write (the most `blocking-write-and-flush` takes).
    const WRITE_CHUNK: usize = 4096;

    pub(super) fn send(request: &Request, url: &Url) -> Result<Response, ToolError> {
        let what = format!("{} {url}", request.method.to_ascii_uppercase());
        let headers = Fields::new();
        for (name, value) in &request.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| tool_error("INVALID_INPUT", format!("header {name:?}: {e:?}")))?;
        }
        let outgoing = OutgoingRequest::new(headers);
        let refused = |part: &str| tool_error("INVALID_INPUT", format!("{what}: invalid {part}"));
        outgoing
            .set_method(&method(&request.method))
            .map_err(|()| refused("method"))?;
        let scheme = if url.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        outgoing
            .set_scheme(Some(&scheme))
            .map_err(|()| refused("scheme"))?;
        outgoing
            .set_authority(Some(&url.authority))
            .map_err(|()| refused("authority"))?;
        outgoing
            .set_path_with_query(Some(&url.path_with_query))
            .map_err(|()| refused("path"))?;
        let body = outgoing.body().map_err(|()| refused("body"))?;
        let future = outgoing_handler::handle(outgoing, None).map_err(|e| error(&what, url, &e))?;
        // The host starts sending once it has the request, so the body is written after
        // `handle` (its buffer is small); a refused request closes the body early, and the
        // response's error is then the one worth reporting.
        let written = write_body(&body, &request.body);
        let finished = written
            .and_then(|()| OutgoingBody::finish(body, None).map_err(|e| error(&what, url, &e)));
        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(e))) => return Err(error(&what, url, &e)),
            _ => return Err(tool_error("HTTP_ERROR", format!("{what}: no response"))),
        };
        finished?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| tool_error("HTTP_ERROR", format!("{what}: the body was taken")))?;
        let body = read_body(&incoming, &what, url)?;
        drop(IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body,
            url: url.to_string(),
        })
    }

    fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), ToolError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let stream = body
            .write()
            .map_err(|()| tool_error("HTTP_ERROR", "the request body is not writable".into()))?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream.blocking_write_and_flush(chunk).map_err(|e| {
                tool_error("HTTP_ERROR", format!("writing the request body: {e:?}"))
            })?;
        }
        Ok(())
    }

    fn read_body(body: &IncomingBody, what: &str, url: &Url) -> Result<Vec<u8>, ToolError> {
        let stream = body
            .stream()
            .map_err(|()| tool_error("HTTP_ERROR", format!("{what}: the body is not readable")))?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => return Ok(bytes),
                Err(StreamError::LastOperationFailed(e)) => {
                    use crate::__private::http_bindings::wasi::http::types::http_error_code;
                    return Err(match http_error_code(&e) {
                        Some(code) => error(what, url, &code),
                        None => tool_error(
                            "HTTP_ERROR",
                            format!("{what}: reading the body: {}", e.to_debug_string()),
                        ),
                    });
                }
            }
        }
    }

    fn method(name: &str) -> Method {
        match name.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        }
    }

    fn tool_error(code: &str, message: String) -> ToolError {
        ToolError {
            code: code.to_owned(),
            message,
        }
    }

    /// The host's answer as a tool error whose code says what happened.
    fn error(what: &str, url: &Url, code: &ErrorCode) -> ToolError {
        let host = &url.authority;
        match code {
            ErrorCode::HttpRequestDenied => tool_error(
                "HTTP_DENIED",
                format!("{what}: the host's policy does not allow requests to {host}"),
            ),
            ErrorCode::DestinationIpProhibited => tool_error(
                "HTTP_DENIED",
                format!(
                    "{what}: {host} resolves to a loopback, private or other non-public address \
                     that the host's policy does not name"
                ),
            ),
            ErrorCode::HttpResponseBodySize(size) => tool_error(
                "HTTP_RESPONSE_TOO_LARGE",
                match size {
                    Some(size) => format!(
                        "{what}: the response body ({size} bytes) is larger than the host allows"
                    ),
                    None => format!("{what}: the response body is larger than the host allows"),
                },
            ),
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout
            | ErrorCode::DnsTimeout => tool_error(
                "HTTP_TIMEOUT",
                format!("{what}: no complete response within the host's deadline"),
            ),
            other => tool_error("HTTP_ERROR", format!("{what}: {other:?}")),
        }
    }
}

/// Natively there is no host to send through.
#[cfg(not(target_arch = "wasm32"))]
mod host {
    use super::{Request, Response, ToolError, Url};

    pub(super) fn send(_request: &Request, _url: &Url) -> Result<Response, ToolError> {
        Err(ToolError {
            code: "TOOL_UNAVAILABLE".to_owned(),
            message: "HTTP requests exist only inside the smithers host".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        let u = Url::parse("HTTPS://Api.example.com:8443?q=1#frag").unwrap();
        assert_eq!(
            (u.https, u.authority.as_str(), u.path_with_query.as_str()),
            (true, "Api.example.com:8443", "/?q=1")
        );
        assert_eq!(u.origin(), "https://api.example.com:8443");
        assert_eq!(Url::parse("ftp://x").unwrap_err().code, "INVALID_INPUT");
        assert_eq!(
            Url::parse("http:///path").unwrap_err().code,
            "INVALID_INPUT"
        );
    }

    #[test]
    fn locations_resolve_against_the_request_url() {
        let base = Url::parse("http://a.test:8080/dir/page?x").unwrap();
        assert_eq!(
            base.join("/top").unwrap().to_string(),
            "http://a.test:8080/top"
        );
        assert_eq!(
            base.join("next").unwrap().to_string(),
            "http://a.test:8080/dir/next"
        );
        assert_eq!(
            base.join("//b.test/x").unwrap().to_string(),
            "http://b.test/x"
        );
        assert_eq!(
            base.join("https://c.test").unwrap().to_string(),
            "https://c.test/"
        );
    }

    #[test]
    fn natively_requests_are_unavailable() {
        assert_eq!(
            get("https://example.com").unwrap_err().code,
            "TOOL_UNAVAILABLE"
        );
    }
}
