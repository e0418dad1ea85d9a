//! `POST /webhooks/:key`: signed deliveries that signal waiting runs or start
//! new ones.
//!
//! The HMAC-SHA256 signature of the raw body (header `x-hub-signature-256`,
//! `sha256=<hex>` by default) is the only credential, checked in constant
//! time before the body is even parsed: a bad signature is 401 and nothing
//! happens. With a `signal` mapping, the signal goes to the run named at
//! `run_id_path` or else to every run of this workflow waiting for it; when
//! no run got it and runs are enabled, a run starts with the input at
//! `input_path`. Both act as `{role: "system", triggeredBy: "webhook:<key>"}`.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::Gateway;
use super::auth::Identity;
use super::config::WebhookConfig;
use crate::http::error::json_response;
use crate::model::RunId;

/// `{ok: false, error: {code, message}}` with a status.
fn reject(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json_response(
        status,
        &json!({ "ok": false, "error": { "code": code, "message": message.into() } }),
    )
}

/// True when `provided` is `prefix + hex(HMAC-SHA256(secret, body))`.
pub fn signature_valid(config: &WebhookConfig, body: &[u8], provided: Option<&str>) -> bool {
    let Some(hex_digest) = provided
        .map(str::trim)
        .and_then(|p| p.strip_prefix(config.signature_prefix.as_str()))
    else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(config.resolved_secret.trim().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// Smithers' `readPathValue`: dotted path, numeric segments index arrays,
/// empty path is the whole value.
fn read_path<'a>(value: &'a Value, path: Option<&str>) -> Option<&'a Value> {
    let path = path.map(str::trim).unwrap_or_default();
    let mut current = value;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        current = match current {
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            Value::Object(map) => map.get(segment)?,
            _ => return None,
        };
    }
    Some(current)
}

fn as_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Handles one delivery.
pub async fn handle(gateway: &Gateway, key: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let Some(workflow) = gateway.registered(key) else {
        gateway.metrics.webhook_rejected();
        return reject(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Unknown workflow: {key}"),
        );
    };
    let Some(webhook) = &workflow.config.webhook else {
        gateway.metrics.webhook_rejected();
        return reject(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Webhook not configured for workflow: {key}"),
        );
    };
    let provided = headers
        .get(webhook.signature_header.to_ascii_lowercase().as_str())
        .and_then(|v| v.to_str().ok());
    if !signature_valid(webhook, &body, provided) {
        gateway.metrics.webhook_rejected();
        tracing::warn!(workflow = key, "webhook rejected: bad signature");
        return reject(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Webhook signature verification failed",
        );
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(_) if body.is_empty() => Value::Object(Map::new()),
        Err(e) => {
            gateway.metrics.webhook_rejected();
            return reject(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                format!("Webhook payload decode failed: {e}"),
            );
        }
    };
    let trigger = format!("webhook:{key}");
    let (identity, _) = Identity::system(&trigger);
    let mut delivered = Vec::new();
    let mut matched = Vec::new();
    if let Some(signal) = &webhook.signal {
        let explicit = as_text(read_path(&payload, signal.run_id_path.as_deref()));
        let correlation_id = as_text(read_path(&payload, signal.correlation_id_path.as_deref()));
        let data = read_path(&payload, signal.payload_path.as_deref())
            .cloned()
            .unwrap_or(Value::Null);
        let (path, name) = (workflow.path.clone(), signal.name.clone());
        let waiting = gateway
            .engine
            .store()
            .read(move |r| r.runs_waiting_for_signal(&path, &name))
            .await;
        let waiting = match waiting {
            Ok(waiting) => waiting,
            Err(e) => return super::internal_error(&e),
        };
        matched = match explicit {
            Some(raw) => waiting
                .into_iter()
                .filter(|id| id.as_str() == raw)
                .collect(),
            None => waiting,
        };
        for run_id in &matched {
            match deliver(
                gateway,
                run_id,
                &signal.name,
                &data,
                &correlation_id,
                &trigger,
            )
            .await
            {
                Ok(receipt) => delivered.push(receipt),
                Err(e) => {
                    tracing::warn!(run = %run_id, error = %e.message, "webhook signal not delivered")
                }
            }
        }
    }
    let started = if delivered.is_empty() && webhook.runs_enabled() {
        let input_path = webhook.run.as_ref().and_then(|r| r.input_path.as_deref());
        let input = match read_path(&payload, input_path) {
            Some(Value::Object(map)) => Value::Object(map.clone()),
            _ => Value::Object(Map::new()),
        };
        match gateway
            .start_run(key, input, identity.run_auth(&trigger), None, None)
            .await
        {
            Ok(run) => run,
            Err(e) => {
                return reject(e.status, e.code, e.message);
            }
        }
    } else {
        Value::Null
    };
    gateway.metrics.webhook_accepted();
    json_response(
        StatusCode::OK,
        &json!({
            "ok": true, "workflow": key, "verified": true, "delivered": delivered,
            "matchedRunIds": matched, "started": started,
        }),
    )
    .into_response()
}

async fn deliver(
    gateway: &Gateway,
    run_id: &RunId,
    name: &str,
    data: &Value,
    correlation_id: &Option<String>,
    trigger: &str,
) -> Result<Value, super::rpc::RpcError> {
    let receipt = gateway
        .engine
        .signal(
            run_id,
            name,
            data.clone(),
            correlation_id.clone(),
            Some(trigger.to_string()),
        )
        .await?;
    Ok(serde_json::to_value(receipt).expect("receipts serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_smithers() {
        let v = json!({"a": {"b": [10, {"c": "x"}]}});
        assert_eq!(read_path(&v, Some("a.b.1.c")), Some(&json!("x")));
        assert_eq!(read_path(&v, Some("a.b.0")), Some(&json!(10)));
        assert_eq!(read_path(&v, None), Some(&v));
        assert_eq!(read_path(&v, Some("a.z")), None);
    }
}
