//! `AppState`: everything a handler needs, in one place. No globals.

use crate::cache::{Cache, CacheSync};
use crate::error::{ApiResult, codes};
use crate::keyring::Keyring;
use crate::service::tokens::ApiKeyCache;
use crate::{ServerConfig, service};
use std::sync::Arc;
use strongroom_core::{Clock, IdKind, KeyKind, Mode, Scopes, Sensitive};
use strongroom_crypto::{RootKey, random};
use strongroom_store::{AccountRecord, ApiKeyRecord, CacheEvent, EventRecord, Store, VaultStore};
use tokio::sync::Notify;

/// Digest domain for API secrets.
pub const API_KEY_DIGEST: &str = "api_key";
/// The secret prefix of admin keys.
pub const ADMIN_PREFIX: &str = "sk_admin_";
/// The `kind` of admin keys in storage.
pub const ADMIN_KIND: &str = "admin";

/// Most API keys cached.
const KEY_CACHE_MAX: usize = 10_000;

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Store,
    root: Arc<RootKey>,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
    keyring: Keyring,
    key_cache: Arc<ApiKeyCache>,
    cache_sync: Arc<CacheSync>,
    rewrap_wake: Arc<Notify>,
    gateway: crate::gateway::Gateway,
    pin: service::pin::PinState,
    metrics: crate::metrics::Metrics,
    audit_appender: crate::audit::Appender,
    tokens: service::tokens::Tokens,
    ready: crate::ready::ReadyCache,
}

/// What kind of key to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKeyKind {
    /// An account key of this kind.
    Account(KeyKind),
    /// An operator key for `/v1/admin/`.
    Admin,
}

/// A freshly issued key: the only moment its secret exists outside the client.
pub struct IssuedKey {
    /// The stored record (digest only).
    pub record: ApiKeyRecord,
    /// The secret, to show once.
    pub secret: Sensitive<String>,
}

