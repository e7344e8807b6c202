//! The risk rules in force for each account and mode (docs/risk.md, "Rules"): the last
//! set the account put, or the built-in set, compiled once and read through a short cache.

use crate::cache::{Cache, CacheSync};
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::Mode;
use strongroom_risk::ruleset::{self, RuleSet, RuleSetSpec};
use strongroom_store::{RiskStore, RuleSetRecord, Store, StoreResult};

/// Most accounts' rules cached.
const CACHE_MAX: usize = 10_000;

/// A rule set in force.
#[derive(Debug)]
pub struct InForce {
    /// `builtin-1`, or `v<n>` for the account's n-th set.
    pub version: String,
    /// The account's version number (0 for the built-in set).
    pub number: i64,
    /// The key that put it (`None` for the built-in set).
    pub created_by: Option<String>,
    /// When it was put (0 for the built-in set).
    pub created_ms: i64,
    /// The compiled set.
    pub set: RuleSet,
}

impl InForce {
    /// The built-in set.
    pub fn builtin() -> Self {
        Self {
            version: ruleset::BUILTIN_VERSION.to_owned(),
            number: 0,
            created_by: None,
            created_ms: 0,
            // The built-in set is checked by the risk crate's tests; an empty set is the
            // only fallback that cannot fail.
            set: RuleSet::compile(ruleset::builtin())
                .or_else(|_| {
                    RuleSet::compile(RuleSetSpec {
                        rules: Vec::new(),
                        review_at: 50,
                        block_at: 80,
                    })
                })
                .unwrap_or_else(|_| unreachable_set()),
        }
    }

    /// A stored set, compiled; `None` if it no longer compiles (a later build narrowed
    /// the language): the caller says so and falls back.
    pub fn load(r: &RuleSetRecord) -> Option<Self> {
        let spec: RuleSetSpec = serde_json::from_str(&r.rules).ok()?;
        Some(Self {
            version: version_name(r.version),
            number: r.version,
            created_by: Some(r.created_by.clone()),
            created_ms: r.created_ms,
            set: RuleSet::compile(spec).ok()?,
        })
    }
}

#[allow(clippy::panic, reason = "an empty rule set always compiles")]
fn unreachable_set() -> RuleSet {
    panic!("an empty rule set did not compile")
}

/// The name of an account's n-th rule set.
pub fn version_name(n: i64) -> String {
    format!("v{n}")
}

/// The rules in force, through a cache (on PostgreSQL every node also drops it when any
/// node's put commits; a node forgets at once what it put itself).
pub struct RiskRules {
    cache: Cache<(String, Mode), Arc<InForce>>,
    builtin: Arc<InForce>,
}

impl RiskRules {
    /// Rules cached for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: Cache::new(ttl, CACHE_MAX),
            builtin: Arc::new(InForce::builtin()),
        }
    }

    /// The built-in set.
    pub fn builtin(&self) -> Arc<InForce> {
        self.builtin.clone()
    }

    /// The set in force for the account in this mode.
    pub async fn get(
        &self,
        store: &Store,
        sync: &CacheSync,
        account_id: &str,
        mode: Mode,
        now_ms: i64,
    ) -> StoreResult<Arc<InForce>> {
        let key = (account_id.to_owned(), mode);
        self.cache
            .get_or_load(sync, &key, now_ms, || async {
                let rows = store.rule_sets(account_id, mode, None, 1).await?;
                Ok(match rows.first() {
                    None => self.builtin.clone(),
                    Some(r) => match InForce::load(r) {
                        Some(f) => Arc::new(f),
                        None => {
                            tracing::warn!(
                                version = r.version,
                                "stored risk rules no longer compile; using the built-in set"
                            );
                            self.builtin.clone()
                        }
                    },
                })
            })
            .await
    }

    /// Forgets what is cached for an account (after a put through this node).
    pub fn forget(&self, sync: &CacheSync, account_id: &str, mode: Mode) {
        self.cache.forget(sync, &(account_id.to_owned(), mode));
    }
}
