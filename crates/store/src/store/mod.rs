//! [`Store`]: the backend chosen by configuration, its read connection ([`ReadConn`]),
//! the one [`VaultStore`] impl, and [`Writes`], the handle every write goes through.

mod audit;
mod client_sessions;
mod controls;
mod custody;
mod inbound_routes;
mod integrity;
mod pin;
mod relay;
mod risk;
mod risk_data;
mod risk_lists;
mod stats;
mod suspensions;
mod terminals;
mod tokens;
mod velocity;
mod webhooks;

use std::path::Path;

use crate::audit::AuditScope;
use crate::dialect::Dialect;
use crate::exec::{Arg, Exec, RowGet};
use crate::postgres::{CacheEvent, PgStore};
use crate::sql::{self, Write};
use crate::sqlite::{self as sqlite_backend, SqliteStore};
use crate::{
    AccountRecord, ApiKeyRecord, CardRecord, CardRewrap, DataKeyRecord, EventRecord, InsertCard,
    KeyPurpose, ListCards, ListEvents, Mode, OtpRecord, RetireOutcome, RewrapQuery, StoreConfig,
    StoreError, StoreResult, VaultStore,
};

/// The store the server holds: one of the backends. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite (the default).
    Sqlite(SqliteStore),
    /// Shared PostgreSQL.
    Postgres(PgStore),
}

impl Store {
    /// Connects by URL scheme (`sqlite://PATH`, `postgres://…`, `postgresql://…`) and
    /// runs the embedded migrations.
    pub async fn connect(cfg: &StoreConfig) -> StoreResult<Self> {
        let url = cfg.url.as_str();
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path.starts_with(':') || path.contains('?') {
                return Err(StoreError::Unavailable(
                    "sqlite URL must name a database file".into(),
                ));
            }
            SqliteStore::open(Path::new(path), cfg.max_connections)
                .await
                .map(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            PgStore::open(url, cfg.schema.as_deref(), cfg.max_connections)
                .await
                .map(Self::Postgres)
        } else {
            Err(StoreError::Unavailable(
                "unsupported store URL scheme".into(),
            ))
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Reports committed changes to what nodes cache (see [`PgStore::watch`]) and
    /// returns the listening task, to stop it; `None` on SQLite: one node owns the file,
    /// and it forgets what it changes itself.
    pub fn watch(
        &self,
        on: impl Fn(CacheEvent) + Send + Sync + 'static,
    ) -> Option<tokio::task::AbortHandle> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(p) => Some(p.watch(on)),
        }
    }

    /// Finishes queued writes and closes every connection; later calls fail with
    /// [`StoreError::Unavailable`].
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }

    /// A read connection for any read but the audit trail's.
    pub(crate) async fn reader(&self) -> StoreResult<ReadConn<'_>> {
        match self {
            Self::Sqlite(s) => s.reader().map(ReadConn::Sqlite),
            Self::Postgres(p) => p.reader().await.map(ReadConn::Postgres),
        }
    }

    /// A read connection for the audit trail's own reads, which must also see the audit
    /// records appended alone (on SQLite a reader may keep a snapshot across those:
    /// [`crate::sqlite::MustSee`]).
    pub(crate) async fn audit_reader(&self) -> StoreResult<ReadConn<'_>> {
        match self {
            Self::Sqlite(s) => s.audit_reader().map(ReadConn::Sqlite),
            Self::Postgres(p) => p.reader().await.map(ReadConn::Postgres),
        }
    }

    /// Writes that carry `scope`'s pending audit records (the request's record and its
    /// queued security events) in their own transaction: each write and its records
    /// commit together or not at all (see [`crate::audit`]). Every write a request makes
    /// goes through here, with the request's scope.
    pub fn audited<'a>(&'a self, scope: &'a AuditScope) -> Writes<'a> {
        Writes {
            store: self,
            scope: Some(scope),
        }
    }

    /// Writes that carry no audit record: work outside any request (the webhook
    /// delivery and re-wrap workers, keys made at start) and tests. A request's writes
    /// go through [`Store::audited`] instead.
    pub fn unaudited(&self) -> Writes<'_> {
        Writes {
            store: self,
            scope: None,
        }
    }

    /// Every write goes through here, and answers with its own reply type; with a
    /// `scope` it carries the scope's records in its transaction (see [`crate::audit`]).
    pub(crate) async fn write<R>(
        &self,
        scope: Option<&AuditScope>,
        write: Write<R>,
    ) -> StoreResult<R> {
        let (op, reply) = write.split();
        let (op, attached) = sql::attach(op, scope);
        let result = match self {
            Self::Sqlite(s) => s.write(op).await,
            Self::Postgres(p) => p.write(op).await,
        };
        sql::settle(attached, result).and_then(reply)
    }
}

