//! `/v1/cards` and `/v1/otp`.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, codes};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::service::cards::{self as svc, CardTokenView, CardView, NewCard};
use crate::service::{List, otp, secs};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use strongroom_core::{IdKind, Scope, Sensitive};
use strongroom_store::{ListCards, VaultStore};
use utoipa::ToSchema;

/// Body of `POST /v1/cards`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCardBody {
    /// 12–19 digits; spaces and dashes allowed.
    #[schema(value_type = String, example = "4242 4242 4242 4242")]
    pub number: Sensitive<String>,
    /// 1–12.
    pub exp_month: i64,
    /// Four digits (two accepted).
    pub exp_year: i64,
    /// Optional, at most 200 characters; stored encrypted.
    #[schema(value_type = Option<String>)]
    pub cardholder_name: Option<Sensitive<String>>,
}

/// What `POST /v1/cards` answers: the card to a caller that may read cards, a card
/// token to one that may not.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Tokenized {
    /// For keys and tokens that hold `cards:read`.
    Card(CardView),
    /// For publishable keys and others without `cards:read`.
    Token(CardTokenView),
}

/// Tokenize a card. A caller that holds `cards:read` gets the card: `201` when it is
/// new, `200` with the existing card when the number was already vaulted in this account
/// and mode. Any other caller (a publishable key) gets `201` and a card token either
/// way, holding only what it sent: it cannot learn whether a number is vaulted. A later
/// expiry than the stored one (a renewed card) updates the card (`card.updated`).
#[utoipa::path(post, path = "/v1/cards", tag = "cards", request_body = CreateCardBody,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created (with `cards:read`: the card; without: a card token, whether or not the number was vaulted before)", body = Tokenized),
        (status = 200, description = "With `cards:read` only: this number was already vaulted in this account and mode; the existing card", body = CardView),
        (status = 400, description = "card_number_invalid, card_number_luhn, card_brand_unknown, expiry_invalid, card_expired, test_card_in_live_mode, live_card_in_test_mode, unknown_field, missing_field, invalid_request", body = crate::openapi::ErrorResponse),
        (status = 403, description = "permission_denied", body = crate::openapi::ErrorResponse),
        (status = 413, description = "body_too_large", body = crate::openapi::ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = crate::openapi::ErrorResponse),
    ))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateCardBody>,
) -> ApiResult<(StatusCode, Json<Tokenized>)> {
    who.require(Scope::CardsWrite)?;
    let new = NewCard {
        number: body.number,
        exp_month: body.exp_month,
        exp_year: body.exp_year,
        cardholder_name: body.cardholder_name,
    };
    let t = svc::tokenize(&state, &who, new).await?;
    if !who.scopes.contains(Scope::CardsRead) {
        let token = svc::card_token(&state, &who, &t)?;
        return Ok((StatusCode::CREATED, Json(Tokenized::Token(token))));
    }
    let status = if t.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Tokenized::Card(t.card))))
}

/// Body of `POST /v1/card_tokens/redeem`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemCardTokenBody {
    /// The `ctok_…` a caller without `cards:read` got from `POST /v1/cards`.
    pub token: String,
}

/// Redeem a card token for its card (masked), within an hour of its creation, with a
/// key of the same account and mode that holds `cards:read`.
#[utoipa::path(post, path = "/v1/card_tokens/redeem", tag = "cards", request_body = RedeemCardTokenBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The card", body = CardView),
        (status = 400, description = "unknown_field, missing_field, invalid_request", body = crate::openapi::ErrorResponse),
        (status = 403, description = "permission_denied (no cards:read)", body = crate::openapi::ErrorResponse),
        (status = 404, description = "card_token_invalid (malformed, forged, expired, another account or mode); not_found (the card was deleted)", body = crate::openapi::ErrorResponse),
    ))]
pub async fn redeem_card_token(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<RedeemCardTokenBody>,
) -> ApiResult<Json<CardView>> {
    who.require(Scope::CardsRead)?;
    let card = svc::redeem_card_token(&state, &who, &body.token).await?;
    crate::audit::set_resource("card", &card.id);
    Ok(Json(CardView::from(&card)))
}

/// Retrieve a card (masked).
#[utoipa::path(get, path = "/v1/cards/{id}", tag = "cards", security(("api_key" = [])),
    params(("id" = String, Path, description = "card_…")),
    responses((status = 200, body = CardView), (status = 404, description = "not_found", body = crate::openapi::ErrorResponse)))]
pub async fn retrieve(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CardView>> {
    who.require(Scope::CardsRead)?;
    let card = svc::get(&state, &who, &id).await?;
    Ok(Json(CardView::from(&card)))
}

/// Query of `GET /v1/cards`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only cards with this fingerprint.
    pub fingerprint: Option<String>,
    /// 1–100, default 10.
    pub limit: Option<i64>,
    /// A card id: return cards created before it.
    pub starting_after: Option<String>,
}

