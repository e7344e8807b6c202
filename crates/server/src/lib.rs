//! The Strongroom HTTPS API: routes, middleware, services and workers.
//!
//! [`start`] boots the server from a [`ServerConfig`] and a root key and returns a
//! [`Running`] handle; the CLI and the integration tests both go through it.

pub mod audit;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod events;
pub mod extract;
pub mod gateway;
pub mod keyring;
pub mod leak_guard;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pin_keys;
pub mod ready;
pub mod risk;
pub mod routes;
pub mod secret_body;
pub mod service;
pub mod state;
pub mod tls;

pub use audit::Origin;
pub use config::{ServerConfig, TlsFiles};
pub use error::{ApiError, ApiResult};
pub use service::accounts::{IssuedKey, NewKeyKind};
pub use state::AppState;

use axum_server::accept::NoDelayAcceptor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::{Clock, SystemClock};
use strongroom_crypto::RootKey;
use strongroom_store::{Store, VaultStore};
use thiserror::Error;

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] strongroom_store::StoreError),
    /// The TLS files could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
    /// A setting cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// The audit log could not be written (the service fails closed).
    #[error("audit log: {0}")]
    Audit(&'static str),
    /// The JWT signing keys could not be loaded or created.
    #[error("JWT signing keys: {0}")]
    Keys(&'static str),
}

/// A started server.
pub struct Running {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// Its state, for provisioning (accounts, keys) from the CLI and tests.
    pub state: AppState,
    /// The admin listener's address (`/metrics`), if one runs.
    pub metrics_addr: Option<SocketAddr>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Asks the server to stop accepting and finish in-flight requests.
    pub fn shutdown(&self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(10)));
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), StartError> {
        let result = match self.task.await {
            Ok(r) => r.map_err(StartError::Io),
            Err(e) => Err(StartError::Io(std::io::Error::other(e))),
        };
        if let Some(t) = &self.metrics_task {
            t.abort();
        }
        // Counted auth failures are written before the stop.
        flush_auth_failures(&self.state, i64::MAX).await;
        // So are a single node's risk counters.
        risk::kept::keep(&self.state).await;
        // The stop is recorded and the head signed, so a truncation behind it shows.
        if let Err(e) = audit_system(&self.state, "service.stop").await {
            tracing::error!(code = e.code, "could not record the service stop");
        }
        if let Err(e) = audit_checkpoint(&self.state).await {
            tracing::error!(
                code = e.code,
                "could not checkpoint the audit log at shutdown"
            );
        }
        result
    }
}

/// Opens the store, builds the app and starts listening.
pub async fn start(config: ServerConfig, root: RootKey) -> Result<Running, StartError> {
    start_with_clock(config, root, Arc::new(SystemClock)).await
}

/// [`start`] with a given clock (tests move time).
pub async fn start_with_clock(
    config: ServerConfig,
    root: RootKey,
    clock: Arc<dyn Clock>,
) -> Result<Running, StartError> {
    gateway::check_config(&config.rate_limit).map_err(StartError::Config)?;
    let store = Store::connect(&config.store).await?;
    check_inbound_accounts(&store, &config.inbound_sources).await?;
    let tls = match &config.tls {
        Some(files) => Some(tls::rustls_config(files).map_err(StartError::Tls)?),
        None => None,
    };
    let geo = load_geo(&config).map_err(StartError::Config)?;
    let state = AppState::new(store, root, clock, config.clone(), geo);
    // Fail closed from the start: a service that cannot record cannot serve.
    audit_system(&state, "service.start")
        .await
        .map_err(|e| StartError::Audit(e.code))?;
    audit::prepare_anchor(state.config().audit_anchor.clone())
        .await
        .map_err(|e| StartError::Audit(e.code))?;
    audit_checkpoint(&state)
        .await
        .map_err(|e| StartError::Audit(e.code))?;
    spawn_checkpointer(state.clone());
    spawn_failure_flusher(state.clone());
    state
        .tokens()
        .ensure_keys()
        .await
        .map_err(|e| StartError::Keys(ApiError::from(e).message))?;
    service::rewrap::spawn(state.clone());
    service::webhooks::spawn(state.clone());
    service::suspensions::spawn(state.clone());
    // Uploaded country data wins over the configuration's files: in force before the
    // first request, then followed.
    if let Err(e) = state
        .country_data()
        .follow(state.store(), state.now_ms())
        .await
    {
        tracing::warn!(error = %e, "uploaded risk country data not read; will retry");
    }
    service::risk_data::spawn(state.clone());
    // A single node's risk counters, kept across its restart.
    risk::kept::restore(&state).await;
    let app = routes::router(state.clone());
    let listener = std::net::TcpListener::bind(config.listen)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    // TCP_NODELAY on every connection: a response goes out when it is written, not held
    // back by Nagle's algorithm until the client acknowledges an earlier segment (which
    // a client may delay by up to 40 ms).
    let task = match tls {
        Some(tls) => {
            let mut server = axum_server::from_tcp_rustls(listener, tls)?
                .map(|tls| tls.acceptor(NoDelayAcceptor))
                .handle(handle.clone());
            slow_client_limits(server.http_builder(), &config);
            tokio::spawn(async move { server.serve(make).await })
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(NoDelayAcceptor)
                .handle(handle.clone());
            slow_client_limits(server.http_builder(), &config);
            tokio::spawn(async move { server.serve(make).await })
        }
    };
    let (metrics_addr, metrics_task) = match config.metrics_listen {
        Some(addr) => {
            let (a, t) = routes::metrics::serve(state.clone(), addr).await?;
            (Some(a), Some(t))
        }
        None => (None, None),
    };
    tracing::info!(addr = %local_addr, backend = state.store().backend_name(), tls = config.tls.is_some(), "strongroom listening");
    Ok(Running {
        local_addr,
        state,
        metrics_addr,
        metrics_task,
        handle,
        task,
    })
}

