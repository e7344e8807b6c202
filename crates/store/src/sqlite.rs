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

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, ffi};
use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

use crate::dialect::Dialect;
use crate::exec::{Arg, Exec, RowGet, db_err};
use crate::group::{self, Msg};
use crate::sql::{WriteOp, WriteReply};
use crate::{StoreError, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

pub(crate) const BEGIN: &[&str] = &["BEGIN IMMEDIATE"];

/// Prepared statements kept per connection. The store has about 200 distinct texts; the
/// hot ones (card reads, audit appends, key lookups) stay prepared.
const STATEMENT_CACHE: usize = 256;

/// What a connection is for.
#[derive(Debug, Clone, Copy)]
enum Role {
    Reader,
    Writer,
    Checkpointer,
}

/// How often the checkpointer runs while writes come in. A page written many times
/// between two runs is copied and flushed once, so a longer interval means fewer random
/// writes into the database file, which compete with the WAL's `fsync` on the same disk.
/// Much longer, and the checkpoint the writer finishes has more to copy, which shows in
/// the tail latency. Figures: BENCHMARKS.md, "SQLite settings".
const CHECKPOINT_EVERY: Duration = Duration::from_millis(400);
/// How long a reader keeps one read transaction at most, unless the writer has lately
/// looked for other connections' commits ([`DATA_SNAPSHOT_AGE`]). The writer's counts of
/// commits ([`Readers::commits`]) decide whether a kept snapshot holds every write this
/// store acknowledged; this bounds how long a write by anything other than this store's
/// writer (another server on the same file, the audit tamper tests) can go unseen.
const SNAPSHOT_AGE: Duration = Duration::from_millis(2);
/// How long a read other than the audit trail's ([`MustSee::Data`]) may keep its snapshot
/// while the writer looks for other connections' commits after every batch
/// ([`Readers::looked`]) and last did so less than [`SNAPSHOT_AGE`] ago: a write by
/// another server then still goes unseen for [`SNAPSHOT_AGE`] at most. Under load the
/// writer commits about a thousand batches a second, nearly all of read records alone,
/// so a snapshot lives until the next data write or this age. The age alone, without the
/// writer's look, let a node miss the other's new transport key in the two-node tests.
/// Figures: BENCHMARKS.md, "SQLite settings".
const DATA_SNAPSHOT_AGE: Duration = Duration::from_millis(100);
/// When the checkpointer asks the writer to finish a checkpoint (see [`checkpointer`] and
/// [`round`]). A checkpoint in the writer pauses every write for its copy and sync, so it
/// should be rare and short.
#[derive(Debug, Clone, Copy)]
struct FinishAt {
    /// WAL frames (4 KiB pages) beyond which the WAL should start over. Lower, and the
    /// writer pauses so often that the tail latency of writes rises (BENCHMARKS.md,
    /// "SQLite settings").
    frames: i64,
    /// Frames copied by the checkpointer's last round below which the writer is asked.
    left: i64,
    /// Copy-and-flush rounds at most in one run. Each round copies what landed during the
    /// last one's flush, about half as much at full load with a million cards.
    rounds: usize,
}

const FINISH_AT: FinishAt = FinishAt {
    frames: 16_000,
    left: 512,
    rounds: 6,
};

/// One SQLite connection, driven synchronously. Its futures are ready at once.
pub(crate) struct SyncConn {
    conn: Connection,
    /// Per SQL text (by address: every text is `'static`), which argument each of the
    /// statement's parameters takes. Looking a parameter's name up costs a scan of the
    /// statement's parameter list, quadratic for a 400-parameter audit insert.
    params: HashMap<(usize, usize), Box<[u16]>>,
    /// A reader's open read transaction, kept from one use to the next ([`Readers`]).
    snapshot: Option<Snapshot>,
}

/// A read transaction a reader keeps open: as of which commits, and since when.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    counts: Counts,
    at: Instant,
}

/// The writer's counts of commits ([`Readers::commits`]): all of them, and those that
/// held more than audit records appended alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    all: u64,
    data: u64,
}

impl Counts {
    /// Whether a snapshot taken at `self` misses a commit that a read which `sees`
    /// must see, by the counts `now`.
    fn behind(self, now: Counts, sees: MustSee) -> bool {
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

impl std::fmt::Debug for SyncConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncConn")
    }
}

impl SyncConn {
    /// Opens `path` with the pragmas its role needs.
    fn open(path: &Path, role: Role) -> StoreResult<Self> {
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
    fn checkpoint(&self) -> StoreResult<(i64, i64)> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .map_err(sq_err)
    }

