//! Risk assessments and rules (docs/risk.md, "Assessments", "Rules").

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::assessments::{
    self as svc, AssessmentView, FeedbackView, NewAssessment, NewFeedback,
};
use crate::service::risk_failures::{self as failures_svc, CardFailureView, NewCardFailure};
use crate::service::risk_rules::{self as rules_svc, PutOutcome, PutRules, RulesView};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

/// Assess a use of a card: velocity over sliding windows (per card, address and
/// network, key, email and device), country mismatches (BIN, address, billing; when the
/// operator loaded country data) and suspensions, scored by the account's rules in force
/// (`GET /v1/risk/rules`; the built-in set until it puts its own) and the model in
/// service. With the built-in set, a card-testing run (ten or more other cards from the
/// address in ten minutes) blocks and suspends the address for an hour
/// (`suspension.created`). Give the customer's
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

/// Report a card's failure the vault did not see: a payment your processor declined
/// outside the relay, or a one-time password (a 3-D Secure or other step-up) that failed
/// elsewhere. It counts in the card's assessments for a day (`card_declines_24h`,
/// `card_otp_failures_24h`; the built-in rule `declines` holds at three of either). The
/// vault counts by itself a wrong OTP code for a card and a relay answered `402`. Needs
/// `risk:write`. Rules JSON Schema cannot state: `missing_field` (neither `card` nor
/// `fingerprint`), `invalid_parameter` (both; `at` more than a day ago or in the future).
#[utoipa::path(post, path = "/v1/risk/card_failures", tag = "risk", security(("api_key" = [])), request_body = NewCardFailure,
    responses((status = 201, description = "The failure, counted", body = CardFailureView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, idempotency_key_invalid", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:write), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found (the card)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn card_failure(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<NewCardFailure>,
) -> ApiResult<(StatusCode, Json<CardFailureView>)> {
    let view = failures_svc::report(&state, &who, &body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The risk rules in force for the account, in the key's mode: its own latest set, or
/// the built-in one (`builtin-1`) until it puts one. Needs `risk:read`.
#[utoipa::path(get, path = "/v1/risk/rules", tag = "risk", security(("api_key" = [])),
    responses((status = 200, body = RulesView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:read), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn rules(State(state): State<AppState>, who: Principal) -> ApiResult<Json<RulesView>> {
    Ok(Json(rules_svc::get(&state, &who).await?))
}

/// Put the account's risk rules, in the key's mode, whole: every rule is checked (its
/// condition parsed, the signals and functions it uses known, a boolean result) before
/// anything is stored, and one bad rule refuses the set (`rules_invalid`, naming the rule
/// and the problem). The set gets the next version number and is in force on every node
/// within seconds; the earlier ones stay as history. With `dry_run`, nothing is stored:
/// the answer says how the last 30 days of assessments would have been decided. Give
/// `replaces` (the version you read) to refuse the put if another came first. Needs
/// `risk:write`. Rules JSON Schema cannot state: `rules_invalid`, `rules_version_conflict`.
#[utoipa::path(put, path = "/v1/risk/rules", tag = "risk", security(("api_key" = [])), request_body = PutRules,
    responses((status = 200, description = "The set now in force (`risk_rules`), or with `dry_run` the report (`risk_rules_dry_run`)", body = PutOutcome),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, rules_invalid (with `rule` and `problem`), idempotency_key_invalid", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:write), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 409, description = "rules_version_conflict, conflict", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn put_rules(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<PutRules>,
) -> ApiResult<Json<PutOutcome>> {
    Ok(Json(rules_svc::put(&state, &who, &body).await?))
}

/// Query of `GET /v1/risk/rules/versions`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A version number: return the versions before it.
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// The account's rule sets in the key's mode, newest first (the first is in force);
/// the built-in set is not listed. Needs `risk:read`.
#[utoipa::path(get, path = "/v1/risk/rules/versions", tag = "risk", security(("api_key" = [])), params(VersionsQuery),
    responses((status = 200, body = List<RulesView>),
        (status = 400, description = "invalid_parameter, unknown_field", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:read), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn rule_versions(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<VersionsQuery>,
) -> ApiResult<Json<List<RulesView>>> {
    let limit = q.limit.unwrap_or(10);
    Ok(Json(
        rules_svc::versions(&state, &who, q.before, limit).await?,
    ))
}

/// One version of the account's rules in the key's mode (`v3`), or the built-in set
/// (`builtin-1`). Needs `risk:read`.
#[utoipa::path(get, path = "/v1/risk/rules/versions/{version}", tag = "risk", security(("api_key" = [])),
    params(("version" = String, Path, pattern = "^(v[1-9][0-9]{0,17}|builtin-1)$")),
    responses((status = 200, body = RulesView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:read), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn rule_version(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(version): ApiPath<String>,
) -> ApiResult<Json<RulesView>> {
    Ok(Json(rules_svc::version(&state, &who, &version).await?))
}
