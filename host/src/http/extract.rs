//! Request input: the one JSON body extractor and the query-parameter parsers,
//! so that every malformed input comes back in our envelope with Smithers'
//! codes and messages.
//!
//! The body extractor enforces, in this order: the declared size
//! (`Content-Length` over the limit is refused before reading), the streamed
//! size, a read deadline, the nesting depth (checked by scanning bytes, so a
//! hostile `[[[[…` never recurses), and finally JSON syntax.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::error::{ApiError, ErrorCode};

/// Deepest accepted JSON nesting (a top-level value has depth 1).
pub const MAX_JSON_DEPTH: usize = 32;

/// How long a client may take to send a body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Body limits of a router's state.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest accepted body, in bytes.
    pub max_bytes: usize,
}

/// A request body parsed as JSON; an empty body is `{}`.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Value);

impl<S> FromRequest<S> for JsonBody
where
    S: Send + Sync,
    BodyLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limits = BodyLimits::from_ref(state);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > limits.max_bytes as u64) {
            return Err(too_large(limits.max_bytes));
        }
        let bytes = tokio::time::timeout(
            BODY_READ_TIMEOUT,
            read_limited(req.into_body(), limits.max_bytes),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::RequestTimeout,
                "Timed out reading the request body",
            )
        })??;
        parse_json(&bytes).map(JsonBody)
    }
}

async fn read_limited(body: Body, max: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::invalid(format!("cannot read the request body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("Request body exceeds {max} bytes"),
    )
    .with_details(json!({ "maxBytes": max }))
}

/// Parses a body: empty → `{}`, too deep → `INVALID_REQUEST`, broken → `INVALID_JSON`.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    if exceeds_depth(bytes, MAX_JSON_DEPTH) {
        return Err(ApiError::invalid(format!(
            "request body exceeds the maximum JSON depth of {MAX_JSON_DEPTH}"
        ))
        .with_details(json!({ "maxDepth": MAX_JSON_DEPTH })));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("Invalid JSON: {e}")))
}

/// True when some value in `bytes` (read as JSON) sits deeper than `max`,
/// counting the top-level value as depth 1 and each nesting as +1. Scans
/// bytes without recursion; malformed input is left for the parser.
pub fn exceeds_depth(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' => {}
            // A string or scalar inside `depth` containers is a value at depth + 1.
            other => {
                in_string = other == b'"';
                if depth + 1 > max {
                    return true;
                }
            }
        }
    }
    false
}

/// Path parameters. A segment that does not decode (invalid UTF-8 after
/// percent-decoding) is a 400 `INVALID_REQUEST` in our envelope, not axum's
/// plain-text rejection.
#[derive(Debug, Clone)]
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// Query parameters in order, percent-decoded; the first occurrence of a name
/// wins (as `URLSearchParams.get`).
#[derive(Debug, Clone, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))
    }
}

/// JavaScript's `Number(v)` for query values: trimmed, empty is 0.
fn js_number(raw: &str) -> Option<f64> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Some(0.0);
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.contains("inf") || lower.contains("nan") {
        return None;
    }
    trimmed.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Smithers' `parsePositiveInt`: absent → `fallback`; not a number or ≤ 0 →
/// 400 `Expected a positive integer, got "<v>"`; else floored.
pub fn positive_int(raw: Option<&str>, fallback: u32) -> Result<u32, ApiError> {
    let Some(raw) = raw else { return Ok(fallback) };
    match js_number(raw) {
        Some(n) if n > 0.0 && n.floor() >= 1.0 => Ok(n.floor().min(f64::from(u32::MAX)) as u32),
        _ => Err(ApiError::invalid(format!(
            "Expected a positive integer, got \"{raw}\""
        ))),
    }
}

/// Smithers' `parseOptionalInt`: absent → `fallback`; not a number → 400
/// `Expected a number, got "<v>"`; else floored (empty is 0).
pub fn optional_int(raw: Option<&str>, fallback: i64) -> Result<i64, ApiError> {
    let Some(raw) = raw else { return Ok(fallback) };
    match js_number(raw) {
        Some(n) => Ok(n.floor().clamp(i64::MIN as f64, i64::MAX as f64) as i64),
        None => Err(ApiError::invalid(format!(
            "Expected a number, got \"{raw}\""
        ))),
    }
}

/// JavaScript truthiness of a JSON value.
pub fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// A string field, or `None` when absent or not a string (Smithers ignores
/// non-string values silently).
pub fn opt_string(body: &Value, name: &str) -> Option<String> {
    body.get(name).and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}1{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn depth_counts_the_top_level_value_as_one() {
        assert!(!exceeds_depth(b"1", 1));
        assert!(!exceeds_depth(b"[]", 1));
        assert!(exceeds_depth(b"[1]", 1));
        assert!(!exceeds_depth(nested(31).as_bytes(), 32));
        assert!(exceeds_depth(nested(32).as_bytes(), 32));
        assert!(!exceeds_depth(br#"{"a":{"b":"[[[[[[["}}"#, 3));
        assert!(!exceeds_depth(br#"["\"[[[[["]"#, 2));
    }

    #[test]
    fn a_hundred_thousand_brackets_are_refused_without_recursion() {
        let body = "[".repeat(100_000);
        let err = parse_json(body.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert_eq!(err.details, Some(json!({ "maxDepth": 32 })));
    }

    #[test]
    fn bodies_parse_like_smithers() {
        assert_eq!(parse_json(b"").unwrap(), json!({}));
        assert_eq!(parse_json(b"{").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(
            parse_json(b"\"\xff\"").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(parse_json(b"[1]").unwrap(), json!([1]));
    }

    #[test]
    fn query_numbers_parse_like_smithers() {
        assert_eq!(positive_int(None, 50).unwrap(), 50);
        assert_eq!(positive_int(Some("1.7"), 50).unwrap(), 1);
        for bad in ["0", "", "abc", "-3", "0.5", "Infinity"] {
            let err = positive_int(Some(bad), 50).unwrap_err();
            assert_eq!(
                err.message,
                format!("Expected a positive integer, got \"{bad}\"")
            );
        }
        assert_eq!(optional_int(Some(""), -1).unwrap(), 0);
        assert_eq!(optional_int(Some("-4"), -1).unwrap(), -4);
        assert_eq!(optional_int(Some("7.9"), -1).unwrap(), 7);
        assert_eq!(
            optional_int(Some("abc"), -1).unwrap_err().message,
            "Expected a number, got \"abc\""
        );
    }

    #[test]
    fn truthiness_is_javascript_truthiness() {
        assert!(truthy(Some(&json!(true))));
        assert!(truthy(Some(&json!("yes"))));
        assert!(truthy(Some(&json!(1))));
        assert!(!truthy(Some(&json!(0))));
        assert!(!truthy(Some(&json!(""))));
        assert!(!truthy(None));
    }
}
