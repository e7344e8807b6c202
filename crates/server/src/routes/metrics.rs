//! The admin listener: `/metrics` in Prometheus text format, plain HTTP, meant for
//! loopback (or a private interface scraped by Prometheus). No authentication and no
//! sensitive value: labels are method, route template, status, key purpose and state.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(state.metrics(), state.store(), state.now_ms()).await,
    )
}

/// Binds `addr` and serves `/metrics` until the returned task is aborted.
pub async fn serve(
    state: AppState,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics listener stopped");
        }
    });
    tracing::info!(addr = %local, "metrics listening");
    Ok((local, task))
}
