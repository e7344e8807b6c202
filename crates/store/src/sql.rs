//! Every SQL text and every operation, written once for both backends.
//!
//! Parameters are `$1, $2 …` (PostgreSQL's syntax; SQLite reads `$N` as a named
//! parameter and sqlx binds it by number). Only portable SQL is used: `ON CONFLICT …
//! DO NOTHING`, `RETURNING`, `IS NOT DISTINCT FROM`, partial indexes.

use crate::exec::{Exec, RowGet, args};
use crate::{
    AccountRecord, ApiKeyRecord, CardRecord, CardRewrap, DataKeyRecord, EventRecord, InsertCard,
    KeyPurpose, KeyState, ListCards, ListEvents, Mode, OtpRecord, RetireOutcome, StoreError,
    StoreResult,
};

// ---- column lists, in the order the decoders below read them ----

macro_rules! account_cols {
    () => {
        "id, name, otp_delivery_url, created_ms"
    };
}
macro_rules! api_key_cols {
    () => {
        "id, account_id, kind, mode, prefix, digest, scopes, created_ms, revoked_ms"
    };
}
macro_rules! data_key_cols {
    () => {
        "account_id, purpose, version, wrapped, state, created_ms, retired_ms"
    };
}
macro_rules! card_cols {
    () => {
        "id, account_id, mode, fingerprint, fp_version, key_version, sealed, brand, bin, \
         last4, exp_month, exp_year, created_ms"
    };
}
macro_rules! otp_cols {
    () => {
        "id, account_id, mode, purpose, card_id, api_key_id, code_digest, created_ms, \
         expires_ms, attempts, used_ms"
    };
}
macro_rules! event_cols {
    () => {
        "id, account_id, mode, event_type, created_ms, data"
    };
}

// ---- SQL texts ----

pub(crate) const PING: &str = "SELECT 1";

const INSERT_ACCOUNT: &str = concat!(
    "INSERT INTO accounts (",
    account_cols!(),
    ") VALUES ($1, $2, $3, $4)"
);
const GET_ACCOUNT: &str = concat!("SELECT ", account_cols!(), " FROM accounts WHERE id = $1");
const LIST_ACCOUNTS: &str = concat!("SELECT ", account_cols!(), " FROM accounts ORDER BY id");
const UPDATE_ACCOUNT: &str = "UPDATE accounts SET name = $2, otp_delivery_url = $3 WHERE id = $1";

const INSERT_API_KEY: &str = concat!(
    "INSERT INTO api_keys (",
    api_key_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);
const API_KEY_BY_DIGEST: &str = concat!(
    "SELECT ",
    api_key_cols!(),
    " FROM api_keys WHERE digest = $1"
);
/// An API key with its account's controls and its own allowlist: the key's columns,
/// then `account_controls`' five (all NULL when the account has none), then the key's
/// allowlist (NULL when none).
pub(crate) const KEY_WITH_CONTROLS: &str = concat!(
    "SELECT k.*, c.account_id, c.require_signed_requests, c.ip_allowlist, \
     c.rate_limit_per_minute, c.updated_ms, kc.ip_allowlist FROM (SELECT ",
    api_key_cols!(),
    " FROM api_keys WHERE digest = $1) k \
     LEFT JOIN account_controls c ON c.account_id = k.account_id \
     LEFT JOIN api_key_controls kc ON kc.key_id = k.id"
);
/// Columns of [`api_key_cols`].
pub(crate) const API_KEY_COLS: usize = 9;
const LIST_API_KEYS: &str = concat!(
    "SELECT ",
    api_key_cols!(),
    " FROM api_keys WHERE account_id IS NOT DISTINCT FROM $1 ORDER BY id"
);
const REVOKE_API_KEY: &str = concat!(
    "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $3) \
     WHERE id = $1 AND account_id IS NOT DISTINCT FROM $2 RETURNING ",
    api_key_cols!()
);

