//! [`crate::stats`]'s trait, implemented for [`Store`] above the writes it sends.

use crate::StoreResult;
use crate::store::Store;

use crate::stats::*;

impl StatsStore for Store {
    async fn data_key_versions(&self) -> StoreResult<Vec<(String, String, i64)>> {
        versions(&mut self.reader().await?).await
    }

    async fn rewrap_pending(&self) -> StoreResult<Vec<(String, i64)>> {
        pending(&mut self.reader().await?).await
    }

    async fn webhook_backlog(&self) -> StoreResult<(i64, Option<i64>)> {
        backlog(&mut self.reader().await?).await
    }
}
