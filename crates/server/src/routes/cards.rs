//! `/v1/cards` and `/v1/otp`.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::cards::{
    self as svc, CardView, DeletedCardView, NewCard, RevealedView, TokenizeView,
};
use crate::service::otp::{self, OtpView};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use strongroom_core::{Scope, Sensitive};
use utoipa::ToSchema;

/// Body of `POST /v1/cards`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCardBody {
    /// 12–19 digits; spaces and dashes allowed.
    #[schema(value_type = String, example = "4242 4242 4242 4242", max_length = 64, pattern = "^[ -]*([0-9][ -]*){12,19}$")]
    pub number: Sensitive<String>,
    /// 1–12.
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(minimum = 1, maximum = 12)]
    pub exp_month: i64,
    /// Four digits (two accepted: `30` is 2030); at most 50 years ahead.
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(minimum = 0, maximum = 2199)]
    pub exp_year: i64,
    /// Optional, at most 200 characters, no control characters; stored encrypted.
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub cardholder_name: Option<Sensitive<String>>,
    /// Optional card verification code: 4 digits on American Express, 3 on any other
    /// brand. Never stored: held sealed in memory (in Redis where nodes share it) for at
    /// most 10 minutes and spent by its first use in a relay; the card shows
    /// `cvc_available` meanwhile. Sending one for a card already vaulted holds it for
    /// that card.
    #[schema(value_type = Option<String>, example = "737", min_length = 3, max_length = 4, pattern = "^[0-9]{3,4}$")]
    pub cvc: Option<Sensitive<String>>,
}

/// Tokenize a card. A caller that holds `cards:read` gets the card: `201` when it is
/// new, `200` with the existing card when the number was already vaulted in this account
/// and mode. Any other caller (a publishable key) gets `201` and a card token either
/// way, holding only what it sent: it cannot learn whether a number is vaulted. A later
/// expiry than the stored one (a renewed card) updates the card (`card.updated`).
///
/// Rules JSON Schema cannot state: the number's check digit (`card_number_luhn`), its
/// brand and the brand's lengths (`card_brand_unknown`, `card_number_invalid`), test
/// numbers only in test mode and only they (`test_card_in_live_mode`,
/// `live_card_in_test_mode`), the expiry against today (`card_expired`; a year
/// 100–1999 or more than 50 years ahead is `expiry_invalid`), and the CVC's length for
/// the brand (`cvc_invalid`).
#[utoipa::path(post, path = "/v1/cards", tag = "cards", request_body = CreateCardBody,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created (with `cards:read`: the card; without: a card token, whether or not the number was vaulted before)", body = TokenizeView),
        (status = 200, description = "With `cards:read` only: this number was already vaulted in this account and mode; the existing card", body = CardView),
        (status = 400, description = "card_number_invalid, card_number_luhn, card_brand_unknown, expiry_invalid, card_expired, test_card_in_live_mode, live_card_in_test_mode, cvc_invalid, invalid_parameter (cardholder_name), unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:write), suspended (the card number), risk_blocked (a publishable key's card use the risk rules blocked; docs/risk.md)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
    ))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ip: Option<axum::Extension<crate::gateway::client_ip::ClientIp>>,
    ApiJson(body): ApiJson<CreateCardBody>,
) -> ApiResult<(StatusCode, Json<TokenizeView>)> {
    who.require(Scope::CardsWrite)?;
    let new = NewCard {
        number: body.number,
        exp_month: body.exp_month,
        exp_year: body.exp_year,
        cardholder_name: body.cardholder_name,
        cvc: body.cvc,
    };
    // Assessed implicitly; the address counts for a publishable key only (the shopper).
    let risk = crate::service::assessments::Implicit {
        action: crate::service::assessments::Action::Tokenize,
        ip: ip.map(|axum::Extension(c)| c.0),
    };
    let t = svc::tokenize_through(&state, &who, new, None, Some(&risk)).await?;
    tokenized(&state, &who, t)
}

/// What a tokenization answers: to a caller holding `cards:read`, the card (`201` new,
/// `200` already vaulted); to any other, a card token (`201` either way).
pub(crate) fn tokenized(
    state: &AppState,
    who: &Principal,
    t: svc::Tokenized,
) -> ApiResult<(StatusCode, Json<TokenizeView>)> {
    if !who.scopes.contains(Scope::CardsRead) {
        let token = svc::card_token(state, who, &t, None)?;
        return Ok((StatusCode::CREATED, Json(TokenizeView::Token(token))));
    }
    let status = if t.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(TokenizeView::Card(t.card))))
}

