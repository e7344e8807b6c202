//! Allow and block lists (docs/risk.md, "Lists"): `/v1/risk/lists/{list}/entries`, where
//! `{list}` is `allow` or `block`.

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::risk_lists::{self as svc, ListEntryView, NewListEntry};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

/// Query of `GET /v1/risk/lists/{list}/entries`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// An entry id: return those made before it.
    #[param(pattern = "^rle_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

/// Put a card number (a card id or fingerprint), an IP address or network, an email, a
/// BIN or a device id on the account's allow or block list, in the key's mode, until
/// `expires_in` seconds from now (or until deleted). It holds at once for every
/// assessment, explicit or implicit: a block-list match blocks (`block_listed`); an
/// allow-list match allows whatever the score and stops rules from suspending, unless a
/// subject is suspended or block-listed. Needs `risk:write`. Rules JSON Schema cannot
/// state: `list_entry_invalid` (a value malformed for its type, or a card that is not
/// the account's), `invalid_parameter` (a note with control characters).
#[utoipa::path(post, path = "/v1/risk/lists/{list}/entries", tag = "risk", security(("api_key" = [])), request_body = NewListEntry,
    params(("list" = String, Path, pattern = "^(allow|block)$")),
    responses((status = 201, description = "The entry", body = ListEntryView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, list_entry_invalid, idempotency_key_invalid", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:write), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found (no such list)", body = ErrorResponse),
        (status = 409, description = "list_entry_exists, limit_reached (10 000 live entries on the list)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(list): ApiPath<String>,
    ApiJson(body): ApiJson<NewListEntry>,
) -> ApiResult<(StatusCode, Json<ListEntryView>)> {
    let view = svc::create(&state, &who, &list, &body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// One list of the account in the key's mode, newest first: active, expired and deleted
/// entries. Needs `risk:read`.
#[utoipa::path(get, path = "/v1/risk/lists/{list}/entries", tag = "risk", security(("api_key" = [])),
    params(("list" = String, Path, pattern = "^(allow|block)$"), ListQuery),
    responses((status = 200, body = List<ListEntryView>),
        (status = 400, description = "invalid_parameter, unknown_field", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:read), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found (no such list)", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(list): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<ListEntryView>>> {
    let limit = q.limit.unwrap_or(10);
    Ok(Json(
        svc::list(&state, &who, &list, q.starting_after, limit).await?,
    ))
}

/// One entry of the account's list, in the key's mode. Needs `risk:read`.
#[utoipa::path(get, path = "/v1/risk/lists/{list}/entries/{id}", tag = "risk", security(("api_key" = [])),
    params(("list" = String, Path, pattern = "^(allow|block)$"),
        ("id" = String, Path, pattern = "^rle_[0-9a-f]{32}$")),
    responses((status = 200, body = ListEntryView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:read), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((list, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ListEntryView>> {
    Ok(Json(svc::get(&state, &who, &list, &id).await?))
}

/// Delete an entry now: it stops matching at once, and stays listed with
/// `status: deleted`. One deleted already is answered as it is. Needs `risk:write`.
#[utoipa::path(delete, path = "/v1/risk/lists/{list}/entries/{id}", tag = "risk", security(("api_key" = [])),
    params(("list" = String, Path, pattern = "^(allow|block)$"),
        ("id" = String, Path, pattern = "^rle_[0-9a-f]{32}$")),
    responses((status = 200, description = "The entry, deleted", body = ListEntryView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no risk:write), ip_not_allowed, suspended, api_key_suspended, account_suspended", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((list, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ListEntryView>> {
    Ok(Json(svc::delete(&state, &who, &list, &id).await?))
}
