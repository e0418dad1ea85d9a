//! The operator's outbound HTTP policy: which authorities a guest may reach,
//! with which methods, how long a request may take and how large a response
//! may be.
//!
//! The policy comes from the operator only (flags, the host's config file),
//! never from the root dir, which the workflow can write. It is closed by
//! default: an empty allowlist refuses every request. A pattern names a
//! scheme, a host and a port; a name in a pattern never unlocks a loopback,
//! private or otherwise non-public address (names can be made to resolve
//! anywhere), only a pattern whose host is that IP literal does (see
//! [`address_allowed`]). This module decides; it never resolves or connects.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// Default deadline of one outbound request (connect to last body byte).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest response body the host accepts for a guest.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;
/// Longest pattern accepted (a DNS name is at most 253 bytes).
const MAX_PATTERN_LEN: usize = 512;

/// What the operator allows. `Default` allows nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Allowed destinations; empty refuses every request.
    pub allow: Vec<Pattern>,
    /// Deadline of one request, from resolving the name to the last byte of
    /// the response.
    pub timeout: Duration,
    /// Largest response body handed to a guest; a larger one fails the call.
    pub max_response_bytes: u64,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The policy as `/health` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySummary {
    /// True when at least one pattern allows something.
    pub enabled: bool,
    /// The patterns, normalised (`GET https://api.example.com:443`).
    pub allow: Vec<String>,
    /// Deadline of one request, in milliseconds.
    pub timeout_ms: u64,
    /// Largest response body, in bytes.
    pub max_response_bytes: u64,
    /// Whether a loopback/private address is reachable only through a
    /// pattern naming that IP literal (always true; shown for auditors).
    pub private_addresses_need_ip_pattern: bool,
}

impl HttpPolicy {
    /// The first pattern allowing this request, if any. `host` is the URL's
    /// host as the request names it (brackets around IPv6 are accepted).
    pub fn allows(&self, method: &str, scheme: Scheme, host: &str, port: u16) -> Option<&Pattern> {
        let host = RequestHost::parse(host)?;
        self.allow
            .iter()
            .find(|p| p.matches(method, scheme, &host, port))
    }

    /// What `/health` shows.
    pub fn summary(&self) -> PolicySummary {
        PolicySummary {
            enabled: !self.allow.is_empty(),
            allow: self.allow.iter().map(ToString::to_string).collect(),
            timeout_ms: self.timeout.as_millis().min(u64::MAX as u128) as u64,
            max_response_bytes: self.max_response_bytes,
            private_addresses_need_ip_pattern: true,
        }
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP: only when a pattern says `http://`.
    Http,
    /// HTTPS: what a pattern without a scheme allows.
    Https,
}

impl Scheme {
    /// The port a URL without one uses.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this DNS name (lowercase, no trailing dot).
    Name(String),
    /// Any name strictly below this suffix (`*.example.com` matches
    /// `api.example.com`, not `example.com`).
    Subdomains(String),
    /// Any DNS name (`*`); never an IP literal.
    AnyName,
    /// This IP literal; the only way to reach a non-public address.
    Ip(IpAddr),
}

/// One allowed destination: `[METHOD[,METHOD..] ][scheme://]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// Allowed methods (uppercase); `None` allows any.
    pub methods: Option<Vec<String>>,
    /// Scheme (`https` unless the pattern says `http://`).
    pub scheme: Scheme,
    /// Host.
    pub host: HostPattern,
    /// Port (the scheme's default unless the pattern names one).
    pub port: u16,
}

impl Pattern {
    fn matches(&self, method: &str, scheme: Scheme, host: &RequestHost, port: u16) -> bool {
        let method_ok = self
            .methods
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m.eq_ignore_ascii_case(method)));
        method_ok && self.names_destination(scheme, host, port)
    }

    /// Whether the pattern names this scheme, host and port (its methods
    /// aside): how a secret's binding is checked.
    pub fn matches_target(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        RequestHost::parse(host).is_some_and(|host| self.names_destination(scheme, &host, port))
    }

    fn names_destination(&self, scheme: Scheme, host: &RequestHost, port: u16) -> bool {
        let host_ok = match (&self.host, host) {
            (HostPattern::Name(name), RequestHost::Name(host)) => name == host,
            (HostPattern::Subdomains(suffix), RequestHost::Name(host)) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::AnyName, RequestHost::Name(_)) => true,
            (HostPattern::Ip(ip), RequestHost::Ip(host)) => ip == host,
            _ => false,
        };
        host_ok && self.scheme == scheme && self.port == port
    }

    /// True when the pattern names exactly this address: the one way a
    /// loopback, private or otherwise non-public address may be reached.
    pub fn names_address(&self, ip: IpAddr) -> bool {
        matches!(self.host, HostPattern::Ip(named) if canonical(named) == canonical(ip))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(methods) = &self.methods {
            write!(f, "{} ", methods.join(","))?;
        }
        write!(f, "{}://", self.scheme.as_str())?;
        match &self.host {
            HostPattern::Name(name) => write!(f, "{name}")?,
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}")?,
            HostPattern::AnyName => write!(f, "*")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
        }
        write!(f, ":{}", self.port)
    }
}

