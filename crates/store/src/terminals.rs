//! Card-present terminals (docs/card-present.md): which base derivation key a terminal's
//! keys come from, its device identity, and the highest transaction counter accepted, so
//! that a replayed or stale key serial number is refused.
//!
//! Reads run on a pooled connection; writes go through the one writer as
//! [`crate::sql::WriteOp::Terminal`].

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};
use strongroom_core::Mode;

/// One terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalRecord {
    /// `term_…`
    pub id: String,
    /// The account its cards are tokenized into.
    pub account_id: String,
    /// The mode they are tokenized in (the registering key's).
    pub mode: Mode,
    /// The imported base derivation key (`bdk_…`).
    pub bdk_id: String,
    /// `aes` (X9.24-3) or `tdes` (X9.24-1).
    pub scheme: String,
    /// The device identity, hex: the Initial Key ID (AES) or the initial KSN with the
    /// counter cleared (TDES).
    pub device: String,
    /// The merchant's serial number of the device.
    pub serial: String,
    /// Where it stands.
    pub location: Option<String>,
    /// The highest transaction counter accepted for card data (0: none yet).
    pub counter: i64,
    /// The highest transaction counter accepted for PIN blocks (0: none yet).
    pub pin_counter: i64,
    /// When it was registered.
    pub created_ms: i64,
    /// When it was disabled.
    pub disabled_ms: Option<i64>,
}

/// The terminals' storage reads.
#[allow(async_fn_in_trait)]
pub trait TerminalStore: Send + Sync {
    /// A terminal by id, whatever its account.
    async fn terminal(&self, id: &str) -> StoreResult<Option<TerminalRecord>>;
    /// The account's terminals in a mode, oldest id first.
    async fn terminals(&self, account_id: &str, mode: Mode) -> StoreResult<Vec<TerminalRecord>>;
    /// A terminal with its base derivation key, in one read (what each transaction
    /// needs).
    async fn terminal_with_bdk(
        &self,
        id: &str,
    ) -> StoreResult<Option<(TerminalRecord, crate::ImportedKeyRecord)>>;
}

const GET: &str = "SELECT id, account_id, mode, bdk_id, scheme, device, serial, location, \
     counter, pin_counter, created_ms, disabled_ms FROM terminals WHERE id = $1";
const LIST: &str = "SELECT id, account_id, mode, bdk_id, scheme, device, serial, location, \
     counter, pin_counter, created_ms, disabled_ms FROM terminals WHERE account_id = $1 AND mode = $2 \
     ORDER BY id";

const WITH_BDK: &str = "SELECT t.id, t.account_id, t.mode, t.bdk_id, t.scheme, t.device, \
     t.serial, t.location, t.counter, t.pin_counter, t.created_ms, t.disabled_ms, \
     k.account_id, k.kind, k.algorithm, k.name, k.kcv, k.wrapped, k.import_id, k.created_ms \
     FROM terminals t JOIN imported_keys k ON k.id = t.bdk_id WHERE t.id = $1";

/// A terminal row and its key's columns after it.
struct WithBdk(TerminalRecord, crate::ImportedKeyRecord);

impl FromRow for WithBdk {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        let t = TerminalRecord::from_row(r)?;
        let k = crate::ImportedKeyRecord {
            id: t.bdk_id.clone(),
            account_id: r.text(12)?,
            kind: r.text(13)?,
            algorithm: r.text(14)?,
            name: r.text(15)?,
            kcv: r.text(16)?,
            wrapped: r.blob(17)?,
            import_id: r.text(18)?,
            created_ms: r.int(19)?,
        };
        Ok(Self(t, k))
    }
}

pub(crate) async fn terminal_with_bdk<C: Exec>(
    c: &mut C,
    id: &str,
) -> StoreResult<Option<(TerminalRecord, crate::ImportedKeyRecord)>> {
    let row: Option<WithBdk> = sql::one(c, WITH_BDK, args![id]).await?;
    Ok(row.map(|WithBdk(t, k)| (t, k)))
}

impl FromRow for TerminalRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: sql::mode(&r.text(2)?)?,
            bdk_id: r.text(3)?,
            scheme: r.text(4)?,
            device: r.text(5)?,
            serial: r.text(6)?,
            location: r.opt_text(7)?,
            counter: r.int(8)?,
            pin_counter: r.int(9)?,
            created_ms: r.int(10)?,
            disabled_ms: r.opt_int(11)?,
        })
    }
}

pub(crate) async fn terminal<C: Exec>(c: &mut C, id: &str) -> StoreResult<Option<TerminalRecord>> {
    sql::one(c, GET, args![id]).await
}

pub(crate) async fn terminals<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
) -> StoreResult<Vec<TerminalRecord>> {
    sql::many(c, LIST, args![account_id, mode.as_str()]).await
}

/// A terminal write, applied by the one writer.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new terminal (a device already registered under the BDK is a conflict).
    Insert(TerminalRecord),
    /// Disables an enabled terminal.
    Disable { id: String, now_ms: i64 },
    /// Accepts a transaction counter for card data, or for PIN blocks (`pin`): only if
    /// it moves forward and the terminal is enabled.
    Advance { id: String, counter: i64, pin: bool },
}

const INSERT: &str = "INSERT INTO terminals (id, account_id, mode, bdk_id, scheme, device, \
     serial, location, counter, pin_counter, created_ms, disabled_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
const DISABLE: &str = "UPDATE terminals SET disabled_ms = $2 WHERE id = $1 AND disabled_ms IS NULL";
const ADVANCE: &str = "UPDATE terminals SET counter = $2 \
     WHERE id = $1 AND counter < $2 AND disabled_ms IS NULL";
const ADVANCE_PIN: &str = "UPDATE terminals SET pin_counter = $2 \
     WHERE id = $1 AND pin_counter < $2 AND disabled_ms IS NULL";

/// A card read by a terminal: the terminal's counter moves and the card is inserted (or
/// found) in one transaction, or neither happens.
#[derive(Debug)]
pub(crate) struct CardOp {
    pub(crate) id: String,
    pub(crate) counter: i64,
    pub(crate) card: crate::CardRecord,
    pub(crate) dedup: Vec<(i64, Vec<u8>)>,
    pub(crate) events: Vec<crate::EventRecord>,
}

/// Applies a [`CardOp`]: `Refused` (nothing written) when the counter does not move
/// forward or the terminal is disabled.
pub(crate) async fn tokenize<C: Exec>(c: &mut C, op: &CardOp) -> StoreResult<crate::Collected> {
    if c.exec(ADVANCE, args![&op.id, op.counter]).await? == 0 {
        return Ok(crate::Collected::Refused);
    }
    let outcome = sql::insert_card(c, None, &op.card, &op.dedup, &op.events).await?;
    Ok(crate::Collected::Card(outcome))
}

/// Applies `op`: whether it changed a terminal.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<bool> {
    let n = match op {
        Op::Insert(r) => {
            let a = args![
                &r.id,
                &r.account_id,
                r.mode.as_str(),
                &r.bdk_id,
                &r.scheme,
                &r.device,
                &r.serial,
                r.location.as_deref(),
                r.counter,
                r.pin_counter,
                r.created_ms,
                r.disabled_ms
            ];
            c.exec(INSERT, a).await?
        }
        Op::Disable { id, now_ms } => c.exec(DISABLE, args![id, *now_ms]).await?,
        Op::Advance { id, counter, pin } => {
            let q = if *pin { ADVANCE_PIN } else { ADVANCE };
            c.exec(q, args![id, *counter]).await?
        }
    };
    Ok(n == 1)
}
