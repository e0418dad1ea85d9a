//! Who is calling the gateway, and what they may do.
//!
//! [`Authenticator::authenticate`] turns a request's credentials into an
//! [`Identity`] (role, scopes, user) for the configured mode — static tokens,
//! HS256 JWTs ([`super::jwt`]), or the headers of a proxy whose address is
//! trusted ([`super::trust`]) — or, without auth, grants the loopback
//! operator everything once the Host/Origin gate passed. Browser requests
//! pass an Origin check in every mode. Scope
//! checks follow Smithers exactly (`run:admin ⊃ run:write ⊃ run:read`,
//! `cron:write ⊃ cron:read`, `*`, a method name or `prefix.*` granting that
//! method, and the legacy `read`/`execute`/`approve`/`admin`), so a token
//! written for Smithers means the same here.

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::{AuthConfig, TrustedProxyConfig};
use super::jwt::{self, JwtError};
use super::rpc::{RpcCode, RpcError};
use super::trust;
use crate::http::auth::{AccessPolicy, KEY_HEADER};
use crate::http::listen::Peer;
use crate::model::now_ms;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Role (`operator`, `system`, ...).
    pub role: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// User id, when the credential names one.
    pub user_id: Option<String>,
    /// Stable id of the credential (never the token itself).
    pub token_id: Option<String>,
}

impl Identity {
    /// The system identity of cron and webhook runs.
    pub fn system(triggered_by: &str) -> (Self, String) {
        (
            Self {
                role: "system".into(),
                scopes: vec!["*".into()],
                user_id: None,
                token_id: None,
            },
            triggered_by.to_string(),
        )
    }