    fn new(conn: Connection) -> Self {
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
    fn hold(&mut self, now: Counts, sees: MustSee, max_age: Duration) -> StoreResult<()> {
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
    fn release(&mut self) -> StoreResult<()> {
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
    fn stale(&self, now: Counts, sees: MustSee) -> bool {
        self.snapshot.is_some_and(|s| s.counts.behind(now, sees))
    }

    /// Prepares (or takes from the cache) `sql`, binds `args` by their `$N` numbers and
    /// hands the statement to `f`.
    fn with<T>(
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

/// For each parameter of `st` in SQLite's order, the 0-based number of its `$N` argument.
fn param_numbers(st: &rusqlite::Statement<'_>) -> StoreResult<Box<[u16]>> {
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
        &crate::dialect::Sqlite
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
///
/// Each keeps its read transaction (its snapshot) from one use to the next while the
/// writer has committed nothing since it began that the read must see ([`MustSee`],
/// [`Readers::commits`]), for at most [`SNAPSHOT_AGE`], or [`DATA_SNAPSHOT_AGE`] for
/// data reads while the writer keeps looking for other connections' commits
/// ([`Readers::age`]). SQLite empties a reader's page cache when it begins a transaction
/// after another connection's commit, and under load the writer commits about a thousand
/// times a second (every request's audit record is a write): with a new transaction per
/// read, a get read all seven of its B-tree pages again at a million cards. A kept
/// snapshot keeps the pages that successive lookups share (figures: BENCHMARKS.md,
/// "SQLite settings").
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<SyncConn>>,
    /// Idle connections kept for reuse. Reads never wait inside a connection (they run
    /// to the end synchronously), so no more are open at once than threads reading;
    /// this bounds what a burst of blocking threads leaves behind.
    max_idle: usize,
    closed: AtomicBool,
    /// Batches the writer has committed. Bumped after `COMMIT` and before any of the
    /// batch's writes is answered, so a reader whose snapshot began at the current count
    /// sees every acknowledged write.
    commits: AtomicU64,
    /// Of those, the batches that held more than audit records appended alone; bumped
    /// with (and before) `commits`.
    data: AtomicU64,
    /// How long a reader keeps one snapshot at most ([`SNAPSHOT_AGE`]).
    max_age: Duration,
    /// How long a data read keeps one while the writer looks ([`DATA_SNAPSHOT_AGE`]).
    data_age: Duration,
    /// When the writer last began to look for other connections' commits, in
    /// microseconds since `epoch`, plus one (0: never). Any it found were counted as data
    /// commits before this was stored.
    looked_at: AtomicU64,
    epoch: Instant,
}

impl Readers {
    /// A pool for the database at `path` (which must exist), with one reader open, whose
    /// snapshots serve for at most `max_age`, or `data_age` for data reads while the
    /// writer looks for other connections' commits.
    fn new(
        path: &Path,
        max_idle: usize,
        max_age: Duration,
        data_age: Duration,
    ) -> StoreResult<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            idle: Mutex::new(vec![SyncConn::open(path, Role::Reader)?]),
            max_idle: max_idle.max(1),
            closed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            data: AtomicU64::new(0),
            max_age,
            data_age: data_age.max(max_age),
            looked_at: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Microseconds since `epoch`.
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// How long a read which `sees` may keep a snapshot now. Read before the counts, so
    /// that a data commit the writer found in its last look is in them.
    fn age(&self, sees: MustSee) -> Duration {
        let looked = self.looked_at.load(Ordering::Acquire);
        let recent = looked != 0
            && u128::from(self.now_us().saturating_sub(looked - 1)) < self.max_age.as_micros();
        match sees {
            MustSee::Data if recent => self.data_age,
            _ => self.max_age,
        }
    }

    /// The writer began at `at` (from [`Self::now_us`]) to look for other connections'
    /// commits and found some (`found`) or none: every commit before `at` is now counted.
    fn looked(&self, at: u64, found: bool) {
        if found {
            self.committed(true);
        }
        self.looked_at
            .store(at.saturating_add(1), Ordering::Release);
    }

    /// The counts as of now. Read before a snapshot begins, they undercount at worst (a
    /// commit counted in one and not yet in the other), which only ends a snapshot early.
    fn counts(&self) -> Counts {
        Counts {
            all: self.commits.load(Ordering::Acquire),
            data: self.data.load(Ordering::Acquire),
        }
    }

    /// A read-only connection (an idle one, or a new one) inside a read transaction that
    /// holds every acknowledged write that a read which `sees` must see.
    fn get(&self, sees: MustSee) -> StoreResult<Reader<'_>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(group::closed());
        }
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => SyncConn::open(&self.path, Role::Reader)?,
        };
        let age = self.age(sees);
        conn.hold(self.counts(), sees, age)?;
        Ok(Reader {
            conn: Some(conn),
            pool: self,
        })
    }

    /// Ends the read transactions that idle readers keep from before the last commit (of
    /// any kind), so that they hold back neither the checkpoint nor the WAL's restart.
    fn sweep(&self) {
        let now = self.counts();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain_mut(|c| !c.stale(now, MustSee::All) || c.release().is_ok());
    }

    /// Counts a commit: every snapshot kept from before it is stale for the audit trail's
    /// reads and, if it held more than audit records appended alone (`data`), for all.
    fn committed(&self, data: bool) {
        if data {
            self.data.fetch_add(1, Ordering::AcqRel);
        }
        self.commits.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes every kept snapshot stale, as a data commit would, and ends the idle ones.
    fn expire(&self) {
        self.committed(true);
        self.sweep();
    }
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
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.pool.closed.load(Ordering::Acquire) {
            return;
        }
        // A snapshot from before the last data commit is of no further use: let it go now
        // rather than hold back the checkpoint while idle. (One that missed only audit
        // records is kept for the next read; the checkpointer's sweep ends it if it is
        // still idle then.) A reader that cannot end its transaction is not reused.
        if conn.stale(self.pool.counts(), MustSee::Data) && conn.release().is_err() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.pool.max_idle {
            idle.push(conn);
        }
    }
}

/// The writer's one connection, owned for the life of the store, and its line to the
/// checkpointer.
struct SqliteWriter {
    conn: SyncConn,
    ckpt: Arc<CheckpointState>,
    wake: std_mpsc::SyncSender<()>,
    cache: WriterCache,
    readers: Arc<Readers>,
    /// `PRAGMA data_version` at the writer's last look ([`SqliteWriter::look`]).
    version: Option<i64>,
}

impl SqliteWriter {
    /// Looks for commits by other connections to the file (another server sharing it)
    /// since the last look, and tells the readers: `PRAGMA data_version` changes on the
    /// writer's connection when, and only when, another connection has committed. The
    /// first look counts as finding some, since nothing before it was looked at. Costs a
    /// microsecond or two (no I/O: the WAL index is in shared memory).
    fn look(&mut self) {
        // Inside a transaction (a batch whose end failed) it would answer as of its start.
        if !self.conn.conn.is_autocommit() {
            return;
        }
        let at = self.readers.now_us();
        let version = self
            .conn
            .conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)));
        match version {
            Ok(v) => {
                let found = self.version.replace(v) != Some(v);
                self.readers.looked(at, found);
            }
            // Without a look the readers keep to the short age.
            Err(e) => tracing::warn!(error = %e, "SQLite data_version failed"),
        }
    }
}

