//! The router: every route, and the middleware around them.

pub mod admin;
pub mod cards;
pub mod meta;

use crate::error::codes;
use crate::middleware::request_context;
use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

/// Builds the application.
pub fn router(state: AppState) -> Router {
    let timeout = state.config().request_timeout;
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/v1/openapi.json", get(meta::openapi))
        .route("/v1/cards", post(cards::create).get(cards::list))
        .route("/v1/cards/{id}", get(cards::retrieve).delete(cards::delete))
        .route("/v1/cards/{id}/reveal", post(cards::reveal))
        .route("/v1/otp", post(cards::create_otp))
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
        .route("/v1/admin/accounts/{id}/keys", get(admin::key_status))
        .route(
            "/v1/admin/accounts/{id}/keys/rotate",
            post(admin::rotate_keys),
        )
        .route(
            "/v1/admin/accounts/{id}/keys/retire",
            post(admin::retire_key),
        )
        .fallback(|| async { codes::NOT_FOUND })
        .method_not_allowed_fallback(|| async { codes::METHOD_NOT_ALLOWED })
        // Layers run outermost last-added: context wraps everything, panics become 500s.
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            axum::response::IntoResponse::into_response(codes::INTERNAL)
        }))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}
