//! `/v1/pin/…`, `/v1/cards/{id}/pin…` and the operator's PIN routes. No route returns a
//! PIN or a PIN block.

use crate::auth::{Admin, Principal};
use crate::error::{ApiResult, codes};
use crate::extract::{ApiJson, ApiPath};
use crate::service::pin as svc;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strongroom_core::{IdKind, Sensitive, parse_id};
use strongroom_store::PinStore;
use utoipa::ToSchema;

/// The PIN transport key (RFC 7517 JWK).
#[derive(Serialize, ToSchema)]
pub struct PinJwk {
    /// Always `RSA`.
    pub kty: String,
    /// Put it in the JWE header.
    pub kid: String,
    /// Always `enc`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Always `RSA-OAEP-256`.
    pub alg: String,
    /// Modulus (3072 bits), base64url.
    pub n: String,
    /// Exponent, base64url.
    pub e: String,
}

/// The current PIN transport key. Encrypt PIN payloads to it as a compact JWE with
/// `alg: RSA-OAEP-256`, `enc: A256GCM` and its `kid`.
#[utoipa::path(get, path = "/v1/pin/encryption_key", tag = "pin", security(("api_key" = [])),
    responses((status = 200, body = PinJwk)))]
pub async fn encryption_key(
    State(state): State<AppState>,
    _who: Principal,
) -> ApiResult<Json<Value>> {
    Ok(Json(svc::current_jwk(&state).await?))
}

/// Body of `PUT /v1/cards/{id}/pin`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPinBody {
    /// Compact JWE of `{"pin", "card", "iat", "jti"}`.
    #[schema(value_type = String)]
    pub encrypted_pin: Sensitive<String>,
    /// An OTP with purpose `pin.set` (first PIN) or `pin.reset` (replace and unlock).
    pub otp: String,
    /// Its 6-digit code.
    #[schema(value_type = String)]
    pub code: Sensitive<String>,
}

/// A card's PIN state (never the PIN).
#[derive(Serialize, ToSchema)]
pub struct PinView {
    /// Always `card_pin`.
    pub object: &'static str,
    /// `card_…`
    pub card: String,
    /// Always true after a set.
    pub set: bool,
    /// Whether a `pin.reset` OTP was used.
    pub reset: bool,
}

/// Set (`pin.set` OTP) or reset (`pin.reset` OTP, also unlocks) a card's PIN.
#[utoipa::path(put, path = "/v1/cards/{id}/pin", tag = "pin", security(("api_key" = [])), request_body = SetPinBody,
    params(("id" = String, Path, description = "card_…")),
    responses((status = 200, body = PinView),
        (status = 400, description = "pin_payload_invalid, pin_payload_unsupported, pin_payload_card_mismatch, pin_payload_stale, pin_length, pin_too_weak", body = crate::openapi::ErrorResponse),
        (status = 403, description = "permission_denied, otp_invalid", body = crate::openapi::ErrorResponse),
        (status = 404, description = "not_found", body = crate::openapi::ErrorResponse),
        (status = 409, description = "pin_payload_replayed, pin_already_set", body = crate::openapi::ErrorResponse),
        (status = 423, description = "pin_locked", body = crate::openapi::ErrorResponse)))]
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
    Ok(Json(PinView {
        object: "card_pin",
        card: done.card_id,
        set: true,
        reset: done.reset,
    }))
}

/// Body of `POST /v1/cards/{id}/pin/verify`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyPinBody {
    /// Compact JWE of `{"pin", "card", "iat", "jti"}`.
    #[schema(value_type = String)]
    pub encrypted_pin: Sensitive<String>,
}

/// The result of a verification.
#[derive(Serialize, ToSchema)]
pub struct VerifyResult {
    /// Whether the PIN matched.
    #[serde(rename = "match")]
    pub matched: bool,
}

