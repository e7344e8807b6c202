//! [`crate::risk_lists`]'s trait, implemented for [`Store`], and its writes on
//! [`Writes`].

use crate::StoreResult;
use crate::risk_lists::*;
use crate::sql::Write;
use crate::store::{Store, Writes};
use strongroom_core::Mode;

impl RiskListStore for Store {
    async fn list_entry(&self, account_id: &str, id: &str) -> StoreResult<Option<ListEntryRecord>> {
        entry(&mut self.reader().await?, account_id, id).await
    }

    async fn list_entries(
        &self,
        account_id: &str,
        mode: Mode,
        list: &str,
        starting_after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ListEntryRecord>> {
        let mut c = self.reader().await?;
        page(&mut c, account_id, mode, list, starting_after, limit).await
    }

    async fn live_list_entries(
        &self,
        account_id: &str,
        mode: Mode,
        now_ms: i64,
    ) -> StoreResult<Vec<ListEntryRecord>> {
        live(&mut self.reader().await?, account_id, mode, now_ms).await
    }
}

impl Writes<'_> {
    /// Stores a new list entry unless its list holds the same subject live or is full.
    pub async fn insert_list_entry(self, record: &ListEntryRecord) -> StoreResult<Reply> {
        let op = Op::Insert {
            record: record.clone(),
        };
        self.write(Write::risk_list(op)).await
    }

    /// Deletes the account's list entry `id` unless it is deleted already: the entry as
    /// deleted, or `None` (nothing written).
    pub async fn delete_list_entry(
        self,
        account_id: &str,
        id: &str,
        now_ms: i64,
        by: &str,
    ) -> StoreResult<Option<ListEntryRecord>> {
        let op = Op::Delete {
            account_id: account_id.to_owned(),
            id: id.to_owned(),
            now_ms,
            by: by.to_owned(),
        };
        match self.write(Write::risk_list(op)).await? {
            Reply::Deleted(r) => Ok(r.map(|b| *b)),
            _ => Ok(None),
        }
    }
}