/// The store's writes, each with the audit scope it carries (or none), said once where
/// the handle is made: `store.audited(&scope).insert_card(…)` for a request's write,
/// `store.unaudited().rewrap_cards(…)` for a worker's. The writes exist only here, so a
/// write cannot be made without saying which.
#[derive(Debug, Clone, Copy)]
pub struct Writes<'a> {
    store: &'a Store,
    scope: Option<&'a AuditScope>,
}

impl Writes<'_> {
    async fn write<R>(self, write: Write<R>) -> StoreResult<R> {
        self.store.write(self.scope, write).await
    }
}

/// A read connection of the store's backend. The shared reads ([`crate::sql`] and the
/// domain modules) run on it through [`Exec`].
pub(crate) enum ReadConn<'s> {
    Sqlite(sqlite_backend::Reader<'s>),
    Postgres(crate::postgres::PgReader),
}

/// A row read through a [`ReadConn`].
pub(crate) enum ReadRow {
    Sqlite(sqlite_backend::SqlRow),
    Postgres(sqlx::postgres::PgRow),
}

impl Exec for ReadConn<'_> {
    type Row = ReadRow;

    fn dialect(&self) -> &'static dyn Dialect {
        match self {
            Self::Sqlite(r) => r.dialect(),
            Self::Postgres(p) => p.dialect(),
        }
    }

    async fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        match self {
            Self::Sqlite(r) => r.exec(sql, args).await,
            Self::Postgres(p) => p.exec(sql, args).await,
        }
    }

    async fn all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<Vec<ReadRow>> {
        Ok(match self {
            Self::Sqlite(r) => r
                .all(sql, args)
                .await?
                .into_iter()
                .map(ReadRow::Sqlite)
                .collect(),
            Self::Postgres(p) => p
                .all(sql, args)
                .await?
                .into_iter()
                .map(ReadRow::Postgres)
                .collect(),
        })
    }

    async fn opt(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<Option<ReadRow>> {
        Ok(match self {
            Self::Sqlite(r) => r.opt(sql, args).await?.map(ReadRow::Sqlite),
            Self::Postgres(p) => p.opt(sql, args).await?.map(ReadRow::Postgres),
        })
    }
}

impl RowGet for ReadRow {
    fn text(&self, i: usize) -> StoreResult<String> {
        match self {
            Self::Sqlite(r) => r.text(i),
            Self::Postgres(r) => r.text(i),
        }
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        match self {
            Self::Sqlite(r) => r.opt_text(i),
            Self::Postgres(r) => r.opt_text(i),
        }
    }
    fn int(&self, i: usize) -> StoreResult<i64> {
        match self {
            Self::Sqlite(r) => r.int(i),
            Self::Postgres(r) => r.int(i),
        }
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        match self {
            Self::Sqlite(r) => r.opt_int(i),
            Self::Postgres(r) => r.opt_int(i),
        }
    }
    fn blob(&self, i: usize) -> StoreResult<Vec<u8>> {
        match self {
            Self::Sqlite(r) => r.blob(i),
            Self::Postgres(r) => r.blob(i),
        }
    }
    fn opt_blob(&self, i: usize) -> StoreResult<Option<Vec<u8>>> {
        match self {
            Self::Sqlite(r) => r.opt_blob(i),
            Self::Postgres(r) => r.opt_blob(i),
        }
    }
}

