//! `Idempotency-Key` on POST requests. The first successful (2xx) response is stored
//! for the configured time (24 h by default), per credential (account, mode, API key
//! and, for a bearer token, its scopes; or admin key) and key, sealed with AES-256-GCM
//! under a key derived from the root key. A retry with the same key and the same
//! request (method, path, body) gets the stored response with `Idempotent-Replayed:
//! true`; a different request gets `422 idempotency_key_reused`; a retry while the
//! first runs gets `409 idempotency_in_progress`. An error response is not stored: the key is released, so
//! a corrected retry runs again (errors write nothing). Routes whose responses carry
//! a secret refuse the header (see [`super::IDEMPOTENCY_EXCLUDED`]).
//!
//! With Redis configured, a finished response is also cached there (same sealed bytes,
//! same expiry, under a key that is a digest of scope and key), and a retry is answered
//! from Redis without touching the database. The database stays authoritative: a Redis
//! miss or failure falls through to it.

use super::ratelimit::RedisLimiter;
use crate::error::{ApiError, ApiResult, ErrorBody, codes};
use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use strongroom_crypto::{SealingKey, ct_eq, httpsig};
use strongroom_store::{IdempotencyBegin, IdempotencyClaim, Store, Writes};

/// Longest `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 255;
/// Largest response body stored.
const MAX_STORED_BODY: usize = 1024 * 1024;

/// The request's `Idempotency-Key`, checked: 1–255 visible ASCII characters.
pub fn key_of(parts: &Parts) -> ApiResult<Option<String>> {
    let Some(v) = parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = v.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_LEN
        || !bytes.iter().all(|b| (0x20..0x7f).contains(b))
    {
        return Err(codes::IDEMPOTENCY_KEY_INVALID);
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// An idempotent request in flight.
pub struct Idem {
    scope: String,
    key: String,
    hash: [u8; 32],
}

/// What a claim needs from the gateway: the store, the sealing key, Redis when the
/// deployment has it, the time, and how long records live.
pub struct IdemContext<'a> {
    /// Where claims and sealed responses are kept.
    pub store: &'a Store,
    /// Seals stored responses (`None`: the root key could not derive it).
    pub seal: Option<&'a SealingKey>,
    /// The shared cache of finished responses, when rate limits live in Redis.
    pub redis: Option<&'a RedisLimiter>,
    /// Now, in Unix milliseconds.
    pub now_ms: i64,
    /// How long an idempotent response is kept.
    pub ttl: Duration,
    /// Time after which a request is abandoned (an older claim is stale).
    pub request_timeout: Duration,
}

impl IdemContext<'_> {
    /// The writes of claims. They are the gateway's bookkeeping, not the request's
    /// action, so they carry no audit record: the request's record rides with the
    /// handler's own write, or is appended after it with the real outcome. (Carried by
    /// the claim, it would say `success` before the handler had run.)
    #[allow(clippy::disallowed_methods)]
    fn claims(&self) -> Writes<'_> {
        self.store.unaudited()
    }

    fn sealing_key(&self) -> ApiResult<&SealingKey> {
        self.seal
            .ok_or_else(|| ApiError::internal(&"idempotency key unavailable"))
    }
}

impl Idem {
    /// Identifies the request by method, path and query, and body: an HMAC under
    /// `mac_key` (root-derived), never a plain digest, because the stored digest of a
    /// body holding a card number and its expiry could otherwise be matched by trying
    /// numbers. The message is zeroized after.
    pub fn new(
        mac_key: &[u8],
        scope: String,
        key: String,
        parts: &Parts,
        route: &str,
        body: &[u8],
    ) -> Self {
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
        let mut m = zeroize::Zeroizing::new(Vec::with_capacity(body.len() + 64));
        for part in [parts.method.as_str(), route, target] {
            m.extend_from_slice(part.as_bytes());
            m.push(0);
        }
        m.extend_from_slice(body);
        Self {
            scope,
            key,
            hash: strongroom_crypto::hmac_sha256(mac_key, &m),
        }
    }

    fn aad(&self) -> Vec<u8> {
        format!("idempotency\0{}\0{}", self.scope, self.key).into_bytes()
    }

    /// The Redis key: a digest, so client-chosen keys never appear in key names.
    pub fn redis_key(scope: &str, key: &str) -> String {
        let d = httpsig::sha256(format!("{scope}\0{key}").as_bytes());
        format!("strongroom:idem:{}", hex::encode(d))
    }

