//! Authentication: `Authorization: Bearer <key>` resolved to a principal.

use crate::error::{ApiError, ApiResult, codes};
use crate::state::{ADMIN_KIND, AppState};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use strongroom_core::{KeyKind, Mode, Scope, Scopes};

/// An authenticated account credential.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key's id.
    pub key_id: String,
    /// The account it belongs to.
    pub account_id: String,
    /// Test or live: it sees only that mode's data.
    pub mode: Mode,
    /// Secret, publishable or restricted.
    pub kind: KeyKind,
    /// What it may do.
    pub scopes: Scopes,
}

impl Principal {
    /// Refuses with `permission_denied` unless the key carries `scope`.
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(codes::PERMISSION_DENIED)
        }
    }
}

/// An authenticated operator (admin key).
#[derive(Debug, Clone)]
pub struct Admin {
    /// The admin key's id.
    pub key_id: String,
}

/// The bearer credential of a request, checked for shape only.
fn bearer(parts: &Parts) -> ApiResult<&str> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(codes::AUTHENTICATION_REQUIRED)?
        .to_str()
        .map_err(|_| codes::INVALID_API_KEY)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(codes::AUTHENTICATION_REQUIRED)?
        .trim();
    if token.is_empty() {
        return Err(codes::AUTHENTICATION_REQUIRED);
    }
    if token.len() > 128
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(codes::INVALID_API_KEY);
    }
    Ok(token)
}

async fn resolve(
    parts: &Parts,
    state: &AppState,
) -> ApiResult<std::sync::Arc<strongroom_store::ApiKeyRecord>> {
    let token = bearer(parts)?;
    let key = state
        .lookup_api_key(token)
        .await?
        .ok_or(codes::INVALID_API_KEY)?;
    if key.revoked_ms.is_some() {
        return Err(codes::API_KEY_REVOKED);
    }
    Ok(key)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = resolve(parts, state).await?;
        let kind = KeyKind::parse(&key.kind).ok_or(codes::INVALID_API_KEY)?;
        let account_id = key.account_id.clone().ok_or(codes::INVALID_API_KEY)?;
        Ok(Principal {
            key_id: key.id.clone(),
            account_id,
            mode: key.mode,
            kind,
            scopes: Scopes::from_storage(&key.scopes),
        })
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = resolve(parts, state).await?;
        if key.kind != ADMIN_KIND || key.account_id.is_some() {
            return Err(codes::PERMISSION_DENIED);
        }
        Ok(Admin {
            key_id: key.id.clone(),
        })
    }
}
