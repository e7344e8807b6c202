//! The risk engine's in-memory velocity counters of a single node, kept across a restart:
//! written whole at shutdown, read back at start. The entries are the server's encoding;
//! the store keeps them as bytes.

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};

/// One subject's trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRow {
    /// Which of the server's tables.
    pub table: i64,
    /// The subject's key.
    pub subject: String,
    /// Its entries, as the server encodes them.
    pub entries: Vec<u8>,
}

/// The kept counters' read.
#[allow(async_fn_in_trait)]
pub trait VelocitySnapshotStore: Send + Sync {
    /// Every kept trail.
    async fn velocity_snapshot(&self) -> StoreResult<Vec<KeptRow>>;
}

const ALL: &str = "SELECT tbl, subject, entries FROM velocity_snapshot";
const CLEAR: &str = "DELETE FROM velocity_snapshot";
const INSERT: &str = "INSERT INTO velocity_snapshot (tbl, subject, entries) VALUES ($1, $2, $3)";

impl FromRow for KeptRow {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            table: r.int(0)?,
            subject: r.text(1)?,
            entries: r.blob(2)?,
        })
    }
}

pub(crate) async fn all<C: Exec>(c: &mut C) -> StoreResult<Vec<KeptRow>> {
    sql::many(c, ALL, &[]).await
}

/// Replaces the kept trails with `rows` (none: clears them).
#[derive(Debug)]
pub(crate) struct Op(pub(crate) Vec<KeptRow>);

pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<()> {
    c.exec(CLEAR, &[]).await?;
    for r in &op.0 {
        c.exec(INSERT, args![r.table, &r.subject, r.entries.as_slice()])
            .await?;
    }
    Ok(())
}
