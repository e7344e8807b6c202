//! Authentication: `Authorization: Bearer <key>` resolved to a principal. The bearer
//! credential is an API key, or (on account routes) a JWT from `POST /v1/auth/token`,
//! told apart by the JWT's dots, which an API key never contains.

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
    /// The token id (`jti`) when the request carried a bearer JWT rather than the key.
    pub token_id: Option<String>,
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

/// Longest bearer JWT we look at (an RS256 token is about 700 bytes).
const MAX_JWT_LEN: usize = 4096;

/// The bearer credential if it is shaped like a JWT (three base64url parts).
fn bearer_jwt(parts: &Parts) -> ApiResult<Option<&str>> {
    let Some(value) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
    else {
        return Ok(None);
    };
    if !token.contains('.') {
        return Ok(None);
    }
    let shaped = token.len() <= MAX_JWT_LEN
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if shaped {
        Ok(Some(token))
    } else {
        Err(codes::TOKEN_INVALID)
    }
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
) -> ApiResult<(
    std::sync::Arc<strongroom_store::ApiKeyRecord>,
    Option<crate::gateway::Prefetched>,
)> {
    let token = bearer(parts)?;
    let (key, pre) = state
        .lookup_api_key(token)
        .await?
        .ok_or(codes::INVALID_API_KEY)?;
    if key.revoked_ms.is_some() {
        return Err(codes::API_KEY_REVOKED);
    }
    Ok((key, pre))
}

/// Arms the request's audit record: the actor, or a failed authentication.
fn audited<T>(
    parts: &Parts,
    r: ApiResult<T>,
    who: impl Fn(&T) -> (String, String),
) -> ApiResult<T> {
    let t = parts.extensions.get::<crate::audit::RequestAudit>();
    match &r {
        Ok(v) => {
            let (actor, account) = who(v);
            crate::audit::arm(t, &actor, &account, None);
        }
        Err(e) => crate::audit::arm(t, "anonymous", "", Some(e.code)),
    }
    r
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Already resolved by the gateway middleware.
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let r = match Self::resolve(parts, state).await {
            Ok((p, pre)) => {
                if let Some(pre) = pre {
                    parts.extensions.insert(pre);
                }
                Ok(p)
            }
            Err(e) => Err(e),
        };
        audited(parts, r, |p| (p.key_id.clone(), p.account_id.clone()))
    }
}

impl Principal {
    async fn resolve(
        parts: &Parts,
        state: &AppState,
    ) -> Result<(Self, Option<crate::gateway::Prefetched>), ApiError> {
        if let Some(jwt) = bearer_jwt(parts)? {
            return Ok((state.tokens().authenticate(state, jwt).await?, None));
        }
        let (key, pre) = resolve(parts, state).await?;
        let kind = KeyKind::parse(&key.kind).ok_or(codes::INVALID_API_KEY)?;
        let account_id = key.account_id.clone().ok_or(codes::INVALID_API_KEY)?;
        let p = Principal {
            key_id: key.id.clone(),
            account_id,
            mode: key.mode,
            kind,
            scopes: Scopes::from_storage(&key.scopes),
            token_id: None,
        };
        Ok((p, pre))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Already resolved by the gateway middleware.
        if let Some(a) = parts.extensions.get::<Admin>() {
            return Ok(a.clone());
        }
        let r = Self::resolve(parts, state).await;
        audited(parts, r, |a| (format!("admin:{}", a.key_id), String::new()))
    }
}

impl Admin {
    async fn resolve(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        // An admin key has no account: nothing was prefetched.
        let (key, _) = resolve(parts, state).await?;
        if key.kind != ADMIN_KIND || key.account_id.is_some() {
            return Err(codes::PERMISSION_DENIED);
        }
        Ok(Admin {
            key_id: key.id.clone(),
        })
    }
}
