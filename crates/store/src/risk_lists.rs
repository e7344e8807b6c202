//! Allow and block lists of risk assessments (docs/risk.md, "Lists"): entries naming a
//! card fingerprint, an address or network, an email's keyed digest, a BIN prefix or a
//! device id, per account and mode, live until they expire or are deleted.
//!
//! Reads run on a pooled connection; writes go through the one writer as
//! [`crate::sql::WriteOp::RiskList`], so the duplicate and size checks of a new entry and
//! its insert are one transaction.

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};
use strongroom_core::Mode;

/// Most live entries one list of an account may hold in a mode: assessments keep them all
/// in memory.
pub const MAX_LIVE_ENTRIES: i64 = 10_000;

/// One list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntryRecord {
    /// `rle_…`
    pub id: String,
    /// The account whose assessments it applies to.
    pub account_id: String,
    /// The mode it applies in.
    pub mode: Mode,
    /// `allow` or `block`.
    pub list: String,
    /// `card`, `ip`, `email`, `bin` or `device`.
    pub kind: String,
    /// The stored form: a fingerprint, a network in CIDR form, an email's keyed digest, a
    /// BIN prefix, a device id.
    pub value: String,
    /// The merchant's note.
    pub note: Option<String>,
    /// `key:<id>` or `admin:<id>`.
    pub created_by: String,
    /// When it was made.
    pub created_ms: i64,
    /// When it stops matching; `None`: when deleted.
    pub expires_ms: Option<i64>,
    /// When it was deleted.
    pub deleted_ms: Option<i64>,
    /// Who deleted it.
    pub deleted_by: Option<String>,
}

impl ListEntryRecord {
    /// Whether it matches at `now_ms`.
    pub fn live(&self, now_ms: i64) -> bool {
        self.deleted_ms.is_none() && self.expires_ms.is_none_or(|x| x > now_ms)
    }
}

/// The lists' storage reads.
#[allow(async_fn_in_trait)]
pub trait RiskListStore: Send + Sync {
    /// One entry of the account.
    async fn list_entry(&self, account_id: &str, id: &str) -> StoreResult<Option<ListEntryRecord>>;
    /// A page of one list of the account in a mode, newest first: live, expired and
    /// deleted entries.
    async fn list_entries(
        &self,
        account_id: &str,
        mode: Mode,
        list: &str,
        starting_after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ListEntryRecord>>;
    /// Every entry of both lists of the account in a mode that matches at `now_ms`: what
    /// assessments match against.
    async fn live_list_entries(
        &self,
        account_id: &str,
        mode: Mode,
        now_ms: i64,
    ) -> StoreResult<Vec<ListEntryRecord>>;
}

// ---- SQL ----

macro_rules! cols {
    () => {
        "id, account_id, mode, list, kind, value, note, created_by, created_ms, expires_ms, \
         deleted_ms, deleted_by"
    };
}

/// Live at `$n`: not deleted, not past its end.
macro_rules! live {
    ($n:literal) => {
        concat!(
            "deleted_ms IS NULL AND (expires_ms IS NULL OR expires_ms > ",
            $n,
            ")"
        )
    };
}

const GET: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM risk_list_entries WHERE account_id = $1 AND id = $2"
);
const PAGE: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM risk_list_entries WHERE account_id = $1 AND mode = $2 AND list = $3 AND id < $4 \
     ORDER BY id DESC LIMIT $5"
);
const LIVE: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM risk_list_entries WHERE account_id = $1 AND mode = $2 AND ",
    live!("$3"),
    " ORDER BY id"
);
const SAME: &str = concat!(
    "SELECT id FROM risk_list_entries WHERE account_id = $1 AND mode = $2 AND list = $3 \
     AND kind = $4 AND value = $5 AND ",
    live!("$6"),
    " LIMIT 1"
);
const COUNT_LIVE: &str = concat!(
    "SELECT COUNT(*) FROM risk_list_entries WHERE account_id = $1 AND mode = $2 AND list = $3 \
     AND ",
    live!("$4")
);
const INSERT: &str = concat!(
    "INSERT INTO risk_list_entries (",
    cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
);
const DELETE: &str = concat!(
    "UPDATE risk_list_entries SET deleted_ms = $3, deleted_by = $4 \
     WHERE account_id = $1 AND id = $2 AND deleted_ms IS NULL RETURNING ",
    cols!()
);

