//! Storage of the PIN service: enciphered PIN blocks with their failure counter and
//! lock, per-account lockout settings, spent payload ids, and the wrapped RSA transport
//! keys. The store never sees a clear PIN: a block is enciphered under the account's
//! `pin` data key before it arrives here.

use crate::exec::{Exec, RowGet, args};
use crate::sql::{FromRow, insert_events};
use crate::{EventRecord, Mode, StoreError, StoreResult};

/// A card's PIN: its enciphered block and its lockout state.
#[derive(Clone, PartialEq, Eq)]
pub struct PinRecord {
    /// The card (one PIN per card).
    pub card_id: String,
    /// Owning account.
    pub account_id: String,
    /// Test or live.
    pub mode: Mode,
    /// `pin` data-key version that enciphered `block`.
    pub key_version: i64,
    /// ISO 9564-1 format 4 block, AES-256-enciphered under the PIN key (16 bytes).
    pub block: Vec<u8>,
    /// Consecutive failed verifications or changes.
    pub failures: i64,
    /// Locked after too many failures, until a reset or an unlock.
    pub locked: bool,
    /// Last change.
    pub updated_ms: i64,
}

impl std::fmt::Debug for PinRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinRecord")
            .field("card_id", &self.card_id)
            .field("key_version", &self.key_version)
            .field("block", &"[REDACTED]")
            .field("failures", &self.failures)
            .field("locked", &self.locked)
            .finish()
    }
}

/// A wrapped RSA transport key.
#[derive(Clone, PartialEq, Eq)]
pub struct TransportKeyRecord {
    /// Key id, as in the JWK and the JWE header.
    pub kid: String,
    /// PKCS#8, wrapped by the root key.
    pub wrapped: Vec<u8>,
    /// When it was made.
    pub created_ms: i64,
    /// After this it no longer decrypts (set when a newer key replaces it).
    pub retire_after_ms: Option<i64>,
}

impl std::fmt::Debug for TransportKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportKeyRecord")
            .field("kid", &self.kid)
            .field("created_ms", &self.created_ms)
            .field("retire_after_ms", &self.retire_after_ms)
            .finish()
    }
}

/// How a PIN is being set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// First PIN of the card (`pin.set` OTP): refused if one exists.
    Initial,
    /// Replace whatever is there and unlock (`pin.reset` OTP).
    Reset,
}

/// An OTP to spend in the same transaction as a PIN change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendOtp {
    /// `otp_…`
    pub id: String,
    /// The purpose it must have.
    pub purpose: String,
    /// Now.
    pub now_ms: i64,
    /// Wrong codes after which it is dead.
    pub max_attempts: i64,
}

/// The outcome of a PIN write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    /// Done.
    Done,
    /// The card has no PIN.
    Missing,
    /// The PIN is locked.
    Locked,
    /// `SetKind::Initial` on a card that has a PIN.
    AlreadySet,
    /// The OTP was used, expired, dead, or not for this purpose and card.
    OtpInvalid,
    /// A failure was counted; the PIN is now locked if `locked`.
    Failed {
        /// Consecutive failures now.
        failures: i64,
        /// Whether this failure locked it.
        locked: bool,
    },
    /// The PIN changed under us (a concurrent change); nothing was written.
    Changed,
}

/// One PIN re-enciphered under a newer key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRewrap {
    /// The card.
    pub card_id: String,
    /// The version it must still have.
    pub expect_key_version: i64,
    /// The block it must still have.
    pub expect_block: Vec<u8>,
    /// New version.
    pub key_version: i64,
    /// New block.
    pub block: Vec<u8>,
}

/// The PIN service's storage, implemented for [`Store`].
#[allow(async_fn_in_trait)]
pub trait PinStore {
    /// Every transport key, oldest first.
    async fn pin_transport_keys(&self) -> StoreResult<Vec<TransportKeyRecord>>;
    /// A card's PIN.
    async fn get_pin(
        &self,
        account_id: &str,
        mode: Mode,
        card_id: &str,
    ) -> StoreResult<Option<PinRecord>>;
    /// The account and mode of the card whose PIN this is (for operator actions).
    async fn pin_owner(&self, card_id: &str) -> StoreResult<Option<(String, Mode)>>;
    /// The account's lockout threshold, if one was set.
    async fn pin_max_failures(&self, account_id: &str) -> StoreResult<Option<i64>>;
    /// Up to `limit` PINs of the account under a `pin` key version below `below_version`.
    async fn pins_for_rewrap(
        &self,
        account_id: &str,
        below_version: i64,
        limit: i64,
    ) -> StoreResult<Vec<PinRecord>>;
}

// ---- SQL ----

macro_rules! pin_cols {
    () => {
        "card_id, account_id, mode, key_version, block, failures, locked, updated_ms"
    };
}