const INSERT_DATA_KEY: &str = concat!(
    "INSERT INTO data_keys (",
    data_key_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
);
const DATA_KEYS: &str = concat!(
    "SELECT ",
    data_key_cols!(),
    " FROM data_keys WHERE account_id = $1 ORDER BY purpose, version"
);
const DATA_KEY_STATE: &str =
    "SELECT state FROM data_keys WHERE account_id = $1 AND purpose = $2 AND version = $3";
const DEMOTE_ACTIVE: &str = "UPDATE data_keys SET state = 'decrypt_only' \
     WHERE account_id = $1 AND purpose = $2 AND state = 'active'";
const RETIRE_DATA_KEY: &str = "UPDATE data_keys SET state = 'retired', wrapped = $4, retired_ms = $5 \
     WHERE account_id = $1 AND purpose = $2 AND version = $3 AND state = 'decrypt_only'";
const USAGE_CARDS: &str = "SELECT key_version, COUNT(*) FROM cards WHERE account_id = $1 \
     GROUP BY key_version ORDER BY key_version";
const USAGE_FINGERPRINT: &str = "SELECT fp_version, COUNT(*) FROM cards WHERE account_id = $1 \
     GROUP BY fp_version ORDER BY fp_version";
const COUNT_CARDS_KEY_VERSION: &str =
    "SELECT COUNT(*) FROM cards WHERE account_id = $1 AND key_version = $2";
const COUNT_CARDS_FP_VERSION: &str =
    "SELECT COUNT(*) FROM cards WHERE account_id = $1 AND fp_version = $2";

const CARD_BY_FP_VERSION: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND fingerprint = $3 AND fp_version = $4"
);
const CARD_BY_FP: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND fingerprint = $3"
);
const INSERT_CARD: &str = concat!(
    "INSERT INTO cards (",
    card_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (account_id, mode, fingerprint) DO NOTHING RETURNING id"
);
const GET_CARD: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND id = $3"
);
const LIST_CARDS: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 ORDER BY id DESC LIMIT $3"
);
const LIST_CARDS_AFTER: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND id < $4 ORDER BY id DESC LIMIT $3"
);
// The fingerprint is unique per account and mode, so this finds at most one row.
const LIST_CARDS_FP: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND fingerprint = $5 \
     AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $3"
);
const DELETE_CARD: &str = "DELETE FROM cards WHERE account_id = $1 AND mode = $2 AND id = $3";
const REWRAP_CARDS: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND key_version < $2 ORDER BY id LIMIT $3"
);
const REWRAP_FINGERPRINTS: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND fp_version < $2 ORDER BY id LIMIT $3"
);
const REWRAP_CARD: &str = "UPDATE cards SET sealed = $2, key_version = $3, fingerprint = $4, \
     fp_version = $5 WHERE id = $1 AND key_version = $6 AND fp_version = $7";

const INSERT_OTP: &str = concat!(
    "INSERT INTO otps (",
    otp_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
);
const GET_OTP: &str = concat!(
    "SELECT ",
    otp_cols!(),
    " FROM otps WHERE account_id = $1 AND id = $2"
);
const OTP_FAIL: &str = "UPDATE otps SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts";
const OTP_CONSUME: &str = "UPDATE otps SET used_ms = $2 \
     WHERE id = $1 AND used_ms IS NULL AND expires_ms > $2 AND attempts < $3";

const INSERT_EVENT: &str = concat!(
    "INSERT INTO events (",
    event_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6)"
);
const GET_EVENT: &str = concat!(
    "SELECT ",
    event_cols!(),
    " FROM events WHERE account_id = $1 AND id = $2"
);
const LIST_EVENTS: &str = concat!(
    "SELECT ",
    event_cols!(),
    " FROM events WHERE account_id = $1 AND mode = $2 AND ($4 IS NULL OR event_type = $4) \
     AND ($5 IS NULL OR created_ms >= $5) AND ($6 IS NULL OR created_ms < $6) \
     ORDER BY id DESC LIMIT $3"
);
const LIST_EVENTS_AFTER: &str = concat!(
    "SELECT ",
    event_cols!(),
    " FROM events WHERE account_id = $1 AND mode = $2 AND ($4 IS NULL OR event_type = $4) \
     AND ($5 IS NULL OR created_ms >= $5) AND ($6 IS NULL OR created_ms < $6) \
     AND id < $7 ORDER BY id DESC LIMIT $3"
);

