//! Who may call the API: the bearer token check and, when no token is set,
//! the Host/Origin gate against DNS rebinding and cross-site requests.
//!
//! `GET /health` is exempt from both (a deliberate improvement over
//! Smithers): probes must work without secrets and behind any proxy name.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorCode};

/// Header carrying the token when `Authorization` is not used.
pub const KEY_HEADER: &str = "x-smithers-key";

/// The access policy of a router.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Token every request (but `/health`) must present.
    pub token: Option<String>,
    /// Refuse non-loopback `Host`/`Origin` (only meaningful without a token).
    pub gate_hosts: bool,
}

impl AccessPolicy {
    /// The policy for a token (if any), `--insecure` and the
    /// `SMITHERS_SERVER_TRUST_ANY_HOST` opt-out.
    pub fn new(token: Option<String>, insecure: bool, trust_any_host: bool) -> Self {
        let token = token.filter(|t| !t.is_empty());
        let gate_hosts = token.is_none() && !insecure && !trust_any_host;
        Self { token, gate_hosts }
    }

    /// Checks a request's headers.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(expected) = &self.token {
            return check_token(headers, expected);
        }
        if self.gate_hosts {
            check_host_origin(headers)?;
        }
        Ok(())
    }
}

/// Middleware applying an [`AccessPolicy`] to every route but `/health`.
pub async fn guard(
    State(policy): State<Arc<AccessPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() != "/health"
        && let Err(e) = policy.check(request.headers())
    {
        return e.into_response();
    }
    next.run(request).await
}

fn check_token(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    // Authorization wins when present, even if x-smithers-key is right.
    let presented = headers
        .get(header::AUTHORIZATION)
        .or_else(|| headers.get(KEY_HEADER))
        .map(|v| v.as_bytes());
    let token = presented.map(|raw| match raw.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case(b"bearer ") => &raw[7..],
        _ => raw,
    });
    match token {
        Some(token) if bool::from(token.ct_eq(expected.as_bytes())) => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "Missing or invalid authorization token",
        )),
    }
}

fn check_host_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(host) = headers.get(header::HOST)
        && !host.to_str().is_ok_and(|h| is_loopback_host(strip_port(h)))
    {
        return Err(ApiError::new(ErrorCode::Forbidden, "Host is not allowed"));
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin
            .to_str()
            .ok()
            .and_then(origin_host)
            .is_some_and(is_loopback_host)
    {
        return Err(ApiError::new(ErrorCode::Forbidden, "Origin is not allowed"));
    }
    Ok(())
}

/// The host of an origin (`http://127.0.0.1:7331` → `127.0.0.1`); `None` for
/// `null` and anything unparseable.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = strip_port(authority);
    (!host.is_empty()).then_some(host)
}

/// `host:port` → `host`; `[v6]:port` → `v6`; bare IPv6 stays whole.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
    }
}

/// Loopback names as Smithers defines them: `localhost`, `*.localhost`,
/// `127.0.0.0/8`, `::1`, `::ffff:127.x.x.x`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return v4.is_loopback();
    }
    match host.parse::<Ipv6Addr>() {
        Ok(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn tokens_are_accepted_in_both_headers_with_any_bearer_case() {
        let policy = AccessPolicy::new(Some("sekret".into()), false, false);
        assert!(
            policy
                .check(&headers(&[("authorization", "Bearer sekret")]))
                .is_ok()
        );
        assert!(
            policy
                .check(&headers(&[("authorization", "bearer sekret")]))
                .is_ok()
        );
        assert!(
            policy
                .check(&headers(&[("authorization", "sekret")]))
                .is_ok()
        );
        assert!(
            policy
                .check(&headers(&[("x-smithers-key", "sekret")]))
                .is_ok()
        );
        assert!(policy.check(&headers(&[])).is_err());
        assert!(
            policy
                .check(&headers(&[("authorization", "Bearer nope")]))
                .is_err()
        );
        let both = headers(&[
            ("authorization", "Bearer wrong"),
            ("x-smithers-key", "sekret"),
        ]);
        assert!(policy.check(&both).is_err());
        // With a token, any Host is fine.
        assert!(
            policy
                .check(&headers(&[
                    ("host", "evil.com"),
                    ("x-smithers-key", "sekret")
                ]))
                .is_ok()
        );
    }

    #[test]
    fn without_a_token_only_loopback_hosts_and_origins_pass() {
        let policy = AccessPolicy::new(None, false, false);
        for ok in [
            "127.0.0.1:7331",
            "localhost",
            "foo.localhost",
            "127.5.5.5:99",
            "[::1]:80",
            "::1",
        ] {
            assert!(policy.check(&headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        let err = policy.check(&headers(&[("host", "evil.com")])).unwrap_err();
        assert_eq!(err.message, "Host is not allowed");
        for bad in [
            "null",
            "http://evil.com",
            "garbage",
            "http://127.0.0.1.evil.com",
        ] {
            let err = policy
                .check(&headers(&[("host", "localhost"), ("origin", bad)]))
                .unwrap_err();
            assert_eq!(err.message, "Origin is not allowed", "{bad}");
        }
        assert!(
            policy
                .check(&headers(&[("origin", "http://localhost:3000")]))
                .is_ok()
        );
        assert!(
            policy
                .check(&headers(&[("origin", "http://[::ffff:127.0.0.1]:3000")]))
                .is_ok()
        );
        assert!(
            AccessPolicy::new(None, true, false)
                .check(&headers(&[("host", "evil.com")]))
                .is_ok()
        );
        assert!(
            AccessPolicy::new(None, false, true)
                .check(&headers(&[("host", "evil.com")]))
                .is_ok()
        );
    }
}
