//! Client sessions (docs/client-side.md): `/v1/client_sessions`, which a merchant's back
//! end uses to fix a browser's card collection, and `/v1/client_sessions/{id}/cards`,
//! where the hosted fields (or the merchant's own page, through strongroom.js) post
//! the card with the publishable key and the client secret.

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};
use crate::gateway::client_ip::ClientIp;
use crate::openapi::ErrorResponse;
use crate::service::cards::{CardTokenView, NewCard};
use crate::service::client_sessions::{self as svc, ClientSessionView, Collect, NewClientSession};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use strongroom_core::Sensitive;
use utoipa::ToSchema;

/// The route browsers post cards to: the only `/v1` route they may reach.
pub const CARDS_ROUTE: &str = "/v1/client_sessions/{id}/cards";

/// Make a client session: the back end fixes what the browser collects (the origins
/// allowed to embed the fields or post cards; amount, currency, order id, metadata and
/// whether to ask for the CVC, which travel with the card) and hands the browser only
/// the `client_secret`, which this answer alone shows. A secret or restricted key with
/// `cards:write`. Rules JSON Schema cannot state: `origin_invalid` (an origin that is
/// not exactly `scheme://host[:port]` as browsers send it, plain HTTP off loopback or in
/// live mode, repeated, or more than 10), `missing_field` (an amount without a
/// currency), `invalid_parameter` (metadata keys empty, longer than 40 characters or
/// more than 20; control characters in order id or metadata).
#[utoipa::path(post, path = "/v1/client_sessions", tag = "client_sessions", security(("api_key" = [])), request_body = NewClientSession,
    responses((status = 201, description = "The session, with its client secret", body = ClientSessionView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, origin_invalid, idempotency_not_supported", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:write, or a publishable key), ip_not_allowed", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<NewClientSession>,
) -> ApiResult<(StatusCode, Json<ClientSessionView>)> {
    let view = svc::create(&state, &who, &body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// A client session of the account in the key's mode: its status, its fixed
/// parameters and the cards it collected. Needs `cards:read`.
#[utoipa::path(get, path = "/v1/client_sessions/{id}", tag = "client_sessions", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^cs_[0-9a-f]{32}$")),
    responses((status = 200, body = ClientSessionView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:read), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ClientSessionView>> {
    Ok(Json(svc::get(&state, &who, &id).await?))
}

/// Body of `POST /v1/client_sessions/{id}/cards`: the client secret and the card, and
/// nothing else (no amount, order id or other parameter: the session fixed them).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectBody {
    /// The session's `client_secret` (`cs_…_secret_…`).
    #[schema(max_length = 128, pattern = "^cs_[0-9a-f]{32}_secret_[A-Za-z0-9_-]+$")]
    pub client_secret: String,
    /// 12–19 digits; spaces and dashes allowed.
    #[schema(value_type = String, example = "4242 4242 4242 4242", max_length = 64, pattern = "^[ -]*([0-9][ -]*){12,19}$")]
    pub number: Sensitive<String>,
    /// 1–12.
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(minimum = 1, maximum = 12)]
    pub exp_month: i64,
    /// Four digits (two accepted: `30` is 2030).
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(minimum = 0, maximum = 2199)]
    pub exp_year: i64,
    /// Required when the session collects the CVC, refused when it does not. Never
    /// stored: held sealed in memory for the card's first relay.
    #[schema(value_type = Option<String>, example = "737", min_length = 3, max_length = 4, pattern = "^[0-9]{3,4}$")]
    pub cvc: Option<Sensitive<String>>,
    /// Optional, at most 200 characters, no control characters; stored encrypted.
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub cardholder_name: Option<Sensitive<String>>,
}

/// Collect a card through a client session, from a browser: the hosted fields post
/// here from the vault's own origin, strongroom.js's direct mode from one of the
/// session's `allowed_origins` (CORS answers only those). A publishable key of the
/// session's account and mode. The answer is a card token naming the session, the same
/// whether or not the number was vaulted before; the back end redeems it
/// (`POST /v1/card_tokens/redeem`) for the card with the session's parameters.
/// Limited per session, per client address and per publishable key (`rate_limited`,
/// with `Retry-After`). Rules JSON Schema cannot state: the card rules of
/// `POST /v1/cards`, `missing_field` (no CVC when the session collects it),
/// `invalid_parameter` (a CVC when it does not).
#[utoipa::path(post, path = "/v1/client_sessions/{id}/cards", tag = "client_sessions", security(("api_key" = [])), request_body = CollectBody,
    params(("id" = String, Path, pattern = "^cs_[0-9a-f]{32}$")),
    responses((status = 201, description = "A card token naming the session", body = CardTokenView),
        (status = 400, description = "card_number_invalid, card_number_luhn, card_brand_unknown, expiry_invalid, card_expired, test_card_in_live_mode, live_card_in_test_mode, cvc_invalid, invalid_parameter, unknown_field, missing_field, invalid_request, client_session_expired", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "client_session_invalid (wrong secret, unknown session, another account or mode), permission_denied (not a publishable key), suspended, risk_blocked (the risk rules blocked this card use; docs/risk.md)", body = ErrorResponse),
        (status = 409, description = "client_session_used", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn collect(
    State(state): State<AppState>,
    who: Principal,
    ip: Option<Extension<ClientIp>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CollectBody>,
) -> ApiResult<(StatusCode, Json<CardTokenView>)> {
    let c = Collect {
        client_secret: body.client_secret,
        ip: ip.map(|Extension(ClientIp(ip))| ip),
        card: NewCard {
            number: body.number,
            exp_month: body.exp_month,
            exp_year: body.exp_year,
            cardholder_name: body.cardholder_name,
            cvc: body.cvc,
        },
    };
    let token = svc::collect(&state, &who, &id, c).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// CORS preflight of the card route: answered (by the gateway, which adds the
/// `Access-Control-*` headers) only for an origin the session allows.
pub async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}
