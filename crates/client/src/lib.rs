//! Rust SDK for merchants' back ends.
//!
//! Today: [`verify_webhook`], which checks a Strongroom webhook exactly as the
//! [Standard Webhooks](https://www.standardwebhooks.com/) spec says — the signed content
//! is `{webhook-id}.{webhook-timestamp}.{raw body}`, `webhook-signature` holds one or more
//! space-separated `v1,<base64 HMAC-SHA256>` (endpoint secret `whsec_…`) or
//! `v1a,<base64 Ed25519>` (endpoint public key `whpk_…`) entries, and the timestamp must
//! be within a tolerance of now (replay protection).
//!
//! ```
//! use std::time::Duration;
//! use strongroom_client::{WebhookKey, WebhookHeaders, verify_webhook};
//!
//! # let (id, ts, sig, body) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
//! #     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", br#"{"test": 2432232314}"#);
//! # let now = 1614265330;
//! let key = WebhookKey::Hmac("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
//! let headers = WebhookHeaders { id, timestamp: ts, signature: sig };
//! // `body` must be the raw bytes as received, before any JSON parsing.
//! verify_webhook(&key, &headers, body, now, Duration::from_secs(300)).unwrap();
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;
use thiserror::Error;

/// The key an endpoint verifies with.
#[derive(Clone, Copy)]
pub enum WebhookKey<'a> {
    /// The endpoint's `whsec_…` secret (HMAC-SHA256 endpoints; `v1` signatures).
    Hmac(&'a str),
    /// The endpoint's `whpk_…` public key (Ed25519 endpoints; `v1a` signatures).
    Ed25519(&'a str),
}

impl std::fmt::Debug for WebhookKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hmac(_) => f.write_str("WebhookKey::Hmac([REDACTED])"),
            Self::Ed25519(pk) => write!(f, "WebhookKey::Ed25519({pk})"),
        }
    }
}

/// The three Standard Webhooks headers, as received.
#[derive(Debug, Clone, Copy)]
pub struct WebhookHeaders<'a> {
    /// `webhook-id`: the event id; the same on every retry, so use it to deduplicate.
    pub id: &'a str,
    /// `webhook-timestamp`: Unix seconds when this attempt was signed.
    pub timestamp: &'a str,
    /// `webhook-signature`: space-separated `v1,…` / `v1a,…` entries.
    pub signature: &'a str,
}

/// Why a webhook did not verify. Treat every variant as "reject the request".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// A header is empty.
    #[error("missing webhook header")]
    MissingHeader,
    /// `webhook-timestamp` is not an integer.
    #[error("invalid webhook timestamp")]
    InvalidTimestamp,
    /// The timestamp is older than the tolerance (a replay, or a very late retry).
    #[error("webhook timestamp too old")]
    TooOld,
    /// The timestamp is further in the future than the tolerance.
    #[error("webhook timestamp too new")]
    TooNew,
    /// The key is not a valid `whsec_…` / `whpk_…` string.
    #[error("invalid webhook key")]
    InvalidKey,
    /// No signature entry matched.
    #[error("no matching webhook signature")]
    NoMatchingSignature,
}

