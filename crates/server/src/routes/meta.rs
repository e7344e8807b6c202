//! Health and the OpenAPI document.

use crate::error::{ApiResult, codes};
use crate::openapi::ErrorResponse;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use strongroom_store::{AuditStore, VaultStore};

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

/// How long a readiness answer is reused, in milliseconds of the server's clock.
pub const READY_TTL_MS: i64 = 1000;

/// The last readiness answer. The check goes through the single writer (an audit probe),
/// so it runs at most once per [`READY_TTL_MS`] however often `/readyz` is asked, and one
/// at a time: concurrent callers wait for the running check and share its answer.
#[derive(Default)]
pub struct ReadyCache {
    last: tokio::sync::Mutex<Option<(i64, ApiResult<()>)>>,
}

/// Ready: the store answers, the keys are loaded, the audit log is writable. The answer
/// is at most a second old.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200, description = "Ready to serve (the answer is reused for up to a second)", body = ReadyView),
    (status = 429, description = "rate_limited (per client address)", body = ErrorResponse),
    (status = 503, description = "service_unavailable (store unreachable or keys not loadable) or audit_unavailable", body = ErrorResponse)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<ReadyView>> {
    let mut last = state.ready().last.lock().await;
    let now = state.now_ms();
    let fresh = last
        .as_ref()
        .filter(|(at, _)| (0..READY_TTL_MS).contains(&now.saturating_sub(*at)));
    let outcome = match fresh {
        Some((_, r)) => r.clone(),
        None => {
            let r = check(&state).await;
            *last = Some((now, r.clone()));
            r
        }
    };
    drop(last);
    outcome.map(|()| Json(ReadyView { status: "ready" }))
}

async fn check(state: &AppState) -> ApiResult<()> {
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
    Ok(())
}

/// The OpenAPI document, generated from the code.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
