//! Rate limits: GCRA (the generic cell rate algorithm) on the injected clock, with two
//! backends behind one trait: in-process (one node) and Redis (shared by nodes; a Lua
//! script does the read-compare-write atomically).
//!
//! A quota of `n` per minute with a burst of `n`: a fresh key may make `n` requests at
//! once, then one more every `60/n` seconds. The state per key is one number, the
//! "theoretical arrival time" (TAT), in microseconds.

use crate::error::{ApiError, ApiResult};
use ipnet::Ipv6Net;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Largest quota: one request per 60 µs (the state is kept in microseconds).
pub const MAX_PER_MINUTE: u32 = 1_000_000;

/// A limit: `per_minute` requests per minute, with a burst of as many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per minute (at least 1).
    pub per_minute: u32,
}

impl Quota {
    /// Emission interval, microseconds.
    fn interval_us(self) -> i64 {
        60_000_000 / i64::from(self.per_minute.max(1))
    }
    /// How far ahead of now the TAT may run (burst × interval), microseconds.
    fn tolerance_us(self) -> i64 {
        self.interval_us() * i64::from(self.per_minute.max(1))
    }
}

/// The outcome of one check, with what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The quota's size.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Seconds until the quota is full again.
    pub reset_secs: u64,
    /// When refused: seconds until one request is allowed.
    pub retry_after_secs: u64,
}

fn ceil_secs(us: i64) -> u64 {
    u64::try_from(us.max(0)).unwrap_or(0).div_ceil(1_000_000)
}

/// Turns "was it allowed" and "TAT − now after the check" into a decision.
fn decide(quota: Quota, allowed: bool, backlog_us: i64) -> Decision {
    let t = quota.interval_us();
    let tau = quota.tolerance_us();
    let backlog = backlog_us.max(0);
    if allowed {
        let remaining = (tau - backlog).max(0) / t.max(1);
        Decision {
            allowed,
            limit: quota.per_minute,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset_secs: ceil_secs(backlog),
            retry_after_secs: 0,
        }
    } else {
        Decision {
            allowed,
            limit: quota.per_minute,
            remaining: 0,
            reset_secs: ceil_secs(backlog),
            retry_after_secs: ceil_secs(backlog + t - tau).max(1),
        }
    }
}

/// A place GCRA state lives.
#[allow(async_fn_in_trait)]
pub trait RateLimitBackend: Send + Sync {
    /// Counts one request against `key` at `now_ms` if the quota allows it.
    async fn check(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision>;
    /// The state of `key` without counting anything (for the headers of a request
    /// refused before the limiter). `allowed` is always true: nothing was refused here.
    async fn peek(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision>;
}

/// A peeked state as header values: the backlog is `TAT − now`.
fn peeked(quota: Quota, backlog_us: i64) -> Decision {
    let t = quota.interval_us().max(1);
    let backlog = backlog_us.max(0);
    Decision {
        allowed: true,
        limit: quota.per_minute,
        remaining: u32::try_from((quota.tolerance_us() - backlog).max(0) / t).unwrap_or(0),
        reset_secs: ceil_secs(backlog),
        retry_after_secs: 0,
    }
}

/// The network a client address is limited as: an IPv4 address on its own, an IPv6
/// address by its /64. One IPv6 subscriber usually holds a whole /64 (SLAAC, privacy
/// addresses), so per-address buckets would give them 2^64 fresh quotas. Used in bucket
/// keys by every backend, so memory and Redis key alike.
pub fn client_network(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let net = Ipv6Net::new(v6, 64).map_or_else(|_| Ipv6Net::from(v6), |n| n.trunc());
            net.to_string()
        }
    }
}

/// Most buckets one partition of the in-memory limiter holds.
pub const MEMORY_MAX_BUCKETS: usize = 100_000;

/// One bounded map from key to TAT.
struct Buckets {
    tats: Mutex<HashMap<String, i64>>,
    max: usize,
    /// The latest `now` a check has used, microseconds.
    latest: AtomicI64,
}