/// List cards, newest first; filter by fingerprint.
#[utoipa::path(get, path = "/v1/cards", tag = "cards", security(("api_key" = [])), params(ListQuery),
    responses((status = 200, body = List<CardView>), (status = 400, description = "invalid_parameter", body = crate::openapi::ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<CardView>>> {
    who.require(Scope::CardsRead)?;
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(codes::INVALID_PARAMETER);
    }
    if let Some(after) = &q.starting_after {
        strongroom_core::parse_id(IdKind::Card, after).map_err(|_| codes::INVALID_PARAMETER)?;
    }
    let query = ListCards {
        fingerprint: q
            .fingerprint
            .as_deref()
            .map(svc::parse_fingerprint)
            .transpose()?,
        starting_after: q.starting_after,
        limit: limit + 1,
    };
    let mut rows = state
        .store()
        .list_cards(&who.account_id, who.mode, &query)
        .await?;
    let has_more = rows.len() > usize::try_from(limit).unwrap_or(0);
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(Json(List::page(
        rows.iter().map(CardView::from).collect(),
        has_more,
    )))
}

/// Result of a delete.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// The id.
    pub id: String,
    /// Always `card`.
    pub object: &'static str,
    /// Always true.
    pub deleted: bool,
}

/// Delete a card; its ciphertext is erased.
#[utoipa::path(delete, path = "/v1/cards/{id}", tag = "cards", security(("api_key" = [])),
    params(("id" = String, Path, description = "card_…")),
    responses((status = 200, body = Deleted), (status = 404, description = "not_found", body = crate::openapi::ErrorResponse)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    who.require(Scope::CardsDelete)?;
    svc::delete(&state, &who, &id).await?;
    Ok(Json(Deleted {
        id,
        object: "card",
        deleted: true,
    }))
}

/// Body of `POST /v1/otp`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOtpBody {
    /// What the OTP authorises: `card.reveal`.
    pub purpose: String,
    /// The card it is for.
    pub card: String,
}

/// A created OTP.
#[derive(Serialize, ToSchema)]
pub struct OtpView {
    /// `otp_…`
    pub id: String,
    /// Always `otp`.
    pub object: &'static str,
    /// The purpose.
    pub purpose: String,
    /// The card.
    pub card: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
    /// Test mode only: the code. In live mode it goes to the account's OTP delivery URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_code: Option<String>,
}

/// Create a one-time password for a step-up (needs `cards:reveal`).
#[utoipa::path(post, path = "/v1/otp", tag = "cards", security(("api_key" = [])), request_body = CreateOtpBody,
    responses((status = 201, body = OtpView), (status = 403, description = "permission_denied", body = crate::openapi::ErrorResponse),
        (status = 404, description = "not_found", body = crate::openapi::ErrorResponse),
        (status = 409, description = "otp_delivery_not_configured", body = crate::openapi::ErrorResponse)))]
pub async fn create_otp(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateOtpBody>,
) -> ApiResult<(StatusCode, Json<OtpView>)> {
    let created = otp::create(&state, &who, &body.purpose, &body.card).await?;
    let r = created.record;
    Ok((
        StatusCode::CREATED,
        Json(OtpView {
            id: r.id,
            object: "otp",
            purpose: r.purpose,
            card: r.card_id,
            expires_at: secs(r.expires_ms),
            test_code: created.test_code.map(|c| c.to_string()),
        }),
    ))
}

/// Body of `POST /v1/cards/{id}/reveal`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealBody {
    /// `otp_…`
    pub otp: String,
    /// The 6-digit code.
    #[schema(value_type = String)]
    pub code: Sensitive<String>,
}

/// The clear card.
#[derive(Serialize, ToSchema)]
pub struct RevealedView {
    /// `card_…`
    pub id: String,
    /// The full number.
    pub number: String,
    /// 1–12.
    pub exp_month: i64,
    /// Four digits.
    pub exp_year: i64,
    /// As stored.
    pub cardholder_name: Option<String>,
}

/// The reveal body, serialised from the zeroizing buffers straight into zeroizing memory:
/// the response body is the one place the PAN leaves, and no plain `String` or `Value`
/// holds it on the way. Fields in the order `serde_json::json!` gave them (sorted).
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
    crate::secret_body::to_zeroizing_json(&body, capacity)
}

/// Reveal a card's number (needs `cards:reveal` and a `card.reveal` OTP).
#[utoipa::path(post, path = "/v1/cards/{id}/reveal", tag = "cards", security(("api_key" = [])), request_body = RevealBody,
    params(("id" = String, Path, description = "card_…")),
    responses((status = 200, body = RevealedView), (status = 403, description = "permission_denied, otp_invalid", body = crate::openapi::ErrorResponse),
        (status = 404, description = "not_found", body = crate::openapi::ErrorResponse)))]
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
                // What the handler sent before.
                let before = serde_json::to_vec(&serde_json::json!({
                    "id": id,
                    "object": "revealed_card",
                    "number": clear.number.as_str(),
                    "exp_month": 12,
                    "exp_year": 2030,
                    "cardholder_name": clear.cardholder_name.as_deref().map(String::as_str),
                }))
                .unwrap();
                assert_eq!(built.as_slice(), before.as_slice(), "{name:?}");
            }
        }
    }
}
