//! The PIN transport keys, unwrapped and cached: built from the store, the root key, the
//! clock and two durations, and used by the PIN service through `AppState`.

use crate::service::{Result, ServiceError};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use strongroom_core::Clock;
use strongroom_crypto::RootKey;
use strongroom_crypto::jwe::TransportKey;
use strongroom_store::{AuditScope, PinStore, Store, TransportKeyRecord};

/// At most one store read a second for payloads naming a key this node does not hold.
const UNKNOWN_KID_RELOAD_INTERVAL_MS: i64 = 1000;

/// The unwrapped transport keys, cached; re-read after the keyring TTL or when a
/// payload names a key this node has not seen (a rotation on another node).
pub struct PinKeys {
    store: Store,
    root: Arc<RootKey>,
    clock: Arc<dyn Clock>,
    /// How long the loaded keys are trusted before they are re-read.
    ttl: Duration,
    /// How long a replaced key still decrypts after a rotation.
    grace: Duration,
    keys: RwLock<Option<Arc<Loaded>>>,
    unknown_kid: UnknownKidGate,
}

struct Loaded {
    at_ms: i64,
    keys: Vec<(TransportKeyRecord, Arc<TransportKey>)>,
}

/// When an unknown `kid` last made this node re-read the keys: anyone may send a payload
/// under a made-up kid, so such re-reads are rationed to one a second.
struct UnknownKidGate {
    last_reload_ms: AtomicI64,
}

impl Default for UnknownKidGate {
    fn default() -> Self {
        Self {
            last_reload_ms: AtomicI64::new(i64::MIN),
        }
    }
}

impl UnknownKidGate {
    /// Whether an unknown kid may re-read the keys now; claims the slot if so. The
    /// compare-exchange lets only one of several concurrent callers through.
    fn may_reload(&self, now_ms: i64) -> bool {
        let last = self.last_reload_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= UNKNOWN_KID_RELOAD_INTERVAL_MS
            && self
                .last_reload_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

pub(crate) fn transport_context(kid: &str) -> String {
    format!("strongroom/pin-transport/v1|{kid}")
}

fn usable(r: &TransportKeyRecord, now: i64) -> bool {
    r.retire_after_ms.is_none_or(|t| t > now)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PinKeys {
    pub(crate) fn new(
        store: Store,
        root: Arc<RootKey>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        grace: Duration,
    ) -> Self {
        Self {
            store,
            root,
            clock,
            ttl,
            grace,
            keys: RwLock::default(),
            unknown_kid: UnknownKidGate::default(),
        }
    }

    async fn load(&self) -> Result<Arc<Loaded>> {
        let records = self.store.pin_transport_keys().await?;
        let mut keys = Vec::with_capacity(records.len());
        for r in records {
            let der = self
                .root
                .unwrap_bytes(&r.wrapped, &transport_context(&r.kid))?;
            let k = TransportKey::from_pkcs8(&der)?;
            keys.push((r, Arc::new(k)));
        }
        let loaded = Arc::new(Loaded {
            at_ms: self.clock.now_ms(),
            keys,
        });
        if let Ok(mut slot) = self.keys.write() {
            *slot = Some(loaded.clone());
        }
        Ok(loaded)
    }

    async fn cached(&self) -> Result<Arc<Loaded>> {
        let ttl = millis(self.ttl);
        let hit = self
            .keys
            .read()
            .ok()
            .and_then(|s| s.clone())
            .filter(|l| self.clock.now_ms().saturating_sub(l.at_ms) < ttl);
        match hit {
            Some(l) => Ok(l),
            None => self.load().await,
        }
    }

    /// Makes a new transport key the current one; older keys decrypt for the grace
    /// period. Returns its kid and the key. The write carries `audit`, the scope of the
    /// request it is made for.
    pub async fn rotate(&self, audit: &AuditScope) -> Result<(String, Arc<TransportKey>)> {
        let (key, der) = TransportKey::generate()?;
        let now = self.clock.now_ms();
        let kid = format!(
            "ptk_{now:012x}{}",
            hex::encode(strongroom_crypto::random::bytes::<8>()?)
        );
        let wrapped = self.root.wrap_bytes(&der, &transport_context(&kid))?;
        let record = TransportKeyRecord {
            kid: kid.clone(),
            wrapped,
            created_ms: now,
            retire_after_ms: None,
        };
        self.store
            .audited(audit)
            .insert_pin_transport_key(&record, now.saturating_add(millis(self.grace)))
            .await?;
        self.load().await?;
        tracing::info!(kid = %kid, "PIN transport key rotated");
        Ok((kid, Arc::new(key)))
    }

    /// The current transport key and its kid, made on first use (that write carries
    /// `audit`).
    pub async fn current(&self, audit: &AuditScope) -> Result<(String, Arc<TransportKey>)> {
        let now = self.clock.now_ms();
        let loaded = self.cached().await?;
        match loaded
            .keys
            .iter()
            .rev()
            .find(|(r, _)| r.retire_after_ms.is_none())
            .or_else(|| loaded.keys.iter().rev().find(|(r, _)| usable(r, now)))
        {
            Some((r, k)) => Ok((r.kid.clone(), k.clone())),
            None => self.rotate(audit).await,
        }
    }

    /// The usable key named `kid`; `PIN_PAYLOAD_INVALID` if there is none.
    pub async fn key(&self, kid: &str) -> Result<Arc<TransportKey>> {
        let now = self.clock.now_ms();
        let find = |l: Arc<Loaded>| {
            l.keys
                .iter()
                .find(|(r, _)| r.kid == kid)
                .map(|(r, k)| (usable(r, now), k.clone()))
        };
        let found = match find(self.cached().await?) {
            Some(f) => Some(f),
            // Perhaps another node rotated; a key made there is found here within a
            // second at the latest (or at the keyring TTL, whichever comes first).
            None if self.unknown_kid.may_reload(now) => find(self.load().await?),
            None => None,
        };
        match found {
            Some((true, k)) => Ok(k),
            _ => Err(ServiceError::PinPayloadInvalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kid_reloads_at_most_once_a_second() {
        let s = UnknownKidGate::default();
        let t = 1_700_000_000_000;
        assert!(s.may_reload(t));
        assert!(!s.may_reload(t));
        assert!(!s.may_reload(t + 999));
        assert!(s.may_reload(t + 1000));
        assert!(!s.may_reload(t + 1500));
        assert!(s.may_reload(t + 2000));
    }
}