impl Buckets {
    fn new(max: usize) -> Self {
        Self {
            tats: Mutex::new(HashMap::new()),
            max: max.max(1),
            latest: AtomicI64::new(i64::MIN),
        }
    }

    /// `now_ms` in microseconds, never earlier than a `now` this map has already used. A
    /// request reads the clock before it reaches the limiter, so concurrent requests arrive
    /// slightly out of order; one that read the clock before a jump (a stepped clock, a
    /// test's) and arrives after another moved its bucket past the jump would otherwise
    /// find the bucket a whole jump ahead of it and be refused.
    fn now_us(&self, now_ms: i64) -> i64 {
        let now = now_ms.saturating_mul(1000);
        self.latest.fetch_max(now, Ordering::Relaxed).max(now)
    }

    fn lock(&self) -> ApiResult<std::sync::MutexGuard<'_, HashMap<String, i64>>> {
        self.tats
            .lock()
            .map_err(|_| ApiError::internal(&"rate limiter lock poisoned"))
    }
}

/// Makes room in a full map: drops expired buckets (a TAT in the past is the same as
/// no entry); if that is not enough, the buckets closest to full credit, down to 7/8
/// of the bound. Forgetting one of those forgives at most what it had nearly regained
/// anyway, while the buckets of callers being held back (a far TAT) stay: an attacker
/// who sprays fresh keys evicts its own one-request buckets first. Rare and amortised:
/// after it an eighth of the bound is free.
fn make_room(map: &mut HashMap<String, i64>, max: usize, now_us: i64) {
    map.retain(|_, tat| *tat > now_us);
    if map.len() < max {
        return;
    }
    let keep = max - max / 8;
    let mut tats: Vec<i64> = map.values().copied().collect();
    let cut = tats.len().saturating_sub(keep);
    if cut == 0 {
        return;
    }
    let (_, &mut threshold, _) = tats.select_nth_unstable(cut - 1);
    // Ties at the threshold: drop them too (never more than the bound allows to keep).
    let mut over = map.len() - keep;
    map.retain(|_, tat| {
        if over > 0 && *tat <= threshold {
            over -= 1;
            false
        } else {
            true
        }
    });
}

/// In-process GCRA: bounded maps from key to TAT. Per-address buckets (`ip:` keys,
/// which anyone can create by sending from new addresses) live apart from the
/// credentials' buckets, so that spraying addresses can never evict a credential's.
pub struct MemoryLimiter {
    addresses: Buckets,
    credentials: Buckets,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::with_max(MEMORY_MAX_BUCKETS)
    }
}

impl MemoryLimiter {
    /// A limiter holding at most `max` buckets per partition.
    pub fn with_max(max: usize) -> Self {
        Self {
            addresses: Buckets::new(max),
            credentials: Buckets::new(max),
        }
    }

    fn partition(&self, key: &str) -> &Buckets {
        if key.starts_with("ip:") {
            &self.addresses
        } else {
            &self.credentials
        }
    }

