//! `/v1/admin/accounts/{id}/relay_destinations`: the hosts an operator approved for an
//! account's relay (docs/relay.md). Admin key only: an account cannot widen where its
//! own card data may go.

use crate::auth::Admin;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::relay::{self as svc, DestinationInput, RelayDestinationView};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

/// Body of `PUT /v1/admin/accounts/{id}/relay_destinations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelayDestinationsBody {
    /// The account's whole list, at most 50; empty removes every destination.
    #[schema(max_items = 50)]
    pub destinations: Vec<DestinationInput>,
}

/// Replace the account's relay destinations, the only hosts its relay may send card data
/// to. The list is replaced whole, in one write: one refused entry refuses the request
/// and nothing changes. HTTPS only; a destination's certificate is verified against its
/// `ca_cert_pem` or the system roots. A destination that is, or resolves to, a loopback,
/// private, link-local or metadata address is refused (`destination_not_public`), except
/// loopback for a `test_only` destination or on a dev server; names are resolved again
/// at every send. Rules JSON Schema cannot state: `destination_invalid` (a host that is
/// not a DNS name or IP literal, a path prefix with `?`, `#`, `%`, `\`, `//` or dot
/// segments, a `ca_cert_pem` that is not PEM certificates only, a repeated destination).
/// The whole body is held to 64 KiB like every request's (`413 body_too_large`), so not
/// every list within the per-field bounds fits in one request.
#[utoipa::path(put, path = "/v1/admin/accounts/{id}/relay_destinations", tag = "admin", security(("admin_key" = [])), request_body = RelayDestinationsBody,
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, description = "The account's destinations, as stored", body = List<RelayDestinationView>),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, destination_invalid, destination_not_public, too_many_destinations", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn put_destinations(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RelayDestinationsBody>,
) -> ApiResult<Json<List<RelayDestinationView>>> {
    let list = svc::set_destinations(&state, &admin.audit, &id, &body.destinations).await?;
    Ok(Json(list))
}

/// The account's relay destinations, in the order they were set.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}/relay_destinations", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, body = List<RelayDestinationView>),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get_destinations(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<List<RelayDestinationView>>> {
    Ok(Json(svc::destinations(&state, &id).await?))
}