/// The writer's page-cache size, which depends on the database's size because of a SQLite
/// quirk.
///
/// When a B-tree rebalance puts sibling pages in order (`balance_nonroot`), SQLite swaps
/// page numbers through the pending-byte page, the page at 1 GiB (262,145 with 4 KiB
/// pages). The page cache then believes it holds a page past the end of the database, and
/// the truncate at the end of that transaction (`pcache1TruncateUnsafe`) walks every page
/// in the writer's cache, a cache miss each. Inserts into the fingerprint index land on
/// random leaves, so almost every group commit rebalances somewhere, and with a large
/// cache the walk became a large share of the writer's CPU during tokenize. Once the
/// database is larger than 1 GiB the swap page lies inside it and the walk never happens.
///
/// So the cache is 4 MiB while the database is under 1 GiB: enough for the B-tree
/// interiors, the append points of every table and a batch's dirty pages; the
/// fingerprint-index leaves come from the OS page cache, a `pread` each, and the walk is
/// short. Beyond 1 GiB it is 128 MiB, which holds the fingerprint index of a million
/// cards, so tokenize slows less as the vault grows. Figures: BENCHMARKS.md, "SQLite
/// settings".
#[derive(Debug)]
struct WriterCache {
    large: bool,
    batches: u32,
    /// Bytes past which the cache is large: [`PENDING_BYTE`] (smaller in tests).
    threshold: i64,
}

impl Default for WriterCache {
    fn default() -> Self {
        Self {
            large: false,
            batches: 0,
            threshold: PENDING_BYTE,
        }
    }
}

/// The cache while the database is under 1 GiB, and beyond (KiB, as `cache_size` takes).
const WRITER_CACHE_SMALL_KIB: i64 = 4 * 1024;
const WRITER_CACHE_LARGE_KIB: i64 = 128 * 1024;
/// SQLite's pending byte: the page holding it is the one `balance_nonroot` swaps through.
const PENDING_BYTE: i64 = 0x4000_0000;
/// Batches between two looks at the database's size (a batch adds at most a few hundred
/// pages, so the large cache comes at most a few hundred MiB late).
const WRITER_CACHE_CHECK_EVERY: u32 = 1024;

impl WriterCache {
    /// Counts a batch; every [`WRITER_CACHE_CHECK_EVERY`] batches, sizes the cache again.
    fn after_batch(&mut self, conn: &Connection) {
        self.batches = self.batches.wrapping_add(1);
        if self.batches.is_multiple_of(WRITER_CACHE_CHECK_EVERY) {
            self.set(conn);
        }
    }

    /// Sizes the cache for the database as it is now (once large, it stays large).
    fn set(&mut self, conn: &Connection) {
        if self.large {
            return;
        }
        let size = conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get::<_, i64>(0),
        );
        let large = match size {
            Ok(bytes) => bytes > self.threshold,
            Err(e) => {
                tracing::warn!(error = %sq_err(e), "cannot read the database's size");
                false
            }
        };
        let kib = if large {
            WRITER_CACHE_LARGE_KIB
        } else {
            WRITER_CACHE_SMALL_KIB
        };
        match conn.execute_batch(&format!("PRAGMA cache_size = -{kib}")) {
            Ok(()) if large => {
                self.large = true;
                tracing::info!(
                    cache_kib = kib,
                    "the database is past 1 GiB: the writer's page cache is now large"
                );
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %sq_err(e), "cannot size the writer's page cache"),
        }
    }

    /// The cache size now, in KiB (for tests).
    #[cfg(test)]
    fn kib(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA cache_size", [], |r| r.get::<_, i64>(0))
            .map(|n| -n)
            .unwrap_or(0)
    }
}

impl group::WriterConn for SqliteWriter {
    type C = SyncConn;
    async fn get(&mut self) -> StoreResult<&mut SyncConn> {
        Ok(&mut self.conn)
    }
    fn committed(&mut self, data: bool) {
        self.readers.committed(data);
        // Before the answers, so that a write answered by this store was looked for by
        // the time its answer arrives (a microsecond or two).
        self.look();
    }
    fn done(&mut self) {
        self.cache.after_batch(&self.conn.conn);
        if self.ckpt.finish.swap(false, Ordering::AcqRel) {
            // The checkpointer has copied most of the WAL but cannot catch up while
            // batches keep landing: copy the rest now, between batches, so the next
            // batch starts the WAL over instead of growing it. Readers' snapshots from
            // before the last commit would stop the copy short; those from after it use
            // the WAL too, and would stop it starting over, so they are expired after it.
            self.readers.sweep();
            if let Err(e) = self.conn.checkpoint() {
                tracing::warn!(error = %e, "SQLite checkpoint failed");
            }
            self.readers.expire();
        }
        // A full channel means the checkpointer has a wake-up pending already.
        self.wake.try_send(()).ok();
    }
    fn dialect(&self) -> &'static dyn Dialect {
        &crate::dialect::Sqlite
    }
}

