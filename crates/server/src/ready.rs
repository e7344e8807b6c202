//! Readiness: the store answers, the keys are loaded, the audit log is writable.

use crate::error::{ApiResult, codes};
use std::sync::Arc;
use strongroom_core::Clock;
use strongroom_crypto::RootKey;
use strongroom_store::{AuditStore, Store, VaultStore};

/// How long a readiness answer is reused, in milliseconds of the server's clock.
pub const READY_TTL_MS: i64 = 1000;

/// The last readiness answer. The check goes through the single writer (an audit probe),
/// so it runs at most once per [`READY_TTL_MS`] however often `/readyz` is asked, and one
/// at a time: concurrent callers wait for the running check and share its answer.
pub struct ReadyCache {
    store: Store,
    root: Arc<RootKey>,
    clock: Arc<dyn Clock>,
    last: tokio::sync::Mutex<Option<(i64, ApiResult<()>)>>,
}

impl ReadyCache {
    pub(crate) fn new(store: Store, root: Arc<RootKey>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            root,
            clock,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the server is ready, checked at most once per [`READY_TTL_MS`].
    pub async fn check(&self) -> ApiResult<()> {
        let mut last = self.last.lock().await;
        let now = self.clock.now_ms();
        let fresh = last
            .as_ref()
            .filter(|(at, _)| (0..READY_TTL_MS).contains(&now.saturating_sub(*at)));
        match fresh {
            Some((_, r)) => r.clone(),
            None => {
                let r = self.check_now().await;
                *last = Some((now, r.clone()));
                r
            }
        }
    }

    async fn check_now(&self) -> ApiResult<()> {
        self.store
            .ping()
            .await
            .map_err(|_| codes::SERVICE_UNAVAILABLE)?;
        // Keys loaded: the root key can derive the audit signer (it is in memory).
        strongroom_crypto::audit::AuditSigner::derive(&self.root)
            .map_err(|_| codes::SERVICE_UNAVAILABLE)?;
        // A probe row, rolled back: fails if the audit table refuses writes.
        self.store
            .audit_writable()
            .await
            .map_err(|_| codes::AUDIT_UNAVAILABLE)?;
        Ok(())
    }
}
