//! Suspensions (docs/risk.md): a subject of an account (a card fingerprint, an address
//! or network, an email digest, a device id, an API key, the account itself) refused
//! until it expires or is lifted.
//!
//! Reads run on a pooled connection; writes go through the one writer as
//! [`crate::sql::WriteOp::Suspension`], with their events.

use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};
use crate::{EventRecord, StoreResult};
use strongroom_core::Mode;

/// One suspension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspensionRecord {
    /// `susp_…`
    pub id: String,
    /// The account whose requests it refuses.
    pub account_id: String,
    /// The mode it was made in (an account's suspension holds in both).
    pub mode: Mode,
    /// `card`, `ip`, `email`, `device`, `api_key` or `account`.
    pub target_kind: String,
    /// The subject: a fingerprint, an address or CIDR, an email's keyed digest, a
    /// device id, a key id or the account id.
    pub target: String,
    /// Why, in the words of whoever made it.
    pub reason: String,
    /// `key:<id>` (through the API), `admin:<id>` or `rule:<id>`.
    pub created_by: String,
    /// When it was made.
    pub created_ms: i64,
    /// When it ends by itself.
    pub expires_ms: i64,
    /// When it was lifted (before its end, or by the expiry sweep at it).
    pub lifted_ms: Option<i64>,
    /// Who lifted it (`expiry` for the sweep).
    pub lifted_by: Option<String>,
}

impl SuspensionRecord {
    /// Whether it refuses requests at `now_ms`.
    pub fn active(&self, now_ms: i64) -> bool {
        self.lifted_ms.is_none() && self.expires_ms > now_ms
    }
}

/// The suspensions' storage reads.
#[allow(async_fn_in_trait)]
pub trait SuspensionStore: Send + Sync {
    /// One suspension of the account.
    async fn suspension(&self, account_id: &str, id: &str)
    -> StoreResult<Option<SuspensionRecord>>;
    /// A page of the account's suspensions in a mode, newest first.
    async fn suspensions(
        &self,
        account_id: &str,
        mode: Mode,
        starting_after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<SuspensionRecord>>;
    /// Every suspension of the account not lifted and not past its end at `now_ms`,
    /// both modes: what the gateway enforces.
    async fn active_suspensions(
        &self,
        account_id: &str,
        now_ms: i64,
    ) -> StoreResult<Vec<SuspensionRecord>>;
    /// Up to `limit` suspensions past their end and not yet marked lifted, oldest end
    /// first: for the sweep that records their end.
    async fn ended_suspensions(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<SuspensionRecord>>;
}

// ---- SQL ----

macro_rules! cols {
    () => {
        "id, account_id, mode, target_kind, target, reason, created_by, created_ms, \
         expires_ms, lifted_ms, lifted_by"
    };
}

const GET: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM suspensions WHERE account_id = $1 AND id = $2"
);
const LIST: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM suspensions WHERE account_id = $1 AND mode = $2 AND id < $3 ORDER BY id DESC LIMIT $4"
);
const ACTIVE: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM suspensions WHERE account_id = $1 AND lifted_ms IS NULL AND expires_ms > $2 \
     ORDER BY id"
);
const ENDED: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM suspensions WHERE lifted_ms IS NULL AND expires_ms <= $1 ORDER BY expires_ms LIMIT $2"
);
const INSERT: &str = concat!(
    "INSERT INTO suspensions (",
    cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
);
const LIFT: &str = concat!(
    "UPDATE suspensions SET lifted_ms = $3, lifted_by = $4 \
     WHERE account_id = $1 AND id = $2 AND lifted_ms IS NULL RETURNING ",
    cols!()
);

/// Above every id: the first page's cursor.
const AFTER_ALL: &str = "susp_~";

impl FromRow for SuspensionRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: sql::mode(&r.text(2)?)?,
            target_kind: r.text(3)?,
            target: r.text(4)?,
            reason: r.text(5)?,
            created_by: r.text(6)?,
            created_ms: r.int(7)?,
            expires_ms: r.int(8)?,
            lifted_ms: r.opt_int(9)?,
            lifted_by: r.opt_text(10)?,
        })
    }
}

pub(crate) async fn suspension<C: Exec>(
    c: &mut C,
    account_id: &str,
    id: &str,
) -> StoreResult<Option<SuspensionRecord>> {
    sql::one(c, GET, args![account_id, id]).await
}

pub(crate) async fn suspensions<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    starting_after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<SuspensionRecord>> {
    let after = starting_after.unwrap_or(AFTER_ALL);
    sql::many(c, LIST, args![account_id, mode.as_str(), after, limit]).await
}

pub(crate) async fn active<C: Exec>(
    c: &mut C,
    account_id: &str,
    now_ms: i64,
) -> StoreResult<Vec<SuspensionRecord>> {
    sql::many(c, ACTIVE, args![account_id, now_ms]).await
}

pub(crate) async fn ended<C: Exec>(
    c: &mut C,
    now_ms: i64,
    limit: i64,
) -> StoreResult<Vec<SuspensionRecord>> {
    sql::many(c, ENDED, args![now_ms, limit]).await
}

// ---- writes ----

/// A suspension write, applied by the one writer.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new suspension, with its `suspension.created` event.
    Insert {
        record: SuspensionRecord,
        events: Vec<EventRecord>,
    },
    /// Lifts the account's suspension if it is not lifted yet; its `suspension.lifted`
    /// event is written only then.
    Lift {
        account_id: String,
        id: String,
        now_ms: i64,
        by: String,
        events: Vec<EventRecord>,
    },
}

/// Applies `op`: the suspension as it is afterwards (`None`: nothing to lift).
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<Option<SuspensionRecord>> {
    match op {
        Op::Insert { record: r, events } => {
            let a = args![
                &r.id,
                &r.account_id,
                r.mode.as_str(),
                &r.target_kind,
                &r.target,
                &r.reason,
                &r.created_by,
                r.created_ms,
                r.expires_ms,
                r.lifted_ms,
                r.lifted_by.as_deref()
            ];
            c.exec(INSERT, a).await?;
            sql::insert_events(c, events).await?;
            Ok(Some(r.clone()))
        }
        Op::Lift {
            account_id,
            id,
            now_ms,
            by,
            events,
        } => {
            let lifted: Option<SuspensionRecord> =
                sql::one(c, LIFT, args![account_id, id, *now_ms, by]).await?;
            if lifted.is_some() {
                sql::insert_events(c, events).await?;
            }
            Ok(lifted)
        }
    }
}
