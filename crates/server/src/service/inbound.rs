//! Inbound processor hooks: `POST /v1/inbound/{source}`, verified on the raw bytes
//! under the scheme configured for the source.

use crate::service::object_name;
use serde::Serialize;
use utoipa::ToSchema;

object_name!(
    /// `inbound_hook`.
    InboundHookObject = "inbound_hook"
);

/// The answer to a verified notification.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InboundHookView {
    /// Always `inbound_hook`.
    pub object: InboundHookObject,
    /// The id it was recorded under (`evt_…`).
    #[schema(pattern = "^evt_[0-9a-f]{32}$")]
    pub id: String,
    /// Always `true`: a notification that does not verify is refused.
    pub verified: bool,
}

/// The `object` of an `inbound.received` event.
#[derive(Debug, Clone, Serialize)]
pub struct InboundEventObject<'a> {
    /// The id it was recorded under.
    pub id: &'a str,
    /// Always `inbound_hook`.
    pub object: InboundHookObject,
    /// The source's name.
    pub source: &'a str,
    /// The notification, card numbers redacted (`null` unless it is JSON).
    pub payload: &'a serde_json::Value,
}

pub use crate::config::{InboundScheme, InboundSource};

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

/// Verifies a request for `src` at `now_s`. `header` gives a request header's value
/// by name (`None` if absent or not visible ASCII), so this layer needs no HTTP types.
pub fn verify<'h>(
    src: &InboundSource,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_s: i64,
) -> Result<(), Refusal> {
    use strongroom_crypto::webhook as sig;
    let secret = src.secret.expose().as_slice();
    match &src.scheme {
        InboundScheme::HmacSha256Hex { header: name } => {
            let v = header(name).ok_or(Refusal::Unsigned)?;
            sig::verify_hmac_hex(secret, body, v)
                .then_some(())
                .ok_or(Refusal::BadSignature)
        }
        InboundScheme::Stripe {
            header: name,
            tolerance_s,
        } => {
            let v = header(name).ok_or(Refusal::Unsigned)?;
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
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
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

/// What a redacted card number becomes in an inbound notification.
pub const REDACTED: &str = "[REDACTED]";

/// Replaces every card number in `text` with [`REDACTED`], using the leak guard's
/// scanner (plain, spaced or dashed, Luhn-valid). For bodies that are not JSON.
pub fn redact_pans(text: &str) -> String {
    crate::leak_guard::mask_pans(text, REDACTED).into_owned()
}

/// Redacts a parsed notification in place: every string (object keys included), read
/// after JSON escapes were decoded, and every integer that is a card number. A number
/// becomes the string [`REDACTED`]. Depth is bounded by the parser's recursion limit.
pub fn redact_value(v: &mut serde_json::Value) {
    use serde_json::Value;
    use std::borrow::Cow;
    match v {
        Value::String(s) => {
            if let Cow::Owned(m) = crate::leak_guard::mask_pans(s, REDACTED) {
                *s = m;
            }
        }
        Value::Number(n) => {
            let digits = n.to_string();
            if let Cow::Owned(m) = crate::leak_guard::mask_pans(&digits, REDACTED) {
                *v = Value::String(m);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::Object(map) => {
            for (key, mut item) in std::mem::take(map) {
                redact_value(&mut item);
                map.insert(
                    crate::leak_guard::mask_pans(&key, REDACTED).into_owned(),
                    item,
                );
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// A verified notification made safe to keep: the payload to emit (`Null` unless the
/// body is JSON) and the text to store (the redacted JSON re-serialized, so no escape
/// spelling of a number survives; a body that is not JSON is scanned as text; `None` if
/// it is not UTF-8). Applied after verification, which uses the raw bytes.
pub fn redact_body(body: &[u8]) -> (serde_json::Value, Option<String>) {
    let Ok(text) = std::str::from_utf8(body) else {
        return (serde_json::Value::Null, None);
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) => {
            redact_value(&mut v);
            let stored = serde_json::to_string(&v).ok();
            (v, stored)
        }
        Err(_) => (serde_json::Value::Null, Some(redact_pans(text))),
    }
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
        assert_eq!(redact_pans("card 4111 1111-1111 1111."), "card [REDACTED].");
    }

    #[test]
    fn parsed_bodies_are_redacted_after_escapes_are_decoded() {
        let raw = br#"{"a":"\u0034242 4242 4242 4242","4111111111111111":[4000056655665556, 7],"r":"1234567890123"}"#;
        let (v, stored) = redact_body(raw);
        assert_eq!(
            v,
            serde_json::json!({"a": "[REDACTED]", "[REDACTED]": ["[REDACTED]", 7], "r": "1234567890123"})
        );
        let stored = stored.unwrap();
        assert!(!stored.contains("4242") && !stored.contains("4111") && !stored.contains("40000"));
        // Not JSON: scanned as text; not UTF-8: nothing kept.
        assert_eq!(
            redact_body(b"pan=4242-4242-4242-4242").1.unwrap(),
            "pan=[REDACTED]"
        );
        assert_eq!(redact_body(b"\xff4242").1, None);
    }
}
