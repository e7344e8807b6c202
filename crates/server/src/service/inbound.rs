//! Inbound processor hooks: `POST /v1/inbound/{source}`, verified on the raw bytes
//! under the scheme configured for the source.

use strongroom_core::{Mode, Sensitive};

/// How a source signs its notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundScheme {
    /// Hex HMAC-SHA256 of the raw body in the named header (e.g. `X-M2P-Signature`).
    HmacSha256Hex {
        /// The header carrying the signature.
        header: String,
    },
    /// Stripe-style `Stripe-Signature: t=…,v1=…` over `"{t}.{body}"`.
    Stripe {
        /// The header (default `Stripe-Signature`).
        header: String,
        /// Accepted clock difference, seconds.
        tolerance_s: i64,
    },
    /// Standard Webhooks headers and `v1` signatures under a `whsec_` secret.
    StandardWebhooks {
        /// Accepted clock difference, seconds.
        tolerance_s: i64,
    },
}

/// A configured inbound source. The secret comes from a file or the environment.
#[derive(Debug, Clone)]
pub struct InboundSource {
    /// The `{source}` path segment.
    pub name: String,
    /// The account whose outbox receives `inbound.received`.
    pub account_id: String,
    /// The mode of those events.
    pub mode: Mode,
    /// The signature scheme.
    pub scheme: InboundScheme,
    /// The shared secret (raw bytes; for Standard Webhooks, the decoded `whsec_`).
    pub secret: Sensitive<Vec<u8>>,
}

/// Why an inbound request was refused (recorded; never the request's content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No signature header.
    Unsigned,
    /// The signature did not verify.
    BadSignature,
    /// The timestamp is outside the tolerance.
    Stale,
}

impl Refusal {
    /// Stable name for the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Stale => "stale",
        }
    }
}

fn header<'a>(h: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies a request for `src` at `now_s`.
pub fn verify(
    src: &InboundSource,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<(), Refusal> {
    use strongroom_crypto::webhook as sig;
    let secret = src.secret.expose().as_slice();
    match &src.scheme {
        InboundScheme::HmacSha256Hex { header: name } => {
            let v = header(headers, name).ok_or(Refusal::Unsigned)?;
            sig::verify_hmac_hex(secret, body, v)
                .then_some(())
                .ok_or(Refusal::BadSignature)
        }
        InboundScheme::Stripe {
            header: name,
            tolerance_s,
        } => {
            let v = header(headers, name).ok_or(Refusal::Unsigned)?;
            let t = v
                .split(',')
                .find_map(|p| p.trim().strip_prefix("t="))
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or(Refusal::BadSignature)?;
            if now_s.abs_diff(t) > tolerance_s.unsigned_abs() {
                return Err(Refusal::Stale);
            }
            sig::verify_stripe(secret, body, v, now_s, *tolerance_s)
                .then_some(())
                .ok_or(Refusal::BadSignature)
        }
        InboundScheme::StandardWebhooks { tolerance_s } => {
            let (Some(id), Some(ts), Some(sigs)) = (
                header(headers, "webhook-id"),
                header(headers, "webhook-timestamp"),
                header(headers, "webhook-signature"),
            ) else {
                return Err(Refusal::Unsigned);
            };
            let ts: i64 = ts.trim().parse().map_err(|_| Refusal::BadSignature)?;
            if now_s.abs_diff(ts) > tolerance_s.unsigned_abs() {
                return Err(Refusal::Stale);
            }
            let content = sig::signed_content(id, ts, body);
            sig::verify_standard(sigs, &content, &[secret], &[])
                .then_some(())
                .ok_or(Refusal::BadSignature)
        }
    }
}

/// Replaces every Luhn-valid run of 13–19 digits (a card number a processor may have
/// put in its notification) with `[REDACTED]`, so that nothing stored or emitted holds a
/// PAN. Applied after verification, which uses the raw bytes.
pub fn redact_pans(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i > start {
            let run = text.get(start..i).unwrap_or_default();
            if (13..=19).contains(&run.len()) && strongroom_core::pan::luhn_valid(run.as_bytes()) {
                out.push_str("[REDACTED]");
            } else {
                out.push_str(run);
            }
            continue;
        }
        // Copy one (possibly multi-byte) character.
        let ch_len = text
            .get(i..)
            .and_then(|rest| rest.chars().next())
            .map_or(1, char::len_utf8);
        out.push_str(text.get(i..i + ch_len).unwrap_or_default());
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pans_are_redacted_other_numbers_kept() {
        assert_eq!(
            redact_pans(
                r#"{"pan":"4242424242424242","amount":1000,"ref":"1234567890123","é":"x"}"#
            ),
            r#"{"pan":"[REDACTED]","amount":1000,"ref":"1234567890123","é":"x"}"#
        );
        assert_eq!(redact_pans("card 4111111111111111."), "card [REDACTED].");
    }
}
