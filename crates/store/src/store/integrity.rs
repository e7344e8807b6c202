//! [`crate::integrity`]'s trait, implemented for [`Store`], and its writes on [`Writes`].

use crate::StoreResult;
use crate::integrity::*;
use crate::sql::Write;
use crate::store::{Store, Writes};

impl IntegrityStore for Store {
    async fn integrity_app(
        &self,
        account_id: &str,
        application_id: &str,
    ) -> StoreResult<Option<IntegrityAppRecord>> {
        integrity_app(&mut self.reader().await?, account_id, application_id).await
    }

    async fn integrity_apps(&self, account_id: &str) -> StoreResult<Vec<IntegrityAppRecord>> {
        integrity_apps(&mut self.reader().await?, account_id).await
    }
}

impl Writes<'_> {
    /// Registers an application; `Conflict` when the account already has it.
    pub async fn insert_integrity_app(self, app: &IntegrityAppRecord) -> StoreResult<()> {
        let op = Op::InsertApp(app.clone());
        self.write(Write::integrity(op)).await.map(drop)
    }

    /// Stores an application's new settings; `false` if it is gone.
    pub async fn update_integrity_app(self, app: &IntegrityAppRecord) -> StoreResult<bool> {
        self.write(Write::integrity(Op::UpdateApp(app.clone())))
            .await
    }

    /// Removes an application; `false` if it was not there.
    pub async fn delete_integrity_app(self, account_id: &str, id: &str) -> StoreResult<bool> {
        let op = Op::DeleteApp {
            account_id: account_id.to_owned(),
            id: id.to_owned(),
        };
        self.write(Write::integrity(op)).await
    }

    /// Stores a challenge's digest.
    pub async fn insert_integrity_challenge(
        self,
        challenge: &ChallengeRecord,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let op = Op::InsertChallenge {
            challenge: challenge.clone(),
            now_ms,
        };
        self.write(Write::integrity(op)).await
    }

    /// Takes the challenge (its digest, caller and application as given) if it is live:
    /// `false` if it is unknown, used, expired, or another caller's or application's.
    pub async fn consume_integrity_challenge(
        self,
        challenge: &ChallengeRecord,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let op = Op::ConsumeChallenge {
            challenge: challenge.clone(),
            now_ms,
        };
        self.write(Write::integrity(op)).await
    }

    /// Stores an attestation.
    pub async fn insert_attestation(self, attestation: &AttestationRecord) -> StoreResult<bool> {
        self.write(Write::integrity(Op::InsertAttestation(attestation.clone())))
            .await
    }

    /// Uses the attestation `id` of `subject` (and of `application_id`, when given):
    /// `false` when it is unknown, expired, another caller's, or used and not reusable.
    pub async fn use_attestation(
        self,
        id: &str,
        account_id: &str,
        subject: &str,
        application_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let op = Op::UseAttestation {
            id: id.to_owned(),
            account_id: account_id.to_owned(),
            subject: subject.to_owned(),
            application_id: application_id.map(str::to_owned),
            now_ms,
        };
        self.write(Write::integrity(op)).await
    }
}
