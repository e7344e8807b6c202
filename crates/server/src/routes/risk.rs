//! Risk assessments (docs/risk.md, "Assessments").

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::ErrorResponse;
use crate::service::assessments::{
    self as svc, AssessmentView, FeedbackView, NewAssessment, NewFeedback,
};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// Assess a use of a card: velocity over sliding windows (per card, address and
/// network, key, email and device), country mismatches (BIN, address, billing; when the
/// operator loaded country data) and suspensions, scored by the built-in rules. A
/// card-testing run (ten or more other cards from the address in ten minutes) blocks
/// and suspends the address for an hour (`suspension.created`). Give the customer's
/// address, not your server's. The email is digested with a key at once and never
/// kept. Needs `risk:write`. Rules JSON Schema cannot state: `invalid_parameter` (both
/// `card` and `fingerprint`; an amount without a currency or the reverse; an address
/// that is not one; an email without `@`), `not_found` (a card not of this account and
/// mode).
#[utoipa::path(post, path = "/v1/risk/assessments", tag = "risk", security(("api_key" = [])), request_body = NewAssessment,
    responses((status = 201, description = "The assessment", body = AssessmentView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, idempotency_key_invalid", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:write), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found (the card)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<NewAssessment>,
) -> ApiResult<(StatusCode, Json<AssessmentView>)> {
    let view = svc::create(&state, &who, &body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// One assessment of the account, in the key's mode: its score, decision, reasons and
/// signals. Needs `risk:read`.
#[utoipa::path(get, path = "/v1/risk/assessments/{id}", tag = "risk", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^risk_[0-9a-f]{32}$")),
    responses((status = 200, body = AssessmentView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:read), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AssessmentView>> {
    Ok(Json(svc::get(&state, &who, &id).await?))
}

/// Label what a use turned out to be: one assessment, or every assessment of a card
/// (`fraud`, `legitimate`, `chargeback`). `strongroom risk train` learns from the labels.
/// Needs `risk:write`. Rules JSON Schema cannot state: `missing_field` (neither
/// `assessment` nor `card`), `invalid_parameter` (both).
#[utoipa::path(post, path = "/v1/risk/feedback", tag = "risk", security(("api_key" = [])), request_body = NewFeedback,
    responses((status = 200, description = "How many assessments were labelled", body = FeedbackView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, idempotency_key_invalid", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:write), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found (no such assessment or card, or a card never assessed)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn feedback(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<NewFeedback>,
) -> ApiResult<Json<FeedbackView>> {
    Ok(Json(svc::feedback(&state, &who, &body).await?))
}
