//! [`crate::webhooks`]'s trait, implemented for [`Store`], and the webhook writes on [`Writes`].

use crate::sql::Write;
use crate::store::{Store, Writes};
use crate::{EventRecord, Mode, StoreResult};

use crate::webhooks::*;

impl Writes<'_> {
    async fn webhook_flag(self, op: Op) -> StoreResult<bool> {
        self.write(Write::webhook_flag(op)).await
    }

    async fn webhook_done(self, op: Op) -> StoreResult<()> {
        self.write(Write::webhook_done(op)).await
    }

    async fn webhook_count(self, op: Op) -> StoreResult<u64> {
        self.write(Write::webhook_count(op)).await
    }
}

impl WebhookStore for Store {
    async fn get_endpoint(
        &self,
        account_id: &str,
        id: &str,
    ) -> StoreResult<Option<WebhookEndpointRecord>> {
        get_endpoint(&mut self.reader().await?, account_id, id).await
    }

    async fn otp_endpoint(
        &self,
        account_id: &str,
        mode: Mode,
    ) -> StoreResult<Option<WebhookEndpointRecord>> {
        otp_endpoint(&mut self.reader().await?, account_id, mode).await
    }

    async fn endpoint_by_id(&self, id: &str) -> StoreResult<Option<WebhookEndpointRecord>> {
        endpoint_by_id(&mut self.reader().await?, id).await
    }

    async fn list_endpoints(
        &self,
        account_id: &str,
        mode: Mode,
        starting_after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookEndpointRecord>> {
        list_endpoints(
            &mut self.reader().await?,
            account_id,
            mode,
            starting_after,
            limit,
        )
        .await
    }

    async fn endpoint_attempts(
        &self,
        endpoint_id: &str,
        after: Option<(&str, i64)>,
        limit: i64,
    ) -> StoreResult<Vec<AttemptRecord>> {
        endpoint_attempts(&mut self.reader().await?, endpoint_id, after, limit).await
    }

    async fn event_deliveries(
        &self,
        account_id: &str,
        event_id: &str,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        event_deliveries(&mut self.reader().await?, event_id, account_id).await
    }
}

impl Writes<'_> {
    /// Stores a new endpoint and its event types, unless `max` is given and the account
    /// already has that many API-managed endpoints in the endpoint's mode (then false,
    /// and nothing is written). The count and the insert share the writer's transaction,
    /// so concurrent creations cannot pass the cap together.
    pub async fn insert_endpoint(
        self,
        ep: &WebhookEndpointRecord,
        max: Option<i64>,
    ) -> StoreResult<bool> {
        self.webhook_flag(Op::InsertEndpoint(ep.clone(), max)).await
    }

    /// Updates url and description, and the event types if `types`. False if absent.
    pub async fn update_endpoint(
        self,
        ep: &WebhookEndpointRecord,
        types: bool,
    ) -> StoreResult<bool> {
        self.webhook_flag(Op::UpdateEndpoint(ep.clone(), types))
            .await
    }

    /// Deletes an endpoint with its deliveries. False if absent.
    pub async fn delete_endpoint(self, account_id: &str, id: &str) -> StoreResult<bool> {
        self.webhook_flag(Op::DeleteEndpoint {
            account_id: account_id.to_owned(),
            id: id.to_owned(),
        })
        .await
    }

    /// Disables (`Some(time)`, only if enabled; writes `events` then) or enables (`None`).
    pub async fn set_endpoint_disabled(
        self,
        account_id: &str,
        id: &str,
        disabled_ms: Option<i64>,
        reason: Option<&str>,
        events: &[EventRecord],
    ) -> StoreResult<bool> {
        self.webhook_flag(Op::SetDisabled {
            account_id: account_id.to_owned(),
            id: id.to_owned(),
            disabled_ms,
            reason: reason.map(str::to_owned),
            events: events.to_vec(),
        })
        .await
    }

    /// Replaces the secret fields if the current version is still `expect_version`.
    pub async fn rotate_endpoint_secret(
        self,
        ep: &WebhookEndpointRecord,
        expect_version: i64,
    ) -> StoreResult<bool> {
        self.webhook_flag(Op::Rotate {
            endpoint: ep.clone(),
            expect_version,
        })
        .await
    }

    /// Claims up to `limit` due deliveries until `until_ms`.
    pub async fn claim_deliveries(
        self,
        now_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let op = Op::Claim {
            now_ms,
            until_ms,
            limit,
            skip_locked: matches!(self.store, Store::Postgres(_)),
        };
        self.write(Write::webhook_deliveries(op)).await
    }

    /// Records an attempt and its consequences in one transaction.
    pub async fn record_attempt(self, rec: &RecordAttempt) -> StoreResult<()> {
        self.webhook_done(Op::Record(rec.clone())).await
    }

    /// (Re)queues deliveries of the account's events to its enabled endpoints, filtered
    /// by endpoint, event and creation time. Returns how many rows were queued.
    pub async fn requeue(
        self,
        account_id: &str,
        mode: Mode,
        endpoint_id: Option<&str>,
        event_id: Option<&str>,
        since_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<u64> {
        self.webhook_count(Op::Requeue {
            account_id: account_id.to_owned(),
            mode,
            endpoint_id: endpoint_id.map(str::to_owned),
            event_id: event_id.map(str::to_owned),
            since_ms,
            now_ms,
        })
        .await
    }

    /// Drops every lease (embedded store at start: no other node can hold one).
    pub async fn release_claims(self) -> StoreResult<()> {
        self.webhook_done(Op::ReleaseClaims).await
    }

    /// Records an inbound hook, with its events (verified ones emit `inbound.received`).
    pub async fn insert_inbound(
        self,
        rec: &InboundRecord,
        events: &[EventRecord],
    ) -> StoreResult<()> {
        self.webhook_done(Op::Inbound(rec.clone(), events.to_vec()))
            .await
    }

    /// Deletes events (with their deliveries and attempts) and inbound hooks older than
    /// `before_ms`.
    pub async fn prune(self, before_ms: i64) -> StoreResult<u64> {
        self.webhook_count(Op::Prune { before_ms }).await
    }
}
