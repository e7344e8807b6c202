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
