//! The CVC a card was created with, held for the card's first payment (docs/relay.md,
//! "The CVC").
//!
//! A CVC is never written to disk, a database, a log, an event, an error or a response.
//! [`Cvcs::hold`] seals it and keeps it for at most [`TTL_MS`]; [`Cvcs::take`] removes and
//! opens it in one step, so it serves one use; an expired one is gone. Two backends, chosen
//! by the deployment (the same choice as the rate limiter's):
//! - in this process (one node): a bounded map, sealed under a key drawn at start and held
//!   only in memory, so a restart loses every held CVC and nothing written anywhere, nor
//!   the map on its own, opens one;
//! - Redis (several nodes): `SET … PX` of the sealed value, `GETDEL` to take it, under a
//!   key derived from the root key so every node opens what another held. Redis must run
//!   without persistence (no RDB, no AOF) for the never-on-disk promise; what it holds is
//!   sealed regardless. Here a restart of one node loses nothing; a restart of Redis does.
//!
//! Time is the injected clock's (`now_ms`), also with Redis: the expiry travels in the
//! held value, bound into the seal, and `PX` is only the backstop that frees the memory.

use crate::service::{Result, ServiceError};
use std::collections::{BTreeMap, HashMap};
use std::panic::Location;
use std::sync::{Mutex, MutexGuard};
use strongroom_core::{Brand, Mode};
use strongroom_crypto::{DataKey, RootKey, SealingKey};
use strongroom_store::StoreError;
use tokio::sync::OnceCell;
use zeroize::{Zeroize, Zeroizing};

/// How long a CVC is held: ten minutes.
pub const TTL_MS: i64 = 10 * 60 * 1000;
/// Most CVCs the in-process store holds. When it is full, expired ones go first, then
/// the oldest held: a new card's CVC is always held, and the one evicted is the one
/// closest to its expiry anyway.
pub const MEMORY_CAP: usize = 100_000;

/// Checks a CVC against the card's brand: digits only, four for American Express and
/// three for every other brand. The error never carries the value.
pub fn check(brand: Brand, cvc: &str) -> Result<()> {
    let len = if brand == Brand::Amex { 4 } else { 3 };
    if cvc.len() == len && cvc.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ServiceError::CvcInvalid)
    }
}

/// What one held CVC belongs to.
#[derive(Clone, Copy)]
struct Slot<'a> {
    account_id: &'a str,
    mode: Mode,
    card_id: &'a str,
}

impl Slot<'_> {
    /// The account, mode and card, as the seal's AAD and the memory map's key bind them.
    fn ident(&self) -> String {
        format!(
            "{}|{}|{}",
            self.account_id,
            self.mode.as_str(),
            self.card_id
        )
    }

    /// Binds the sealed CVC to its card and to its expiry: moved to another card, or
    /// given a later expiry, it no longer opens.
    fn aad(&self, expires_ms: i64) -> Vec<u8> {
        format!("strongroom/cvc/v1|{}|{expires_ms}", self.ident()).into_bytes()
    }
}

/// A sealed CVC and when it expires (injected-clock milliseconds): what a backend keeps.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Held {
    expires_ms: i64,
    sealed: Vec<u8>,
}

impl Held {
    /// `expires_ms` (8 bytes, big-endian) ‖ sealed: the value kept in Redis.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.sealed.len());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.sealed);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (head, sealed) = bytes.split_first_chunk::<8>()?;
        Some(Self {
            expires_ms: i64::from_be_bytes(*head),
            sealed: sealed.to_vec(),
        })
    }

    fn live(&self, now_ms: i64) -> bool {
        now_ms < self.expires_ms
    }
}

/// A place sealed CVCs are kept.
#[allow(async_fn_in_trait)]
pub trait CvcBackend: Send + Sync {
    /// Keeps `held` under `ident` (see `Slot::ident`), replacing what was there.
    async fn put(&self, ident: &str, held: Held, now_ms: i64) -> Result<()>;
    /// Removes and returns what is under `ident`, in one atomic step.
    async fn take(&self, ident: &str, now_ms: i64) -> Result<Option<Held>>;
    /// The expiry of what each of `idents` holds (`None`: nothing).
    async fn expiries(&self, idents: &[String], now_ms: i64) -> Result<Vec<Option<i64>>>;
    /// Removes what is under `ident`.
    async fn remove(&self, ident: &str) -> Result<()>;
}

