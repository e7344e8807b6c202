//! One SQLite connection, driven synchronously through rusqlite, and the rows it reads.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, ffi};

use crate::dialect::Dialect;
use crate::exec::{Arg, Exec, RowGet};
use crate::{StoreError, StoreResult};

/// Prepared statements kept per connection. The store has about 200 distinct texts; the
/// hot ones (card reads, audit appends, key lookups) stay prepared.
pub(super) const STATEMENT_CACHE: usize = 256;

/// What a connection is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Role {
    Reader,
    Writer,
    Checkpointer,
}

/// One SQLite connection, driven synchronously. Its futures are ready at once.
pub(crate) struct SyncConn {
    pub(super) conn: Connection,
    /// Per SQL text (by address: every text is `'static`), which argument each of the
    /// statement's parameters takes. Looking a parameter's name up costs a scan of the
    /// statement's parameter list, quadratic for a 400-parameter audit insert.
    pub(super) params: HashMap<(usize, usize), Box<[u16]>>,
    /// A reader's open read transaction, kept from one use to the next ([`Readers`]).
    pub(super) snapshot: Option<Snapshot>,
}

impl std::fmt::Debug for SyncConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncConn")
    }
}

impl SyncConn {
    /// Opens `path` with the pragmas its role needs.
    pub(super) fn open(path: &Path, role: Role) -> StoreResult<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let c = Connection::open_with_flags(path, flags).map_err(sq_err)?;
        c.busy_timeout(Duration::from_secs(5)).map_err(sq_err)?;
        c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let pragmas = match role {
            // A real page cache per reader (SQLite's default is 2 MiB): with a million
            // cards the B-tree interior and hot leaves stay in memory instead of being
            // read back through syscalls on every lookup. A few readers x 24 MiB keeps
            // the server inside the 250 MB RSS budget at a million cards. SQLite empties
            // it when the reader next begins a transaction after another connection's
            // commit, which is why readers keep their snapshots ([`Readers`]).
            Role::Reader => {
                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                 PRAGMA query_only = ON; PRAGMA cache_size = -24576;"
            }
            // The writer never checkpoints on its own (see `checkpointer`). Its page
            // cache is sized by the database's size ([`WriterCache`]), once open.
            //
            // `temp_store = MEMORY` keeps statement journals in memory. A statement that
            // changes many rows inside a transaction (the batch's card insert, its audit
            // records) keeps the original of every page it touches so that it can be
            // undone alone; past 64 KiB SQLite spills that journal to a temporary file, and
            // a group commit then wrote each touched page twice: once there (two `pwrite`s
            // per page, a third of the writer's writes) and once to the WAL. The journal
            // is never needed after the statement ends, so it never needs a file.
            Role::Writer => {
                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                 PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY; \
                 PRAGMA journal_size_limit = 134217728;"
            }
            Role::Checkpointer => "PRAGMA synchronous = FULL;",
        };
        c.execute_batch(pragmas).map_err(sq_err)?;
        Ok(Self::new(c))
    }

    /// A passive checkpoint: copies what it can from the WAL into the database without
    /// waiting for anyone. Returns the WAL's frames and how many are now copied.
    pub(super) fn checkpoint(&self) -> StoreResult<(i64, i64)> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .map_err(sq_err)
    }

    pub(super) fn new(conn: Connection) -> Self {
        Self {
            conn,
            params: HashMap::new(),
            snapshot: None,
        }
    }

    /// Makes sure this reader reads inside a read transaction that holds every write that
    /// a read which `sees` must see, acknowledged up to the counts `now` (the writer's,
    /// [`Readers::commits`]): the one it kept, if no such write has been committed since it
    /// began and it is younger than `max_age`, or a new one.
    pub(super) fn hold(
        &mut self,
        now: Counts,
        sees: MustSee,
        max_age: Duration,
    ) -> StoreResult<()> {
        if let Some(s) = self.snapshot {
            if !s.counts.behind(now, sees) && s.at.elapsed() < max_age && !self.conn.is_autocommit()
            {
                return Ok(());
            }
            self.release()?;
        }
        // The count is read before the transaction begins (its first read takes the
        // snapshot), so the snapshot holds at least every write counted in `commit`.
        self.conn
            .prepare_cached("BEGIN")
            .and_then(|mut st| st.execute([]))
            .map_err(sq_err)?;
        self.snapshot = Some(Snapshot {
            counts: now,
            at: Instant::now(),
        });
        Ok(())
    }

    /// Ends the read transaction this reader kept, if any.
    pub(super) fn release(&mut self) -> StoreResult<()> {
        if self.snapshot.take().is_some() && !self.conn.is_autocommit() {
            self.conn
                .prepare_cached("COMMIT")
                .and_then(|mut st| st.execute([]))
                .map_err(sq_err)?;
        }
        Ok(())
    }

    /// Whether this reader keeps a read transaction that misses a commit, by the counts
    /// `now`, that a read which `sees` must see.
    pub(super) fn stale(&self, now: Counts, sees: MustSee) -> bool {
        self.snapshot.is_some_and(|s| s.counts.behind(now, sees))
    }

    /// Prepares (or takes from the cache) `sql`, binds `args` by their `$N` numbers and
    /// hands the statement to `f`.
    pub(super) fn with<T>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
        f: impl FnOnce(&mut rusqlite::Statement<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let mut st = self.conn.prepare_cached(sql).map_err(sq_err)?;
        // SQLite numbers `$N` parameters in order of first appearance, not by N, so each
        // is bound by its name's number (the shared SQL is written for PostgreSQL).
        let map = match self.params.entry((sql.as_ptr() as usize, sql.len())) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(param_numbers(&st)?),
        };
        for (idx, n) in map.iter().enumerate() {
            let arg = args
                .get(usize::from(*n))
                .ok_or_else(|| StoreError::Unavailable("statement parameter unbound".into()))?;
            let idx = idx + 1;
            let r = match *arg {
                Arg::Text(v) => st.raw_bind_parameter(idx, v),
                Arg::OptText(v) => st.raw_bind_parameter(idx, v),
                Arg::Int(v) => st.raw_bind_parameter(idx, v),
                Arg::OptInt(v) => st.raw_bind_parameter(idx, v),
                Arg::Blob(v) => st.raw_bind_parameter(idx, v),
                Arg::OptBlob(v) => st.raw_bind_parameter(idx, v),
                Arg::Texts(_) | Arg::Ints(_) | Arg::Blobs(_) => {
                    return Err(StoreError::Unavailable(
                        "array parameters are for PostgreSQL only".into(),
                    ));
                }
            };
            r.map_err(sq_err)?;
        }
        f(&mut st).map_err(sq_err)
    }

    pub(super) fn rows(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
        max: usize,
    ) -> StoreResult<Vec<SqlRow>> {
        self.with(sql, args, |st| {
            let n = st.column_count();
            let mut out = Vec::new();
            let mut rows = st.raw_query();
            while out.len() < max {
                let Some(row) = rows.next()? else { break };
                let mut values = Vec::with_capacity(n);
                for i in 0..n {
                    let v = row.get_ref(i)?;
                    values.push(Value::try_from(v).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(i, v.data_type(), Box::new(e))
                    })?);
                }
                out.push(SqlRow(values));
            }
            Ok(out)
        })
    }
}

