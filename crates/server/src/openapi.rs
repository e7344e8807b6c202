//! The OpenAPI document, generated from the handlers' annotations.

mod contract;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The error envelope every error response uses.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside the envelope.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `conflict_error`, `rate_limit_error` or `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stable machine code; see the `x-error-codes` extension for the full list.
    pub code: String,
    /// Human-readable; never echoes input.
    pub message: String,
    /// `rules_invalid` only: the rule refused (its id, or `rules[i]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `bin_table_invalid` only: the 1-based line of the table at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    /// `rules_invalid`, `bin_table_invalid` and `ip_database_invalid` only: what is
    /// wrong, in words (never the data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The `Request-Id` of the request.
    pub request_id: String,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["api_key", "admin_key"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Strongroom API", description = "Self-hosted card vault. Every response carries `Request-Id`; every error body is `{\"error\": {type, code, message, request_id}}`."),
    paths(
        crate::routes::meta::healthz,
        crate::routes::meta::readyz,
        crate::routes::meta::openapi,
        crate::routes::cards::create,
        crate::routes::cards::redeem_card_token,
        crate::routes::cards::list,
        crate::routes::cards::retrieve,
        crate::routes::cards::delete,
        crate::routes::cards::create_otp,
        crate::routes::cards::reveal,
        crate::routes::admin::create_account,
        crate::routes::admin::get_account,
        crate::routes::admin::update_account,
        crate::routes::admin::create_key,
        crate::routes::admin::list_keys,
        crate::routes::admin::revoke_key,
        crate::routes::admin::key_status,
        crate::routes::admin::rotate_keys,
        crate::routes::admin::retire_key,
        crate::routes::admin::rotate_otp_secret,
        crate::routes::admin::create_admin_key,
        crate::routes::admin::list_admin_keys,
        crate::routes::admin::revoke_admin_key,
        crate::routes::admin::set_admin_key_allowlist,
        crate::routes::relay::put_destinations,
        crate::routes::relay::get_destinations,
        crate::routes::relay::send,
        crate::routes::risk::create,
        crate::routes::risk::get,
        crate::routes::risk::feedback,
        crate::routes::risk::card_failure,
        crate::routes::risk::rules,
        crate::routes::risk::put_rules,
        crate::routes::risk::rule_versions,
        crate::routes::risk::rule_version,
        crate::routes::risk_data::put_bin_table,
        crate::routes::risk_data::bin_table,
        crate::routes::risk_data::put_ip_database,
        crate::routes::risk_data::ip_database,
        crate::routes::risk_lists::create,
        crate::routes::risk_lists::list,
        crate::routes::risk_lists::get,
        crate::routes::risk_lists::delete,
        crate::routes::suspensions::create,
        crate::routes::suspensions::list,
        crate::routes::suspensions::get,
        crate::routes::suspensions::lift,
        crate::routes::suspensions::admin_create,
        crate::routes::suspensions::admin_lift,
        crate::routes::client_sessions::create,
        crate::routes::client_sessions::get,
        crate::routes::client_sessions::collect,
        crate::routes::inbound_routes::create,
        crate::routes::inbound_routes::list,
        crate::routes::inbound_routes::get,
        crate::routes::inbound_routes::delete,
        crate::routes::inbound_routes::forward,
        crate::routes::terminals::create,
        crate::routes::terminals::list,
        crate::routes::terminals::get,
        crate::routes::terminals::disable,
        crate::routes::terminals::cards,
        crate::routes::terminals::pin_translations,
        crate::routes::integrity::create_app,
        crate::routes::integrity::list_apps,
        crate::routes::integrity::get_app,
        crate::routes::integrity::update_app,
        crate::routes::integrity::delete_app,
        crate::routes::integrity::new_hash,
        crate::routes::integrity::attest,
        crate::routes::controls::create_signing_key,
        crate::routes::controls::list_signing_keys,
        crate::routes::controls::revoke_signing_key,
        crate::routes::controls::get_account,
        crate::routes::controls::update_account,
        crate::routes::controls::get_ip_allowlist,
        crate::routes::controls::put_ip_allowlist,
        crate::routes::pin::encryption_key,
        crate::routes::pin::set,
        crate::routes::pin::verify,
        crate::routes::pin::change,
        crate::routes::pin::admin_unlock,
        crate::routes::pin::admin_rotate,
        crate::routes::pin::get_settings,
        crate::routes::pin::set_settings,
        crate::routes::audit::list,
        crate::routes::admin::key_inventory,
        crate::routes::sys::seal_status,
        crate::routes::sys::unseal,
        crate::routes::sys::seal,
        crate::routes::sys::rotate_root,
        crate::routes::sys::rotation,
        crate::routes::key_imports::create,
        crate::routes::key_imports::get,
        crate::routes::key_imports::add_component,
        crate::routes::tokens::issue,
        crate::routes::tokens::jwks,
        crate::routes::tokens::list_keys,
        crate::routes::tokens::rotate,
        crate::routes::tokens::revoke_all,
        crate::routes::webhooks::list_events,
        crate::routes::webhooks::get_event,
        crate::routes::webhooks::event_deliveries,
        crate::routes::webhooks::redeliver,
        crate::routes::webhooks::create_endpoint,
        crate::routes::webhooks::list_endpoints,
        crate::routes::webhooks::get_endpoint,
        crate::routes::webhooks::update_endpoint,
        crate::routes::webhooks::delete_endpoint,
        crate::routes::webhooks::disable_endpoint,
        crate::routes::webhooks::enable_endpoint,
        crate::routes::webhooks::rotate_secret,
        crate::routes::webhooks::recover,
        crate::routes::webhooks::attempts,
        crate::routes::webhooks::inbound,
    ),
    components(schemas(ErrorResponse, ErrorDetail)),
    modifiers(&Security),
)]
struct ApiDoc;

/// The document as JSON, with the full list of error codes as `x-error-codes`.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let codes: Vec<serde_json::Value> = crate::error::codes::ALL
        .iter()
        .map(|e| serde_json::json!({"code": e.code, "status": e.status.as_u16(), "type": e.error_type(), "message": e.message}))
        .collect();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("x-error-codes".into(), serde_json::Value::Array(codes));
        obj.insert("x-response-headers".into(), response_headers());
    }
    crate::gateway::openapi::document_headers(&mut doc);
    contract::complete(&mut doc);
    doc
}

/// Headers on every response, errors included (see `docs/tokens.md`).
fn response_headers() -> serde_json::Value {
    serde_json::json!([
        {"name": "Request-Id", "value": "req_…"},
        {"name": "Strict-Transport-Security", "value": "max-age=63072000; includeSubDomains; preload"},
        {"name": "Cache-Control", "value": "no-store"},
        {"name": "X-Content-Type-Options", "value": "nosniff"},
    ])
}