impl AppState {
    pub(crate) fn new(
        store: Store,
        root: RootKey,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
    ) -> Self {
        let root = Arc::new(root);
        let rewrap_wake = Arc::new(Notify::new());
        let keyring = Keyring::new(
            store.clone(),
            root.clone(),
            clock.clone(),
            rewrap_wake.clone(),
            config.keyring_ttl,
        );
        let key_cache = Arc::new(Cache::new(config.api_key_cache_ttl, KEY_CACHE_MAX));
        // Nothing cached is trusted until `watch_store` says changes are heard.
        let cache_sync = Arc::new(CacheSync::offline());
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
        let ready = crate::ready::ReadyCache::new(store.clone(), root.clone(), clock.clone());
        let state = Self(Arc::new(Inner {
            store,
            root,
            clock,
            config,
            keyring,
            key_cache,
            cache_sync,
            rewrap_wake,
            gateway,
            pin: service::pin::PinState::default(),
            metrics: crate::metrics::Metrics::default(),
            audit_appender,
            tokens,
            ready,
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

    /// A new id of this kind (see [`crate::events::new_id`]).
    pub fn new_id(&self, kind: IdKind) -> ApiResult<String> {
        crate::events::new_id(self.clock(), kind)
    }

    /// An event row for the outbox.
    pub fn event(
        &self,
        account_id: &str,
        mode: Mode,
        event_type: &str,
        object: serde_json::Value,
    ) -> ApiResult<EventRecord> {
        self.event_of(account_id, mode, event_type, &object)
    }

    /// An event row for the outbox (see [`crate::events::event_of`]).
    pub fn event_of<T: serde::Serialize>(
        &self,
        account_id: &str,
        mode: Mode,
        event_type: &str,
        object: &T,
    ) -> ApiResult<EventRecord> {
        crate::events::event_of(self.clock(), account_id, mode, event_type, object)
    }

    /// Creates an account and its first data keys.
    pub async fn create_account(
        &self,
        name: &str,
        otp_delivery_url: Option<String>,
    ) -> ApiResult<AccountRecord> {
        let account = AccountRecord {
            id: self.new_id(IdKind::Account)?,
            name: name.to_owned(),
            otp_delivery_url,
            created_ms: self.now_ms(),
        };
        let keys = self.keyring().initial_keys(&account.id)?;
        crate::audit::as_system(self, "account.create", async {
            crate::audit::set_resource("account", &account.id);
            self.store().create_account(&account, &keys, &[]).await
        })
        .await?;
        Ok(account)
    }

    /// Issues a key. Account keys need an existing account; admin keys have none.
    pub async fn create_api_key(
        &self,
        account_id: Option<&str>,
        kind: NewKeyKind,
        mode: Mode,
        scopes: Option<Scopes>,
    ) -> ApiResult<IssuedKey> {
        let (prefix, scopes, kind_name, mode) = match kind {
            NewKeyKind::Account(k) => {
                let scopes = k.effective_scopes(scopes)?;
                (k.secret_prefix(mode), scopes.to_storage(), k.as_str(), mode)
            }
            NewKeyKind::Admin => {
                if scopes.is_some() {
                    return Err(codes::SCOPES_NOT_ALLOWED);
                }
                (ADMIN_PREFIX, String::new(), ADMIN_KIND, Mode::Live)
            }
        };
        if let Some(acct) = account_id {
            self.store()
                .get_account(acct)
                .await?
                .ok_or(codes::NOT_FOUND)?;
        }
        let body = random::base62(40)?;
        let secret = Sensitive::new(format!("{prefix}{}", body.as_str()));
        let record = ApiKeyRecord {
            id: self.new_id(IdKind::ApiKey)?,
            account_id: account_id.map(str::to_owned),
            kind: kind_name.to_owned(),
            mode,
            prefix: secret.expose().chars().take(prefix.len() + 4).collect(),
            digest: self
                .root()
                .digest(API_KEY_DIGEST, secret.expose().as_bytes())
                .to_vec(),
            scopes,
            created_ms: self.now_ms(),
            revoked_ms: None,
        };
        let events = match account_id {
            Some(acct) => vec![self.event(
                acct,
                mode,
                "api_key.created",
                service::api_key_json(&record),
            )?],
            None => vec![],
        };
        crate::audit::as_system(self, "api_key.create", async {
            crate::audit::set_resource("api_key", &record.id);
            self.store().insert_api_key(&record, &events).await
        })
        .await?;
        Ok(IssuedKey { record, secret })
    }

    /// Revokes a key; effective on the next request.
    pub async fn revoke_api_key(
        &self,
        account_id: Option<&str>,
        key_id: &str,
    ) -> ApiResult<ApiKeyRecord> {
        let now = self.now_ms();
        let existing = self.store().list_api_keys(account_id).await?;
        let key = existing
            .iter()
            .find(|k| k.id == key_id)
            .ok_or(codes::NOT_FOUND)?;
        let events = match account_id {
            Some(acct) => vec![self.event(
                acct,
                key.mode,
                "api_key.revoked",
                service::api_key_json(key),
            )?],
            None => vec![],
        };
        let revoked = crate::audit::as_system(self, "api_key.revoke", async {
            crate::audit::set_resource("api_key", key_id);
            self.store()
                .revoke_api_key(account_id, key_id, now, &events)
                .await
        })
        .await?
        .ok_or(codes::NOT_FOUND)?;
        if let Ok(d) = <[u8; 32]>::try_from(revoked.digest.as_slice()) {
            self.0.key_cache.forget(self.cache_sync(), &d);
        }
        self.0.tokens.forget_key(key_id);
        Ok(revoked)
    }

    /// Looks a presented secret up by its keyed digest, through the bounded cache. When
    /// nothing is cached (a database shared by several nodes), the key's account controls
    /// and allowlist come in the same read, for the gateway to use for this request.
    pub async fn lookup_api_key(
        &self,
        secret: &str,
    ) -> ApiResult<Option<(Arc<ApiKeyRecord>, Option<crate::gateway::Prefetched>)>> {
        let digest = self.root().digest(API_KEY_DIGEST, secret.as_bytes());
        let now = self.now_ms();
        let (cache, sync) = (&self.0.key_cache, self.cache_sync());
        if let Some(hit) = cache.get(sync, &digest, now) {
            return Ok(Some((hit, None)));
        }
        // On a miss: one round trip instead of three (key, controls, allowlist).
        let epoch = cache.epoch(sync);
        let found =
            strongroom_store::ControlStore::key_with_controls(self.store(), &digest).await?;
        Ok(found.map(|f| {
            let pre = f
                .controls
                .map(|c| crate::gateway::Prefetched::new(c, &f.key_allowlist));
            let key = Arc::new(f.key);
            cache.put(sync, digest, key.clone(), now, epoch);
            (key, pre)
        }))
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

    /// The account, after checking the id's shape (a malformed id is refused as
    /// [`strongroom_core::parse_id`] refuses it; an unknown one is `not_found`).
    pub async fn account(&self, id: &str) -> ApiResult<AccountRecord> {
        strongroom_core::parse_id(strongroom_core::IdKind::Account, id)?;
        self.store().get_account(id).await?.ok_or(codes::NOT_FOUND)
    }

    /// Wakes the re-wrap worker.
    pub fn wake_rewrap(&self) {
        self.0.rewrap_wake.notify_one();
    }

    /// Forgets cached API keys (after an incident, or when another node may have revoked).
    pub fn clear_key_cache(&self) {
        self.0.tokens.clear_keys();
    }

    /// Bearer tokens: issue, verify, signing keys.
    pub fn tokens(&self) -> &service::tokens::Tokens {
        &self.0.tokens
    }

    /// The last `/readyz` answer.
    pub(crate) fn ready(&self) -> &crate::ready::ReadyCache {
        &self.0.ready
    }

    /// The gateway controls (rate limiter, cached account controls).
    pub fn gateway(&self) -> &crate::gateway::Gateway {
        &self.0.gateway
    }
}