    /// Buckets held now, both partitions together.
    pub fn len(&self) -> usize {
        [&self.addresses, &self.credentials]
            .iter()
            .map(|b| b.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RateLimitBackend for MemoryLimiter {
    async fn check(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        let buckets = self.partition(key);
        let mut map = buckets.lock()?;
        let now = buckets.now_us(now_ms);
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + quota.interval_us();
        if new_tat - now > quota.tolerance_us() {
            return Ok(decide(quota, false, tat - now));
        }
        if map.len() >= buckets.max && !map.contains_key(key) {
            make_room(&mut map, buckets.max, now);
        }
        map.insert(key.to_owned(), new_tat);
        Ok(decide(quota, true, new_tat - now))
    }

    async fn peek(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        let buckets = self.partition(key);
        let map = buckets.lock()?;
        let now = buckets.now_us(now_ms);
        Ok(peeked(quota, map.get(key).map_or(0, |tat| tat - now)))
    }
}

/// GCRA in one atomic step on the Redis server. Returns `{allowed, tat - now}`.
const GCRA_LUA: &str = r"
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + t
if new_tat - now > tau then
  return {0, tat - now}
end
-- As an integer string: Lua's default number formatting keeps only 14 digits.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, new_tat - now}
";

/// GCRA state in Redis, shared by every node that uses the same Redis.
pub struct RedisLimiter {
    client: redis::Client,
    conn: OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
}

impl RedisLimiter {
    /// A limiter for this URL (`redis://127.0.0.1:6379`); connects on first use.
    pub fn new(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis URL: {:?}", e.kind()))?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            script: redis::Script::new(GCRA_LUA),
        })
    }

    /// The shared connection (also used for the idempotency cache).
    pub(crate) async fn conn(&self) -> ApiResult<redis::aio::ConnectionManager> {
        self.conn
            .get_or_try_init(|| async {
                // Fail fast: a request waits for Redis at most a couple of seconds.
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
                    .set_response_timeout(Some(std::time::Duration::from_secs(2)));
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg).await
            })
            .await
            .cloned()
            .map_err(|e| ApiError::unavailable(&format!("redis: {:?}", e.kind())))
    }
}

impl RateLimitBackend for RedisLimiter {
    async fn check(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        let mut conn = self.conn().await?;
        let (allowed, backlog): (i64, i64) = self
            .script
            .key(format!("strongroom:rl:{key}"))
            .arg(now_ms.saturating_mul(1000))
            .arg(quota.interval_us())
            .arg(quota.tolerance_us())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| ApiError::unavailable(&format!("redis: {:?}", e.kind())))?;
        Ok(decide(quota, allowed == 1, backlog))
    }

    async fn peek(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        let mut conn = self.conn().await?;
        let tat: Option<i64> = redis::cmd("GET")
            .arg(format!("strongroom:rl:{key}"))
            .query_async(&mut conn)
            .await
            .map_err(|e| ApiError::unavailable(&format!("redis: {:?}", e.kind())))?;
        Ok(peeked(
            quota,
            tat.map_or(0, |t| t - now_ms.saturating_mul(1000)),
        ))
    }
}

/// The backend chosen by configuration.
pub enum Limiter {
    /// In-process.
    Memory(MemoryLimiter),
    /// Redis, shared by the nodes; while Redis is unreachable, this node's own limiter
    /// (each node then allows a key its whole budget: at most N times the limit over N
    /// nodes, never no limit), with a warning and `strongroom_redis_degraded`.
    Redis {
        shared: Box<RedisLimiter>,
        local: MemoryLimiter,
        health: Arc<crate::metrics::RedisHealth>,
    },
}

impl RateLimitBackend for Limiter {
    async fn check(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        match self {
            Self::Memory(m) => m.check(key, quota, now_ms).await,
            Self::Redis {
                shared,
                local,
                health,
            } => {
                let redis = async { shared.check(key, quota, now_ms).await.map(Ok) };
                let local = local.check(key, quota, now_ms);
                health
                    .rate_limit
                    .run("rate_limit", now_ms, redis, local)
                    .await
            }
        }
    }

