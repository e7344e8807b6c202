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
}

const GET: &str = "SELECT id, account_id, mode, bdk_id, scheme, device, serial, location, \
     counter, pin_counter, created_ms, disabled_ms FROM terminals WHERE id = $1";
const LIST: &str = "SELECT id, account_id, mode, bdk_id, scheme, device, serial, location, \
     counter, pin_counter, created_ms, disabled_ms FROM terminals WHERE account_id = $1 AND mode = $2 \
     ORDER BY id";

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
