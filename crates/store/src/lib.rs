//! Persistence for Strongroom.
//!
//! One trait, [`VaultStore`], with two backends: SQLite (the embedded default, WAL,
//! `synchronous=FULL`, every write batched by a single writer thread into group commits)
//! and PostgreSQL (pooled connections, one writer task per node). [`Store`] is the enum the server holds.
//!
//! The store holds ciphertext, wrapped keys and digests. It never decrypts anything and
//! never sees a clear PAN, key or secret.

pub mod audit;
pub mod controls;
pub mod model;
pub mod pin;

mod dialect;
mod exec;
mod group;
mod postgres;
mod sql;
mod sqlite;
mod stats;
mod store;
pub mod tokens;
pub mod webhooks;

pub use audit::{
    AuditCheckpoint, AuditQuery, AuditRecord, AuditScope, AuditStore, CheckpointLink, HashFn,
};
pub use controls::{
    AccountControls, ControlStore, ControlsUpdate, IdempotencyBegin, IdempotencyClaim,
    IdempotencyRecord, KeyWithControls, SigningKeyRecord,
};
pub use model::*;
pub use pin::{PinOutcome, PinRecord, PinRewrap, PinStore, SetKind, SpendOtp, TransportKeyRecord};
pub use postgres::{CacheEvent, PgStore};
pub use sqlite::SqliteStore;
pub use stats::StatsStore;
pub use store::Store;
pub use tokens::{JwtKeyRecord, TokenStore};
pub use webhooks::WebhookStore;

use thiserror::Error;

/// What went wrong in the store. The detail string is for the log, never for a client.
#[derive(Debug, Error)]
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

/// Every operation the vault needs from storage. Writes that others must hear about
/// take the events to append, and commit them in the same transaction.
#[allow(async_fn_in_trait)]
pub trait VaultStore: Send + Sync {
    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;

    // ---- accounts ----

    /// Creates an account together with its first data keys, in one transaction.
    async fn create_account(
        &self,
        account: &AccountRecord,
        data_keys: &[DataKeyRecord],
        events: &[EventRecord],
    ) -> StoreResult<()>;
    /// One account.
    async fn get_account(&self, id: &str) -> StoreResult<Option<AccountRecord>>;
    /// Every account, oldest first.
    async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>>;
    /// Updates the mutable settings of an account (name, OTP delivery URL). False if absent.
    async fn update_account(&self, account: &AccountRecord) -> StoreResult<bool>;

    // ---- API keys ----

    /// Stores a new API key (its digest only).
    async fn insert_api_key(&self, key: &ApiKeyRecord, events: &[EventRecord]) -> StoreResult<()>;
    /// The key whose keyed digest is `digest`, revoked or not.
    async fn api_key_by_digest(&self, digest: &[u8]) -> StoreResult<Option<ApiKeyRecord>>;
    /// The keys of an account (`None`: admin keys), oldest first.
    async fn list_api_keys(&self, account_id: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Marks a key revoked at `now_ms` (keeps an earlier revocation time). Returns the
    /// key after the update, or `None` if no such key belongs to the account.
    async fn revoke_api_key(
        &self,
        account_id: Option<&str>,
        key_id: &str,
        now_ms: i64,
        events: &[EventRecord],
    ) -> StoreResult<Option<ApiKeyRecord>>;

    // ---- data keys ----

    /// Every data key of an account, every purpose and version (retired ones included,
    /// with empty `wrapped`).
    async fn data_keys(&self, account_id: &str) -> StoreResult<Vec<DataKeyRecord>>;
    /// In one transaction: the purpose's `active` version becomes `decrypt_only`, and
    /// `new_key` (state `active`, version = previous max + 1) is inserted.
    /// `Conflict` if that version exists already (a concurrent rotation won).
    async fn rotate_data_key(
        &self,
        new_key: &DataKeyRecord,
        events: &[EventRecord],
    ) -> StoreResult<()>;
    /// Retires a `decrypt_only` version that protects no record: state `retired`,
    /// `wrapped` emptied, `retired_ms` set.
    async fn retire_data_key(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
        version: i64,
        now_ms: i64,
    ) -> StoreResult<RetireOutcome>;
    /// For a purpose, how many records each key version protects, by version ascending.
    /// Cards count for `Cards` by `key_version` and for `Fingerprint` by `fp_version`.
    /// Versions protecting nothing are absent.
    async fn key_usage(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
    ) -> StoreResult<Vec<(i64, i64)>>;

    // ---- cards ----

    /// Inserts a card unless the account already holds, in the same mode, a card whose
    /// `(fp_version, fingerprint)` is one of `dedup`; in that case returns that card and
    /// writes nothing. Events are written only when the card is created.
    async fn insert_card(
        &self,
        card: &CardRecord,
        dedup: &[(i64, Vec<u8>)],
        events: &[EventRecord],
    ) -> StoreResult<InsertCard>;
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
    /// Moves a card's stored expiry to a later one (a renewed card tokenized again),
    /// with its events. Returns the card after the change; `None` when it is gone or
    /// its stored expiry is not earlier (so a stale request never moves it back).
    async fn renew_card_expiry(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
        expiry: (i64, i64),
        events: &[EventRecord],
    ) -> StoreResult<Option<CardRecord>>;
    /// Deletes a card (the ciphertext is gone). False if absent.
    async fn delete_card(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
        events: &[EventRecord],
    ) -> StoreResult<bool>;
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
    /// Applies re-wraps in one transaction. Each applies only if the row still has the
    /// expected versions (a concurrent delete or re-wrap wins). Returns how many applied.
    async fn rewrap_cards(&self, updates: &[CardRewrap]) -> StoreResult<u64>;

    // ---- one-time passwords ----

    /// Stores a new OTP (code digest only).
    async fn insert_otp(&self, otp: &OtpRecord, events: &[EventRecord]) -> StoreResult<()>;
    /// One OTP of the account.
    async fn get_otp(&self, account_id: &str, id: &str) -> StoreResult<Option<OtpRecord>>;
    /// Counts a wrong code; returns the new attempt count.
    async fn otp_fail(&self, id: &str) -> StoreResult<i64>;
    /// Marks the OTP used if it is unused, unexpired at `now_ms`, and below
    /// `max_attempts`. True if this call consumed it (exactly one caller wins); the
    /// events are written, in the same transaction, only then.
    async fn otp_consume(
        &self,
        id: &str,
        now_ms: i64,
        max_attempts: i64,
        events: &[EventRecord],
    ) -> StoreResult<bool>;

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
