//! The embedded backend: SQLite in WAL mode with `synchronous=FULL`.
//!
//! Reads use a small pool of read-only connections. Every write goes to one writer thread
//! that owns the only writing connection and batches whatever is queued into one
//! transaction (group commit): one fsync acknowledges up to [`group::MAX_BATCH`] writes. A
//! failing write rolls back only itself (the batch is re-run with a savepoint per
//! write); replies are sent after `COMMIT` returns, so an acknowledged write is durable.
//!
//! Statements run through rusqlite, synchronously, on the thread that asks: a point read
//! from the page cache takes a few microseconds, far less than a hand-off to a driver
//! thread and back (sqlx's SQLite driver runs every statement on a worker thread of its
//! own, which cost two cross-thread wake-ups per statement and was most of the writer's
//! serial time per tokenization). The migrations still run through sqlx, which keeps
//! their bookkeeping table the same on both backends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, ffi};
use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::mpsc;

use crate::exec::{Arg, Exec, RowGet, db_err};
use crate::group::{self, Msg};
use crate::sql::{WriteOp, WriteReply};
use crate::{StoreError, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

const BEGIN: &[&str] = &["BEGIN IMMEDIATE"];

/// Prepared statements kept per connection. The store has about 200 distinct texts; the
/// hot ones (card reads, audit appends, key lookups) stay prepared.
const STATEMENT_CACHE: usize = 256;

/// One SQLite connection, driven synchronously. Its futures are ready at once.
pub(crate) struct SyncConn(Connection);

impl std::fmt::Debug for SyncConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncConn")
    }
}

impl SyncConn {
    /// Opens `path` with the pragmas every connection needs; `reader` makes it read-only
    /// (`query_only`) with a larger page cache.
    fn open(path: &Path, reader: bool) -> StoreResult<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let c = Connection::open_with_flags(path, flags).map_err(sq_err)?;
        c.busy_timeout(Duration::from_secs(5)).map_err(sq_err)?;
        c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let pragmas = if reader {
            // A real page cache per reader (SQLite's default is 2 MiB): with a million
            // cards the B-tree interior and hot leaves stay in memory instead of being
            // read back through syscalls on every lookup. A few readers x 24 MiB keeps
            // the server inside the 250 MB RSS budget at a million cards.
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA query_only = ON; PRAGMA cache_size = -24576;"
        } else {
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
        };
        c.execute_batch(pragmas).map_err(sq_err)?;
        Ok(Self(c))
    }

    /// Prepares (or takes from the cache) `sql`, binds `args` by their `$N` numbers and
    /// hands the statement to `f`.
    fn with<T>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
        f: impl FnOnce(&mut rusqlite::Statement<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let mut st = self.0.prepare_cached(sql).map_err(sq_err)?;
        // SQLite numbers `$N` parameters in order of first appearance, not by N, so each
        // is bound by its name's number (the shared SQL is written for PostgreSQL).
        for idx in 1..=st.parameter_count() {
            let arg = st
                .parameter_name(idx)
                .and_then(|p| p.strip_prefix('$'))
                .and_then(|d| d.parse::<usize>().ok())
                .and_then(|n| args.get(n.checked_sub(1)?))
                .ok_or_else(|| StoreError::Unavailable("statement parameter unbound".into()))?;
            let r = match *arg {
                Arg::Text(v) => st.raw_bind_parameter(idx, v),
                Arg::OptText(v) => st.raw_bind_parameter(idx, v),
                Arg::Int(v) => st.raw_bind_parameter(idx, v),
                Arg::OptInt(v) => st.raw_bind_parameter(idx, v),
                Arg::Blob(v) => st.raw_bind_parameter(idx, v),
                Arg::OptBlob(v) => st.raw_bind_parameter(idx, v),
            };
            r.map_err(sq_err)?;
        }
        f(&mut st).map_err(sq_err)
    }

    fn rows(
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

impl Exec for SyncConn {
    type Row = SqlRow;

    async fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        let changes = self.with(sql, args, |st| {
            if st.column_count() == 0 {
                return st.raw_execute().map(|n| n as u64);
            }
            // A statement with RETURNING (or a PRAGMA) yields rows: step to the end.
            let mut rows = st.raw_query();
            while rows.next()?.is_some() {}
            Ok(u64::MAX)
        })?;
        Ok(if changes == u64::MAX {
            self.0.changes()
        } else {
            changes
        })
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
    fn value(&self, i: usize) -> StoreResult<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("column {i}: missing")))
    }
}

fn decode<T>(i: usize) -> StoreResult<T> {
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
fn sq_err(e: rusqlite::Error) -> StoreError {
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

/// The read connections: opened on demand, kept for reuse, dropped on close.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<SyncConn>>,
    /// Idle connections kept for reuse. Reads never wait inside a connection (they run
    /// to the end synchronously), so no more are open at once than threads reading;
    /// this bounds what a burst of blocking threads leaves behind.
    max_idle: usize,
    closed: AtomicBool,
}

/// A read connection, back to the pool when dropped.
pub(crate) struct Reader<'a> {
    conn: Option<SyncConn>,
    pool: &'a Readers,
}

impl std::ops::Deref for Reader<'_> {
    type Target = SyncConn;
    fn deref(&self) -> &SyncConn {
        // Taken only by `drop`.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("reader used after drop"))
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut SyncConn {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("reader used after drop"))
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.pool.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.pool.max_idle {
            idle.push(conn);
        }
    }
}

/// The writer's one connection, owned for the life of the store.
struct Owned(SyncConn);

impl group::Conn for Owned {
    type C = SyncConn;
    async fn get(&mut self) -> StoreResult<&mut SyncConn> {
        Ok(&mut self.0)
    }
    fn begin(&self) -> &'static [&'static str] {
        BEGIN
    }
    fn name(&self) -> &'static str {
        "sqlite"
    }
}

