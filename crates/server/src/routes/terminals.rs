//! Card-present terminals (docs/card-present.md): `/v1/terminals`, which registers the
//! merchant's DUKPT terminals, and `/v1/terminals/{id}/cards`, where the merchant's
//! point-of-sale back end passes on what a terminal enciphered, without ever holding it
//! in clear.

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::cards::TokenizeView;
use crate::service::terminals::{
    self as svc, Enciphered, NewTerminal, PinFormat, PinSent, PinTranslationView, TerminalView,
};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use strongroom_core::Sensitive;
use strongroom_core::track::TrackKind;
use utoipa::ToSchema;

/// Register a terminal under one of the account's imported base derivation keys: its
/// AES-DUKPT Initial Key ID, or its TDES-DUKPT initial key serial number. Needs
/// `terminals:write`. Rules JSON Schema cannot state: `invalid_parameter` (both
/// identities or neither, or one that does not fit the BDK's algorithm),
/// `bdk_unsupported` (a triple-length TDES BDK).
#[utoipa::path(post, path = "/v1/terminals", tag = "terminals", security(("api_key" = [])), request_body = NewTerminal,
    responses((status = 201, description = "The terminal", body = TerminalView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, bdk_unknown, bdk_unsupported, limit_reached", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no terminals:write), ip_not_allowed", body = ErrorResponse),
        (status = 409, description = "terminal_exists", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<NewTerminal>,
) -> ApiResult<(StatusCode, Json<TerminalView>)> {
    let t = svc::create(&state, &who, &body).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// The account's terminals in the key's mode, oldest first.
#[utoipa::path(get, path = "/v1/terminals", tag = "terminals", security(("api_key" = [])),
    responses((status = 200, body = List<TerminalView>),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no terminals:write), ip_not_allowed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<List<TerminalView>>> {
    Ok(Json(svc::list(&state, &who).await?))
}

/// One terminal of the account, in the key's mode.
#[utoipa::path(get, path = "/v1/terminals/{id}", tag = "terminals", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^term_[0-9a-f]{32}$")),
    responses((status = 200, body = TerminalView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no terminals:write), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TerminalView>> {
    Ok(Json(svc::get(&state, &who, &id).await?))
}

/// Disable a terminal for good (a device lost, stolen or retired): what it sends from
/// now on is refused with `terminal_disabled`.
#[utoipa::path(post, path = "/v1/terminals/{id}/disable", tag = "terminals", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^term_[0-9a-f]{32}$")),
    responses((status = 200, body = TerminalView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no terminals:write), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn disable(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TerminalView>> {
    Ok(Json(svc::disable(&state, &who, &id).await?))
}

/// What the enciphered data holds.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// Track 2, `PAN=YYMM…`, with or without its `;` and `?` sentinels.
    Track2,
    /// Track 1, `%BPAN^NAME^YYMM…?`.
    Track1,
    /// `PAN=YYMM`.
    PanExpiry,
    /// EMV BER-TLV: 5A and 5F24, or 57 (track 2 equivalent data); 5F20 and 5F30 kept.
    EmvTlv,
}

/// The cipher the terminal enciphered with, in CBC mode with a zero IV.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum CipherName {
    /// AES (AES-DUKPT terminals).
    #[serde(rename = "aes-cbc")]
    AesCbc,
    /// TDES (TDES-DUKPT terminals).
    #[serde(rename = "tdes-cbc")]
    TdesCbc,
}

/// The key the data is enciphered under.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyUsage {
    /// The transaction's data-encryption key (AES-DUKPT usage 3000, TDES-DUKPT's data
    /// variant through its one-way function).
    Data,
}

/// Body of `POST /v1/terminals/{id}/cards`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalCardBody {
    /// The transaction's key serial number, hex: AES-DUKPT 12 bytes (Initial Key ID and
    /// counter), TDES-DUKPT 10.
    #[schema(pattern = "^([0-9A-Fa-f]{20}|[0-9A-Fa-f]{24})$")]
    pub ksn: String,
    /// What the terminal enciphered, hex or base64: at most 4,096 bytes, a whole number
    /// of cipher blocks; zero or PKCS#7 padding.
    #[schema(value_type = String, min_length = 1, max_length = 8192)]
    pub encrypted_data: Sensitive<String>,
    /// What it holds.
    pub data: DataKind,
    /// `aes-cbc` for an AES-DUKPT terminal, `tdes-cbc` for a TDES-DUKPT one.
    pub cipher: CipherName,
    /// Always `data` (the default).
    pub key_usage: Option<KeyUsage>,
}

/// Decipher what a terminal sent and tokenize the card in it, exactly as `POST
/// /v1/cards` does with the same number, expiry and name (the same deduplication,
/// fingerprint and `card.created` event); the rest of the data (service code,
/// discretionary data, any CVV or iCVV) is discarded. Needs `terminals:use`; a caller
/// that also holds `cards:read` gets the card, any other a card token. Each transaction
/// counter is accepted once, moving forward (`ksn_replayed`). Whatever fails between
/// the key serial number and the parsed card (a KSN of another device, a wrong key, bad
/// padding, truncated or non-card data) is one `422 decryption_failed`, recorded in the
/// audit log. Rules JSON Schema cannot state: `invalid_parameter` (a cipher that is not
/// the terminal's, data that is neither hex nor base64), `ksn_invalid` (a counter a
/// terminal never uses).
#[utoipa::path(post, path = "/v1/terminals/{id}/cards", tag = "terminals", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^term_[0-9a-f]{32}$")),
    request_body = TerminalCardBody,
    responses((status = 201, description = "Tokenized (a card, or a card token for a caller without cards:read)", body = TokenizeView),
        (status = 200, description = "The number was already vaulted in this account and mode", body = TokenizeView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, ksn_invalid, card_expired, card_brand_unknown, expiry_invalid, test_card_in_live_mode, live_card_in_test_mode", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no terminals:use), suspended, risk_blocked, ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "ksn_replayed, terminal_disabled", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 422, description = "decryption_failed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn cards(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TerminalCardBody>,
) -> ApiResult<(StatusCode, Json<TokenizeView>)> {
    let kind = match body.data {
        DataKind::Track2 => TrackKind::Track2,
        DataKind::Track1 => TrackKind::Track1,
        DataKind::PanExpiry => TrackKind::PanExpiry,
        DataKind::EmvTlv => TrackKind::EmvTlv,
    };
    let cipher = match body.cipher {
        CipherName::AesCbc => "aes-cbc",
        CipherName::TdesCbc => "tdes-cbc",
    };
    let KeyUsage::Data = body.key_usage.unwrap_or(KeyUsage::Data);
    let sent = Enciphered {
        ksn: &body.ksn,
        data: &body.encrypted_data,
        kind,
        cipher,
    };
    let t = svc::tokenize(&state, &who, &id, sent).await?;
    crate::routes::cards::tokenized(&state, &who, t)
}

/// Where a translated PIN block goes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TranslateTo {
    /// The processor's zone PIN key: a `zpk_…` imported into this account under dual
    /// control.
    #[schema(pattern = "^zpk_[0-9a-f]{32}$")]
    pub zone_key: String,
    /// `iso0` under a TDES zone key, `iso4` under an AES one.
    pub format: PinFormat,
}

/// Body of `POST /v1/terminals/{id}/pin_translations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinTranslationBody {
    /// The transaction's key serial number, hex (as for the card data).
    #[schema(pattern = "^([0-9A-Fa-f]{20}|[0-9A-Fa-f]{24})$")]
    pub ksn: String,
    /// The terminal's PIN block, hex: 16 digits (`iso0`) or 32 (`iso4`).
    #[schema(value_type = String, pattern = "^([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})$")]
    pub pin_block: Sensitive<String>,
    /// `iso0` for a TDES-DUKPT terminal, `iso4` for an AES-DUKPT one.
    pub format: PinFormat,
    /// The card the PIN was entered for (`card_…`, of this account and mode).
    #[schema(pattern = "^card_[0-9a-f]{32}$")]
    pub card: String,
    /// The zone PIN key and format to re-encipher under.
    pub to: TranslateTo,
}

/// Translate a PIN block from a terminal's DUKPT PIN key to a processor's zone PIN key:
/// deciphered under the transaction's PIN key, checked against the card's PAN,
/// re-enciphered under the zone key in the format asked, and only the new block returned
/// (the clear PIN lives in zeroizing memory for the call). The block can also be placed
/// in one relay request within 60 seconds: `{{card_…:pin_block:pint_…}}`. Needs
/// `terminals:use`. The terminal's PIN counter moves forward like its card-data counter,
/// on its own (`ksn_replayed`). A block that does not decipher to a PIN for this card
/// under this KSN is `422 decryption_failed`. Rules JSON Schema cannot state:
/// `invalid_parameter` (a format that is not the terminal's or the zone key's, a block of
/// the other format's length), `ksn_invalid`.
#[utoipa::path(post, path = "/v1/terminals/{id}/pin_translations", tag = "terminals", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^term_[0-9a-f]{32}$")),
    request_body = PinTranslationBody,
    responses((status = 201, description = "The translated block", body = PinTranslationView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, ksn_invalid, zone_key_unknown, idempotency_not_supported (the answer carries a PIN block, which is never stored)", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no terminals:use), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found (the terminal or the card)", body = ErrorResponse),
        (status = 409, description = "ksn_replayed, terminal_disabled", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 422, description = "decryption_failed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn pin_translations(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PinTranslationBody>,
) -> ApiResult<(StatusCode, Json<PinTranslationView>)> {
    let sent = PinSent {
        ksn: &body.ksn,
        pin_block: &body.pin_block,
        format: body.format,
        card: &body.card,
        zone_key: &body.to.zone_key,
        to_format: body.to.format,
    };
    let out = svc::translate_pin(&state, &who, &id, sent).await?;
    Ok((StatusCode::CREATED, Json(out)))
}
