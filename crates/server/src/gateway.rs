//! The gateway controls, one middleware inside the request context: client address →
//! authentication (resolves the caller once, for the handlers too) → IP allowlists →
//! request signatures → rate limits → idempotency → handler.
//!
//! Refusals are plain [`ApiError`]s; the outer `request_context` renders them. Every
//! response that got as far as the rate limiter carries `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset`; a refusal adds `Retry-After`.

pub mod browser;
pub mod client_ip;
pub mod idempotency;
pub mod layer;
pub mod openapi;
pub mod ratelimit;
pub mod signature;
pub mod suspended;
mod sweep;

pub use layer::gateway;

use crate::cache::{Cache, CacheSync};
use crate::error::{ApiError, ApiResult};
use ipnet::IpNet;
use ratelimit::{Limiter, MemoryLimiter, RedisLimiter};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::Clock;
use strongroom_crypto::{RootKey, SealingKey};
use strongroom_store::{AccountControls, ControlStore, Store, SuspensionStore};

/// Where rate-limit state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitStore {
    /// In this process (one node).
    Memory,
    /// In Redis at this URL (shared by nodes).
    Redis(String),
}

/// Rate-limit settings (requests per minute; the burst equals the per-minute figure).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Backend.
    pub store: RateLimitStore,
    /// Per credential, unless the account has an override.
    pub per_minute: u32,
    /// Card reveals, per credential.
    pub reveal_per_minute: u32,
    /// OTP creation, per credential.
    pub otp_per_minute: u32,
    /// Per client address on unauthenticated requests and on token issue.
    pub ip_per_minute: u32,
    /// Relays (`POST /v1/relay`), per account: every key of the account shares it.
    pub relay_per_minute: u32,
    /// Cards posted from browsers (`POST /v1/client_sessions/{id}/cards`), per session.
    pub browser_session_per_minute: u32,
    /// The same, per client address (IPv6 by /64), whatever the key or session.
    pub browser_ip_per_minute: u32,
    /// The same, per publishable key: all of a merchant's shoppers together. It takes
    /// the place of `per_minute` on that route.
    pub browser_key_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            store: RateLimitStore::Memory,
            per_minute: 100,
            reveal_per_minute: 10,
            otp_per_minute: 10,
            ip_per_minute: 60,
            relay_per_minute: 600,
            browser_session_per_minute: 10,
            browser_ip_per_minute: 20,
            browser_key_per_minute: 600,
        }
    }
}

/// The route templates whose responses carry a secret (a PAN, an OTP code, an API
/// secret, an access token): an `Idempotency-Key` there is refused, so no such
/// response is ever stored.
pub const IDEMPOTENCY_EXCLUDED: &[&str] = &[
    "/v1/cards/{id}/reveal",
    "/v1/otp",
    "/v1/auth/token",
    "/v1/admin/accounts",
    "/v1/admin/accounts/{id}/api_keys",
    "/v1/admin/admin_keys",
    // The account view it answers with carries the OTP signing secret.
    "/v1/admin/accounts/{id}/otp_signing_secret/rotate",
    // Both answer with a webhook signing secret (`whsec_…`).
    "/v1/webhook_endpoints",
    "/v1/webhook_endpoints/{id}/rotate_secret",
    // Answers with the session's client secret.
    "/v1/client_sessions",
    // Answers with a PIN block (under the processor's key): never kept after the call.
    "/v1/terminals/{id}/pin_translations",
];

/// Most accounts' controls, and most keys' allowlists, cached.
const CACHE_MAX: usize = 10_000;

