//! The embedded backend: SQLite in WAL mode with `synchronous=FULL`.
//!
//! Reads use a small pool of read-only connections. Every write goes to one writer task
//! that owns the only writing connection and batches whatever is queued into one
//! transaction (group commit): one fsync acknowledges up to [`MAX_BATCH`] writes. A
//! failing write rolls back only itself (the batch is re-run with a savepoint per
//! write); replies are sent after `COMMIT` returns, so an acknowledged write is durable.

use std::path::Path;
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

use crate::exec::{Exec, db_err, impl_exec};
use crate::sql::{self, WriteOp, WriteReply};
use crate::{StoreError, StoreResult};

impl_exec!(SqliteConnection, Sqlite);

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Most writes in one group commit.
pub(crate) const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before senders wait too (back-pressure).
const QUEUE: usize = 4096;

const BEGIN: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";
const SAVEPOINT: &str = "SAVEPOINT op";
const ROLLBACK_TO: &str = "ROLLBACK TO op";
const RELEASE: &str = "RELEASE op";

type Reply = oneshot::Sender<StoreResult<WriteReply>>;

// Moved once into the channel; boxing would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Write(WriteOp, Reply),
    Close(oneshot::Sender<()>),
}

/// The SQLite backend. Cheap to clone: a pool handle and a channel sender.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    readers: SqlitePool,
    writer: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Write(..) => "Write",
            Self::Close(_) => "Close",
        })
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("store closed".into())
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at `path`, runs
    /// the migrations and starts the writer task.
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
        let readers = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            // A real page cache per reader (SQLite's default is 2 MiB): with a million
            // cards the B-tree interior and hot leaves stay in memory instead of being
            // read back through syscalls on every lookup. 4 readers x 24 MiB keeps the server
            // inside the 250 MB RSS budget at a million cards.
            .connect_with(
                opts.clone()
                    .pragma("query_only", "ON")
                    .pragma("cache_size", "-24576"),
            )
            .await
            .map_err(db_err)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        // The writer gets a thread of its own: every statement is a round trip to
        // sqlx's SQLite worker thread, and on a busy runtime each wake-up would queue
        // behind request handlers. On its own thread the writer is woken at once.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || rt.block_on(writer(conn, rx)))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            readers,
            writer: tx,
        })
    }

    /// A read-only connection from the pool.
    pub(crate) async fn reader(&self) -> StoreResult<PoolConnection<Sqlite>> {
        self.readers.acquire().await.map_err(db_err)
    }

    /// Queues a write and waits until its group commit is durable.
    pub(crate) async fn write(&self, op: WriteOp) -> StoreResult<WriteReply> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Msg::Write(op, tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Finishes the queued writes, stops the writer and closes every connection.
    /// Later calls on any clone fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Msg::Close(tx)).await.is_ok() {
            // An error only means the writer is gone already.
            rx.await.ok();
        }
        self.readers.close().await;
    }
}

/// The writer task: waits for a write, takes whatever else is queued, commits it all.
async fn writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<(WriteOp, Reply)> = Vec::with_capacity(MAX_BATCH);
    let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(op, reply) => batch.push((op, reply)),
                Msg::Close(done) => closing.push(done),
            }
            if closing.is_empty() && batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit(&mut conn, &mut batch).await;
        }
        if !closing.is_empty() {
            break;
        }
    }
    // Refuse what is still queued, then close the database cleanly.
    rx.close();
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Write(_, reply) => {
                reply.send(Err(closed())).ok();
            }
            Msg::Close(done) => closing.push(done),
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %db_err(e), "closing the SQLite writer connection failed");
    }
    for done in closing {
        done.send(()).ok();
    }
}

/// Runs a batch as one transaction and answers every write (after `COMMIT`).
async fn commit(conn: &mut SqliteConnection, batch: &mut Vec<(WriteOp, Reply)>) {
    let outcome = if let [(op, _)] = batch.as_slice() {
        // Alone: the transaction is the savepoint.
        single(conn, op).await.map(|r| vec![r])
    } else {
        grouped(conn, batch).await
    };
    match outcome {
        Ok(results) => {
            for ((_, reply), result) in batch.drain(..).zip(results) {
                reply.send(result).ok();
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "SQLite group commit failed");
            for (_, reply) in batch.drain(..) {
                reply.send(Err(copy_err(&e))).ok();
            }
        }
    }
}

async fn single(conn: &mut SqliteConnection, op: &WriteOp) -> StoreResult<StoreResult<WriteReply>> {
    conn.exec(BEGIN, &[]).await?;
    let result = sql::apply(conn, op).await;
    let end = if result.is_ok() { COMMIT } else { ROLLBACK };
    finish(conn, end).await?;
    Ok(result)
}

/// Writes rarely fail, so a batch first runs without savepoints (two statements fewer
/// per write). If one write fails, that attempt is rolled back whole and the batch runs
/// again with a savepoint around each write, so only the failing one is lost.
async fn grouped(
    conn: &mut SqliteConnection,
    batch: &[(WriteOp, Reply)],
) -> StoreResult<Vec<StoreResult<WriteReply>>> {
    conn.exec(BEGIN, &[]).await?;
    let mut results = Vec::with_capacity(batch.len());
    for (op, _) in batch {
        match sql::apply(conn, op).await {
            Ok(r) => results.push(Ok(r)),
            Err(_) => break,
        }
    }
    if results.len() == batch.len() {
        finish(conn, COMMIT).await?;
        return Ok(results);
    }
    finish(conn, ROLLBACK).await?;
    results.clear();

    conn.exec(BEGIN, &[]).await?;
    for (op, _) in batch {
        match savepoint(conn, op).await {
            Ok(r) => results.push(r),
            Err(e) => {
                finish(conn, ROLLBACK).await.ok();
                return Err(e);
            }
        }
    }
    finish(conn, COMMIT).await?;
    Ok(results)
}

/// One write inside its savepoint. The outer error means the transaction is unusable.
async fn savepoint(
    conn: &mut SqliteConnection,
    op: &WriteOp,
) -> StoreResult<StoreResult<WriteReply>> {
    conn.exec(SAVEPOINT, &[]).await?;
    let result = sql::apply(conn, op).await;
    if result.is_err() {
        conn.exec(ROLLBACK_TO, &[]).await?;
    }
    conn.exec(RELEASE, &[]).await?;
    Ok(result)
}

/// `COMMIT` or `ROLLBACK`; a failed `COMMIT` is rolled back.
async fn finish(conn: &mut SqliteConnection, end: &'static str) -> StoreResult<()> {
    match conn.exec(end, &[]).await {
        Ok(_) => Ok(()),
        Err(e) => {
            if end == COMMIT {
                conn.exec(ROLLBACK, &[]).await.ok();
            }
            Err(StoreError::Unavailable(format!("{end} failed: {e}")))
        }
    }
}

fn copy_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(m) => StoreError::Conflict(m),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{RowGet, args};

    /// The shared SQL relies on this: sqlx-sqlite binds `$N` by number, not by position.
    #[tokio::test]
    async fn dollar_n_placeholders_bind_by_number() {
        let mut c = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let row = c
            .opt("SELECT $2, $1, $2 || $1", args!["one", "two"])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.text(0).unwrap(), "two");
        assert_eq!(row.text(1).unwrap(), "one");
        assert_eq!(row.text(2).unwrap(), "twoone");
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
