//! [`crate::suspensions`]'s trait, implemented for [`Store`], and its writes on
//! [`Writes`].

use crate::sql::Write;
use crate::store::{Store, Writes};
use crate::suspensions::*;
use crate::{EventRecord, StoreResult};
use strongroom_core::Mode;

impl SuspensionStore for Store {
    async fn suspension(
        &self,
        account_id: &str,
        id: &str,
    ) -> StoreResult<Option<SuspensionRecord>> {
        suspension(&mut self.reader().await?, account_id, id).await
    }

    async fn suspensions(
        &self,
        account_id: &str,
        mode: Mode,
        starting_after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<SuspensionRecord>> {
        suspensions(
            &mut self.reader().await?,
            account_id,
            mode,
            starting_after,
            limit,
        )
        .await
    }

    async fn active_suspensions(
        &self,
        account_id: &str,
        now_ms: i64,
    ) -> StoreResult<Vec<SuspensionRecord>> {
        active(&mut self.reader().await?, account_id, now_ms).await
    }

    async fn ended_suspensions(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<SuspensionRecord>> {
        ended(&mut self.reader().await?, now_ms, limit).await
    }
}

impl Writes<'_> {
    /// Stores a new suspension with its events.
    pub async fn insert_suspension(
        self,
        record: &SuspensionRecord,
        events: &[EventRecord],
    ) -> StoreResult<()> {
        let op = Op::Insert {
            record: record.clone(),
            events: events.to_vec(),
        };
        self.write(Write::suspension(op)).await.map(drop)
    }

    /// Lifts the account's suspension `id` unless it is lifted already: the suspension
    /// as lifted, its events written; `None` (nothing written) when there was none to
    /// lift.
    pub async fn lift_suspension(
        self,
        account_id: &str,
        id: &str,
        now_ms: i64,
        by: &str,
        events: &[EventRecord],
    ) -> StoreResult<Option<SuspensionRecord>> {
        let op = Op::Lift {
            account_id: account_id.to_owned(),
            id: id.to_owned(),
            now_ms,
            by: by.to_owned(),
            events: events.to_vec(),
        };
        self.write(Write::suspension(op)).await
    }
}
