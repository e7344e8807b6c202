//! The trained risk models in service (docs/risk.md, "Feedback and the model"), as
//! `strongroom risk promote` left them in the store: read through a short cache.

use crate::cache::{Cache, CacheSync};
use std::sync::Arc;
use std::time::Duration;
use strongroom_store::{RiskStore, Store, StoreResult};

/// The trained models in service (`strongroom risk promote`).
#[derive(Debug, Default)]
pub struct InService {
    /// The model whose points count.
    pub active: Option<strongroom_risk::Model>,
    /// The model scored and recorded, not counted.
    pub shadow: Option<strongroom_risk::Model>,
}

impl InService {
    /// From the stored rows; a row that no longer loads (another feature schema) is
    /// left out, and said so in the log.
    pub fn load(rows: &[strongroom_store::RiskModelRecord]) -> Self {
        let mut out = Self::default();
        for r in rows {
            match strongroom_risk::Model::from_json(&r.model) {
                Ok(m) if r.state == "active" => out.active = Some(m),
                Ok(m) if r.state == "shadow" => out.shadow = Some(m),
                Ok(_) => {}
                Err(e) => tracing::warn!(version = %r.version, error = %e, "risk model not loaded"),
            }
        }
        out
    }
}

/// The models in service, through a ten-second cache (on PostgreSQL every node also
/// drops it when any node's promotion commits).
pub struct RiskModels {
    cache: Cache<(), Arc<InService>>,
}

impl Default for RiskModels {
    fn default() -> Self {
        Self {
            cache: Cache::new(Duration::from_secs(10), 1),
        }
    }
}

impl RiskModels {
    /// The models in service now.
    pub async fn get(
        &self,
        store: &Store,
        sync: &CacheSync,
        now_ms: i64,
    ) -> StoreResult<Arc<InService>> {
        self.cache
            .get_or_load(sync, &(), now_ms, || async {
                Ok(Arc::new(InService::load(&store.risk_models().await?)))
            })
            .await
    }
}
