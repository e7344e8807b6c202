//! Column lists and row decoding: each record's columns in one order, which the SQL texts
//! select and [`FromRow`] reads.

use crate::exec::{Arg, Exec, RowGet};
use crate::{
    AccountRecord, ApiKeyRecord, CardRecord, DataKeyRecord, EventRecord, KeyPurpose, KeyState,
    Mode, OtpRecord, StoreError, StoreResult,
};

// ---- column lists, in the order the decoders below read them ----

macro_rules! account_cols {
    () => {
        "id, name, otp_delivery_url, created_ms"
    };
}
macro_rules! api_key_cols {
    () => {
        "id, account_id, kind, mode, prefix, digest, scopes, created_ms, revoked_ms, name"
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
            name: r.opt_text(9)?,
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

pub(crate) fn key_state(s: &str) -> StoreResult<KeyState> {
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
    a: &[Arg<'_>],
) -> StoreResult<Option<T>> {
    c.opt(sql, a).await?.as_ref().map(T::from_row).transpose()
}

pub(crate) async fn many<C: Exec, T: FromRow>(
    c: &mut C,
    sql: &'static str,
    a: &[Arg<'_>],
) -> StoreResult<Vec<T>> {
    c.all(sql, a).await?.iter().map(T::from_row).collect()
}
