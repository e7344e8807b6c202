//! The Strongroom HTTPS API: routes, middleware, services and workers.
//!
//! [`start`] boots the server from a [`ServerConfig`] and a root key and returns a
//! [`Running`] handle; the CLI and the integration tests both go through it.

pub mod auth;
pub mod error;
pub mod extract;
pub mod keyring;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod service;
pub mod state;
pub mod tls;

pub use error::{ApiError, ApiResult};
pub use state::{AppState, IssuedKey, NewKeyKind};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::{Clock, SystemClock};
use strongroom_crypto::RootKey;
use strongroom_store::{Store, StoreConfig};
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
    /// How long a looked-up API key may be served from memory. Local revocations clear
    /// it at once; with several nodes this bounds how late another node's revocation
    /// is seen. Zero disables the cache.
    pub api_key_cache_ttl: Duration,
    /// How long unwrapped data keys are trusted before the key list is re-read (so a
    /// rotation on another node is picked up).
    pub keyring_ttl: Duration,
    /// Time after which a request is abandoned with 408.
    pub request_timeout: Duration,
}

impl ServerConfig {
    /// Defaults for everything but the address, TLS and database.
    pub fn new(listen: SocketAddr, tls: Option<TlsFiles>, store: StoreConfig) -> Self {
        let single_node = store.url.starts_with("sqlite:");
        Self {
            listen,
            tls,
            store,
            dev_mode: false,
            rewrap_interval: Duration::from_secs(30),
            rewrap_batch: 256,
            api_key_cache_ttl: if single_node {
                Duration::from_secs(300)
            } else {
                Duration::ZERO
            },
            keyring_ttl: Duration::from_secs(if single_node { 300 } else { 5 }),
            request_timeout: Duration::from_secs(30),
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
}

/// A started server.
pub struct Running {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// Its state, for provisioning (accounts, keys) from the CLI and tests.
    pub state: AppState,
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
        match self.task.await {
            Ok(r) => r.map_err(StartError::Io),
            Err(e) => Err(StartError::Io(std::io::Error::other(e))),
        }
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
    let store = Store::connect(&config.store).await?;
    let tls = match &config.tls {
        Some(files) => Some(tls::rustls_config(files).map_err(StartError::Tls)?),
        None => None,
    };
    let state = AppState::new(store, root, clock, config.clone());
    service::rewrap::spawn(state.clone());
    let app = routes::router(state.clone());
    let listener = std::net::TcpListener::bind(config.listen)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let task = match tls {
        Some(tls) => {
            let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
            tokio::spawn(async move { server.serve(make).await })
        }
        None => {
            let server = axum_server::from_tcp(listener)?.handle(handle.clone());
            tokio::spawn(async move { server.serve(make).await })
        }
    };
    tracing::info!(addr = %local_addr, backend = state.store().backend_name(), tls = config.tls.is_some(), "strongroom listening");
    Ok(Running {
        local_addr,
        state,
        handle,
        task,
    })
}
