//! Persistence for Strongroom.
//!
//! One trait, [`VaultStore`], with two backends: SQLite (the embedded default, WAL,
//! `synchronous=FULL`, every write batched by a single writer thread into group commits)
//! and PostgreSQL (pooled connections, one writer task per node). [`Store`] is the enum the server holds.
//!
//! The store holds ciphertext, wrapped keys and digests. It never decrypts anything and
//! never sees a clear PAN, key or secret.

pub mod audit;
pub mod client_sessions;
pub mod controls;
pub mod custody;
pub mod inbound_routes;
pub mod integrity;
pub mod key_imports;
pub mod model;
pub mod pin;
pub mod relay;
pub mod risk;
pub mod risk_data;
pub mod risk_lists;
pub mod suspensions;
pub mod terminals;

mod dialect;
mod exec;
mod group;
mod postgres;
mod sql;
mod sqlite;
mod stats;
mod store;
pub mod tokens;
pub mod velocity;
pub mod webhooks;

pub use audit::{
    AuditCheckpoint, AuditQuery, AuditRecord, AuditScope, AuditStore, CheckpointLink, HashFn,
};
pub use client_sessions::{ClientSessionRecord, ClientSessionStore, Collected};
pub use controls::{
    AccountControls, ControlStore, ControlsUpdate, IdempotencyBegin, IdempotencyClaim,
    IdempotencyRecord, KeyWithControls, SigningKeyRecord,
};
pub use custody::{CustodyStore, RootKeyRecord, WrappedKey, WrappedKind, WrappedQuery};
pub use inbound_routes::{InboundRouteRecord, InboundRouteStore};
pub use integrity::{AttestationRecord, ChallengeRecord, IntegrityAppRecord, IntegrityStore};
pub use key_imports::{ImportedKeyRecord, KeyImportRecord, KeyImportStore};
pub use model::*;
pub use pin::{PinOutcome, PinRecord, PinRewrap, PinStore, SetKind, SpendOtp, TransportKeyRecord};
pub use postgres::{CacheEvent, PgStore};
pub use relay::{RelayDestinationRecord, RelayStore};
pub use risk::{AssessmentRecord, LabelTarget, RiskModelRecord, RiskStore, RuleSetRecord};
pub use risk_data::{DataBytes, RiskDataInfo, RiskDataStore};
pub use risk_lists::{ListEntryRecord, RiskListStore};
pub use sqlite::SqliteStore;
pub use stats::StatsStore;
pub use store::{Store, Writes};
pub use suspensions::{SuspensionRecord, SuspensionStore};
pub use terminals::{TerminalRecord, TerminalStore};
pub use tokens::{JwtKeyRecord, TokenStore};
pub use velocity::{KeptRow, VelocitySnapshotStore};
pub use webhooks::WebhookStore;

use thiserror::Error;

/// What went wrong in the store. The detail string is for the log, never for a client.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// A uniqueness or state rule refused the write (e.g. a version that already exists).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database could not be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Result type of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// How to connect.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://…`.
    pub url: String,
    /// PostgreSQL only: a schema to create (if missing) and use as `search_path`.
    /// Tests give every server its own schema.
    pub schema: Option<String>,
    /// SQLite: the most idle read connections kept (reads run on the calling thread, so
    /// no more are open at once than threads reading). PostgreSQL: the pool size for all
    /// work, the writer included.
    pub max_connections: u32,
}

/// Every read the vault needs from storage. The writes are on [`Writes`] (from
/// [`Store::audited`] or [`Store::unaudited`]); those that others must hear about take
/// the events to append, and commit them in the same transaction.
#[allow(async_fn_in_trait)]
pub trait VaultStore: Send + Sync {
    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;

    // ---- accounts ----

    /// One account.
    async fn get_account(&self, id: &str) -> StoreResult<Option<AccountRecord>>;
    /// Every account, oldest first.
    async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>>;

    // ---- API keys ----

    /// The key whose keyed digest is `digest`, revoked or not.
    async fn api_key_by_digest(&self, digest: &[u8]) -> StoreResult<Option<ApiKeyRecord>>;
    /// The keys of an account (`None`: admin keys), oldest first.
    async fn list_api_keys(&self, account_id: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>>;

    // ---- data keys ----

    /// Every data key of an account, every purpose and version (retired ones included,
    /// with empty `wrapped`).
    async fn data_keys(&self, account_id: &str) -> StoreResult<Vec<DataKeyRecord>>;
    /// For a purpose, how many records each key version protects, by version ascending.
    /// Cards count for `Cards` by `key_version` and for `Fingerprint` by `fp_version`.
    /// Versions protecting nothing are absent.
    async fn key_usage(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
    ) -> StoreResult<Vec<(i64, i64)>>;

    // ---- cards ----

    /// One card of this account and mode.
    async fn get_card(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
    ) -> StoreResult<Option<CardRecord>>;
    /// A page of cards, newest first.
    async fn list_cards(
        &self,
        account_id: &str,
        mode: Mode,
        query: &ListCards,
    ) -> StoreResult<Vec<CardRecord>>;
    /// Up to `q.limit` cards of the account in `q.mode`, in id order after `q.after`,
    /// whose `key_version` (purpose `Cards`) or `fp_version` (purpose `Fingerprint`) is
    /// below `q.below_version`. A pass walks every card of the mode once: check
    /// [`VaultStore::key_usage`] first to skip it when nothing is stale.
    async fn cards_for_rewrap(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
        q: &RewrapQuery<'_>,
    ) -> StoreResult<Vec<CardRecord>>;

    // ---- one-time passwords ----

    /// One OTP of the account.
    async fn get_otp(&self, account_id: &str, id: &str) -> StoreResult<Option<OtpRecord>>;

    // ---- events ----

    /// One event.
    async fn get_event(&self, account_id: &str, id: &str) -> StoreResult<Option<EventRecord>>;
    /// Events of an account and mode, newest first.
    async fn list_events(
        &self,
        account_id: &str,
        mode: Mode,
        query: &ListEvents,
    ) -> StoreResult<Vec<EventRecord>>;
}
