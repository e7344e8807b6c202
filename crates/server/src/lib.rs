//! The Strongroom HTTPS API: routes, middleware, services and workers.
//!
//! [`start`] boots the server from a [`ServerConfig`] and a root key and returns a
//! [`Running`] handle; the CLI and the integration tests both go through it.

pub mod audit;
pub mod auth;
pub mod cache;
pub mod config;
pub mod custody;
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
pub mod startup;
pub mod state;
pub mod tls;

pub use audit::Origin;
pub use config::{ServerConfig, TlsFiles};
pub use custody::{Custody, Provider, Vault};
pub use error::{ApiError, ApiResult};
pub use service::accounts::{IssuedKey, NewKeyKind};
pub use startup::StartError;
pub use state::AppState;

use axum_server::accept::NoDelayAcceptor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::{Clock, SystemClock};
use strongroom_crypto::RootKey;
use strongroom_store::{Store, VaultStore};

/// A started server.
pub struct Running {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// The admin listener's address (`/metrics`), if one runs.
    pub metrics_addr: Option<SocketAddr>,
    vault: Arc<Vault>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Its state while the vault is open, for provisioning (accounts, keys) from the CLI
    /// and tests; `None` while sealed.
    pub fn state(&self) -> Option<AppState> {
        self.vault.state()
    }

    /// The vault: sealed or open (see [`custody`]).
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

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
        let Some(state) = self.vault.close() else {
            // Sealed: no key to sign a checkpoint with; the stop is recorded all the same.
            let v = &self.vault;
            if let Err(e) =
                audit::system(v.store(), v.metrics(), v.now_ms(), "service.stop", "").await
            {
                tracing::error!(code = e.code, "could not record the service stop");
            }
            v.store().close().await;
            return result;
        };
        // Counted auth failures are written before the stop.
        flush_auth_failures(&state, i64::MAX).await;
        // So are a single node's risk counters.
        risk::kept::keep(&state).await;
        // The stop is recorded and the head signed, so a truncation behind it shows.
        if let Err(e) = audit_system(&state, "service.stop").await {
            tracing::error!(code = e.code, "could not record the service stop");
        }
        if let Err(e) = audit_checkpoint(&state).await {
            tracing::error!(
                code = e.code,
                "could not checkpoint the audit log at shutdown"
            );
        }
        // Closed here rather than when the last task holding it lets go: when `wait`
        // returns, the database's files are closed (SQLite's WAL copied and removed) and
        // another process may open them.
        state.store().close().await;
        result
    }
}

/// Opens the store, builds the app and starts listening, with a root key at hand.
pub async fn start(config: ServerConfig, root: RootKey) -> Result<Running, StartError> {
    start_with_clock(config, root, Arc::new(SystemClock)).await
}

/// [`start`] with a given clock (tests move time).
pub async fn start_with_clock(
    config: ServerConfig,
    root: RootKey,
    clock: Arc<dyn Clock>,
) -> Result<Running, StartError> {
    let custody = Custody::Open {
        root,
        provider: Provider::File,
    };
    start_custody(config, custody, clock).await
}

