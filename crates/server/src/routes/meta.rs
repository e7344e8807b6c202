//! Health and the OpenAPI document.

use crate::error::ApiResult;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;

/// Alive.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready: the store answers, the keys are loaded, the audit log is writable. The answer
/// is at most a second old.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200, description = "Ready to serve (the answer is reused for up to a second)"),
    (status = 429, description = "rate_limited (per client address)"),
    (status = 503, description = "service_unavailable (store unreachable or keys not loadable) or audit_unavailable")))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    state.ready().check().await?;
    Ok(Json(serde_json::json!({"status": "ready"})))
}

/// The OpenAPI document, generated from the code.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