const GET_PIN: &str = concat!(
    "SELECT ",
    pin_cols!(),
    " FROM pins WHERE account_id = $1 AND mode = $2 AND card_id = $3"
);
const PIN_LOCKED: &str = "SELECT locked FROM pins WHERE card_id = $1";
const INSERT_PIN: &str = concat!(
    "INSERT INTO pins (",
    pin_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
);
const RESET_PIN: &str = concat!(
    "INSERT INTO pins (",
    pin_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (card_id) DO UPDATE SET key_version = $4, block = $5, failures = 0, \
     locked = 0, updated_ms = $8"
);
const PIN_SUCCESS: &str = "UPDATE pins SET failures = 0 \
     WHERE card_id = $1 AND locked = 0 AND key_version = $2 AND block = $3";
const PIN_FAILURE: &str = "UPDATE pins SET failures = failures + 1, \
     locked = CASE WHEN failures + 1 >= $4 THEN 1 ELSE 0 END \
     WHERE card_id = $1 AND locked = 0 AND key_version = $2 AND block = $3 \
     RETURNING failures, locked";
const CHANGE_PIN: &str = "UPDATE pins SET key_version = $4, block = $5, failures = 0, \
     updated_ms = $6 WHERE card_id = $1 AND locked = 0 AND key_version = $2 AND block = $3";
const UNLOCK_PIN: &str = "UPDATE pins SET locked = 0, failures = 0, updated_ms = $4 \
     WHERE account_id = $1 AND mode = $2 AND card_id = $3 AND locked = 1";
const PIN_EXISTS: &str =
    "SELECT locked FROM pins WHERE account_id = $1 AND mode = $2 AND card_id = $3";
const PINS_FOR_REWRAP: &str = concat!(
    "SELECT ",
    pin_cols!(),
    " FROM pins WHERE account_id = $1 AND key_version < $2 ORDER BY card_id LIMIT $3"
);
const REWRAP_PIN: &str = "UPDATE pins SET key_version = $4, block = $5 \
     WHERE card_id = $1 AND key_version = $2 AND block = $3";
pub(crate) const USAGE_PIN: &str = "SELECT key_version, COUNT(*) FROM pins WHERE account_id = $1 \
     GROUP BY key_version ORDER BY key_version";
pub(crate) const COUNT_PIN_KEY_VERSION: &str =
    "SELECT COUNT(*) FROM pins WHERE account_id = $1 AND key_version = $2";

const PIN_OWNER: &str = "SELECT account_id, mode FROM pins WHERE card_id = $1";
const GET_MAX_FAILURES: &str = "SELECT max_failures FROM pin_settings WHERE account_id = $1";
const SET_MAX_FAILURES: &str = "INSERT INTO pin_settings (account_id, max_failures) VALUES ($1, $2) \
     ON CONFLICT (account_id) DO UPDATE SET max_failures = $2";

const PURGE_JTIS: &str = "DELETE FROM pin_jtis WHERE expires_ms <= $1";
const SPEND_JTI: &str = "INSERT INTO pin_jtis (account_id, jti, expires_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (account_id, jti) DO NOTHING";

const TRANSPORT_KEYS: &str = "SELECT kid, wrapped, created_ms, retire_after_ms \
     FROM pin_transport_keys ORDER BY created_ms, kid";
const RETIRE_TRANSPORT_KEYS: &str = "UPDATE pin_transport_keys SET retire_after_ms = $1 \
     WHERE retire_after_ms IS NULL OR retire_after_ms > $1";
const INSERT_TRANSPORT_KEY: &str = "INSERT INTO pin_transport_keys \
     (kid, wrapped, created_ms, retire_after_ms) VALUES ($1, $2, $3, $4)";

// The OTP is spent here, with its purpose and card checked again, so that the PIN and
// the OTP change together or not at all.
const SPEND_OTP: &str = "UPDATE otps SET used_ms = $2 WHERE id = $1 AND used_ms IS NULL \
     AND expires_ms > $2 AND attempts < $3 AND purpose = $4 AND card_id = $5";

impl FromRow for PinRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            card_id: r.text(0)?,
            account_id: r.text(1)?,
            mode: Mode::parse(&r.text(2)?)
                .ok_or_else(|| StoreError::Corrupt("unknown mode".into()))?,
            key_version: r.int(3)?,
            block: r.blob(4)?,
            failures: r.int(5)?,
            locked: r.int(6)? != 0,
            updated_ms: r.int(7)?,
        })
    }
}

impl FromRow for TransportKeyRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            kid: r.text(0)?,
            wrapped: r.blob(1)?,
            created_ms: r.int(2)?,
            retire_after_ms: r.opt_int(3)?,
        })
    }
}