impl VaultStore for Store {
    async fn ping(&self) -> StoreResult<()> {
        sql::ping(&mut self.reader().await?).await
    }

    async fn get_account(&self, id: &str) -> StoreResult<Option<AccountRecord>> {
        sql::get_account(&mut self.reader().await?, id).await
    }

    async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>> {
        sql::list_accounts(&mut self.reader().await?).await
    }

    async fn api_key_by_digest(&self, digest: &[u8]) -> StoreResult<Option<ApiKeyRecord>> {
        sql::api_key_by_digest(&mut self.reader().await?, digest).await
    }

    async fn list_api_keys(&self, account_id: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>> {
        sql::list_api_keys(&mut self.reader().await?, account_id).await
    }

    async fn data_keys(&self, account_id: &str) -> StoreResult<Vec<DataKeyRecord>> {
        sql::data_keys(&mut self.reader().await?, account_id).await
    }

    async fn key_usage(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
    ) -> StoreResult<Vec<(i64, i64)>> {
        sql::key_usage(&mut self.reader().await?, account_id, purpose).await
    }

    async fn get_card(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
    ) -> StoreResult<Option<CardRecord>> {
        match self {
            Self::Sqlite(_) => sql::get_card(&mut self.reader().await?, account_id, mode, id).await,
            Self::Postgres(p) => p.get_card(account_id, mode, id).await,
        }
    }

    async fn list_cards(
        &self,
        account_id: &str,
        mode: Mode,
        query: &ListCards,
    ) -> StoreResult<Vec<CardRecord>> {
        sql::list_cards(&mut self.reader().await?, account_id, mode, query).await
    }

    async fn cards_for_rewrap(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
        q: &RewrapQuery<'_>,
    ) -> StoreResult<Vec<CardRecord>> {
        sql::cards_for_rewrap(&mut self.reader().await?, account_id, purpose, q).await
    }

    async fn get_otp(&self, account_id: &str, id: &str) -> StoreResult<Option<OtpRecord>> {
        sql::get_otp(&mut self.reader().await?, account_id, id).await
    }

    async fn get_event(&self, account_id: &str, id: &str) -> StoreResult<Option<EventRecord>> {
        sql::get_event(&mut self.reader().await?, account_id, id).await
    }

    async fn list_events(
        &self,
        account_id: &str,
        mode: Mode,
        query: &ListEvents,
    ) -> StoreResult<Vec<EventRecord>> {
        sql::list_events(&mut self.reader().await?, account_id, mode, query).await
    }
}

impl Writes<'_> {
    /// Creates an account together with its first data keys, in one transaction.
    pub async fn create_account(
        self,
        account: &AccountRecord,
        data_keys: &[DataKeyRecord],
        events: &[EventRecord],
    ) -> StoreResult<()> {
        self.write(Write::create_account(
            account.clone(),
            data_keys.to_vec(),
            events.to_vec(),
        ))
        .await
    }

    /// Updates the mutable settings of an account (name, OTP delivery URL). False if absent.
    pub async fn update_account(self, account: &AccountRecord) -> StoreResult<bool> {
        self.write(Write::update_account(account.clone())).await
    }

    /// Stores a new API key (its digest only).
    pub async fn insert_api_key(
        self,
        key: &ApiKeyRecord,
        events: &[EventRecord],
    ) -> StoreResult<()> {
        self.write(Write::insert_api_key(key.clone(), events.to_vec()))
            .await
    }

    /// Marks a key revoked at `now_ms` (keeps an earlier revocation time). Returns the
    /// key after the update, or `None` if no such key belongs to the account.
    pub async fn revoke_api_key(
        self,
        account_id: Option<&str>,
        key_id: &str,
        now_ms: i64,
        events: &[EventRecord],
    ) -> StoreResult<Option<ApiKeyRecord>> {
        self.write(Write::revoke_api_key(
            account_id.map(str::to_owned),
            key_id.to_owned(),
            now_ms,
            events.to_vec(),
        ))
        .await
    }

