//! Rate limits: GCRA (the generic cell rate algorithm) on the injected clock, with two
//! backends behind one trait: in-process (one node) and Redis (shared by nodes; a Lua
//! script does the read-compare-write atomically).
//!
//! A quota of `n` per minute with a burst of `n`: a fresh key may make `n` requests at
//! once, then one more every `60/n` seconds. The state per key is one number, the
//! "theoretical arrival time" (TAT), in microseconds.

use crate::error::{ApiError, ApiResult};
use std::collections::HashMap;
use std::sync::Mutex;
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

/// Most keys kept in memory before expired ones are dropped.
const MEMORY_SWEEP_AT: usize = 50_000;

/// In-process GCRA: a map from key to TAT.
#[derive(Default)]
pub struct MemoryLimiter {
    tats: Mutex<HashMap<String, i64>>,
}

impl RateLimitBackend for MemoryLimiter {
    async fn check(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        let now = now_ms.saturating_mul(1000);
        let mut map = self
            .tats
            .lock()
            .map_err(|_| ApiError::internal(&"rate limiter lock poisoned"))?;
        if map.len() >= MEMORY_SWEEP_AT {
            // A TAT in the past is the same as no entry.
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + quota.interval_us();
        if new_tat - now > quota.tolerance_us() {
            return Ok(decide(quota, false, tat - now));
        }
        map.insert(key.to_owned(), new_tat);
        Ok(decide(quota, true, new_tat - now))
    }

    async fn peek(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        let now = now_ms.saturating_mul(1000);
        let map = self
            .tats
            .lock()
            .map_err(|_| ApiError::internal(&"rate limiter lock poisoned"))?;
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
    /// Redis.
    Redis(Box<RedisLimiter>),
}

impl RateLimitBackend for Limiter {
    async fn check(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        match self {
            Self::Memory(m) => m.check(key, quota, now_ms).await,
            Self::Redis(r) => r.check(key, quota, now_ms).await,
        }
    }

    async fn peek(&self, key: &str, quota: Quota, now_ms: i64) -> ApiResult<Decision> {
        match self {
            Self::Memory(m) => m.peek(key, quota, now_ms).await,
            Self::Redis(r) => r.peek(key, quota, now_ms).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
