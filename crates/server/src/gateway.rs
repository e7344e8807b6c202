//! The gateway controls, one middleware inside the request context: client address →
//! authentication (resolves the caller once, for the handlers too) → IP allowlists →
//! request signatures → rate limits → idempotency → handler.
//!
//! Refusals are plain [`ApiError`]s; the outer `request_context` renders them. Every
//! response that got as far as the rate limiter carries `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset`; a refusal adds `Retry-After`.

pub mod client_ip;
pub mod idempotency;
pub mod openapi;
pub mod ratelimit;
pub mod signature;

use crate::ServerConfig;
use crate::auth::{Admin, Caller};
use crate::cache::Cache;
use crate::error::{ApiError, ApiResult, codes};
use crate::extract::BODY_LIMIT;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use client_ip::ClientIp;
use ipnet::IpNet;
use ratelimit::{Decision, Limiter, MemoryLimiter, Quota, RateLimitBackend, RedisLimiter};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use strongroom_crypto::{RootKey, SealingKey};
use strongroom_store::{AccountControls, ControlStore};

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
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            store: RateLimitStore::Memory,
            per_minute: 100,
            reveal_per_minute: 10,
            otp_per_minute: 10,
            ip_per_minute: 60,
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
];

/// Most accounts' controls, and most keys' allowlists, cached.
const CACHE_MAX: usize = 10_000;

/// Route of the token endpoint: limited per client address as well.
const TOKEN_ROUTE: &str = "/v1/auth/token";

/// The gateway's state, in [`AppState`].
pub struct Gateway {
    limiter: Limiter,
    idem_key: Option<SealingKey>,
    controls: Cache<String, Arc<AccountControls>>,
    key_lists: Cache<String, Arc<Vec<IpNet>>>,
}