/// The SQLite backend. Cheap to clone: a pool handle and a channel sender.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    readers: Arc<Readers>,
    writer: mpsc::Sender<Msg>,
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at `path`, runs
    /// the migrations and starts the writer thread. Read connections are opened as
    /// threads need them; up to `max_connections` idle ones are kept.
    pub async fn open(path: &Path, max_connections: u32) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                StoreError::Unavailable(format!("cannot create the data directory: {}", e.kind()))
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let mut conn = SqliteConnection::connect_with(&opts)
            .await
            .map_err(db_err)?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        conn.close().await.map_err(db_err)?;

        let writer = SyncConn::open(path, false)?;
        let readers = Arc::new(Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(vec![SyncConn::open(path, true)?]),
            max_idle: max_connections.max(1) as usize,
            closed: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(group::QUEUE);
        // The writer gets a thread of its own, so it is woken at once rather than
        // queued behind request handlers on a busy runtime, and its synchronous
        // statements never hold up a runtime worker.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || rt.block_on(run_writer(writer, rx)))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            readers,
            writer: tx,
        })
    }

    /// A read-only connection: an idle one, or a new one.
    pub(crate) async fn reader(&self) -> StoreResult<Reader<'_>> {
        let pool = &*self.readers;
        if pool.closed.load(Ordering::Acquire) {
            return Err(group::closed());
        }
        let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => SyncConn::open(&pool.path, true)?,
        };
        Ok(Reader {
            conn: Some(conn),
            pool,
        })
    }

    /// Queues a write and waits until its group commit is durable.
    pub(crate) async fn write(&self, op: WriteOp) -> StoreResult<WriteReply> {
        group::write(&self.writer, op).await
    }

    /// Finishes the queued writes, stops the writer and closes every connection.
    /// Later calls on any clone fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        group::stop(&self.writer).await;
        self.readers.closed.store(true, Ordering::Release);
        let idle =
            std::mem::take(&mut *self.readers.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(idle);
    }
}

/// The writer task ([`group::writer`]), then a clean close of the database.
async fn run_writer(conn: SyncConn, rx: mpsc::Receiver<Msg>) {
    let Owned(SyncConn(conn)) = group::writer(Owned(conn), rx).await;
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %sq_err(e), "closing the SQLite writer connection failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::args;

    fn memory() -> SyncConn {
        SyncConn(Connection::open_in_memory().unwrap())
    }

    /// The shared SQL relies on this: `$N` binds argument N wherever it appears.
    #[tokio::test]
    async fn dollar_n_placeholders_bind_by_number() {
        let mut c = memory();
        let row = c
            .opt("SELECT $2, $1, $2 || $1", args!["one", "two"])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.text(0).unwrap(), "two");
        assert_eq!(row.text(1).unwrap(), "one");
        assert_eq!(row.text(2).unwrap(), "twoone");
        // Too few arguments is an error, not a NULL.
        assert!(c.opt("SELECT $1, $2", args!["one"]).await.is_err());
    }

    #[tokio::test]
    async fn values_round_trip_and_types_are_checked() {
        let mut c = memory();
        c.exec("CREATE TABLE t (a TEXT, b INTEGER, c BLOB, d TEXT)", &[])
            .await
            .unwrap();
        let n = c
            .exec(
                "INSERT INTO t VALUES ($1, $2, $3, $4)",
                args!["x", 7_i64, &b"\x00\xff"[..], None::<&str>],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let rows = c.all("SELECT a, b, c, d FROM t", &[]).await.unwrap();
        let r = &rows[0];
        assert_eq!(r.text(0).unwrap(), "x");
        assert_eq!(r.int(1).unwrap(), 7);
        assert_eq!(r.blob(2).unwrap(), vec![0, 0xff]);
        assert_eq!(r.opt_text(3).unwrap(), None);
        assert!(matches!(r.text(3), Err(StoreError::Corrupt(_))));
        assert!(matches!(r.int(0), Err(StoreError::Corrupt(_))));
        assert!(matches!(r.text(9), Err(StoreError::Corrupt(_))));
        // RETURNING through exec still counts the change.
        let n = c
            .exec("UPDATE t SET b = b + 1 RETURNING b", &[])
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert!(
            c.opt("SELECT a FROM t WHERE b = 99", &[])
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn constraint_errors_map_to_conflicts() {
        let mut c = memory();
        c.exec(
            "CREATE TABLE u (k TEXT PRIMARY KEY, v TEXT NOT NULL UNIQUE)",
            &[],
        )
        .await
        .unwrap();
        c.exec("INSERT INTO u VALUES ('a', 'b')", &[])
            .await
            .unwrap();
        let dup = c.exec("INSERT INTO u VALUES ('a', 'c')", &[]).await;
        assert!(matches!(dup, Err(StoreError::Conflict("already exists"))));
        let dup = c.exec("INSERT INTO u VALUES ('z', 'b')", &[]).await;
        assert!(matches!(dup, Err(StoreError::Conflict("already exists"))));
        let null = c.exec("INSERT INTO u VALUES ('y', NULL)", &[]).await;
        assert!(matches!(
            null,
            Err(StoreError::Conflict("violates a table constraint"))
        ));
        let bad = c.exec("SELECT * FROM missing_table", &[]).await;
        assert!(matches!(bad, Err(StoreError::Unavailable(_))));
    }

    #[test]
    fn schema_names_are_validated() {
        use crate::postgres::valid_schema;
        assert!(valid_schema("t_0123abcd"));
        assert!(valid_schema("Tenant_1"));
        for bad in ["", "1abc", "a-b", "a;b", "a b", "\"x\"", &"a".repeat(64)] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }
}