/// Shared by the writer and the checkpointer.
#[derive(Debug, Default)]
struct CheckpointState {
    /// Set by the checkpointer: the WAL is long and nearly all copied; the writer
    /// should finish the copy between two batches.
    finish: AtomicBool,
}

/// Checkpoints run on a thread of their own, not in the writer after a commit (SQLite's
/// automatic checkpoint), where copying pages back into the database file and syncing
/// it takes the writer's time, and the writer is what tokenizations queue on.
/// Wakes after batches, at most every [`CHECKPOINT_EVERY`]; stops when the writer does,
/// after a last checkpoint.
///
/// A passive checkpoint that cannot copy the whole WAL (batches keep landing) leaves the
/// pages it copied dirty in the OS cache: SQLite syncs the database file only when a
/// checkpoint completes, and that is the one the writer finishes between two batches. With
/// a million cards those pages are scattered across a large file, and flushing them all in
/// that final sync held the writer (and every tokenization queued on it) for a long pause.
/// So the checkpointer flushes what it copied itself, off the writer's path, after each run
/// that copied something; the final sync is then left with a few hundred pages.
fn checkpointer(
    conn: SyncConn,
    db_file: &std::fs::File,
    wake: std_mpsc::Receiver<()>,
    state: Arc<CheckpointState>,
    readers: Arc<Readers>,
) {
    let mut last: Option<Instant> = None;
    let mut flush = Flush::new(db_file);
    let mut open = true;
    while open {
        if wake.recv().is_err() {
            break;
        }
        if let Some(deadline) = last.map(|t| t + CHECKPOINT_EVERY) {
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match wake.recv_timeout(left) {
                    Ok(()) => {}
                    Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        }
        // Idle readers' snapshots from before the last commit would stop the copy short.
        readers.sweep();
        if let Err(e) = round(&conn, &mut flush, &state, FINISH_AT) {
            tracing::warn!(error = %e, "SQLite checkpoint failed");
        }
        last = Some(Instant::now());
    }
    // The writer has stopped: idle readers' snapshots from before its last commit would
    // leave the end of the WAL uncopied.
    readers.sweep();
    if let Err(e) = conn.checkpoint() {
        tracing::warn!(error = %e, "SQLite checkpoint at close failed");
    }
    tracing::debug!(flushes = flush.flushes, "SQLite checkpointer stopped");
}

/// One run of the checkpointer: copy what the WAL holds, and flush it. Once the WAL is past
/// `at.frames`, copy and flush again what landed meanwhile, each round shorter than the
/// last, and ask the writer to finish only after a round that copied (and flushed) fewer
/// than `at.left` frames: what the writer then copies and syncs while every write waits is
/// only what landed during that last, short flush. Asked right after one copy, it was left
/// enough scattered pages to sync that every write paused for milliseconds, more than once
/// a second at full load (BENCHMARKS.md, "SQLite settings").
fn round(
    conn: &SyncConn,
    flush: &mut Flush<'_>,
    state: &CheckpointState,
    at: FinishAt,
) -> StoreResult<()> {
    let (mut frames, mut copied) = conn.checkpoint()?;
    flush.after(copied);
    // The first round copied whatever landed since the last run; only a later round of
    // this run measures what lands during one flush.
    for _ in 1..at.rounds {
        if frames <= at.frames {
            return Ok(());
        }
        let before = copied;
        (frames, copied) = conn.checkpoint()?;
        flush.after(copied);
        if frames > at.frames && copied.saturating_sub(before) < at.left {
            state.finish.store(true, Ordering::Release);
            return Ok(());
        }
    }
    // A disk slower than the writes never gives a short round: past four times the
    // threshold, the writer finishes anyway (a longer pause) rather than let the WAL grow
    // without bound.
    if frames > at.frames.saturating_mul(4) {
        state.finish.store(true, Ordering::Release);
    }
    Ok(())
}

/// The checkpointer's flush of the database file (see [`checkpointer`]).
struct Flush<'a> {
    file: &'a std::fs::File,
    /// WAL frames already copied, as of the last flush.
    copied: i64,
    /// A failure is reported once, not on every run, until a flush succeeds again.
    warned: bool,
    /// Flushes that succeeded (logged when the checkpointer stops).
    flushes: u64,
}

impl<'a> Flush<'a> {
    fn new(file: &'a std::fs::File) -> Self {
        Self {
            file,
            copied: 0,
            warned: false,
            flushes: 0,
        }
    }

    /// Flushes the file if the checkpoint copied anything since the last flush (`copied`
    /// starts again from zero when the WAL does).
    fn after(&mut self, copied: i64) {
        if copied == self.copied {
            return;
        }
        self.copied = copied;
        match self.file.sync_data() {
            Ok(()) => {
                self.warned = false;
                self.flushes += 1;
            }
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(error = %e, "flushing the SQLite database file failed; the checkpoint that completes will sync it");
            }
            Err(_) => {}
        }
    }
}

