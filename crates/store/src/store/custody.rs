//! [`crate::custody`]'s trait, implemented for [`Store`], and its writes on [`Writes`].

use crate::StoreResult;
use crate::custody::*;
use crate::sql::Write;
use crate::store::{Store, Writes};

impl CustodyStore for Store {
    async fn root_key(&self) -> StoreResult<Option<RootKeyRecord>> {
        current(&mut self.reader().await?).await
    }

    async fn pending_root_key(&self) -> StoreResult<Option<RootKeyRecord>> {
        pending(&mut self.reader().await?).await
    }

    async fn wrapped_keys(&self, q: WrappedQuery<'_>) -> StoreResult<Vec<WrappedKey>> {
        wrapped_keys(&mut self.reader().await?, q).await
    }
}

impl Writes<'_> {
    /// Records the key-age `notice` (`due_30`, `due_7`, `expired`) of `key_ref` with its
    /// `events`, unless it was recorded before: whether this was the first time.
    pub async fn key_notice(
        self,
        key_ref: &str,
        notice: &str,
        now_ms: i64,
        events: Vec<crate::EventRecord>,
    ) -> StoreResult<bool> {
        let op = Op::Notice {
            key_ref: key_ref.to_owned(),
            notice: notice.to_owned(),
            now_ms,
            events,
        };
        self.write(Write::custody(op)).await
    }

    /// Records the vault's first root key: `false` (nothing written) when it has one.
    pub async fn init_root_key(self, record: RootKeyRecord) -> StoreResult<bool> {
        self.write(Write::custody(Op::Init(record))).await
    }

    /// Replaces the shares of the root key in force, generation `new.generation`, whose
    /// share digests must still be `old`: `false` (nothing written) otherwise.
    pub async fn rekey_root_key(
        self,
        new: RootKeyRecord,
        old: Vec<[u8; DIGEST_LEN]>,
    ) -> StoreResult<bool> {
        self.write(Write::custody(Op::Rekey { new, old })).await
    }

    /// Records the pending generation of a root rotation: `false` (nothing written)
    /// when another rotation runs or `record.generation` is not the next one.
    pub async fn begin_root_rotation(self, record: RootKeyRecord) -> StoreResult<bool> {
        self.write(Write::custody(Op::BeginRotation(record))).await
    }

    /// Moves a page of wrapped values of `kind` under the next root key, in one
    /// transaction: how many were still as read, and so written.
    pub async fn rewrap_under_root(
        self,
        kind: WrappedKind,
        updates: Vec<(WrappedKey, Vec<u8>)>,
    ) -> StoreResult<u64> {
        self.write(Write::custody_count(Op::Rewrap { kind, updates }))
            .await
    }

    /// Puts the pending `generation` in force and retires the generations before it:
    /// `false` when it was not pending.
    pub async fn finish_root_rotation(self, generation: i64, now_ms: i64) -> StoreResult<bool> {
        self.write(Write::custody(Op::FinishRotation { generation, now_ms }))
            .await
    }
}
