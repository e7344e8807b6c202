//! The service layer: where a key meets a record. Handlers parse and authorise;
//! these functions do the work.

pub mod audit;
pub mod cards;
pub mod controls;
pub mod inbound;
pub mod otp;
pub mod pin;
pub mod rewrap;
pub mod tokens;
pub mod webhooks;

use strongroom_store::{AccountRecord, ApiKeyRecord};

/// The `object` of every list: always `"list"`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListObject {
    /// A page of items.
    #[default]
    List,
}

/// The one list envelope: `{object: "list", data, has_more}`. Every listing returns it;
/// `has_more` says whether another page follows (`starting_after` = the last `id`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct List<T> {
    /// Always `list`.
    pub object: ListObject,
    /// The items of this page, in the listing's order.
    pub data: Vec<T>,
    /// Whether more items follow this page.
    pub has_more: bool,
}

impl<T> List<T> {
    /// A page, with whether more follow.
    pub fn page(data: Vec<T>, has_more: bool) -> Self {
        Self {
            object: ListObject::List,
            data,
            has_more,
        }
    }

    /// A complete listing (nothing more to page through).
    pub fn all(data: Vec<T>) -> Self {
        Self::page(data, false)
    }
}

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