/// Opens the store and starts listening: open at once when the root key is at hand,
/// sealed until enough unseal shares are in otherwise (see [`custody`]).
pub async fn start_custody(
    config: ServerConfig,
    custody: Custody,
    clock: Arc<dyn Clock>,
) -> Result<Running, StartError> {
    gateway::check_config(&config.rate_limit).map_err(StartError::Config)?;
    let store = Store::connect(&config.store).await?;
    check_inbound_accounts(&store, &config.inbound_sources).await?;
    let tls = match &config.tls {
        Some(files) => Some(tls::rustls_config(files).map_err(StartError::Tls)?),
        None => None,
    };
    // The country data files are read now, sealed or not, so that a bad one stops the start.
    load_geo(&config).map_err(StartError::Config)?;
    let provider = match &custody {
        Custody::Open { provider, .. } => *provider,
        Custody::Sealed => Provider::Shamir,
    };
    let vault = Vault::new(
        store.clone(),
        clock.clone(),
        opener(store.clone(), clock.clone(), config.clone()),
        provider,
    );
    vault.set_sealed_router(routes::sys::sealed_router(clock));
    match custody {
        Custody::Open { root, .. } => {
            vault.open(root, "service.start").await?;
        }
        Custody::Sealed => {
            use strongroom_store::CustodyStore;
            match store.root_key().await? {
                Some(r) if r.provider == Provider::Shamir.as_str() => {}
                Some(r) => {
                    return Err(StartError::Custody(format!(
                        "this vault's root key is kept by the `{}` provider, not `shamir`",
                        r.provider
                    )));
                }
                None => {
                    return Err(StartError::Custody(
                        "this vault has no root key yet: run `strongroom operator init`".into(),
                    ));
                }
            }
            audit::system(&store, vault.metrics(), vault.now_ms(), "service.start", "")
                .await
                .map_err(|e| StartError::Audit(e.code))?;
            tracing::warn!("vault sealed: hand in unseal shares (strongroom operator unseal)");
        }
    }
    // A plain service, not a router with a fallback: a router would box a new route for
    // its fallback on every request.
    let front_vault = vault.clone();
    let app = tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let vault = front_vault.clone();
        async move {
            let res = front(vault, req.map(axum::body::Body::new)).await;
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let listener = std::net::TcpListener::bind(config.listen)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let make = axum::ServiceExt::<hyper::Request<hyper::body::Incoming>>::into_make_service_with_connect_info::<SocketAddr>(app);
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
            let (a, t) = routes::metrics::serve(vault.clone(), addr).await?;
            (Some(a), Some(t))
        }
        None => (None, None),
    };
    tracing::info!(addr = %local_addr, backend = store.backend_name(), tls = config.tls.is_some(), sealed = vault.is_sealed(), "strongroom listening");
    Ok(Running {
        local_addr,
        metrics_addr,
        vault,
        metrics_task,
        handle,
        task,
    })
}

/// How the vault opens: a state on the store with the root key, started by [`boot`], and
/// the API's router over it.
fn opener(store: Store, clock: Arc<dyn Clock>, config: ServerConfig) -> custody::Opener {
    Box::new(move |root, action| {
        let (store, clock, config) = (store.clone(), clock.clone(), config.clone());
        Box::pin(async move {
            let geo = load_geo(&config).map_err(StartError::Config)?;
            let hsm = match &config.custody.pkcs11 {
                Some(cfg) => Some(custody::pkcs11::Hsm::open(cfg).await?),
                None => None,
            };
            let state = AppState::new(store, root, hsm, clock, config, geo);
            if let Err(e) = boot(&state, action).await {
                state.stop_workers();
                return Err(e);
            }
            let router = routes::router(state.clone());
            Ok((state, router))
        })
    })
}

/// Every request goes to the router of the vault's state now: the API while open, the
/// sealed vault's few routes otherwise. The `/v1/sys` routes find the vault in the
/// request's extensions.
async fn front(vault: Arc<Vault>, mut req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    if req.uri().path().starts_with("/v1/sys/") {
        req.extensions_mut().insert(vault.clone());
    }
    match vault.router() {
        Some(r) => match r.oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        },
        None => error::codes::SEALED.into_response(),
    }
}

/// What an opened state starts: the audit record of the start (`action`), the workers, the JWT
/// signing keys, the uploaded country data and the kept risk counters.
async fn boot(state: &AppState, action: &str) -> Result<(), StartError> {
    // Fail closed from the start: a service that cannot record cannot serve.
    audit_system(state, action)
        .await
        .map_err(|e| StartError::Audit(e.code))?;
    audit::prepare_anchor(state.config().audit_anchor.clone())
        .await
        .map_err(|e| StartError::Audit(e.code))?;
    audit_checkpoint(state)
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
    service::key_inventory::spawn(state.clone());
    custody::rotation::spawn_follower(state.clone());
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
    risk::kept::restore(state).await;
    Ok(())
}

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

/// Records a system action (start, stop) in the audit log on its own.
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
    state.clone().spawn_worker(async move {
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
    state.clone().spawn_worker(async move {
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