/// Body of `POST /v1/card_tokens/redeem`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemCardTokenBody {
    /// The `ctok_…` a caller without `cards:read` got from `POST /v1/cards`.
    #[schema(max_length = 261, pattern = "^ctok_[A-Za-z0-9_-]+$")]
    pub token: String,
}

/// Redeem a card token for its card (masked), within an hour of its creation, with a
/// key of the same account and mode that holds `cards:read`.
#[utoipa::path(post, path = "/v1/card_tokens/redeem", tag = "cards", request_body = RedeemCardTokenBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The card", body = CardView),
        (status = 400, description = "unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:read)", body = ErrorResponse),
        (status = 404, description = "card_token_invalid (malformed, forged, expired, another account or mode); not_found (the card was deleted)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
    ))]
pub async fn redeem_card_token(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<RedeemCardTokenBody>,
) -> ApiResult<Json<CardView>> {
    who.require(Scope::CardsRead)?;
    let (card, session) = svc::redeem_card_token(&state, &who, &body.token).await?;
    crate::audit::set_resource(&who.audit, "card", &card.id);
    let mut view = svc::view(&state, &card).await?;
    if let Some(id) = session {
        // Kept 30 days after it expires, far longer than a card token lives.
        view.client_session = crate::service::client_sessions::find(&state, &id)
            .await?
            .map(|s| s.card_view());
    }
    Ok(Json(view))
}

/// Retrieve a card (masked).
#[utoipa::path(get, path = "/v1/cards/{id}", tag = "cards", security(("api_key" = [])),
    params(("id" = String, Path, description = "card_…", pattern = "^card_[0-9a-f]{32}$")),
    responses((status = 200, body = CardView),
        (status = 403, description = "permission_denied (no cards:read)", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse)))]