    async fn peek(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        match self {
            Self::Memory(m) => m.peek(key, quota, now_ms).await,
            Self::Redis {
                shared,
                local,
                health,
            } => {
                let redis = async { shared.peek(key, quota, now_ms).await.map(Ok) };
                let local = local.peek(key, quota, now_ms);
                health
                    .rate_limit
                    .run("rate_limit", now_ms, redis, local)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_network(a), "2001:db8:1:2::/64");
        assert_eq!(client_network(a), client_network(b));
        assert_ne!(client_network(a), client_network(other));
        // IPv4, also written as an IPv4-mapped IPv6 address, is keyed by the address.
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(client_network(v4), "203.0.113.7");
        assert_eq!(client_network(mapped), "203.0.113.7");
        assert_ne!(
            client_network("203.0.113.8".parse().unwrap()),
            client_network(v4)
        );
    }

    #[tokio::test]
    async fn spraying_addresses_keeps_the_limiter_bounded() {
        let m = MemoryLimiter::with_max(64);
        let q = Quota { per_minute: 2 };
        let t0 = 1_700_000_000_000;
        // A caller held back, per credential and per address.
        for key in ["key:k", "ip:198.51.100.1:/v1/cards"] {
            for _ in 0..2 {
                assert!(m.check(key, q, t0).await.unwrap().allowed);
            }
            assert!(!m.check(key, q, t0).await.unwrap().allowed);
        }
        // Ten thousand fresh addresses within the same second: the limiter never
        // holds more than its bound per partition...
        for i in 0..10_000u32 {
            let key = format!("ip:2001:db8:{i:x}::/64:/v1/cards");
            assert!(m.check(&key, q, t0 + 1).await.unwrap().allowed);
            assert!(m.len() <= 2 * 64, "{} buckets after {i}", m.len());
        }
        // ...and the callers it holds back are still held back.
        for key in ["key:k", "ip:198.51.100.1:/v1/cards"] {
            assert!(!m.check(key, q, t0 + 1).await.unwrap().allowed, "{key}");
        }
    }

    /// A request that read the clock before a jump and reaches the limiter after another
    /// request moved the bucket past it counts as arriving at the later time.
    #[tokio::test]
    async fn a_request_with_an_earlier_clock_reading_is_not_refused() {
        let m = MemoryLimiter::default();
        let q = Quota {
            per_minute: MAX_PER_MINUTE,
        };
        let t0 = 1_700_000_000_000;
        assert!(m.check("k", q, t0 + 301_000).await.unwrap().allowed);
        let late = m.check("k", q, t0).await.unwrap();
        assert!(late.allowed, "{late:?}");
        // The quota still holds at the later time: 100 per minute, the burst spent.
        let small = Quota { per_minute: 100 };
        for _ in 0..100 {
            assert!(m.check("s", small, t0 + 301_000).await.unwrap().allowed);
        }
        assert!(!m.check("s", small, t0).await.unwrap().allowed);
    }

    #[tokio::test]
    async fn burst_then_one_per_interval() {
        let m = MemoryLimiter::default();
        let q = Quota { per_minute: 100 };
        let t0 = 1_700_000_000_000;
        for i in 0..100 {
            let d = m.check("k", q, t0).await.unwrap();
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 99 - i);
        }
        let d = m.check("k", q, t0).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_secs, 1); // 0.6 s, rounded up
        assert_eq!(d.reset_secs, 60);
        // 0.6 s later exactly one more.
        assert!(m.check("k", q, t0 + 600).await.unwrap().allowed);
        assert!(!m.check("k", q, t0 + 600).await.unwrap().allowed);
        // Another key is independent.
        assert!(m.check("other", q, t0).await.unwrap().allowed);
        // Peeking counts nothing.
        let p = m.peek("k", q, t0 + 600).await.unwrap();
        assert!(p.allowed);
        assert_eq!(p.remaining, 0);
        assert_eq!(m.peek("fresh", q, t0).await.unwrap().remaining, 100);
        // A minute later the burst is back.
        let later = t0 + 60_600;
        for _ in 0..100 {
            assert!(m.check("k", q, later).await.unwrap().allowed);
        }
        assert!(!m.check("k", q, later).await.unwrap().allowed);
    }

    #[tokio::test]
    async fn small_quota_retry_after() {
        let m = MemoryLimiter::default();
        let q = Quota { per_minute: 2 };
        let t0 = 1_000_000;
        assert!(m.check("k", q, t0).await.unwrap().allowed);
        assert!(m.check("k", q, t0).await.unwrap().allowed);
        let d = m.check("k", q, t0).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 30);
        assert!(!m.check("k", q, t0 + 29_999).await.unwrap().allowed);
        assert!(m.check("k", q, t0 + 30_000).await.unwrap().allowed);
    }
}
