//! `/v1/events`, `/v1/webhook_endpoints` and `/v1/inbound/{source}`.

use crate::audit::RequestScope;
use crate::auth::Principal;
use crate::error::{ApiResult, codes};
use crate::extract::{ApiPath, ApiQuery, optional_json, page, parse_json};
use crate::openapi::ErrorResponse;
use crate::service::events::{EventType, EventView};
use crate::service::inbound::{self, InboundEventObject, InboundHookObject, InboundHookView};
use crate::service::webhooks::{
    self as svc, AttemptView, DeliveryView, EndpointDeletedView, EndpointObject, EndpointView,
    RecoveryObject, RecoveryView, RedeliveryObject, RedeliveryView, SIGNING_ED25519, SIGNING_HMAC,
};
use crate::service::{List, secs};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use strongroom_core::{IdKind, Scope, parse_id};
use strongroom_store::webhooks::{InboundRecord, WebhookEndpointRecord};
use strongroom_store::{ListEvents, VaultStore, WebhookStore};
use utoipa::{IntoParams, ToSchema};

fn required_json<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> ApiResult<T> {
    let v: Option<Value> = optional_json::<Option<Value>>(headers, body)?;
    let v = v.ok_or(codes::INVALID_REQUEST)?;
    parse_json(&serde_json::to_vec(&v).map_err(|_| codes::INVALID_REQUEST)?)
}

/// A page size: 1–100, default 10.
fn limit(limit: Option<i64>) -> ApiResult<i64> {
    let limit = limit.unwrap_or(10);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(codes::INVALID_PARAMETER)
    }
}

/// The latest Unix second a time filter may name (the last second of year 9999).
const MAX_SECS: i64 = 253_402_300_799;

// ---- events ----

