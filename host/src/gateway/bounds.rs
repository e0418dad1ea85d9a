//! Smithers' bounds on what a gateway client may send, with Smithers' codes
//! and messages: every RPC body (`POST /rpc`, `POST /v1/rpc/<method>`) and
//! every WebSocket frame is JSON at most 32 deep, with no array over 256
//! items and no string over 16 KiB (counted in UTF-16 units, as JavaScript
//! counts), naming a method of at most 64 characters that looks like a
//! method (`name` or `ns.name`); a frame id is at most 128 characters. Each
//! violation is `400 INVALID_INPUT`.
//!
//! The depth is checked on the raw bytes before parsing, so a hostile
//! `[[[[…` never reaches a recursive parser; the other bounds walk the
//! parsed value without recursion. Server mode keeps its own codes
//! (`INVALID_JSON`, `INVALID_REQUEST`); this module is the gateway's only.

use serde_json::Value;

use super::rpc::{RpcCode, RpcError};
use crate::http::extract::exceeds_depth;

/// Deepest accepted nesting (a top-level value has depth 1).
pub const MAX_DEPTH: usize = 32;
/// Most items in one array.
pub const MAX_ARRAY_ITEMS: usize = 256;
/// Longest string, in UTF-16 code units.
pub const MAX_STRING_CHARS: usize = 16 * 1024;
/// Longest method name.
pub const MAX_METHOD_CHARS: usize = 64;
/// Longest frame id.
pub const MAX_FRAME_ID_CHARS: usize = 128;

fn invalid_input(message: impl Into<String>) -> RpcError {
    RpcError::new(RpcCode::InvalidInput, message)
}

/// Parses a frame (an RPC body or a WebSocket message) within the bounds.
pub fn parse_frame(bytes: &[u8]) -> Result<Value, RpcError> {
    if exceeds_depth(bytes, MAX_DEPTH) {
        return Err(invalid_input(format!(
            "gateway frame exceeds the maximum JSON depth of {MAX_DEPTH}."
        )));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|_| invalid_input("Gateway RPC payload must be valid JSON."))?;
    check_sizes(&value)?;
    Ok(value)
}