// ---- reads ----

pub(crate) async fn get_pin<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    card_id: &str,
) -> StoreResult<Option<PinRecord>> {
    match c
        .opt(GET_PIN, args![account_id, mode.as_str(), card_id])
        .await?
    {
        Some(r) => PinRecord::from_row(&r).map(Some),
        None => Ok(None),
    }
}

pub(crate) async fn pin_transport_keys<C: Exec>(c: &mut C) -> StoreResult<Vec<TransportKeyRecord>> {
    c.all(TRANSPORT_KEYS, &[])
        .await?
        .iter()
        .map(TransportKeyRecord::from_row)
        .collect()
}

pub(crate) async fn pin_owner<C: Exec>(
    c: &mut C,
    card_id: &str,
) -> StoreResult<Option<(String, Mode)>> {
    match c.opt(PIN_OWNER, args![card_id]).await? {
        Some(r) => {
            let mode = Mode::parse(&r.text(1)?)
                .ok_or_else(|| StoreError::Corrupt("unknown mode".into()))?;
            Ok(Some((r.text(0)?, mode)))
        }
        None => Ok(None),
    }
}

pub(crate) async fn pin_max_failures<C: Exec>(
    c: &mut C,
    account_id: &str,
) -> StoreResult<Option<i64>> {
    match c.opt(GET_MAX_FAILURES, args![account_id]).await? {
        Some(r) => Ok(Some(r.int(0)?)),
        None => Ok(None),
    }
}

pub(crate) async fn pins_for_rewrap<C: Exec>(
    c: &mut C,
    account_id: &str,
    below_version: i64,
    limit: i64,
) -> StoreResult<Vec<PinRecord>> {
    c.all(
        PINS_FOR_REWRAP,
        args![account_id, below_version, limit.max(0)],
    )
    .await?
    .iter()
    .map(PinRecord::from_row)
    .collect()
}

// ---- writes ----

/// A PIN write, owned so that it can travel to the SQLite writer.
#[derive(Debug)]
pub(crate) enum Op {
    InsertTransportKey {
        key: TransportKeyRecord,
        retire_others_after_ms: i64,
    },
    SetMaxFailures {
        account_id: String,
        max_failures: i64,
    },
    SpendJti {
        account_id: String,
        jti: String,
        expires_ms: i64,
        now_ms: i64,
    },
    Set {
        pin: PinRecord,
        kind: SetKind,
        otp: SpendOtp,
        events: Vec<EventRecord>,
        unlocked_event: Option<EventRecord>,
    },
    Attempt {
        seen: PinRecord,
        success: bool,
        max_failures: i64,
        failed_events: Vec<EventRecord>,
        locked_event: Option<EventRecord>,
    },
    Change {
        seen: PinRecord,
        new: PinRecord,
        otp: SpendOtp,
        events: Vec<EventRecord>,
    },
    Unlock {
        account_id: String,
        mode: Mode,
        card_id: String,
        now_ms: i64,
        events: Vec<EventRecord>,
    },
    Rewrap {
        updates: Vec<PinRewrap>,
    },
}

/// What an [`Op`] returns.
#[derive(Debug)]
pub(crate) enum Reply {
    Done,
    Flag(bool),
    Count(u64),
    Outcome(PinOutcome),
}

async fn spend_otp<C: Exec>(c: &mut C, otp: &SpendOtp, card_id: &str) -> StoreResult<bool> {
    let a = args![&otp.id, otp.now_ms, otp.max_attempts, &otp.purpose, card_id];
    Ok(c.exec(SPEND_OTP, a).await? == 1)
}

fn pin_args(p: &PinRecord) -> [crate::exec::Arg<'_>; 8] {
    [
        (&p.card_id).into(),
        (&p.account_id).into(),
        p.mode.as_str().into(),
        p.key_version.into(),
        (&p.block).into(),
        p.failures.into(),
        i64::from(p.locked).into(),
        p.updated_ms.into(),
    ]
}

