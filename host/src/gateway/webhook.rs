//! `POST /webhooks/:key`: signed deliveries that signal waiting runs or start
//! new ones.
//!
//! The HMAC-SHA256 signature ([`webhook_auth`]: over the delivery id,
//! timestamp and raw body by default) is the only credential, checked in
//! constant time before the body is even parsed: a bad or stale signature
//! is 401 and nothing happens. A verified delivery is then claimed in the
//! store; a replay of one already claimed answers `duplicate: true` and
//! does nothing, across restarts. With a `signal` mapping, the signal goes
//! to the run named at `run_id_path` or else to every run of this workflow
//! waiting for it; when no run got it and runs are enabled, a run starts
//! with the input at `input_path`. Both act as `{role: "system",
//! triggeredBy: "webhook:<key>"}`.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::auth::Identity;
use super::config::WebhookConfig;
use super::{Gateway, Registered, webhook_auth};
use crate::http::error::json_response;
use crate::model::{RunId, now_ms};
use crate::store::{Op, StoreError};

/// `{ok: false, error: {code, message}}` with a status.
fn reject(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json_response(
        status,
        &json!({ "ok": false, "error": { "code": code, "message": message.into() } }),
    )
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
    let delivery = match webhook_auth::verify(webhook, headers, &body, now_ms()) {
        Ok(delivery) => delivery,
        Err(refused) => {
            gateway.metrics.webhook_rejected();
            tracing::warn!(workflow = key, reason = %refused, "webhook rejected");
            return reject(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                refused.to_string(),
            );
        }
    };
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(_) if body.is_empty() => Value::Object(Map::new()),
        Err(_) => {
            gateway.metrics.webhook_rejected();
            return reject(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                "Webhook payload must be valid JSON.",
            );
        }
    };
    let claim = Op::ClaimWebhookDelivery {
        workflow_key: key.to_string(),
        delivery_key: delivery.key.clone(),
        expires_at_ms: delivery.expires_at_ms,
    };
    match gateway.engine.store().apply_unscoped(vec![claim]).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            gateway.metrics.webhook_rejected();
            tracing::warn!(workflow = key, delivery = %delivery.key, "webhook delivery replayed; ignored");
            return json_response(
                StatusCode::OK,
                &json!({
                    "ok": true, "workflow": key, "verified": true, "duplicate": true,
                    "delivered": [], "matchedRunIds": [], "started": null,
                }),
            );
        }
        Err(e) => return super::internal_error(&e),
    }
    let outcome = act(gateway, key, workflow, webhook, &payload).await;
    if let Err((_, true)) = &outcome {
        // Nothing happened: let the sender's retry of this delivery through.
        let release = Op::ReleaseWebhookDelivery {
            workflow_key: key.to_string(),
            delivery_key: delivery.key,
        };
        if let Err(e) = gateway.engine.store().apply_unscoped(vec![release]).await {
            tracing::warn!(workflow = key, error = %e, "cannot forget a failed webhook delivery");
        }
    }
    match outcome {
        Ok(answer) => {
            gateway.metrics.webhook_accepted();
            json_response(StatusCode::OK, &answer).into_response()
        }
        Err((response, _)) => response,
    }
}

/// Delivers the signal and/or starts the run of a verified, new delivery.
/// On failure: the response, and whether nothing happened at all.
async fn act(
    gateway: &Gateway,
    key: &str,
    workflow: &Registered,
    webhook: &WebhookConfig,
    payload: &Value,
) -> Result<Value, (Response, bool)> {
    let trigger = format!("webhook:{key}");
    let (identity, _) = Identity::system(&trigger);
    let mut delivered = Vec::new();
    let mut matched = Vec::new();
    if let Some(signal) = &webhook.signal {
        let explicit = as_text(read_path(payload, signal.run_id_path.as_deref()));
        let correlation_id = as_text(read_path(payload, signal.correlation_id_path.as_deref()));
        let data = read_path(payload, signal.payload_path.as_deref())
            .cloned()
            .unwrap_or(Value::Null);
        let (path, name) = (workflow.path.clone(), signal.name.clone());
        let waiting = gateway
            .engine
            .store()
            .read(move |r| r.runs_waiting_for_signal(&path, &name))
            .await
            .map_err(|e| (super::internal_error(&e), true))?;
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
        let input = match read_path(payload, input_path) {
            Some(Value::Object(map)) => Value::Object(map.clone()),
            _ => Value::Object(Map::new()),
        };
        gateway
            .start_run(key, input, identity.run_auth(&trigger), None, None)
            .await
            .map_err(|e| (reject(e.status, e.code, e.message), true))?
    } else {
        Value::Null
    };
    Ok(json!({
        "ok": true, "workflow": key, "verified": true, "delivered": delivered,
        "matchedRunIds": matched, "started": started,
    }))
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