/// The in-process backend: a map bounded by [`MEMORY_CAP`].
pub struct MemoryBackend {
    cap: usize,
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_ident: HashMap<String, (u64, Held)>,
    /// (expiry, insertion number) → ident: expired and oldest first.
    by_expiry: BTreeMap<(i64, u64), String>,
    next: u64,
}

impl Table {
    fn remove(&mut self, ident: &str) -> Option<Held> {
        let (seq, held) = self.by_ident.remove(ident)?;
        self.by_expiry.remove(&(held.expires_ms, seq));
        Some(held)
    }

    /// Destroys every expired CVC.
    fn purge(&mut self, now_ms: i64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let ident = entry.remove();
            self.by_ident.remove(&ident);
        }
    }
}

impl MemoryBackend {
    /// An empty store holding at most `cap` CVCs.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            inner: Mutex::new(Table::default()),
        }
    }

    #[track_caller]
    fn lock(&self) -> Result<MutexGuard<'_, Table>> {
        self.inner
            .lock()
            .map_err(|_| ServiceError::internal("cvc store lock poisoned"))
    }

    /// How many CVCs are held (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |t| t.by_ident.len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CvcBackend for MemoryBackend {
    async fn put(&self, ident: &str, held: Held, now_ms: i64) -> Result<()> {
        let mut t = self.lock()?;
        t.remove(ident);
        t.purge(now_ms);
        while t.by_ident.len() >= self.cap {
            let Some((_, oldest)) = t.by_expiry.pop_first() else {
                break;
            };
            t.by_ident.remove(&oldest);
        }
        let seq = t.next;
        t.next = seq.wrapping_add(1);
        t.by_expiry.insert((held.expires_ms, seq), ident.to_owned());
        t.by_ident.insert(ident.to_owned(), (seq, held));
        Ok(())
    }

    async fn take(&self, ident: &str, now_ms: i64) -> Result<Option<Held>> {
        let mut t = self.lock()?;
        let held = t.remove(ident);
        t.purge(now_ms);
        Ok(held)
    }

    async fn expiries(&self, idents: &[String], now_ms: i64) -> Result<Vec<Option<i64>>> {
        let mut t = self.lock()?;
        t.purge(now_ms);
        Ok(idents
            .iter()
            .map(|i| t.by_ident.get(i).map(|(_, h)| h.expires_ms))
            .collect())
    }

    async fn remove(&self, ident: &str) -> Result<()> {
        self.lock()?.remove(ident);
        Ok(())
    }
}

/// The Redis backend, shared by every node that uses the same Redis.
pub struct RedisBackend {
    client: redis::Client,
    conn: OnceCell<redis::aio::ConnectionManager>,
    /// Keys the Redis key names: a digest of account, mode and card, so a name says
    /// nothing about whose card it is.
    names: Option<DataKey>,
}

/// A Redis failure, as the store's `Unavailable` (503; the detail is logged, not sent).
#[track_caller]
fn redis_down(e: &redis::RedisError) -> ServiceError {
    ServiceError::Store {
        source: StoreError::Unavailable(format!("redis: {:?}", e.kind())),
        at: Location::caller(),
    }
}

impl RedisBackend {
    /// A backend for this URL (`redis://127.0.0.1:6379`); connects on first use.
    pub fn new(url: &str, root: &RootKey) -> std::result::Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis URL: {:?}", e.kind()))?;
        let names = root
            .derive_subkey("cvc-names")
            .ok()
            .and_then(|k| DataKey::from_bytes(k.as_slice()).ok());
        Ok(Self {
            client,
            conn: OnceCell::new(),
            names,
        })
    }

    async fn conn(&self) -> Result<redis::aio::ConnectionManager> {
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
            .map_err(|e| redis_down(&e))
    }

    /// The Redis key of a held CVC.
    pub fn key_name(&self, ident: &str) -> Result<String> {
        let names = self
            .names
            .as_ref()
            .ok_or_else(|| ServiceError::internal("cvc name key unavailable"))?;
        Ok(format!(
            "strongroom:cvc:{}",
            hex::encode(names.fingerprint(ident.as_bytes()))
        ))
    }
}

