//! [`crate::custody`]'s trait, implemented for [`Store`], and its writes on [`Writes`].

use crate::StoreResult;
use crate::custody::*;
use crate::sql::Write;
use crate::store::{Store, Writes};

impl CustodyStore for Store {
    async fn root_key(&self) -> StoreResult<Option<RootKeyRecord>> {
        current(&mut self.reader().await?).await
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
}
