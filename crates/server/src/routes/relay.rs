//! The relay (docs/relay.md): `/v1/admin/accounts/{id}/relay_destinations`, the hosts an
//! operator approved for an account's relay (admin key only: an account cannot widen
//! where its own card data may go), and `POST /v1/relay`, which sends to them.

use crate::auth::{Admin, Principal};
use crate::error::{ApiError, ApiResult, codes};
use crate::extract::{ApiJson, ApiPath, RelayBytes};
use crate::openapi::ErrorResponse;
use crate::service::relay::{self as svc, DestinationInput, RelayDestinationView, RelayRequest};
use crate::service::{List, ServiceError};
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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

// ---- sending ----

/// The header that selects the raw form and names where the body goes.
pub const DESTINATION_HEADER: &str = "strongroom-destination";
/// Raw form: the destination's own `Authorization` (the request's is the vault's key).
pub const DESTINATION_AUTHORIZATION_HEADER: &str = "strongroom-destination-authorization";
/// Raw form: `tokenize_response_fields`, comma-separated JSON pointers.
pub const TOKENIZE_HEADER: &str = "strongroom-tokenize-response-fields";

/// Body of `POST /v1/relay` (the JSON form).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelayBody {
    /// `https://host[:port]/path[?query]`, matching a destination the operator approved
    /// for the account (host, port, path prefix; test-only destinations in test mode).
    #[schema(min_length = 1, max_length = 4096)]
    pub destination: String,
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`; default `POST`.
    #[schema(pattern = "^(GET|POST|PUT|PATCH|DELETE)$")]
    pub method: Option<String>,
    /// Headers to send; values may hold expressions. Not allowed: `Host`,
    /// `Content-Length`, hop-by-hop headers, `Accept-Encoding`, `Strongroom-*`.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// A string sent as it is, or a JSON object or array sent as JSON (with
    /// `Content-Type: application/json` unless a header says otherwise). Expressions
    /// `{{card_…:number|exp_month|exp_year|exp_year2|cardholder_name|cvc}}` are replaced,
    /// escaped for the body's `Content-Type` (JSON, form, XML, or as they are).
    pub body: Option<serde_json::Value>,
    /// JSON pointers (RFC 6901) into the destination's JSON answer: a card number there
    /// that is one of the account's cards comes back as that card's id instead of a
    /// mask. At most 20.
    #[schema(max_items = 20)]
    pub tokenize_response_fields: Option<Vec<String>>,
}

/// Headers of the request that stay with the vault in the raw form: its credential,
/// signature and idempotency headers, the connection's own, and the relay's.
fn raw_header_kept(name: &str) -> bool {
    const KEPT: [&str; 10] = [
        "authorization",
        "idempotency-key",
        "signature",
        "signature-input",
        "content-digest",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-request-id",
    ];
    KEPT.contains(&name) || name.starts_with("strongroom-")
}

/// The raw form: the body as it is, to the URL in `Strongroom-Destination`, with the
/// request's headers less the vault's own and the connection's.
fn raw_request(headers: &HeaderMap, url: &str, body: &[u8]) -> ApiResult<RelayRequest> {
    let text = std::str::from_utf8(body).map_err(|_| codes::INVALID_REQUEST)?;
    let mut out = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if raw_header_kept(n) || svc::header_set_by_relay(name) {
            continue;
        }
        let v = value.to_str().map_err(|_| codes::RELAY_HEADER_INVALID)?;
        out.push((n.to_owned(), v.to_owned()));
    }
    if let Some(auth) = headers.get(DESTINATION_AUTHORIZATION_HEADER) {
        let v = auth.to_str().map_err(|_| codes::RELAY_HEADER_INVALID)?;
        out.push(("authorization".to_owned(), v.to_owned()));
    }
    let tokenize = match headers.get(TOKENIZE_HEADER) {
        Some(v) => v
            .to_str()
            .map_err(|_| codes::RELAY_POINTER_INVALID)?
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        None => Vec::new(),
    };
    Ok(RelayRequest {
        url: url.to_owned(),
        method: "POST".to_owned(),
        headers: out,
        body: (!body.is_empty()).then(|| text.to_owned()),
        tokenize_response_fields: tokenize,
    })
}

/// The JSON form.
fn json_request(headers: &HeaderMap, body: &[u8]) -> ApiResult<RelayRequest> {
    if !crate::extract::is_json(headers) {
        return Err(codes::UNSUPPORTED_MEDIA_TYPE);
    }
    let b: RelayBody = crate::extract::parse_object(body)?;
    let mut hdrs: Vec<(String, String)> = b.headers.unwrap_or_default().into_iter().collect();
    let has_type = hdrs
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    let body = match b.body {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
            if !has_type {
                hdrs.push(("content-type".to_owned(), "application/json".to_owned()));
            }
            Some(v.to_string())
        }
        Some(_) => return Err(codes::INVALID_PARAMETER),
    };
    Ok(RelayRequest {
        url: b.destination,
        method: b.method.unwrap_or_else(|| "POST".to_owned()),
        headers: hdrs,
        body,
        tokenize_response_fields: b.tokenize_response_fields.unwrap_or_default(),
    })
}

/// Whether a refusal came after the request was sent (the destination failed) rather
/// than before (nothing was sent).
pub(crate) fn sent_then_failed(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::RelayUpstreamFailed
            | ServiceError::RelayUpstreamTimeout
            | ServiceError::RelayResponseTooLarge
            | ServiceError::RelayResponseEncoded
    )
}

/// Send a request with card data to an approved destination, without seeing the data.
///
/// Two forms. JSON: a `RelayBody` (`destination`, `method`, `headers`, `body`,
/// `tokenize_response_fields`). Raw: any body with a `Strongroom-Destination: <url>`
/// header, sent as `POST` with the request's own headers (less `Authorization` and the
/// vault's headers; the destination's `Authorization` goes in
/// `Strongroom-Destination-Authorization`, and response pointers in
/// `Strongroom-Tokenize-Response-Fields`). Expressions `{{card_…:field}}` in the body and
/// header values are replaced by the card's data; the destination's answer comes back
/// with its status, its headers (less hop-by-hop ones, framing and `Set-Cookie`) and its
/// body, every card number in it masked (or a token where a pointer names it) and every
/// substituted value removed. `Strongroom-Relay-Status` says `completed` (the answer is
/// the destination's), `failed` (sent, but the destination failed: 502/504) or
/// `refused` (nothing was sent); `Strongroom-Upstream-Latency-Ms` the destination's
/// time. At most 256 KiB of body.
#[utoipa::path(post, path = "/v1/relay", tag = "relay", security(("api_key" = [])), request_body = RelayBody,
    responses((status = 200, description = "The destination's answer, cleaned (its status may be any)", content_type = "application/octet-stream", body = String),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, relay_expression_invalid, relay_field_not_offered, relay_value_not_allowed, relay_pointer_invalid, relay_card_unknown, relay_header_invalid, destination_not_public", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "permission_denied (no cards:relay), destination_not_approved, ip_not_allowed", body = ErrorResponse),
        (status = 409, description = "cvc_unavailable, pin_block_unavailable, relay_value_unavailable", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 429, description = "rate_limited", body = ErrorResponse),
        (status = 502, description = "relay_upstream_failed, relay_response_too_large, relay_response_encoded, destination_unreachable", body = ErrorResponse),
        (status = 504, description = "relay_upstream_timeout", body = ErrorResponse)))]
pub async fn send(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    RelayBytes(body): RelayBytes,
) -> Response {
    let req = match headers.get(DESTINATION_HEADER) {
        Some(url) => match url.to_str() {
            Ok(url) => raw_request(&headers, url, &body),
            Err(_) => Err(codes::DESTINATION_NOT_APPROVED),
        },
        None => json_request(&headers, &body),
    };
    let outcome = match req {
        Ok(req) => svc::relay(&state, &who, &req).await.map_err(|e| {
            let sent = sent_then_failed(&e);
            (ApiError::from(e), sent)
        }),
        Err(e) => Err((e, false)),
    };
    match outcome {
        Ok(r) => answer(r.status, r.headers, r.body, r.latency),
        Err((e, sent)) => refusal(e, sent),
    }
}

/// The destination's cleaned answer, with `Strongroom-Relay-Status: completed` and the
/// destination's latency.
pub(crate) fn answer(
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    latency: std::time::Duration,
) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    for (name, value) in headers {
        h.append(name, value);
    }
    h.insert(RELAY_STATUS, HeaderValue::from_static("completed"));
    let ms = format!("{:.3}", latency.as_secs_f64() * 1000.0);
    if let Ok(v) = HeaderValue::from_str(&ms) {
        h.insert(UPSTREAM_LATENCY, v);
    }
    resp
}

/// An error, with `Strongroom-Relay-Status: failed` (sent, then the destination
/// failed) or `refused` (nothing was sent).
pub(crate) fn refusal(e: ApiError, sent: bool) -> Response {
    let mut resp = e.into_response();
    let status = if sent { "failed" } else { "refused" };
    resp.headers_mut()
        .insert(RELAY_STATUS, HeaderValue::from_static(status));
    resp
}

/// `Strongroom-Relay-Status`: `completed`, `failed` or `refused`.
const RELAY_STATUS: HeaderName = HeaderName::from_static("strongroom-relay-status");
/// `Strongroom-Upstream-Latency-Ms`: the destination's time, milliseconds.
const UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("strongroom-upstream-latency-ms");