/// Query of `GET /v1/events`. Unknown parameters are refused (`unknown_field`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only this type, e.g. `card.created`.
    #[serde(rename = "type")]
    pub event_type: Option<EventType>,
    /// Created at or after (Unix seconds).
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    pub created_gte: Option<i64>,
    /// Created before (Unix seconds).
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    pub created_lt: Option<i64>,
    /// An event id: return events created before it.
    #[param(pattern = "^evt_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// List events, newest first (kept 30 days).
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("api_key" = [])), params(EventQuery),
    responses((status = 200, description = "A page of events", body = List<EventView>),
        (status = 400, description = "invalid_parameter, unknown_field", body = ErrorResponse),
        (status = 403, description = "permission_denied (no events:read), ip_not_allowed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn list_events(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<List<EventView>>> {
    who.require(Scope::EventsRead)?;
    let limit = limit(q.limit)?;
    if let Some(after) = &q.starting_after {
        parse_id(IdKind::Event, after).map_err(|_| codes::INVALID_PARAMETER)?;
    }
    let in_range = |s: Option<i64>| s.is_none_or(|s| (0..=MAX_SECS).contains(&s));
    if !in_range(q.created_gte) || !in_range(q.created_lt) {
        return Err(codes::INVALID_PARAMETER);
    }
    let to_ms = |s: Option<i64>| s.map(|s| s.saturating_mul(1000));
    let query = ListEvents {
        event_type: q.event_type.map(|t| t.as_str().to_owned()),
        created_gte: to_ms(q.created_gte),
        created_lt: to_ms(q.created_lt),
        starting_after: q.starting_after,
        limit: limit + 1,
    };
    let mut rows = state
        .store()
        .list_events(&who.account_id, who.mode, &query)
        .await?;
    let has_more = page(&mut rows, limit);
    let data = rows
        .iter()
        .map(|e| EventView::from_stored(&e.data))
        .collect::<crate::service::Result<Vec<_>>>()?;
    Ok(Json(List::page(data, has_more)))
}

async fn own_event(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<strongroom_store::EventRecord> {
    parse_id(IdKind::Event, id)?;
    state
        .store()
        .get_event(&who.account_id, id)
        .await?
        .filter(|e| e.mode == who.mode)
        .ok_or(codes::NOT_FOUND)
}

/// Retrieve an event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^evt_[0-9a-f]{32}$")),
    responses((status = 200, description = "The event", body = EventView),
        (status = 403, description = "permission_denied (no events:read), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get_event(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EventView>> {
    who.require(Scope::EventsRead)?;
    Ok(Json(EventView::from_stored(
        &own_event(&state, &who, &id).await?.data,
    )?))
}

/// Query of `GET /v1/events/{id}/deliveries`: no parameter; any is refused
/// (`unknown_field`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {}

/// The deliveries of an event: one per endpoint, with state and attempt count.
#[utoipa::path(get, path = "/v1/events/{id}/deliveries", tag = "events", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^evt_[0-9a-f]{32}$"), DeliveriesQuery),
    responses((status = 200, description = "Every delivery of the event", body = List<DeliveryView>),
        (status = 400, description = "unknown_field", body = ErrorResponse),
        (status = 403, description = "permission_denied (no events:read), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn event_deliveries(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(DeliveriesQuery {}): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<List<DeliveryView>>> {
    who.require(Scope::EventsRead)?;
    let ev = own_event(&state, &who, &id).await?;
    let rows = state
        .store()
        .event_deliveries(&who.account_id, &ev.id)
        .await?;
    Ok(Json(List::all(
        rows.iter().map(DeliveryView::from).collect(),
    )))
}

/// Body of `POST /v1/events/{id}/redeliver`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverBody {
    /// Only to this endpoint (default: every enabled endpoint that wants the event).
    #[schema(pattern = "^we_[0-9a-f]{32}$")]
    pub endpoint: Option<String>,
}

/// Send an event again (a new delivery run with the same `webhook-id`).
#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "events", security(("api_key" = [])),
    request_body(content = Option<RedeliverBody>, description = "Optional"),
    params(("id" = String, Path, pattern = "^evt_[0-9a-f]{32}$")),
    responses((status = 200, description = "How many deliveries were queued", body = RedeliveryView),
        (status = 400, description = "idempotency_key_invalid, invalid_request, unknown_field, invalid_parameter", body = ErrorResponse),
        (status = 403, description = "permission_denied (no webhooks:write), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "idempotency_in_progress", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 422, description = "idempotency_key_reused", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn redeliver(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    crate::extract::ApiBytes(body): crate::extract::ApiBytes,
) -> ApiResult<Json<RedeliveryView>> {
    who.require(Scope::WebhooksWrite)?;
    let b: RedeliverBody = optional_json(&headers, &body)?;
    let ev = own_event(&state, &who, &id).await?;
    if let Some(ep) = &b.endpoint {
        parse_id(IdKind::WebhookEndpoint, ep).map_err(|_| codes::INVALID_PARAMETER)?;
    }
    let n = state
        .store()
        .audited(&who.audit)
        .requeue(
            &who.account_id,
            who.mode,
            b.endpoint.as_deref(),
            Some(&ev.id),
            None,
            state.now_ms(),
        )
        .await?;
    Ok(Json(RedeliveryView {
        object: RedeliveryObject::Value,
        event: ev.id,
        queued: n,
    }))
}

// ---- endpoints ----

/// Body of `POST /v1/webhook_endpoints`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointBody {
    /// HTTPS URL (plain HTTP only to loopback in dev/test deployments, test mode).
    #[schema(max_length = 2048, pattern = "^https?://[!-~]+$")]
    pub url: String,
    /// Event types, or `["*"]` for all (never `otp.created`).
    #[schema(value_type = Vec<crate::service::events::EventSelector>, min_items = 1, max_items = 100)]
    pub enabled_events: Vec<String>,
    /// `hmac-sha256` (default) or `ed25519`.
    #[schema(value_type = Option<svc::Signing>)]
    pub signing: Option<String>,
    /// Free text, at most 500 characters, no control characters.
    #[schema(max_length = 500, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<String>,
}

fn check_description(d: Option<&String>) -> ApiResult<()> {
    match d {
        Some(d) if d.chars().count() > 500 || d.chars().any(char::is_control) => {
            Err(codes::INVALID_PARAMETER)
        }
        _ => Ok(()),
    }
}

/// Register an endpoint. The response carries its `secret` (`whsec_…`, HMAC) once; an
/// Ed25519 endpoint shows its `public_key` (`whpk_…`). `url_not_allowed` also refuses a
/// schema-valid URL that is not HTTPS to a public address (a rule on what the host
/// resolves to, and on the mode and deployment).
#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhooks", security(("api_key" = [])), request_body = CreateEndpointBody,
    responses((status = 201, description = "The endpoint, with `secret` for HMAC endpoints", body = EndpointView),
        (status = 400, description = "idempotency_key_invalid, idempotency_not_supported (POST with Idempotency-Key: the response carries a secret), invalid_request, unknown_field, missing_field, invalid_parameter, url_not_allowed", body = ErrorResponse),
        (status = 403, description = "permission_denied (no webhooks:write), ip_not_allowed", body = ErrorResponse),
        (status = 409, description = "limit_reached: the account has `[webhooks] max_endpoints` endpoints in this mode (16 by default)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    who: Principal,
    crate::extract::ApiJson(body): crate::extract::ApiJson<CreateEndpointBody>,
) -> ApiResult<(StatusCode, Json<EndpointView>)> {
    who.require(Scope::WebhooksWrite)?;
    let signing = body.signing.as_deref().unwrap_or(SIGNING_HMAC);
    if signing != SIGNING_HMAC && signing != SIGNING_ED25519 {
        return Err(codes::INVALID_PARAMETER);
    }
    check_description(body.description.as_ref())?;
    let types = svc::check_event_types(&body.enabled_events)?;
    let url = svc::check_url(&state, who.mode, &body.url).await?;
    let id = state.new_id(IdKind::WebhookEndpoint)?;
    let (wrapped, shown) = svc::new_secret(&state, signing, &id, 1)?;
    let ep = WebhookEndpointRecord {
        id,
        account_id: who.account_id.clone(),
        mode: who.mode,
        url,
        signing: signing.to_owned(),
        description: body.description,
        secret_wrapped: wrapped,
        secret_version: 1,
        old_wrapped: None,
        old_version: None,
        old_expires_ms: None,
        disabled_ms: None,
        disabled_reason: None,
        failing_since_ms: None,
        created_ms: state.now_ms(),
        enabled_events: types,
        kind: "webhook".into(),
    };
    let max = state.config().webhooks.max_endpoints;
    if !state
        .store()
        .audited(&who.audit)
        .insert_endpoint(&ep, Some(max))
        .await?
    {
        return Err(codes::LIMIT_REACHED);
    }
    let view = EndpointView::new(&state, &ep)?.with_secret(&shown);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn own_endpoint(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<WebhookEndpointRecord> {
    parse_id(IdKind::WebhookEndpoint, id)?;
    state
        .store()
        .get_endpoint(&who.account_id, id)
        .await?
        .filter(|e| e.mode == who.mode)
        .ok_or(codes::NOT_FOUND)
}

/// Query of `GET /v1/webhook_endpoints`. Unknown parameters are refused (`unknown_field`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EndpointQuery {
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `id` of the last endpoint of the previous page.
    #[param(pattern = "^we_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

/// List endpoints, oldest first; page with `starting_after`.
#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhooks", security(("api_key" = [])), params(EndpointQuery),
    responses((status = 200, description = "A page of endpoints", body = List<EndpointView>),
        (status = 400, description = "invalid_parameter, unknown_field", body = ErrorResponse),
        (status = 403, description = "permission_denied (no webhooks:read), ip_not_allowed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<EndpointQuery>,
) -> ApiResult<Json<List<EndpointView>>> {
    who.require(Scope::WebhooksRead)?;
    let limit = limit(q.limit)?;
    if let Some(after) = &q.starting_after {
        parse_id(IdKind::WebhookEndpoint, after).map_err(|_| codes::INVALID_PARAMETER)?;
    }
    let mut eps = state
        .store()
        .list_endpoints(
            &who.account_id,
            who.mode,
            q.starting_after.as_deref(),
            limit + 1,
        )
        .await?;
    let has_more = page(&mut eps, limit);
    let data = eps
        .iter()
        .map(|e| EndpointView::new(&state, e))
        .collect::<crate::service::Result<Vec<_>>>()?;
    Ok(Json(List::page(data, has_more)))
}

/// Retrieve an endpoint (never its secret).
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^we_[0-9a-f]{32}$")),
    responses((status = 200, description = "The endpoint", body = EndpointView),
        (status = 403, description = "permission_denied (no webhooks:read), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointView>> {
    who.require(Scope::WebhooksRead)?;
    let ep = own_endpoint(&state, &who, &id).await?;
    Ok(Json(EndpointView::new(&state, &ep)?))
}

/// Body of `PATCH /v1/webhook_endpoints/{id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointBody {
    /// New URL (same rules as at creation).
    #[schema(max_length = 2048, pattern = "^https?://[!-~]+$")]
    pub url: Option<String>,
    /// New event types.
    #[schema(value_type = Option<Vec<crate::service::events::EventSelector>>, min_items = 1, max_items = 100)]
    pub enabled_events: Option<Vec<String>>,
    /// New description.
    #[schema(max_length = 500, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<String>,
}

/// Update an endpoint's URL, event types or description. `url_not_allowed` also refuses
/// a schema-valid URL that is not HTTPS to a public address.
#[utoipa::path(patch, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", security(("api_key" = [])), request_body = UpdateEndpointBody,
    params(("id" = String, Path, pattern = "^we_[0-9a-f]{32}$")),
    responses((status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, description = "invalid_request, unknown_field, invalid_parameter, url_not_allowed", body = ErrorResponse),
        (status = 403, description = "permission_denied (no webhooks:write), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    crate::extract::ApiJson(body): crate::extract::ApiJson<UpdateEndpointBody>,
) -> ApiResult<Json<EndpointView>> {
    who.require(Scope::WebhooksWrite)?;
    let mut ep = own_endpoint(&state, &who, &id).await?;
    if let Some(u) = &body.url {
        ep.url = svc::check_url(&state, who.mode, u).await?;
    }
    check_description(body.description.as_ref())?;
    if body.description.is_some() {
        ep.description = body.description;
    }
    let types = body.enabled_events.is_some();
    if let Some(t) = &body.enabled_events {
        ep.enabled_events = svc::check_event_types(t)?;
    }
    if !state
        .store()
        .audited(&who.audit)
        .update_endpoint(&ep, types)
        .await?
    {
        return Err(codes::NOT_FOUND);
    }
    Ok(Json(EndpointView::new(&state, &ep)?))
}

/// Delete an endpoint and its pending deliveries.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^we_[0-9a-f]{32}$")),
    responses((status = 200, description = "`{id, object, deleted: true}`", body = EndpointDeletedView),
        (status = 403, description = "permission_denied (no webhooks:write), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointDeletedView>> {
    who.require(Scope::WebhooksWrite)?;
    let ep = own_endpoint(&state, &who, &id).await?;
    if !state
        .store()
        .audited(&who.audit)
        .delete_endpoint(&who.account_id, &ep.id)
        .await?
    {
        return Err(codes::NOT_FOUND);
    }
    Ok(Json(EndpointDeletedView {
        id: ep.id,
        object: EndpointObject::Value,
        deleted: true,
    }))
}

/// Disable an endpoint: nothing is queued for it until it is enabled.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/disable", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^we_[0-9a-f]{32}$")),
    responses((status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, description = "idempotency_key_invalid", body = ErrorResponse),
        (status = 403, description = "permission_denied (no webhooks:write), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "idempotency_in_progress", body = ErrorResponse),
        (status = 422, description = "idempotency_key_reused", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn disable_endpoint(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointView>> {
    let now = state.now_ms();
    set_disabled(&state, &who, &id, Some((now, "manual"))).await
}

/// Enable an endpoint (and clear its failure run).
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/enable", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^we_[0-9a-f]{32}$")),
    responses((status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, description = "idempotency_key_invalid", body = ErrorResponse),
        (status = 403, description = "permission_denied (no webhooks:write), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "idempotency_in_progress", body = ErrorResponse),
        (status = 422, description = "idempotency_key_reused", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn enable_endpoint(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointView>> {
    set_disabled(&state, &who, &id, None).await
}

/// Disables (`Some((when, reason))`) or enables an own endpoint; the endpoint after.
async fn set_disabled(
    state: &AppState,
    who: &Principal,
    id: &str,
    disabled: Option<(i64, &str)>,
) -> ApiResult<Json<EndpointView>> {
    who.require(Scope::WebhooksWrite)?;
    let ep = own_endpoint(state, who, id).await?;
    state
        .store()
        .audited(&who.audit)
        .set_endpoint_disabled(
            &who.account_id,
            &ep.id,
            disabled.map(|d| d.0),
            disabled.map(|d| d.1),
            &[],
        )
        .await?;
    let ep = own_endpoint(state, who, id).await?;
    Ok(Json(EndpointView::new(state, &ep)?))
}

/// Issue a new secret (shown once). For 24 hours every delivery is signed under both.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/rotate_secret", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^we_[0-9a-f]{32}$")),
    responses((status = 200, description = "The endpoint with the new `secret` (HMAC) or `public_key` (Ed25519)", body = EndpointView),
        (status = 400, description = "idempotency_key_invalid, idempotency_not_supported (POST with Idempotency-Key: the response carries a secret)", body = ErrorResponse),
        (status = 403, description = "permission_denied (no webhooks:write), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "conflict", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointView>> {
    who.require(Scope::WebhooksWrite)?;
    let mut ep = own_endpoint(&state, &who, &id).await?;
    let prev = ep.secret_version;
    let version = prev.saturating_add(1);
    let (wrapped, shown) = svc::new_secret(&state, &ep.signing, &ep.id, version)?;
    ep.old_wrapped = Some(std::mem::replace(&mut ep.secret_wrapped, wrapped));
    ep.old_version = Some(prev);
    ep.old_expires_ms = Some(state.now_ms().saturating_add(svc::ROTATION_OVERLAP_MS));
    ep.secret_version = version;
    if !state
        .store()
        .audited(&who.audit)
        .rotate_endpoint_secret(&ep, prev)
        .await?
    {
        return Err(codes::CONFLICT);
    }
    Ok(Json(EndpointView::new(&state, &ep)?.with_secret(&shown)))
}

/// Body of `POST /v1/webhook_endpoints/{id}/recover`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    /// Unix seconds: resend every matching event created since then.
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(minimum = 0, maximum = 253_402_300_799_i64)]
    pub since: i64,
}

/// Resend every event since a time to this endpoint (same `webhook-id`s).
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/recover", tag = "webhooks", security(("api_key" = [])), request_body = RecoverBody,
    params(("id" = String, Path, pattern = "^we_[0-9a-f]{32}$")),
    responses((status = 200, description = "How many deliveries were queued", body = RecoveryView),
        (status = 400, description = "idempotency_key_invalid, invalid_request, unknown_field, missing_field, invalid_parameter", body = ErrorResponse),
        (status = 403, description = "permission_denied (no webhooks:write), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "endpoint_disabled, idempotency_in_progress", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 422, description = "idempotency_key_reused", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn recover(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    crate::extract::ApiBytes(body): crate::extract::ApiBytes,
) -> ApiResult<Json<RecoveryView>> {
    who.require(Scope::WebhooksWrite)?;
    let b: RecoverBody = required_json(&headers, &body)?;
    let ep = own_endpoint(&state, &who, &id).await?;
    if ep.disabled_ms.is_some() {
        return Err(codes::ENDPOINT_DISABLED);
    }
    if !(0..=MAX_SECS).contains(&b.since) {
        return Err(codes::INVALID_PARAMETER);
    }
    let since_ms = b.since.saturating_mul(1000);
    let n = state
        .store()
        .audited(&who.audit)
        .requeue(
            &who.account_id,
            who.mode,
            Some(&ep.id),
            None,
            Some(since_ms),
            state.now_ms(),
        )
        .await?;
    Ok(Json(RecoveryView {
        object: RecoveryObject::Value,
        endpoint: ep.id,
        queued: n,
    }))
}

/// Query of `GET /v1/webhook_endpoints/{id}/attempts`. Unknown parameters are refused
/// (`unknown_field`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttemptQuery {
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `id` (`evt_…:attempt`) of the last attempt of the previous page.
    #[param(pattern = "^evt_[0-9a-f]{32}:[0-9]{1,18}$")]
    pub starting_after: Option<String>,
}

/// The latest delivery attempts to an endpoint, newest first (time, status, latency,
/// error class, at most 1 KiB of the response body), a page at a time: `limit` (1–100,
/// default 10) and `starting_after`, the `id` (`evt_…:attempt`) of the last attempt of
/// the previous page.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/attempts", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^we_[0-9a-f]{32}$"), AttemptQuery),
    responses((status = 200, description = "A page of attempts", body = List<AttemptView>),
        (status = 400, description = "invalid_parameter (limit, starting_after), unknown_field", body = ErrorResponse),
        (status = 403, description = "permission_denied (no webhooks:read), ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn attempts(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<AttemptQuery>,
) -> ApiResult<Json<List<AttemptView>>> {
    who.require(Scope::WebhooksRead)?;
    let limit = limit(q.limit)?;
    let ep = own_endpoint(&state, &who, &id).await?;
    let after = match q.starting_after.as_deref() {
        None => None,
        Some(cursor) => {
            let (event, attempt) = cursor.split_once(':').ok_or(codes::INVALID_PARAMETER)?;
            parse_id(IdKind::Event, event).map_err(|_| codes::INVALID_PARAMETER)?;
            if attempt.is_empty()
                || attempt.len() > 18
                || !attempt.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(codes::INVALID_PARAMETER);
            }
            let attempt: i64 = attempt.parse().map_err(|_| codes::INVALID_PARAMETER)?;
            // A delivery is named by its event and endpoint (the fan-out makes it so).
            Some((format!("{event}:{}", ep.id), attempt))
        }
    };
    let after = after.as_ref().map(|(d, n)| (d.as_str(), *n));
    let mut rows = state
        .store()
        .endpoint_attempts(&ep.id, after, limit + 1)
        .await?;
    let has_more = page(&mut rows, limit);
    Ok(Json(List::page(
        rows.iter().map(AttemptView::from).collect(),
        has_more,
    )))
}

// ---- inbound ----

/// Receive a processor notification for a configured source. Verified on the raw
/// bytes; refused with 401 (and recorded) when unsigned, mis-signed or stale.
#[utoipa::path(post, path = "/v1/inbound/{source}", tag = "inbound", request_body(content = String, content_type = "application/json", description = "The processor's raw notification"),
    params(("source" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "The notification verified and was recorded", body = InboundHookView),
        (status = 401, description = "signature_invalid", body = ErrorResponse),
        (status = 404, description = "not_found: no such source", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn inbound(
    State(state): State<AppState>,
    RequestScope(audit): RequestScope,
    ApiPath(source): ApiPath<String>,
    headers: HeaderMap,
    crate::extract::ApiBytes(body): crate::extract::ApiBytes,
) -> ApiResult<Json<InboundHookView>> {
    let src = state
        .config()
        .inbound_sources
        .iter()
        .find(|s| s.name == source)
        .ok_or(codes::NOT_FOUND)?
        .clone();
    let now = state.now_ms();
    let id = state.new_id(IdKind::Event)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verdict = inbound::verify(&src, header, &body, secs(now));
    match verdict {
        Ok(()) => {
            // Verified on the raw bytes; stored and emitted only with card numbers
            // redacted, on the parsed JSON (so escapes cannot hide a digit).
            let (payload, stored) = inbound::redact_body(&body);
            let ev = state.event_of(
                &src.account_id,
                src.mode,
                EventType::InboundReceived,
                &InboundEventObject {
                    id: &id,
                    object: InboundHookObject::Value,
                    source: &src.name,
                    payload: &payload,
                },
            )?;
            let rec = InboundRecord {
                id: id.clone(),
                source: src.name.clone(),
                verified: true,
                reason: None,
                received_ms: now,
                body: stored,
            };
            state
                .store()
                .audited(&audit)
                .insert_inbound(&rec, &[ev])
                .await?;
            Ok(Json(InboundHookView {
                object: InboundHookObject::Value,
                id,
                verified: true,
            }))
        }
        Err(refusal) => {
            let rec = InboundRecord {
                id,
                source: src.name.clone(),
                verified: false,
                reason: Some(refusal.as_str().to_owned()),
                received_ms: now,
                body: None,
            };
            state
                .store()
                .audited(&audit)
                .insert_inbound(&rec, &[])
                .await?;
            tracing::warn!(source = %src.name, reason = refusal.as_str(), "inbound hook refused");
            Err(codes::SIGNATURE_INVALID)
        }
    }
}