    /// `ctx.auth` of a run this identity starts.
    pub fn run_auth(&self, triggered_by: &str) -> Value {
        json!({
            "triggeredBy": triggered_by,
            "role": self.role,
            "scopes": self.scopes,
            "createdAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }

    /// Who triggered a run this identity starts.
    pub fn triggered_by(&self) -> String {
        self.user_id.clone().unwrap_or_else(|| "gateway".into())
    }

    /// True when the identity may call `method`.
    pub fn may_call(&self, method: &str) -> bool {
        has_scope(&self.scopes, required_scope(method), Some(method))
    }
}

/// Checks credentials against the configured mode.
#[derive(Debug, Clone)]
pub struct Authenticator {
    auth: Option<AuthConfig>,
    /// Host/Origin gate applied when there is no auth.
    gate: AccessPolicy,
}

impl Authenticator {
    /// An authenticator for a mode (`None`: no auth, loopback only unless
    /// `insecure`).
    pub fn new(auth: Option<AuthConfig>, insecure: bool, trust_any_host: bool) -> Self {
        let gate = AccessPolicy::new(None, insecure, trust_any_host || auth.is_some());
        Self { auth, gate }
    }

    /// The mode name (`none` without auth).
    pub fn mode(&self) -> &'static str {
        self.auth.as_ref().map_or("none", AuthConfig::mode)
    }

    /// True when some `[auth]` is configured.
    pub fn is_configured(&self) -> bool {
        self.auth.is_some()
    }

    /// The gate every non-health request passes first (403 `FORBIDDEN`).
    /// Without auth, Host and Origin must be loopback (unless `insecure`).
    /// With auth, a browser request (one with `Origin`) must come from an
    /// `allowed_origins` entry or, when none is listed, from the gateway's
    /// own origin — whatever `insecure` says, since a credential a browser
    /// attaches by itself (a proxy's session cookie) must not be usable from
    /// another site.
    pub fn check_request(&self, headers: &HeaderMap) -> Result<(), RpcError> {
        if let Err(e) = self.gate.check(headers) {
            return Err(RpcError::new(RpcCode::Forbidden, e.message));
        }
        if let Some(auth) = &self.auth
            && !trust::origin_allowed(headers, auth.allowed_origins())
        {
            return Err(RpcError::new(RpcCode::Forbidden, "Origin is not allowed"));
        }
        Ok(())
    }

    /// Authenticates a request that arrived from `peer`, whose token (if
    /// any) came from `token` or the request headers.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<Peer>,
        token: Option<&str>,
    ) -> Result<Identity, RpcError> {
        let header_token = bearer_token(headers);
        let token = token.or(header_token.as_deref());
        match &self.auth {
            None => Ok(Identity {
                role: "operator".into(),
                scopes: vec!["*".into()],
                user_id: None,
                token_id: None,
            }),
            Some(AuthConfig::Token { tokens, .. }) => {
                let token = token.ok_or_else(token_required)?;
                // Compare every configured token in constant time.
                let grant = tokens
                    .iter()
                    .filter(|(known, _)| bool::from(known.as_bytes().ct_eq(token.as_bytes())))
                    .map(|(_, grant)| grant)
                    .next()
                    .ok_or_else(|| RpcError::new(RpcCode::Unauthorized, "Invalid token"))?;
                let now = now_ms();
                if grant.revoked_at_ms.is_some_and(|at| at <= now) {
                    return Err(
                        RpcError::new(RpcCode::Unauthorized, "Token has been revoked")
                            .with_details(json!({ "refresh": "smithers token issue" })),
                    );
                }
                if grant.expires_at_ms.is_some_and(|at| at <= now) {
                    return Err(RpcError::new(
                        RpcCode::Unauthorized,
                        "Token expired; issue a refreshed token.",
                    )
                    .with_details(json!({ "refresh": "smithers token issue" })));
                }
                Ok(Identity {
                    role: grant.role.clone(),
                    scopes: grant.scopes.clone(),
                    user_id: grant.user_id.clone(),
                    token_id: Some(grant.token_id.clone().unwrap_or_else(|| token_hash(token))),
                })
            }
            Some(AuthConfig::Jwt(config)) => {
                let token = token.ok_or_else(token_required)?;
                let claims = jwt::verify(token, config, now_ms()).map_err(|e| {
                    let error = RpcError::new(RpcCode::Unauthorized, e.to_string());
                    if e == JwtError::Expired {
                        error.with_details(json!({ "refresh": "smithers token issue" }))
                    } else {
                        error
                    }
                })?;
                let scopes = parse_scopes(claims.get(&config.scopes_claim));
                Ok(Identity {
                    role: claims
                        .get(&config.role_claim)
                        .and_then(Value::as_str)
                        .unwrap_or(&config.default_role)
                        .to_string(),
                    scopes: if scopes.is_empty() {
                        config.default_scopes.clone()
                    } else {
                        scopes
                    },
                    user_id: claims
                        .get(&config.user_claim)
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    token_id: Some(token_hash(token)),
                })
            }
            Some(AuthConfig::TrustedProxy(proxy)) => proxy_identity(proxy, headers, peer),
        }
    }
}

/// The identity a trusted proxy vouches for in its headers. The peer
/// address decides whether the headers are believed at all.
fn proxy_identity(
    proxy: &TrustedProxyConfig,
    headers: &HeaderMap,
    peer: Option<Peer>,
) -> Result<Identity, RpcError> {
    if !proxy.proxies.trusts(peer) {
        return Err(RpcError::new(
            RpcCode::Unauthorized,
            "Request did not come from a trusted proxy",
        ));
    }
    let name = |i: usize, fallback: &'static str| {
        proxy
            .trusted_headers
            .get(i)
            .map_or(fallback.to_string(), |h| h.to_ascii_lowercase())
    };
    let value = |name: String| {
        headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let user_id = value(name(0, "x-user-id"));
    let scopes = value(name(1, "x-user-scopes"));
    let role = value(name(2, "x-user-role"));
    // Fail closed: no scopes header and no configured default must not
    // become an implicit "*".
    let scopes = match (scopes, &proxy.default_scopes) {
        (Some(raw), _) => parse_scopes(Some(&Value::String(raw))),
        (None, Some(defaults)) => defaults.clone(),
        (None, None) => {
            return Err(RpcError::new(
                RpcCode::Unauthorized,
                "trusted-proxy request is missing the user scopes header and no default_scopes is configured",
            ));
        }
    };
    Ok(Identity {
        role: role
            .or_else(|| proxy.default_role.clone())
            .unwrap_or_else(|| "operator".into()),
        scopes,
        user_id,
        token_id: None,
    })
}

fn token_required() -> RpcError {
    RpcError::new(RpcCode::Unauthorized, "A bearer token is required")
}

/// `Authorization` (with or without `Bearer `) or `x-smithers-key`.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .or_else(|| headers.get(KEY_HEADER))?
        .to_str()
        .ok()?;
    let token = match raw.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => &raw[7..],
        _ => raw,
    };
    Some(token.trim().to_string()).filter(|t| !t.is_empty())
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))[..16].to_string()
}

