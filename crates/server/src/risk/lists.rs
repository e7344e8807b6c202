//! The allow and block lists of each account and mode (docs/risk.md, "Lists"), as
//! assessments match against them: the live entries, read through a short cache. An
//! entry's end is checked against the clock at each match, whatever the cache holds.

use crate::cache::{Cache, CacheSync};
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::Mode;
use strongroom_risk::lists::{ListEntry, ListName, ListTarget, Lists, parse_network};
use strongroom_store::{ListEntryRecord, RiskListStore, Store, StoreResult};

/// Most accounts' lists cached.
const CACHE_MAX: usize = 10_000;

/// The in-memory form of a stored entry; `None` for one this build cannot read (it is
/// left out of matching, and said so).
pub fn entry_of(r: &ListEntryRecord) -> Option<ListEntry> {
    let list = match r.list.as_str() {
        "allow" => ListName::Allow,
        "block" => ListName::Block,
        _ => return None,
    };
    let target = match r.kind.as_str() {
        "card" => ListTarget::Card(r.value.clone()),
        "ip" => ListTarget::Ip(parse_network(&r.value)?),
        "email" => ListTarget::Email(r.value.clone()),
        "bin" => ListTarget::Bin(r.value.clone()),
        "device" => ListTarget::Device(r.value.clone()),
        _ => return None,
    };
    Some(ListEntry {
        list,
        target,
        expires_ms: r.expires_ms,
    })
}

/// The lists, through a cache (on PostgreSQL every node also drops it when any node's
/// change commits; a node forgets at once what it changed itself).
pub struct RiskLists {
    cache: Cache<(String, Mode), Arc<Lists>>,
}

impl RiskLists {
    /// Lists cached for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: Cache::new(ttl, CACHE_MAX),
        }
    }

    /// The live entries of the account in this mode.
    pub async fn get(
        &self,
        store: &Store,
        sync: &CacheSync,
        account_id: &str,
        mode: Mode,
        now_ms: i64,
    ) -> StoreResult<Arc<Lists>> {
        let key = (account_id.to_owned(), mode);
        self.cache
            .get_or_load(sync, &key, now_ms, || async {
                let rows = store.live_list_entries(account_id, mode, now_ms).await?;
                let entries: Vec<ListEntry> = rows.iter().filter_map(entry_of).collect();
                if entries.len() < rows.len() {
                    tracing::warn!(
                        unread = rows.len() - entries.len(),
                        "risk list entries this build cannot read were left out"
                    );
                }
                Ok(Arc::new(Lists::new(entries)))
            })
            .await
    }

    /// Forgets what is cached for an account (after a change through this node).
    pub fn forget(&self, sync: &CacheSync, account_id: &str, mode: Mode) {
        self.cache.forget(sync, &(account_id.to_owned(), mode));
    }
}