/// No array over [`MAX_ARRAY_ITEMS`], no string (value or key) over
/// [`MAX_STRING_CHARS`].
fn check_sizes(value: &Value) -> Result<(), RpcError> {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::String(s) => check_string(s)?,
            Value::Array(items) => {
                if items.len() > MAX_ARRAY_ITEMS {
                    return Err(invalid_input(format!(
                        "gateway frame contains an array exceeding {MAX_ARRAY_ITEMS} items."
                    )));
                }
                pending.extend(items);
            }
            Value::Object(map) => {
                for (key, entry) in map {
                    check_string(key)?;
                    pending.push(entry);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    Ok(())
}

fn check_string(s: &str) -> Result<(), RpcError> {
    // UTF-16 never needs more units than UTF-8 needs bytes: count only
    // strings that might be too long.
    if s.len() > MAX_STRING_CHARS && s.encode_utf16().count() > MAX_STRING_CHARS {
        return Err(invalid_input(format!(
            "gateway frame contains a string exceeding {MAX_STRING_CHARS} characters."
        )));
    }
    Ok(())
}

/// Smithers' `validateGatewayMethodName`: a string of at most 64
/// characters matching `^[a-z][a-zA-Z0-9]*(\.[a-z][a-zA-Z0-9]*)*$`.
pub fn method_name(value: Option<&Value>) -> Result<&str, RpcError> {
    let Some(Value::String(method)) = value else {
        return Err(invalid_input("Gateway method name must be a string."));
    };
    check_method(method)?;
    Ok(method)
}

/// The length and shape of a method name.
pub fn check_method(method: &str) -> Result<(), RpcError> {
    if method.encode_utf16().count() > MAX_METHOD_CHARS {
        return Err(invalid_input(format!(
            "method exceeds the maximum length of {MAX_METHOD_CHARS} characters."
        )));
    }
    let well_formed = method.split('.').all(|segment| {
        let mut chars = segment.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_alphanumeric())
    });
    if !well_formed {
        return Err(invalid_input("Gateway method name is invalid."));
    }
    Ok(())
}

/// A frame id of at most [`MAX_FRAME_ID_CHARS`].
pub fn check_frame_id(id: &str) -> Result<(), RpcError> {
    if id.encode_utf16().count() > MAX_FRAME_ID_CHARS {
        return Err(invalid_input(format!(
            "id exceeds the maximum length of {MAX_FRAME_ID_CHARS} characters."
        )));
    }
    Ok(())
}

/// A WebSocket frame checked like Smithers' `parseGatewayRequestFrame`:
/// bounded JSON, `type: "req"`, a string `id` and a valid method name;
/// `(id, method, params)`. A refused frame is answered with id `invalid`,
/// as Smithers does, unless it is refused only for its method name: then
/// with its own id, so that the client can match the answer.
pub fn parse_request(text: &str) -> Result<(String, String, Value), (String, RpcError)> {
    let unknown = |e| ("invalid".to_string(), e);
    let frame = parse_frame(text.as_bytes()).map_err(unknown)?;
    if frame.get("type").and_then(Value::as_str) != Some("req") {
        return Err(unknown(invalid_input(
            "Gateway frame must be a request object.",
        )));
    }
    let id = frame
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| unknown(invalid_input("Gateway frame id must be a string.")))?;
    check_frame_id(id).map_err(unknown)?;
    let method = method_name(frame.get("method")).map_err(|e| (id.to_string(), e))?;
    let params = frame.get("params").cloned().unwrap_or(Value::Null);
    Ok((id.to_string(), method.to_string(), params))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(result: Result<Value, RpcError>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.code, "INVALID_INPUT");
        assert_eq!(error.status.as_u16(), 400);
        error.message
    }

    #[test]
    fn frames_are_bounded_like_smithers() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_frame(deep(32).as_bytes()).is_ok());
        assert!(message(parse_frame(deep(33).as_bytes())).contains("depth of 32"));
        assert_eq!(
            message(parse_frame(b"{nope")),
            "Gateway RPC payload must be valid JSON."
        );
        let items = |n: usize| json!({ "a": vec![0; n] }).to_string();
        assert!(parse_frame(items(256).as_bytes()).is_ok());
        assert!(message(parse_frame(items(257).as_bytes())).contains("exceeding 256 items"));
        let text = |s: String| json!({ "s": s }).to_string();
        assert!(parse_frame(text("x".repeat(16 * 1024)).as_bytes()).is_ok());
        // Two UTF-8 bytes but one UTF-16 unit each: still within bounds.
        assert!(parse_frame(text("é".repeat(16 * 1024)).as_bytes()).is_ok());
        assert!(
            message(parse_frame(text("x".repeat(16 * 1024 + 1)).as_bytes()))
                .contains("string exceeding 16384")
        );
        // An emoji is two UTF-16 units.
        assert!(parse_frame(text("😀".repeat(8 * 1024 + 1)).as_bytes()).is_err());
        let key = json!({ "x".repeat(16 * 1024 + 1): 1 }).to_string();
        assert!(parse_frame(key.as_bytes()).is_err());
    }

    #[test]
    fn method_names_are_checked_like_smithers() {
        assert_eq!(method_name(Some(&json!("getRun"))).unwrap(), "getRun");
        assert_eq!(method_name(Some(&json!("cron.add"))).unwrap(), "cron.add");
        for bad in [json!(5), Value::Null] {
            assert_eq!(
                method_name(Some(&bad)).unwrap_err().message,
                "Gateway method name must be a string."
            );
        }
        assert!(method_name(None).is_err());
        for bad in ["", "GetRun", "get-run", "a..b", ".a", "a.", "a.B"] {
            assert_eq!(
                check_method(bad).unwrap_err().message,
                "Gateway method name is invalid.",
                "{bad}"
            );
        }
        assert!(check_method(&"a".repeat(64)).is_ok());
        assert_eq!(
            check_method(&"a".repeat(65)).unwrap_err().message,
            "method exceeds the maximum length of 64 characters."
        );
        assert!(check_frame_id(&"i".repeat(128)).is_ok());
        assert!(check_frame_id(&"i".repeat(129)).is_err());
    }
}