/// The gateway's state, held in `AppState`: the limiter, the idempotency sealing key, and
/// caches of the account controls and key allowlists it reads from the store.
pub struct Gateway {
    store: Store,
    clock: Arc<dyn Clock>,
    sync: Arc<CacheSync>,
    settings: GatewaySettings,
    limiter: Limiter,
    idem_key: Option<SealingKey>,
    /// Keys the request digests idempotency records are matched by: a request body can
    /// hold a card number and its expiry, whose plain SHA-256 could be searched for.
    idem_mac: Option<zeroize::Zeroizing<[u8; 32]>>,
    controls: Cache<String, Arc<AccountControls>>,
    key_lists: Cache<String, Arc<Vec<IpNet>>>,
    suspensions: Cache<String, Arc<suspended::Active>>,
}

/// The part of the server configuration the gateway reads.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Rate limits and where their state lives.
    pub rate_limit: RateLimitConfig,
    /// How far a signature's `created` may be from now.
    pub signature_window: Duration,
    /// How long an idempotent response is kept.
    pub idempotency_ttl: Duration,
    /// Time after which a request is abandoned (an older idempotency claim is stale).
    pub request_timeout: Duration,
    /// How long account controls and key allowlists may be served from memory.
    pub cache_ttl: Duration,
    /// Whether the server speaks TLS (the scheme signatures cover).
    pub https: bool,
}

/// Checks what [`Gateway::new`] cannot report (called before the server starts).
pub fn check_config(rate_limit: &RateLimitConfig) -> Result<(), String> {
    if let RateLimitStore::Redis(url) = &rate_limit.store {
        RedisLimiter::new(url)?;
    }
    let r = rate_limit;
    if [
        r.per_minute,
        r.reveal_per_minute,
        r.otp_per_minute,
        r.ip_per_minute,
    ]
    .iter()
    .any(|n| !(1..=ratelimit::MAX_PER_MINUTE).contains(n))
    {
        return Err("rate limits must be between 1 and 1000000 per minute".into());
    }
    Ok(())
}

impl Gateway {
    pub(crate) fn new(
        settings: GatewaySettings,
        root: &RootKey,
        store: Store,
        clock: Arc<dyn Clock>,
        sync: Arc<CacheSync>,
        redis_health: Arc<crate::metrics::RedisHealth>,
    ) -> Self {
        let limiter = match &settings.rate_limit.store {
            RateLimitStore::Memory => Limiter::Memory(MemoryLimiter::default()),
            RateLimitStore::Redis(url) => match RedisLimiter::new(url) {
                Ok(r) => Limiter::Redis {
                    shared: Box::new(r),
                    local: MemoryLimiter::default(),
                    health: redis_health,
                },
                Err(e) => {
                    // `check_config` refuses this before start; stay safe anyway.
                    tracing::error!(error = %e, "redis rate limiter unusable; using memory");
                    Limiter::Memory(MemoryLimiter::default())
                }
            },
        };
        // A sealing key, not a data key: it seals every stored response for the life of
        // the root key, so each seal gets a one-use key (no random-nonce budget to keep).
        let idem_key = root
            .derive_subkey("idempotency")
            .ok()
            .and_then(|k| SealingKey::from_bytes(k.as_slice()).ok());
        let idem_mac = root.derive_subkey("idempotency-request-mac").ok();
        let ttl = settings.cache_ttl;
        Self {
            store,
            clock,
            sync,
            settings,
            limiter,
            idem_key,
            idem_mac,
            controls: Cache::new(ttl, CACHE_MAX),
            key_lists: Cache::new(ttl, CACHE_MAX),
            suspensions: Cache::new(ttl, CACHE_MAX),
        }
    }

    /// The account's active suspensions, through the cache (each ends at its own time
    /// whatever the cache holds: [`suspended::Active`] compares with the clock).
    pub async fn suspensions(&self, account_id: &str) -> ApiResult<Arc<suspended::Active>> {
        let (now, sync) = (self.clock.now_ms(), self.sync.as_ref());
        let load = || async {
            let rows = self.store.active_suspensions(account_id, now).await?;
            Ok(Arc::new(suspended::Active::new(&rows)))
        };
        self.suspensions
            .get_or_load(sync, account_id, now, load)
            .await
    }

