//! Secrets the guest never sees.
//!
//! The operator names secrets (`--secret NAME`, `--secret NAME=ENV_VAR`,
//! optionally bound to destinations: `--secret KEY@api.example.com`, and
//! `+body` to allow them in request bodies). A task gets, for each, an
//! opaque placeholder — in its WASI environment under `NAME`, which the
//! SDK's `tools::secret` reads. The host puts the real value in place of the
//! placeholder only in requests it sends to a destination the secret is
//! bound to (headers always, the body only with `+body`), and puts the
//! placeholder back in place of the value in everything that returns to the
//! guest (response headers and body, bash output).
//!
//! What this module must never do: hand a real value to anything but the
//! outgoing request it was substituted into, or show it in a `Debug`,
//! `Display`, error or log line.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::connect::Target;
use super::policy::Pattern;

/// Longest secret value accepted.
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// One secret: its name, its real value, where it may go.
pub struct Secret {
    name: String,
    value: String,
    placeholder: String,
    /// Destinations it is substituted towards; empty: every allowed one.
    bound: Vec<Pattern>,
    in_body: bool,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("bound", &self.bound)
            .field("in_body", &self.in_body)
            .finish_non_exhaustive()
    }
}

/// What an operator wrote in `--secret`, before the value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// Name the guest asks for (and its environment variable).
    pub name: String,
    /// Host environment variable holding the value.
    pub env_var: String,
    /// Destinations it is bound to (empty: every allowed one).
    pub bound: Vec<Pattern>,
    /// May be substituted in request bodies too.
    pub in_body: bool,
}

impl FromStr for SecretSpec {
    type Err = String;

    /// `NAME[=ENV_VAR][@PATTERN[@PATTERN..]][+body]`.
    fn from_str(raw: &str) -> Result<Self, String> {
        let fail = |why: String| format!("invalid --secret {raw:?}: {why}");
        let (text, in_body) = match raw.strip_suffix("+body") {
            Some(text) => (text, true),
            None => (raw, false),
        };
        let mut parts = text.split('@');
        let head = parts.next().unwrap_or_default();
        let (name, env_var) = match head.split_once('=') {
            Some((name, env)) => (name, env),
            None => (head, head),
        };
        for (what, id) in [("name", name), ("environment variable", env_var)] {
            let ok = !id.is_empty()
                && !id.starts_with(|c: char| c.is_ascii_digit())
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(fail(format!(
                    "the {what} {id:?} must be [A-Za-z_][A-Za-z0-9_]*"
                )));
            }
        }
        let bound = parts
            .map(|p| {
                if p.contains(char::is_whitespace) {
                    return Err(fail("a binding names a destination, not methods".into()));
                }
                p.parse::<Pattern>().map_err(|e| fail(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SecretSpec {
            name: name.to_string(),
            env_var: env_var.to_string(),
            bound,
            in_body,
        })
    }
}

/// The operator's secrets. `Default` has none.
#[derive(Debug, Default)]
pub struct Secrets {
    secrets: Vec<Secret>,
}

/// A secret as `/health` shows it (never its value).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSummary {
    /// Name.
    pub name: String,
    /// Destinations (empty: every allowed one).
    pub bound_to: Vec<String>,
    /// Substituted in request bodies too.
    pub in_body: bool,
}

impl Secrets {
    /// Reads each secret's value with `lookup` (the host's environment) and
    /// makes its placeholder (random, per host process).
    pub fn resolve(
        specs: &[SecretSpec],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut secrets = Vec::new();
        for spec in specs {
            if secrets.iter().any(|s: &Secret| s.name == spec.name) {
                return Err(format!("--secret {} is given twice", spec.name));
            }
            let value = lookup(&spec.env_var).ok_or_else(|| {
                format!(
                    "--secret {}: the environment variable {} is not set",
                    spec.name, spec.env_var
                )
            })?;
            if value.is_empty() || value.len() > MAX_SECRET_BYTES {
                return Err(format!(
                    "--secret {}: the value of {} must hold 1 to {MAX_SECRET_BYTES} bytes",
                    spec.name, spec.env_var
                ));
            }
            let placeholder = format!(
                "smithers-secret-{}-{}",
                spec.name,
                uuid::Uuid::new_v4().simple()
            );
            secrets.push(Secret {
                name: spec.name.clone(),
                value,
                placeholder,
                bound: spec.bound.clone(),
                in_body: spec.in_body,
            });
        }
        Ok(Self { secrets })
    }

    /// `NAME=placeholder` pairs for a task's WASI environment.
    pub fn guest_env(&self) -> Vec<(String, String)> {
        self.secrets
            .iter()
            .map(|s| (s.name.clone(), s.placeholder.clone()))
            .collect()
    }

    /// What `/health` shows.
    pub fn summary(&self) -> Vec<SecretSummary> {
        self.secrets
            .iter()
            .map(|s| SecretSummary {
                name: s.name.clone(),
                bound_to: s.bound.iter().map(ToString::to_string).collect(),
                in_body: s.in_body,
            })
            .collect()
    }

    /// True when there is nothing to substitute or redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    fn towards<'a>(&'a self, target: &'a Target) -> impl Iterator<Item = &'a Secret> + 'a {
        self.secrets.iter().filter(move |s| {
            s.bound.is_empty()
                || s.bound
                    .iter()
                    .any(|p| p.matches_target(target.scheme, &target.host, target.port))
        })
    }

