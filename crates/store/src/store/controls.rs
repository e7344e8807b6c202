//! [`crate::controls`]'s trait, implemented for [`Store`] above the writes it sends.

use crate::sql::Write;
use crate::store::Store;
use crate::{EventRecord, StoreResult};

use crate::controls::*;

impl Store {
    async fn controls_done(&self, op: Op) -> StoreResult<()> {
        self.write(Write::controls_done(op)).await
    }
}

impl ControlStore for Store {
    async fn account_controls(&self, account_id: &str) -> StoreResult<AccountControls> {
        account_controls(&mut self.reader().await?, account_id).await
    }

    async fn set_account_controls(&self, controls: &AccountControls) -> StoreResult<()> {
        self.controls_done(Op::SetControls(controls.clone())).await
    }

    async fn update_account_controls(
        &self,
        update: &ControlsUpdate,
    ) -> StoreResult<AccountControls> {
        self.write(Write::controls_controls(Op::UpdateControls(update.clone())))
            .await
    }

    async fn key_ip_allowlist(&self, key_id: &str) -> StoreResult<Vec<String>> {
        key_ip_allowlist(&mut self.reader().await?, key_id).await
    }

    async fn key_with_controls(&self, digest: &[u8]) -> StoreResult<Option<KeyWithControls>> {
        key_with_controls(&mut self.reader().await?, digest).await
    }

    async fn set_key_ip_allowlist(&self, key_id: &str, cidrs: &[String]) -> StoreResult<()> {
        self.controls_done(Op::SetKeyAllowlist {
            key_id: key_id.to_owned(),
            cidrs: join_cidrs(cidrs),
        })
        .await
    }

    async fn insert_signing_key(
        &self,
        key: &SigningKeyRecord,
        max: Option<i64>,
        events: &[EventRecord],
    ) -> StoreResult<bool> {
        let op = Op::InsertSigningKey {
            key: key.clone(),
            max,
            events: events.to_vec(),
        };
        self.write(Write::controls_flag(op)).await
    }

    async fn signing_key(
        &self,
        account_id: &str,
        id: &str,
    ) -> StoreResult<Option<SigningKeyRecord>> {
        signing_key(&mut self.reader().await?, account_id, id).await
    }

    async fn list_signing_keys(
        &self,
        account_id: &str,
        starting_after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<SigningKeyRecord>> {
        list_signing_keys(&mut self.reader().await?, account_id, starting_after, limit).await
    }

    async fn revoke_signing_key(
        &self,
        account_id: &str,
        id: &str,
        now_ms: i64,
        events: &[EventRecord],
    ) -> StoreResult<Option<SigningKeyRecord>> {
        let op = Op::RevokeSigningKey {
            account_id: account_id.to_owned(),
            id: id.to_owned(),
            now_ms,
            events: events.to_vec(),
        };
        self.write(Write::controls_signing_key(op)).await
    }

    async fn use_nonce(
        &self,
        key_id: &str,
        nonce: &str,
        now_ms: i64,
        expires_ms: i64,
        purge_expired: bool,
    ) -> StoreResult<bool> {
        let op = Op::UseNonce {
            key_id: key_id.to_owned(),
            nonce: nonce.to_owned(),
            now_ms,
            expires_ms,
            purge: purge_expired,
        };
        self.write(Write::controls_flag(op)).await
    }

    async fn idempotency_begin(&self, claim: &IdempotencyClaim) -> StoreResult<IdempotencyBegin> {
        self.write(Write::controls_idem(Op::IdemBegin(claim.clone())))
            .await
    }

    async fn idempotency_finish(
        &self,
        scope: &str,
        key: &str,
        status: i64,
        body: &[u8],
    ) -> StoreResult<()> {
        self.controls_done(Op::IdemFinish {
            scope: scope.to_owned(),
            key: key.to_owned(),
            status,
            body: body.to_vec(),
        })
        .await
    }

    async fn idempotency_abort(&self, scope: &str, key: &str) -> StoreResult<()> {
        self.controls_done(Op::IdemAbort {
            scope: scope.to_owned(),
            key: key.to_owned(),
        })
        .await
    }
}
