//! `AppState`: everything a handler needs, in one place. No globals.

use crate::cache::CacheSync;
use crate::error::ApiResult;
use crate::keyring::Keyring;
use crate::service::events::{EventData, EventJson, EventObject, EventType};
use crate::{ServerConfig, service};
use std::sync::Arc;
use strongroom_core::{Clock, IdKind, Mode, next_id};
use strongroom_crypto::{RootKey, random};
use strongroom_store::{CacheEvent, EventRecord, Store};
use tokio::sync::Notify;

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Store,
    root: RootKey,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
    keyring: Keyring,
    key_cache: service::accounts::KeyCache,
    cache_sync: CacheSync,
    rewrap_wake: Notify,
    gateway: crate::gateway::Gateway,
    pin: service::pin::PinState,
    metrics: crate::metrics::Metrics,
    audit_appender: crate::audit::Appender,
    tokens: service::tokens::Tokens,
    ready: crate::routes::meta::ReadyCache,
}

impl AppState {
    pub(crate) fn new(
        store: Store,
        root: RootKey,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
    ) -> Self {
        let keyring = Keyring::new(config.keyring_ttl);
        let key_cache = service::accounts::KeyCache::new(config.api_key_cache_ttl);
        let gateway = crate::gateway::Gateway::new(&config, &root);
        let audit_appender = crate::audit::Appender::spawn(store.clone());
        let tokens = service::tokens::Tokens::new(
            config.tokens.clone(),
            config.keyring_ttl,
            config.api_key_cache_ttl,
        );
        let state = Self(Arc::new(Inner {
            store,
            root,
            clock,
            config,
            keyring,
            key_cache,
            // Nothing cached is trusted until `watch_store` says changes are heard.
            cache_sync: CacheSync::offline(),
            rewrap_wake: Notify::new(),
            gateway,
            pin: service::pin::PinState::default(),
            metrics: crate::metrics::Metrics::default(),
            audit_appender,
            tokens,
            ready: crate::routes::meta::ReadyCache::default(),
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

    /// The data-key cache.
    pub fn keyring(&self) -> &Keyring {
        &self.0.keyring
    }

    /// The PIN service's in-memory state (the unwrapped transport keys).
    pub fn pin(&self) -> &service::pin::PinState {
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

    /// A new id of this kind, after every other this process made ([`next_id`]): a
    /// card's then serves as its SQLite row id (`strongroom_core::row_hint`).
    pub fn new_id(&self, kind: IdKind) -> ApiResult<String> {
        Ok(next_id(kind, self.now_ms(), random::bytes::<10>()?))
    }

    /// An event row for the outbox.
    pub fn event(
        &self,
        account_id: &str,
        mode: Mode,
        event_type: EventType,
        object: serde_json::Value,
    ) -> ApiResult<EventRecord> {
        self.event_of(account_id, mode, event_type, &object)
    }

    /// An event row for the outbox, its object serialized straight into the event's
    /// JSON: no `serde_json::Value` tree is built (a card event is on the tokenize path).
    pub fn event_of<T: serde::Serialize>(
        &self,
        account_id: &str,
        mode: Mode,
        event_type: EventType,
        object: &T,
    ) -> ApiResult<EventRecord> {
        let id = self.new_id(IdKind::Event)?;
        let created_ms = self.now_ms();
        let data = serde_json::to_string(&EventJson {
            created: created_ms / 1000,
            data: EventData { object },
            id: &id,
            mode: mode.as_str(),
            object: EventObject::Event,
            event_type,
        })
        .map_err(|e| crate::ApiError::internal(&e))?;
        Ok(EventRecord {
            id,
            account_id: account_id.to_owned(),
            mode,
            event_type: event_type.as_str().to_owned(),
            created_ms,
            data,
        })
    }

    /// The generation the caches of shared rows must match (see [`crate::cache`]).
    pub fn cache_sync(&self) -> &CacheSync {
        &self.0.cache_sync
    }

    /// Hears committed changes on a shared database: drops every cache of shared rows
    /// on a change, and bypasses them while not listening.
    fn watch_store(&self) {
        let state = self.clone();
        let watching = self.store().watch(move |event| {
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
        if !watching {
            // One node owns the store (SQLite) and forgets what it changes itself.
            self.cache_sync().set_live(true);
        }
    }

    /// Wakes the re-wrap worker.
    pub fn wake_rewrap(&self) {
        self.0.rewrap_wake.notify_one();
    }

    /// Accounts, API keys and admin keys (see [`service::accounts`]).
    pub fn accounts(&self) -> service::accounts::Accounts<'_> {
        service::accounts::Accounts::new(self, &self.0.key_cache)
    }

    /// Bearer tokens: issue, verify, signing keys.
    pub fn tokens(&self) -> &service::tokens::Tokens {
        &self.0.tokens
    }

    /// The last `/readyz` answer.
    pub(crate) fn ready(&self) -> &crate::routes::meta::ReadyCache {
        &self.0.ready
    }

    /// The gateway controls (rate limiter, cached account controls).
    pub fn gateway(&self) -> &crate::gateway::Gateway {
        &self.0.gateway
    }
}
