//! Inbound routes (docs/relay.md, "Inbound routes"): `/v1/inbound_routes`, which a
//! merchant's back end manages, and `/in/{route_id}/…`, where partners send requests
//! carrying card numbers for the vault to tokenize before they reach the merchant.

use crate::audit::RequestAudit;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, codes};
use crate::extract::{ApiJson, ApiPath, RelayBytes};
use crate::gateway::client_ip::ClientIp;
use crate::openapi::ErrorResponse;
use crate::routes::relay;
use crate::service::List;
use crate::service::relay::inbound::{
    self as svc, InboundRequest, InboundRouteDeletedView, InboundRouteView, NewInboundRoute,
};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::{Extension, Json};

/// Make an inbound route: partners then send to `https://<vault>/in/{id}/…`, the card
/// numbers in the fields `tokenize` names become cards of this account and mode (the
/// card ids take their place), every other card number is masked, and the request goes
/// on to `forward_to`. Needs `cards:relay` and `cards:write`. `forward_to` must match a
/// relay destination the operator approved for the account (`destination_not_approved`,
/// checked again at every request). Rules JSON Schema cannot state:
/// `inbound_route_invalid` (a rule without an expiry, or with both `expiry` and
/// `exp_month`/`exp_year`; a `forward_to` with a query or fragment; a path with `?`,
/// `#`, `%`, `\`, `//` or dot segments; a description with control characters),
/// `relay_pointer_invalid` (a pointer that is not RFC 6901).
#[utoipa::path(post, path = "/v1/inbound_routes", tag = "relay", security(("api_key" = [])), request_body = NewInboundRoute,
    responses((status = 201, description = "The route", body = InboundRouteView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, inbound_route_invalid, relay_pointer_invalid, too_many_inbound_routes, destination_not_public, idempotency_key_invalid", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (cards:relay and cards:write), destination_not_approved, ip_not_allowed", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 502, description = "destination_unreachable", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<NewInboundRoute>,
) -> ApiResult<(StatusCode, Json<InboundRouteView>)> {
    let route = svc::create(&state, &who, &body).await?;
    Ok((StatusCode::CREATED, Json(route)))
}

/// The account's inbound routes in the key's mode, oldest first (at most 100).
#[utoipa::path(get, path = "/v1/inbound_routes", tag = "relay", security(("api_key" = [])),
    responses((status = 200, body = List<InboundRouteView>),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:relay), ip_not_allowed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<List<InboundRouteView>>> {
    Ok(Json(svc::list(&state, &who).await?))
}

/// One inbound route of the account, in the key's mode.
#[utoipa::path(get, path = "/v1/inbound_routes/{id}", tag = "relay", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^inr_[0-9a-f]{32}$")),
    responses((status = 200, body = InboundRouteView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:relay), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<InboundRouteView>> {
    Ok(Json(svc::get(&state, &who, &id).await?))
}

/// Delete an inbound route: its URL answers `404` from now on.
#[utoipa::path(delete, path = "/v1/inbound_routes/{id}", tag = "relay", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^inr_[0-9a-f]{32}$")),
    responses((status = 200, description = "`{id, object, deleted: true}`", body = InboundRouteDeletedView),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:relay), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<InboundRouteDeletedView>> {
    Ok(Json(svc::delete(&state, &who, &id).await?))
}

/// The route's id and the rest of the path (empty or from its `/`), as sent.
fn split_path(path: &str) -> (&str, &str) {
    let after = path.strip_prefix("/in/").unwrap_or_default();
    match after.find('/') {
        Some(i) => after.split_at(i),
        None => (after, ""),
    }
}

/// Where a partner sends: any of `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, to
/// `/in/{route_id}` and below. No API key: the route id in the URL admits the request,
/// and the partner's own `Authorization` goes on to the merchant. In a JSON body the
/// route's tokenize fields become card ids; every other card number in the body, the
/// query and the headers is masked; a CVC the route names is removed (held for the
/// card's first relay). The request goes to `forward_to` plus the rest of the path,
/// with `Strongroom-Inbound-Route` and `Strongroom-Inbound-Cards` (the card ids); the
/// merchant's answer comes back cleaned the same way, with `Strongroom-Relay-Status`.
/// An unknown or deleted route, or a path the route does not accept, is `404`.
#[utoipa::path(post, path = "/in/{route_id}/{rest}", tag = "relay", request_body(content = String, content_type = "application/json", description = "The partner's request"),
    params(("route_id" = String, Path, pattern = "^inr_[0-9a-f]{32}$"), ("rest" = String, Path, description = "The rest of the path, forwarded")),
    responses((status = 200, description = "The merchant's answer, cleaned (its status may be any)", content_type = "application/octet-stream", body = String),
        (status = 403, description = "destination_not_approved: forward_to is no longer an approved destination; ip_not_allowed: the route's allowed_ips do not admit the sender", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 405, description = "method_not_allowed", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type (a compressed body, which cannot be cleaned)", body = ErrorResponse),
        (status = 422, description = "inbound_card_invalid: nothing was forwarded", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 502, description = "relay_upstream_failed, relay_response_too_large, relay_response_encoded, destination_unreachable", body = ErrorResponse),
        (status = 504, description = "relay_upstream_timeout", body = ErrorResponse)))]
pub async fn forward(
    State(state): State<AppState>,
    Extension(audit): Extension<RequestAudit>,
    Extension(ClientIp(client_ip)): Extension<ClientIp>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RelayBytes(body): RelayBytes,
) -> Response {
    match forward_inner(&state, &audit, client_ip, method, &uri, &headers, &body).await {
        Ok(f) => relay::answer(f.status, f.headers, f.body, f.latency),
        Err((e, sent)) => relay::refusal(e, sent),
    }
}

async fn forward_inner(
    state: &AppState,
    audit: &RequestAudit,
    client_ip: std::net::IpAddr,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<svc::Forwarded, (ApiError, bool)> {
    let refused = |e: ApiError| (e, false);
    let method = crate::service::relay::METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| refused(codes::METHOD_NOT_ALLOWED))?;
    let encoded = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(refused(codes::UNSUPPORTED_MEDIA_TYPE));
    }
    let (route_id, rest) = split_path(uri.path());
    let forwarded = headers
        .iter()
        .filter(|(name, _)| !svc::inbound_header_dropped(name))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let req = InboundRequest {
        route_id,
        rest,
        query: uri.query(),
        method,
        headers: forwarded,
        body,
        client_ip,
    };
    svc::forward(state, audit, req).await.map_err(|e| {
        let sent = relay::sent_then_failed(&e);
        (ApiError::from(e), sent)
    })
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn paths_split_at_the_route_id() {
        assert_eq!(split_path("/in/inr_1/a/b"), ("inr_1", "/a/b"));
        assert_eq!(split_path("/in/inr_1"), ("inr_1", ""));
        assert_eq!(split_path("/in/inr_1/"), ("inr_1", "/"));
    }
}
