//! The OTP code in an `otp.created` delivery: sealed under the root key in the stored
//! event, and put back in clear only into the delivery request's zeroizing body. Uses
//! nothing but the root key, so the webhook worker and the OTP service both build on it.

use crate::service::{Result, ServiceError};
use base64::Engine;
use strongroom_crypto::RootKey;
use zeroize::Zeroizing;

/// The context the code is sealed under, for OTP `otp_id`.
pub(crate) fn code_context(otp_id: &str) -> String {
    format!("otp-code|{otp_id}")
}

/// The body delivered for an `otp.created` event: the stored event with the sealed code
/// replaced by the code. Built only for the delivery request, never stored or logged;
/// the code is in clear only in zeroizing memory (see [`crate::secret_body`]).
pub fn delivery_body(root: &RootKey, data: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut v: serde_json::Value = serde_json::from_str(data).map_err(ServiceError::internal)?;
    let obj = v
        .pointer_mut("/data/object")
        .and_then(serde_json::Value::as_object_mut)
        .ok_or_else(|| ServiceError::internal("otp.created event has no object"))?;
    let otp_id = obj
        .get("id")
        .and_then(|i| i.as_str())
        .ok_or_else(|| ServiceError::internal("otp.created event has no id"))?
        .to_owned();
    let sealed = obj
        .remove("sealed_code")
        .and_then(|s| s.as_str().map(str::to_owned))
        .ok_or_else(|| ServiceError::internal("otp.created event has no sealed code"))?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| ServiceError::internal("sealed OTP code is not base64"))?;
    let code = root.unwrap_bytes(&sealed, &code_context(&otp_id))?;
    let code = std::str::from_utf8(&code)
        .map_err(|_| ServiceError::internal("sealed OTP code is not UTF-8"))?;
    with_code(&mut v, code, data.len())
}

/// The stored `otp.created` event `data` with its sealed code moved under the root key
/// in force, during a root rotation: `None` if it is there already, or holds no code
/// that either key opens (the code cannot be delivered either way).
pub(crate) fn rewrap_event(root: &RootKey, data: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut v: serde_json::Value = serde_json::from_slice(data).map_err(ServiceError::internal)?;
    let Some(obj) = v
        .pointer_mut("/data/object")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return Ok(None);
    };
    let (Some(id), Some(sealed)) = (
        obj.get("id").and_then(|i| i.as_str()),
        obj.get("sealed_code").and_then(|s| s.as_str()),
    ) else {
        return Ok(None);
    };
    let Ok(sealed) = base64::engine::general_purpose::STANDARD.decode(sealed) else {
        return Ok(None);
    };
    let Ok(Some(moved)) = root.rewrap(&sealed, &code_context(id)) else {
        return Ok(None);
    };
    obj.insert(
        "sealed_code".into(),
        base64::engine::general_purpose::STANDARD
            .encode(moved)
            .into(),
    );
    serde_json::to_vec(&v)
        .map(Some)
        .map_err(ServiceError::internal)
}

/// `event` serialised as before (`Value::to_string`), with `"code": code` put into
/// `/data/object`. The map takes a placeholder under `code`, so the key lands wherever
/// inserting it would put it; the serializer writes the borrowed code in its place, so
/// the code is never copied into the `Value`.
fn with_code(
    event: &mut serde_json::Value,
    code: &str,
    size_hint: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    event
        .pointer_mut("/data/object")
        .and_then(serde_json::Value::as_object_mut)
        .ok_or_else(|| ServiceError::internal("otp.created event has no object"))?
        .insert("code".into(), serde_json::Value::Null);
    let body = WithCode {
        value: event,
        path: &["data", "object"],
        code,
    };
    crate::secret_body::to_zeroizing_json(&body, size_hint.saturating_add(64))
}

/// Serialises `value`, and at `path` an object whose `code` entry is `code`.
struct WithCode<'a> {
    value: &'a serde_json::Value,
    path: &'a [&'a str],
    code: &'a str,
}

impl serde::Serialize for WithCode<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let serde_json::Value::Object(map) = self.value else {
            return self.value.serialize(s);
        };
        let mut m = s.serialize_map(Some(map.len()))?;
        match self.path.split_first() {
            None => {
                for (k, v) in map {
                    if k == "code" {
                        m.serialize_entry(k, self.code)?;
                    } else {
                        m.serialize_entry(k, v)?;
                    }
                }
            }
            Some((head, rest)) => {
                for (k, v) in map {
                    if k == head {
                        let inner = WithCode {
                            value: v,
                            path: rest,
                            code: self.code,
                        };
                        m.serialize_entry(k, &inner)?;
                    } else {
                        m.serialize_entry(k, v)?;
                    }
                }
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_body_is_what_value_to_string_gave() {
        // Stored events as `state.event_of` writes them, with awkward neighbours of `code`.
        let events = [
            serde_json::json!({
                "id": "evt_0000019a2b3c4d5e6f7a8b9c0d1e2f30",
                "object": "event",
                "type": "otp.created",
                "created": 1_767_000_000,
                "livemode": true,
                "data": {"object": {
                    "id": "otp_0000019a2b3c4d5e6f7a8b9c0d1e2f30",
                    "object": "otp",
                    "purpose": "card.reveal",
                    "card": "card_0000019a2b3c4d5e6f7a8b9c0d1e2f30",
                    "expires_at": 1_767_000_300,
                    "sealed_code": "AAAA",
                }},
            }),
            serde_json::json!({
                "data": {"object": {
                    "cod": 1, "code": "stale", "code_": [1.5, null], "Code": "é\"\\\n",
                    "sealed_code": "AAAA",
                }, "previous": {"code": "not this one"}},
                "code": "nor this one",
            }),
        ];
        for event in events {
            for code in ["042137", "999999", "a\"b\\c\u{1}é"] {
                let data = event.to_string();
                // What the worker sent before.
                let mut before: serde_json::Value = serde_json::from_str(&data).unwrap();
                let obj = before
                    .pointer_mut("/data/object")
                    .and_then(serde_json::Value::as_object_mut)
                    .unwrap();
                obj.remove("sealed_code");
                obj.insert("code".into(), serde_json::Value::String(code.to_string()));
                let before = before.to_string();

                let mut v: serde_json::Value = serde_json::from_str(&data).unwrap();
                v.pointer_mut("/data/object")
                    .and_then(serde_json::Value::as_object_mut)
                    .unwrap()
                    .remove("sealed_code");
                let built = with_code(&mut v, code, data.len()).unwrap();
                assert_eq!(
                    std::str::from_utf8(&built).unwrap(),
                    before,
                    "code {code:?}"
                );
            }
        }
    }
}