// ---- row decoding ----

/// A record read from a row whose columns are in the order of its column list.
pub(crate) trait FromRow: Sized {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self>;
}

pub(crate) fn mode(s: &str) -> StoreResult<Mode> {
    Mode::parse(s).ok_or_else(|| StoreError::Corrupt("unknown mode".into()))
}

impl FromRow for AccountRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            name: r.text(1)?,
            otp_delivery_url: r.opt_text(2)?,
            created_ms: r.int(3)?,
        })
    }
}

impl FromRow for ApiKeyRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.opt_text(1)?,
            kind: r.text(2)?,
            mode: mode(&r.text(3)?)?,
            prefix: r.text(4)?,
            digest: r.blob(5)?,
            scopes: r.text(6)?,
            created_ms: r.int(7)?,
            revoked_ms: r.opt_int(8)?,
        })
    }
}

impl FromRow for DataKeyRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            account_id: r.text(0)?,
            purpose: KeyPurpose::parse(&r.text(1)?)
                .ok_or_else(|| StoreError::Corrupt("unknown key purpose".into()))?,
            version: r.int(2)?,
            wrapped: r.blob(3)?,
            state: key_state(&r.text(4)?)?,
            created_ms: r.int(5)?,
            retired_ms: r.opt_int(6)?,
        })
    }
}

fn key_state(s: &str) -> StoreResult<KeyState> {
    KeyState::parse(s).ok_or_else(|| StoreError::Corrupt("unknown key state".into()))
}

impl FromRow for CardRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: mode(&r.text(2)?)?,
            fingerprint: r.blob(3)?,
            fp_version: r.int(4)?,
            key_version: r.int(5)?,
            sealed: r.blob(6)?,
            brand: r.text(7)?,
            bin: r.text(8)?,
            last4: r.text(9)?,
            exp_month: r.int(10)?,
            exp_year: r.int(11)?,
            created_ms: r.int(12)?,
        })
    }
}

impl FromRow for OtpRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: mode(&r.text(2)?)?,
            purpose: r.text(3)?,
            card_id: r.opt_text(4)?,
            api_key_id: r.text(5)?,
            code_digest: r.blob(6)?,
            created_ms: r.int(7)?,
            expires_ms: r.int(8)?,
            attempts: r.int(9)?,
            used_ms: r.opt_int(10)?,
        })
    }
}

impl FromRow for EventRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: mode(&r.text(2)?)?,
            event_type: r.text(3)?,
            created_ms: r.int(4)?,
            data: r.text(5)?,
        })
    }
}

/// A pair of integers (e.g. version and count).
impl FromRow for (i64, i64) {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok((r.int(0)?, r.int(1)?))
    }
}

