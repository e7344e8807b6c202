//! `AppState`: everything a handler needs, in one place. No globals.
//!
//! A plain container: each component it holds (keyring, token service, gateway, PIN key
//! cache, audit appender, metrics, caches, readiness) is built here from the store, root
//! key, clock, cache generation and configuration section it uses, and none of them
//! reaches back into `AppState`. Services and middleware take `&AppState` and call the
//! components through it (`state.keyring().account(…)`).

use crate::cache::{Cache, CacheSync};
use crate::keyring::Keyring;
use crate::service::events::EventType;
use crate::service::tokens::ApiKeyCache;
use crate::{ServerConfig, service};
use std::sync::Arc;
use strongroom_core::{Clock, IdKind, Mode};
use strongroom_crypto::RootKey;
use strongroom_store::{CacheEvent, EventRecord, Store};
use tokio::sync::Notify;

/// How long an account's risk rules and lists are served from memory.
const RISK_RULES_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Most API keys cached.
const KEY_CACHE_MAX: usize = 10_000;

/// Tells whether an [`AppState`] has left memory (see [`AppState::watch_drop`]).
pub struct StateGone(std::sync::Weak<Inner>);

impl StateGone {
    /// Whether every handle of the state (and with them its keys) is dropped.
    pub fn is_gone(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Store,
    root: Arc<RootKey>,
    /// The HSM, when the vault has one (`[pkcs11]`): PIN-block keys live on it.
    hsm: Option<Arc<crate::custody::pkcs11::Hsm>>,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
    keyring: Keyring,
    key_cache: Arc<ApiKeyCache>,
    cache_sync: Arc<CacheSync>,
    rewrap_wake: Arc<Notify>,
    gateway: crate::gateway::Gateway,
    pin: crate::pin_keys::PinKeys,
    metrics: crate::metrics::Metrics,
    audit_appender: crate::audit::Appender,
    tokens: service::tokens::Tokens,
    ready: crate::ready::ReadyCache,
    relay_clients: service::relay::RelayClients,
    cvcs: service::cvc::Cvcs,
    velocity: crate::risk::velocity::Velocity,
    country: crate::risk::country_data::CountryData,
    risk_models: crate::risk::models::RiskModels,
    risk_rules: crate::risk::rules::RiskRules,
    risk_lists: crate::risk::lists::RiskLists,
    /// The background tasks that hold this state, stopped when the vault seals.
    workers: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl AppState {
    pub(crate) fn new(
        store: Store,
        root: RootKey,
        hsm: Option<Arc<crate::custody::pkcs11::Hsm>>,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
        geo: crate::risk::geo::Geo,
    ) -> Self {
        let root = Arc::new(root);
        let now_ms = clock.now_ms();
        let rewrap_wake = Arc::new(Notify::new());
        let keyring = Keyring::new(
            store.clone(),
            root.clone(),
            hsm.clone(),
            clock.clone(),
            rewrap_wake.clone(),
            config.keyring_ttl,
        );
        let key_cache = Arc::new(Cache::new(config.api_key_cache_ttl, KEY_CACHE_MAX));
        // Nothing cached is trusted until `watch_store` says changes are heard.
        let cache_sync = Arc::new(CacheSync::offline());
        let metrics = crate::metrics::Metrics::default();
        let gateway = crate::gateway::Gateway::new(
            crate::gateway::GatewaySettings {
                rate_limit: config.rate_limit.clone(),
                signature_window: config.signature_window,
                idempotency_ttl: config.idempotency_ttl,
                request_timeout: config.request_timeout,
                cache_ttl: config.api_key_cache_ttl,
                https: config.tls.is_some(),
            },
            &root,
            store.clone(),
            clock.clone(),
            cache_sync.clone(),
            metrics.redis(),
        );
        let audit_appender = crate::audit::Appender::spawn(store.clone());
        let tokens = service::tokens::Tokens::new(
            store.clone(),
            root.clone(),
            clock.clone(),
            cache_sync.clone(),
            key_cache.clone(),
            config.tokens.clone(),
            config.keyring_ttl,
            config.api_key_cache_ttl,
        );
        let pin = crate::pin_keys::PinKeys::new(
            store.clone(),
            root.clone(),
            clock.clone(),
            config.keyring_ttl,
            config.pin_transport_grace,
        );
        let ready = crate::ready::ReadyCache::new(store.clone(), root.clone(), clock.clone());
        // Held CVCs live where rate limits do: in this process, or in the Redis that the
        // nodes share.
        let cvcs = match &config.rate_limit.store {
            crate::gateway::RateLimitStore::Memory => {
                service::cvc::Cvcs::memory(service::cvc::MEMORY_CAP)
            }
            crate::gateway::RateLimitStore::Redis(url) => {
                service::cvc::Cvcs::redis(url, &root).unwrap_or_else(|e| {
                    // `check_config` refuses this URL before start; stay safe anyway.
                    tracing::error!(error = %e, "redis cvc store unusable; using memory");
                    service::cvc::Cvcs::memory(service::cvc::MEMORY_CAP)
                })
            }
        };
        // Velocity counts live where rate limits do, for the same reason.
        let velocity = match &config.rate_limit.store {
            crate::gateway::RateLimitStore::Memory => crate::risk::velocity::Velocity::memory(),
            crate::gateway::RateLimitStore::Redis(url) => {
                crate::risk::velocity::Velocity::redis_or_local(url, metrics.redis())
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "redis velocity store unusable; using memory");
                        crate::risk::velocity::Velocity::memory()
                    })
            }
        };
        let relay_clients = service::relay::RelayClients::new(config.api_key_cache_ttl);
        let state = Self(Arc::new(Inner {
            store,
            root,
            hsm,
            clock,
            config,
            keyring,
            key_cache,
            cache_sync,
            rewrap_wake,
            gateway,
            pin,
            metrics,
            audit_appender,
            tokens,
            ready,
            relay_clients,
            cvcs,
            velocity,
            country: crate::risk::country_data::CountryData::new(geo, now_ms),
            risk_models: crate::risk::models::RiskModels::default(),
            risk_rules: crate::risk::rules::RiskRules::new(RISK_RULES_TTL),
            risk_lists: crate::risk::lists::RiskLists::new(RISK_RULES_TTL),
            workers: std::sync::Mutex::new(Vec::new()),
        }));
        state.watch_store();
        state
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The root key.
    pub fn root(&self) -> &RootKey {
        &self.0.root
    }

