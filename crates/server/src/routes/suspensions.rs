//! Suspensions (docs/risk.md, "Suspensions"): `/v1/suspensions` for the account's own
//! keys, `/v1/admin/accounts/{id}/suspensions` for operators.

use crate::auth::{Admin, Principal};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::suspensions::{self as svc, Maker, NewSuspension, SuspensionView};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

/// Query of `GET /v1/suspensions`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A suspension id: return those made before it.
    #[param(pattern = "^susp_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

/// Suspend a card number (a card id or fingerprint), an IP address or network, an
/// email, a device id or an API key of the account, in the key's mode, until
/// `expires_in` seconds from now. A suspended card is refused by tokenize, reveal and
/// relay, an address or key by every route (`403 suspended` / `api_key_suspended`,
/// with `Retry-After`); emails and devices by risk assessments. Needs `risk:write`.
/// `suspension.created` is sent. Rules JSON Schema cannot state:
/// `suspension_target_invalid` (a malformed value, or a card or key that is not the
/// account's), `invalid_parameter` (a reason with control characters).
#[utoipa::path(post, path = "/v1/suspensions", tag = "risk", security(("api_key" = [])), request_body = NewSuspension,
    responses((status = 201, description = "The suspension", body = SuspensionView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, suspension_target_invalid, idempotency_key_invalid", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:write; the account itself is the operator's to suspend), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<NewSuspension>,
) -> ApiResult<(StatusCode, Json<SuspensionView>)> {
    let account = who.account_id.clone();
    let view = svc::create(&state, Maker::Key(&who), &account, &body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The account's suspensions in the key's mode, newest first: active, expired and
/// lifted. Needs `risk:read`.
#[utoipa::path(get, path = "/v1/suspensions", tag = "risk", security(("api_key" = [])), params(ListQuery),
    responses((status = 200, body = List<SuspensionView>),
        (status = 400, description = "invalid_parameter, unknown_field", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:read), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<SuspensionView>>> {
    let limit = q.limit.unwrap_or(10);
    Ok(Json(
        svc::list(&state, &who, q.starting_after, limit).await?,
    ))
}

/// One suspension of the account, in the key's mode. Needs `risk:read`.
#[utoipa::path(get, path = "/v1/suspensions/{id}", tag = "risk", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^susp_[0-9a-f]{32}$")),
    responses((status = 200, body = SuspensionView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:read), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SuspensionView>> {
    Ok(Json(svc::get(&state, &who, &id).await?))
}

/// Lift a suspension now (`suspension.lifted`); one that already ended is answered as
/// it is. Not the account's own suspension, which is the operator's. Needs
/// `risk:write`.
#[utoipa::path(delete, path = "/v1/suspensions/{id}", tag = "risk", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^susp_[0-9a-f]{32}$")),
    responses((status = 200, description = "The suspension, lifted", body = SuspensionView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:write, or the account's own suspension), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn lift(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SuspensionView>> {
    let account = who.account_id.clone();
    Ok(Json(
        svc::lift(&state, Maker::Key(&who), &account, &id).await?,
    ))
}

/// Operators: suspend any subject of an account, the account itself included (every
/// key of it, both modes: `403 account_suspended`), in the `mode` the body names.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/suspensions", tag = "admin", security(("admin_key" = [])), request_body = NewSuspension,
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 201, description = "The suspension", body = SuspensionView),
        (status = 400, description = "invalid_request, unknown_field, missing_field (mode), invalid_parameter, suspension_target_invalid, idempotency_key_invalid", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn admin_create(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewSuspension>,
) -> ApiResult<(StatusCode, Json<SuspensionView>)> {
    strongroom_core::parse_id(strongroom_core::IdKind::Account, &id)?;
    let maker = Maker::Admin {
        key_id: &admin.key_id,
        audit: &admin.audit,
    };
    let view = svc::create(&state, maker, &id, &body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Operators: lift any suspension of an account, whoever made it.
#[utoipa::path(delete, path = "/v1/admin/accounts/{id}/suspensions/{suspension_id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$"),
        ("suspension_id" = String, Path, pattern = "^susp_[0-9a-f]{32}$")),
    responses((status = 200, description = "The suspension, lifted", body = SuspensionView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn admin_lift(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((id, suspension_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<SuspensionView>> {
    strongroom_core::parse_id(strongroom_core::IdKind::Account, &id)?;
    let maker = Maker::Admin {
        key_id: &admin.key_id,
        audit: &admin.audit,
    };
    Ok(Json(svc::lift(&state, maker, &id, &suspension_id).await?))
}