/// Scopes from a claim or header: an array of strings, or one string split
/// on commas and whitespace.
fn parse_scopes(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s
            .split([',', ' ', '\t', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The scope a method needs (Smithers' catalogue for the methods served
/// here; anything else needs `run:read`).
pub fn required_scope(method: &str) -> &'static str {
    match method {
        "launchRun" | "runs.create" | "resumeRun" | "cancelRun" | "runs.cancel" | "runs.rerun" => {
            "run:write"
        }
        "submitApproval" | "approvals.decide" | "approve" => "approval:submit",
        "submitSignal" | "signals.send" => "signal:submit",
        "cronList" | "cron.list" => "cron:read",
        "cronCreate" | "cron.add" | "cronDelete" | "cron.remove" | "cronRun" | "cron.trigger" => {
            "cron:write"
        }
        _ => "run:read",
    }
}

const SCOPES: [&str; 7] = [
    "run:read",
    "run:write",
    "run:admin",
    "approval:submit",
    "signal:submit",
    "cron:read",
    "cron:write",
];

fn scope_implies(granted: &str, required: &str) -> bool {
    const RUN: [&str; 3] = ["run:read", "run:write", "run:admin"];
    const CRON: [&str; 2] = ["cron:read", "cron:write"];
    if granted == required {
        return true;
    }
    for order in [&RUN[..], &CRON[..]] {
        if let (Some(g), Some(r)) = (
            order.iter().position(|s| *s == granted),
            order.iter().position(|s| *s == required),
        ) {
            return g >= r;
        }
    }
    false
}

fn legacy_implies(scope: &str, required: &str) -> bool {
    match scope {
        "read" => matches!(required, "run:read" | "cron:read"),
        "execute" => matches!(
            required,
            "run:read" | "run:write" | "signal:submit" | "cron:read" | "cron:write"
        ),
        "approve" => required == "approval:submit" || legacy_implies("execute", required),
        "admin" => true,
        _ => false,
    }
}

/// Smithers' `hasGatewayScope`: does `granted` satisfy `required` for
/// `method`? A method-name or `prefix.*` grant never confers more than the
/// method itself needs.
pub fn has_scope(granted: &[String], required: &str, method: Option<&str>) -> bool {
    let granted: Vec<&str> = granted
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if granted.contains(&"*") {
        return true;
    }
    let method_grant_ok = |m: &str| scope_implies(required_scope(m), required);
    granted.iter().any(|g| {
        if let Some(m) = method {
            if *g == m && method_grant_ok(m) {
                return true;
            }
            if let Some(prefix) = g.strip_suffix('*')
                && g.ends_with(".*")
                && m.starts_with(prefix)
                && method_grant_ok(m)
            {
                return true;
            }
        }
        (SCOPES.contains(g) && scope_implies(g, required)) || legacy_implies(g, required)
    })
}

/// Smithers' `hasApprovalScope`: does the caller hold one approval's
/// `allowedScopes` entry?
pub fn has_approval_scope(granted: &[String], allowed: &str) -> bool {
    let allowed = allowed.trim();
    if allowed.is_empty() {
        return false;
    }
    if !SCOPES.contains(&allowed) {
        return granted
            .iter()
            .any(|g| g.trim() == "*" || g.trim() == allowed);
    }
    has_scope(granted, allowed, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scopes_imply_like_smithers() {
        assert!(has_scope(
            &scopes(&["run:write"]),
            "run:read",
            Some("getRun")
        ));
        assert!(!has_scope(
            &scopes(&["run:read"]),
            "run:write",
            Some("launchRun")
        ));
        assert!(has_scope(&scopes(&["*"]), "cron:write", Some("cronCreate")));
        assert!(has_scope(
            &scopes(&["cron:write"]),
            "cron:read",
            Some("cronList")
        ));
        assert!(!has_scope(
            &scopes(&["cron:read"]),
            "cron:write",
            Some("cronRun")
        ));
        assert!(!has_scope(&scopes(&["run:admin"]), "approval:submit", None));
        assert!(has_scope(&scopes(&["getRun"]), "run:read", Some("getRun")));
        assert!(!has_scope(
            &scopes(&["getRun"]),
            "run:write",
            Some("launchRun")
        ));
        assert!(has_scope(
            &scopes(&["cron.*"]),
            "cron:write",
            Some("cron.add")
        ));
        assert!(has_scope(&scopes(&["approve"]), "approval:submit", None));
        assert!(!has_scope(&scopes(&["read"]), "run:write", None));
        assert!(has_approval_scope(&scopes(&["run:admin"]), "run:write"));
        assert!(has_approval_scope(&scopes(&["team:qa"]), "team:qa"));
        assert!(!has_approval_scope(&scopes(&["team:dev"]), "team:qa"));
    }
}