/// Verify a card's PIN (needs `pins:verify`). A mismatch counts towards the lockout.
#[utoipa::path(post, path = "/v1/cards/{id}/pin/verify", tag = "pin", security(("api_key" = [])), request_body = VerifyPinBody,
    params(("id" = String, Path, description = "card_…")),
    responses((status = 200, body = VerifyResult),
        (status = 400, description = "pin_payload_invalid, pin_payload_unsupported, pin_payload_card_mismatch, pin_payload_stale, pin_length", body = crate::openapi::ErrorResponse),
        (status = 409, description = "pin_payload_replayed, pin_not_set", body = crate::openapi::ErrorResponse),
        (status = 423, description = "pin_locked", body = crate::openapi::ErrorResponse)))]
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
    #[schema(value_type = String)]
    pub encrypted_current_pin: Sensitive<String>,
    /// The new PIN, as a compact JWE (another `jti`).
    #[schema(value_type = String)]
    pub encrypted_new_pin: Sensitive<String>,
    /// An OTP with purpose `pin.change`.
    pub otp: String,
    /// Its 6-digit code.
    #[schema(value_type = String)]
    pub code: Sensitive<String>,
}

/// Change a card's PIN: the current PIN and a `pin.change` OTP.
#[utoipa::path(post, path = "/v1/cards/{id}/pin/change", tag = "pin", security(("api_key" = [])), request_body = ChangePinBody,
    params(("id" = String, Path, description = "card_…")),
    responses((status = 200, body = PinView),
        (status = 400, description = "pin_payload_*, pin_length, pin_too_weak", body = crate::openapi::ErrorResponse),
        (status = 403, description = "pin_incorrect, otp_invalid, permission_denied", body = crate::openapi::ErrorResponse),
        (status = 409, description = "pin_payload_replayed, pin_not_set, conflict", body = crate::openapi::ErrorResponse),
        (status = 423, description = "pin_locked", body = crate::openapi::ErrorResponse)))]
pub async fn change(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ChangePinBody>,
) -> ApiResult<Json<PinView>> {
    svc::change(
        &state,
        &who,
        &id,
        body.encrypted_current_pin.expose(),
        body.encrypted_new_pin.expose(),
        &body.otp,
        body.code.expose(),
    )
    .await?;
    Ok(Json(PinView {
        object: "card_pin",
        card: id,
        set: true,
        reset: false,
    }))
}

/// Unlock a card's PIN and clear its failure counter (operators).
#[utoipa::path(post, path = "/v1/admin/cards/{id}/pin/unlock", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "card_…")),
    responses((status = 200, description = "{object: card_pin, card, locked: false}"), (status = 409, description = "pin_not_set", body = crate::openapi::ErrorResponse)))]
pub async fn admin_unlock(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    svc::admin_unlock(&state, &admin.key_id, &id).await?;
    Ok(Json(
        json!({"object": "card_pin", "card": id, "locked": false}),
    ))
}

/// Rotate the PIN transport key; the previous key decrypts for the grace period.
#[utoipa::path(post, path = "/v1/admin/pin/encryption_key/rotate", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, description = "The new current key as a JWK")))]
pub async fn admin_rotate(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(svc::rotate_transport_key(&state).await?))
}

/// Body of `POST /v1/admin/accounts/{id}/pin_settings`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinSettingsBody {
    /// Consecutive failures before a PIN locks: 1–10.
    pub max_failures: i64,
}

async fn settings_json(state: &AppState, id: &str) -> ApiResult<Value> {
    Ok(json!({
        "object": "pin_settings",
        "account": id,
        "max_failures": svc::max_failures(state, id).await?,
    }))
}

/// An account's PIN settings.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}/pin_settings", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path)), responses((status = 200, description = "{object: pin_settings, account, max_failures}")))]
pub async fn get_settings(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    state.accounts().get(&id).await?;
    Ok(Json(settings_json(&state, &id).await?))
}

/// Set an account's PIN lockout threshold (1–10; default 3).
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/pin_settings", tag = "admin", security(("admin_key" = [])), request_body = PinSettingsBody,
    params(("id" = String, Path)), responses((status = 200, description = "{object: pin_settings, account, max_failures}"),
        (status = 400, description = "invalid_parameter", body = crate::openapi::ErrorResponse)))]
pub async fn set_settings(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PinSettingsBody>,
) -> ApiResult<Json<Value>> {
    parse_id(IdKind::Account, &id)?;
    if !svc::MAX_FAILURES_RANGE.contains(&body.max_failures) {
        return Err(codes::INVALID_PARAMETER);
    }
    state.accounts().get(&id).await?;
    state
        .store()
        .set_pin_max_failures(&id, body.max_failures)
        .await?;
    Ok(Json(settings_json(&state, &id).await?))
}
