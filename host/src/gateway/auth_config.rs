//! The `[auth]` section of the gateway config: its three modes and the checks
//! that refuse an unsafe one when the file is loaded (and when SIGHUP reloads
//! it).
//!
//! What is refused, and why: an HS256 secret shorter than 32 bytes (RFC 7518
//! §3.2; a short one falls to an offline brute force of any captured token),
//! a JWT mode without `issuer` and `audience` (a token minted for another
//! service sharing the secret would be accepted), a clock-skew leeway over
//! five minutes, a trusted-proxy mode without `trusted_proxies` or with a
//! `/0` range (identity headers would be believed from anyone), and
//! `allowed_origins` entries that can never match a browser's `Origin`.
//! This module decides nothing at request time; `auth` and `trust` do.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::config::ConfigError;
use super::trust::TrustedProxies;

/// Shortest accepted HS256 secret, in bytes (the hash's output size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Largest accepted clock-skew leeway on `exp`/`nbf`/`iat`.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Authentication, by mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthConfig {
    /// Static bearer tokens, each with a role and scopes.
    Token {
        /// Token text → grant.
        tokens: BTreeMap<String, TokenGrant>,
        /// Browser origins allowed to call (empty: only the gateway's own).
        #[serde(default)]
        allowed_origins: Vec<String>,
    },
    /// HS256 JSON Web Tokens.
    Jwt(JwtConfig),
    /// A reverse proxy that authenticated the user and says so in headers.
    TrustedProxy(TrustedProxyConfig),
}

impl AuthConfig {
    /// The mode's name, as the wire spells it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::Jwt(_) => "jwt",
            Self::TrustedProxy(_) => "trusted-proxy",
        }
    }

    /// Browser origins allowed to call (empty: only the gateway's own).
    pub fn allowed_origins(&self) -> &[String] {
        match self {
            Self::Token {
                allowed_origins, ..
            } => allowed_origins,
            Self::TrustedProxy(proxy) => &proxy.allowed_origins,
            Self::Jwt(jwt) => &jwt.allowed_origins,
        }
    }

    /// Checks the section and resolves its secrets and proxy ranges.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        validate_origins(self.allowed_origins())?;
        match self {
            Self::Token { tokens, .. } if tokens.is_empty() => Err(invalid(
                "auth mode \"token\" needs at least one [auth.tokens] entry",
            )),
            Self::Token { .. } => Ok(()),
            Self::Jwt(jwt) => jwt.validate(),
            Self::TrustedProxy(proxy) => proxy.validate(),
        }
    }
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// What a static token grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenGrant {
    /// Role (`operator`, `viewer`, ...).
    pub role: String,
    /// Scopes (`run:read`, `*`, ...).
    pub scopes: Vec<String>,
    /// User id (for `allowedUsers` and `triggeredBy`).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Stable id for logs (default: a hash of the token).
    #[serde(default)]
    pub token_id: Option<String>,
    /// Refused from this time (epoch ms).
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// Revoked from this time (epoch ms).
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
}

