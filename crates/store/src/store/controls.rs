//! [`crate::controls`]'s trait, implemented for [`Store`], and the control writes on [`Writes`].

use crate::sql::Write;
use crate::store::{Store, Writes};
use crate::{EventRecord, StoreResult};

use crate::controls::*;

impl Writes<'_> {
    async fn controls_done(self, op: Op) -> StoreResult<()> {
        self.write(Write::controls_done(op)).await
    }
}

impl ControlStore for Store {
    async fn account_controls(&self, account_id: &str) -> StoreResult<AccountControls> {
        account_controls(&mut self.reader().await?, account_id).await
    }

    async fn key_ip_allowlist(&self, key_id: &str) -> StoreResult<Vec<String>> {
        key_ip_allowlist(&mut self.reader().await?, key_id).await
    }

    async fn key_with_controls(&self, digest: &[u8]) -> StoreResult<Option<KeyWithControls>> {
        key_with_controls(&mut self.reader().await?, digest).await
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
}

impl Writes<'_> {
    /// Replaces the account's settings.
    pub async fn set_account_controls(self, controls: &AccountControls) -> StoreResult<()> {
        self.controls_done(Op::SetControls(controls.clone())).await
    }

    /// Changes some of the account's settings; returns them all after the change.
    pub async fn update_account_controls(
        self,
        update: &ControlsUpdate,
    ) -> StoreResult<AccountControls> {
        self.write(Write::controls_controls(Op::UpdateControls(update.clone())))
            .await
    }

    /// Sets the IP allowlist of one API key.
    pub async fn set_key_ip_allowlist(self, key_id: &str, cidrs: &[String]) -> StoreResult<()> {
        self.controls_done(Op::SetKeyAllowlist {
            key_id: key_id.to_owned(),
            cidrs: join_cidrs(cidrs),
        })
        .await
    }

    /// Registers a signing key, unless the account already has `max` unrevoked ones
    /// (then false, and nothing is written). The count and the insert share the writer's
    /// transaction, so concurrent registrations cannot pass the cap together.
    pub async fn insert_signing_key(
        self,
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

    /// Revokes a signing key (keeps an earlier revocation time); `None` if absent.
    pub async fn revoke_signing_key(
        self,
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

    /// Records a signature nonce; false if it was already used and has not expired.
    /// With `purge_expired`, every expired nonce is deleted on the way.
    pub async fn use_nonce(
        self,
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

    /// Claims an idempotency key, or returns the live record that holds it.
    pub async fn idempotency_begin(
        self,
        claim: &IdempotencyClaim,
    ) -> StoreResult<IdempotencyBegin> {
        self.write(Write::controls_idem(Op::IdemBegin(claim.clone())))
            .await
    }

    /// Stores the response of a claimed key.
    pub async fn idempotency_finish(
        self,
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

    /// Releases a claimed key without a response (the request failed in a way a retry
    /// should run again).
    pub async fn idempotency_abort(self, scope: &str, key: &str) -> StoreResult<()> {
        self.controls_done(Op::IdemAbort {
            scope: scope.to_owned(),
            key: key.to_owned(),
        })
        .await
    }
}