/// Records a system action (start, stop) in the audit log on its own.
/// The risk engine's country data from the files the configuration names.
fn load_geo(config: &ServerConfig) -> Result<risk::geo::Geo, String> {
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).map_err(|e| format!("risk {what} {}: {}", p.display(), e.kind()))
    };
    let bins = match &config.risk_bin_table {
        Some(p) => Some(std::sync::Arc::new(
            risk::geo::BinTable::parse_csv(&read(p, "BIN table")?)
                .map_err(|e| format!("risk BIN table {}: {e}", p.display()))?,
        )),
        None => None,
    };
    let ips = match &config.risk_ip_database {
        Some(p) => Some(std::sync::Arc::new(
            risk::geo::IpCountryDb::from_bytes(read(p, "IP database")?)
                .map_err(|e| format!("risk IP database {}: {e}", p.display()))?,
        )),
        None => None,
    };
    Ok(risk::geo::Geo::new(bins, ips))
}

async fn audit_system(state: &AppState, action: &str) -> ApiResult<()> {
    let now = state.now_ms();
    audit::system(state.store(), state.metrics(), now, action, "").await
}

/// Signs the audit head into a checkpoint (see [`audit::checkpoint`]).
async fn audit_checkpoint(
    state: &AppState,
) -> ApiResult<Option<strongroom_store::AuditCheckpoint>> {
    let anchor = state.config().audit_anchor.as_deref();
    let (store, root, metrics) = (state.store(), state.root(), state.metrics());
    audit::checkpoint(store, root, metrics, state.now_ms(), anchor).await
}

/// Appends the counts of repeated authentication failures whose window ended before
/// `due_ms` (see [`audit::flush_failures`]).
async fn flush_auth_failures(state: &AppState, due_ms: i64) {
    let (appender, metrics) = (state.audit_appender(), state.metrics());
    audit::flush_failures(appender, metrics, state.now_ms(), due_ms).await;
}

/// Writes the counts of ended failure windows once per window, so a quiet server
/// records them too.
fn spawn_failure_flusher(state: AppState) {
    tokio::spawn(async move {
        let every = Duration::from_millis(audit::failures::REPEAT_WINDOW_MS.unsigned_abs());
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            flush_auth_failures(&state, state.now_ms()).await;
        }
    });
}

/// Checkpoints the audit head every `audit_checkpoint_interval`.
fn spawn_checkpointer(state: AppState) {
    let every = state.config().audit_checkpoint_interval;
    if every.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = audit_checkpoint(&state).await {
                tracing::warn!(code = e.code, "audit checkpoint failed");
            }
        }
    });
}

/// Refuses a configured inbound source whose account does not exist: it would accept
/// signed hooks and then have nowhere to record them. The message names the source and
/// the account, never the secret.
async fn check_inbound_accounts(
    store: &Store,
    sources: &[service::inbound::InboundSource],
) -> Result<(), StartError> {
    for src in sources {
        if store.get_account(&src.account_id).await?.is_none() {
            return Err(StartError::Config(format!(
                "inbound source {:?} names account {}, which does not exist; create the account or correct the source",
                src.name, src.account_id
            )));
        }
    }
    Ok(())
}

/// Limits that stop slow or idle clients from holding connections: a deadline for the
/// request headers (which hyper also applies to an idle keep-alive connection), HTTP/2
/// keep-alive pings that must be answered, and a cap on concurrent HTTP/2 streams. The
/// TLS handshake has its own 10 s deadline (axum-server) and whole requests time out
/// with 408 ([`ServerConfig::request_timeout`]).
fn slow_client_limits(
    b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    config: &ServerConfig,
) {
    let t = config.header_read_timeout;
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(t)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(t)
        .keep_alive_timeout(t)
        .max_concurrent_streams(128)
        .max_header_list_size(64 * 1024);
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_store::StoreConfig;

    /// SECURITY.md states how long the caches keep entries; that must be what the code
    /// does by default, on either backend.
    #[test]
    fn security_md_states_the_cache_lifetimes_in_force() {
        let doc = include_str!("../../../SECURITY.md")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let config = |url: &str| {
            let store = StoreConfig {
                url: url.to_owned(),
                schema: None,
                max_connections: 1,
            };
            ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), None, store)
        };
        let (sqlite, pg) = (config("sqlite://x.db"), config("postgres://h/db"));
        assert_eq!(sqlite.api_key_cache_ttl, pg.api_key_cache_ttl);
        let keys = format!(
            "`api_key_cache_ttl_secs` ({} s by default, on both backends)",
            pg.api_key_cache_ttl.as_secs()
        );
        assert!(doc.contains(&keys), "SECURITY.md should say: {keys}");
        let keyring = format!(
            "`keyring_ttl_secs` ({} s with SQLite, {} s with PostgreSQL by default)",
            sqlite.keyring_ttl.as_secs(),
            pg.keyring_ttl.as_secs()
        );
        assert!(doc.contains(&keyring), "SECURITY.md should say: {keyring}");
    }
}
