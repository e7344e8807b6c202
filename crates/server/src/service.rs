//! The service layer: where a key meets a record. Handlers parse and authorise;
//! these functions do the work.

pub mod cards;
pub mod inbound;
pub mod otp;
pub mod pin;
pub mod rewrap;
pub mod tokens;
pub mod webhooks;

use strongroom_store::{AccountRecord, ApiKeyRecord};

/// Unix seconds from milliseconds.
pub fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// The public view of an API key (never its secret or digest).
pub fn api_key_json(k: &ApiKeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "object": "api_key",
        "account": k.account_id,
        "kind": k.kind,
        "mode": k.mode.as_str(),
        "prefix": k.prefix,
        "scopes": match strongroom_core::KeyKind::parse(&k.kind) {
            Some(kind) => kind.held_scopes(&k.scopes).names(),
            None => k.scopes.split_whitespace().collect::<Vec<_>>(),
        },
        "created": secs(k.created_ms),
        "revoked": k.revoked_ms.is_some(),
        "revoked_at": k.revoked_ms.map(secs),
    })
}

/// A URL with any `user:password@` taken out: a row stored before credentials were
/// refused is never echoed with them.
fn without_userinfo(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            // Only fails for URLs that cannot have credentials, which these do not.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

/// The public view of an account.
pub fn account_json(a: &AccountRecord) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "object": "account",
        "name": a.name,
        "otp_delivery_url": a.otp_delivery_url.as_deref().map(without_userinfo),
        "created": secs(a.created_ms),
    })
}