/// The SQLite backend. Cheap to clone: a pool handle and a channel sender.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    readers: Arc<Readers>,
    writer: mpsc::Sender<Msg>,
    /// Fires when the checkpointer has stopped (after the writer).
    checkpointer: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at `path`, runs
    /// the migrations and starts the writer thread. Read connections are opened as
    /// threads need them; up to `max_connections` idle ones are kept.
    pub async fn open(path: &Path, max_connections: u32) -> StoreResult<Self> {
        Self::start(path, max_connections, SNAPSHOT_AGE).await
    }

    /// [`Self::open`], with readers that keep a snapshot for at most `max_age`.
    async fn start(path: &Path, max_connections: u32, max_age: Duration) -> StoreResult<Self> {
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

        let writer = SyncConn::open(path, Role::Writer)?;
        let ckpt_conn = SyncConn::open(path, Role::Checkpointer)?;
        let db_file = std::fs::File::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open the database file: {e}")))?;
        let readers = Arc::new(Readers::new(
            path,
            max_connections as usize,
            max_age,
            DATA_SNAPSHOT_AGE,
        )?);
        let (tx, rx) = mpsc::channel(group::QUEUE);
        // The writer gets a thread of its own, so it is woken at once rather than
        // queued behind request handlers on a busy runtime, and its synchronous
        // statements never hold up a runtime worker.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        let state = Arc::new(CheckpointState::default());
        let (wake, woken) = std_mpsc::sync_channel(1);
        let (stopped_tx, stopped) = oneshot::channel();
        let ckpt_state = state.clone();
        let ckpt_readers = readers.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                checkpointer(ckpt_conn, &db_file, woken, ckpt_state, ckpt_readers);
                stopped_tx.send(()).ok();
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpointer: {e}")))?;
        let mut cache = WriterCache::default();
        cache.set(&writer.conn);
        let owned = SqliteWriter {
            conn: writer,
            ckpt: state,
            wake,
            cache,
            readers: readers.clone(),
            version: None,
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || rt.block_on(run_writer(owned, rx)))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            readers,
            writer: tx,
            checkpointer: Arc::new(Mutex::new(Some(stopped))),
        })
    }

    /// A read-only connection (an idle one, or a new one) for any read but the audit
    /// trail's.
    pub(crate) fn reader(&self) -> StoreResult<Reader<'_>> {
        self.readers.get(MustSee::Data)
    }

    /// A read-only connection for the audit trail's reads, which must also see the audit
    /// records appended alone.
    pub(crate) fn audit_reader(&self) -> StoreResult<Reader<'_>> {
        self.readers.get(MustSee::All)
    }

    /// Queues a write and waits until its group commit is durable.
    pub(crate) async fn write(&self, op: WriteOp) -> StoreResult<WriteReply> {
        group::write(&self.writer, op).await
    }

    /// Finishes the queued writes, stops the writer and closes every connection.
    /// Later calls on any clone fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        group::stop(&self.writer).await;
        let stopped = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(stopped) = stopped {
            // An error only means the thread is gone already.
            stopped.await.ok();
        }
        self.readers.closed.store(true, Ordering::Release);
        let idle =
            std::mem::take(&mut *self.readers.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(idle);
    }
}

