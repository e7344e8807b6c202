//! Accounts, their API keys and their data keys.

use crate::exec::{Exec, RowGet, args};
use crate::sql::events::insert_events;
use crate::sql::rows::{key_state, many, one};
use crate::{
    AccountRecord, ApiKeyRecord, DataKeyRecord, EventRecord, KeyPurpose, KeyState, RetireOutcome,
    StoreError, StoreResult,
};

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
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
);
const API_KEY_BY_DIGEST: &str = concat!(
    "SELECT ",
    api_key_cols!(),
    " FROM api_keys WHERE digest = $1"
);
/// An API key with its account's controls and its own allowlist: the key's columns,
/// then `account_controls`' eight (all NULL when the account has none), then the key's
/// allowlist (NULL when none).
pub(crate) const KEY_WITH_CONTROLS: &str = concat!(
    "SELECT k.*, c.account_id, c.require_signed_requests, c.ip_allowlist, \
     c.rate_limit_per_minute, c.updated_ms, c.risk_mode, c.time_zone, c.require_attestation, \
     kc.ip_allowlist \
     FROM (SELECT ",
    api_key_cols!(),
    " FROM api_keys WHERE digest = $1) k \
     LEFT JOIN account_controls c ON c.account_id = k.account_id \
     LEFT JOIN api_key_controls kc ON kc.key_id = k.id"
);
/// Columns of [`api_key_cols`].
pub(crate) const API_KEY_COLS: usize = 10;
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

/// Creates an account with its first data keys and its events.
pub(crate) async fn create_account<C: Exec>(
    c: &mut C,
    a: &AccountRecord,
    data_keys: &[DataKeyRecord],
    events: &[EventRecord],
) -> StoreResult<()> {
    let args = args![&a.id, &a.name, a.otp_delivery_url.as_deref(), a.created_ms];
    c.exec(INSERT_ACCOUNT, args).await?;
    for k in data_keys {
        insert_data_key(c, k).await?;
    }
    insert_events(c, events).await
}

/// Updates an account's settings; false if it is absent.
pub(crate) async fn update_account<C: Exec>(c: &mut C, a: &AccountRecord) -> StoreResult<bool> {
    let args = args![&a.id, &a.name, a.otp_delivery_url.as_deref()];
    Ok(c.exec(UPDATE_ACCOUNT, args).await? > 0)
}

/// Stores an API key (its digest) and its events.
pub(crate) async fn insert_api_key<C: Exec>(
    c: &mut C,
    k: &ApiKeyRecord,
    events: &[EventRecord],
) -> StoreResult<()> {
    let args = args![
        &k.id,
        k.account_id.as_deref(),
        &k.kind,
        k.mode.as_str(),
        &k.prefix,
        &k.digest,
        &k.scopes,
        k.created_ms,
        k.revoked_ms,
        k.name.as_deref()
    ];
    c.exec(INSERT_API_KEY, args).await?;
    insert_events(c, events).await
}

/// Revokes a key ([`REVOKE_API_KEY`]); its events are written only if it was found.
pub(crate) async fn revoke_api_key<C: Exec>(
    c: &mut C,
    account_id: Option<&str>,
    key_id: &str,
    now_ms: i64,
    events: &[EventRecord],
) -> StoreResult<Option<ApiKeyRecord>> {
    let args = args![key_id, account_id, now_ms];
    let key: Option<ApiKeyRecord> = one(c, REVOKE_API_KEY, args).await?;
    if key.is_some() {
        insert_events(c, events).await?;
    }
    Ok(key)
}

/// Demotes the purpose's active key and inserts `k` as the new active one.
pub(crate) async fn rotate_data_key<C: Exec>(
    c: &mut C,
    k: &DataKeyRecord,
    events: &[EventRecord],
) -> StoreResult<()> {
    let purpose = k.purpose.as_str();
    c.exec(DEMOTE_ACTIVE, args![&k.account_id, purpose]).await?;
    insert_data_key(c, k).await.map_err(|e| match e {
        StoreError::Conflict(_) => StoreError::Conflict("data key version exists"),
        other => other,
    })?;
    insert_events(c, events).await
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

pub(crate) async fn retire_data_key<C: Exec>(
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