/// Above every id: the first page's cursor.
const AFTER_ALL: &str = "rle_~";

impl FromRow for ListEntryRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: sql::mode(&r.text(2)?)?,
            list: r.text(3)?,
            kind: r.text(4)?,
            value: r.text(5)?,
            note: r.opt_text(6)?,
            created_by: r.text(7)?,
            created_ms: r.int(8)?,
            expires_ms: r.opt_int(9)?,
            deleted_ms: r.opt_int(10)?,
            deleted_by: r.opt_text(11)?,
        })
    }
}

pub(crate) async fn entry<C: Exec>(
    c: &mut C,
    account_id: &str,
    id: &str,
) -> StoreResult<Option<ListEntryRecord>> {
    sql::one(c, GET, args![account_id, id]).await
}

pub(crate) async fn page<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    list: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<ListEntryRecord>> {
    let after = starting_after.unwrap_or(AFTER_ALL);
    sql::many(
        c,
        PAGE,
        args![account_id, mode.as_str(), list, after, limit],
    )
    .await
}

pub(crate) async fn live<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    now_ms: i64,
) -> StoreResult<Vec<ListEntryRecord>> {
    sql::many(c, LIVE, args![account_id, mode.as_str(), now_ms]).await
}

// ---- writes ----

/// A list write, applied by the one writer.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new entry, unless the list holds the same subject live, or is full.
    Insert { record: ListEntryRecord },
    /// Deletes the account's entry if it is not deleted yet.
    Delete {
        account_id: String,
        id: String,
        now_ms: i64,
        by: String,
    },
}

/// What a list write did.
#[derive(Debug)]
pub enum Reply {
    /// The entry was stored.
    Inserted,
    /// The list already holds the same subject live: that entry's id. Nothing stored.
    Exists(String),
    /// The list holds [`MAX_LIVE_ENTRIES`] live entries. Nothing stored.
    Full,
    /// The entry as deleted; `None` when there was none to delete.
    Deleted(Option<Box<ListEntryRecord>>),
}

impl Reply {
    /// Whether it changed something.
    pub(crate) fn took_effect(&self) -> bool {
        matches!(self, Self::Inserted | Self::Deleted(Some(_)))
    }
}

struct Id(String);

impl FromRow for Id {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self(r.text(0)?))
    }
}

/// Applies `op`.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<Reply> {
    match op {
        Op::Insert { record: r } => {
            let (acct, mode, now) = (&r.account_id, r.mode.as_str(), r.created_ms);
            let same: Option<Id> =
                sql::one(c, SAME, args![acct, mode, &r.list, &r.kind, &r.value, now]).await?;
            if let Some(Id(id)) = same {
                return Ok(Reply::Exists(id));
            }
            let n = match c.opt(COUNT_LIVE, args![acct, mode, &r.list, now]).await? {
                Some(row) => row.int(0)?,
                None => 0,
            };
            if n >= MAX_LIVE_ENTRIES {
                return Ok(Reply::Full);
            }
            let a = args![
                &r.id,
                acct,
                mode,
                &r.list,
                &r.kind,
                &r.value,
                r.note.as_deref(),
                &r.created_by,
                r.created_ms,
                r.expires_ms,
                r.deleted_ms,
                r.deleted_by.as_deref()
            ];
            c.exec(INSERT, a).await?;
            Ok(Reply::Inserted)
        }
        Op::Delete {
            account_id,
            id,
            now_ms,
            by,
        } => {
            let deleted: Option<ListEntryRecord> =
                sql::one(c, DELETE, args![account_id, id, *now_ms, by]).await?;
            Ok(Reply::Deleted(deleted.map(Box::new)))
        }
    }
}