/// The writer task ([`group::writer`]), then a clean close of the database.
async fn run_writer(owned: SqliteWriter, rx: mpsc::Receiver<Msg>) {
    let SqliteWriter { conn, wake, .. } = group::writer(owned, rx).await;
    // Tells the checkpointer to stop (after a last checkpoint).
    drop(wake);
    if let Err((_, e)) = conn.conn.close() {
        tracing::warn!(error = %sq_err(e), "closing the SQLite writer connection failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::args;

    /// Long enough that only a counted commit ends a snapshot in a test.
    const HOUR: Duration = Duration::from_secs(3600);

    fn memory() -> SyncConn {
        SyncConn::new(Connection::open_in_memory().unwrap())
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

    /// Every lookup by fingerprint goes through the prefix index (migration 0009), never
    /// along an account's cards, which would read a million rows per tokenization and
    /// still pass every other test.
    #[tokio::test]
    async fn card_lookups_use_the_prefix_index_or_the_row_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let store = SqliteStore::open(&path, 1).await.unwrap();
        store.close().await;
        let c = Connection::open(&path).unwrap();
        for sql in crate::sql::FINGERPRINT_LOOKUPS {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = std::iter::repeat_n(rusqlite::types::Null, st.parameter_count());
            let plan: Vec<String> = st
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                plan.first().map(String::as_str),
                Some("SEARCH cards USING INDEX cards_fp_prefix (<expr>=?)"),
                "{sql}: {plan:?}"
            );
            assert!(plan.iter().all(|l| !l.starts_with("SCAN")), "{plan:?}");
        }
        // A read by id at the row id the id gives walks the table alone.
        let sql = format!("EXPLAIN QUERY PLAN {}", crate::sql::GET_CARD_AT);
        let plan: String = c
            .query_row(&sql, rusqlite::params![1, 2, 3, 4], |r| r.get(3))
            .unwrap();
        assert_eq!(plan, "SEARCH cards USING INTEGER PRIMARY KEY (rowid=?)");
    }

    /// A database at `path` in WAL mode with one table `t (x BLOB)`, and a writer on it.
    fn wal_writer(path: &Path) -> SyncConn {
        Connection::open(path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x BLOB);")
            .unwrap();
        SyncConn::open(path, Role::Writer).unwrap()
    }

    /// The writer keeps statement journals (and any temporary table) in memory, never in
    /// a temporary file (2 = `MEMORY`).
    #[test]
    fn the_writer_journals_statements_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let w = wal_writer(&dir.path().join("t.db"));
        let mode: i64 = w
            .conn
            .query_row("PRAGMA temp_store", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 2);
        let r = SyncConn::open(&dir.path().join("t.db"), Role::Reader).unwrap();
        let mode: i64 = r
            .conn
            .query_row("PRAGMA temp_store", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 0, "readers keep the default");
    }

    /// The writer's cache is small while the database is small, and grows once it passes
    /// the threshold, noticed at the next periodic look.
    #[tokio::test]
    async fn the_writer_cache_grows_with_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = wal_writer(&path);
        let mut cache = WriterCache {
            threshold: 64 * 4096,
            ..WriterCache::default()
        };
        cache.set(&w.conn);
        assert_eq!(WriterCache::kib(&w.conn), WRITER_CACHE_SMALL_KIB);
        let page = vec![7u8; 4000];
        for _ in 0..100 {
            w.exec("INSERT INTO t VALUES ($1)", args![&page])
                .await
                .unwrap();
        }
        // Looked at every WRITER_CACHE_CHECK_EVERY batches only.
        for _ in 1..WRITER_CACHE_CHECK_EVERY {
            cache.after_batch(&w.conn);
        }
        assert_eq!(WriterCache::kib(&w.conn), WRITER_CACHE_SMALL_KIB);
        cache.after_batch(&w.conn);
        assert!(cache.large);
        assert_eq!(WriterCache::kib(&w.conn), WRITER_CACHE_LARGE_KIB);
        // And it stays large.
        cache.set(&w.conn);
        assert_eq!(WriterCache::kib(&w.conn), WRITER_CACHE_LARGE_KIB);
    }

    /// Background checkpoints copy the WAL without the writer; the writer's finishing
    /// checkpoint lets the next write start the WAL over, so it does not grow.
    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_writer_and_starts_over() {
        use group::WriterConn as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let wal = dir.path().join("t.db-wal");
        let mut w = wal_writer(&path);
        let page = vec![7u8; 4000];
        for _ in 0..200 {
            w.exec("INSERT INTO t VALUES ($1)", args![&page])
                .await
                .unwrap();
        }
        // Nothing copied by the writer itself.
        assert!(size(&wal) > 200 * 4096, "autocheckpoint is not off");
        assert!(size(&path) < 100 * 4096);

        let state = Arc::new(CheckpointState::default());
        let (wake, woken) = std_mpsc::sync_channel(1);
        let ck = SyncConn::open(&path, Role::Checkpointer).unwrap();
        let st = state.clone();
        let db_file = std::fs::File::open(&path).unwrap();
        let readers = Arc::new(Readers::new(&path, 4, SNAPSHOT_AGE, SNAPSHOT_AGE).unwrap());
        let rd = readers.clone();
        let t = std::thread::spawn(move || checkpointer(ck, &db_file, woken, st, rd));
        let mut owned = SqliteWriter {
            conn: w,
            ckpt: state.clone(),
            wake,
            cache: WriterCache::default(),
            readers: readers.clone(),
            version: None,
        };
        owned.done(); // wakes the checkpointer
        // Stop it (it checkpoints on the way out), keeping the writer.
        let SqliteWriter {
            mut conn,
            ckpt,
            wake,
            ..
        } = owned;
        drop(wake);
        t.join().unwrap();
        assert!(size(&path) > 200 * 4000, "the checkpointer copied nothing");

        // Copied, so the writer's next write starts the WAL over.
        conn.exec("INSERT INTO t VALUES ($1)", args![&page])
            .await
            .unwrap();
        let probe = SyncConn::open(&path, Role::Checkpointer).unwrap();
        let (frames, _) = probe.checkpoint().unwrap();
        assert!(frames < 10, "the WAL did not start over: {frames} frames");

        // The finish flag: the writer copies the rest itself between batches, although
        // idle readers keep snapshots: one from before the batch (which would stop the
        // copy short) and one from after it (which would stop the WAL starting over).
        for _ in 0..5 {
            conn.exec("INSERT INTO t VALUES ($1)", args![&page])
                .await
                .unwrap();
        }
        let count = "SELECT count(*) FROM t";
        let (mut a, mut b) = (
            readers.get(MustSee::Data).unwrap(),
            readers.get(MustSee::Data).unwrap(),
        );
        a.opt(count, &[]).await.unwrap();
        b.opt(count, &[]).await.unwrap();
        drop((a, b));
        for _ in 0..50 {
            conn.exec("INSERT INTO t VALUES ($1)", args![&page])
                .await
                .unwrap();
        }
        let (wake, _woken) = std_mpsc::sync_channel(1);
        let mut owned = SqliteWriter {
            conn,
            ckpt: ckpt.clone(),
            wake,
            cache: WriterCache::default(),
            readers: readers.clone(),
            version: None,
        };
        owned.committed(true); // as the group commit does
        readers
            .get(MustSee::Data)
            .unwrap()
            .opt(count, &[])
            .await
            .unwrap();
        let kept = |r: &Readers| {
            let idle = r.idle.lock().unwrap();
            idle.iter().filter(|c| c.snapshot.is_some()).count()
        };
        assert_eq!(
            kept(&readers),
            2,
            "idle readers do not keep their snapshots"
        );
        let before = size(&path);
        ckpt.finish.store(true, Ordering::Release);
        owned.done();
        assert!(!ckpt.finish.load(Ordering::Acquire));
        assert_eq!(kept(&readers), 0, "the writer left readers' snapshots open");
        let SqliteWriter { mut conn, .. } = owned;
        conn.exec("INSERT INTO t VALUES ($1)", args![&page])
            .await
            .unwrap();
        let (frames, _) = probe.checkpoint().unwrap();
        assert!(frames < 10, "the WAL did not start over: {frames} frames");
        assert!(
            size(&path) >= before + 50 * 4000,
            "the writer did not checkpoint"
        );
    }

    /// Past the WAL threshold, the checkpointer copies and flushes again until a round
    /// copies little, and only then asks the writer to finish; below it, never.
    #[tokio::test]
    async fn a_write_is_seen_once_answered_by_a_reader_that_kept_its_snapshot() {
        use crate::VaultStore as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let s = SqliteStore::start(&path, 2, HOUR).await.unwrap();
        let store = crate::Store::Sqlite(s.clone());
        let mut acct = crate::AccountRecord {
            id: "acct_1".into(),
            name: "A".into(),
            otp_delivery_url: None,
            created_ms: 1,
        };
        assert!(store.get_account(&acct.id).await.unwrap().is_none());
        store.create_account(&acct, &[], &[]).await.unwrap();
        let name = |a: Option<crate::AccountRecord>| a.map(|a| a.name);
        assert_eq!(
            name(store.get_account(&acct.id).await.unwrap()).as_deref(),
            Some("A")
        );
        async fn renamed(
            store: &crate::Store,
            acct: &mut crate::AccountRecord,
            to: &str,
        ) -> Option<String> {
            acct.name = to.into();
            assert!(store.update_account(acct).await.unwrap());
            store.get_account(&acct.id).await.unwrap().map(|a| a.name)
        }
        assert_eq!(
            renamed(&store, &mut acct, "B").await.as_deref(),
            Some("B"),
            "a reader's kept snapshot hid an answered write"
        );

        // An audit record appended alone leaves the data readers' snapshots in use, but
        // the audit trail's reads see it as soon as it is answered.
        use crate::AuditStore as _;
        fn chain(prev: &[u8; 32], rec: &[u8]) -> [u8; 32] {
            let mut h = *prev;
            h[0] = h[0].wrapping_add(u8::try_from(rec.len() % 251).unwrap());
            h
        }
        let rec = crate::AuditRecord {
            action: "card.get".into(),
            ..Default::default()
        };
        let (before, _) = store.audit_head().await.unwrap();
        let head = store.append_audit(vec![rec.clone()], chain).await.unwrap();
        assert_eq!(head, before + 1);
        assert_eq!(
            store.audit_head().await.unwrap().0,
            head,
            "an audit read missed an answered audit append"
        );
        let listed = store
            .list_audit(&crate::AuditQuery {
                after_seq: Some(before),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].action, "card.get");
        // A data write after audit appends is seen by the next read.
        store.append_audit(vec![rec], chain).await.unwrap();
        assert_eq!(
            renamed(&store, &mut acct, "C").await.as_deref(),
            Some("C"),
            "a reader's kept snapshot hid an answered write after an audit append"
        );
        s.close().await;
    }

    /// Two servers on one database file, with the ages `strongroom dev` uses: a data read
    /// on one keeps its snapshot across its own writer's commits of audit records alone,
    /// but not past the other's data write, which its writer finds when it next looks.
    #[tokio::test]
    async fn a_kept_snapshot_ends_when_the_writer_finds_another_servers_write() {
        use crate::{AuditStore as _, VaultStore as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let a = SqliteStore::open(&path, 2).await.unwrap();
        let b = SqliteStore::open(&path, 2).await.unwrap();
        let (store_a, store_b) = (
            crate::Store::Sqlite(a.clone()),
            crate::Store::Sqlite(b.clone()),
        );
        let mut acct = crate::AccountRecord {
            id: "acct_1".into(),
            name: "A".into(),
            otp_delivery_url: None,
            created_ms: 1,
        };
        store_a.create_account(&acct, &[], &[]).await.unwrap();
        let rec = crate::AuditRecord {
            action: "account.get".into(),
            ..Default::default()
        };
        fn chain(prev: &[u8; 32], _rec: &[u8]) -> [u8; 32] {
            *prev
        }
        let name = |a: Option<crate::AccountRecord>| a.map(|a| a.name);
        // b's writer looks once (its first look counts as a find), then b's reader takes a
        // snapshot that holds a's account.
        store_b
            .append_audit(vec![rec.clone()], chain)
            .await
            .unwrap();
        assert_eq!(
            name(store_b.get_account(&acct.id).await.unwrap()).as_deref(),
            Some("A")
        );
        // b's own audit-only commits, and its looks that find nothing, leave the data count
        // (so the snapshot) alone.
        let data = b.readers.counts().data;
        store_b
            .append_audit(vec![rec.clone()], chain)
            .await
            .unwrap();
        assert_eq!(
            b.readers.counts().data,
            data,
            "a look found a write nobody made"
        );
        assert!(
            b.readers.looked_at.load(Ordering::Acquire) > 0,
            "the writer never looked"
        );

        acct.name = "B".into();
        assert!(store_a.update_account(&acct).await.unwrap());
        store_b.append_audit(vec![rec], chain).await.unwrap();
        assert!(
            b.readers.counts().data > data,
            "b's writer did not find a's write"
        );
        assert_eq!(
            name(store_b.get_account(&acct.id).await.unwrap()).as_deref(),
            Some("B"),
            "b's reader kept a snapshot from before a's answered write"
        );
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn a_reader_keeps_its_snapshot_until_the_writer_counts_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = wal_writer(&path);
        // Long enough that only a counted commit ends a snapshot in this test.
        let mut readers = Readers::new(&path, 4, HOUR, HOUR).unwrap();
        async fn rows(readers: &Readers, sees: MustSee) -> i64 {
            let mut r = readers.get(sees).unwrap();
            let row = r.opt("SELECT count(*) FROM t", &[]).await.unwrap();
            row.unwrap().int(0).unwrap()
        }
        assert_eq!(rows(&readers, MustSee::Data).await, 0);
        let insert = "INSERT INTO t VALUES (x'00')";
        w.exec(insert, &[]).await.unwrap();
        // Not counted yet (its writes are not answered yet): the kept snapshot serves.
        assert_eq!(
            rows(&readers, MustSee::Data).await,
            0,
            "the reader did not keep its snapshot"
        );
        readers.committed(true);
        assert_eq!(
            rows(&readers, MustSee::Data).await,
            1,
            "a counted commit is not seen"
        );
        // A stale idle snapshot is ended by a sweep, a current one kept.
        w.exec(insert, &[]).await.unwrap();
        readers.sweep();
        assert!(readers.idle.lock().unwrap()[0].snapshot.is_some());
        readers.committed(true);
        readers.sweep();
        assert!(readers.idle.lock().unwrap()[0].snapshot.is_none());
        assert_eq!(rows(&readers, MustSee::Data).await, 2);

        // A commit of audit records alone: other reads keep their snapshot (and its page
        // cache), the audit trail's reads see it at once, and so does a sweep.
        w.exec(insert, &[]).await.unwrap();
        readers.committed(false);
        assert_eq!(
            rows(&readers, MustSee::Data).await,
            2,
            "an audit-only commit ended a data read's snapshot"
        );
        assert!(
            readers.idle.lock().unwrap()[0].snapshot.is_some(),
            "a snapshot that missed only audit records was not kept while idle"
        );
        assert_eq!(
            rows(&readers, MustSee::All).await,
            3,
            "an audit read did not see an audit-only commit"
        );
        w.exec(insert, &[]).await.unwrap();
        readers.committed(false);
        readers.sweep();
        assert!(
            readers.idle.lock().unwrap()[0].snapshot.is_none(),
            "a sweep left a snapshot from before an audit-only commit"
        );
        assert_eq!(rows(&readers, MustSee::Data).await, 4);
        // A data commit after audit-only ones is seen by both.
        w.exec(insert, &[]).await.unwrap();
        readers.committed(true);
        assert_eq!(rows(&readers, MustSee::Data).await, 5);
        w.exec(insert, &[]).await.unwrap();
        readers.committed(true);
        assert_eq!(rows(&readers, MustSee::All).await, 6);

        // And past its age a snapshot is not reused, counted or not.
        readers.max_age = Duration::ZERO;
        w.exec(insert, &[]).await.unwrap();
        assert_eq!(
            rows(&readers, MustSee::All).await,
            7,
            "a snapshot outlived its age"
        );
        w.exec(insert, &[]).await.unwrap();
        assert_eq!(
            rows(&readers, MustSee::Data).await,
            8,
            "a snapshot outlived its age"
        );
    }

    #[tokio::test]
    async fn the_checkpointer_asks_the_writer_to_finish_only_after_a_short_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = wal_writer(&path);
        let page = vec![7u8; 4000];
        // 300 rows, each its own commit: 300–600 WAL frames. Each fill follows a complete
        // copy, so the WAL starts over.
        let mut fill = async || {
            for _ in 0..300 {
                w.exec("INSERT INTO t VALUES ($1)", args![&page])
                    .await
                    .unwrap();
            }
        };
        let ck = SyncConn::open(&path, Role::Checkpointer).unwrap();
        let db_file = std::fs::File::open(&path).unwrap();
        let state = CheckpointState::default();
        let mut flush = Flush::new(&db_file);
        let at = |frames, left, rounds| FinishAt {
            frames,
            left,
            rounds,
        };
        let asked = || state.finish.swap(false, Ordering::AcqRel);

        // A short WAL: copied and flushed, the writer left alone.
        fill().await;
        round(&ck, &mut flush, &state, at(10_000, 512, FINISH_AT.rounds)).unwrap();
        assert!(flush.copied >= 300, "copied {}", flush.copied);
        assert_eq!(flush.flushes, 1, "the copied pages are flushed once");
        assert!(!asked());
        // Nothing copied since: no flush.
        flush.after(flush.copied);
        assert_eq!(flush.flushes, 1);

        // A long WAL whose first round copies more than `left`: a second round copies
        // nothing new, and that short round asks the writer.
        fill().await;
        round(&ck, &mut flush, &state, at(100, 100, FINISH_AT.rounds)).unwrap();
        assert!(flush.copied >= 300, "copied {}", flush.copied);
        assert_eq!(flush.flushes, 2, "the new WAL's copy is flushed");
        assert!(asked());

        // With a single round, a long first copy does not ask the writer yet...
        fill().await;
        round(&ck, &mut flush, &state, at(250, 100, 1)).unwrap();
        assert!(!asked());

        // ...unless the WAL is past four times the threshold.
        fill().await;
        round(&ck, &mut flush, &state, at(50, 100, 1)).unwrap();
        assert!(asked());
    }

    /// A batch is answered before the writer turns to what `done` does between batches
    /// (at times its own checkpoint, milliseconds long): a durable write does not wait.
    #[tokio::test]
    async fn a_batch_is_answered_before_the_writer_moves_on() {
        struct Gate {
            conn: SyncConn,
            held: std_mpsc::Receiver<()>,
        }
        impl group::WriterConn for Gate {
            type C = SyncConn;
            async fn get(&mut self) -> StoreResult<&mut SyncConn> {
                Ok(&mut self.conn)
            }
            fn done(&mut self) {
                // Held until the test has its answer (or gave up waiting).
                self.held.recv_timeout(Duration::from_secs(30)).ok();
            }
            fn dialect(&self) -> &'static dyn Dialect {
                &crate::dialect::Sqlite
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        SqliteStore::open(&path, 1).await.unwrap().close().await;
        let conn = SyncConn::open(&path, Role::Writer).unwrap();
        let (release, held) = std_mpsc::channel();
        let (tx, rx) = mpsc::channel(8);
        let writer = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            drop(rt.block_on(group::writer(Gate { conn, held }, rx)));
        });
        let op = WriteOp::RevokeApiKey {
            account_id: None,
            key_id: "key_missing".into(),
            now_ms: 1,
            events: Vec::new(),
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), group::write(&tx, op)).await;
        release.send(()).unwrap();
        drop(tx);
        writer.join().unwrap();
        assert!(
            matches!(answer, Ok(Ok(WriteReply::ApiKey(None)))),
            "no answer while the writer was held after the batch"
        );
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
