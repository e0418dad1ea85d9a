//! The gateway's configuration file (TOML): where it listens, its limits,
//! how clients authenticate, and which workflows it serves under which keys.
//!
//! Everything is checked when the file is loaded, so a typo or an unsafe
//! choice (a non-loopback bind without auth) stops the gateway before it
//! opens anything. Secrets may be given inline or, better, through an
//! environment variable (`*_env` keys). `examples/gateway.toml` documents
//! every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::http::auth::is_loopback_host;

/// Default port (the one Smithers' gateway uses).
pub const DEFAULT_PORT: u16 = 7331;

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where to listen.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Interval of `tick` frames on every WebSocket, in milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Client authentication; absent means none (loopback only).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Registered workflows by key.
    #[serde(default)]
    pub workflows: BTreeMap<String, WorkflowConfig>,
}

fn default_heartbeat_ms() -> u64 {
    15_000
}

/// Listening address: TCP host and port, or a Unix socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Interface (default `127.0.0.1`).
    #[serde(default = "default_host")]
    pub host: String,
    /// Port; 0 picks a free one (printed on stdout).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Listen on this Unix socket instead of TCP.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Allow a non-loopback bind without auth and accept any Host/Origin.
    #[serde(default)]
    pub insecure: bool,
}

fn default_host() -> String {
    "127.0.0.1".into()
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            host: default_host(),
            port: DEFAULT_PORT,
            socket: None,
            insecure: false,
        }
    }
}

/// Limits (Smithers' defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest HTTP body (RPC, webhooks).
    #[serde(default = "mib")]
    pub max_body_bytes: usize,
    /// Largest WebSocket message from a client.
    #[serde(default = "mib")]
    pub max_payload_bytes: usize,
    /// Most authenticated WebSocket connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How many of a run's latest events `streamRunEvents` replays; an older
    /// `afterSeq` gets `run.gap_resync` first.
    #[serde(default = "default_event_window")]
    pub event_window: u64,
    /// Frames queued for one WebSocket before a slow consumer's stream is
    /// dropped (`run.error` `BackpressureDisconnect`).
    #[serde(default = "default_queue_frames")]
    pub max_queued_frames: usize,
    /// How long a full queue may stay full before the consumer is deemed
    /// too slow, in milliseconds.
    #[serde(default = "default_slow_consumer_ms")]
    pub slow_consumer_ms: u64,
    /// Time a new WebSocket has to send a successful `connect`.
    #[serde(default = "default_auth_deadline_ms")]
    pub auth_deadline_ms: u64,
    /// Authenticated WebSockets of one token (or user); beyond it `connect`
    /// is refused with `CONNECTION_LIMIT`.
    #[serde(default = "default_max_connections_per_token")]
    pub max_connections_per_token: usize,
    /// Every open connection (HTTP, WebSockets); must exceed `max_connections`.
    #[serde(default = "default_max_open_connections")]
    pub max_open_connections: usize,
    /// A connection with no request in flight this long is closed, in
    /// milliseconds (WebSockets excepted: they have `auth_deadline_ms`).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_max_connections_per_token() -> usize {
    100
}

fn default_max_open_connections() -> usize {
    4096
}

fn default_idle_timeout_ms() -> u64 {
    30_000
}

fn default_slow_consumer_ms() -> u64 {
    5_000
}

fn mib() -> usize {
    1024 * 1024
}

fn default_max_connections() -> usize {
    1000
}

fn default_event_window() -> u64 {
    10_000
}

fn default_queue_frames() -> usize {
    1000
}

fn default_auth_deadline_ms() -> u64 {
    10_000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: mib(),
            max_payload_bytes: mib(),
            max_connections: default_max_connections(),
            event_window: default_event_window(),
            max_queued_frames: default_queue_frames(),
            slow_consumer_ms: default_slow_consumer_ms(),
            auth_deadline_ms: default_auth_deadline_ms(),
            max_connections_per_token: default_max_connections_per_token(),
            max_open_connections: default_max_open_connections(),
            idle_timeout_ms: default_idle_timeout_ms(),
        }
    }
}

/// Authentication, by mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthConfig {
    /// Static bearer tokens, each with a role and scopes.
    Token {
        /// Token text → grant.
        tokens: BTreeMap<String, TokenGrant>,
        /// Browser origins allowed to call (empty: any).
        #[serde(default)]
        allowed_origins: Vec<String>,
    },
    /// HS256 JSON Web Tokens.
    Jwt(JwtConfig),
    /// A reverse proxy that authenticated the user and says so in headers.
    TrustedProxy {
        /// Headers carrying user id, scopes and role (in that order).
        #[serde(default = "default_trusted_headers")]
        trusted_headers: Vec<String>,
        /// Role when the role header is absent.
        #[serde(default)]
        default_role: Option<String>,
        /// Scopes when the scopes header is absent (absent too: refused).
        #[serde(default)]
        default_scopes: Option<Vec<String>>,
        /// Browser origins allowed to call (empty: any).
        #[serde(default)]
        allowed_origins: Vec<String>,
    },
}

