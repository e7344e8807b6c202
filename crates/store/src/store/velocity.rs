//! [`crate::velocity`]'s trait, implemented for [`Store`], and its write on [`Writes`].

use crate::StoreResult;
use crate::sql::Write;
use crate::store::{Store, Writes};
use crate::velocity::*;

impl VelocitySnapshotStore for Store {
    async fn velocity_snapshot(&self) -> StoreResult<Vec<KeptRow>> {
        all(&mut self.reader().await?).await
    }
}

impl Writes<'_> {
    /// Replaces the kept velocity trails with `rows` (empty: clears them).
    pub async fn keep_velocity(self, rows: Vec<KeptRow>) -> StoreResult<()> {
        self.write(Write::velocity(Op(rows))).await
    }
}
