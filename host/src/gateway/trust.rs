//! Which requests the gateway believes before it looks at a credential:
//! identity headers only from configured proxy addresses, and browser
//! requests only from allowed origins.
//!
//! A trusted proxy is recognised by the peer address of the connection the
//! request arrived on (set by the accept loop), never by a header such as
//! `X-Forwarded-For` that the caller writes. A browser request (one with an
//! `Origin` header, which browsers always send on cross-site requests and on
//! WebSocket upgrades, and which page scripts cannot forge) is accepted only
//! from the gateway's own origin or an `allowed_origins` entry — so a page on
//! another site cannot ride a proxy's session cookie. This module never
//! grants anything by itself; `auth` asks it first.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue, header};
use ipnet::IpNet;

use crate::http::listen::Peer;

/// One `trusted_proxies` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProxyRule {
    /// A TCP peer in this range.
    Net(IpNet),
    /// Any peer of the gateway's Unix socket (mode 0600: its owner only).
    Unix,
}

/// The proxies whose identity headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ProxyRule>);

impl TrustedProxies {
    /// Parses `"10.0.0.0/8"`, `"127.0.0.1"`, `"::1"`, `"fd00::/8"` or
    /// `"unix"`; a `/0` range (everyone) is refused.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.trim();
            if entry.eq_ignore_ascii_case("unix") {
                rules.push(ProxyRule::Unix);
                continue;
            }
            let net = if entry.contains('/') {
                entry.parse::<IpNet>().map_err(|_| {
                    format!("{entry:?} is not an IP address, a CIDR range or \"unix\"")
                })?
            } else {
                IpNet::from(entry.parse::<IpAddr>().map_err(|_| {
                    format!("{entry:?} is not an IP address, a CIDR range or \"unix\"")
                })?)
            };
            if net.prefix_len() == 0 {
                return Err(format!(
                    "{entry:?} trusts every address; name the proxies' addresses"
                ));
            }
            rules.push(ProxyRule::Net(net.trunc()));
        }
        Ok(Self(rules))
    }

    /// True when some entry can match a peer of this kind of listener.
    pub fn can_match(&self, unix_socket: bool) -> bool {
        self.0
            .iter()
            .any(|rule| matches!(rule, ProxyRule::Unix) == unix_socket)
    }

    /// True when the connection's peer is one of the proxies. A request
    /// whose peer is unknown is never trusted.
    pub fn trusts(&self, peer: Option<Peer>) -> bool {
        match peer {
            None => false,
            Some(Peer::Unix) => self.0.contains(&ProxyRule::Unix),
            Some(Peer::Tcp(addr)) => {
                // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
                let ip = match addr.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                self.0
                    .iter()
                    .any(|rule| matches!(rule, ProxyRule::Net(net) if net.contains(&ip)))
            }
        }
    }
}

/// With auth configured: a request carrying `Origin` must come from an
/// `allowed_origins` entry or, when that list is empty, from the gateway's
/// own origin (the `Origin` authority equals the `Host` header). Requests
/// without `Origin` (not from a browser page) pass.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    if !allowed.is_empty() {
        return allowed.iter().any(|a| a.as_bytes() == origin.as_bytes());
    }
    headers
        .get(header::HOST)
        .is_some_and(|host| same_origin(origin, host))
}

/// `Origin: scheme://host[:port]` names the same host and port as `Host`.
fn same_origin(origin: &HeaderValue, host: &HeaderValue) -> bool {
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    let (origin_host, origin_port) = split_authority(authority);
    let (host_host, host_port) = split_authority(host.trim());
    if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host_host) {
        return false;
    }
    // Browsers leave the default port out of Origin; a proxy may or may not
    // leave it out of Host.
    let origin_port = origin_port.or(default_port);
    match host_port {
        Some(port) => origin_port == Some(port),
        None => origin_port == default_port,
    }
}

/// `host:port` → (`host`, port); `[v6]:port` → (`v6`, port). An unparseable
/// port makes the authority match nothing.
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => return ("", None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (authority, None),
        }
    };
    match port.map(str::parse::<u16>) {
        None => (host.trim_end_matches('.'), None),
        Some(Ok(port)) => (host.trim_end_matches('.'), Some(port)),
        Some(Err(_)) => ("", None),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn tcp(addr: &str) -> Option<Peer> {
        Some(Peer::Tcp(addr.parse::<SocketAddr>().unwrap()))
    }

    #[test]
    fn only_listed_peers_are_trusted_proxies() {
        let list = proxies(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        assert!(list.trusts(tcp("10.1.2.3:5000")));
        assert!(list.trusts(tcp("192.168.1.7:80")));
        assert!(list.trusts(tcp("[::ffff:10.9.9.9]:80")));
        assert!(list.trusts(tcp("[fd12::1]:80")));
        assert!(!list.trusts(tcp("192.168.1.8:80")));
        assert!(!list.trusts(tcp("127.0.0.1:80")));
        assert!(!list.trusts(Some(Peer::Unix)));
        assert!(!list.trusts(None));
        assert!(proxies(&["unix"]).trusts(Some(Peer::Unix)));
        assert!(!proxies(&["unix"]).trusts(tcp("127.0.0.1:1")));
        for bad in ["0.0.0.0/0", "::/0", "example.com", "10.0.0.0/33", ""] {
            assert!(TrustedProxies::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn browser_origins_must_be_the_gateways_own_or_listed() {
        let none: &[String] = &[];
        assert!(origin_allowed(&headers(&[("host", "gw.example")]), none));
        for (host, origin) in [
            ("gw.example", "https://gw.example"),
            ("gw.example", "http://GW.example"),
            ("gw.example:443", "https://gw.example"),
            ("127.0.0.1:7331", "http://127.0.0.1:7331"),
            ("[::1]:7331", "http://[::1]:7331"),
        ] {
            let h = headers(&[("host", host), ("origin", origin)]);
            assert!(origin_allowed(&h, none), "{host} {origin}");
        }
        for (host, origin) in [
            ("gw.example", "https://evil.example"),
            ("gw.example", "https://gw.example.evil.example"),
            ("gw.example", "null"),
            ("gw.example:8080", "https://gw.example"),
            ("127.0.0.1:7331", "http://127.0.0.1:7332"),
            ("gw.example", "https://user@gw.example"),
        ] {
            let h = headers(&[("host", host), ("origin", origin)]);
            assert!(!origin_allowed(&h, none), "{host} {origin}");
        }
        assert!(!origin_allowed(
            &headers(&[("origin", "https://gw.example")]),
            none
        ));
        let listed = vec!["https://ops.example".to_string()];
        let h = headers(&[("host", "gw.example"), ("origin", "https://ops.example")]);
        assert!(origin_allowed(&h, &listed));
        let h = headers(&[("host", "gw.example"), ("origin", "https://gw.example")]);
        assert!(!origin_allowed(&h, &listed));
    }
}
