//! One-time passwords: stored as a code digest, counted wrong tries, consumed once.

use crate::exec::{Exec, RowGet, args};
use crate::sql::events::insert_events;
use crate::sql::rows::one;
use crate::{EventRecord, OtpRecord, StoreResult};

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

pub(crate) async fn get_otp<C: Exec>(
    c: &mut C,
    account_id: &str,
    id: &str,
) -> StoreResult<Option<OtpRecord>> {
    one(c, GET_OTP, args![account_id, id]).await
}

/// Stores an OTP and its events.
pub(crate) async fn insert_otp<C: Exec>(
    c: &mut C,
    o: &OtpRecord,
    events: &[EventRecord],
) -> StoreResult<()> {
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
    insert_events(c, events).await
}

/// Counts a wrong code; returns the new count (0: no such OTP).
pub(crate) async fn otp_fail<C: Exec>(c: &mut C, id: &str) -> StoreResult<i64> {
    match c.opt(OTP_FAIL, args![id]).await? {
        Some(r) => r.int(0),
        None => Ok(0),
    }
}

/// Consumes the OTP if it is still usable; its events are written only then.
pub(crate) async fn otp_consume<C: Exec>(
    c: &mut C,
    id: &str,
    now_ms: i64,
    max_attempts: i64,
    events: &[EventRecord],
) -> StoreResult<bool> {
    let n = c.exec(OTP_CONSUME, args![id, now_ms, max_attempts]).await?;
    if n == 1 {
        insert_events(c, events).await?;
    }
    Ok(n == 1)
}