impl CvcBackend for RedisBackend {
    async fn put(&self, ident: &str, held: Held, now_ms: i64) -> Result<()> {
        let ttl = held.expires_ms.saturating_sub(now_ms).max(1);
        let mut conn = self.conn().await?;
        redis::cmd("SET")
            .arg(self.key_name(ident)?)
            .arg(held.encode())
            .arg("PX")
            .arg(ttl)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_down(&e))
    }

    async fn take(&self, ident: &str, _now_ms: i64) -> Result<Option<Held>> {
        let mut conn = self.conn().await?;
        let raw: Option<Vec<u8>> = redis::cmd("GETDEL")
            .arg(self.key_name(ident)?)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_down(&e))?;
        Ok(raw.as_deref().and_then(Held::decode))
    }

    async fn expiries(&self, idents: &[String], _now_ms: i64) -> Result<Vec<Option<i64>>> {
        if idents.is_empty() {
            return Ok(Vec::new());
        }
        let names = idents
            .iter()
            .map(|i| self.key_name(i))
            .collect::<Result<Vec<_>>>()?;
        let mut conn = self.conn().await?;
        let raw: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&names)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_down(&e))?;
        Ok(raw
            .iter()
            .map(|r| r.as_deref().and_then(Held::decode).map(|h| h.expires_ms))
            .collect())
    }

    async fn remove(&self, ident: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        redis::cmd("DEL")
            .arg(self.key_name(ident)?)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_down(&e))
    }
}

/// The backend chosen by configuration.
pub enum Backend {
    /// In this process.
    Memory(MemoryBackend),
    /// Redis.
    Redis(Box<RedisBackend>),
}

impl CvcBackend for Backend {
    async fn put(&self, ident: &str, held: Held, now_ms: i64) -> Result<()> {
        match self {
            Self::Memory(m) => m.put(ident, held, now_ms).await,
            Self::Redis(r) => r.put(ident, held, now_ms).await,
        }
    }

    async fn take(&self, ident: &str, now_ms: i64) -> Result<Option<Held>> {
        match self {
            Self::Memory(m) => m.take(ident, now_ms).await,
            Self::Redis(r) => r.take(ident, now_ms).await,
        }
    }

    async fn expiries(&self, idents: &[String], now_ms: i64) -> Result<Vec<Option<i64>>> {
        match self {
            Self::Memory(m) => m.expiries(idents, now_ms).await,
            Self::Redis(r) => r.expiries(idents, now_ms).await,
        }
    }

    async fn remove(&self, ident: &str) -> Result<()> {
        match self {
            Self::Memory(m) => m.remove(ident).await,
            Self::Redis(r) => r.remove(ident).await,
        }
    }
}

/// The held CVCs (`state.cvcs()`).
pub struct Cvcs {
    /// Seals every held CVC; each seal under a one-use key derived from this one, so no
    /// nonce budget bounds how many it seals.
    seal: Option<SealingKey>,
    backend: Backend,
}

impl Cvcs {
    /// The in-process store, sealing under a key drawn now and kept only in memory.
    pub fn memory(cap: usize) -> Self {
        let mut bytes = strongroom_crypto::random::bytes::<32>().ok();
        let seal = bytes.as_ref().and_then(|b| SealingKey::from_bytes(b).ok());
        bytes.zeroize();
        Self {
            seal,
            backend: Backend::Memory(MemoryBackend::new(cap)),
        }
    }

    /// The Redis store at `url`, sealing under a key derived from the root key (every
    /// node derives the same one).
    pub fn redis(url: &str, root: &RootKey) -> std::result::Result<Self, String> {
        let backend = RedisBackend::new(url, root)?;
        let seal = root
            .derive_subkey("cvc")
            .ok()
            .and_then(|k| SealingKey::from_bytes(k.as_slice()).ok());
        Ok(Self {
            seal,
            backend: Backend::Redis(Box::new(backend)),
        })
    }

    /// The backend (for tests and metrics).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    #[track_caller]
    fn key(&self) -> Result<&SealingKey> {
        self.seal
            .as_ref()
            .ok_or_else(|| ServiceError::internal("cvc sealing key unavailable"))
    }

    /// Holds `cvc` for the card for [`TTL_MS`] from `now_ms`, replacing any CVC held for
    /// it. The caller has checked it with [`check`].
    pub async fn hold(
        &self,
        account_id: &str,
        mode: Mode,
        card_id: &str,
        cvc: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.hold_for(account_id, mode, card_id, cvc, now_ms, TTL_MS)
            .await
    }