/// Why a pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HTTP allow pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as given (cut).
    pub pattern: String,
    /// What is wrong.
    pub reason: String,
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| PatternError {
            pattern: raw.chars().take(80).collect(),
            reason: reason.into(),
        };
        let text = raw.trim();
        if text.is_empty() {
            return Err(fail("empty"));
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(fail("too long"));
        }
        let (methods, target) = match text.split_once(char::is_whitespace) {
            Some((methods, target)) => (
                Some(parse_methods(methods).map_err(|r| fail(&r))?),
                target.trim(),
            ),
            None => (None, text),
        };
        let (scheme, rest) = if let Some(rest) = target.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = target.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if target.contains("://") {
            return Err(fail("the scheme must be http:// or https://"));
        } else {
            (Scheme::Https, target)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(fail(
                "a pattern names a host and port only (no path, query or user)",
            ));
        }
        let (host, port) = split_host_port(rest).map_err(|r| fail(&r))?;
        let port = match port {
            Some(port) => port,
            None => scheme.default_port(),
        };
        let host = parse_host_pattern(host).map_err(|r| fail(&r))?;
        Ok(Pattern {
            methods,
            scheme,
            host,
            port,
        })
    }
}

fn parse_methods(text: &str) -> Result<Vec<String>, String> {
    let methods: Vec<String> = text
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .collect();
    for method in &methods {
        // A token as RFC 9110 defines it, in practice letters.
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
            return Err(format!("{method:?} is not an HTTP method"));
        }
    }
    Ok(methods)
}

/// Splits `host[:port]`, `[v6][:port]`.
fn split_host_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs its closing bracket")?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(parse_port(port)?))),
                None => Err("unexpected text after the IPv6 address".into()),
            },
        };
    }
    match text.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            Err("an IPv6 address must be written in brackets: [::1]:8080".into())
        }
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((text, None)),
    }
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Ok(HostPattern::AnyName);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(canonical(ip)));
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        return Ok(HostPattern::Subdomains(normalize_name(suffix)?));
    }
    if host.contains('*') {
        return Err("a wildcard is `*` alone or a leading `*.`".into());
    }
    Ok(HostPattern::Name(normalize_name(host)?))
}

/// Lowercase, without a trailing dot, made of DNS labels.
fn normalize_name(name: &str) -> Result<String, String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{name:?} is not a host name"));
    }
    Ok(name)
}

/// The host a request names, normalised like a pattern's.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RequestHost {
    Name(String),
    Ip(IpAddr),
}

impl RequestHost {
    fn parse(host: &str) -> Option<Self> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Self::Ip(canonical(ip)));
        }
        normalize_name(bare).ok().map(Self::Name)
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whether the host may connect to `ip` for a request allowed by `pattern`:
/// a public address always, any other only when the pattern names it.
pub fn address_allowed(pattern: &Pattern, ip: IpAddr) -> bool {
    is_public(ip) || pattern.names_address(ip)
}