fn default_trusted_headers() -> Vec<String> {
    vec![
        "x-user-id".into(),
        "x-user-scopes".into(),
        "x-user-role".into(),
    ]
}

impl AuthConfig {
    /// The mode's name, as the wire spells it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::Jwt(_) => "jwt",
            Self::TrustedProxy { .. } => "trusted-proxy",
        }
    }

    /// Browser origins allowed to call (empty: any).
    pub fn allowed_origins(&self) -> &[String] {
        match self {
            Self::Token {
                allowed_origins, ..
            }
            | Self::TrustedProxy {
                allowed_origins, ..
            } => allowed_origins,
            Self::Jwt(jwt) => &jwt.allowed_origins,
        }
    }
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
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` (a string or one element of an array).
    #[serde(default)]
    pub audience: Option<String>,
    /// Tolerance on `exp` and `nbf`, in milliseconds.
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
    /// Browser origins allowed to call (empty: any).
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

/// One registered workflow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Component (`.wasm`) or guest crate directory, under the root dir.
    pub path: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description for listings.
    #[serde(default)]
    pub description: Option<String>,
    /// Hidden from default listings.
    #[serde(default)]
    pub system: bool,
    /// Cron pattern (5 fields, or 6 with seconds first), evaluated in UTC.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Signed webhook that starts runs or delivers signals.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// A workflow's webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// HMAC-SHA256 secret (prefer `secret_env`).
    #[serde(default)]
    pub secret: Option<String>,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Header carrying the signature.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Prefix before the hex digest.
    #[serde(default = "default_signature_prefix")]
    pub signature_prefix: String,
    /// Deliver a signal to the runs waiting for it.
    #[serde(default)]
    pub signal: Option<WebhookSignal>,
    /// Start a run when no signal was delivered.
    #[serde(default)]
    pub run: Option<WebhookRun>,
    /// The secret, resolved at load time.
    #[serde(skip)]
    pub resolved_secret: String,
}

fn default_signature_header() -> String {
    "x-hub-signature-256".into()
}

fn default_signature_prefix() -> String {
    "sha256=".into()
}

impl WebhookConfig {
    /// Runs are started unless `run.enabled = false`.
    pub fn runs_enabled(&self) -> bool {
        self.run.as_ref().is_none_or(|r| r.enabled)
    }
}

/// Signal delivery of a webhook; paths are dotted (`a.b.0.c`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSignal {
    /// Signal name.
    pub name: String,
    /// Path of the correlation id in the payload.
    #[serde(default)]
    pub correlation_id_path: Option<String>,
    /// Path of a run id: only that run gets the signal.
    #[serde(default)]
    pub run_id_path: Option<String>,
    /// Path of the signal payload (default: the whole body).
    #[serde(default)]
    pub payload_path: Option<String>,
}

/// Run creation of a webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRun {
    /// Start runs at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Path of the run input in the payload (default: the whole body).
    #[serde(default)]
    pub input_path: Option<String>,
}

fn yes() -> bool {
    true
}

impl GatewayConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "gateway config".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        if self.heartbeat_ms == 0 {
            return Err(ConfigError::Invalid("heartbeat_ms must be positive".into()));
        }
        let limits = &self.limits;
        if limits.max_body_bytes == 0
            || limits.max_payload_bytes == 0
            || limits.max_connections == 0
            || limits.event_window == 0
            || limits.max_queued_frames == 0
            || limits.slow_consumer_ms == 0
            || limits.auth_deadline_ms == 0
            || limits.max_connections_per_token == 0
            || limits.idle_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "every [limits] value must be positive".into(),
            ));
        }
        if limits.max_open_connections <= limits.max_connections {
            return Err(ConfigError::Invalid(
                "limits.max_open_connections must exceed limits.max_connections, \
                 or WebSockets could take every connection (and /health with them)"
                    .into(),
            ));
        }
        if self.auth.is_none()
            && self.listen.socket.is_none()
            && !self.listen.insecure
            && !is_loopback_host(bind_host(&self.listen.host))
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without [auth]: anyone who can reach it could run workflows. \
                 Configure [auth], bind 127.0.0.1, or set listen.insecure = true",
                self.listen.host
            )));
        }
        match &mut self.auth {
            Some(AuthConfig::Jwt(jwt)) => {
                jwt.resolved_secret = resolve_secret("auth", &jwt.secret, &jwt.secret_env)?;
            }
            Some(AuthConfig::Token { tokens, .. }) if tokens.is_empty() => {
                return Err(ConfigError::Invalid(
                    "auth mode \"token\" needs at least one [auth.tokens] entry".into(),
                ));
            }
            _ => {}
        }
        for (key, workflow) in &mut self.workflows {
            if key.is_empty() || key.contains(['/', '?', '#']) || key.chars().any(char::is_control)
            {
                return Err(ConfigError::Invalid(format!(
                    "workflow key {key:?} must be non-empty and contain no '/', '?', '#' or control characters"
                )));
            }
            if let Some(pattern) = &workflow.schedule {
                super::cron::parse_pattern(pattern)
                    .map_err(|e| ConfigError::Invalid(format!("workflows.{key}.schedule: {e}")))?;
            }
            if let Some(webhook) = &mut workflow.webhook {
                webhook.resolved_secret = resolve_secret(
                    &format!("workflows.{key}.webhook"),
                    &webhook.secret,
                    &webhook.secret_env,
                )?;
                if webhook.signal.is_none() && !webhook.runs_enabled() {
                    return Err(ConfigError::Invalid(format!(
                        "workflows.{key}.webhook must deliver a signal or start runs"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `[v6]` → `v6`.
pub fn bind_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn resolve_secret(
    section: &str,
    inline: &Option<String>,
    env: &Option<String>,
) -> Result<String, ConfigError> {
    let secret = match (inline, env) {
        (Some(secret), None) => secret.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            ConfigError::Invalid(format!(
                "{section}.secret_env names {var}, which is not set"
            ))
        })?,
        _ => {
            return Err(ConfigError::Invalid(format!(
                "{section} needs exactly one of secret or secret_env"
            )));
        }
    };
    if secret.trim().is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{section}: the secret must not be empty"
        )));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_takes_smithers_defaults() {
        let config = GatewayConfig::parse("[workflows.hello]\npath = \"hello.wasm\"\n").unwrap();
        assert_eq!(config.listen.port, 7331);
        assert_eq!(config.heartbeat_ms, 15_000);
        assert_eq!(config.limits.event_window, 10_000);
        assert!(config.auth.is_none());
        assert_eq!(config.workflows["hello"].path, "hello.wasm");
    }

    #[test]
    fn connection_limits_that_would_lock_clients_out_are_refused() {
        for bad in [
            "[limits]\nmax_open_connections = 1000\n",
            "[limits]\nmax_connections = 10\nmax_open_connections = 5\n",
            "[limits]\nidle_timeout_ms = 0\n",
            "[limits]\nmax_connections_per_token = 0\n",
        ] {
            assert!(GatewayConfig::parse(bad).is_err(), "{bad}");
        }
        let limits = GatewayConfig::parse("").unwrap().limits;
        assert_eq!(limits.max_open_connections, 4096);
        assert_eq!(limits.idle_timeout_ms, 30_000);
    }

    #[test]
    fn unsafe_or_broken_files_are_refused() {
        for bad in [
            "[listen]\nhost = \"0.0.0.0\"\n",
            "[auth]\nmode = \"token\"\ntokens = {}\n",
            "[auth]\nmode = \"jwt\"\n",
            "[workflows.a]\npath = \"a.wasm\"\nschedule = \"not a cron\"\n",
            "[workflows.\"a/b\"]\npath = \"a.wasm\"\n",
            "[workflows.a]\npath = \"a.wasm\"\ntypo = 1\n",
            "[workflows.a]\npath = \"a.wasm\"\n[workflows.a.webhook]\nsecret = \"s\"\nrun = { enabled = false }\n",
        ] {
            assert!(GatewayConfig::parse(bad).is_err(), "{bad}");
        }
        let open = GatewayConfig::parse("[listen]\nhost = \"0.0.0.0\"\ninsecure = true\n");
        assert!(open.is_ok());
    }

    #[test]
    fn the_documented_example_parses() {
        // Schema only: its secrets come from environment variables.
        let config: GatewayConfig =
            toml::from_str(include_str!("../../../examples/gateway.toml")).unwrap();
        assert_eq!(config.workflows.len(), 2);
        for workflow in config.workflows.values() {
            let pattern = workflow.schedule.as_deref().unwrap();
            super::super::cron::parse_pattern(pattern).unwrap();
        }
        assert_eq!(config.auth.unwrap().mode(), "token");
    }

    #[test]
    fn auth_modes_parse_with_their_fields() {
        let config = GatewayConfig::parse(
            r#"
            [auth]
            mode = "token"
            [auth.tokens.t1]
            role = "operator"
            scopes = ["*"]
            expires_at_ms = 5
            "#,
        )
        .unwrap();
        assert_eq!(config.auth.unwrap().mode(), "token");
        let config =
            GatewayConfig::parse("[auth]\nmode = \"jwt\"\nsecret = \"k\"\nissuer = \"me\"\n")
                .unwrap();
        let Some(AuthConfig::Jwt(jwt)) = config.auth else {
            panic!()
        };
        assert_eq!(jwt.resolved_secret, "k");
        assert_eq!(jwt.clock_skew_ms, 60_000);
        let config = GatewayConfig::parse("[auth]\nmode = \"trusted-proxy\"\n").unwrap();
        assert_eq!(config.auth.unwrap().mode(), "trusted-proxy");
    }
}
