//! The embedded backend: SQLite in WAL mode with `synchronous=FULL`.
//!
//! Reads use a small pool of read-only connections. Every write goes to one writer task
//! that owns the only writing connection and batches whatever is queued into one
//! transaction (group commit): one fsync acknowledges up to [`group::MAX_BATCH`] writes. A
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
use tokio::sync::mpsc;

use crate::exec::{db_err, impl_exec};
use crate::group::{self, Msg};
use crate::sql::{WriteOp, WriteReply};
use crate::{StoreError, StoreResult};

impl_exec!(SqliteConnection, Sqlite);

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

const BEGIN: &[&str] = &["BEGIN IMMEDIATE"];

/// The writer's one connection, owned for the life of the store.
struct Owned(SqliteConnection);

impl group::Conn for Owned {
    type C = SqliteConnection;
    async fn get(&mut self) -> StoreResult<&mut SqliteConnection> {
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
    readers: SqlitePool,
    writer: mpsc::Sender<Msg>,
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
        let (tx, rx) = mpsc::channel(group::QUEUE);
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
        group::write(&self.writer, op).await
    }

    /// Finishes the queued writes, stops the writer and closes every connection.
    /// Later calls on any clone fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        group::stop(&self.writer).await;
        self.readers.close().await;
    }
}

/// The writer task ([`group::writer`]), then a clean close of the database.
async fn writer(conn: SqliteConnection, rx: mpsc::Receiver<Msg>) {
    let Owned(conn) = group::writer(Owned(conn), rx).await;
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %db_err(e), "closing the SQLite writer connection failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Exec, RowGet, args};

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
