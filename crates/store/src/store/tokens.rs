//! [`crate::tokens`]'s trait, implemented for [`Store`], and the token writes on [`Writes`].

use crate::sql::Write;
use crate::store::Writes;
use crate::{ApiKeyRecord, EventRecord, Store, StoreResult};

use crate::tokens::*;

impl TokenStore for Store {
    async fn jwt_keys(&self) -> StoreResult<Vec<JwtKeyRecord>> {
        jwt_keys(&mut self.reader().await?).await
    }

    async fn api_key_by_id(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        api_key_by_id(&mut self.reader().await?, id).await
    }
}

impl Writes<'_> {
    /// Inserts the next generation and, in the same transaction, erases the private
    /// halves of generations below `erase_below` (the current signer's). `Conflict` if
    /// the generation exists (a concurrent rotation won).
    pub async fn insert_jwt_key(self, key: &JwtKeyRecord, erase_below: i64) -> StoreResult<()> {
        self.write(Write::insert_jwt_key(key.clone(), erase_below))
            .await
    }

    /// Revokes every unrevoked key of the account at `now_ms` and writes `events`, in one
    /// transaction. `None` if there is no such account; else how many keys it revoked.
    pub async fn revoke_all_api_keys(
        self,
        account_id: &str,
        now_ms: i64,
        events: &[EventRecord],
    ) -> StoreResult<Option<i64>> {
        let n = self
            .write(Write::revoke_all_api_keys(
                account_id.to_owned(),
                now_ms,
                events.to_vec(),
            ))
            .await?;
        Ok((n >= 0).then_some(n))
    }
}
