//! [`Store`]: the backend chosen by configuration, and the one [`VaultStore`] impl.

use std::path::Path;

use crate::postgres::{CacheEvent, PgStore};
use crate::sql::{self, WriteOp};
use crate::sqlite::SqliteStore;
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

    /// Reports committed changes to what nodes cache (see [`PgStore::watch`]). Returns
    /// false on SQLite: one node owns the file, and it forgets what it changes itself.
    pub fn watch(&self, on: impl Fn(CacheEvent) + Send + Sync + 'static) -> bool {
        match self {
            Self::Sqlite(_) => false,
            Self::Postgres(p) => {
                p.watch(on);
                true
            }
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

    /// Every write goes through here; inside an audit scope it carries the scope's
    /// records in its transaction (see [`crate::audit`]).
    pub(crate) async fn write(&self, op: WriteOp) -> StoreResult<sql::WriteReply> {
        let (op, attached) = crate::audit::attach(op);
        let result = match self {
            Self::Sqlite(s) => s.write(op).await,
            Self::Postgres(p) => p.write(op).await,
        };
        crate::audit::settle(attached, result)
    }
}

impl VaultStore for Store {
    async fn ping(&self) -> StoreResult<()> {
        read!(self, sql::ping())
    }

    async fn create_account(
        &self,
        account: &AccountRecord,
        data_keys: &[DataKeyRecord],
        events: &[EventRecord],
    ) -> StoreResult<()> {
        self.write(WriteOp::CreateAccount {
            account: account.clone(),
            data_keys: data_keys.to_vec(),
            events: events.to_vec(),
        })
        .await?
        .done()
    }

    async fn get_account(&self, id: &str) -> StoreResult<Option<AccountRecord>> {
        read!(self, sql::get_account(id))
    }

    async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>> {
        read!(self, sql::list_accounts())
    }

    async fn update_account(&self, account: &AccountRecord) -> StoreResult<bool> {
        self.write(WriteOp::UpdateAccount {
            account: account.clone(),
        })
        .await?
        .flag()
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, events: &[EventRecord]) -> StoreResult<()> {
        self.write(WriteOp::InsertApiKey {
            key: key.clone(),
            events: events.to_vec(),
        })
        .await?
        .done()
    }

    async fn api_key_by_digest(&self, digest: &[u8]) -> StoreResult<Option<ApiKeyRecord>> {
        read!(self, sql::api_key_by_digest(digest))
    }

    async fn list_api_keys(&self, account_id: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>> {
        read!(self, sql::list_api_keys(account_id))
    }

    async fn revoke_api_key(
        &self,
        account_id: Option<&str>,
        key_id: &str,
        now_ms: i64,
        events: &[EventRecord],
    ) -> StoreResult<Option<ApiKeyRecord>> {
        self.write(WriteOp::RevokeApiKey {
            account_id: account_id.map(str::to_owned),
            key_id: key_id.to_owned(),
            now_ms,
            events: events.to_vec(),
        })
        .await?
        .api_key()
    }

    async fn data_keys(&self, account_id: &str) -> StoreResult<Vec<DataKeyRecord>> {
        read!(self, sql::data_keys(account_id))
    }

    async fn rotate_data_key(
        &self,
        new_key: &DataKeyRecord,
        events: &[EventRecord],
    ) -> StoreResult<()> {
        self.write(WriteOp::RotateDataKey {
            new_key: new_key.clone(),
            events: events.to_vec(),
        })
        .await?
        .done()
    }

    async fn retire_data_key(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
        version: i64,
        now_ms: i64,
    ) -> StoreResult<RetireOutcome> {
        self.write(WriteOp::RetireDataKey {
            account_id: account_id.to_owned(),
            purpose,
            version,
            now_ms,
        })
        .await?
        .retire()
    }

    async fn key_usage(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
    ) -> StoreResult<Vec<(i64, i64)>> {
        read!(self, sql::key_usage(account_id, purpose))
    }

    async fn insert_card(
        &self,
        card: &CardRecord,
        dedup: &[(i64, Vec<u8>)],
        events: &[EventRecord],
    ) -> StoreResult<InsertCard> {
        self.write(WriteOp::InsertCard {
            card: card.clone(),
            dedup: dedup.to_vec(),
            events: events.to_vec(),
        })
        .await?
        .card()
    }

    async fn get_card(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
    ) -> StoreResult<Option<CardRecord>> {
        read!(self, sql::get_card(account_id, mode, id))
    }

    async fn list_cards(
        &self,
        account_id: &str,
        mode: Mode,
        query: &ListCards,
    ) -> StoreResult<Vec<CardRecord>> {
        read!(self, sql::list_cards(account_id, mode, query))
    }

    async fn renew_card_expiry(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
        (exp_month, exp_year): (i64, i64),
        events: &[EventRecord],
    ) -> StoreResult<Option<CardRecord>> {
        self.write(WriteOp::RenewCardExpiry {
            account_id: account_id.to_owned(),
            mode,
            id: id.to_owned(),
            exp_month,
            exp_year,
            events: events.to_vec(),
        })
        .await?
        .renewed()
    }

    async fn delete_card(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
        events: &[EventRecord],
    ) -> StoreResult<bool> {
        self.write(WriteOp::DeleteCard {
            account_id: account_id.to_owned(),
            mode,
            id: id.to_owned(),
            events: events.to_vec(),
        })
        .await?
        .flag()
    }

    async fn cards_for_rewrap(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
        q: &RewrapQuery<'_>,
    ) -> StoreResult<Vec<CardRecord>> {
        read!(self, sql::cards_for_rewrap(account_id, purpose, q))
    }

    async fn rewrap_cards(&self, updates: &[CardRewrap]) -> StoreResult<u64> {
        let n = self
            .write(WriteOp::RewrapCards {
                updates: updates.to_vec(),
            })
            .await?
            .count()?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn insert_otp(&self, otp: &OtpRecord, events: &[EventRecord]) -> StoreResult<()> {
        self.write(WriteOp::InsertOtp {
            otp: otp.clone(),
            events: events.to_vec(),
        })
        .await?
        .done()
    }

    async fn get_otp(&self, account_id: &str, id: &str) -> StoreResult<Option<OtpRecord>> {
        read!(self, sql::get_otp(account_id, id))
    }

    async fn otp_fail(&self, id: &str) -> StoreResult<i64> {
        self.write(WriteOp::OtpFail { id: id.to_owned() })
            .await?
            .count()
    }

    async fn otp_consume(
        &self,
        id: &str,
        now_ms: i64,
        max_attempts: i64,
        events: &[EventRecord],
    ) -> StoreResult<bool> {
        self.write(WriteOp::OtpConsume {
            id: id.to_owned(),
            now_ms,
            max_attempts,
            events: events.to_vec(),
        })
        .await?
        .flag()
    }

    async fn get_event(&self, account_id: &str, id: &str) -> StoreResult<Option<EventRecord>> {
        read!(self, sql::get_event(account_id, id))
    }

    async fn list_events(
        &self,
        account_id: &str,
        mode: Mode,
        query: &ListEvents,
    ) -> StoreResult<Vec<EventRecord>> {
        read!(self, sql::list_events(account_id, mode, query))
    }
}
