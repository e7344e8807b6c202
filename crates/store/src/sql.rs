//! Every SQL text and every operation, written once for both backends.
//!
//! Parameters are `$1, $2 …` (PostgreSQL's syntax; SQLite reads `$N` as a named
//! parameter and sqlx binds it by number). Only portable SQL is used: `ON CONFLICT …
//! DO NOTHING`, `RETURNING`, `IS NOT DISTINCT FROM`, partial indexes.

use crate::exec::{Arg, Exec, RowGet, args};
use crate::{
    AccountRecord, ApiKeyRecord, CardRecord, CardRewrap, DataKeyRecord, EventRecord, InsertCard,
    KeyPurpose, KeyState, ListCards, ListEvents, Mode, OtpRecord, RetireOutcome, RewrapQuery,
    StoreError, StoreResult,
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
/// Revokes a key (keeping the first revocation time). The last admin key that is not
/// revoked stays: there must always be a way back in. The check runs in the writer's
/// transaction, so two revocations racing for the last two keys cannot both pass it.
const REVOKE_API_KEY: &str = concat!(
    "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $3) \
     WHERE id = $1 AND account_id IS NOT DISTINCT FROM $2 \
     AND (account_id IS NOT NULL OR revoked_ms IS NOT NULL OR EXISTS (SELECT 1 FROM api_keys o \
     WHERE o.account_id IS NULL AND o.revoked_ms IS NULL AND o.id <> $1)) RETURNING ",
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
// The counts come from `card_key_counts` (kept by triggers on `cards`; on SQLite a new
// card's count is bumped by `COUNT_CARD_INSERT`, migration 0010); `SUM` is
// `numeric` on PostgreSQL, hence the casts.
const USAGE_CARDS: &str = "SELECT key_version, CAST(SUM(cards) AS BIGINT) FROM card_key_counts \
     WHERE account_id = $1 GROUP BY key_version HAVING SUM(cards) > 0 ORDER BY key_version";
const USAGE_FINGERPRINT: &str = "SELECT fp_version, CAST(SUM(cards) AS BIGINT) FROM card_key_counts \
     WHERE account_id = $1 GROUP BY fp_version HAVING SUM(cards) > 0 ORDER BY fp_version";
const COUNT_CARDS_KEY_VERSION: &str = "SELECT CAST(COALESCE(SUM(cards), 0) AS BIGINT) \
     FROM card_key_counts WHERE account_id = $1 AND key_version = $2";
const COUNT_CARDS_FP_VERSION: &str = "SELECT CAST(COALESCE(SUM(cards), 0) AS BIGINT) \
     FROM card_key_counts WHERE account_id = $1 AND fp_version = $2";

/// The leading bytes of a fingerprint, which SQLite indexes instead of the whole
/// fingerprint (`cards_fp_prefix`, migration 0009). Every lookup by fingerprint says it
/// beside the full comparison, so SQLite finds the card through that index; PostgreSQL
/// finds it through its unique index and checks the prefix on the one row.
macro_rules! fp_prefix {
    ($p:literal) => {
        concat!("substr(fingerprint, 1, 8) = substr(", $p, ", 1, 8)")
    };
}
const CARD_BY_FP_VERSION: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE ",
    fp_prefix!("$3"),
    " AND account_id = $1 AND mode = $2 AND fingerprint = $3 AND fp_version = $4"
);
const CARD_BY_FP: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE ",
    fp_prefix!("$3"),
    " AND account_id = $1 AND mode = $2 AND fingerprint = $3"
);
/// SQLite: the insert after the lookup ([`insert_card`]), under the row id its id gives
/// ([`strongroom_core::row_hint`], `$14`) unless that is taken or missing, when SQLite
/// picks one. A read by id then finds the card in the table itself ([`GET_CARD_AT`]).
const INSERT_CARD_VALUES: &str = concat!(
    "INSERT INTO cards (rowid, ",
    card_cols!(),
    ") VALUES (CASE WHEN $14 IS NULL OR EXISTS (SELECT 1 FROM cards WHERE rowid = $14) \
     THEN NULL ELSE $14 END, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
);
/// SQLite: a new card's count, right after [`INSERT_CARD_VALUES`] (a trigger on PostgreSQL).
const COUNT_CARD_INSERT: &str = "INSERT INTO card_key_counts \
     (account_id, key_version, fp_version, cards) VALUES ($1, $2, $3, 1) \
     ON CONFLICT (account_id, key_version, fp_version) DO UPDATE SET cards = cards + 1";
