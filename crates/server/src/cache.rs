//! In-memory caches of rows that change rarely and are read on every request (API keys,
//! account controls, key allowlists), kept honest across nodes.
//!
//! Every entry carries the generation of [`CacheSync`] it was read under, and is used
//! only while that generation is current. On PostgreSQL a committed change to a cached
//! table, by any node, is heard through `LISTEN` and moves the generation on, so every
//! node drops what it cached (coarse, but such changes are rare). While the listening
//! connection is down the caches are bypassed, and nothing is trusted until it listens
//! again. With SQLite one node owns the file: the generation never moves, and a node
//! forgets what it changes itself.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The generation every cached entry must match. The low bit set means "not listening":
/// nothing may be cached or used.
#[derive(Debug)]
pub struct CacheSync {
    epoch: AtomicU64,
}

impl CacheSync {
    /// Caches usable from the start.
    #[cfg(test)]
    fn live() -> Self {
        Self {
            epoch: AtomicU64::new(0),
        }
    }

    /// Caches bypassed until [`CacheSync::set_live`].
    pub(crate) fn offline() -> Self {
        Self {
            epoch: AtomicU64::new(1),
        }
    }

    /// The current generation, or `None` while caches must be bypassed.
    pub fn current(&self) -> Option<u64> {
        let e = self.epoch.load(Ordering::Acquire);
        (e & 1 == 0).then_some(e)
    }

    /// Something cached may have changed: every entry cached so far is stale.
    pub(crate) fn invalidate(&self) {
        self.epoch.fetch_add(2, Ordering::AcqRel);
    }

    /// Listening (`true`) or not; either way, every entry cached so far is stale.
    pub(crate) fn set_live(&self, live: bool) {
        let flag = u64::from(!live);
        // The closure always returns Some, so the update cannot fail.
        let _ = self
            .epoch
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                Some((e.wrapping_add(2) & !1) | flag)
            });
    }
}

struct Entry<V> {
    at_ms: i64,
    epoch: u64,
    value: V,
}

/// A bounded map with a time-to-live whose entries also lapse when the [`CacheSync`]
/// generation moves on. A zero TTL disables it.
pub(crate) struct Cache<K, V> {
    ttl_ms: i64,
    max: usize,
    map: RwLock<HashMap<K, Entry<V>>>,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            max,
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The generation to hand to [`Cache::put`], taken *before* reading the store, so
    /// that a change heard while the read ran keeps its result out. `None`: do not cache.
    pub(crate) fn epoch(&self, sync: &CacheSync) -> Option<u64> {
        if self.ttl_ms == 0 {
            return None;
        }
        sync.current()
    }

    pub(crate) fn get<Q>(&self, sync: &CacheSync, k: &Q, now_ms: i64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let epoch = self.epoch(sync)?;
        let map = self.map.read().ok()?;
        let e = map.get(k)?;
        (e.epoch == epoch && now_ms.saturating_sub(e.at_ms) < self.ttl_ms).then(|| e.value.clone())
    }