pub(crate) async fn one<C: Exec, T: FromRow>(
    c: &mut C,
    sql: &'static str,
    a: &[crate::exec::Arg<'_>],
) -> StoreResult<Option<T>> {
    c.opt(sql, a).await?.as_ref().map(T::from_row).transpose()
}

pub(crate) async fn many<C: Exec, T: FromRow>(
    c: &mut C,
    sql: &'static str,
    a: &[crate::exec::Arg<'_>],
) -> StoreResult<Vec<T>> {
    c.all(sql, a).await?.iter().map(T::from_row).collect()
}

// ---- reads ----

pub(crate) async fn ping<C: Exec>(c: &mut C) -> StoreResult<()> {
    c.all(PING, &[]).await.map(drop)
}

pub(crate) async fn get_account<C: Exec>(
    c: &mut C,
    id: &str,
) -> StoreResult<Option<AccountRecord>> {
    one(c, GET_ACCOUNT, args![id]).await
}

pub(crate) async fn list_accounts<C: Exec>(c: &mut C) -> StoreResult<Vec<AccountRecord>> {
    many(c, LIST_ACCOUNTS, &[]).await
}

pub(crate) async fn api_key_by_digest<C: Exec>(
    c: &mut C,
    digest: &[u8],
) -> StoreResult<Option<ApiKeyRecord>> {
    one(c, API_KEY_BY_DIGEST, args![digest]).await
}

pub(crate) async fn list_api_keys<C: Exec>(
    c: &mut C,
    account_id: Option<&str>,
) -> StoreResult<Vec<ApiKeyRecord>> {
    many(c, LIST_API_KEYS, args![account_id]).await
}

pub(crate) async fn data_keys<C: Exec>(
    c: &mut C,
    account_id: &str,
) -> StoreResult<Vec<DataKeyRecord>> {
    many(c, DATA_KEYS, args![account_id]).await
}

pub(crate) async fn key_usage<C: Exec>(
    c: &mut C,
    account_id: &str,
    purpose: KeyPurpose,
) -> StoreResult<Vec<(i64, i64)>> {
    let sql = match purpose {
        KeyPurpose::Cards => USAGE_CARDS,
        KeyPurpose::Fingerprint => USAGE_FINGERPRINT,
        KeyPurpose::Pin => crate::pin::USAGE_PIN,
    };
    many(c, sql, args![account_id]).await
}

pub(crate) async fn get_card<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    id: &str,
) -> StoreResult<Option<CardRecord>> {
    one(c, GET_CARD, args![account_id, mode.as_str(), id]).await
}

pub(crate) async fn list_cards<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    q: &ListCards,
) -> StoreResult<Vec<CardRecord>> {
    let after = q.starting_after.as_deref();
    let fp = q.fingerprint.as_deref();
    let a = args![account_id, mode.as_str(), q.limit.max(0), after, fp];
    // PostgreSQL wants exactly as many values as the text has parameters.
    let (sql, n) = match (fp, after) {
        (Some(_), _) => (LIST_CARDS_FP, 5),
        (None, Some(_)) => (LIST_CARDS_AFTER, 4),
        (None, None) => (LIST_CARDS, 3),
    };
    many(c, sql, a.get(..n).unwrap_or(a)).await
}

pub(crate) async fn cards_for_rewrap<C: Exec>(
    c: &mut C,
    account_id: &str,
    purpose: KeyPurpose,
    below_version: i64,
    limit: i64,
) -> StoreResult<Vec<CardRecord>> {
    let sql = match purpose {
        KeyPurpose::Cards => REWRAP_CARDS,
        KeyPurpose::Fingerprint => REWRAP_FINGERPRINTS,
        // PINs are not cards: see `PinStore::pins_for_rewrap`.
        KeyPurpose::Pin => return Ok(Vec::new()),
    };
    many(c, sql, args![account_id, below_version, limit.max(0)]).await
}

pub(crate) async fn get_otp<C: Exec>(
    c: &mut C,
    account_id: &str,
    id: &str,
) -> StoreResult<Option<OtpRecord>> {
    one(c, GET_OTP, args![account_id, id]).await
}

pub(crate) async fn get_event<C: Exec>(
    c: &mut C,
    account_id: &str,
    id: &str,
) -> StoreResult<Option<EventRecord>> {
    one(c, GET_EVENT, args![account_id, id]).await
}

pub(crate) async fn list_events<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    q: &ListEvents,
) -> StoreResult<Vec<EventRecord>> {
    let after = q.starting_after.as_deref();
    let a = args![
        account_id,
        mode.as_str(),
        q.limit.max(0),
        q.event_type.as_deref(),
        q.created_gte,
        q.created_lt,
        after
    ];
    let (sql, n) = if after.is_some() {
        (LIST_EVENTS_AFTER, 7)
    } else {
        (LIST_EVENTS, 6)
    };
    many(c, sql, a.get(..n).unwrap_or(a)).await
}

