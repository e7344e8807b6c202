//! [`crate::audit`]'s trait, implemented for [`Store`] above the writes it sends.

use crate::StoreResult;
use crate::sql::Write;
use crate::store::Store;

use crate::audit::*;
use crate::sql::AuditOp as Op;

// The audit writes carry no scope: they are the records themselves.
impl AuditStore for Store {
    async fn append_audit(&self, records: Vec<AuditRecord>, hash: HashFn) -> StoreResult<i64> {
        self.write(None, Write::audit_head(Op::Append { records, hash }))
            .await
    }

    async fn audit_head(&self) -> StoreResult<(i64, Vec<u8>)> {
        head(&mut self.audit_reader().await?).await
    }

    async fn audit_range(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<AuditRecord>> {
        range(&mut self.audit_reader().await?, after_seq, limit).await
    }

    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        query(&mut self.audit_reader().await?, q).await
    }

    async fn insert_checkpoint(&self, cp: &AuditCheckpoint) -> StoreResult<bool> {
        self.write(None, Write::audit_stored(Op::Checkpoint(cp.clone())))
            .await
    }

    async fn checkpoint_count(&self) -> StoreResult<i64> {
        checkpoint_count(&mut self.audit_reader().await?).await
    }

    async fn checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>> {
        checkpoints(&mut self.audit_reader().await?).await
    }

    async fn latest_checkpoint(&self) -> StoreResult<Option<AuditCheckpoint>> {
        latest_checkpoint(&mut self.audit_reader().await?).await
    }

    async fn audit_writable(&self) -> StoreResult<()> {
        self.write(None, Write::audit_stored(Op::Probe))
            .await
            .map(drop)
    }
}
