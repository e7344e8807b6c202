//! `--risk-mode`: sets the account's risk switch before the scenarios run, so that
//! tokenize can be measured with its implicit assessment (`enforce`, the default, or
//! `shadow`) and without (`off`), side by side. The switch is an account setting that
//! only a live key may change: the bench makes one with the admin key, uses it once and
//! revokes it.

use std::sync::Arc;

use anyhow::{Context, Result};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::conn::Target;
use crate::relay::{Admin, call, expect};

/// Puts the account of `admin` in risk mode `mode` (`off`, `shadow` or `enforce`).
pub async fn set_mode(target: &Arc<Target>, admin: &Admin, mode: &str) -> Result<()> {
    let keys = format!("/v1/admin/accounts/{}/api_keys", admin.account);
    let body = json!({"kind": "secret", "mode": "live"});
    let (status, bytes) = call(target, Method::POST, &keys, &admin.key, Some(body)).await?;
    let made = expect(
        "creating a live key",
        status,
        &bytes,
        &[StatusCode::CREATED],
    )?;
    let field = |k: &str| made.get(k).and_then(serde_json::Value::as_str);
    let secret = field("secret").context("the new key has no secret")?;
    let id = field("id").context("the new key has no id")?.to_owned();
    let live = crate::bearer(secret)?;
    let body = json!({ "risk_mode": mode });
    let set = call(target, Method::PATCH, "/v1/account", &live, Some(body)).await;
    let revoke = format!("{keys}/{id}");
    let (rs, rb) = call(target, Method::DELETE, &revoke, &admin.key, None).await?;
    expect("revoking the live key", rs, &rb, &[StatusCode::OK])?;
    let (status, bytes) = set?;
    let now = expect("setting the risk mode", status, &bytes, &[StatusCode::OK])?;
    let set_to = now.get("risk_mode").and_then(serde_json::Value::as_str);
    if set_to != Some(mode) {
        anyhow::bail!("the account's risk mode is {set_to:?} after setting {mode}");
    }
    Ok(())
}