// ---- writes ----

/// A write, owned so that it can travel to the SQLite writer task. Applied by
/// [`apply`] inside a transaction (SQLite: a savepoint of a group commit).
#[derive(Debug)]
pub(crate) enum WriteOp {
    CreateAccount {
        account: AccountRecord,
        data_keys: Vec<DataKeyRecord>,
        events: Vec<EventRecord>,
    },
    UpdateAccount {
        account: AccountRecord,
    },
    InsertApiKey {
        key: ApiKeyRecord,
        events: Vec<EventRecord>,
    },
    RevokeApiKey {
        account_id: Option<String>,
        key_id: String,
        now_ms: i64,
        events: Vec<EventRecord>,
    },
    RotateDataKey {
        new_key: DataKeyRecord,
        events: Vec<EventRecord>,
    },
    RetireDataKey {
        account_id: String,
        purpose: KeyPurpose,
        version: i64,
        now_ms: i64,
    },
    InsertCard {
        card: CardRecord,
        dedup: Vec<(i64, Vec<u8>)>,
        events: Vec<EventRecord>,
    },
    DeleteCard {
        account_id: String,
        mode: Mode,
        id: String,
        events: Vec<EventRecord>,
    },
    RewrapCards {
        updates: Vec<CardRewrap>,
    },
    InsertOtp {
        otp: OtpRecord,
        events: Vec<EventRecord>,
    },
    OtpFail {
        id: String,
    },
    OtpConsume {
        id: String,
        now_ms: i64,
        max_attempts: i64,
        events: Vec<EventRecord>,
    },
    Controls(crate::controls::Op),
    Pin(crate::pin::Op),
    Audit(crate::audit::Op),
    Tokens(crate::tokens::Op),
    Webhook(crate::webhooks::Op),
}

/// What a [`WriteOp`] returns.
#[derive(Debug)]
pub(crate) enum WriteReply {
    Done,
    Flag(bool),
    Count(i64),
    ApiKey(Option<ApiKeyRecord>),
    Card(InsertCard),
    Retire(RetireOutcome),
    Controls(crate::controls::Reply),
    Pin(crate::pin::Reply),
    Audit(crate::audit::Reply),
    Webhook(crate::webhooks::Reply),
}

fn unexpected() -> StoreError {
    StoreError::Corrupt("unexpected reply from the writer".into())
}