/// Verifies a webhook: the timestamp is within `tolerance` of `now_unix` (seconds),
/// and some entry of the signature header verifies over
/// `{id}.{timestamp}.{body}` under `key` (HMAC compared in constant time).
pub fn verify_webhook(
    key: &WebhookKey<'_>,
    headers: &WebhookHeaders<'_>,
    body: &[u8],
    now_unix: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    if headers.id.is_empty() || headers.timestamp.is_empty() || headers.signature.is_empty() {
        return Err(VerifyError::MissingHeader);
    }
    let ts: i64 = headers
        .timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    let tol = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if ts < now_unix.saturating_sub(tol) {
        return Err(VerifyError::TooOld);
    }
    if ts > now_unix.saturating_add(tol) {
        return Err(VerifyError::TooNew);
    }
    let mut content = Vec::with_capacity(headers.id.len() + 24 + body.len());
    content.extend_from_slice(headers.id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(ts.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);

    let entries = headers
        .signature
        .split(' ')
        .filter_map(|e| e.split_once(','))
        .filter_map(|(v, s)| B64.decode(s).ok().map(|s| (v, s)));
    match key {
        WebhookKey::Hmac(secret) => {
            let raw = B64
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                .map_err(|_| VerifyError::InvalidKey)?;
            for (version, sig) in entries {
                if version != "v1" {
                    continue;
                }
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(&raw).map_err(|_| VerifyError::InvalidKey)?;
                mac.update(&content);
                if mac.verify_slice(&sig).is_ok() {
                    return Ok(());
                }
            }
        }
        WebhookKey::Ed25519(public) => {
            let raw = B64
                .decode(public.strip_prefix("whpk_").unwrap_or(public))
                .map_err(|_| VerifyError::InvalidKey)?;
            let raw: [u8; 32] = raw.try_into().map_err(|_| VerifyError::InvalidKey)?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&raw)
                .map_err(|_| VerifyError::InvalidKey)?;
            for (version, sig) in entries {
                if version != "v1a" {
                    continue;
                }
                let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
                    continue;
                };
                if vk.verify_strict(&content, &sig).is_ok() {
                    return Ok(());
                }
            }
        }
    }
    Err(VerifyError::NoMatchingSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const FIVE_MIN: Duration = Duration::from_secs(300);

    fn vector(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    fn check(
        key: &WebhookKey<'_>,
        v: &Value,
        body: &[u8],
        ts: &str,
        now: i64,
    ) -> Result<(), VerifyError> {
        let h = WebhookHeaders {
            id: v["msg_id"].as_str().unwrap(),
            timestamp: ts,
            signature: v["signature"].as_str().unwrap(),
        };
        verify_webhook(key, &h, body, now, FIVE_MIN)
    }

    #[test]
    fn hmac_v1_known_answer() {
        let v = vector(include_str!(
            "../../../tests/vectors/standard-webhooks.json"
        ));
        let key = WebhookKey::Hmac(v["secret"].as_str().unwrap());
        let body = v["payload"].as_str().unwrap().as_bytes();
        let ts = v["timestamp"].as_i64().unwrap();
        let t = ts.to_string();
        assert_eq!(check(&key, &v, body, &t, ts), Ok(()));
        assert_eq!(check(&key, &v, body, &t, ts + 299), Ok(()));
        // A flipped byte, a stale or future timestamp, another secret: refused.
        let mut flipped = body.to_vec();
        flipped[3] ^= 1;
        assert_eq!(
            check(&key, &v, &flipped, &t, ts),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(&key, &v, body, &t, ts + 301),
            Err(VerifyError::TooOld)
        );
        assert_eq!(
            check(&key, &v, body, &t, ts - 301),
            Err(VerifyError::TooNew)
        );
        assert_eq!(
            check(&key, &v, body, &(ts + 1).to_string(), ts),
            Err(VerifyError::NoMatchingSignature)
        );
        let other = WebhookKey::Hmac("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(
            check(&other, &v, body, &t, ts),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(&WebhookKey::Hmac("whsec_!!"), &v, body, &t, ts),
            Err(VerifyError::InvalidKey)
        );
        // A v1 signature does not satisfy an Ed25519 key.
        let ed = vector(include_str!(
            "../../../tests/vectors/standard-webhooks-ed25519.json"
        ));
        let pk = WebhookKey::Ed25519(ed["public_key"].as_str().unwrap());
        assert_eq!(
            check(&pk, &v, body, &t, ts),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn several_signatures_any_may_match() {
        let v = vector(include_str!(
            "../../../tests/vectors/standard-webhooks.json"
        ));
        let key = WebhookKey::Hmac(v["secret"].as_str().unwrap());
        let ts = v["timestamp"].as_i64().unwrap();
        let sig = format!(
            "v1,Ym9ndXM= v1a,Ym9ndXM= {}",
            v["signature"].as_str().unwrap()
        );
        let h = WebhookHeaders {
            id: v["msg_id"].as_str().unwrap(),
            timestamp: &ts.to_string(),
            signature: &sig,
        };
        let body = v["payload"].as_str().unwrap().as_bytes();
        assert_eq!(verify_webhook(&key, &h, body, ts, FIVE_MIN), Ok(()));
        let h = WebhookHeaders {
            signature: "v1,Ym9ndXM=",
            ..h
        };
        assert_eq!(
            verify_webhook(&key, &h, body, ts, FIVE_MIN),
            Err(VerifyError::NoMatchingSignature)
        );
        let h = WebhookHeaders { signature: "", ..h };
        assert_eq!(
            verify_webhook(&key, &h, body, ts, FIVE_MIN),
            Err(VerifyError::MissingHeader)
        );
    }

    #[test]
    fn ed25519_v1a_known_answer() {
        let v = vector(include_str!(
            "../../../tests/vectors/standard-webhooks-ed25519.json"
        ));
        let key = WebhookKey::Ed25519(v["public_key"].as_str().unwrap());
        let body = v["payload"].as_str().unwrap().as_bytes();
        let ts = v["timestamp"].as_i64().unwrap();
        let t = ts.to_string();
        assert_eq!(check(&key, &v, body, &t, ts), Ok(()));
        let mut flipped = body.to_vec();
        flipped[0] ^= 1;
        assert_eq!(
            check(&key, &v, &flipped, &t, ts),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(&key, &v, body, &t, ts + 3600),
            Err(VerifyError::TooOld)
        );
        assert_eq!(
            check(&key, &v, body, "soon", ts),
            Err(VerifyError::InvalidTimestamp)
        );
        // The RFC 8032 TEST 1 public key, as a whpk_ string.
        assert_eq!(
            v["public_key"],
            format!(
                "whpk_{}",
                B64.encode([
                    0xd7u8, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9,
                    0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02,
                    0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a
                ])
            )
        );
    }
}
