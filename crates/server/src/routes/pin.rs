//! `/v1/pin/…`, `/v1/cards/{id}/pin…` and the operator's PIN routes. No route returns a
//! PIN or a PIN block.

use crate::auth::{Admin, Principal};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::ErrorResponse;
use crate::service::pin::{
    self as svc, PinJwk, PinSettingsView, PinUnlockedView, PinView, VerifyResult,
};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use strongroom_core::Sensitive;
use utoipa::ToSchema;

/// The current PIN transport key. Encrypt PIN payloads to it as a compact JWE with
/// `alg: RSA-OAEP-256`, `enc: A256GCM` and its `kid`.
#[utoipa::path(get, path = "/v1/pin/encryption_key", tag = "pin", security(("api_key" = [])),
    responses((status = 200, body = PinJwk)))]
pub async fn encryption_key(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<PinJwk>> {
    Ok(Json(svc::current_jwk(&state, &who).await?))
}

/// Body of `PUT /v1/cards/{id}/pin`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPinBody {
    /// Compact JWE of `{"pin", "card", "iat", "jti"}`.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$")]
    pub encrypted_pin: Sensitive<String>,
    /// An OTP with purpose `pin.set` (first PIN) or `pin.reset` (replace and unlock).
    #[schema(pattern = "^otp_[0-9a-f]{32}$")]
    pub otp: String,
    /// Its 6-digit code.
    #[schema(value_type = String, pattern = "^[0-9]{6}$")]
    pub code: Sensitive<String>,
}

/// Set (`pin.set` OTP) or reset (`pin.reset` OTP, also unlocks) a card's PIN.
#[utoipa::path(put, path = "/v1/cards/{id}/pin", tag = "pin", security(("api_key" = [])), request_body = SetPinBody,
    params(("id" = String, Path, description = "card_…", pattern = "^card_[0-9a-f]{32}$")),
    responses((status = 200, body = PinView),
        (status = 400, description = "pin_payload_invalid, pin_payload_unsupported, pin_payload_card_mismatch, pin_payload_stale, pin_length, pin_too_weak, unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (no pins:write), otp_invalid", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "pin_payload_replayed, pin_already_set, conflict", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 423, description = "pin_locked", body = ErrorResponse)))]
pub async fn set(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SetPinBody>,
) -> ApiResult<Json<PinView>> {
    let done = svc::set(
        &state,
        &who,
        &id,
        body.encrypted_pin.expose(),
        &body.otp,
        body.code.expose(),
    )
    .await?;
    Ok(Json(PinView::from(done)))
}

/// Body of `POST /v1/cards/{id}/pin/verify`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyPinBody {
    /// Compact JWE of `{"pin", "card", "iat", "jti"}`.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$")]
    pub encrypted_pin: Sensitive<String>,
}

/// Verify a card's PIN (needs `pins:verify`). A mismatch counts towards the lockout.
#[utoipa::path(post, path = "/v1/cards/{id}/pin/verify", tag = "pin", security(("api_key" = [])), request_body = VerifyPinBody,
    params(("id" = String, Path, description = "card_…", pattern = "^card_[0-9a-f]{32}$")),
    responses((status = 200, body = VerifyResult),
        (status = 400, description = "pin_payload_invalid, pin_payload_unsupported, pin_payload_card_mismatch, pin_payload_stale, pin_length, unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (no pins:verify)", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "pin_payload_replayed, pin_not_set, conflict", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 423, description = "pin_locked", body = ErrorResponse)))]
pub async fn verify(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<VerifyPinBody>,
) -> ApiResult<Json<VerifyResult>> {
    let matched = svc::verify(&state, &who, &id, body.encrypted_pin.expose()).await?;
    Ok(Json(VerifyResult { matched }))
}

/// Body of `POST /v1/cards/{id}/pin/change`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePinBody {
    /// The current PIN, as a compact JWE.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$")]
    pub encrypted_current_pin: Sensitive<String>,
    /// The new PIN, as a compact JWE (another `jti`).
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$")]
    pub encrypted_new_pin: Sensitive<String>,
    /// An OTP with purpose `pin.change`.
    #[schema(pattern = "^otp_[0-9a-f]{32}$")]
    pub otp: String,
    /// Its 6-digit code.
    #[schema(value_type = String, pattern = "^[0-9]{6}$")]
    pub code: Sensitive<String>,
}

/// Change a card's PIN: the current PIN and a `pin.change` OTP.
#[utoipa::path(post, path = "/v1/cards/{id}/pin/change", tag = "pin", security(("api_key" = [])), request_body = ChangePinBody,
    params(("id" = String, Path, description = "card_…", pattern = "^card_[0-9a-f]{32}$")),
    responses((status = 200, body = PinView),
        (status = 400, description = "pin_payload_invalid, pin_payload_unsupported, pin_payload_card_mismatch, pin_payload_stale, pin_length, pin_too_weak, unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "pin_incorrect, otp_invalid, permission_denied (no pins:write)", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "pin_payload_replayed, pin_not_set, conflict", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 423, description = "pin_locked", body = ErrorResponse)))]
pub async fn change(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ChangePinBody>,
) -> ApiResult<Json<PinView>> {
    let view = svc::change(
        &state,
        &who,
        &id,
        body.encrypted_current_pin.expose(),
        body.encrypted_new_pin.expose(),
        &body.otp,
        body.code.expose(),
    )
    .await?;
    Ok(Json(view))
}

/// Unlock a card's PIN and clear its failure counter (operators).
#[utoipa::path(post, path = "/v1/admin/cards/{id}/pin/unlock", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "card_…", pattern = "^card_[0-9a-f]{32}$")),
    responses((status = 200, body = PinUnlockedView),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "pin_not_set", body = ErrorResponse)))]
pub async fn admin_unlock(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<PinUnlockedView>> {
    Ok(Json(svc::admin_unlock(&state, &admin, &id).await?))
}

/// Rotate the PIN transport key; the previous key decrypts for the grace period.
#[utoipa::path(post, path = "/v1/admin/pin/encryption_key/rotate", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, description = "The new current key", body = PinJwk),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse)))]
pub async fn admin_rotate(State(state): State<AppState>, admin: Admin) -> ApiResult<Json<PinJwk>> {
    Ok(Json(svc::rotate_transport_key(&state, &admin).await?))
}

/// Body of `POST /v1/admin/accounts/{id}/pin_settings`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinSettingsBody {
    /// Consecutive failures before a PIN locks: 1–10.
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(minimum = 1, maximum = 10)]
    pub max_failures: i64,
}

/// An account's PIN settings.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}/pin_settings", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "acct_…", pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, body = PinSettingsView),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse)))]
pub async fn get_settings(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<PinSettingsView>> {
    Ok(Json(svc::settings(&state, &id).await?))
}

/// Set an account's PIN lockout threshold (1–10; default 3).
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/pin_settings", tag = "admin", security(("admin_key" = [])), request_body = PinSettingsBody,
    params(("id" = String, Path, description = "acct_…", pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, body = PinSettingsView),
        (status = 400, description = "invalid_parameter, unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse)))]
pub async fn set_settings(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PinSettingsBody>,
) -> ApiResult<Json<PinSettingsView>> {
    Ok(Json(
        svc::set_max_failures(&state, &admin, &id, body.max_failures).await?,
    ))
}