    /// The HSM, when the vault has one.
    pub fn hsm(&self) -> Option<&Arc<crate::custody::pkcs11::Hsm>> {
        self.0.hsm.as_ref()
    }

    /// The clock.
    pub fn clock(&self) -> &dyn Clock {
        self.0.clock.as_ref()
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.0.clock.now_ms()
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    /// The relay's HTTPS clients, one per destination.
    pub fn relay_clients(&self) -> &service::relay::RelayClients {
        &self.0.relay_clients
    }

    /// The data-key cache.
    pub fn keyring(&self) -> &Keyring {
        &self.0.keyring
    }

    /// The PIN transport keys, unwrapped and cached.
    pub fn pin(&self) -> &crate::pin_keys::PinKeys {
        &self.0.pin
    }

    /// Batches standalone audit appends (see [`crate::audit::Appender`]).
    pub fn audit_appender(&self) -> &crate::audit::Appender {
        &self.0.audit_appender
    }

    /// Counters and gauges for `/metrics` (e.g. `metrics().rate_limited()`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.0.metrics
    }

    pub(crate) fn rewrap_wake(&self) -> &Notify {
        &self.0.rewrap_wake
    }

    /// A new id of this kind (see [`crate::events::new_id`]).
    pub fn new_id(&self, kind: IdKind) -> crate::service::Result<String> {
        crate::events::new_id(self.clock(), kind)
    }

    /// An event row for the outbox (see [`crate::events::event_of`]).
    pub fn event_of<T: serde::Serialize>(
        &self,
        account_id: &str,
        mode: Mode,
        event_type: EventType,
        object: &T,
    ) -> crate::service::Result<EventRecord> {
        crate::events::event_of(self.clock(), account_id, mode, event_type, object)
    }

    /// The generation the caches of shared rows must match (see [`crate::cache`]).
    pub fn cache_sync(&self) -> &CacheSync {
        &self.0.cache_sync
    }

    /// Hears committed changes on a shared database: drops every cache of shared rows
    /// on a change, and bypasses them while not listening.
    fn watch_store(&self) {
        // Weak: the store outlives a sealed state, and must not keep it (or its keys).
        let state = Arc::downgrade(&self.0);
        let watching = self.store().watch(move |event| {
            let Some(state) = state.upgrade().map(AppState) else {
                return;
            };
            match event {
                CacheEvent::Changed => state.cache_sync().invalidate(),
                CacheEvent::Listening => state.cache_sync().set_live(true),
                CacheEvent::Lost => state.cache_sync().set_live(false),
            }
            if event != CacheEvent::Lost {
                state.keyring().clear();
                state.tokens().clear_keyset();
            }
        });
        match watching {
            Some(task) => self.track(task),
            // One node owns the store (SQLite) and forgets what it changes itself.
            None => self.cache_sync().set_live(true),
        }
    }