    /// [`Cvcs::hold`] for `ttl_ms`, under any id of the account (a card's, or a
    /// translated PIN block's `pint_…`, whose value names its card): the same sealing,
    /// the same single use through [`Cvcs::take`].
    pub async fn hold_for(
        &self,
        account_id: &str,
        mode: Mode,
        card_id: &str,
        cvc: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<()> {
        let slot = Slot {
            account_id,
            mode,
            card_id,
        };
        let expires_ms = now_ms.saturating_add(ttl_ms);
        let sealed = self.key()?.seal(cvc.as_bytes(), &slot.aad(expires_ms))?;
        let held = Held { expires_ms, sealed };
        self.backend.put(&slot.ident(), held, now_ms).await
    }

    /// The card's CVC, removed in the same step, so a second call gets `None`; `None`
    /// too when none was held or it expired.
    pub async fn take(
        &self,
        account_id: &str,
        mode: Mode,
        card_id: &str,
        now_ms: i64,
    ) -> Result<Option<Zeroizing<String>>> {
        let slot = Slot {
            account_id,
            mode,
            card_id,
        };
        let Some(held) = self.backend.take(&slot.ident(), now_ms).await? else {
            return Ok(None);
        };
        if !held.live(now_ms) {
            return Ok(None);
        }
        let plain = self.key()?.open(&held.sealed, &slot.aad(held.expires_ms))?;
        let cvc = std::str::from_utf8(&plain)
            .map_err(|_| ServiceError::internal("held cvc is not text"))?;
        Ok(Some(Zeroizing::new(cvc.to_owned())))
    }

    /// Whether a CVC is held for the card now.
    pub async fn available(
        &self,
        account_id: &str,
        mode: Mode,
        card_id: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let held = self
            .available_many(account_id, mode, &[card_id], now_ms)
            .await?;
        Ok(held.first().copied().unwrap_or(false))
    }

    /// [`Cvcs::available`] for several cards of one account and mode, in one round trip.
    pub async fn available_many(
        &self,
        account_id: &str,
        mode: Mode,
        card_ids: &[&str],
        now_ms: i64,
    ) -> Result<Vec<bool>> {
        let idents: Vec<String> = card_ids
            .iter()
            .map(|card_id| {
                Slot {
                    account_id,
                    mode,
                    card_id,
                }
                .ident()
            })
            .collect();
        let expiries = match self.backend.expiries(&idents, now_ms).await {
            Ok(e) => e,
            // A card read must not fail for want of Redis: while it is unreachable no held
            // CVC can be used anyway (a relay naming one is refused), so none is shown.
            Err(e) => {
                tracing::warn!(error = %e, "cvc store unreachable: cards read as holding no CVC");
                return Ok(vec![false; card_ids.len()]);
            }
        };
        Ok(expiries
            .iter()
            .map(|e| e.is_some_and(|ms| now_ms < ms))
            .collect())
    }

    /// Destroys the card's CVC, if one is held (the card was deleted).
    pub async fn forget(&self, account_id: &str, mode: Mode, card_id: &str) -> Result<()> {
        let slot = Slot {
            account_id,
            mode,
            card_id,
        };
        self.backend.remove(&slot.ident()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCT: &str = "acct_0000019a2b3c4d5e6f7a8b9c0d1e2f30";
    const CARD: &str = "card_0000019a2b3c4d5e6f7a8b9c0d1e2f30";
    const OTHER: &str = "card_0000019a2b3c4d5e6f7a8b9c0d1e2f31";
    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn a_cvc_has_three_digits_or_four_on_amex() {
        assert!(check(Brand::Visa, "123").is_ok());
        assert!(check(Brand::Mastercard, "000").is_ok());
        assert!(check(Brand::Amex, "1234").is_ok());
        for (brand, bad) in [
            (Brand::Visa, "12"),
            (Brand::Visa, "1234"),
            (Brand::Visa, "12345"),
            (Brand::Visa, "12a"),
            (Brand::Visa, " 123"),
            (Brand::Visa, "１２３"),
            (Brand::Visa, ""),
            (Brand::Amex, "123"),
            (Brand::Amex, "12345"),
        ] {
            assert!(
                matches!(check(brand, bad), Err(ServiceError::CvcInvalid)),
                "{brand:?} {bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn take_is_single_use_and_bound_to_its_card() {
        let c = Cvcs::memory(MEMORY_CAP);
        c.hold(ACCT, Mode::Test, CARD, "737", T0).await.unwrap();
        assert!(c.available(ACCT, Mode::Test, CARD, T0).await.unwrap());
        // Another card, mode or account sees nothing, and takes nothing.
        assert!(!c.available(ACCT, Mode::Live, CARD, T0).await.unwrap());
        assert!(c.take(ACCT, Mode::Test, OTHER, T0).await.unwrap().is_none());
        assert!(c.take(ACCT, Mode::Live, CARD, T0).await.unwrap().is_none());
        let got = c.take(ACCT, Mode::Test, CARD, T0 + 1).await.unwrap();
        assert_eq!(got.as_deref().map(String::as_str), Some("737"));
        assert!(
            c.take(ACCT, Mode::Test, CARD, T0 + 2)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!c.available(ACCT, Mode::Test, CARD, T0 + 2).await.unwrap());
    }

    #[tokio::test]
    async fn a_cvc_expires_after_ten_minutes() {
        let c = Cvcs::memory(MEMORY_CAP);
        c.hold(ACCT, Mode::Test, CARD, "737", T0).await.unwrap();
        let last = T0 + TTL_MS - 1;
        assert_eq!(
            c.available_many(ACCT, Mode::Test, &[CARD, OTHER], last)
                .await
                .unwrap(),
            [true, false]
        );
        assert!(
            !c.available(ACCT, Mode::Test, CARD, T0 + TTL_MS)
                .await
                .unwrap()
        );
        assert!(
            c.take(ACCT, Mode::Test, CARD, T0 + TTL_MS)
                .await
                .unwrap()
                .is_none()
        );
        // Expired CVCs are destroyed, not only hidden.
        let Backend::Memory(m) = c.backend() else {
            unreachable!()
        };
        assert!(m.is_empty());
    }

    #[tokio::test]
    async fn holding_again_replaces_and_forget_destroys() {
        let c = Cvcs::memory(MEMORY_CAP);
        c.hold(ACCT, Mode::Test, CARD, "111", T0).await.unwrap();
        c.hold(ACCT, Mode::Test, CARD, "222", T0 + 5).await.unwrap();
        // The replacement runs its own ten minutes.
        assert!(
            c.available(ACCT, Mode::Test, CARD, T0 + TTL_MS + 1)
                .await
                .unwrap()
        );
        let got = c.take(ACCT, Mode::Test, CARD, T0 + 6).await.unwrap();
        assert_eq!(got.as_deref().map(String::as_str), Some("222"));
        c.hold(ACCT, Mode::Test, CARD, "333", T0).await.unwrap();
        c.forget(ACCT, Mode::Test, CARD).await.unwrap();
        assert!(c.take(ACCT, Mode::Test, CARD, T0).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_full_store_evicts_the_oldest() {
        let c = Cvcs::memory(2);
        let cards = [CARD, OTHER, "card_0000019a2b3c4d5e6f7a8b9c0d1e2f32"];
        for (i, card) in (0..).zip(cards) {
            c.hold(ACCT, Mode::Test, card, "123", T0 + i).await.unwrap();
        }
        assert_eq!(
            c.available_many(ACCT, Mode::Test, &cards, T0 + 3)
                .await
                .unwrap(),
            [false, true, true]
        );
    }

    #[tokio::test]
    async fn what_is_held_is_sealed_and_bound_to_card_and_expiry() {
        let c = Cvcs::memory(MEMORY_CAP);
        c.hold(ACCT, Mode::Test, CARD, "7373", T0).await.unwrap();
        let Backend::Memory(m) = c.backend() else {
            unreachable!()
        };
        let slot = Slot {
            account_id: ACCT,
            mode: Mode::Test,
            card_id: CARD,
        };
        let held = m.lock().unwrap().by_ident[&slot.ident()].1.clone();
        assert!(!held.sealed.windows(4).any(|w| w == b"7373"));
        assert_eq!(Held::decode(&held.encode()), Some(held.clone()));
        // Moved to another card, or given a later expiry, it does not open.
        let other = Slot {
            card_id: OTHER,
            ..slot
        };
        let key = c.key().unwrap();
        assert!(key.open(&held.sealed, &other.aad(held.expires_ms)).is_err());
        assert!(
            key.open(&held.sealed, &slot.aad(held.expires_ms + 1))
                .is_err()
        );
        // Another process (another key) cannot open it either.
        let restarted = Cvcs::memory(MEMORY_CAP);
        let key2 = restarted.key().unwrap();
        assert!(key2.open(&held.sealed, &slot.aad(held.expires_ms)).is_err());
    }
}
