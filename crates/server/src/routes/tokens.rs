//! Bearer tokens: `POST /v1/auth/token`, the JWKS, JWT key rotation, and revoke-all.

use crate::auth::{Admin, Principal};
use crate::error::{ApiResult, codes};
use crate::extract::{ApiPath, optional_json};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use strongroom_core::{IdKind, KeyKind, Scopes, parse_id};
use utoipa::ToSchema;

/// Body of `POST /v1/auth/token` (optional: no body means every scope of the key).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// Space-separated scopes to narrow the token to; each must be held by the key.
    pub scope: Option<String>,
}

/// An empty body or a JSON object with no fields.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// Issue a short-lived bearer token (JWT) from a secret or restricted API key.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", security(("api_key" = [])), request_body(content = TokenBody, description = "Optional"),
    responses(
        (status = 200, description = "`{access_token, token_type: \"Bearer\", expires_in, scope}`; `Cache-Control: no-store`"),
        (status = 400, description = "invalid_scope"),
        (status = 403, description = "permission_denied (publishable keys and bearer tokens cannot issue tokens)")))]
pub async fn issue(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    crate::extract::ApiBytes(body): crate::extract::ApiBytes,
) -> ApiResult<Json<Value>> {
    if principal.token_id.is_some() || principal.kind == KeyKind::Publishable {
        return Err(codes::PERMISSION_DENIED);
    }
    let body: TokenBody = optional_json(&headers, &body)?;
    let requested = match body.scope.as_deref() {
        None => None,
        Some(s) => {
            Some(Scopes::parse_list(s.split_whitespace()).map_err(|_| codes::INVALID_SCOPE)?)
        }
    };
    let t = state.tokens().issue(&principal, requested).await?;
    Ok(Json(json!({
        "access_token": t.token.expose(),
        "token_type": "Bearer",
        "expires_in": t.expires_in,
        "scope": t.scope,
    })))
}

/// The public keys that sign bearer tokens (RFC 7517 JWK Set), by `kid`. Includes the
/// next key before it signs and previous keys until their tokens have expired.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "`{keys: [{kty, crv|n,e, x, kid, alg, use}]}`")))]
pub async fn jwks(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(state.tokens().jwks().await?))
}

/// List the JWT signing keys: `pending` (published, not yet signing), `active`,
/// `retiring` (published until its tokens expire), `expired`.
#[utoipa::path(get, path = "/v1/admin/jwt_keys", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, description = "The key generations and their states")))]
pub async fn list_keys(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(state.tokens().list(true).await?))
}

/// Rotate the JWT signing key: the new key is published now and signs after the
/// pre-publication period.
#[utoipa::path(post, path = "/v1/admin/jwt_keys/rotate", tag = "admin", security(("admin_key" = [])), request_body(content = EmptyBody, description = "Optional"),
    responses((status = 200, description = "The key generations after the rotation"), (status = 409, description = "conflict: a concurrent rotation won; retry")))]
pub async fn rotate(
    State(state): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    crate::extract::ApiBytes(body): crate::extract::ApiBytes,
) -> ApiResult<Json<Value>> {
    let _: EmptyBody = optional_json(&headers, &body)?;
    Ok(Json(state.tokens().rotate().await?))
}

/// Incident response: revoke every API key of an account, and with them every bearer
/// token issued from them. Later requests get `401 api_key_revoked` / `token_revoked`.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/revoke_all", tag = "admin", security(("admin_key" = [])), request_body(content = EmptyBody, description = "Optional"),
    params(("id" = String, Path)),
    responses((status = 200, description = "`{object: \"account\", id, revoked_keys}`; emits `account.keys_revoked`"), (status = 404, description = "not_found")))]
pub async fn revoke_all(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    crate::extract::ApiBytes(body): crate::extract::ApiBytes,
) -> ApiResult<Json<Value>> {
    parse_id(IdKind::Account, &id)?;
    let _: EmptyBody = optional_json(&headers, &body)?;
    let n = state.tokens().revoke_all(&id).await?;
    Ok(Json(
        json!({"object": "account", "id": id, "revoked_keys": n}),
    ))
}
