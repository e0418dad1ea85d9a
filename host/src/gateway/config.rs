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

use super::auth_config::resolve_secret;
pub use super::auth_config::{AuthConfig, JwtConfig, TokenGrant, TrustedProxyConfig};
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
    /// The outbound HTTP policy of workflows (`[http]`), read and checked by
    /// the host's command line with its flags; the gateway only accepts it.
    #[serde(default)]
    pub http: Option<toml::Table>,
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
    /// Serve HTTPS with this certificate chain (PEM); needs `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl ListenConfig {
    /// The TLS files, when both are set.
    pub fn tls(&self) -> Option<crate::http::tls::TlsFiles> {
        crate::http::tls::TlsFiles::pair(self.tls_cert.as_ref(), self.tls_key.as_ref())
    }
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
            tls_cert: None,
            tls_key: None,
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
    /// What the signature covers (default: delivery id, timestamp and body).
    #[serde(default)]
    pub scheme: WebhookScheme,
    /// Header carrying the delivery id (`timestamped` scheme).
    #[serde(default = "default_delivery_header")]
    pub delivery_header: String,
    /// Header carrying the Unix time of the delivery in seconds
    /// (`timestamped` scheme).
    #[serde(default = "default_timestamp_header")]
    pub timestamp_header: String,
    /// How far a delivery's timestamp may be from now, and how long its id
    /// (or, for the `body` scheme, its body) is remembered, in seconds.
    #[serde(default = "default_replay_window_secs")]
    pub replay_window_secs: u64,
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

fn default_delivery_header() -> String {
    "x-smithers-delivery".into()
}

fn default_timestamp_header() -> String {
    "x-smithers-timestamp".into()
}

fn default_replay_window_secs() -> u64 {
    300
}

/// Longest accepted `replay_window_secs` (one day).
pub const MAX_REPLAY_WINDOW_SECS: u64 = 24 * 60 * 60;

/// What a webhook's HMAC-SHA256 signature covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookScheme {
    /// `<delivery id>.<timestamp>.<body>`: a replay is refused by its
    /// timestamp once outside the window, and by its id inside it.
    #[default]
    Timestamped,
    /// The raw body only, as Smithers' gateway and GitHub sign it: replays
    /// of the same body are refused for `replay_window_secs`, but nothing
    /// dates a delivery, so a captured one can be replayed after that.
    Body,
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
        if self.listen.tls_cert.is_some() != self.listen.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "listen.tls_cert and listen.tls_key go together".into(),
            ));
        }
        if self.listen.socket.is_some() && self.listen.tls_cert.is_some() {
            return Err(ConfigError::Invalid(
                "listen.tls_cert applies to TCP; a Unix socket is served without TLS".into(),
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
        if let Some(auth) = &mut self.auth {
            auth.validate()?;
        }
        if let Some(AuthConfig::TrustedProxy(proxy)) = &self.auth {
            let unix = self.listen.socket.is_some();
            if !proxy.proxies.can_match(unix) {
                return Err(ConfigError::Invalid(format!(
                    "auth.trusted_proxies would never match: the gateway listens on a {} and no \
                     entry names {}",
                    if unix { "Unix socket" } else { "TCP port" },
                    if unix {
                        "\"unix\""
                    } else {
                        "an IP address or range"
                    },
                )));
            }
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
                if !(1..=MAX_REPLAY_WINDOW_SECS).contains(&webhook.replay_window_secs) {
                    return Err(ConfigError::Invalid(format!(
                        "workflows.{key}.webhook.replay_window_secs must be between 1 and {MAX_REPLAY_WINDOW_SECS}"
                    )));
                }
                for name in [
                    &webhook.signature_header,
                    &webhook.delivery_header,
                    &webhook.timestamp_header,
                ] {
                    if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(ConfigError::Invalid(format!(
                            "workflows.{key}.webhook: {name:?} is not a header name"
                        )));
                    }
                }
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
        let config = GatewayConfig::parse(&format!(
            "[auth]\nmode = \"jwt\"\nsecret = \"{SECRET}\"\nissuer = \"me\"\naudience = \"gw\"\n"
        ))
        .unwrap();
        let Some(AuthConfig::Jwt(jwt)) = config.auth else {
            panic!()
        };
        assert_eq!(jwt.resolved_secret, SECRET);
        assert_eq!(jwt.clock_skew_ms, 60_000);
        let config = GatewayConfig::parse(
            "[auth]\nmode = \"trusted-proxy\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        assert_eq!(config.auth.unwrap().mode(), "trusted-proxy");
        let config = GatewayConfig::parse(
            "[workflows.a]\npath = \"a.wasm\"\n[workflows.a.webhook]\nsecret = \"s\"\n",
        )
        .unwrap();
        let webhook = config.workflows["a"].webhook.clone().unwrap();
        assert_eq!(webhook.scheme, WebhookScheme::Timestamped);
        assert_eq!(webhook.replay_window_secs, 300);
        assert_eq!(webhook.delivery_header, "x-smithers-delivery");
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn unsafe_auth_sections_are_refused_with_the_reason() {
        let jwt = |extra: &str| format!("[auth]\nmode = \"jwt\"\n{extra}\n");
        for (bad, why) in [
            (jwt("secret = \"short\"\nissuer = \"i\"\naudience = \"a\""), "at least 32"),
            (jwt(&format!("secret = \"{SECRET}\"\naudience = \"a\"")), "auth.issuer is required"),
            (jwt(&format!("secret = \"{SECRET}\"\nissuer = \"i\"")), "auth.audience is required"),
            (
                jwt(&format!("secret = \"{SECRET}\"\nissuer = \"i\"\naudience = \"a\"\nclock_skew_ms = 3600000")),
                "clock_skew_ms",
            ),
            ("[auth]\nmode = \"trusted-proxy\"\n".to_string(), "needs trusted_proxies"),
            (
                "[listen]\nhost = \"0.0.0.0\"\n[auth]\nmode = \"trusted-proxy\"\n".to_string(),
                "needs trusted_proxies",
            ),
            (
                "[auth]\nmode = \"trusted-proxy\"\ntrusted_proxies = [\"0.0.0.0/0\"]\n".to_string(),
                "trusts every address",
            ),
            (
                "[auth]\nmode = \"trusted-proxy\"\ntrusted_proxies = [\"unix\"]\n".to_string(),
                "never match",
            ),
            (
                "[listen]\nsocket = \"/tmp/gw.sock\"\n[auth]\nmode = \"trusted-proxy\"\ntrusted_proxies = [\"127.0.0.1\"]\n".to_string(),
                "never match",
            ),
            (
                "[auth]\nmode = \"token\"\nallowed_origins = [\"https://ok.example/\"]\n[auth.tokens.t]\nrole = \"r\"\nscopes = []\n".to_string(),
                "is not an origin",
            ),
            (
                "[workflows.a]\npath = \"a.wasm\"\n[workflows.a.webhook]\nsecret = \"s\"\nreplay_window_secs = 0\n".to_string(),
                "replay_window_secs",
            ),
        ] {
            let error = GatewayConfig::parse(&bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
