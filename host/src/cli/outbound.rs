//! The operator's outbound HTTP policy, from flags and from the `[http]`
//! table of the host's config file (`--config smithers.toml`).
//!
//! Only the operator's own inputs are read here — never a file of the root
//! dir, which a workflow can write. Flags and the file add up: the allowed
//! patterns are both lists, and a flag given for the timeout or the size
//! cap wins over the file. Anything unreadable or unknown stops the host
//! before it opens, with the reason.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::limits::parse_duration;
use crate::app::resolves_inside;
use crate::runtime::http::policy::{DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT};
use crate::runtime::http::{HttpPolicy, Pattern, SecretSpec, Secrets};

/// Largest config file read (it is the operator's, but still bounded).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Outbound HTTP of workflows (see docs/security.md, "Outbound HTTP").
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Allow workflows' HTTP requests to this destination (repeatable):
    /// `host`, `host:port`, `*.example.com`, `http://127.0.0.1:8080`,
    /// optionally after methods (`GET api.example.com`, `GET,POST x.com`).
    /// HTTPS on 443 unless the pattern says otherwise. Nothing is allowed
    /// by default; a loopback or private address only through a pattern
    /// naming that IP.
    #[arg(long = "http-allow", value_name = "PATTERN")]
    pub allow: Vec<String>,
    /// Deadline of one outbound request, from name lookup to the last byte
    /// of the response (default 30s).
    #[arg(long, value_parser = parse_duration)]
    pub http_timeout: Option<Duration>,
    /// Largest response body handed to a workflow (default 10485760); a
    /// larger response fails the request.
    #[arg(long)]
    pub max_http_response_bytes: Option<u64>,
    /// A secret for workflows' HTTP requests (repeatable):
    /// `NAME[=ENV_VAR][@PATTERN..][+body]`. The value is read from the
    /// host's environment (`ENV_VAR`, default `NAME`); a task sees only a
    /// placeholder (env var `NAME`, `tools::secret`), which the host replaces
    /// by the value in headers (and with `+body` in the body) of requests to
    /// the bound destinations (any allowed one when unbound).
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<SecretSpec>,
}

/// The `[http]` table of the config file (absent: empty).
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpTable {
    #[serde(default)]
    allow: Vec<String>,
    timeout: Option<String>,
    max_response_bytes: Option<u64>,
}

/// Reads the config file's `[http]` table. `other_tables` says whether the
/// file may hold other top-level keys (the gateway's file does); otherwise
/// any other key is a mistake worth stopping for. A policy in a file inside
/// `root_dir` is refused: workflows can write there, and would choose their
/// own destinations at the host's next start.
pub(super) fn read_config(
    path: &Path,
    other_tables: bool,
    root_dir: &Path,
) -> Result<HttpTable, String> {
    let shown = path.display();
    // The gateway's file also holds its tokens, workflows and schedules: a
    // workflow able to write it would grant itself all of them.
    if other_tables && resolves_inside(path, root_dir) {
        return Err(format!(
            "the gateway's config file {shown} is inside the root dir {}, which workflows can \
             write: its [auth] tokens, workflows and [http] policy would be theirs; keep the \
             file outside the project",
            root_dir.display()
        ));
    }
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the config file {shown}: {e}"))?
        .len();
    if size > MAX_CONFIG_BYTES {
        return Err(format!("the config file {shown} is larger than 1 MiB"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {shown}: {e}"))?;
    let table = parse_config(&text, other_tables).map_err(|e| format!("{shown}: {e}"))?;
    if table != HttpTable::default() && resolves_inside(path, root_dir) {
        return Err(format!(
            "the config file {shown} is inside the root dir {}, which workflows can write: \
             its [http] policy would be theirs; keep the file outside the project",
            root_dir.display()
        ));
    }
    Ok(table)
}

fn parse_config(text: &str, other_tables: bool) -> Result<HttpTable, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    if !other_tables && let Some(key) = table.keys().find(|k| *k != "http") {
        return Err(format!(
            "unknown key `{key}`: the host's config file holds one `[http]` table"
        ));
    }
    let Some(http) = table.remove("http") else {
        return Ok(HttpTable::default());
    };
    let http: HttpTable = http
        .try_into()
        .map_err(|e: toml::de::Error| format!("[http]: {}", e.message()))?;
    Ok(http)
}

impl HttpArgs {
    /// The secrets, their values read from the host's environment now.
    pub(super) fn secrets(&self) -> Result<Arc<Secrets>, String> {
        let secrets = Secrets::resolve(&self.secrets, |var| std::env::var(var).ok())?;
        Ok(Arc::new(secrets))
    }

    /// The policy: the file's table (if any) plus the flags.
    pub(super) fn policy(&self, file: HttpTable) -> Result<Arc<HttpPolicy>, String> {
        let allow = file
            .allow
            .iter()
            .chain(&self.allow)
            .map(|p| p.parse::<Pattern>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let file_timeout = file
            .timeout
            .as_deref()
            .map(|t| parse_duration(t).map_err(|e| format!("[http] timeout {t:?}: {e}")))
            .transpose()?;
        let max_response_bytes = self
            .max_http_response_bytes
            .or(file.max_response_bytes)
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes == 0 {
            return Err("the HTTP response cap must be greater than zero".into());
        }
        let policy = HttpPolicy {
            allow,
            timeout: self
                .http_timeout
                .or(file_timeout)
                .unwrap_or(DEFAULT_TIMEOUT),
            max_response_bytes,
        };
        if policy.allow.is_empty() {
            tracing::debug!("outbound HTTP: nothing allowed");
        } else {
            let shown: Vec<String> = policy.allow.iter().map(ToString::to_string).collect();
            tracing::info!(allow = ?shown, "outbound HTTP allowed for workflows");
        }
        Ok(Arc::new(policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(allow: &[&str]) -> HttpArgs {
        HttpArgs {
            allow: allow.iter().map(ToString::to_string).collect(),
            http_timeout: None,
            max_http_response_bytes: None,
            secrets: Vec::new(),
        }
    }

    #[test]
    fn flags_and_the_file_add_up_and_flags_win_for_limits() {
        let file = parse_config(
            "[http]\nallow = [\"api.example.com\"]\ntimeout = \"5s\"\nmax_response_bytes = 100\n",
            false,
        )
        .unwrap();
        let mut a = args(&["GET http://127.0.0.1:9"]);
        a.max_http_response_bytes = Some(7);
        let policy = a.policy(file).unwrap();
        assert_eq!(policy.allow.len(), 2);
        assert_eq!(policy.timeout, Duration::from_secs(5));
        assert_eq!(policy.max_response_bytes, 7);
    }

    #[test]
    fn no_flags_and_no_file_allow_nothing() {
        let policy = args(&[]).policy(HttpTable::default()).unwrap();
        assert!(policy.allow.is_empty());
        assert_eq!(policy.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn mistakes_in_the_file_or_flags_are_refused_with_the_reason() {
        let unknown = parse_config("[htp]\nallow = []\n", false).unwrap_err();
        assert!(unknown.contains("unknown key `htp`"), "{unknown}");
        let field = parse_config("[http]\nallowed = []\n", false).unwrap_err();
        assert!(field.contains("allowed"), "{field}");
        assert!(parse_config("[listen]\nport = 1\n[http]\n", true).is_ok());
        let bad = args(&["ftp://x"]).policy(HttpTable::default()).unwrap_err();
        assert!(bad.contains("ftp://x"), "{bad}");
        let timeout = parse_config("[http]\ntimeout = \"soon\"\n", false).unwrap();
        assert!(args(&[]).policy(timeout).is_err());
    }
}