/// False for loopback, private, link-local, unspecified, shared (CGNAT),
/// multicast, broadcast, documentation, benchmarking and reserved ranges,
/// and for IPv6 forms that embed such an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || ip.is_documentation()
        || (a == 198 && (b == 18 || b == 19))
        || ip.is_multicast()
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address that
    // a gateway on the way would reach: judge that address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        return is_public_v4(Ipv4Addr::from(((hi as u32) << 16) | lo as u32));
    }
    if segments[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::from(
            ((segments[1] as u32) << 16) | segments[2] as u32,
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || ip.is_multicast()
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[..4] == [0x100, 0, 0, 0] // discard
        || segments[..5] == [0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> HttpPolicy {
        HttpPolicy {
            allow: patterns.iter().map(|p| p.parse().unwrap()).collect(),
            ..HttpPolicy::default()
        }
    }

    #[test]
    fn the_default_policy_allows_nothing() {
        let p = HttpPolicy::default();
        assert!(p.allows("GET", Scheme::Https, "example.com", 443).is_none());
        assert!(!p.summary().enabled);
    }

    #[test]
    fn a_bare_host_means_https_on_443_any_method() {
        let p = policy(&["api.example.com"]);
        assert!(
            p.allows("POST", Scheme::Https, "API.example.com", 443)
                .is_some()
        );
        assert!(
            p.allows("GET", Scheme::Https, "api.example.com.", 443)
                .is_some()
        );
        assert!(
            p.allows("GET", Scheme::Http, "api.example.com", 80)
                .is_none()
        );
        assert!(
            p.allows("GET", Scheme::Https, "api.example.com", 8443)
                .is_none()
        );
        assert!(p.allows("GET", Scheme::Https, "example.com", 443).is_none());
        assert!(
            p.allows("GET", Scheme::Https, "evil-api.example.com", 443)
                .is_none()
        );
    }

    #[test]
    fn ports_schemes_and_methods_narrow_a_pattern() {
        let p = policy(&[
            "GET,head http://127.0.0.1:8080",
            "POST hooks.example.com:8443",
        ]);
        assert!(p.allows("GET", Scheme::Http, "127.0.0.1", 8080).is_some());
        assert!(p.allows("HEAD", Scheme::Http, "127.0.0.1", 8080).is_some());
        assert!(p.allows("POST", Scheme::Http, "127.0.0.1", 8080).is_none());
        assert!(p.allows("GET", Scheme::Https, "127.0.0.1", 8080).is_none());
        assert!(
            p.allows("POST", Scheme::Https, "hooks.example.com", 8443)
                .is_some()
        );
        assert!(
            p.allows("GET", Scheme::Https, "hooks.example.com", 8443)
                .is_none()
        );
    }

    #[test]
    fn wildcards_match_names_below_never_the_suffix_or_ip_literals() {
        let p = policy(&["*.example.com"]);
        assert!(
            p.allows("GET", Scheme::Https, "a.b.example.com", 443)
                .is_some()
        );
        assert!(p.allows("GET", Scheme::Https, "example.com", 443).is_none());
        assert!(
            p.allows("GET", Scheme::Https, "badexample.com", 443)
                .is_none()
        );
        let any = policy(&["*"]);
        assert!(
            any.allows("GET", Scheme::Https, "anything.org", 443)
                .is_some()
        );
        assert!(any.allows("GET", Scheme::Https, "10.0.0.1", 443).is_none());
    }

    #[test]
    fn ipv6_literals_and_mapped_addresses_compare_canonically() {
        let p = policy(&["http://[::1]:9000", "http://127.0.0.1:9001"]);
        assert!(p.allows("GET", Scheme::Http, "[::1]", 9000).is_some());
        assert!(
            p.allows("GET", Scheme::Http, "[::ffff:127.0.0.1]", 9001)
                .is_some()
        );
        let pattern: Pattern = "http://127.0.0.1:9001".parse().unwrap();
        assert!(pattern.names_address("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!pattern.names_address("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for bad in [
            "",
            "ftp://x.com",
            "x.com/path",
            "user@x.com",
            "x.com:0",
            "x.com:99999",
            "::1",
            "a*.x.com",
            "G3T x.com",
            "bad_label!.com",
        ] {
            let err = bad.parse::<Pattern>().unwrap_err();
            assert!(!err.reason.is_empty(), "{bad}");
        }
    }

    #[test]
    fn patterns_display_normalised() {
        let p: Pattern = "get http://Example.COM".parse().unwrap();
        assert_eq!(p.to_string(), "GET http://example.com:80");
        let v6: Pattern = "[::1]:8443".parse().unwrap();
        assert_eq!(v6.to_string(), "https://[::1]:8443");
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn a_name_pattern_never_unlocks_a_private_address() {
        let name: Pattern = "http://localhost:8080".parse().unwrap();
        let ip: Pattern = "http://127.0.0.1:8080".parse().unwrap();
        let loopback = "127.0.0.1".parse().unwrap();
        assert!(!address_allowed(&name, loopback));
        assert!(address_allowed(&ip, loopback));
        assert!(address_allowed(&name, "93.184.216.34".parse().unwrap()));
    }
}