    /// The value cached for `k`, or else the one `load` reads, cached under the
    /// generation taken before the read (see [`Cache::epoch`]).
    /// The key is owned only on a miss.
    pub(crate) async fn get_or_load<Q, E, F, Fut>(
        &self,
        sync: &CacheSync,
        k: &Q,
        now_ms: i64,
        load: F,
    ) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(sync, k, now_ms) {
            return Ok(v);
        }
        let epoch = self.epoch(sync);
        let v = load().await?;
        self.put(sync, k.to_owned(), v.clone(), now_ms, epoch);
        Ok(v)
    }

    /// Caches `value` if the generation is still `epoch`.
    pub(crate) fn put(&self, sync: &CacheSync, k: K, value: V, now_ms: i64, epoch: Option<u64>) {
        let Some(epoch) = epoch else { return };
        if sync.current() != Some(epoch) {
            return;
        }
        if let Ok(mut map) = self.map.write() {
            if map.len() >= self.max {
                // Crude but bounded: start over rather than track recency on the hot path.
                map.clear();
            }
            map.insert(
                k,
                Entry {
                    at_ms: now_ms,
                    epoch,
                    value,
                },
            );
        }
    }

    /// Forgets `k` after a change made through this node. The generation moves on
    /// too: a fill that read the store before the change committed (its generation
    /// taken earlier) must not put the old value back, which deleting the entry alone
    /// cannot prevent. Every cache of shared rows lapses with it; such changes are rare.
    pub(crate) fn forget<Q>(&self, sync: &CacheSync, k: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        sync.invalidate();
        if let Ok(mut map) = self.map.write() {
            map.remove(k);
        }
    }

    /// Forgets everything, and moves the generation on (see [`Cache::forget`]).
    pub(crate) fn clear(&self, sync: &CacheSync) {
        sync.invalidate();
        if let Ok(mut map) = self.map.write() {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn entries_lapse_with_the_ttl_and_the_generation() {
        let sync = CacheSync::live();
        let c: Cache<String, u32> = Cache::new(TTL, 10);
        let e = c.epoch(&sync);
        c.put(&sync, "a".into(), 1, 1_000, e);
        assert_eq!(c.get(&sync, "a", 1_000), Some(1));
        assert_eq!(c.get(&sync, "a", 61_000), None, "older than the TTL");
        sync.invalidate();
        assert_eq!(c.get(&sync, "a", 1_000), None, "a change was heard");
    }

    #[test]
    fn a_read_that_overlapped_a_change_is_not_cached() {
        let sync = CacheSync::live();
        let c: Cache<String, u32> = Cache::new(TTL, 10);
        let e = c.epoch(&sync); // the read starts …
        sync.invalidate(); // … a change commits and is heard …
        c.put(&sync, "a".into(), 1, 0, e); // … the (maybe stale) result comes back.
        assert_eq!(c.get(&sync, "a", 0), None);
        let e = c.epoch(&sync);
        c.put(&sync, "a".into(), 2, 0, e);
        assert_eq!(c.get(&sync, "a", 0), Some(2));
    }

    #[test]
    fn a_fill_that_overlapped_a_local_change_is_not_cached() {
        // One node on SQLite: the generation only moves when this node forgets.
        let sync = CacheSync::live();
        let c: Cache<String, u32> = Cache::new(TTL, 10);
        let e = c.epoch(&sync); // a fill starts and reads the old value …
        c.forget(&sync, "a"); // … the change commits here and forgets the entry …
        c.put(&sync, "a".into(), 1, 0, e); // … then the fill returns.
        assert_eq!(c.get(&sync, "a", 0), None, "the old value came back");
        let e = c.epoch(&sync);
        c.put(&sync, "b".into(), 2, 0, e);
        c.clear(&sync);
        c.put(&sync, "b".into(), 2, 0, e);
        assert_eq!(c.get(&sync, "b", 0), None, "the old value came back");
    }

    #[test]
    fn nothing_is_cached_or_used_while_not_listening() {
        let sync = CacheSync::offline();
        let c: Cache<String, u32> = Cache::new(TTL, 10);
        assert_eq!(c.epoch(&sync), None);
        sync.set_live(true);
        let e = c.epoch(&sync);
        c.put(&sync, "a".into(), 1, 0, e);
        assert_eq!(c.get(&sync, "a", 0), Some(1));
        sync.set_live(false);
        assert_eq!(c.get(&sync, "a", 0), None);
        assert_eq!(c.epoch(&sync), None);
        sync.set_live(true);
        assert_eq!(
            c.get(&sync, "a", 0),
            None,
            "what was cached before the outage is stale"
        );
    }

    #[test]
    fn zero_ttl_disables_and_size_is_bounded() {
        let sync = CacheSync::live();
        let off: Cache<String, u32> = Cache::new(Duration::ZERO, 10);
        off.put(&sync, "a".into(), 1, 0, Some(0));
        assert_eq!(off.get(&sync, "a", 0), None);
        let c: Cache<u32, u32> = Cache::new(TTL, 2);
        for k in 0..3 {
            c.put(&sync, k, k, 0, c.epoch(&sync));
        }
        assert_eq!(c.get(&sync, &2, 0), Some(2));
        assert_eq!(c.get(&sync, &0, 0), None, "cleared when full");
    }
}