    /// A handle that does not keep this state (and its keys) alive: it tells whether the
    /// state is gone, which a seal must bring about.
    pub fn watch_drop(&self) -> StateGone {
        StateGone(Arc::downgrade(&self.0))
    }

    /// Runs `work` in the background for as long as this state is open: a seal stops it.
    pub(crate) fn spawn_worker(
        &self,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.track(tokio::spawn(work).abort_handle());
    }

    fn track(&self, task: tokio::task::AbortHandle) {
        if let Ok(mut w) = self.0.workers.lock() {
            w.retain(|t| !t.is_finished());
            w.push(task);
        }
    }

    /// Stops every background task that holds this state (the vault seals or stops).
    pub(crate) fn stop_workers(&self) {
        let tasks = self
            .0
            .workers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
    }

    /// Wakes the re-wrap worker.
    pub fn wake_rewrap(&self) {
        self.0.rewrap_wake.notify_one();
    }

    /// Accounts, API keys and admin keys (see [`service::accounts`]).
    pub fn accounts(&self) -> service::accounts::Accounts<'_> {
        let i = &self.0;
        service::accounts::Accounts {
            store: &i.store,
            root: &i.root,
            clock: i.clock.as_ref(),
            sync: &i.cache_sync,
            keys: &i.key_cache,
            keyring: &i.keyring,
            tokens: &i.tokens,
        }
    }

    /// Bearer tokens: issue, verify, signing keys.
    pub fn tokens(&self) -> &service::tokens::Tokens {
        &self.0.tokens
    }

    /// The last `/readyz` answer.
    pub(crate) fn ready(&self) -> &crate::ready::ReadyCache {
        &self.0.ready
    }

    /// The risk engine's velocity counters (in this process, or in the nodes' Redis).
    pub fn velocity(&self) -> &crate::risk::velocity::Velocity {
        &self.0.velocity
    }

    /// The risk models in service (see [`crate::risk::models`]).
    pub async fn risk_models(&self) -> crate::service::Result<Arc<crate::risk::models::InService>> {
        let (now, sync) = (self.now_ms(), self.cache_sync());
        Ok(self.0.risk_models.get(self.store(), sync, now).await?)
    }

    /// The risk rules in force for an account in a mode (see [`crate::risk::rules`]).
    pub async fn risk_rules(
        &self,
        account_id: &str,
        mode: Mode,
    ) -> crate::service::Result<Arc<crate::risk::rules::InForce>> {
        let (now, sync) = (self.now_ms(), self.cache_sync());
        let rules = self
            .0
            .risk_rules
            .get(self.store(), sync, account_id, mode, now);
        Ok(rules.await?)
    }

    /// Forgets an account's cached rules (after a put through this node).
    pub fn forget_risk_rules(&self, account_id: &str, mode: Mode) {
        self.0
            .risk_rules
            .forget(self.cache_sync(), account_id, mode);
    }

    /// The live allow and block list entries of an account in a mode (see
    /// [`crate::risk::lists`]).
    pub async fn risk_lists(
        &self,
        account_id: &str,
        mode: Mode,
    ) -> crate::service::Result<Arc<strongroom_risk::lists::Lists>> {
        let (now, sync) = (self.now_ms(), self.cache_sync());
        let lists = self
            .0
            .risk_lists
            .get(self.store(), sync, account_id, mode, now);
        Ok(lists.await?)
    }

    /// Forgets an account's cached lists (after a change through this node).
    pub fn forget_risk_lists(&self, account_id: &str, mode: Mode) {
        self.0
            .risk_lists
            .forget(self.cache_sync(), account_id, mode);
    }

    /// The risk engine's country data in force now (empty unless configured or
    /// uploaded).
    pub fn geo(&self) -> Arc<crate::risk::geo::Geo> {
        self.0.country.geo()
    }

    /// The country data and where each part came from (see
    /// [`crate::risk::country_data`]).
    pub fn country_data(&self) -> &crate::risk::country_data::CountryData {
        &self.0.country
    }

    /// The CVCs held for cards' first payments (see [`service::cvc`]).
    pub fn cvcs(&self) -> &service::cvc::Cvcs {
        &self.0.cvcs
    }

    /// The gateway controls (rate limiter, cached account controls).
    pub fn gateway(&self) -> &crate::gateway::Gateway {
        &self.0.gateway
    }
}
