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
//!
//! Its parts: [`conn`] (one connection, driven synchronously), [`readers`] (the read
//! pool and its snapshots), [`writer`] (the writer's connection, around each group
//! commit) and [`checkpointer`] (WAL copies off the writer's path).

mod checkpointer;
mod conn;
mod readers;
mod writer;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

use checkpointer::{CheckpointState, checkpointer};
use conn::Role;
use readers::{DATA_SNAPSHOT_AGE, Readers, SNAPSHOT_AGE};
use writer::{SqliteWriter, WriterCache};

pub(crate) use conn::MustSee;
pub(crate) use conn::{SqlRow, SyncConn};
pub(crate) use readers::Reader;

use crate::exec::db_err;
use crate::group::{self, Msg};
use crate::sql::{WriteOp, WriteReply};
use crate::{StoreError, StoreResult};

/// The migrations. sqlx stores a checksum of each applied file and refuses to start when
/// a file it applied has changed, so a committed migration is never edited, comments
/// included: the headers of 0002 to 0007 still name the work items that added them (what
/// each table is for is in ARCHITECTURE.md and the docs of its feature).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

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
        // Its synchronous statements never hold up a runtime worker.
        group::spawn_thread("sqlite-writer", group::writer(owned, rx))?;
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

#[cfg(test)]
mod tests;
