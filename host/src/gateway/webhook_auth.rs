//! Whether a webhook delivery is authentic and fresh: its HMAC-SHA256
//! signature, its timestamp, and the key under which it is remembered so
//! that a replay starts nothing.
//!
//! The signature travels as Smithers' gateway sends it — `<prefix><hex>` in
//! `x-hub-signature-256`, prefix `sha256=` by default, both configurable.
//! What it covers depends on the scheme:
//!
//! * `timestamped` (the default): `<delivery id>.<timestamp>.<raw body>`, the
//!   id and the Unix time in seconds coming from `x-smithers-delivery` and
//!   `x-smithers-timestamp` (the Standard Webhooks layout). A delivery whose
//!   timestamp is more than `replay_window_secs` away from now is refused; a
//!   fresh one is remembered by its id until its timestamp leaves the
//!   window, so any replay is refused by one check or the other.
//! * `body`: the raw body only, as Smithers' gateway and GitHub sign it. A
//!   delivery is remembered by the SHA-256 of its body for
//!   `replay_window_secs`; nothing dates it, so a captured delivery can be
//!   replayed once that time has passed.
//!
//! This module only decides; `webhook` acts, and the store remembers.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::config::{WebhookConfig, WebhookScheme};

/// Longest accepted delivery id.
pub const MAX_DELIVERY_ID_CHARS: usize = 128;

/// A verified delivery: what to remember it by, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `id:<delivery id>` or `sha256:<hex of the body>`.
    pub key: String,
    /// Until when a replay of it must be refused (epoch ms).
    pub expires_at_ms: i64,
}

/// Why a delivery is refused (all `401 UNAUTHORIZED`). Messages never
/// repeat what the sender sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Missing or wrong signature.
    #[error("Webhook signature verification failed")]
    Signature,
    /// The delivery id or timestamp header is missing or malformed.
    #[error(
        "Webhook delivery id and timestamp are required: an id of 1-128 letters, digits, '_', '-' or ':', and the Unix time in seconds"
    )]
    MissingDeliveryHeaders,
    /// The timestamp is outside the replay window.
    #[error("Webhook timestamp is outside the replay window")]
    Stale,
}