    /// Puts the real values of the secrets bound to `target` in place of
    /// their placeholders in `text`.
    pub(super) fn substitute_headers(&self, target: &Target, text: &[u8]) -> Option<Vec<u8>> {
        let pairs: Vec<(&str, &str)> = self
            .towards(target)
            .map(|s| (s.placeholder.as_str(), s.value.as_str()))
            .collect();
        replace_all(text, &pairs)
    }

    /// The same for a request body, with the secrets allowed there.
    pub(super) fn substitute_body(&self, target: &Target, body: &[u8]) -> Option<Vec<u8>> {
        let pairs: Vec<(&str, &str)> = self
            .towards(target)
            .filter(|s| s.in_body)
            .map(|s| (s.placeholder.as_str(), s.value.as_str()))
            .collect();
        replace_all(body, &pairs)
    }

    /// Whether a request to `target` may need its body rewritten.
    pub(super) fn body_bound_to(&self, target: &Target) -> bool {
        self.towards(target).any(|s| s.in_body)
    }

    /// Puts every secret's placeholder in place of its real value: for
    /// anything that goes back to the guest or into the run's record.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let pairs: Vec<(&str, &str)> = self
            .secrets
            .iter()
            .map(|s| (s.value.as_str(), s.placeholder.as_str()))
            .collect();
        replace_all(bytes, &pairs)
    }

    /// [`Secrets::redact_bytes`] for text.
    pub fn redact(&self, text: String) -> String {
        match self.redact_bytes(text.as_bytes()) {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => text,
        }
    }
}

/// Replaces every occurrence of each `from` by its `to`; `None` when
/// nothing occurred (the caller keeps its bytes).
fn replace_all(bytes: &[u8], pairs: &[(&str, &str)]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for (from, to) in pairs {
        let current = out.as_deref().unwrap_or(bytes);
        let from = from.as_bytes();
        if from.is_empty() || !contains(current, from) {
            continue;
        }
        let mut next = Vec::with_capacity(current.len());
        let mut rest = current;
        while let Some(at) = find(rest, from) {
            next.extend_from_slice(&rest[..at]);
            next.extend_from_slice(to.as_bytes());
            rest = &rest[at + from.len()..];
        }
        next.extend_from_slice(rest);
        out = Some(next);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::http::policy::Scheme;

    fn target(host: &str, port: u16) -> Target {
        Target {
            method: "GET".into(),
            scheme: Scheme::Https,
            host: host.into(),
            port,
        }
    }

    fn secrets(specs: &[&str]) -> Secrets {
        let specs: Vec<SecretSpec> = specs.iter().map(|s| s.parse().unwrap()).collect();
        Secrets::resolve(&specs, |var| Some(format!("value-of-{var}"))).unwrap()
    }

    #[test]
    fn specs_name_the_env_var_the_bindings_and_the_body() {
        let spec: SecretSpec = "KEY=OPENAI_API_KEY@api.openai.com@*.example.com+body"
            .parse()
            .unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.env_var.as_str()),
            ("KEY", "OPENAI_API_KEY")
        );
        assert_eq!(spec.bound.len(), 2);
        assert!(spec.in_body);
        let plain: SecretSpec = "TOKEN".parse().unwrap();
        assert_eq!(plain.env_var, "TOKEN");
        assert!(plain.bound.is_empty() && !plain.in_body);
        for bad in ["", "1X", "A-B", "A=", "A@", "A@GET x.com", "A@ftp://x"] {
            assert!(bad.parse::<SecretSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_substituted_only_towards_bound_destinations() {
        let s = secrets(&["KEY@api.example.com", "ANY"]);
        let env = s.guest_env();
        let (key, any) = (&env[0].1, &env[1].1);
        assert!(key.starts_with("smithers-secret-KEY-") && !key.contains("value-of"));
        let header = format!("Bearer {key} {any}");
        let to_api = s
            .substitute_headers(&target("api.example.com", 443), header.as_bytes())
            .unwrap();
        assert_eq!(to_api, b"Bearer value-of-KEY value-of-ANY");
        let elsewhere = s
            .substitute_headers(&target("evil.example.net", 443), header.as_bytes())
            .unwrap();
        assert_eq!(
            String::from_utf8(elsewhere).unwrap(),
            format!("Bearer {key} value-of-ANY")
        );
        assert!(
            s.substitute_body(&target("api.example.com", 443), header.as_bytes())
                .is_none()
        );
    }

    #[test]
    fn values_coming_back_are_replaced_by_placeholders() {
        let s = secrets(&["KEY"]);
        let placeholder = s.guest_env()[0].1.clone();
        assert_eq!(
            s.redact("echo value-of-KEY and value-of-KEY".into()),
            format!("echo {placeholder} and {placeholder}")
        );
        assert_eq!(s.redact("nothing".into()), "nothing");
        assert!(!format!("{s:?}").contains("value-of"));
    }

    #[test]
    fn a_missing_env_var_is_refused_by_name() {
        let spec: SecretSpec = "KEY=MISSING".parse().unwrap();
        let err = Secrets::resolve(&[spec], |_| None).unwrap_err();
        assert!(err.contains("MISSING") && err.contains("KEY"), "{err}");
    }
}