    /// In one transaction: the purpose's `active` version becomes `decrypt_only`, and
    /// `new_key` (state `active`, version = previous max + 1) is inserted.
    /// `Conflict` if that version exists already (a concurrent rotation won).
    pub async fn rotate_data_key(
        self,
        new_key: &DataKeyRecord,
        events: &[EventRecord],
    ) -> StoreResult<()> {
        self.write(Write::rotate_data_key(new_key.clone(), events.to_vec()))
            .await
    }

    /// Retires a `decrypt_only` version that protects no record: state `retired`,
    /// `wrapped` emptied, `retired_ms` set.
    pub async fn retire_data_key(
        self,
        account_id: &str,
        purpose: KeyPurpose,
        version: i64,
        now_ms: i64,
    ) -> StoreResult<RetireOutcome> {
        self.write(Write::retire_data_key(
            account_id.to_owned(),
            purpose,
            version,
            now_ms,
        ))
        .await
    }

    /// Inserts a card unless the account already holds, in the same mode, a card whose
    /// `(fp_version, fingerprint)` is one of `dedup`; in that case returns that card and
    /// writes nothing. Events are written only when the card is created.
    pub async fn insert_card(
        self,
        card: &CardRecord,
        dedup: &[(i64, Vec<u8>)],
        events: &[EventRecord],
    ) -> StoreResult<InsertCard> {
        self.write(Write::insert_card(
            card.clone(),
            dedup.to_vec(),
            events.to_vec(),
        ))
        .await
    }

    /// Moves a card's stored expiry to a later one (a renewed card tokenized again),
    /// with its events. Returns the card after the change; `None` when it is gone or
    /// its stored expiry is not earlier (so a stale request never moves it back).
    pub async fn renew_card_expiry(
        self,
        account_id: &str,
        mode: Mode,
        id: &str,
        expiry: (i64, i64),
        events: &[EventRecord],
    ) -> StoreResult<Option<CardRecord>> {
        self.write(Write::renew_card_expiry(
            account_id.to_owned(),
            mode,
            id.to_owned(),
            expiry,
            events.to_vec(),
        ))
        .await
    }

    /// Deletes a card (the ciphertext is gone). False if absent.
    pub async fn delete_card(
        self,
        account_id: &str,
        mode: Mode,
        id: &str,
        events: &[EventRecord],
    ) -> StoreResult<bool> {
        self.write(Write::delete_card(
            account_id.to_owned(),
            mode,
            id.to_owned(),
            events.to_vec(),
        ))
        .await
    }

    /// Applies re-wraps in one transaction. Each applies only if the row still has the
    /// expected versions (a concurrent delete or re-wrap wins). Returns how many applied.
    pub async fn rewrap_cards(self, updates: &[CardRewrap]) -> StoreResult<u64> {
        let n = self.write(Write::rewrap_cards(updates.to_vec())).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Stores a new OTP (code digest only).
    pub async fn insert_otp(self, otp: &OtpRecord, events: &[EventRecord]) -> StoreResult<()> {
        self.write(Write::insert_otp(otp.clone(), events.to_vec()))
            .await
    }

    /// Counts a wrong code; returns the new attempt count.
    pub async fn otp_fail(self, id: &str) -> StoreResult<i64> {
        self.write(Write::otp_fail(id.to_owned())).await
    }

    /// Marks the OTP used if it is unused, unexpired at `now_ms`, and below
    /// `max_attempts`. True if this call consumed it (exactly one caller wins); the
    /// events are written, in the same transaction, only then.
    pub async fn otp_consume(
        self,
        id: &str,
        now_ms: i64,
        max_attempts: i64,
        events: &[EventRecord],
    ) -> StoreResult<bool> {
        self.write(Write::otp_consume(
            id.to_owned(),
            now_ms,
            max_attempts,
            events.to_vec(),
        ))
        .await
    }
}
