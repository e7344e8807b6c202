//! The Strongroom HTTPS API: routes, middleware, services and workers.
//!
//! [`start`] boots the server from a [`ServerConfig`] and a root key and returns a
//! [`Running`] handle; the CLI and the integration tests both go through it.

pub mod audit;
pub mod auth;
pub mod cache;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod keyring;
pub mod leak_guard;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod secret_body;
pub mod service;
pub mod state;
pub mod tls;

pub use error::{ApiError, ApiResult};
pub use service::accounts::{IssuedKey, NewKeyKind};
pub use state::AppState;

use axum_server::accept::NoDelayAcceptor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::{Clock, SystemClock};
use strongroom_crypto::RootKey;
use strongroom_store::{Store, StoreConfig, VaultStore};
use thiserror::Error;

/// Where the TLS certificate chain and private key are (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PKCS#8, SEC1 or PKCS#1 private key.
    pub key_path: PathBuf,
}

/// Everything the server needs besides the root key.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// TLS files. `None` serves plaintext HTTP; the CLI allows that only on loopback.
    pub tls: Option<TlsFiles>,
    /// The database.
    pub store: StoreConfig,
    /// Development or test deployment: OTP delivery may use plain HTTP to loopback.
    pub dev_mode: bool,
    /// How often the re-wrap worker looks for records under old key versions (it is
    /// also woken at once by a rotation).
    pub rewrap_interval: Duration,
    /// How many records the re-wrap worker moves per transaction.
    pub rewrap_batch: i64,
    /// How long a looked-up API key (and an account's controls, a key's allowlist) may
    /// be served from memory. Local changes clear it at once; on PostgreSQL, changes by
    /// other nodes clear it as soon as they are heard (`LISTEN`), and it is bypassed while
    /// not listening. Zero disables the cache.
    pub api_key_cache_ttl: Duration,
    /// How long unwrapped data keys are trusted before the key list is re-read (so a
    /// rotation on another node is picked up).
    pub keyring_ttl: Duration,
    /// Time after which a request is abandoned with 408.
    pub request_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs). Empty: the socket peer is
    /// always the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Rate limits and where their state lives.
    pub rate_limit: gateway::RateLimitConfig,
    /// How far a signature's `created` may be from now.
    pub signature_window: Duration,
    /// How long an idempotent response is kept.
    pub idempotency_ttl: Duration,
    /// PINs refused as too weak besides repeated digits and ascending/descending runs.
    pub pin_deny_list: Vec<String>,
    /// Failed PIN verifications or changes before a PIN locks, unless the account sets
    /// its own (1–10).
    pub pin_max_failures: i64,
    /// How long a replaced PIN transport key still decrypts after a rotation.
    pub pin_transport_grace: Duration,
    /// The admin listener serving `/metrics` (plain HTTP; loopback by default, port 0
    /// picks a free one). `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the audit chain head is signed into a checkpoint (also at start and at
    /// shutdown). Zero: only at start and at shutdown.
    pub audit_checkpoint_interval: Duration,
    /// The file outside the database where every checkpoint is also appended
    /// (`audit::anchor`). Default: `audit-anchor.jsonl` beside an SQLite database; none
    /// with PostgreSQL unless configured.
    pub audit_anchor: Option<std::path::PathBuf>,
    /// Bearer tokens (JWT): algorithm, lifetime, key pre-publication, issuer, audience.
    pub tokens: service::tokens::TokenConfig,
    /// How long a client may take to send a request's headers (HTTP/1.1; also bounds an
    /// idle keep-alive connection), and the HTTP/2 keep-alive ping timeout.
    pub header_read_timeout: Duration,
    /// Webhook delivery settings (retry schedule, workers, timeouts).
    pub webhooks: service::webhooks::WebhookConfig,
    /// Inbound processor hook sources (`POST /v1/inbound/{source}`).
    pub inbound_sources: Vec<service::inbound::InboundSource>,
}

impl ServerConfig {
    /// Defaults for everything but the address, TLS and database.
    pub fn new(listen: SocketAddr, tls: Option<TlsFiles>, store: StoreConfig) -> Self {
        let single_node = store.url.starts_with("sqlite:");
        let audit_anchor = audit::anchor::default_path(&store.url);
        Self {
            listen,
            tls,
            store,
            dev_mode: false,
            rewrap_interval: Duration::from_secs(30),
            rewrap_batch: 256,
            // On PostgreSQL too: every node hears committed changes (`crate::cache`).
            api_key_cache_ttl: Duration::from_secs(300),
            keyring_ttl: Duration::from_secs(if single_node { 300 } else { 5 }),
            request_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            rate_limit: gateway::RateLimitConfig::default(),
            signature_window: Duration::from_secs(300),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            pin_deny_list: service::pin::DEFAULT_DENY_LIST
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            pin_max_failures: service::pin::DEFAULT_MAX_FAILURES,
            pin_transport_grace: Duration::from_secs(24 * 3600),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            audit_checkpoint_interval: Duration::from_secs(60),
            audit_anchor,
            tokens: service::tokens::TokenConfig::default(),
            header_read_timeout: Duration::from_secs(10),
            webhooks: service::webhooks::WebhookConfig::default(),
            inbound_sources: Vec::new(),
        }
    }
}

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
        audit::flush_failures(&self.state, i64::MAX).await;
        // The stop is recorded and the head signed, so a truncation behind it shows.
        if let Err(e) = audit::system(&self.state, "service.stop", "").await {
            tracing::error!(code = e.code, "could not record the service stop");
        }
        if let Err(e) = audit::checkpoint(&self.state).await {
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
    gateway::check_config(&config).map_err(StartError::Config)?;
    let store = Store::connect(&config.store).await?;
    check_inbound_accounts(&store, &config.inbound_sources).await?;
    let tls = match &config.tls {
        Some(files) => Some(tls::rustls_config(files).map_err(StartError::Tls)?),
        None => None,
    };
    let state = AppState::new(store, root, clock, config.clone());
    // Fail closed from the start: a service that cannot record cannot serve.
    audit::system(&state, "service.start", "")
        .await
        .map_err(|e| StartError::Audit(e.code))?;
    audit::prepare_anchor(&state)
        .await
        .map_err(|e| StartError::Audit(e.code))?;
    audit::checkpoint(&state)
        .await
        .map_err(|e| StartError::Audit(e.code))?;
    audit::spawn_checkpointer(state.clone());
    audit::spawn_failure_flusher(state.clone());
    state
        .tokens()
        .ensure_keys(&state)
        .await
        .map_err(|e| StartError::Keys(e.message))?;
    service::rewrap::spawn(state.clone());
    service::webhooks::spawn(state.clone());
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
