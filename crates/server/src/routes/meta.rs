//! Health and the OpenAPI document.

use crate::error::{ApiResult, codes};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use strongroom_store::{AuditStore, VaultStore};

/// Alive.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready: the store answers, the keys are loaded, the audit log is writable.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200, description = "Ready to serve"), (status = 503, description = "service_unavailable (store unreachable or keys not loadable) or audit_unavailable")))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    state
        .store()
        .ping()
        .await
        .map_err(|_| codes::SERVICE_UNAVAILABLE)?;
    // Keys loaded: the root key can derive the audit signer (it is in memory).
    strongroom_crypto::audit::AuditSigner::derive(state.root())
        .map_err(|_| codes::SERVICE_UNAVAILABLE)?;
    // A probe row, rolled back: fails if the audit table refuses writes.
    state
        .store()
        .audit_writable()
        .await
        .map_err(|_| codes::AUDIT_UNAVAILABLE)?;
    Ok(Json(serde_json::json!({"status": "ready"})))
}

/// The OpenAPI document, generated from the code.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