    /// Forgets an account's cached suspensions (after a change through this node).
    pub fn forget_suspensions(&self, account_id: &str) {
        self.suspensions.forget(&self.sync, account_id);
    }

    /// The account's controls, through the cache.
    pub async fn account_controls(&self, account_id: &str) -> ApiResult<Arc<AccountControls>> {
        let (now, sync) = (self.clock.now_ms(), self.sync.as_ref());
        let load = || async { Ok(Arc::new(self.store.account_controls(account_id).await?)) };
        self.controls.get_or_load(sync, account_id, now, load).await
    }

    /// Forgets cached controls of an account (after a change through this node).
    pub fn forget_account(&self, account_id: &str) {
        self.controls.forget(&self.sync, account_id);
    }

    async fn key_allowlist(&self, key_id: &str) -> ApiResult<Arc<Vec<IpNet>>> {
        let (now, sync) = (self.clock.now_ms(), self.sync.as_ref());
        let load = || async {
            let list = self.store.key_ip_allowlist(key_id).await?;
            Ok(Arc::new(parse_stored_cidrs(&list)))
        };
        self.key_lists.get_or_load(sync, key_id, now, load).await
    }

    /// Forgets a cached key allowlist.
    pub fn forget_key(&self, key_id: &str) {
        self.key_lists.forget(&self.sync, key_id);
    }

    /// Redis, when the deployment uses it (rate limits and the idempotency cache).
    pub(crate) fn redis(&self) -> Option<&RedisLimiter> {
        match &self.limiter {
            Limiter::Redis { shared, .. } => Some(shared),
            Limiter::Memory(_) => None,
        }
    }

    fn idempotency(&self) -> idempotency::IdemContext<'_> {
        idempotency::IdemContext {
            store: &self.store,
            seal: self.idem_key.as_ref(),
            redis: self.redis(),
            now_ms: self.clock.now_ms(),
            ttl: self.settings.idempotency_ttl,
            request_timeout: self.settings.request_timeout,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The key of idempotency request digests.
    fn idem_mac(&self) -> ApiResult<&[u8]> {
        self.idem_mac
            .as_deref()
            .map(|k| k.as_slice())
            .ok_or_else(|| ApiError::internal(&"idempotency key unavailable"))
    }

    fn scheme(&self) -> &'static str {
        if self.settings.https { "https" } else { "http" }
    }
}

/// Parses client-supplied CIDRs (or bare addresses), at most 100, into canonical
/// networks. Refuses anything else with `invalid_parameter`.
pub fn parse_cidrs(input: &[String]) -> crate::service::Result<Vec<IpNet>> {
    use crate::service::ServiceError;
    if input.len() > 100 {
        return Err(ServiceError::InvalidParameter);
    }
    let mut out: Vec<IpNet> = Vec::new();
    for s in input {
        let s = s.trim();
        let net = match s.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => IpNet::from(
                s.parse::<IpAddr>()
                    .map_err(|_| ServiceError::InvalidParameter)?,
            ),
        };
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

/// The caller's account controls and key allowlist, read together with its API key
/// when nothing is cached (see [`crate::service::accounts::Accounts::lookup_key`]); a request extension, used
/// by this request's checks instead of reading them again.
#[derive(Debug, Clone)]
pub struct Prefetched {
    controls: Arc<AccountControls>,
    key_allowlist: Arc<Vec<IpNet>>,
}

impl Prefetched {
    pub(crate) fn new(controls: AccountControls, key_allowlist: &[String]) -> Self {
        Self {
            controls: Arc::new(controls),
            key_allowlist: Arc::new(parse_stored_cidrs(key_allowlist)),
        }
    }
}

fn parse_stored_cidrs(list: &[String]) -> Vec<IpNet> {
    list.iter().filter_map(|s| s.parse().ok()).collect()
}

fn allowed_by(list: &[IpNet], ip: IpAddr) -> bool {
    list.is_empty() || list.iter().any(|n| n.contains(&ip))
}
