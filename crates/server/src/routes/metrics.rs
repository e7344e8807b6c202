//! The admin listener: `/metrics` in Prometheus text format, plain HTTP, meant for
//! loopback (or a private interface scraped by Prometheus). No authentication and no
//! sensitive value: labels are method, route template, status, key purpose and state.

use crate::custody::Vault;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;

async fn metrics(State(vault): State<Arc<Vault>>) -> impl IntoResponse {
    // A sealed vault has only its seal to report: the counters belong to the open state.
    let mut body = match vault.state() {
        Some(state) => crate::metrics::render(state.metrics(), state.store(), state.now_ms()).await,
        None => String::new(),
    };
    body.push_str(
        "# HELP strongroom_sealed 1 while the vault is sealed (keys out of memory, the API answering 503 sealed).\n# TYPE strongroom_sealed gauge\n",
    );
    body.push_str(if vault.is_sealed() {
        "strongroom_sealed 1\n"
    } else {
        "strongroom_sealed 0\n"
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Binds `addr` and serves `/metrics` until the returned task is aborted.
pub async fn serve(
    vault: Arc<Vault>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(vault);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics listener stopped");
        }
    });
    tracing::info!(addr = %local, "metrics listening");
    Ok((local, task))
}