/// Verifies a delivery's signature and freshness at `now_ms`.
pub fn verify(
    config: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: i64,
) -> Result<Delivery, Refused> {
    let header = |name: &str| {
        headers
            .get(name.to_ascii_lowercase().as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let provided = header(&config.signature_header);
    let window_ms = (config.replay_window_secs as i64).saturating_mul(1000);
    match config.scheme {
        WebhookScheme::Body => {
            if !signature_valid(config, &[body], provided) {
                return Err(Refused::Signature);
            }
            Ok(Delivery {
                key: format!("sha256:{}", hex::encode(Sha256::digest(body))),
                expires_at_ms: now_ms.saturating_add(window_ms),
            })
        }
        WebhookScheme::Timestamped => {
            let id = header(&config.delivery_header)
                .filter(|id| valid_delivery_id(id))
                .ok_or(Refused::MissingDeliveryHeaders)?;
            let timestamp = header(&config.timestamp_header)
                .filter(|t| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(Refused::MissingDeliveryHeaders)?;
            let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
            if !signature_valid(config, &signed, provided) {
                return Err(Refused::Signature);
            }
            let sent_ms = timestamp
                .parse::<i64>()
                .map_err(|_| Refused::MissingDeliveryHeaders)?
                .saturating_mul(1000);
            if now_ms.abs_diff(sent_ms) > window_ms.unsigned_abs() {
                return Err(Refused::Stale);
            }
            Ok(Delivery {
                key: format!("id:{id}"),
                expires_at_ms: sent_ms.max(now_ms).saturating_add(window_ms),
            })
        }
    }
}

/// An id that cannot be confused with the `.` separators of the signed
/// content.
fn valid_delivery_id(id: &str) -> bool {
    (1..=MAX_DELIVERY_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
}

/// True when `provided` is `prefix + hex(HMAC-SHA256(secret, parts...))`,
/// compared in constant time.
fn signature_valid(config: &WebhookConfig, parts: &[&[u8]], provided: Option<&str>) -> bool {
    let Some(hex_digest) = provided.and_then(|p| p.strip_prefix(config.signature_prefix.as_str()))
    else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest.trim()) else {
        return false;
    };
    // Smithers trims the configured secret; so do we.
    let mut mac = Hmac::<Sha256>::new_from_slice(config.resolved_secret.trim().as_bytes())
        .expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&digest).is_ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::gateway::config::GatewayConfig;

    fn config(scheme: &str) -> WebhookConfig {
        let text = format!(
            "[workflows.a]\npath = \"a.wasm\"\n[workflows.a.webhook]\nsecret = \"s3cret\"\nscheme = \"{scheme}\"\n"
        );
        GatewayConfig::parse(&text).unwrap().workflows["a"]
            .webhook
            .clone()
            .unwrap()
    }

    fn sign(parts: &[&[u8]]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        for part in parts {
            mac.update(part);
        }
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn timestamped_deliveries_are_signed_dated_and_keyed_by_id() {
        let config = config("timestamped");
        let now = 1_700_000_000_000;
        let ts = (now / 1000).to_string();
        let body = br#"{"a":1}"#;
        let signed = |id: &str, ts: &str| {
            headers(&[
                ("x-smithers-delivery", id.to_string()),
                ("x-smithers-timestamp", ts.to_string()),
                (
                    "x-hub-signature-256",
                    sign(&[id.as_bytes(), b".", ts.as_bytes(), b".", body]),
                ),
            ])
        };
        let delivery = verify(&config, &signed("d-1", &ts), body, now).unwrap();
        assert_eq!(delivery.key, "id:d-1");
        assert_eq!(delivery.expires_at_ms, now + 300_000);
        // Within the window either way; beyond it, refused even when signed.
        assert!(verify(&config, &signed("d-1", &ts), body, now + 299_000).is_ok());
        assert_eq!(
            verify(&config, &signed("d-1", &ts), body, now + 301_000),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(&config, &signed("d-1", &ts), body, now - 301_000),
            Err(Refused::Stale)
        );
        // The id and the timestamp are covered by the signature.
        let mut moved = signed("d-1", &ts);
        moved.insert("x-smithers-delivery", HeaderValue::from_static("d-2"));
        assert_eq!(verify(&config, &moved, body, now), Err(Refused::Signature));
        let mut redated = signed("d-1", &ts);
        redated.insert(
            "x-smithers-timestamp",
            HeaderValue::from_str(&(now / 1000 + 1).to_string()).unwrap(),
        );
        assert_eq!(
            verify(&config, &redated, body, now),
            Err(Refused::Signature)
        );
        // A body-only signature is not enough.
        let body_only = headers(&[
            ("x-smithers-delivery", "d-1".into()),
            ("x-smithers-timestamp", ts.clone()),
            ("x-hub-signature-256", sign(&[body])),
        ]);
        assert_eq!(
            verify(&config, &body_only, body, now),
            Err(Refused::Signature)
        );
        for (id, ts) in [
            ("", ts.as_str()),
            ("a.b", ts.as_str()),
            ("d-1", "12x"),
            ("d-1", ""),
        ] {
            assert_eq!(
                verify(&config, &signed(id, ts), body, now),
                Err(Refused::MissingDeliveryHeaders),
                "{id:?} {ts:?}"
            );
        }
        let long = "x".repeat(MAX_DELIVERY_ID_CHARS + 1);
        assert!(verify(&config, &signed(&long, &ts), body, now).is_err());
    }

    #[test]
    fn body_signed_deliveries_are_keyed_by_their_body() {
        let config = config("body");
        let body = br#"{"a":1}"#;
        let now = 1_700_000_000_000;
        let signed = headers(&[("x-hub-signature-256", sign(&[body]))]);
        let delivery = verify(&config, &signed, body, now).unwrap();
        assert_eq!(
            delivery.key,
            format!("sha256:{}", hex::encode(Sha256::digest(body)))
        );
        assert_eq!(delivery.expires_at_ms, now + 300_000);
        assert_eq!(
            verify(&config, &signed, br#"{"a":2}"#, now),
            Err(Refused::Signature)
        );
        assert_eq!(
            verify(&config, &HeaderMap::new(), body, now),
            Err(Refused::Signature)
        );
    }
}