/// PostgreSQL: the unique index settles the fingerprint.
const INSERT_CARD: &str = concat!(
    "INSERT INTO cards (",
    card_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (account_id, mode, fingerprint) DO NOTHING RETURNING id"
);
/// PostgreSQL: a batch's new cards in one statement, with their events and the events'
/// webhook deliveries, from parallel arrays (`UNNEST`). Every statement costs the
/// database as much again as the rows it writes, and the writer waits for each, so three
/// statements per card became one per batch. Events go in only for the cards that were
/// inserted (`$14`, the card each event belongs to); the ids returned are those cards.
const INSERT_CARDS_BULK: &str = concat!(
    "WITH n AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], \
     $5::int8[], $6::int8[], $7::bytea[], $8::text[], $9::text[], $10::text[], $11::int8[], \
     $12::int8[], $13::int8[]) WITH ORDINALITY AS n (",
    card_cols!(),
    ", ord)), c AS (INSERT INTO cards (",
    card_cols!(),
    ") SELECT ",
    card_cols!(),
    " FROM n ORDER BY ord ON CONFLICT (account_id, mode, fingerprint) DO NOTHING RETURNING id), \
     v AS (INSERT INTO events (",
    event_cols!(),
    ") SELECT x.id, x.account_id, x.mode, x.event_type, x.created_ms, x.data \
     FROM UNNEST($14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
     $19::int8[], $20::text[]) WITH ORDINALITY \
     AS x (card_id, id, account_id, mode, event_type, created_ms, data, ord) \
     JOIN c ON c.id = x.card_id ORDER BY x.ord \
     RETURNING id, account_id, mode, event_type, created_ms), \
     w AS (",
    crate::webhooks::delivery_insert!(),
    "SELECT v.id || ':' || e.id, v.id, e.id, v.account_id, 'pending', 0, v.created_ms, \
     v.created_ms FROM v JOIN webhook_endpoints e ON ",
    crate::webhooks::fan_out_match!("v.account_id", "v.mode", "v.event_type"),
    ") SELECT id FROM c"
);
const GET_CARD: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND id = $3"
);
/// SQLite: [`GET_CARD`] at the row id the card's id gives (`$4`), one B-tree walk instead
/// of two; no row when the card is elsewhere (made before row ids came from ids, or its
/// row id was taken), and then [`GET_CARD`] finds it.
pub(crate) const GET_CARD_AT: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE rowid = $4 AND account_id = $1 AND mode = $2 AND id = $3"
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
// The fingerprint is unique per account and mode, so this finds at most one row; it has
// no `ORDER BY id`, which would lead SQLite to walk the account's cards along `cards_list`
// (in order) instead of looking the fingerprint up.
const LIST_CARDS_FP: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE ",
    fp_prefix!("$5"),
    " AND account_id = $1 AND mode = $2 AND fingerprint = $5 \
     AND ($4 IS NULL OR id < $4) LIMIT $3"
);
/// The statements that find cards by fingerprint (their query plans are checked).
#[cfg(test)]
pub(crate) const FINGERPRINT_LOOKUPS: [&str; 3] = [CARD_BY_FP, CARD_BY_FP_VERSION, LIST_CARDS_FP];