    /// A stored response as served to a retry.
    fn replay(&self, ctx: &IdemContext<'_>, status: i64, sealed: &[u8]) -> ApiResult<Response> {
        let body = ctx.sealing_key()?.open(sealed, &self.aad())?;
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| ApiError::internal(&"stored idempotent status unreadable"))?;
        let mut res = Response::new(Body::from(body.to_vec()));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
        Ok(res)
    }

    /// A finished record from the Redis cache: request hash (32) ‖ status (2) ‖ sealed.
    async fn replay_from_redis(&self, ctx: &IdemContext<'_>) -> ApiResult<Option<Response>> {
        let Some(r) = ctx.redis else {
            return Ok(None);
        };
        let Ok(mut conn) = r.conn().await else {
            return Ok(None);
        };
        let cached: Option<Vec<u8>> = redis::cmd("GET")
            .arg(Self::redis_key(&self.scope, &self.key))
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        let Some(v) = cached else {
            return Ok(None);
        };
        let (Some(hash), Some(status), Some(sealed)) = (v.get(..32), v.get(32..34), v.get(34..))
        else {
            return Ok(None);
        };
        if !ct_eq(hash, &self.hash) {
            return Err(codes::IDEMPOTENCY_KEY_REUSED);
        }
        let status = i64::from(u16::from_be_bytes([
            status.first().copied().unwrap_or(0),
            status.get(1).copied().unwrap_or(0),
        ]));
        self.replay(ctx, status, sealed).map(Some)
    }

    async fn cache_in_redis(&self, ctx: &IdemContext<'_>, status: u16, sealed: &[u8]) {
        let Some(r) = ctx.redis else {
            return;
        };
        let Ok(mut conn) = r.conn().await else {
            return;
        };
        let ttl = u64::try_from(ctx.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut v = Vec::with_capacity(34 + sealed.len());
        v.extend_from_slice(&self.hash);
        v.extend_from_slice(&status.to_be_bytes());
        v.extend_from_slice(sealed);
        let set: Result<(), _> = redis::cmd("SET")
            .arg(Self::redis_key(&self.scope, &self.key))
            .arg(v)
            .arg("PX")
            .arg(ttl.max(1))
            .query_async(&mut conn)
            .await;
        if set.is_err() {
            tracing::warn!("could not cache an idempotent response in redis");
        }
    }

    /// Claims the key and runs the handler, or answers from the stored record.
    pub async fn run(self, ctx: &IdemContext<'_>, req: Request, next: Next) -> Response {
        match self.begin(ctx).await {
            Err(e) => e.into_response(),
            Ok(Some(replay)) => replay,
            Ok(None) => {
                let res = next.run(req).await;
                self.finish(ctx, res).await
            }
        }
    }

    async fn begin(&self, ctx: &IdemContext<'_>) -> ApiResult<Option<Response>> {
        if let Some(res) = self.replay_from_redis(ctx).await? {
            return Ok(Some(res));
        }
        let now = ctx.now_ms;
        let ttl = i64::try_from(ctx.ttl.as_millis()).unwrap_or(i64::MAX);
        // A claim older than any request may run belongs to a node that died.
        let stale = i64::try_from(ctx.request_timeout.as_millis())
            .unwrap_or(30_000)
            .saturating_add(30_000);
        let claim = IdempotencyClaim {
            scope: self.scope.clone(),
            key: self.key.clone(),
            request_hash: self.hash.to_vec(),
            now_ms: now,
            expires_ms: now.saturating_add(ttl),
            stale_before_ms: now.saturating_sub(stale),
            purge_expired: super::sweep::sweep_now(),
        };
        let rec = match ctx.claims().idempotency_begin(&claim).await? {
            IdempotencyBegin::Started => return Ok(None),
            IdempotencyBegin::Existing(rec) => rec,
        };
        if !ct_eq(&rec.request_hash, &self.hash) {
            return Err(codes::IDEMPOTENCY_KEY_REUSED);
        }
        let Some((status, sealed)) = rec.response else {
            return Err(codes::IDEMPOTENCY_IN_PROGRESS);
        };
        self.replay(ctx, status, &sealed).map(Some)
    }

    async fn finish(&self, ctx: &IdemContext<'_>, res: Response) -> Response {
        let failed = !res.status().is_success() || res.extensions().get::<ErrorBody>().is_some();
        if failed {
            let abort = ctx.claims();
            if let Err(e) = abort.idempotency_abort(&self.scope, &self.key).await {
                tracing::warn!(error = %e, "could not release an idempotency key");
            }
            return res;
        }
        let (parts, body) = res.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_STORED_BODY).await else {
            // The handler's body could not be read: nothing reliable to return or store.
            let abort = ctx.claims();
            let _ = abort.idempotency_abort(&self.scope, &self.key).await;
            return ApiError::internal(&"response body unreadable").into_response();
        };
        let stored = async {
            let sealed = ctx.sealing_key()?.seal(&bytes, &self.aad())?;
            let status = parts.status.as_u16();
            ctx.claims()
                .idempotency_finish(&self.scope, &self.key, i64::from(status), &sealed)
                .await?;
            self.cache_in_redis(ctx, status, &sealed).await;
            Ok::<(), ApiError>(())
        };
        if stored.await.is_err() {
            // The resource exists; the claim stays in progress until it goes stale, so
            // a quick retry cannot create a second one.
            tracing::warn!("could not store an idempotent response");
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}
