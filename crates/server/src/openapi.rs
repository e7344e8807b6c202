//! The OpenAPI document, generated from the handlers' annotations.

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
    }
    doc
}
