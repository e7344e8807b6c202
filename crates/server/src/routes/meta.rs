//! Health and the OpenAPI document.

use crate::error::ApiResult;
use crate::openapi::ErrorResponse;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;

/// The answer of `/healthz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HealthView {
    /// Always `ok`.
    pub status: &'static str,
}

/// The answer of `/readyz` when ready.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReadyView {
    /// Always `ready`.
    pub status: &'static str,
}

/// Alive.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "The process is alive", body = HealthView)))]
pub async fn healthz() -> Json<HealthView> {
    Json(HealthView { status: "ok" })
}

/// Ready: the store answers, the keys are loaded, the audit log is writable. The answer
/// is at most a second old.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200, description = "Ready to serve (the answer is reused for up to a second)", body = ReadyView),
    (status = 429, description = "rate_limited (per client address)", body = ErrorResponse),
    (status = 503, description = "service_unavailable (store unreachable or keys not loadable) or audit_unavailable", body = ErrorResponse)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<ReadyView>> {
    state.ready().check().await?;
    Ok(Json(ReadyView { status: "ready" }))
}

/// The OpenAPI document, generated from the code.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
