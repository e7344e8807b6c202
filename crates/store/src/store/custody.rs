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

impl crate::KeyImportStore for Store {
    async fn key_import(&self, id: &str) -> StoreResult<Option<crate::KeyImportRecord>> {
        crate::key_imports::get(&mut self.reader().await?, id).await
    }

    async fn imported_keys(
        &self,
        account_id: Option<&str>,
    ) -> StoreResult<Vec<crate::ImportedKeyRecord>> {
        crate::key_imports::keys(&mut self.reader().await?, account_id).await
    }

    async fn imported_key(&self, id: &str) -> StoreResult<Option<crate::ImportedKeyRecord>> {
        crate::key_imports::key(&mut self.reader().await?, id).await
    }
}

impl Writes<'_> {
    /// Begins an import ceremony.
    pub async fn create_key_import(self, record: crate::KeyImportRecord) -> StoreResult<()> {
        use crate::key_imports::Op;
        self.write(Write::key_import(Op::Create(record))).await?;
        Ok(())
    }

    /// Records a component that is not the last: `false` if the ceremony changed
    /// meanwhile (another component, or its end) and nothing was written.
    pub async fn key_import_component(
        self,
        id: &str,
        expect: Vec<String>,
        custodians: Vec<String>,
        partial: Vec<u8>,
    ) -> StoreResult<bool> {
        use crate::key_imports::Op;
        let op = Op::Component {
            id: id.to_owned(),
            expect,
            custodians,
            partial,
        };
        Ok(self.write(Write::key_import(op)).await? == 1)
    }

    /// A key that came whole (a TR-31 block): the finished ceremony and the key, in one
    /// transaction.
    pub async fn imported_key(
        self,
        import: crate::KeyImportRecord,
        key: crate::ImportedKeyRecord,
    ) -> StoreResult<()> {
        use crate::key_imports::Op;
        self.write(Write::key_import(Op::Imported { import, key }))
            .await?;
        Ok(())
    }

    /// The last component: ends the ceremony and stores `key`, in one transaction;
    /// `false` if the ceremony changed meanwhile.
    pub async fn complete_key_import(
        self,
        id: &str,
        expect: Vec<String>,
        custodians: Vec<String>,
        key: crate::ImportedKeyRecord,
    ) -> StoreResult<bool> {
        use crate::key_imports::Op;
        let op = Op::Complete {
            id: id.to_owned(),
            expect,
            custodians,
            key,
        };
        Ok(self.write(Write::key_import(op)).await? == 1)
    }
}
