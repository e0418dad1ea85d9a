//! What can go wrong talking to a server. A refusal by the server keeps its
//! envelope (`{"error":{"code","message","details?"}}`) and HTTP status, so
//! callers branch on [`Error::code`] rather than on message text.

use serde::Deserialize;
use serde_json::Value;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with its error envelope.
    #[error("{code}: {message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Envelope code (`NOT_FOUND`, `RUN_NOT_ACTIVE`, `NODE_NOT_WAITING`...).
        code: String,
        /// Envelope message.
        message: String,
        /// Envelope details, when present.
        details: Option<Value>,
    },
    /// A non-2xx answer without an envelope (a proxy, a wrong URL).
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// What was requested.
        url: String,
        /// The start of the body.
        body: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach {url}: {}", causes(source))]
    Transport {
        /// What was requested.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx answer whose body is not what the API promises.
    #[error("unexpected answer from {url}: {message}")]
    Decode {
        /// What was requested.
        url: String,
        /// Why it could not be read.
        message: String,
    },
    /// The base URL or an argument cannot form a request.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The event stream could not be resumed within the reconnect policy.
    #[error("event stream of run {run_id} lost after {attempts} reconnect attempts: {last}")]
    StreamLost {
        /// The run.
        run_id: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: Box<Error>,
    },
}

/// An error and its causes, `a: b: c` (reqwest's own message alone says
/// only "error sending request").
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The envelope of an error answer.
#[derive(Deserialize)]
struct Envelope {
    error: EnvelopeBody,
}

#[derive(Deserialize)]
struct EnvelopeBody {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Option<Value>,
}

impl Error {
    /// The envelope code, for an answer that had one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            Self::StreamLost { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The HTTP status, for an answer that arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Http { status, .. } => Some(*status),
            Self::StreamLost { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Retrying the same request later may succeed: the server is
    /// unreachable, restarting (503) or overloaded (429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Decode { .. } => true,
            Self::Api { status, .. } | Self::Http { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            Self::Invalid(_) | Self::StreamLost { .. } => false,
        }
    }

    /// The error for a non-2xx answer with body `body`.
    pub(crate) fn from_answer(status: u16, url: &str, body: &str) -> Self {
        match serde_json::from_str::<Envelope>(body) {
            Ok(Envelope { error }) => Self::Api {
                status,
                code: error.code,
                message: error.message,
                details: error.details,
            },
            Err(_) => Self::Http {
                status,
                url: url.to_string(),
                body: body.chars().take(200).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_become_api_errors_with_their_code() {
        let e = Error::from_answer(
            409,
            "u",
            r#"{"error":{"code":"RUN_NOT_ACTIVE","message":"Run is not currently active","details":{"status":"finished"}}}"#,
        );
        assert_eq!(e.code(), Some("RUN_NOT_ACTIVE"));
        assert_eq!(e.status(), Some(409));
        assert!(!e.is_transient());
        assert!(e.to_string().contains("Run is not currently active"));
    }

    #[test]
    fn other_bodies_are_plain_http_errors() {
        let e = Error::from_answer(502, "http://x/v1/runs", "<html>bad gateway</html>");
        assert_eq!(e.code(), None);
        assert_eq!(e.status(), Some(502));
        assert!(e.is_transient());
    }
}
