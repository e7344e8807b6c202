//! Account-side gateway controls: request-signing keys (`/v1/signing_keys`), the
//! account settings (`/v1/account`) and the account's IP allowlist (`/v1/ip_allowlist`).
//! Reading them needs `account:read`; changing them needs `account:write` or
//! `signing_keys:write` on a live-mode key, since they protect live traffic.

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::controls::{
    self as svc, AccountControlsView, Ed25519Jwk, IpAllowlistView, SigningKeyView,
};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use strongroom_core::Scope;
use utoipa::ToSchema;

/// Body of `POST /v1/signing_keys`: exactly one of `jwk` and `pem`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSigningKeyBody {
    /// An Ed25519 public JWK.
    pub jwk: Option<Ed25519Jwk>,
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an Ed25519 key.
    #[schema(
        max_length = 4096,
        pattern = "^\\s*-----BEGIN PUBLIC KEY-----[A-Za-z0-9+/=\\s]*-----END PUBLIC KEY-----\\s*$"
    )]
    pub pem: Option<String>,
}

/// Register an Ed25519 public key for RFC 9421 request signatures. Its `id` is the
/// `keyid` to sign with. Exactly one of `jwk` and `pem` (`missing_field` for neither,
/// `invalid_parameter` for both).
#[utoipa::path(post, path = "/v1/signing_keys", tag = "controls", security(("api_key" = [])), request_body = CreateSigningKeyBody,
    responses((status = 201, description = "The key; emits `signing_key.created`", body = SigningKeyView),
        (status = 400, description = "invalid_parameter, missing_field, unknown_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (no signing_keys:write), live_mode_required (a test key)", body = ErrorResponse),
        (status = 409, description = "limit_reached: the account has 10 unrevoked signing keys", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse)))]
pub async fn create_signing_key(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateSigningKeyBody>,
) -> ApiResult<(StatusCode, Json<SigningKeyView>)> {
    who.require_live(Scope::SigningKeysWrite)?;
    let view =
        svc::create_signing_key(&state, &who, body.jwk.as_ref(), body.pem.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Query of `GET /v1/signing_keys`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyQuery {
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A signing key id from the previous page: return the keys created after it.
    #[param(pattern = "^sigk_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

/// List the account's signing keys, oldest first; page with `starting_after`.
#[utoipa::path(get, path = "/v1/signing_keys", tag = "controls", security(("api_key" = [])), params(SigningKeyQuery),
    responses((status = 200, body = List<SigningKeyView>),
        (status = 400, description = "invalid_parameter, unknown_field", body = ErrorResponse),
        (status = 403, description = "permission_denied (no account:read)", body = ErrorResponse)))]
pub async fn list_signing_keys(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<SigningKeyQuery>,
) -> ApiResult<Json<List<SigningKeyView>>> {
    who.require(Scope::AccountRead)?;
    let limit = crate::extract::PageQuery {
        limit: q.limit,
        starting_after: None,
    }
    .limit()?;
    let list =
        svc::list_signing_keys(&state, &who.account_id, q.starting_after.as_deref(), limit).await?;
    Ok(Json(list))
}

/// Revoke a signing key; signatures made with it fail from the next request on.
#[utoipa::path(delete, path = "/v1/signing_keys/{id}", tag = "controls", security(("api_key" = [])),
    params(("id" = String, Path, description = "sigk_…", pattern = "^sigk_[0-9a-f]{32}$")),
    responses((status = 200, description = "The revoked key; emits `signing_key.revoked`", body = SigningKeyView),
        (status = 403, description = "permission_denied (no signing_keys:write), live_mode_required (a test key)", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse)))]
pub async fn revoke_signing_key(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SigningKeyView>> {
    who.require_live(Scope::SigningKeysWrite)?;
    Ok(Json(svc::revoke_signing_key(&state, &who, &id).await?))
}

/// The calling account's gateway settings.
#[utoipa::path(get, path = "/v1/account", tag = "controls", security(("api_key" = [])),
    responses((status = 200, body = AccountControlsView),
        (status = 403, description = "permission_denied (no account:read)", body = ErrorResponse)))]
pub async fn get_account(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<AccountControlsView>> {
    who.require(Scope::AccountRead)?;
    Ok(Json(svc::account_controls(&state, &who.account_id).await?))
}

/// Body of `PATCH /v1/account`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountControlsBody {
    /// Require an RFC 9421 signature on every request of this account.
    pub require_signed_requests: Option<bool>,
    /// The risk switch for the account, both modes (docs/risk.md): `off`, `shadow`
    /// (assess, never refuse) or `enforce` (the default: a `block` refuses).
    pub risk_mode: Option<crate::service::controls::RiskMode>,
    /// The account's IANA time zone (`Europe/Paris`), both modes: the risk signals' hour
    /// of day is the local hour there, daylight saving included. Default `UTC`.
    #[schema(min_length = 1, max_length = 64, example = "Europe/Paris")]
    pub time_zone: Option<String>,
}

/// Change the calling account's gateway settings.
#[utoipa::path(patch, path = "/v1/account", tag = "controls", security(("api_key" = [])), request_body = UpdateAccountControlsBody,
    responses((status = 200, description = "The account's settings; emits `account.updated` in live mode", body = AccountControlsView),
        (status = 400, description = "unknown_field, invalid_request, invalid_parameter (a time zone that is not an IANA name)", body = ErrorResponse),
        (status = 403, description = "permission_denied (no account:write), live_mode_required (a test key)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse)))]
pub async fn update_account(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<UpdateAccountControlsBody>,
) -> ApiResult<Json<AccountControlsView>> {
    who.require_live(Scope::AccountWrite)?;
    let change = svc::AccountChange {
        require_signed_requests: body.require_signed_requests,
        risk_mode: body.risk_mode,
        time_zone: body.time_zone,
    };
    let view = svc::update_account_controls(&state, &who, change).await?;
    Ok(Json(view))
}

/// Body of `PUT /v1/ip_allowlist`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpAllowlistBody {
    /// IPv4/IPv6 CIDRs (or single addresses), at most 100. Empty: no restriction.
    #[schema(max_items = 100)]
    pub cidrs: Vec<String>,
}

/// The account's IP allowlist.
#[utoipa::path(get, path = "/v1/ip_allowlist", tag = "controls", security(("api_key" = [])),
    responses((status = 200, body = IpAllowlistView),
        (status = 403, description = "permission_denied (no account:read)", body = ErrorResponse)))]
pub async fn get_ip_allowlist(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<IpAllowlistView>> {
    who.require(Scope::AccountRead)?;
    Ok(Json(svc::ip_allowlist(&state, &who.account_id).await?))
}

/// Replace the account's IP allowlist. Requests from elsewhere get `403 ip_not_allowed`.
/// Rule JSON Schema cannot state: each entry must parse as an IP address or CIDR
/// (`invalid_parameter`).
#[utoipa::path(put, path = "/v1/ip_allowlist", tag = "controls", security(("api_key" = [])), request_body = IpAllowlistBody,
    responses((status = 200, description = "The allowlist; emits `account.updated` in live mode", body = IpAllowlistView),
        (status = 400, description = "invalid_parameter, unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (no account:write), live_mode_required (a test key)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse)))]
pub async fn put_ip_allowlist(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<IpAllowlistBody>,
) -> ApiResult<Json<IpAllowlistView>> {
    who.require_live(Scope::AccountWrite)?;
    Ok(Json(
        svc::set_ip_allowlist(&state, &who, &body.cidrs).await?,
    ))
}