const DELETE_CARD: &str = "DELETE FROM cards WHERE account_id = $1 AND mode = $2 AND id = $3";
const RENEW_CARD_EXPIRY: &str = concat!(
    "UPDATE cards SET exp_month = $4, exp_year = $5 \
     WHERE account_id = $1 AND mode = $2 AND id = $3 \
     AND exp_year * 100 + exp_month < $5 * 100 + $4 RETURNING ",
    card_cols!()
);
// One mode at a time along `cards_list`, after a cursor: a whole pass reads each card of
// the account once, however many are stale.
const REWRAP_CARDS: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND id > $3 AND key_version < $4 \
     ORDER BY id LIMIT $5"
);
const REWRAP_FINGERPRINTS: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND id > $3 AND fp_version < $4 \
     ORDER BY id LIMIT $5"
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
    let mode = mode.as_str();
    if let Some(rowid) = strongroom_core::row_hint(id).filter(|_| C::ROWID_FROM_ID)
        && let Some(card) = one(c, GET_CARD_AT, args![account_id, mode, id, rowid]).await?
    {
        return Ok(Some(card));
    }
    one(c, GET_CARD, args![account_id, mode, id]).await
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
    q: &RewrapQuery<'_>,
) -> StoreResult<Vec<CardRecord>> {
    let sql = match purpose {
        KeyPurpose::Cards => REWRAP_CARDS,
        KeyPurpose::Fingerprint => REWRAP_FINGERPRINTS,
        // PINs are not cards: see `PinStore::pins_for_rewrap`.
        KeyPurpose::Pin => return Ok(Vec::new()),
    };
    let args = args![
        account_id,
        q.mode.as_str(),
        q.after,
        q.below_version,
        q.limit.max(0)
    ];
    many(c, sql, args).await
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
    RenewCardExpiry {
        account_id: String,
        mode: Mode,
        id: String,
        exp_month: i64,
        exp_year: i64,
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
    Renewed(Option<CardRecord>),
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
    pub(crate) fn renewed(self) -> StoreResult<Option<CardRecord>> {
        match self {
            Self::Renewed(v) => Ok(v),
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
        WriteOp::RenewCardExpiry {
            account_id,
            mode,
            id,
            exp_month,
            exp_year,
            events,
        } => {
            let a = args![account_id, mode.as_str(), id, *exp_month, *exp_year];
            let card: Option<CardRecord> = one(c, RENEW_CARD_EXPIRY, a).await?;
            if card.is_some() {
                insert_events(c, events).await?;
            }
            Ok(WriteReply::Renewed(card))
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
    if let Some(done) = c.bulk_card() {
        return Ok(done);
    }
    let mode = card.mode.as_str();
    // Fingerprints under other key versions: only a lookup can find them. The card's
    // own fingerprint is settled below: on PostgreSQL by the unique index, which is
    // race-free across concurrent transactions and nodes; on SQLite by a lookup inside
    // the one write transaction SQLite allows at a time.
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
        card.created_ms,
        strongroom_core::row_hint(&card.id)
    ];
    let by_fp = args![&card.account_id, mode, &card.fingerprint];
    if C::FINGERPRINT_LOOKUP {
        // SQLite indexes a prefix of the fingerprint, not unique (migration 0009): a
        // fifth of the size, so fewer pages for each group commit to write and for
        // the checkpoint to copy. The lookup and the insert run in the writer's one
        // transaction, and SQLite lets one write transaction run at a time (`BEGIN
        // IMMEDIATE`, across processes too), so nothing can come between them.
        if let Some(existing) = one(c, CARD_BY_FP, by_fp).await? {
            return Ok(InsertCard::Existing(existing));
        }
        c.exec(INSERT_CARD_VALUES, args).await?;
        let count = args![&card.account_id, card.key_version, card.fp_version];
        c.exec(COUNT_CARD_INSERT, count).await?;
        insert_events(c, events).await?;
        return Ok(InsertCard::Created(card.clone()));
    }
    // PostgreSQL wants exactly as many values as the text has parameters.
    if c.opt(INSERT_CARD, args.get(..13).unwrap_or(args))
        .await?
        .is_some()
    {
        insert_events(c, events).await?;
        return Ok(InsertCard::Created(card.clone()));
    }
    match one(c, CARD_BY_FP, by_fp).await? {
        Some(existing) => Ok(InsertCard::Existing(existing)),
        // The holder of the fingerprint was deleted between our insert and this read.
        None => Err(StoreError::Conflict("card changed concurrently; retry")),
    }
}

/// A card to insert, with its events.
type NewCard<'o> = (&'o CardRecord, &'o [EventRecord]);

/// The card inserts of a batch that can share one statement, by batch index: a card
/// insert (bare or under its audit wrapper) whose only fingerprint is the card's own
/// (during a fingerprint-key rotation, lookups under older versions come first, one by
/// one). `None` when another write of the batch changes cards (a delete, a re-wrap):
/// then the batch applies its writes one at a time, in order.
fn bulk_cards<'o>(ops: impl Iterator<Item = &'o WriteOp>) -> Option<Vec<Option<NewCard<'o>>>> {
    let mut out = Vec::new();
    for op in ops {
        out.push(match crate::audit::inner(op) {
            WriteOp::InsertCard {
                card,
                dedup,
                events,
            } if dedup.iter().all(|(_, fp)| *fp == card.fingerprint) => {
                Some((card, events.as_slice()))
            }
            WriteOp::DeleteCard { .. } | WriteOp::RewrapCards { .. } => return None,
            _ => None,
        });
    }
    Some(out)
}

/// PostgreSQL: inserts the batch's eligible cards ([`bulk_cards`]), their events and
/// webhook deliveries in one statement, inside the batch's transaction. Returns each
/// write's outcome by batch index (empty when nothing was eligible); the writer hands
/// them out as it applies the writes in order ([`Exec::bulk_card`]). A card whose
/// fingerprint was there already (or came twice in this batch) is read back, as
/// [`insert_card`] does.
pub(crate) async fn insert_cards_bulk<'o, C: Exec>(
    c: &mut C,
    ops: impl Iterator<Item = &'o WriteOp>,
) -> StoreResult<Vec<Option<InsertCard>>> {
    let Some(slots) = bulk_cards(ops) else {
        return Ok(Vec::new());
    };
    let cards: Vec<&CardRecord> = slots.iter().flatten().map(|(card, _)| *card).collect();
    if cards.is_empty() {
        return Ok(Vec::new());
    }
    let text = |f: fn(&CardRecord) -> &str| cards.iter().map(|c| f(c)).collect::<Vec<&str>>();
    let int = |f: fn(&CardRecord) -> i64| cards.iter().map(|c| f(c)).collect::<Vec<i64>>();
    let blob = |f: fn(&CardRecord) -> &[u8]| cards.iter().map(|c| f(c)).collect::<Vec<&[u8]>>();
    let (ids, accounts, modes) = (
        text(|c| &c.id),
        text(|c| &c.account_id),
        text(|c| c.mode.as_str()),
    );
    let (fps, sealed) = (blob(|c| &c.fingerprint), blob(|c| &c.sealed));
    let (fp_versions, key_versions) = (int(|c| c.fp_version), int(|c| c.key_version));
    let (brands, bins, last4s) = (text(|c| &c.brand), text(|c| &c.bin), text(|c| &c.last4));
    let (months, years, created) = (
        int(|c| c.exp_month),
        int(|c| c.exp_year),
        int(|c| c.created_ms),
    );
    let events: Vec<(&'o str, &'o EventRecord)> = slots
        .iter()
        .flatten()
        .flat_map(|(card, evs)| evs.iter().map(|e| (card.id.as_str(), e)))
        .collect();
    let ev_text =
        |f: fn(&(&'o str, &'o EventRecord)) -> &'o str| events.iter().map(f).collect::<Vec<&str>>();
    let ev_cards = ev_text(|(card, _)| card);
    let (ev_ids, ev_accounts) = (ev_text(|(_, e)| &e.id), ev_text(|(_, e)| &e.account_id));
    let (ev_modes, ev_types) = (
        ev_text(|(_, e)| e.mode.as_str()),
        ev_text(|(_, e)| &e.event_type),
    );
    let ev_data = ev_text(|(_, e)| &e.data);
    let ev_created: Vec<i64> = events.iter().map(|(_, e)| e.created_ms).collect();
    let args = [
        Arg::Texts(&ids),
        Arg::Texts(&accounts),
        Arg::Texts(&modes),
        Arg::Blobs(&fps),
        Arg::Ints(&fp_versions),
        Arg::Ints(&key_versions),
        Arg::Blobs(&sealed),
        Arg::Texts(&brands),
        Arg::Texts(&bins),
        Arg::Texts(&last4s),
        Arg::Ints(&months),
        Arg::Ints(&years),
        Arg::Ints(&created),
        Arg::Texts(&ev_cards),
        Arg::Texts(&ev_ids),
        Arg::Texts(&ev_accounts),
        Arg::Texts(&ev_modes),
        Arg::Texts(&ev_types),
        Arg::Ints(&ev_created),
        Arg::Texts(&ev_data),
    ];
    let rows = c.all(INSERT_CARDS_BULK, &args).await?;
    let inserted = rows
        .iter()
        .map(|r| r.text(0))
        .collect::<StoreResult<std::collections::HashSet<String>>>()?;
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        out.push(match slot {
            None => None,
            Some((card, _)) if inserted.contains(&card.id) => {
                Some(InsertCard::Created(card.clone()))
            }
            Some((card, _)) => {
                let a = args![&card.account_id, card.mode.as_str(), &card.fingerprint];
                match one(c, CARD_BY_FP, a).await? {
                    Some(existing) => Some(InsertCard::Existing(existing)),
                    None => return Err(StoreError::Conflict("card changed concurrently; retry")),
                }
            }
        });
    }
    Ok(out)
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