pub async fn retrieve(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CardView>> {
    who.require(Scope::CardsRead)?;
    let card = svc::get(&state, &who, &id).await?;
    Ok(Json(svc::view(&state, &card).await?))
}

/// Query of `GET /v1/cards`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only cards with this fingerprint (as in the card object).
    #[param(pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
    pub fingerprint: Option<String>,
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A card id: return cards created before it.
    #[param(pattern = "^card_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

/// List cards, newest first; filter by fingerprint.
#[utoipa::path(get, path = "/v1/cards", tag = "cards", security(("api_key" = [])), params(ListQuery),
    responses((status = 200, body = List<CardView>),
        (status = 400, description = "invalid_parameter, unknown_field", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:read)", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<CardView>>> {
    who.require(Scope::CardsRead)?;
    let limit = q.limit.unwrap_or(10);
    let list = svc::list(
        &state,
        &who,
        q.fingerprint.as_deref(),
        q.starting_after,
        limit,
    )
    .await?;
    Ok(Json(list))
}

/// Delete a card; its ciphertext is erased.
#[utoipa::path(delete, path = "/v1/cards/{id}", tag = "cards", security(("api_key" = [])),
    params(("id" = String, Path, description = "card_…", pattern = "^card_[0-9a-f]{32}$")),
    responses((status = 200, description = "Deleted; emits `card.deleted`", body = DeletedCardView),
        (status = 403, description = "permission_denied (no cards:delete)", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DeletedCardView>> {
    who.require(Scope::CardsDelete)?;
    Ok(Json(svc::delete(&state, &who, &id).await?))
}

/// Body of `POST /v1/otp`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOtpBody {
    /// What the OTP authorises: `card.reveal`, `pin.set`, `pin.reset` or `pin.change`.
    #[schema(pattern = "^(card\\.reveal|pin\\.set|pin\\.reset|pin\\.change)$")]
    pub purpose: String,
    /// The card it is for.
    #[schema(pattern = "^card_[0-9a-f]{32}$")]
    pub card: String,
}

/// Create a one-time password for a step-up: `card.reveal` needs `cards:reveal`, the
/// `pin.*` purposes need `pins:write`.
#[utoipa::path(post, path = "/v1/otp", tag = "cards", security(("api_key" = [])), request_body = CreateOtpBody,
    responses((status = 201, body = OtpView),
        (status = 400, description = "invalid_parameter (purpose), unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "otp_delivery_not_configured", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse)))]
pub async fn create_otp(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateOtpBody>,
) -> ApiResult<(StatusCode, Json<OtpView>)> {
    let created = otp::create(&state, &who, &body.purpose, &body.card).await?;
    Ok((StatusCode::CREATED, Json(OtpView::from(created))))
}

/// Body of `POST /v1/cards/{id}/reveal`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealBody {
    /// `otp_…`
    #[schema(pattern = "^otp_[0-9a-f]{32}$")]
    pub otp: String,
    /// The 6-digit code.
    #[schema(value_type = String, pattern = "^[0-9]{6}$")]
    pub code: Sensitive<String>,
}

/// The reveal body, serialised from the zeroizing buffers straight into zeroizing memory:
/// the response body is the one place the PAN leaves, and no plain `String` or `Value`
/// holds it on the way. Fields in the order `serde_json::json!` gave them (sorted); the
/// schema is [`RevealedView`].
fn reveal_body(
    id: &str,
    (exp_month, exp_year): (i64, i64),
    clear: &svc::RevealedCard,
) -> ApiResult<zeroize::Zeroizing<Vec<u8>>> {
    #[derive(Serialize)]
    struct Body<'a> {
        cardholder_name: Option<&'a str>,
        exp_month: i64,
        exp_year: i64,
        id: &'a str,
        number: &'a str,
        object: &'static str,
    }
    let name = clear.cardholder_name.as_deref().map(String::as_str);
    let body = Body {
        cardholder_name: name,
        exp_month,
        exp_year,
        id,
        number: clear.number.as_str(),
        object: "revealed_card",
    };
    // Room for the usual body, so the buffer never has to grow.
    let capacity = 160 + id.len() + clear.number.len() + name.map_or(0, str::len) * 6;
    Ok(crate::secret_body::to_zeroizing_json(&body, capacity)?)
}

/// Reveal a card's number (needs `cards:reveal` and a `card.reveal` OTP).
#[utoipa::path(post, path = "/v1/cards/{id}/reveal", tag = "cards", security(("api_key" = [])), request_body = RevealBody,
    params(("id" = String, Path, description = "card_…", pattern = "^card_[0-9a-f]{32}$")),
    responses((status = 200, body = RevealedView),
        (status = 400, description = "unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:reveal), otp_invalid", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse)))]
pub async fn reveal(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RevealBody>,
) -> ApiResult<axum::response::Response> {
    let (card, clear) = otp::reveal(&state, &who, &id, &body.otp, body.code.expose()).await?;
    let body = reveal_body(&card.id, (card.exp_month, card.exp_year), &clear)?;
    axum::response::Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(axum::body::Body::from(crate::secret_body::into_bytes(body)))
        .map_err(|e| ApiError::internal(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    /// The reveal body as the `json!` map that built it before wrote it: sorted keys.
    #[derive(serde::Serialize)]
    struct Before<'a> {
        cardholder_name: Option<&'a str>,
        exp_month: u8,
        exp_year: u16,
        id: &'a str,
        number: &'a str,
        object: &'a str,
    }

    #[test]
    fn reveal_body_is_what_json_gave() {
        let names = [
            None,
            Some(""),
            Some("Ada Lovelace"),
            Some("Zoë \"O'Brien\" \\ 李\n\u{7}"),
        ];
        for name in names {
            for number in ["4242424242424242", "6200000000000000005"] {
                let clear = svc::RevealedCard {
                    number: Zeroizing::new(number.to_owned()),
                    cardholder_name: name.map(|n| Zeroizing::new(n.to_owned())),
                };
                let id = "card_0000019a2b3c4d5e6f7a8b9c0d1e2f30";
                let built = reveal_body(id, (12, 2030), &clear).unwrap();
                // What the handler sent before: a `json!` map, keys in sorted order.
                let before = serde_json::to_vec(&Before {
                    cardholder_name: clear.cardholder_name.as_deref().map(String::as_str),
                    exp_month: 12,
                    exp_year: 2030,
                    id,
                    number: clear.number.as_str(),
                    object: "revealed_card",
                })
                .unwrap();
                assert_eq!(built.as_slice(), before.as_slice(), "{name:?}");
            }
        }
    }
}