/// Applies one PIN write inside the caller's transaction. An `Err` rolls everything back.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<Reply> {
    match op {
        Op::InsertTransportKey {
            key,
            retire_others_after_ms,
        } => {
            c.exec(RETIRE_TRANSPORT_KEYS, args![*retire_others_after_ms])
                .await?;
            let a = args![&key.kid, &key.wrapped, key.created_ms, key.retire_after_ms];
            c.exec(INSERT_TRANSPORT_KEY, a).await?;
            Ok(Reply::Done)
        }
        Op::SetMaxFailures {
            account_id,
            max_failures,
        } => {
            c.exec(SET_MAX_FAILURES, args![account_id, *max_failures])
                .await?;
            Ok(Reply::Done)
        }
        Op::SpendJti {
            account_id,
            jti,
            expires_ms,
            now_ms,
        } => {
            c.exec(PURGE_JTIS, args![*now_ms]).await?;
            let n = c
                .exec(SPEND_JTI, args![account_id, jti, *expires_ms])
                .await?;
            Ok(Reply::Flag(n == 1))
        }
        Op::Set {
            pin,
            kind,
            otp,
            events,
            unlocked_event,
        } => {
            let was_locked = match c.opt(PIN_LOCKED, args![&pin.card_id]).await? {
                Some(r) => Some(r.int(0)? != 0),
                None => None,
            };
            match (kind, was_locked) {
                (SetKind::Initial, Some(true)) => return Ok(Reply::Outcome(PinOutcome::Locked)),
                (SetKind::Initial, Some(false)) => {
                    return Ok(Reply::Outcome(PinOutcome::AlreadySet));
                }
                _ => {}
            }
            if !spend_otp(c, otp, &pin.card_id).await? {
                return Ok(Reply::Outcome(PinOutcome::OtpInvalid));
            }
            let a = pin_args(pin);
            match kind {
                // A concurrent first set on another node makes this a unique violation,
                // which rolls back the OTP spend too.
                SetKind::Initial => c.exec(INSERT_PIN, &a).await?,
                SetKind::Reset => c.exec(RESET_PIN, &a).await?,
            };
            insert_events(c, events).await?;
            if was_locked == Some(true)
                && let Some(e) = unlocked_event
            {
                insert_events(c, std::slice::from_ref(e)).await?;
            }
            Ok(Reply::Outcome(PinOutcome::Done))
        }
        Op::Attempt {
            seen,
            success,
            max_failures,
            failed_events,
            locked_event,
        } => {
            let key = args![&seen.card_id, seen.key_version, &seen.block];
            if *success {
                if c.exec(PIN_SUCCESS, key).await? == 1 {
                    return Ok(Reply::Outcome(PinOutcome::Done));
                }
                return still(c, seen).await.map(Reply::Outcome);
            }
            let a = args![&seen.card_id, seen.key_version, &seen.block, *max_failures];
            match c.opt(PIN_FAILURE, a).await? {
                Some(r) => {
                    let failures = r.int(0)?;
                    let locked = r.int(1)? != 0;
                    insert_events(c, failed_events).await?;
                    if locked && let Some(e) = locked_event {
                        insert_events(c, std::slice::from_ref(e)).await?;
                    }
                    Ok(Reply::Outcome(PinOutcome::Failed { failures, locked }))
                }
                None => still(c, seen).await.map(Reply::Outcome),
            }
        }
        Op::Change {
            seen,
            new,
            otp,
            events,
        } => {
            if !spend_otp(c, otp, &seen.card_id).await? {
                return Ok(Reply::Outcome(PinOutcome::OtpInvalid));
            }
            let a = args![
                &seen.card_id,
                seen.key_version,
                &seen.block,
                new.key_version,
                &new.block,
                new.updated_ms
            ];
            if c.exec(CHANGE_PIN, a).await? != 1 {
                // Locked or changed meanwhile: undo the OTP spend with the rest.
                return Err(StoreError::Conflict("PIN changed concurrently"));
            }
            insert_events(c, events).await?;
            Ok(Reply::Outcome(PinOutcome::Done))
        }
        Op::Unlock {
            account_id,
            mode,
            card_id,
            now_ms,
            events,
        } => {
            let a = args![account_id, mode.as_str(), card_id, *now_ms];
            if c.exec(UNLOCK_PIN, a).await? == 1 {
                insert_events(c, events).await?;
                return Ok(Reply::Outcome(PinOutcome::Done));
            }
            let exists = c
                .opt(PIN_EXISTS, args![account_id, mode.as_str(), card_id])
                .await?
                .is_some();
            Ok(Reply::Outcome(if exists {
                PinOutcome::Changed
            } else {
                PinOutcome::Missing
            }))
        }
        Op::Rewrap { updates } => {
            let mut n: u64 = 0;
            for u in updates {
                let a = args![
                    &u.card_id,
                    u.expect_key_version,
                    &u.expect_block,
                    u.key_version,
                    &u.block
                ];
                n = n.saturating_add(c.exec(REWRAP_PIN, a).await?);
            }
            Ok(Reply::Count(n))
        }
    }
}

/// Why a conditional update on `seen` matched nothing: locked, gone, or changed.
async fn still<C: Exec>(c: &mut C, seen: &PinRecord) -> StoreResult<PinOutcome> {
    Ok(match c.opt(PIN_LOCKED, args![&seen.card_id]).await? {
        Some(r) if r.int(0)? != 0 => PinOutcome::Locked,
        Some(_) => PinOutcome::Changed,
        None => PinOutcome::Missing,
    })
}
