//! Figures for the metrics endpoint: data-key versions and re-wrap progress.

use crate::StoreResult;
use crate::exec::{Exec, RowGet};

const DATA_KEY_VERSIONS: &str = "SELECT purpose, state, COUNT(*) FROM data_keys \
     GROUP BY purpose, state ORDER BY purpose, state";
const REWRAP_PENDING: &str = "SELECT 'cards', CAST(COALESCE(SUM(c.cards), 0) AS BIGINT) \
     FROM card_key_counts c JOIN data_keys k \
     ON k.account_id = c.account_id AND k.purpose = 'cards' AND k.state = 'active' \
     WHERE c.key_version < k.version \
     UNION ALL SELECT 'fingerprint', CAST(COALESCE(SUM(c.cards), 0) AS BIGINT) \
     FROM card_key_counts c JOIN data_keys k \
     ON k.account_id = c.account_id AND k.purpose = 'fingerprint' AND k.state = 'active' \
     WHERE c.fp_version < k.version \
     UNION ALL SELECT 'pin', COUNT(*) FROM pins p JOIN data_keys k \
     ON k.account_id = p.account_id AND k.purpose = 'pin' AND k.state = 'active' \
     WHERE p.key_version < k.version";
const WEBHOOK_BACKLOG: &str =
    "SELECT COUNT(*), MIN(created_ms) FROM webhook_deliveries WHERE state = 'pending'";

/// Aggregate figures across accounts (no per-account detail).
#[allow(async_fn_in_trait)]
pub trait StatsStore {
    /// `(purpose, state, number of versions)`.
    async fn data_key_versions(&self) -> StoreResult<Vec<(String, String, i64)>>;
    /// `(purpose, records under a version older than the active one)`.
    async fn rewrap_pending(&self) -> StoreResult<Vec<(String, i64)>>;
    /// Webhook deliveries not yet acknowledged: how many, and the creation time (Unix ms)
    /// of the oldest.
    async fn webhook_backlog(&self) -> StoreResult<(i64, Option<i64>)>;
}

pub(crate) async fn backlog<C: Exec>(c: &mut C) -> StoreResult<(i64, Option<i64>)> {
    match c.opt(WEBHOOK_BACKLOG, &[]).await? {
        Some(r) => Ok((r.int(0)?, r.opt_int(1)?)),
        None => Ok((0, None)),
    }
}

pub(crate) async fn versions<C: Exec>(c: &mut C) -> StoreResult<Vec<(String, String, i64)>> {
    c.all(DATA_KEY_VERSIONS, &[])
        .await?
        .iter()
        .map(|r| Ok((r.text(0)?, r.text(1)?, r.int(2)?)))
        .collect()
}

pub(crate) async fn pending<C: Exec>(c: &mut C) -> StoreResult<Vec<(String, i64)>> {
    c.all(REWRAP_PENDING, &[])
        .await?
        .iter()
        .map(|r| Ok((r.text(0)?, r.int(1)?)))
        .collect()
}
