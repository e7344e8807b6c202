//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the signed
//! content is `{msg_id}.{timestamp}.{body}`; `v1,<base64 HMAC-SHA256>` under a
//! `whsec_` secret, `v1a,<base64 Ed25519>` under a `whpk_`/`whsk_` key pair. Also the
//! verifiers for inbound processor hooks (hex HMAC, Stripe-style `t=…,v1=…`).

use crate::{CryptoError, ct_eq, hmac_sha256, random};
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

/// Length of a webhook HMAC secret and of an Ed25519 seed.
pub const SECRET_LEN: usize = 32;

/// The bytes that are signed: `{msg_id}.{timestamp}.{body}`.
pub fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Zeroizing<Vec<u8>> {
    let ts = timestamp.to_string();
    let mut out = Zeroizing::new(Vec::with_capacity(msg_id.len() + ts.len() + 2 + body.len()));
    out.extend_from_slice(msg_id.as_bytes());
    out.push(b'.');
    out.extend_from_slice(ts.as_bytes());
    out.push(b'.');
    out.extend_from_slice(body);
    out
}

/// A fresh random 32-byte secret (an HMAC secret or an Ed25519 seed).
pub fn new_secret() -> Result<Zeroizing<[u8; SECRET_LEN]>, CryptoError> {
    Ok(Zeroizing::new(random::bytes::<SECRET_LEN>()?))
}

/// `whsec_` + base64 of the secret, as shown once to the merchant.
pub fn encode_hmac_secret(secret: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(format!("whsec_{}", B64.encode(secret)))
}

/// The secret bytes of a `whsec_…` string (the prefix is optional, as in the spec's
/// libraries).
pub fn decode_hmac_secret(s: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let b64 = s.strip_prefix("whsec_").unwrap_or(s);
    B64.decode(b64)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Operation)
}

/// `v1,<base64 HMAC-SHA256(secret, content)>`.
pub fn sign_v1(secret: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = hmac_sha256(secret, &signed_content(msg_id, timestamp, body));
    format!("v1,{}", B64.encode(mac))
}

/// The raw 32-byte Ed25519 public key of a seed.
pub fn ed25519_public_key(seed: &[u8]) -> Result<[u8; 32], CryptoError> {
    let kp = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| CryptoError::Operation)?;
    kp.public_key()
        .as_ref()
        .try_into()
        .map_err(|_| CryptoError::Operation)
}

/// `whpk_` + base64 of the raw 32-byte public key.
pub fn encode_public_key(public: &[u8]) -> String {
    format!("whpk_{}", B64.encode(public))
}

/// `v1a,<base64 Ed25519(seed, content)>`.
pub fn sign_v1a(
    seed: &[u8],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, CryptoError> {
    let kp = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| CryptoError::Operation)?;
    let sig = kp.sign(&signed_content(msg_id, timestamp, body));
    Ok(format!("v1a,{}", B64.encode(sig.as_ref())))
}

/// Verifies an Ed25519 signature under a raw 32-byte public key.
pub fn verify_ed25519(public: &[u8], content: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public)
        .verify(content, sig)
        .is_ok()
}

/// Verifies a `webhook-signature` header value (space-separated `v1,…`/`v1a,…`
/// entries) for `content`: true if any `v1` entry matches an HMAC under one of
/// `hmac_secrets` (constant-time) or any `v1a` entry verifies under one of
/// `ed25519_public_keys`.
pub fn verify_standard(
    header: &str,
    content: &[u8],
    hmac_secrets: &[&[u8]],
    ed25519_public_keys: &[&[u8]],
) -> bool {
    let mut ok = false;
    for entry in header.split(' ').filter(|e| !e.is_empty()) {
        let Some((version, sig)) = entry.split_once(',') else {
            continue;
        };
        let Ok(sig) = B64.decode(sig) else { continue };
        match version {
            "v1" => {
                for s in hmac_secrets {
                    ok |= ct_eq(&hmac_sha256(s, content), &sig);
                }
            }
            "v1a" => {
                for pk in ed25519_public_keys {
                    ok |= verify_ed25519(pk, content, &sig);
                }
            }
            _ => {}
        }
    }
    ok
}

/// Verifies a lowercase or uppercase hex HMAC-SHA256 of `body` (e.g. M2P's
/// `X-M2P-Signature`), in constant time.
pub fn verify_hmac_hex(secret: &[u8], body: &[u8], header: &str) -> bool {
    match hex::decode(header.trim()) {
        Ok(sig) => ct_eq(&hmac_sha256(secret, body), &sig),
        Err(_) => false,
    }
}

/// Verifies a Stripe-style `t=<unix>,v1=<hex>[,v1=<hex>…]` header: HMAC-SHA256 over
/// `"{t}.{body}"`, and `|now - t| <= tolerance_s`.
pub fn verify_stripe(
    secret: &[u8],
    body: &[u8],
    header: &str,
    now_s: i64,
    tolerance_s: i64,
) -> bool {
    let mut t: Option<i64> = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse().ok(),
            Some(("v1", v)) => {
                if let Ok(s) = hex::decode(v) {
                    sigs.push(s);
                }
            }
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now_s.abs_diff(t) > tolerance_s.unsigned_abs() {
        return false;
    }
    let mut content = Zeroizing::new(format!("{t}.").into_bytes());
    content.extend_from_slice(body);
    let mac = hmac_sha256(secret, &content);
    let mut ok = false;
    for s in &sigs {
        ok |= ct_eq(&mac, s);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_matches_the_standard_webhooks_known_answer() {
        // /work/shared/vectors/standard-webhooks.json (the reference libraries' own vector).
        let secret = decode_hmac_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign_v1(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let content = signed_content(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert!(verify_standard(
            &format!("v1,bad {sig}"),
            &content,
            &[&secret],
            &[]
        ));
        assert!(!verify_standard(&sig, b"other", &[&secret], &[]));
    }

    #[test]
    fn v1a_round_trip_and_tamper() {
        let seed = new_secret().unwrap();
        let pk = ed25519_public_key(seed.as_slice()).unwrap();
        let sig = sign_v1a(seed.as_slice(), "msg_1", 10, b"{}").unwrap();
        let content = signed_content("msg_1", 10, b"{}");
        assert!(verify_standard(&sig, &content, &[], &[&pk]));
        assert!(!verify_standard(
            &sig,
            &signed_content("msg_1", 11, b"{}"),
            &[],
            &[&pk]
        ));
        assert!(encode_public_key(&pk).starts_with("whpk_"));
    }

    #[test]
    fn inbound_schemes() {
        let s = b"secret";
        let body = b"{\"a\":1}";
        let hexsig = hex::encode(hmac_sha256(s, body));
        assert!(verify_hmac_hex(s, body, &hexsig));
        assert!(verify_hmac_hex(s, body, &hexsig.to_uppercase()));
        assert!(!verify_hmac_hex(s, b"{\"a\":2}", &hexsig));
        assert!(!verify_hmac_hex(s, body, "zz"));
        let v1 = hex::encode(hmac_sha256(s, b"100.{\"a\":1}"));
        assert!(verify_stripe(s, body, &format!("t=100,v1={v1}"), 150, 300));
        assert!(!verify_stripe(
            s,
            body,
            &format!("t=100,v1={v1}"),
            1000,
            300
        ));
        assert!(!verify_stripe(s, body, &format!("v1={v1}"), 100, 300));
        assert!(!verify_stripe(
            b"other",
            body,
            &format!("t=100,v1={v1}"),
            100,
            300
        ));
    }
}