/// HS256 JWT verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret (prefer `secret_env`).
    #[serde(default)]
    pub secret: Option<String>,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Required `iss` (required in the config too).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`, a string or one element of an array (required in the
    /// config too).
    #[serde(default)]
    pub audience: Option<String>,
    /// Leeway on `exp`, `nbf` and `iat`, in milliseconds (at most 5 min).
    #[serde(default = "default_clock_skew_ms")]
    pub clock_skew_ms: i64,
    /// Claim holding scopes (space- or comma-separated, or an array).
    #[serde(default = "default_scope_claim")]
    pub scopes_claim: String,
    /// Claim holding the role.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Claim holding the user id.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Role when the claim is absent.
    #[serde(default = "default_role")]
    pub default_role: String,
    /// Scopes when the claim is absent or empty.
    #[serde(default)]
    pub default_scopes: Vec<String>,
    /// Browser origins allowed to call (empty: only the gateway's own).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The secret, resolved at load time.
    #[serde(skip)]
    pub resolved_secret: String,
}

fn default_clock_skew_ms() -> i64 {
    60_000
}

fn default_scope_claim() -> String {
    "scope".into()
}

fn default_role_claim() -> String {
    "role".into()
}

fn default_user_claim() -> String {
    "sub".into()
}

fn default_role() -> String {
    "operator".into()
}

impl JwtConfig {
    fn validate(&mut self) -> Result<(), ConfigError> {
        self.resolved_secret = resolve_secret("auth", &self.secret, &self.secret_env)?;
        let len = self.resolved_secret.len();
        if len < MIN_HS256_SECRET_BYTES {
            return Err(invalid(format!(
                "auth: the HS256 secret is {len} bytes; at least {MIN_HS256_SECRET_BYTES} are required \
                 (e.g. `openssl rand -hex 32`)"
            )));
        }
        for (name, value) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                return Err(invalid(format!(
                    "auth.{name} is required in jwt mode, so that a token minted for another \
                     service that shares the secret is refused"
                )));
            }
        }
        if !(0..=MAX_CLOCK_SKEW_MS).contains(&self.clock_skew_ms) {
            return Err(invalid(format!(
                "auth.clock_skew_ms must be between 0 and {MAX_CLOCK_SKEW_MS}"
            )));
        }
        Ok(())
    }
}

/// A reverse proxy that authenticated the user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedProxyConfig {
    /// Headers carrying user id, scopes and role (in that order).
    #[serde(default = "default_trusted_headers")]
    pub trusted_headers: Vec<String>,
    /// Addresses (CIDR ranges or single IPs, or `"unix"` for the Unix
    /// socket) whose identity headers are believed; required.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Role when the role header is absent.
    #[serde(default)]
    pub default_role: Option<String>,
    /// Scopes when the scopes header is absent (absent too: refused).
    #[serde(default)]
    pub default_scopes: Option<Vec<String>>,
    /// Browser origins allowed to call (empty: only the gateway's own).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// `trusted_proxies`, parsed at load time.
    #[serde(skip)]
    pub proxies: TrustedProxies,
}

fn default_trusted_headers() -> Vec<String> {
    vec![
        "x-user-id".into(),
        "x-user-scopes".into(),
        "x-user-role".into(),
    ]
}

impl TrustedProxyConfig {
    fn validate(&mut self) -> Result<(), ConfigError> {
        if self.trusted_proxies.is_empty() {
            return Err(invalid(
                "auth mode \"trusted-proxy\" needs trusted_proxies: the addresses of the proxies \
                 whose identity headers are believed (e.g. [\"127.0.0.1\"], [\"10.0.0.0/8\"], \
                 [\"unix\"]); without it anyone who reaches the gateway could claim any identity",
            ));
        }
        self.proxies = TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| invalid(format!("auth.trusted_proxies: {e}")))?;
        if self.trusted_headers.len() > 3 {
            return Err(invalid(
                "auth.trusted_headers lists at most three headers: user id, scopes, role",
            ));
        }
        for name in &self.trusted_headers {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(format!(
                    "auth.trusted_headers: {name:?} is not a header name"
                )));
            }
        }
        Ok(())
    }
}

/// An `allowed_origins` entry must be what browsers send: `scheme://host`
/// with an optional port and nothing after it (no path, no trailing slash).
fn validate_origins(origins: &[String]) -> Result<(), ConfigError> {
    for origin in origins {
        let ok = origin.split_once("://").is_some_and(|(scheme, authority)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !authority.is_empty()
                && !authority.contains(['/', '?', '#', '@', ' '])
        });
        if !ok {
            return Err(invalid(format!(
                "auth.allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path); \
                 list each browser origin explicitly"
            )));
        }
    }
    Ok(())
}

/// A secret given inline or through an environment variable (exactly one).
pub fn resolve_secret(
    section: &str,
    inline: &Option<String>,
    env: &Option<String>,
) -> Result<String, ConfigError> {
    let secret = match (inline, env) {
        (Some(secret), None) => secret.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            invalid(format!(
                "{section}.secret_env names {var}, which is not set"
            ))
        })?,
        _ => {
            return Err(invalid(format!(
                "{section} needs exactly one of secret or secret_env"
            )));
        }
    };
    if secret.trim().is_empty() {
        return Err(invalid(format!("{section}: the secret must not be empty")));
    }
    Ok(secret)
}