/// For each parameter of `st` in SQLite's order, the 0-based number of its `$N` argument.
pub(super) fn param_numbers(st: &rusqlite::Statement<'_>) -> StoreResult<Box<[u16]>> {
    (1..=st.parameter_count())
        .map(|idx| {
            st.parameter_name(idx)
                .and_then(|p| p.strip_prefix('$'))
                .and_then(|d| d.parse::<u16>().ok())
                .and_then(|n| n.checked_sub(1))
                .ok_or_else(|| StoreError::Unavailable("statement parameter not $N".into()))
        })
        .collect()
}

impl Exec for SyncConn {
    type Row = SqlRow;

    fn dialect(&self) -> &'static dyn Dialect {
        &Sqlite
    }

    async fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        self.with(sql, args, |st| {
            if st.column_count() > 0 {
                // A statement with RETURNING (or a PRAGMA) yields rows: step to the end.
                let mut rows = st.raw_query();
                while rows.next()?.is_some() {}
            } else {
                st.raw_execute()?;
            }
            Ok(())
        })?;
        Ok(self.conn.changes())
    }

    async fn all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<Vec<SqlRow>> {
        self.rows(sql, args, usize::MAX)
    }

    async fn opt(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<Option<SqlRow>> {
        Ok(self.rows(sql, args, 1)?.pop())
    }
}

