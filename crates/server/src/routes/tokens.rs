//! Bearer tokens: `POST /v1/auth/token`, the JWKS, JWT key rotation, and revoke-all.

use crate::auth::{Admin, Principal};
use crate::error::{ApiResult, codes};
use crate::extract::{ApiBytes, ApiPath, EmptyBody, optional_json};
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::tokens::{AccessTokenView, JwksView, JwtKeyView, KeysRevokedView};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use strongroom_core::{IdKind, Scopes, parse_id};
use utoipa::ToSchema;

/// Body of `POST /v1/auth/token` (optional: no body, or `null`, means every scope of
/// the key).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// Space-separated scopes to narrow the token to; each must be held by the key.
    #[schema(pattern = "\\S")]
    pub scope: Option<String>,
}

/// Issue a short-lived bearer token (JWT) from a secret or restricted API key. Rule
/// JSON Schema cannot state: every scope named must be known and held by the key
/// (`invalid_scope`).
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", security(("api_key" = [])), request_body(content = Option<TokenBody>, description = "Optional"),
    responses(
        (status = 200, description = "The token; `Cache-Control: no-store`", body = AccessTokenView),
        (status = 400, description = "invalid_scope, unknown_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (publishable keys and bearer tokens cannot issue tokens)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse)))]
pub async fn issue(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<AccessTokenView>> {
    principal.require_token_issuer()?;
    let body: TokenBody = optional_json(&headers, &body)?;
    let requested = match body.scope.as_deref() {
        None => None,
        Some(s) => {
            Some(Scopes::parse_list(s.split_whitespace()).map_err(|_| codes::INVALID_SCOPE)?)
        }
    };
    let t = state.tokens().issue(&principal, requested).await?;
    Ok(Json(AccessTokenView::from(t)))
}

/// The public keys that sign bearer tokens (RFC 7517 JWK Set), by `kid`. Includes the
/// next key before it signs and previous keys until their tokens have expired.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, body = JwksView)))]
pub async fn jwks(State(state): State<AppState>) -> ApiResult<Json<JwksView>> {
    Ok(Json(state.tokens().jwks().await?))
}

/// List the JWT signing keys: `pending` (published, not yet signing), `active`,
/// `retiring` (published until its tokens expire), `expired`.
#[utoipa::path(get, path = "/v1/admin/jwt_keys", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, description = "The key generations and their states, oldest first", body = List<JwtKeyView>),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse)))]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<List<JwtKeyView>>> {
    Ok(Json(state.tokens().list(true).await?))
}

/// Rotate the JWT signing key: the new key is published now and signs after the
/// pre-publication period.
#[utoipa::path(post, path = "/v1/admin/jwt_keys/rotate", tag = "admin", security(("admin_key" = [])), request_body(content = Option<EmptyBody>, description = "Optional"),
    responses((status = 200, description = "The key generations after the rotation", body = List<JwtKeyView>),
        (status = 400, description = "unknown_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse),
        (status = 409, description = "conflict: a concurrent rotation won; retry", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse)))]
pub async fn rotate(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<List<JwtKeyView>>> {
    let _: EmptyBody = optional_json(&headers, &body)?;
    Ok(Json(state.tokens().rotate(Some(&admin.audit)).await?))
}

/// Incident response: revoke every API key of an account, and with them every bearer
/// token issued from them. Later requests get `401 api_key_revoked` / `token_revoked`.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/revoke_all", tag = "admin", security(("admin_key" = [])), request_body(content = Option<EmptyBody>, description = "Optional"),
    params(("id" = String, Path, description = "acct_…", pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, description = "Emits `account.keys_revoked`", body = KeysRevokedView),
        (status = 400, description = "unknown_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse)))]
pub async fn revoke_all(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<KeysRevokedView>> {
    parse_id(IdKind::Account, &id)?;
    let _: EmptyBody = optional_json(&headers, &body)?;
    Ok(Json(state.tokens().revoke_all(&admin.audit, &id).await?))
}