impl WriteReply {
    pub(crate) fn done(self) -> StoreResult<()> {
        match self {
            Self::Done => Ok(()),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn flag(self) -> StoreResult<bool> {
        match self {
            Self::Flag(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn count(self) -> StoreResult<i64> {
        match self {
            Self::Count(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn api_key(self) -> StoreResult<Option<ApiKeyRecord>> {
        match self {
            Self::ApiKey(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn card(self) -> StoreResult<InsertCard> {
        match self {
            Self::Card(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn retire(self) -> StoreResult<RetireOutcome> {
        match self {
            Self::Retire(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
}

/// Applies one write on a connection that is inside a transaction. On error the caller
/// rolls back (the transaction, or the op's savepoint).
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &WriteOp) -> StoreResult<WriteReply> {
    match op {
        WriteOp::CreateAccount {
            account: a,
            data_keys,
            events,
        } => {
            let args = args![&a.id, &a.name, a.otp_delivery_url.as_deref(), a.created_ms];
            c.exec(INSERT_ACCOUNT, args).await?;
            for k in data_keys {
                insert_data_key(c, k).await?;
            }
            insert_events(c, events).await?;
            Ok(WriteReply::Done)
        }
        WriteOp::UpdateAccount { account: a } => {
            let args = args![&a.id, &a.name, a.otp_delivery_url.as_deref()];
            let n = c.exec(UPDATE_ACCOUNT, args).await?;
            Ok(WriteReply::Flag(n > 0))
        }
        WriteOp::InsertApiKey { key: k, events } => {
            let args = args![
                &k.id,
                k.account_id.as_deref(),
                &k.kind,
                k.mode.as_str(),
                &k.prefix,
                &k.digest,
                &k.scopes,
                k.created_ms,
                k.revoked_ms
            ];
            c.exec(INSERT_API_KEY, args).await?;
            insert_events(c, events).await?;
            Ok(WriteReply::Done)
        }
        WriteOp::RevokeApiKey {
            account_id,
            key_id,
            now_ms,
            events,
        } => {
            let args = args![key_id, account_id.as_deref(), *now_ms];
            let key: Option<ApiKeyRecord> = one(c, REVOKE_API_KEY, args).await?;
            if key.is_some() {
                insert_events(c, events).await?;
            }
            Ok(WriteReply::ApiKey(key))
        }
        WriteOp::RotateDataKey { new_key: k, events } => {
            let purpose = k.purpose.as_str();
            c.exec(DEMOTE_ACTIVE, args![&k.account_id, purpose]).await?;
            insert_data_key(c, k).await.map_err(|e| match e {
                StoreError::Conflict(_) => StoreError::Conflict("data key version exists"),
                other => other,
            })?;
            insert_events(c, events).await?;
            Ok(WriteReply::Done)
        }
        WriteOp::RetireDataKey {
            account_id,
            purpose,
            version,
            now_ms,
        } => retire_data_key(c, account_id, *purpose, *version, *now_ms)
            .await
            .map(WriteReply::Retire),
        WriteOp::InsertCard {
            card,
            dedup,
            events,
        } => insert_card(c, card, dedup, events)
            .await
            .map(WriteReply::Card),
        WriteOp::DeleteCard {
            account_id,
            mode,
            id,
            events,
        } => {
            let n = c
                .exec(DELETE_CARD, args![account_id, mode.as_str(), id])
                .await?;
            if n > 0 {
                insert_events(c, events).await?;
            }
            Ok(WriteReply::Flag(n > 0))
        }
        WriteOp::RewrapCards { updates } => {
            let mut applied: u64 = 0;
            for u in updates {
                let args = args![
                    &u.id,
                    &u.sealed,
                    u.key_version,
                    &u.fingerprint,
                    u.fp_version,
                    u.expect_key_version,
                    u.expect_fp_version
                ];
                applied = applied.saturating_add(c.exec(REWRAP_CARD, args).await?);
            }
            Ok(WriteReply::Count(
                i64::try_from(applied).unwrap_or(i64::MAX),
            ))
        }
        WriteOp::InsertOtp { otp: o, events } => {
            let args = args![
                &o.id,
                &o.account_id,
                o.mode.as_str(),
                &o.purpose,
                o.card_id.as_deref(),
                &o.api_key_id,
                &o.code_digest,
                o.created_ms,
                o.expires_ms,
                o.attempts,
                o.used_ms
            ];
            c.exec(INSERT_OTP, args).await?;
            insert_events(c, events).await?;
            Ok(WriteReply::Done)
        }
        WriteOp::OtpFail { id } => {
            let row = c.opt(OTP_FAIL, args![id]).await?;
            Ok(WriteReply::Count(match row {
                Some(r) => r.int(0)?,
                None => 0,
            }))
        }
        WriteOp::OtpConsume {
            id,
            now_ms,
            max_attempts,
            events,
        } => {
            let n = c
                .exec(OTP_CONSUME, args![id, *now_ms, *max_attempts])
                .await?;
            if n == 1 {
                insert_events(c, events).await?;
            }
            Ok(WriteReply::Flag(n == 1))
        }
        WriteOp::Controls(op) => crate::controls::apply(c, op).await,
        WriteOp::Pin(op) => crate::pin::apply(c, op).await.map(WriteReply::Pin),
        WriteOp::Audit(op) => crate::audit::apply(c, op).await,
        WriteOp::Tokens(op) => crate::tokens::apply(c, op).await,
        WriteOp::Webhook(op) => crate::webhooks::apply(c, op).await.map(WriteReply::Webhook),
    }
}

async fn insert_data_key<C: Exec>(c: &mut C, k: &DataKeyRecord) -> StoreResult<()> {
    let args = args![
        &k.account_id,
        k.purpose.as_str(),
        k.version,
        &k.wrapped,
        k.state.as_str(),
        k.created_ms,
        k.retired_ms
    ];
    c.exec(INSERT_DATA_KEY, args).await.map(drop)
}

pub(crate) async fn insert_events<C: Exec>(c: &mut C, events: &[EventRecord]) -> StoreResult<()> {
    for e in events {
        let args = args![
            &e.id,
            &e.account_id,
            e.mode.as_str(),
            &e.event_type,
            e.created_ms,
            &e.data
        ];
        c.exec(INSERT_EVENT, args).await?;
        crate::webhooks::fan_out(c, e).await?;
    }
    Ok(())
}

async fn insert_card<C: Exec>(
    c: &mut C,
    card: &CardRecord,
    dedup: &[(i64, Vec<u8>)],
    events: &[EventRecord],
) -> StoreResult<InsertCard> {
    let mode = card.mode.as_str();
    // Fingerprints under other key versions: only a lookup can find them. The card's
    // own fingerprint is settled by the unique index below, which is race-free across
    // concurrent transactions and nodes.
    for (version, fp) in dedup.iter().filter(|(_, fp)| *fp != card.fingerprint) {
        let a = args![&card.account_id, mode, fp, *version];
        if let Some(existing) = one(c, CARD_BY_FP_VERSION, a).await? {
            return Ok(InsertCard::Existing(existing));
        }
    }
    let args = args![
        &card.id,
        &card.account_id,
        mode,
        &card.fingerprint,
        card.fp_version,
        card.key_version,
        &card.sealed,
        &card.brand,
        &card.bin,
        &card.last4,
        card.exp_month,
        card.exp_year,
        card.created_ms
    ];
    if c.opt(INSERT_CARD, args).await?.is_some() {
        insert_events(c, events).await?;
        return Ok(InsertCard::Created(card.clone()));
    }
    let a = args![&card.account_id, mode, &card.fingerprint];
    match one(c, CARD_BY_FP, a).await? {
        Some(existing) => Ok(InsertCard::Existing(existing)),
        // The holder of the fingerprint was deleted between our insert and this read.
        None => Err(StoreError::Conflict("card changed concurrently; retry")),
    }
}

async fn retire_data_key<C: Exec>(
    c: &mut C,
    account_id: &str,
    purpose: KeyPurpose,
    version: i64,
    now_ms: i64,
) -> StoreResult<RetireOutcome> {
    let row = c
        .opt(DATA_KEY_STATE, args![account_id, purpose.as_str(), version])
        .await?;
    let state = match row {
        None => return Ok(RetireOutcome::NotFound),
        Some(r) => key_state(&r.text(0)?)?,
    };
    match state {
        KeyState::Active => return Ok(RetireOutcome::Active),
        KeyState::Retired => return Ok(RetireOutcome::Retired),
        KeyState::DecryptOnly => {}
    }
    let count_sql = match purpose {
        KeyPurpose::Cards => COUNT_CARDS_KEY_VERSION,
        KeyPurpose::Fingerprint => COUNT_CARDS_FP_VERSION,
        KeyPurpose::Pin => crate::pin::COUNT_PIN_KEY_VERSION,
    };
    let in_use = match c.opt(count_sql, args![account_id, version]).await? {
        Some(r) => r.int(0)?,
        None => 0,
    };
    if in_use > 0 {
        return Ok(RetireOutcome::InUse(in_use));
    }
    let empty: &[u8] = &[];
    let a = args![account_id, purpose.as_str(), version, empty, now_ms];
    c.exec(RETIRE_DATA_KEY, a).await?;
    Ok(RetireOutcome::Retired)
}
