//! The router: every route, and the middleware around them.

pub mod admin;
pub mod audit;
pub mod cards;
pub mod client_sessions;
pub mod controls;
pub mod elements;
pub mod inbound_routes;
pub mod integrity;
pub mod key_imports;
pub mod meta;
pub mod metrics;
pub mod pin;
pub mod relay;
pub mod risk;
pub mod risk_data;
pub mod risk_lists;
pub mod suspensions;
pub mod sys;
pub mod terminals;
pub mod tokens;
pub mod webhooks;

use crate::error::codes;
use crate::middleware::request_context;
use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;

/// Builds the application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/v1/openapi.json", get(meta::openapi))
        .route("/v1/cards", post(cards::create).get(cards::list))
        .route("/v1/cards/{id}", get(cards::retrieve).delete(cards::delete))
        .route("/v1/cards/{id}/reveal", post(cards::reveal))
        .route("/v1/card_tokens/redeem", post(cards::redeem_card_token))
        .route("/v1/otp", post(cards::create_otp))
        .route("/elements/v1/elements.js", get(elements::elements_js))
        .route("/elements/v1/{field}", get(elements::field))
        .route("/js/v1/strongroom.js", get(elements::strongroom_js))
        .route("/js/v1/strongroom.d.ts", get(elements::strongroom_dts))
        .route("/v1/risk/assessments", post(risk::create))
        .route("/v1/risk/assessments/{id}", get(risk::get))
        .route("/v1/risk/feedback", post(risk::feedback))
        .route("/v1/risk/card_failures", post(risk::card_failure))
        .route("/v1/risk/rules", get(risk::rules).put(risk::put_rules))
        .route("/v1/risk/rules/versions", get(risk::rule_versions))
        .route("/v1/risk/rules/versions/{version}", get(risk::rule_version))
        .route(
            crate::extract::BIN_TABLE_ROUTE,
            get(risk_data::bin_table).put(risk_data::put_bin_table),
        )
        .route(
            crate::extract::IP_DATABASE_ROUTE,
            get(risk_data::ip_database).put(risk_data::put_ip_database),
        )
        .route(
            "/v1/risk/lists/{list}/entries",
            post(risk_lists::create).get(risk_lists::list),
        )
        .route(
            "/v1/risk/lists/{list}/entries/{id}",
            get(risk_lists::get).delete(risk_lists::delete),
        )
        .route(
            "/v1/suspensions",
            post(suspensions::create).get(suspensions::list),
        )
        .route(
            "/v1/suspensions/{id}",
            get(suspensions::get).delete(suspensions::lift),
        )
        .route(
            "/v1/admin/accounts/{id}/suspensions",
            post(suspensions::admin_create),
        )
        .route(
            "/v1/admin/accounts/{id}/suspensions/{suspension_id}",
            axum::routing::delete(suspensions::admin_lift),
        )
        .route("/v1/client_sessions", post(client_sessions::create))
        .route("/v1/client_sessions/{id}", get(client_sessions::get))
        .route(
            client_sessions::CARDS_ROUTE,
            post(client_sessions::collect).options(client_sessions::preflight),
        )
        .route("/v1/admin/accounts", post(admin::create_account))
        .route(
            "/v1/admin/accounts/{id}",
            get(admin::get_account).patch(admin::update_account),
        )
        .route(
            "/v1/admin/accounts/{id}/api_keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/v1/admin/accounts/{id}/api_keys/{key_id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route(
            "/v1/admin/accounts/{id}/otp_signing_secret/rotate",
            post(admin::rotate_otp_secret),
        )
        .route(
            "/v1/admin/admin_keys",
            post(admin::create_admin_key).get(admin::list_admin_keys),
        )
        .route(
            "/v1/admin/admin_keys/{key_id}",
            axum::routing::delete(admin::revoke_admin_key),
        )
        .route(
            "/v1/admin/admin_keys/{key_id}/ip_allowlist",
            axum::routing::put(admin::set_admin_key_allowlist),
        )
        .route(
            "/v1/admin/accounts/{id}/integrity_apps",
            post(integrity::create_app).get(integrity::list_apps),
        )
        .route(
            "/v1/admin/accounts/{id}/integrity_apps/{app_id}",
            get(integrity::get_app)
                .patch(integrity::update_app)
                .delete(integrity::delete_app),
        )
        .route(
            "/v1/admin/accounts/{id}/relay_destinations",
            get(relay::get_destinations).put(relay::put_destinations),
        )
        .route("/v1/admin/accounts/{id}/keys", get(admin::key_status))
        .route("/v1/admin/key_inventory", get(admin::key_inventory))
        .route(
            "/v1/admin/accounts/{id}/keys/rotate",
            post(admin::rotate_keys),
        )
        .route(
            "/v1/admin/accounts/{id}/keys/retire",
            post(admin::retire_key),
        )
        .route(
            "/v1/signing_keys",
            post(controls::create_signing_key).get(controls::list_signing_keys),
        )
        .route(
            "/v1/signing_keys/{id}",
            axum::routing::delete(controls::revoke_signing_key),
        )
        .route(
            "/v1/account",
            get(controls::get_account).patch(controls::update_account),
        )
        .route(
            "/v1/ip_allowlist",
            get(controls::get_ip_allowlist).put(controls::put_ip_allowlist),
        )
        .route("/v1/pin/encryption_key", get(pin::encryption_key))
        .route("/v1/cards/{id}/pin", axum::routing::put(pin::set))
        .route("/v1/cards/{id}/pin/verify", post(pin::verify))
        .route("/v1/cards/{id}/pin/change", post(pin::change))
        .route("/v1/admin/cards/{id}/pin/unlock", post(pin::admin_unlock))
        .route(
            "/v1/admin/pin/encryption_key/rotate",
            post(pin::admin_rotate),
        )
        .route(
            "/v1/admin/accounts/{id}/pin_settings",
            get(pin::get_settings).post(pin::set_settings),
        )
        .route("/v1/admin/audit", get(audit::list))
        .route("/v1/sys/seal_status", get(sys::seal_status))
        .route("/v1/sys/unseal", post(sys::unseal))
        .route("/v1/sys/seal", post(sys::seal))
        .route("/v1/admin/key_imports", post(key_imports::create))
        .route("/v1/admin/key_imports/{id}", get(key_imports::get))
        .route(
            "/v1/admin/key_imports/{id}/components",
            post(key_imports::add_component),
        )
        .route(
            "/v1/sys/rotate_root",
            get(sys::rotation).post(sys::rotate_root),
        )
        .route("/v1/auth/token", post(tokens::issue))
        .route("/.well-known/jwks.json", get(tokens::jwks))
        .route("/v1/admin/jwt_keys", get(tokens::list_keys))
        .route("/v1/admin/jwt_keys/rotate", post(tokens::rotate))
        .route(
            "/v1/admin/accounts/{id}/revoke_all",
            post(tokens::revoke_all),
        )
        .route("/v1/events", get(webhooks::list_events))
        .route("/v1/events/{id}", get(webhooks::get_event))
        .route(
            "/v1/events/{id}/deliveries",
            get(webhooks::event_deliveries),
        )
        .route("/v1/events/{id}/redeliver", post(webhooks::redeliver))
        .route(
            "/v1/webhook_endpoints",
            post(webhooks::create_endpoint).get(webhooks::list_endpoints),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(webhooks::get_endpoint)
                .patch(webhooks::update_endpoint)
                .delete(webhooks::delete_endpoint),
        )
        .route(
            "/v1/webhook_endpoints/{id}/disable",
            post(webhooks::disable_endpoint),
        )
        .route(
            "/v1/webhook_endpoints/{id}/enable",
            post(webhooks::enable_endpoint),
        )
        .route(
            "/v1/webhook_endpoints/{id}/rotate_secret",
            post(webhooks::rotate_secret),
        )
        .route(
            "/v1/webhook_endpoints/{id}/recover",
            post(webhooks::recover),
        )
        .route(
            "/v1/webhook_endpoints/{id}/attempts",
            get(webhooks::attempts),
        )
        .route("/v1/inbound/{source}", post(webhooks::inbound))
        .route(crate::extract::RELAY_ROUTE, post(relay::send))
        .route(
            "/v1/inbound_routes",
            post(inbound_routes::create).get(inbound_routes::list),
        )
        .route(
            "/v1/inbound_routes/{id}",
            get(inbound_routes::get).delete(inbound_routes::delete),
        )
        .route(
            crate::extract::INBOUND_ROUTE,
            axum::routing::any(inbound_routes::forward),
        )
        .route(
            "/v1/terminals",
            post(terminals::create).get(terminals::list),
        )
        .route("/v1/terminals/{id}", get(terminals::get))
        .route(
            "/v1/integrity/app",
            get(integrity::new_hash).post(integrity::attest),
        )
        .route("/v1/terminals/{id}/disable", post(terminals::disable))
        .route("/v1/terminals/{id}/cards", post(terminals::cards))
        .route(
            "/v1/terminals/{id}/pin_translations",
            post(terminals::pin_translations),
        )
        .route(
            crate::extract::INBOUND_ROUTE_ROOT,
            axum::routing::any(inbound_routes::forward),
        )
        .fallback(|| async { codes::NOT_FOUND })
        .method_not_allowed_fallback(|| async { codes::METHOD_NOT_ALLOWED })
        // Our extractors stop at 64 KiB themselves (`ApiJson`, `ApiBytes`); this holds
        // any of axum's own body extractors to the same limit instead of its 2 MiB.
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::extract::BODY_LIMIT,
        ))
        // Layers run outermost last-added: context wraps everything, panics become 500s.
        // Gateway controls (allowlist, auth, signatures, rate limit, idempotency): innermost.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::gateway::gateway,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            axum::response::IntoResponse::into_response(codes::INTERNAL)
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}