/// A row read off a statement, owned (rusqlite's rows borrow their statement).
#[derive(Debug)]
pub(crate) struct SqlRow(Vec<Value>);

impl SqlRow {
    pub(super) fn value(&self, i: usize) -> StoreResult<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("column {i}: missing")))
    }
}

pub(super) fn decode<T>(i: usize) -> StoreResult<T> {
    Err(StoreError::Corrupt(format!("column {i}: cannot decode")))
}

impl RowGet for SqlRow {
    fn text(&self, i: usize) -> StoreResult<String> {
        self.opt_text(i)?.map_or_else(|| decode(i), Ok)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        match self.value(i)? {
            Value::Text(s) => Ok(Some(s.clone())),
            Value::Null => Ok(None),
            _ => decode(i),
        }
    }
    fn int(&self, i: usize) -> StoreResult<i64> {
        self.opt_int(i)?.map_or_else(|| decode(i), Ok)
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        match self.value(i)? {
            Value::Integer(v) => Ok(Some(*v)),
            Value::Null => Ok(None),
            _ => decode(i),
        }
    }
    fn blob(&self, i: usize) -> StoreResult<Vec<u8>> {
        self.opt_blob(i)?.map_or_else(|| decode(i), Ok)
    }
    fn opt_blob(&self, i: usize) -> StoreResult<Option<Vec<u8>>> {
        match self.value(i)? {
            Value::Blob(b) => Ok(Some(b.clone())),
            // As sqlx did: text reads as its bytes.
            Value::Text(s) => Ok(Some(s.as_bytes().to_vec())),
            Value::Null => Ok(None),
            _ => decode(i),
        }
    }
}

/// Maps a SQLite error to a [`StoreError`]. SQLite's messages name tables and columns,
/// never bound values.
pub(super) fn sq_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, msg) => match f.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                StoreError::Conflict("already exists")
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => StoreError::Conflict("refers to a missing row"),
            ffi::SQLITE_CONSTRAINT_CHECK | ffi::SQLITE_CONSTRAINT_NOTNULL => {
                StoreError::Conflict("violates a table constraint")
            }
            _ => StoreError::Unavailable(format!(
                "database error: {}",
                msg.unwrap_or_else(|| f.to_string())
            )),
        },
        rusqlite::Error::InvalidColumnType(i, ..)
        | rusqlite::Error::InvalidColumnIndex(i)
        | rusqlite::Error::FromSqlConversionFailure(i, ..) => {
            StoreError::Corrupt(format!("column {i}: cannot decode"))
        }
        other => StoreError::Unavailable(format!("database error: {other}")),
    }
}

/// A read transaction a reader keeps open: as of which commits, and since when.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    pub(super) counts: Counts,
    pub(super) at: Instant,
}

/// The writer's counts of commits ([`Readers::commits`]): all of them, and those that
/// held more than audit records appended alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) all: u64,
    pub(super) data: u64,
}

impl Counts {
    /// Whether a snapshot taken at `self` misses a commit that a read which `sees`
    /// must see, by the counts `now`.
    pub(super) fn behind(self, now: Counts, sees: MustSee) -> bool {
        match sees {
            MustSee::Data => self.data != now.data,
            MustSee::All => self.all != now.all,
        }
    }
}

/// Which acknowledged writes a read must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MustSee {
    /// Every write but audit records appended alone: every read but the audit trail's.
    /// A get writes nothing but its record, so under load such commits are most of them;
    /// a snapshot that ended at each would read its B-tree pages again every time.
    Data,
    /// Every write: the audit trail's own reads (head, records, checkpoints).
    All,
}

/// SQLite, driven in-process through rusqlite.
pub(crate) struct Sqlite;

impl Dialect for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn begin(&self) -> &'static str {
        "BEGIN IMMEDIATE"
    }
    fn fingerprint_lookup(&self) -> bool {
        true
    }
    fn row_id_from_id(&self) -> bool {
        true
    }
    // Statements run in place (no round trip), so one statement gains nothing.
    fn bulk_insert(&self) -> bool {
        false
    }
}
