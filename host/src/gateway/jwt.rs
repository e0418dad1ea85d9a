//! HS256 JSON Web Token verification for the gateway's `jwt` auth mode.
//!
//! A token is accepted only when all of these hold: three base64url parts;
//! a header whose `alg` is `HS256` (checked before anything else, so `none`
//! or an asymmetric algorithm never reaches the MAC); a signature that
//! verifies in constant time; a numeric `exp` that has not passed; a numeric
//! `nbf` and `iat`, when present, that are not in the future; `iss` equal to
//! the configured issuer and `aud` (a string, or an array) containing the
//! configured audience. Each time check allows `clock_skew_ms` of leeway.
//! This module only verifies; what the claims grant is `auth`'s business.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::auth_config::JwtConfig;

/// Longest token looked at; anything longer is malformed (a real one is a
/// few hundred bytes).
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token is refused. Messages name the failed check, never the
/// token's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON objects, or too long.
    #[error("Malformed JWT")]
    Malformed,
    /// `alg` other than HS256.
    #[error("Unsupported JWT algorithm; only HS256 is accepted")]
    Algorithm,
    /// The MAC does not verify.
    #[error("Invalid JWT signature")]
    Signature,
    /// No `exp` claim.
    #[error("JWT has no exp claim; tokens must expire")]
    MissingExpiry,
    /// A time claim that is not a number.
    #[error("JWT {0} claim must be a number of seconds")]
    NotNumeric(&'static str),
    /// `exp` has passed.
    #[error("JWT expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("JWT is not valid yet")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("JWT was issued in the future")]
    IssuedInFuture,
    /// `iss` differs from the configured issuer.
    #[error("JWT issuer mismatch")]
    Issuer,
    /// `aud` does not name the configured audience.
    #[error("JWT audience mismatch")]
    Audience,
}

/// Verifies an HS256 JWT at `now_ms` and returns its claims.
pub fn verify(
    token: &str,
    config: &JwtConfig,
    now_ms: i64,
) -> Result<Map<String, Value>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed);
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode_json = |part: &str| -> Result<Map<String, Value>, JwtError> {
        let bytes = b64.decode(part).map_err(|_| JwtError::Malformed)?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(JwtError::Malformed),
        }
    };
    let header = decode_json(head)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::Algorithm);
    }
    let signature = b64.decode(signature).map_err(|_| JwtError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(config.resolved_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(head.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::Signature)?;
    let claims = decode_json(body)?;
    check_times(&claims, config.clock_skew_ms, now_ms)?;
    if let Some(issuer) = &config.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(JwtError::Issuer);
    }
    if let Some(audience) = &config.audience {
        let matches = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !matches {
            return Err(JwtError::Audience);
        }
    }
    Ok(claims)
}

/// `exp` required; `nbf` and `iat` checked when present; all numeric.
fn check_times(claims: &Map<String, Value>, skew_ms: i64, now_ms: i64) -> Result<(), JwtError> {
    let seconds = |name: &'static str| -> Result<Option<f64>, JwtError> {
        match claims.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .filter(|s| s.is_finite())
                .map(Some)
                .ok_or(JwtError::NotNumeric(name)),
        }
    };
    let (skew, now) = (skew_ms as f64, now_ms as f64);
    let exp = seconds("exp")?.ok_or(JwtError::MissingExpiry)?;
    if now > exp * 1000.0 + skew {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = seconds("nbf")?
        && now + skew < nbf * 1000.0
    {
        return Err(JwtError::NotYetValid);
    }
    if let Some(iat) = seconds("iat")?
        && now + skew < iat * 1000.0
    {
        return Err(JwtError::IssuedInFuture);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gateway::auth_config::AuthConfig;
    use crate::gateway::config::GatewayConfig;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn sign(secret: &str, header: &str, claims: Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let head = b64.encode(header);
        let body = b64.encode(claims.to_string());
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{head}.{body}").as_bytes());
        let sig = b64.encode(mac.finalize().into_bytes());
        format!("{head}.{body}.{sig}")
    }

    fn jwt(secret: &str, claims: Value) -> String {
        sign(secret, r#"{"alg":"HS256","typ":"JWT"}"#, claims)
    }

    fn config() -> JwtConfig {
        let config = GatewayConfig::parse(&format!(
            "[auth]\nmode = \"jwt\"\nsecret = \"{SECRET}\"\nissuer = \"me\"\naudience = \"gw\"\n"
        ))
        .unwrap();
        let Some(AuthConfig::Jwt(config)) = config.auth else {
            panic!()
        };
        config
    }

    #[test]
    fn jwts_are_checked_for_algorithm_signature_time_issuer_and_audience() {
        let config = config();
        let now = 1_000_000_000_000;
        let claims = |extra: Value| {
            let mut c =
                json!({"iss": "me", "aud": ["x", "gw"], "exp": now / 1000 + 60, "sub": "u"});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            c
        };
        assert!(verify(&jwt(SECRET, claims(json!({}))), &config, now).is_ok());
        let check = |token: String| verify(&token, &config, now).unwrap_err();
        assert_eq!(check(jwt("other", claims(json!({})))), JwtError::Signature);
        assert_eq!(
            check(sign(SECRET, r#"{"alg":"none"}"#, claims(json!({})))),
            JwtError::Algorithm
        );
        // exp: required, numeric, with 60 s of leeway.
        let mut no_exp = claims(json!({}));
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(jwt(SECRET, no_exp)), JwtError::MissingExpiry);
        assert_eq!(
            check(jwt(SECRET, claims(json!({"exp": "tomorrow"})))),
            JwtError::NotNumeric("exp")
        );
        assert_eq!(
            check(jwt(SECRET, claims(json!({"exp": null})))),
            JwtError::NotNumeric("exp")
        );
        assert!(
            verify(
                &jwt(SECRET, claims(json!({"exp": now / 1000 - 30}))),
                &config,
                now
            )
            .is_ok()
        );
        assert_eq!(
            check(jwt(SECRET, claims(json!({"exp": now / 1000 - 120})))),
            JwtError::Expired
        );
        // nbf and iat: numeric and not in the future, when present.
        assert_eq!(
            check(jwt(SECRET, claims(json!({"nbf": now / 1000 + 120})))),
            JwtError::NotYetValid
        );
        assert_eq!(
            check(jwt(SECRET, claims(json!({"nbf": "now"})))),
            JwtError::NotNumeric("nbf")
        );
        assert_eq!(
            check(jwt(SECRET, claims(json!({"iat": now / 1000 + 3600})))),
            JwtError::IssuedInFuture
        );
        assert_eq!(
            check(jwt(SECRET, claims(json!({"iat": [1]})))),
            JwtError::NotNumeric("iat")
        );
        assert!(
            verify(
                &jwt(
                    SECRET,
                    claims(json!({"iat": now / 1000 + 30, "nbf": now / 1000}))
                ),
                &config,
                now
            )
            .is_ok()
        );
        assert_eq!(
            check(jwt(SECRET, claims(json!({"iss": "you"})))),
            JwtError::Issuer
        );
        assert_eq!(
            check(jwt(SECRET, claims(json!({"aud": "other"})))),
            JwtError::Audience
        );
        assert_eq!(check("a.b".into()), JwtError::Malformed);
        assert_eq!(check("a".repeat(MAX_TOKEN_BYTES + 1)), JwtError::Malformed);
    }
}