/// Checks what [`Gateway::new`] cannot report (called before the server starts).
pub fn check_config(config: &ServerConfig) -> Result<(), String> {
    if let RateLimitStore::Redis(url) = &config.rate_limit.store {
        RedisLimiter::new(url)?;
    }
    let r = &config.rate_limit;
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
    pub(crate) fn new(config: &ServerConfig, root: &RootKey) -> Self {
        let limiter = match &config.rate_limit.store {
            RateLimitStore::Memory => Limiter::Memory(MemoryLimiter::default()),
            RateLimitStore::Redis(url) => match RedisLimiter::new(url) {
                Ok(r) => Limiter::Redis(Box::new(r)),
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
        let ttl = config.api_key_cache_ttl;
        Self {
            limiter,
            idem_key,
            controls: Cache::new(ttl, CACHE_MAX),
            key_lists: Cache::new(ttl, CACHE_MAX),
        }
    }

    /// The account's controls, through the cache.
    pub async fn account_controls(
        &self,
        state: &AppState,
        account_id: &str,
    ) -> ApiResult<Arc<AccountControls>> {
        let (now, sync) = (state.now_ms(), state.cache_sync());
        if let Some(c) = self.controls.get(sync, account_id, now) {
            return Ok(c);
        }
        let epoch = self.controls.epoch(sync);
        let c = Arc::new(state.store().account_controls(account_id).await?);
        self.controls
            .put(sync, account_id.to_owned(), c.clone(), now, epoch);
        Ok(c)
    }

    /// Forgets cached controls of an account (after a change through this node).
    pub fn forget_account(&self, state: &AppState, account_id: &str) {
        self.controls.forget(state.cache_sync(), account_id);
    }

    async fn key_allowlist(&self, state: &AppState, key_id: &str) -> ApiResult<Arc<Vec<IpNet>>> {
        let (now, sync) = (state.now_ms(), state.cache_sync());
        if let Some(c) = self.key_lists.get(sync, key_id, now) {
            return Ok(c);
        }
        let epoch = self.key_lists.epoch(sync);
        let list = state.store().key_ip_allowlist(key_id).await?;
        let nets = Arc::new(parse_stored_cidrs(&list));
        self.key_lists
            .put(sync, key_id.to_owned(), nets.clone(), now, epoch);
        Ok(nets)
    }

    /// Forgets a cached key allowlist.
    pub fn forget_key(&self, state: &AppState, key_id: &str) {
        self.key_lists.forget(state.cache_sync(), key_id);
    }

    /// Redis, when the deployment uses it (rate limits and the idempotency cache).
    pub(crate) fn redis(&self) -> Option<&RedisLimiter> {
        match &self.limiter {
            Limiter::Redis(r) => Some(r),
            Limiter::Memory(_) => None,
        }
    }

    pub(crate) fn idempotency_key(&self) -> ApiResult<&SealingKey> {
        self.idem_key
            .as_ref()
            .ok_or_else(|| ApiError::internal(&"idempotency key unavailable"))
    }
}

/// Parses client-supplied CIDRs (or bare addresses), at most 100, into canonical
/// networks. Refuses anything else with `invalid_parameter`.
pub fn parse_cidrs(input: &[String]) -> ApiResult<Vec<IpNet>> {
    if input.len() > 100 {
        return Err(codes::INVALID_PARAMETER);
    }
    let mut out: Vec<IpNet> = Vec::new();
    for s in input {
        let s = s.trim();
        let net = match s.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => IpNet::from(s.parse::<IpAddr>().map_err(|_| codes::INVALID_PARAMETER)?),
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

/// An admin key's own IP allowlist (admin keys have no account, so no account list).
async fn admin_allowed(state: &AppState, admin: &Admin, ip: IpAddr) -> ApiResult<()> {
    let list = state.gateway().key_allowlist(state, &admin.key_id).await?;
    if allowed_by(&list, ip) {
        Ok(())
    } else {
        Err(codes::IP_NOT_ALLOWED)
    }
}

/// Reads the whole body (bounded), or refuses with 413.
async fn read_body(body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| codes::BODY_TOO_LARGE)
}

/// The quotas a request counts against: `(bucket key, quota)`.
fn buckets(
    state: &AppState,
    caller: &Caller,
    controls: Option<&AccountControls>,
    route: &str,
    method: &Method,
    ip: IpAddr,
) -> Vec<(String, Quota)> {
    let rl = &state.config().rate_limit;
    let q = |per_minute: u32| Quota { per_minute };
    // Per-address buckets key an IPv6 client by its /64 (built only when used).
    let net = || ratelimit::client_network(ip);
    let mut out = Vec::new();
    match caller {
        Caller::Account(p) => {
            let per_minute = controls
                .and_then(|c| c.rate_limit_per_minute)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(rl.per_minute);
            if route == "/v1/cards/{id}/reveal" {
                out.push((format!("reveal:{}", p.key_id), q(rl.reveal_per_minute)));
            }
            if route == "/v1/otp" && method == Method::POST {
                out.push((format!("otp:{}", p.key_id), q(rl.otp_per_minute)));
            }
            out.push((format!("key:{}", p.key_id), q(per_minute)));
        }
        Caller::Admin(a) => out.push((format!("key:{}", a.key_id), q(rl.per_minute))),
        // A refused credential counts as no credential: per address.
        Caller::Anonymous | Caller::Refused { .. } => {
            // `/readyz` is limited too: its answer is cached, but it is no free probe.
            if route != "/healthz" {
                out.push((format!("ip:{}:{route}", net()), q(rl.ip_per_minute)));
            }
        }
    }
    if route == TOKEN_ROUTE && !matches!(caller, Caller::Anonymous | Caller::Refused { .. }) {
        out.push((format!("ip:{}:{route}", net()), q(rl.ip_per_minute)));
    }
    out
}

async fn peek(
    state: &AppState,
    caller: &Caller,
    parts: &Parts,
    route: &str,
    ip: IpAddr,
) -> Option<Decision> {
    let controls = match caller {
        Caller::Account(p) => state
            .gateway()
            .account_controls(state, &p.account_id)
            .await
            .ok(),
        _ => None,
    };
    let (key, quota) = buckets(state, caller, controls.as_deref(), route, &parts.method, ip)
        .into_iter()
        .next()?;
    let now = state.now_ms();
    state.gateway().limiter.peek(&key, quota, now).await.ok()
}

// Names built once: inserting a `&str` name that http does not know copies it into a
// fresh allocation on every response.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

fn set_rate_headers(res: &mut Response, d: &Decision) {
    let h = res.headers_mut();
    h.insert(RATELIMIT_LIMIT, HeaderValue::from(d.limit));
    h.insert(RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
    h.insert(RATELIMIT_RESET, HeaderValue::from(d.reset_secs));
    if !d.allowed {
        h.insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(d.retry_after_secs),
        );
    }
}

/// See the module docs.
pub async fn gateway(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", |p| p.as_str())
        .to_owned();
    let (mut parts, body) = req.into_parts();
    // Resolved by `request_context`, which also records it in the audit template.
    let ip = match parts.extensions.get::<ClientIp>() {
        Some(c) => c.0,
        None => {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
            let ip = client_ip::client_ip(peer, &parts.headers, &state.config().trusted_proxies);
            parts.extensions.insert(ClientIp(ip));
            ip
        }
    };

    let caller = match crate::auth::authenticate(&mut parts, &state).await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    parts.extensions.insert(caller.clone());
    let mut decision: Option<Decision> = None;
    let res = match controls(&state, &caller, &mut parts, body, &route, ip, &mut decision).await {
        Ok((parts, body, idem)) => match idem {
            // Boxed, as the signature check below: both are rare and about 3 KB each,
            // and the gateway's future is moved into a box on every request.
            Some(idem) => Box::pin(idem.run(&state, Request::from_parts(parts, body), next)).await,
            None => next.run(Request::from_parts(parts, body)).await,
        },
        Err(e) => {
            if decision.is_none() && e.status.is_client_error() {
                // Refused before the limiter (allowlist, signature): show the quota
                // without spending it.
                decision = peek(&state, &caller, &parts, &route, ip).await;
            }
            e.into_response()
        }
    };
    let mut res = res;
    if let Some(d) = &decision {
        set_rate_headers(&mut res, d);
    }
    res
}

/// Everything before the handler. Returns the (possibly re-assembled) request, and
/// the idempotency claim when the request carries a key.
async fn controls(
    state: &AppState,
    caller: &Caller,
    parts: &mut Parts,
    body: Body,
    route: &str,
    ip: IpAddr,
    decision: &mut Option<Decision>,
) -> ApiResult<(Parts, Body, Option<idempotency::Idem>)> {
    let gw = state.gateway();
    let mut body = Some(body);
    let mut bytes: Option<Bytes> = None;
    let mut controls: Option<Arc<AccountControls>> = None;

    if let Caller::Account(p) = caller {
        // IP allowlists: the account's and the key's; both must admit the address.
        let pre = parts.extensions.get::<Prefetched>().cloned();
        let c = match &pre {
            Some(pre) => pre.controls.clone(),
            None => gw.account_controls(state, &p.account_id).await?,
        };
        let key_list = match pre {
            Some(pre) => pre.key_allowlist,
            None => gw.key_allowlist(state, &p.key_id).await?,
        };
        let account_list = parse_stored_cidrs(&c.ip_allowlist);
        if !allowed_by(&account_list, ip) || !allowed_by(&key_list, ip) {
            return Err(codes::IP_NOT_ALLOWED);
        }
        // Signatures: always verified when present; required when the account says so.
        if signature::is_signed(&parts.headers) {
            let b = read_body(body.take().unwrap_or_default()).await?;
            let view = signature::RequestView::new(parts, scheme(state));
            let required = c.require_signed_requests;
            Box::pin(signature::verify(state, p, &view, &b, required)).await?;
            bytes = Some(b);
        } else if c.require_signed_requests {
            return Err(codes::SIGNATURE_MISSING);
        }
        controls = Some(c);
    }
    if let Caller::Admin(a) = caller {
        admin_allowed(state, a, ip).await?;
    }

    // Rate limits: every bucket must admit the request; the headers show the tightest.
    let now = state.now_ms();
    for (key, quota) in buckets(state, caller, controls.as_deref(), route, &parts.method, ip) {
        let d = gw.limiter.check(&key, quota, now).await?;
        let tighter = decision
            .as_ref()
            .is_none_or(|prev| !d.allowed || d.remaining < prev.remaining);
        if tighter {
            *decision = Some(d);
        }
        if !d.allowed {
            state.metrics().rate_limited();
            return Err(codes::RATE_LIMITED);
        }
    }

    // Idempotency.
    let idem = match idempotency::key_of(parts)? {
        Some(key) if parts.method == Method::POST => {
            let scope = match caller {
                // Per credential, not per account: a replay must not skip the
                // replaying credential's own checks, and a public `pk_` must not
                // claim the keys of the account's back end. A token also names its
                // scopes, so a narrower token never replays a wider one's answer.
                Caller::Account(p) => match &p.token_id {
                    None => format!("{}:{}:{}", p.account_id, p.mode.as_str(), p.key_id),
                    Some(_) => format!(
                        "{}:{}:{}:{}",
                        p.account_id,
                        p.mode.as_str(),
                        p.key_id,
                        p.scopes.to_storage()
                    ),
                },
                Caller::Admin(a) => a.key_id.clone(),
                // The handler will refuse it; nothing to remember.
                Caller::Anonymous | Caller::Refused { .. } => String::new(),
            };
            if scope.is_empty() {
                None
            } else {
                if IDEMPOTENCY_EXCLUDED.contains(&route) {
                    return Err(codes::IDEMPOTENCY_NOT_SUPPORTED);
                }
                let b = match bytes.take() {
                    Some(b) => b,
                    None => read_body(body.take().unwrap_or_default()).await?,
                };
                let idem = idempotency::Idem::new(scope, key, parts, route, &b);
                bytes = Some(b);
                Some(idem)
            }
        }
        _ => None,
    };

    let body = match (bytes, body) {
        (Some(b), _) => Body::from(b),
        (None, Some(b)) => b,
        (None, None) => Body::empty(),
    };
    let parts = std::mem::replace(parts, Request::new(()).into_parts().0);
    Ok((parts, body, idem))
}

/// The credential could not be checked (the store, a key-set reload): the request
/// stops here, as it would for a refused one, and the client is told when to retry.
fn unavailable(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(1));
    res
}

fn scheme(state: &AppState) -> &'static str {
    if state.config().tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// True about once in 64 calls: when to sweep expired nonces and idempotency records.
pub(crate) fn sweep_now() -> bool {
    strongroom_crypto::random::bytes::<1>().is_ok_and(|[b]| b < 4)
}
